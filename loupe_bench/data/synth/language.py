"""Language: spatial relations, the caption templates and the captions with their gold phrase spans, the gold
phrase entries written with them, and the referring expressions."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from .sampling import HELDOUT_COMBOS, Scene, SceneObject

_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


def relation(a: SceneObject, b: SceneObject, image_size: int) -> str:
    """Spatial relation of ``a`` to ``b`` from the box centres (image y grows downwards)."""
    (ax, ay), (bx, by) = a.centre, b.centre
    dx, dy = ax - bx, ay - by
    if max(abs(dx), abs(dy)) < 0.1 * image_size:
        return "next to"
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _location(obj: SceneObject, image_size: int) -> str:
    """Where the object's centre lies in a 3 × 3 grid, as a prepositional phrase."""
    cx, cy = obj.centre
    v = "top" if cy < image_size / 3 else ("bottom" if cy > 2 * image_size / 3 else "middle")
    h = "left" if cx < image_size / 3 else ("right" if cx > 2 * image_size / 3 else "centre")
    if v == "middle" and h == "centre":
        return "in the centre"
    if v == "middle":
        return f"on the {h}"
    if h == "centre":
        return f"at the {v}"
    return f"in the {v} {h} corner"


# A template is a function (objects, scene, image_size) -> list of parts; an int part k is a phrase for object k.
Part = Union[str, int]


def t_plain(o, sc, n):
    return ["a ", 0]


def t_background(o, sc, n):
    return ["a ", 0, f" on a {sc.background} background"]


def t_location(o, sc, n):
    return ["there is a ", 0, f" {_location(o[0], n)}"]


def t_picture(o, sc, n):
    return ["a picture of a ", 0]


def t_single(o, sc, n):
    return ["a single ", 0]


def t_rel(o, sc, n):
    return ["a ", 0, f" {relation(o[0], o[1], n)} a ", 1]


def t_and(o, sc, n):
    return ["a ", 0, " and a ", 1]


def t_there_rel(o, sc, n):
    return ["there is a ", 0, f" {relation(o[0], o[1], n)} a ", 1]


def t_is_rel(o, sc, n):
    return ["a ", 0, f" is {relation(o[0], o[1], n)} a ", 1]


def t_three(o, sc, n):
    return ["a ", 0, ", a ", 1, " and a ", 2]


def t_count(o, sc, n):
    return [f"{_COUNT_WORDS[len(sc.objects)]} shapes including a ", 0]


# (template, number of mentioned objects, applicable when the scene has this many objects)
TEMPLATES = (
    (t_plain, 1, lambda k: True),
    (t_background, 1, lambda k: True),
    (t_location, 1, lambda k: True),
    (t_picture, 1, lambda k: True),
    (t_single, 1, lambda k: k == 1),
    (t_rel, 2, lambda k: k >= 2),
    (t_and, 2, lambda k: k >= 2),
    (t_there_rel, 2, lambda k: k >= 2),
    (t_is_rel, 2, lambda k: k >= 2),
    (t_three, 3, lambda k: k >= 3),
    (t_count, 1, lambda k: k >= 2),
)


def make_captions(rng: np.random.Generator, scene: Scene, image_size: int, n_captions: int = 5) -> None:
    objs = scene.objects
    usable = [t for t in TEMPLATES if t[2](len(objs))]
    order = rng.permutation(len(usable))
    heldout = set(HELDOUT_COMBOS)
    focus = [i for i, o in enumerate(objs) if (o.colour, o.shape) in heldout] if scene.split == "comptest" else []
    for c in range(n_captions):
        fn, k, _ = usable[int(order[c % len(usable)])]
        if focus:
            first = focus[int(rng.integers(len(focus)))]
            rest = [i for i in rng.permutation(len(objs)).tolist() if i != first]
            chosen = [first] + rest[: k - 1]
        else:
            chosen = rng.permutation(len(objs))[:k].tolist()
        mentioned = [objs[i] for i in chosen]
        with_size = [bool(rng.random() < 0.5) for _ in chosen]
        text, spans = "", []
        for part in fn(mentioned, scene, image_size):
            if isinstance(part, int):
                phrase = mentioned[part].describe(with_size[part])
                spans.append((len(text), len(text) + len(phrase), chosen[part]))
                text += phrase
            else:
                text += part
        scene.captions.append((text, spans))


def _colour_set(o: SceneObject) -> frozenset:
    """The colours an object shows: ``{colour}`` (flat) or ``{colour, colour2}`` (two-part)."""
    return frozenset((o.colour,) if o.colour2 is None else (o.colour, o.colour2))


def _shares_attribute(p: SceneObject, o: SceneObject) -> bool:
    """``p`` is a distractor of ``o``: same shape, or any colour in common (either part of a two-part object)."""
    return p.shape == o.shape or bool(_colour_set(p) & _colour_set(o))


def _same_description(p: SceneObject, o: SceneObject) -> bool:
    """Same description ``(colour, colour2, shape)``: same shape, same top colour and same bottom colour (None for
    a flat object, so a flat "red square" and a "red-and-blue square" differ)."""
    return p.shape == o.shape and p.colour == o.colour and p.colour2 == o.colour2


def referring_expressions(scene: Scene, image_size: int) -> List[Tuple[int, List[str], List[str]]]:
    """(object index, sentences, head noun phrases) for each object that has a distractor sharing its shape or
    a colour (:func:`_shares_attribute`).

    An object's description is ``(colour, colour2, shape)`` with ``colour2`` None for a flat object, written
    :attr:`SceneObject.colour_words` + shape ("red square", "red-and-blue square": a two-part object's expression
    always names both colours, top first). The expression uses the fewest attributes that make it unique among the
    scene's objects: the description, then size, then position among the objects with the same description
    (:func:`_same_description`); objects that stay ambiguous get no expression. The second sentence names an
    anchor object when one shares neither shape nor any colour ("the red circle left of the blue square"); a
    sentence's head noun phrase is the expression without the anchor ("the red circle").
    """
    out = []
    objs = scene.objects
    for i, o in enumerate(objs):
        others = [p for j, p in enumerate(objs) if j != i]
        if not any(_shares_attribute(p, o) for p in others):
            continue
        same = [p for p in others if _same_description(p, o)]
        name = f"{o.colour_words} {o.shape}"
        if not same:
            desc = name
        elif not any(p.size == o.size for p in same):
            desc = f"{o.size} {name}"
        else:
            cx, cy = o.centre
            margin = 0.08 * image_size
            if all(cx < p.centre[0] - margin for p in same):
                desc = f"{name} on the left"
            elif all(cx > p.centre[0] + margin for p in same):
                desc = f"{name} on the right"
            elif all(cy < p.centre[1] - margin for p in same):
                desc = f"{name} at the top"
            elif all(cy > p.centre[1] + margin for p in same):
                desc = f"{name} at the bottom"
            else:
                continue
        sentences = [f"the {desc}"]
        anchors = [p for p in others if not _shares_attribute(p, o)]
        if anchors and " on the " not in desc and " at the " not in desc:
            a = anchors[0]
            sentences.append(f"the {desc} {relation(o, a, image_size)} the {a.colour_words} {a.shape}")
            heads = [f"the {desc}", f"the {desc}"]
        else:
            sentences.append(desc)
            heads = [f"the {desc}", desc]
        out.append((i, sentences, heads))
    return out


def phrase_entries(text: str, spans: Sequence[Tuple[int, int, int]], objects: Sequence[SceneObject]
                   ) -> List[Dict[str, Any]]:
    """One caption's gold phrases: ``start``, ``end`` (character offsets), ``text``, ``ann_id``, ``bbox`` (xywh) and
    ``kind`` of the object each span names (the entries of ``phrases.json`` and of the shard samples)."""
    return [
        {
            "start": s,
            "end": e,
            "text": text[s:e],
            "ann_id": objects[k].ann_id,
            "bbox": [float(v) for v in objects[k].box],
            "kind": objects[k].kind,
        }
        for s, e, k in spans
    ]
