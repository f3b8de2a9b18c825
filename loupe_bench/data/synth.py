"""The synthetic fine-grained world: deterministic scenes of coloured shapes with captions, gold phrase spans,
boxes, referring expressions and class labels, written in the real data formats.

Design (why it separates region–phrase models from global ones):

* every image holds 1–5 objects (shape × colour × size) on a textured background, exactly one of them large;
* objects come in two kinds: ``flat`` ones (one colour: any single patch of the object carries everything its
  phrase names, the redundant contrast) and ``two-part`` ones (top half one colour, bottom half another, named
  "red-and-blue square", top colour first), whose description needs patches of both halves together; scenes with
  a two-part object often hold a distractor with the same shape that swaps its colours or shares one part, so only
  the joint description picks it out;
* each caption mentions only some of the objects, with bound attributes ("a small red triangle left of a large
  blue circle"), so matching needs the right colour on the right shape in the right place;
* referring expressions single out one object among distractors that share its shape or a colour (a two-part
  object's expression always names both of its colours);
* the ``comptest`` split holds colour–shape combinations that never occur in ``train``/``val``/``test``
  (for a two-part object the combination is its *top* colour with its shape).

Everything is a pure function of ``(seed, size, image_size)``: each image draws from its own
``numpy.random.Generator`` seeded with ``[seed, split_index, image_index]``; files are written with sorted JSON
keys, fixed tar metadata and JPEG quality 95, so two runs give byte-identical folders.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import importlib
import os
import pickle
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError, SpecError
from ..utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from .records import tokenize

# 2: refs record each sentence's head noun phrase; the Flickr30K Entities layout.
# 3: two-part objects (kind ``two-part``: top half / bottom half in two colours, "red-and-blue square", drawn with
#    probability TWO_PART_PROB, small ones slightly larger) with swapped-colour / shared-part distractors; COCO
#    annotations and phrase entries record ``kind`` (and annotations ``colour2``); world.json the kind settings.
# 4: synthetic matching benchmarks (:mod:`.synth_matching`): ``captionsel/`` (SugarCrepe) and ``winoground/``.
WORLD_VERSION = 4
SPLITS: Tuple[str, ...] = ("train", "val", "test", "comptest")
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 185, 45),
    "blue": (35, 70, 230),
    "yellow": (245, 225, 30),
    "purple": (155, 40, 200),
    "cyan": (20, 210, 225),
}
SIZE_RANGES: Dict[str, Tuple[float, float]] = {"small": (0.19, 0.25), "large": (0.36, 0.43)}
#: object kinds: ``flat`` (one colour) and ``two-part`` (top half :attr:`SceneObject.colour`, bottom half
#: :attr:`SceneObject.colour2`)
KINDS: Tuple[str, ...] = ("flat", "two-part")
#: probability that an object is two-part (drawn independently for every object, distractors included)
TWO_PART_PROB = 0.4
#: side ranges (fraction of the image side) of two-part objects: small ones are enlarged from 0.19–0.25 so that at
#: 64 px each half is at least 8 rows (one patch of an 8 × 8 grid) tall: side ``round(64 · 0.25) = 16``, half 8
TWO_PART_SIZE_RANGES: Dict[str, Tuple[float, float]] = {"small": (0.25, 0.31), "large": (0.36, 0.43)}
#: probability that an object after the first is a distractor of an earlier two-part object (when there is one)
TWO_PART_DISTRACTOR_PROB = 0.5
BACKGROUNDS: Tuple[str, ...] = ("noisy", "striped", "checkered", "shaded")
#: colour–shape combinations that appear only in ``comptest`` (one per shape and one per colour).
HELDOUT_COMBOS: Tuple[Tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "circle"),
    ("blue", "star"),
    ("yellow", "square"),
    ("purple", "cross"),
    ("cyan", "diamond"),
)
#: largest image side of the synthetic world (pixels)
MAX_IMAGE_SIZE = 1024
SIZES: Dict[str, Dict[str, int]] = {
    "tiny": {"train": 40, "val": 12, "test": 12, "comptest": 12},
    "small": {"train": 1800, "val": 200, "test": 300, "comptest": 200},
    "medium": {"train": 20000, "val": 1000, "test": 1000, "comptest": 1000},
}
SHARD_SIZE = 1000
#: the module writing the matching benchmarks (``captionsel/``, ``winoground/``): it builds on this module's scenes
#: and renderer, so it is imported by name when a world is generated (a static import would be a cycle)
MATCHING_WRITER = "loupe_bench.data.synth_matching"
SUPERSAMPLE = 4
_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


# ----------------------------------------------------------------------------------------------------------------
# scene sampling
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    box: Tuple[int, int, int, int]  # x, y, w, h (pixels, integers)
    rgb: Tuple[int, int, int]
    ann_id: int = 0
    colour2: Optional[str] = None  # bottom colour of a two-part object; None for a flat one
    rgb2: Optional[Tuple[int, int, int]] = None

    @property
    def kind(self) -> str:
        """``two-part`` when the object has a bottom colour, else ``flat``."""
        return "flat" if self.colour2 is None else "two-part"

    @property
    def centre(self) -> Tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0

    @property
    def split_row(self) -> int:
        """First image row drawn in the bottom colour of a two-part object: ``y + h // 2`` (rows ``y … y+h//2-1``
        are the top half); for a flat object the same middle row, with no colour change."""
        x, y, w, h = self.box
        return y + h // 2

    @property
    def colour_words(self) -> str:
        """``red`` for a flat object, ``red-and-blue`` (top colour first) for a two-part one."""
        return self.colour if self.colour2 is None else f"{self.colour}-and-{self.colour2}"

    def describe(self, with_size: bool) -> str:
        """``[size] <colour_words> <shape>``: "small red circle", "red-and-blue square", "large red-and-blue square"."""
        return f"{self.size} {self.colour_words} {self.shape}" if with_size else f"{self.colour_words} {self.shape}"


@dataclass
class Scene:
    image_id: int
    split: str
    background: str
    objects: List[SceneObject]
    captions: List[Tuple[str, List[Tuple[int, int, int]]]] = field(default_factory=list)  # text, [(start,end,obj)]


def _overlap_ok(box: Tuple[int, int, int, int], others: Sequence[Tuple[int, int, int, int]]) -> bool:
    """Occlusion is allowed but bounded: the intersection covers at most 35% of the smaller box."""
    x, y, w, h = box
    for ox, oy, ow, oh in others:
        iw = min(x + w, ox + ow) - max(x, ox)
        ih = min(y + h, oy + oh) - max(y, oy)
        if iw > 0 and ih > 0 and iw * ih > 0.35 * min(w * h, ow * oh):
            return False
    return True


def _jitter(rng: np.random.Generator, colour: str) -> Tuple[int, int, int]:
    """Per-object colour: the nominal RGB plus a uniform integer offset in ``[-12, 12]`` per channel, clipped."""
    base = np.array(COLOURS[colour], dtype=np.int64)
    return tuple(int(v) for v in np.clip(base + rng.integers(-12, 13, size=3), 0, 255))


def _other_colour(rng: np.random.Generator, exclude: Sequence[str]) -> str:
    """A colour drawn uniformly from :data:`COLOURS` minus ``exclude``."""
    pool = [c for c in COLOURS if c not in exclude]
    return pool[int(rng.integers(len(pool)))]


def _draw_attributes(rng: np.random.Generator, objects: Sequence[SceneObject], two_part: bool
                     ) -> Tuple[str, str, Optional[str]]:
    """``(shape, colour, colour2)`` of the next object, of the given kind (``colour2`` None when flat).

    Rules, in order:

    * **two-part distractor** (an earlier object is two-part, probability :data:`TWO_PART_DISTRACTOR_PROB`):
      take a uniformly chosen earlier two-part object ``(c1, c2, shape)`` and keep its shape; a two-part new object
      either swaps its colours ``(c2, c1)`` or keeps one part in place and replaces the other with a colour outside
      ``{c1, c2}`` (``(c1, x)`` or ``(x, c2)``), each with probability 1/2; a flat new object takes one of its
      parts ``c1`` or ``c2`` (1/2 each). Only the joint "c1-and-c2 shape" then tells the target apart.
    * **shared attribute** (an earlier object exists, probability 0.6): the shape of an earlier object with a
      random colour, or (1/2) a random shape with one of the earlier object's colours (top or bottom, 1/2 each);
    * otherwise a uniform shape and colour. A two-part object's bottom colour is uniform over the colours other
      than its top colour (the distractor rule above aside).
    """
    colours = list(COLOURS)
    earlier_two = [o for o in objects if o.colour2 is not None]
    if earlier_two and rng.random() < TWO_PART_DISTRACTOR_PROB:
        ref = earlier_two[int(rng.integers(len(earlier_two)))]
        c1, c2 = ref.colour, ref.colour2
        if not two_part:
            return ref.shape, (c1, c2)[int(rng.integers(2))], None
        if rng.random() < 0.5:
            return ref.shape, c2, c1
        x = _other_colour(rng, (c1, c2))
        return (ref.shape, c1, x) if rng.random() < 0.5 else (ref.shape, x, c2)
    if objects and rng.random() < 0.6:
        # share the shape or the colour of an earlier object: distractors for referring expressions
        ref = objects[int(rng.integers(len(objects)))]
        if rng.random() < 0.5:
            shape, colour = ref.shape, colours[int(rng.integers(len(colours)))]
        else:
            parts = [ref.colour] if ref.colour2 is None else [ref.colour, ref.colour2]
            shape, colour = SHAPES[int(rng.integers(len(SHAPES)))], parts[int(rng.integers(len(parts)))]
    else:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = colours[int(rng.integers(len(colours)))]
    return shape, colour, (_other_colour(rng, (colour,)) if two_part else None)


def _sample_objects(rng: np.random.Generator, image_size: int, comp: bool) -> List[SceneObject]:
    """The objects of one scene, in drawing order (object 0 is the large one).

    Per object: its kind (two-part with probability :data:`TWO_PART_PROB`, independently), then its attributes
    (:func:`_draw_attributes`, redrawn until ``(top colour, shape)`` is not held out unless ``comp``; in
    ``comptest`` one object is forced to a held-out ``(top colour, shape)``), then its side
    ``round(image_size · u)``, ``u ~ U(lo, hi)`` of :data:`SIZE_RANGES` (flat) or :data:`TWO_PART_SIZE_RANGES`
    (two-part), then up to 60 uniform placements accepted by :func:`_overlap_ok` (an object that finds none is
    dropped), then its jittered RGB (:func:`_jitter`; one per part).
    """
    n = int(rng.choice([1, 2, 3, 4, 5], p=[0.1, 0.25, 0.25, 0.2, 0.2]))
    heldout = set(HELDOUT_COMBOS)
    objects: List[SceneObject] = []
    forced = int(rng.integers(n)) if comp else -1
    for k in range(n):
        size = "large" if k == 0 else "small"
        two_part = bool(rng.random() < TWO_PART_PROB)
        if k == forced:
            colour, shape = HELDOUT_COMBOS[int(rng.integers(len(HELDOUT_COMBOS)))]
            colour2 = _other_colour(rng, (colour,)) if two_part else None
        else:
            while True:
                shape, colour, colour2 = _draw_attributes(rng, objects, two_part)
                if comp or (colour, shape) not in heldout:
                    break
        lo, hi = (TWO_PART_SIZE_RANGES if two_part else SIZE_RANGES)[size]
        side = max(4, int(round(image_size * rng.uniform(lo, hi))))
        placed = None
        for _ in range(60):
            x = int(rng.integers(0, image_size - side + 1))
            y = int(rng.integers(0, image_size - side + 1))
            if _overlap_ok((x, y, side, side), [o.box for o in objects]):
                placed = (x, y, side, side)
                break
        if placed is None:
            if k == forced:
                forced = k + 1 if k + 1 < n else -2
            continue
        rgb = _jitter(rng, colour)
        rgb2 = _jitter(rng, colour2) if colour2 is not None else None
        objects.append(SceneObject(shape, colour, size, placed, rgb, colour2=colour2, rgb2=rgb2))
    if comp and not any((o.colour, o.shape) in heldout for o in objects):
        # placement failed for the forced object: recolour one existing object into a held-out combination (its top
        # colour; a two-part object whose bottom colour is the new top colour takes the old top colour below)
        o = objects[-1]
        old, o.colour = o.colour, next(c for c, s in HELDOUT_COMBOS if s == o.shape)
        o.rgb = _jitter(rng, o.colour)
        if o.colour2 == o.colour:
            o.colour2 = old
            o.rgb2 = _jitter(rng, old)
    return objects


# ----------------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------------
def _unit_polygon(shape: str) -> List[Tuple[float, float]]:
    if shape == "square":
        return [(0, 0), (1, 0), (1, 1), (0, 1)]
    if shape == "triangle":
        return [(0.5, 0), (1, 1), (0, 1)]
    if shape == "diamond":
        return [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]
    if shape == "cross":
        a, b = 0.32, 0.68
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    if shape == "star":
        pts = []
        for i in range(10):
            r = 1.0 if i % 2 == 0 else 0.45
            t = -math.pi / 2 + i * math.pi / 5
            pts.append((r * math.cos(t), r * math.sin(t)))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        return [((px - x0) / (x1 - x0), (py - y0) / (y1 - y0)) for px, py in pts]
    raise ValueError(shape)


def _shape_alpha(obj: SceneObject) -> np.ndarray:
    """Anti-aliased coverage ``[h, w]`` in ``[0, 1]`` of one object inside its box (drawn at 4×, box-filtered)."""
    from PIL import Image, ImageDraw

    s = SUPERSAMPLE
    _, _, w, h = obj.box
    big = Image.new("L", (w * s, h * s), 0)
    draw = ImageDraw.Draw(big)
    x1, y1 = w * s - 1, h * s - 1
    if obj.shape == "circle":
        draw.ellipse([0, 0, x1, y1], fill=255)
    else:
        draw.polygon([(u * x1, v * y1) for u, v in _unit_polygon(obj.shape)], fill=255)
    small = big.resize((w, h), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=4)
def _grid(n: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _background(rng: np.random.Generator, kind: str, image_size: int) -> np.ndarray:
    n = image_size
    grey = float(rng.uniform(80, 170))
    tint = rng.uniform(-10, 10, size=3)
    yy, xx = _grid(n)
    if kind == "noisy":
        base = np.zeros((n, n), np.float32)
        noise_sd = 18.0
    elif kind == "striped":
        angle = float(rng.uniform(0, math.pi))
        period = float(rng.uniform(6, 14)) * n / 64.0
        base = 22.0 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        noise_sd = 6.0
    elif kind == "checkered":
        cell = max(2, int(rng.integers(4, 9) * n / 64))
        base = np.where(((xx // cell) + (yy // cell)) % 2 == 0, 15.0, -15.0).astype(np.float32)
        noise_sd = 6.0
    else:  # shaded
        angle = float(rng.uniform(0, 2 * math.pi))
        ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / n
        base = 45.0 * (ramp - ramp.mean())
        noise_sd = 8.0
    img = grey + base[..., None] + tint[None, None, :] + rng.normal(0, noise_sd, size=(n, n, 3))
    return img.astype(np.float32)


def render_scene(rng: np.random.Generator, scene: Scene, image_size: int) -> Tuple[np.ndarray, List[float]]:
    """Composite the objects (in order, later ones on top) over the background.

    Pixel value ``I = (1 - a) * I_below + a * (rgb + noise)`` with ``a`` the object's anti-aliased coverage
    (the same for both kinds) and ``noise ~ N(0, 5²)`` per pixel and channel. For a two-part object ``rgb`` is the
    top colour's on the box rows ``y … y + h//2 - 1`` and the bottom colour's on rows ``y + h//2 … y + h - 1`` (a
    crisp split at :attr:`SceneObject.split_row`).

    Returns:
        ``uint8 [H, W, 3]`` image and the pixel area (coverage sum) of each object.
    """
    img = _background(rng, scene.background, image_size)
    areas = []
    for obj in scene.objects:
        x, y, w, h = obj.box
        alpha = _shape_alpha(obj)[..., None]
        fill = np.empty((h, w, 3), np.float32)
        fill[:] = np.asarray(obj.rgb, np.float32)
        if obj.rgb2 is not None:
            fill[h // 2:] = np.asarray(obj.rgb2, np.float32)
        fill += rng.normal(0, 5, size=(h, w, 3)).astype(np.float32)
        patch = img[y : y + h, x : x + w]
        img[y : y + h, x : x + w] = (1 - alpha) * patch + alpha * fill
        areas.append(round(float(alpha.sum()), 2))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), areas


# ----------------------------------------------------------------------------------------------------------------
# language
# ----------------------------------------------------------------------------------------------------------------
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


def _t_plain(o, sc, n):
    return ["a ", 0]


def _t_background(o, sc, n):
    return ["a ", 0, f" on a {sc.background} background"]


def _t_location(o, sc, n):
    return ["there is a ", 0, f" {_location(o[0], n)}"]


def _t_picture(o, sc, n):
    return ["a picture of a ", 0]


def _t_single(o, sc, n):
    return ["a single ", 0]


def _t_rel(o, sc, n):
    return ["a ", 0, f" {relation(o[0], o[1], n)} a ", 1]


def _t_and(o, sc, n):
    return ["a ", 0, " and a ", 1]


def _t_there_rel(o, sc, n):
    return ["there is a ", 0, f" {relation(o[0], o[1], n)} a ", 1]


def _t_is_rel(o, sc, n):
    return ["a ", 0, f" is {relation(o[0], o[1], n)} a ", 1]


def _t_three(o, sc, n):
    return ["a ", 0, ", a ", 1, " and a ", 2]


def _t_count(o, sc, n):
    return [f"{_COUNT_WORDS[len(sc.objects)]} shapes including a ", 0]


# (template, number of mentioned objects, applicable when the scene has this many objects)
TEMPLATES = (
    (_t_plain, 1, lambda k: True),
    (_t_background, 1, lambda k: True),
    (_t_location, 1, lambda k: True),
    (_t_picture, 1, lambda k: True),
    (_t_single, 1, lambda k: k == 1),
    (_t_rel, 2, lambda k: k >= 2),
    (_t_and, 2, lambda k: k >= 2),
    (_t_there_rel, 2, lambda k: k >= 2),
    (_t_is_rel, 2, lambda k: k >= 2),
    (_t_three, 3, lambda k: k >= 3),
    (_t_count, 1, lambda k: k >= 2),
)


def _make_captions(rng: np.random.Generator, scene: Scene, image_size: int, n_captions: int = 5) -> None:
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


def _referring_expressions(scene: Scene, image_size: int) -> List[Tuple[int, List[str], List[str]]]:
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


# ----------------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------------
def _put(path: Path, data: bytes) -> None:
    """Write a bulk file: temp + rename as :func:`~loupe_bench.utils.io.atomic_write_bytes` (the usual umask
    permissions, the temp file named as that function names its own and removed when the write fails), without
    its fsync: thousands of images are written, and the metadata files written last are fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _jpeg(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def _tar_bytes(members: Sequence[Tuple[str, bytes]]) -> bytes:
    """A tar archive with fixed metadata (mtime 0, uid/gid 0, mode 0644) so its bytes depend only on content."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def entity_sentence(text: str, spans: Sequence[Tuple[int, int, int]], objects: Sequence[SceneObject]) -> str:
    """One caption in Flickr30K Entities markup: each gold span becomes ``[/EN#<ann_id>/<shape> phrase]``.

    ``spans`` are ``(start, end, object index)`` in increasing order and do not overlap (the caption templates);
    the entity id is the object's COCO ``ann_id`` and the phrase type its shape name. Loading the line with
    :func:`~loupe_bench.data.formats.flickr30k_entities.parse_entity_sentence` gives back ``text`` and the spans.
    """
    parts, pos = [], 0
    for start, end, k in spans:
        obj = objects[k]
        parts += [text[pos:start], f"[/EN#{obj.ann_id}/{obj.shape} ", text[start:end], "]"]
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def entity_xml(fname: str, image_size: int, objects: Sequence[SceneObject]) -> str:
    """``Annotations/<id>.xml`` of one scene: ``<size>``, then one ``<object>`` per scene object with
    ``<name>`` = its ann_id and its COCO box as 1-based inclusive VOC corners (``xmin = x + 1``, ``xmax = x + w``;
    the inverse of the loader's conversion, so the loaded xywh equals the COCO box exactly)."""
    objs = []
    for o in objects:
        x, y, w, h = o.box
        objs.append(
            f"  <object>\n    <name>{o.ann_id}</name>\n"
            f"    <bndbox><xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax></bndbox>\n"
            "  </object>\n"
        )
    return (
        f"<annotation>\n  <filename>{fname}</filename>\n"
        f"  <size><width>{image_size}</width><height>{image_size}</height><depth>3</depth></size>\n"
        + "".join(objs) + "</annotation>\n"
    )


def write_flickr30k_entities(root: Path, scenes: Sequence[Scene], image_size: int) -> Path:
    """Write the scenes (ids and ann_ids assigned) in the Flickr30K Entities layout under ``root``.

    ``Sentences/<stem>.txt`` (:func:`entity_sentence`, one line per caption), ``Annotations/<stem>.xml``
    (:func:`entity_xml`), ``<split>.txt`` for every split of :data:`SPLITS` (image stems in scene order) and
    ``types.txt`` (the shapes in COCO category order, so a loaded box's category id is its COCO category id).
    Uses no random numbers. The folder is written atomically as a whole: everything goes into a fresh hidden
    folder beside ``root`` (the thousands of per-image files as plain writes, the split and type lists with
    :func:`~loupe_bench.utils.io.atomic_write_text`), which then replaces ``root`` with one rename; readers see no
    folder or the complete one.
    """
    import shutil

    root.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=str(root.parent)))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp creates 0700; give the folder the usual permissions
        sentences, annotations = stage / "Sentences", stage / "Annotations"
        sentences.mkdir()
        annotations.mkdir()
        ids: Dict[str, List[str]] = {s: [] for s in SPLITS}
        for scene in scenes:
            fname = file_name(scene.image_id)
            stem = fname.rsplit(".", 1)[0]
            ids[scene.split].append(stem)
            lines = "".join(entity_sentence(text, spans, scene.objects) + "\n" for text, spans in scene.captions)
            with open(sentences / f"{stem}.txt", "w", encoding="utf-8", newline="\n") as fh:
                fh.write(lines)
            with open(annotations / f"{stem}.xml", "w", encoding="utf-8", newline="\n") as fh:
                fh.write(entity_xml(fname, image_size, scene.objects))
        for split in SPLITS:
            atomic_write_text(stage / f"{split}.txt", "".join(s + "\n" for s in ids[split]))
        atomic_write_text(stage / "types.txt", "\n".join(SHAPES) + "\n")
        if root.is_dir():
            shutil.rmtree(root)
        os.replace(stage, root)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return root


def make_scene(seed: int, split_index: int, split: str, index: int, image_size: int) -> Tuple[Scene, List[float], bytes]:
    """Sample, render and caption image ``index`` of ``split`` from its own generator ``[seed, split_index, index]``.

    Returns the scene (``image_id`` 0; assigned by the caller), each object's pixel area and the JPEG bytes.
    """
    rng = np.random.default_rng([seed, split_index, index])
    objects = _sample_objects(rng, image_size, comp=split == "comptest")
    scene = Scene(0, split, BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], objects)
    pixels, areas = render_scene(rng, scene, image_size)
    _make_captions(rng, scene, image_size)
    return scene, areas, _jpeg(pixels)


def _make_scene_job(job: Tuple[int, int, str, int, int]) -> Tuple[Scene, List[float], bytes]:
    return make_scene(*job)


def _map_scenes(jobs: List[Tuple[int, int, str, int, int]], workers: int):
    """Yield :func:`make_scene` results in job order (a spawned process pool when ``workers > 1``)."""
    if workers <= 1:
        for job in jobs:
            yield make_scene(*job)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        yield from pool.map(_make_scene_job, jobs, chunksize=64)


def file_name(image_id: int) -> str:
    return f"{image_id:06d}.jpg"


WORLD_ENTRIES = ("images", "classification", "shards", "annotations", "refsynth", "flickr30k_entities",
                 "captionsel", "winoground", "dataset_synthetic.json", "phrases.json", "README.md", "world.json")
#: the world's Flickr30K Entities folder (Sentences/, Annotations/, <split>.txt, types.txt; images stay in images/)
F30K_DIR = "flickr30k_entities"


def _prepare_out(out: Path) -> None:
    """Create ``out``; an earlier world there is removed first (so no stale file survives a smaller rerun); a
    non-empty folder that is not a world is refused."""
    import shutil

    if out.exists() and not out.is_dir():
        raise DataError("output path exists and is not a folder", file=str(out))
    if out.is_dir() and any(out.iterdir()):
        if not (out / "world.json").is_file():
            raise DataError("output folder is not empty and holds no synthetic world (world.json); refusing to "
                            "write into it", file=str(out))
        for name in WORLD_ENTRIES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# the world: scene sampling, then one writer per output format (the formats of data/formats/)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class RenderedScene:
    """One image of the world after sampling: its scene (``image_id`` and every object's ``ann_id`` assigned), each
    object's pixel area (same order as ``scene.objects``), the JPEG bytes and the global ids of its captions."""

    scene: Scene
    areas: List[float]
    jpg: bytes
    sent_ids: List[int]

    @property
    def label(self) -> int:
        """Class label: index in :data:`SHAPES` of the large object's shape (object 0)."""
        return SHAPES.index(self.scene.objects[0].shape)


def sample_world(seed: int, counts: Mapping[str, int], image_size: int, workers: int = 1,
                 progress: bool = False) -> List[RenderedScene]:
    """Sample, render and caption every image (:func:`make_scene`), splits in :data:`SPLITS` order, and number them.

    Ids, in that order: ``image_id`` 1, 2, …; ``ann_id`` 1, 2, … over the objects of all images in drawing order;
    sentence ids 0, 1, … over the captions of all images. Writes nothing; the output does not depend on ``workers``.
    """
    jobs = [(seed, k, split, i, image_size) for k, split in enumerate(SPLITS) for i in range(counts[split])]
    bar = _progress(progress, len(jobs))
    rendered: List[RenderedScene] = []
    ann_id, sent_id = 1, 0
    for image_id, (scene, areas, jpg) in enumerate(_map_scenes(jobs, workers), start=1):
        scene.image_id = image_id
        for obj in scene.objects:
            obj.ann_id = ann_id
            ann_id += 1
        rendered.append(RenderedScene(scene, areas, jpg, list(range(sent_id, sent_id + len(scene.captions)))))
        sent_id += len(scene.captions)
        if bar is not None:
            bar[0].advance(bar[1])
    if bar is not None:
        bar[0].stop()
    return rendered


def categories() -> List[Dict[str, Any]]:
    """COCO categories: one per shape, ids ``1 … len(SHAPES)`` in :data:`SHAPES` order, supercategory ``shape``."""
    return [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]


def _phrase_entries(text: str, spans: Sequence[Tuple[int, int, int]], objects: Sequence[SceneObject]
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


def write_images(out: Path, rendered: Sequence[RenderedScene]) -> None:
    """``images/<image_id:06d>.jpg``: every image's JPEG bytes (the files all other formats point to)."""
    for r in rendered:
        _put(out / "images" / file_name(r.scene.image_id), r.jpg)


def write_imagefolder(out: Path, rendered: Sequence[RenderedScene]) -> None:
    """ImageFolder classification (:mod:`~loupe_bench.data.formats.folders`): a copy of each image in
    ``classification/<split>/<shape of the large object>/<file>`` and ``classification/classnames.txt`` (the shapes
    in :data:`SHAPES` order, one a line)."""
    for r in rendered:
        _put(out / "classification" / r.scene.split / SHAPES[r.label] / file_name(r.scene.image_id), r.jpg)
    atomic_write_text(out / "classification" / "classnames.txt", "\n".join(SHAPES) + "\n")


def coco_instances(rendered: Sequence[RenderedScene], image_size: int) -> Dict[str, Dict[str, Any]]:
    """The COCO instances document of each split: ``info``, ``licenses`` (empty), ``categories`` (:func:`categories`),
    ``images`` (``id``, ``file_name``, ``width``, ``height``) and ``annotations`` (``id`` = ann_id, ``image_id``,
    ``category_id``, ``bbox`` xywh pixels, ``area`` = coverage sum, ``iscrowd`` 0, and the extra keys ``colour``,
    ``colour2``, ``kind``, ``size``)."""
    info = {"description": "loupe-bench synthetic fine-grained world", "version": str(WORLD_VERSION), "year": 2026}
    cats = categories()
    cat_id = {c["name"]: c["id"] for c in cats}
    docs = {s: {"info": info, "licenses": [], "categories": cats, "images": [], "annotations": []} for s in SPLITS}
    for r in rendered:
        scene = r.scene
        doc = docs[scene.split]
        doc["images"].append({"id": scene.image_id, "file_name": file_name(scene.image_id), "width": image_size,
                              "height": image_size})
        for obj, area in zip(scene.objects, r.areas):
            doc["annotations"].append({
                "id": obj.ann_id, "image_id": scene.image_id, "category_id": cat_id[obj.shape],
                "bbox": [float(v) for v in obj.box], "area": area, "iscrowd": 0, "colour": obj.colour,
                "colour2": obj.colour2, "kind": obj.kind, "size": obj.size,
            })
    return docs


def _all_splits(coco: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """One COCO document holding the images and annotations of every split (in :data:`SPLITS` order)."""
    first = coco[SPLITS[0]]
    return {
        "info": first["info"],
        "licenses": [],
        "categories": first["categories"],
        "images": [im for s in SPLITS for im in coco[s]["images"]],
        "annotations": [a for s in SPLITS for a in coco[s]["annotations"]],
    }


def write_coco(out: Path, coco: Mapping[str, Mapping[str, Any]]) -> None:
    """COCO detection (:mod:`~loupe_bench.data.formats.coco`): ``annotations/instances_<split>.json`` per split, the
    documents of :func:`coco_instances` (sorted keys, no indent)."""
    for split in SPLITS:
        atomic_write_json(out / "annotations" / f"instances_{split}.json", coco[split], indent=None)


def write_refer(out: Path, rendered: Sequence[RenderedScene], coco: Mapping[str, Mapping[str, Any]],
                image_size: int) -> int:
    """refer-style referring expressions (:mod:`~loupe_bench.data.formats.refer`), returning how many refs.

    ``refsynth/instances.json``: the COCO document of all splits together; ``refsynth/refs(unc).p``: a pickle
    (protocol 2) of one dict per expression (:func:`_referring_expressions`) with ``ref_id`` (0, 1, …), ``ann_id``,
    ``image_id``, ``category_id``, ``split``, ``file_name``, ``sent_ids`` and ``sentences`` (``sent``, ``raw``,
    ``sent_id`` 0, 1, … over all refs, ``tokens``, ``head``).
    """
    atomic_write_json(out / "refsynth" / "instances.json", _all_splits(coco), indent=None)
    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    refs: List[Dict[str, Any]] = []
    ref_sent_id = 0
    for r in rendered:
        scene = r.scene
        fname = file_name(scene.image_id)  # one string per image: the pickle's bytes depend on shared objects
        for k, texts, heads in _referring_expressions(scene, image_size):
            obj = scene.objects[k]
            sents = []
            for t, head in zip(texts, heads):
                sents.append({"sent": t, "raw": t, "sent_id": ref_sent_id, "tokens": tokenize(t), "head": head})
                ref_sent_id += 1
            refs.append({
                "ref_id": len(refs), "ann_id": obj.ann_id, "image_id": scene.image_id,
                "category_id": cat_id[obj.shape], "split": scene.split, "file_name": fname,
                "sent_ids": [s["sent_id"] for s in sents], "sentences": sents,
            })
    atomic_write_bytes(out / "refsynth" / "refs(unc).p", pickle.dumps(refs, protocol=2))
    return len(refs)


def write_karpathy(out: Path, rendered: Sequence[RenderedScene]) -> None:
    """Karpathy captions (:mod:`~loupe_bench.data.formats.karpathy`) and their gold phrases.

    ``dataset_synthetic.json``: ``{"dataset": "synthetic", "images": [...]}`` with per image ``imgid``
    (image_id − 1), ``cocoid``, ``filename``, ``filepath`` (``images``), ``split``, ``sentids`` and ``sentences``
    (``raw``, ``tokens``, ``imgid``, ``sentid``); ``phrases.json``: ``{sentid: [phrase entry, ...]}``
    (:func:`_phrase_entries`).
    """
    images: List[Dict[str, Any]] = []
    phrases: Dict[str, List[Dict[str, Any]]] = {}
    for r in rendered:
        scene = r.scene
        sentences = []
        for (text, spans), sid in zip(scene.captions, r.sent_ids):
            phrases[str(sid)] = _phrase_entries(text, spans, scene.objects)
            sentences.append({"raw": text, "tokens": tokenize(text), "imgid": scene.image_id - 1, "sentid": sid})
        images.append({"imgid": scene.image_id - 1, "cocoid": scene.image_id, "filename": file_name(scene.image_id),
                       "filepath": "images", "split": scene.split, "sentids": list(r.sent_ids),
                       "sentences": sentences})
    atomic_write_json(out / "phrases.json", phrases, indent=None)
    atomic_write_json(out / "dataset_synthetic.json", {"dataset": "synthetic", "images": images}, indent=None)


def write_shards(out: Path, rendered: Sequence[RenderedScene]) -> Dict[str, List[str]]:
    """webdataset shards (:mod:`~loupe_bench.data.formats.shards`): ``shards/<split>-<n:06d>.tar`` of at most
    :data:`SHARD_SIZE` samples (one, possibly empty, shard for an empty split), each sample ``<key>.jpg`` and
    ``<key>.json`` (``image_id``, ``split``, ``captions``, ``sent_ids``, ``phrases`` per caption, ``label``; sorted
    keys) with key ``<image_id:06d>``, archived by :func:`_tar_bytes`. Returns each split's shard paths."""
    samples: Dict[str, List[Tuple[str, bytes, bytes]]] = {s: [] for s in SPLITS}
    for r in rendered:
        scene = r.scene
        meta = {
            "image_id": scene.image_id,
            "split": scene.split,
            "captions": [c[0] for c in scene.captions],
            "sent_ids": list(r.sent_ids),
            "phrases": [_phrase_entries(text, spans, scene.objects) for text, spans in scene.captions],
            "label": r.label,
        }
        samples[scene.split].append((f"{scene.image_id:06d}", r.jpg, json.dumps(meta, sort_keys=True).encode("utf-8")))
    shard_files: Dict[str, List[str]] = {}
    for split in SPLITS:
        shard_files[split] = []
        for k in range(0, max(len(samples[split]), 1), SHARD_SIZE):
            members = []
            for key, jpg, js in samples[split][k : k + SHARD_SIZE]:
                members += [(f"{key}.jpg", jpg), (f"{key}.json", js)]
            name = f"{split}-{k // SHARD_SIZE:06d}.tar"
            _put(out / "shards" / name, _tar_bytes(members))
            shard_files[split].append(f"shards/{name}")
    return shard_files


def world_record(seed: int, size: str, image_size: int, rendered: Sequence[RenderedScene], num_refs: int,
                 shard_files: Mapping[str, List[str]], matching: Optional[Mapping[str, Any]] = None
                 ) -> Dict[str, Any]:
    """The content of ``world.json``: generator options, counts, vocabulary, generator constants, class names,
    COCO categories and the file map of every format (with ``matching``, the return of
    :func:`~loupe_bench.data.synth_matching.write_matching`: its folders in the file map, its counts per split and
    kind under ``matching``)."""
    counts = {s: sum(1 for r in rendered if r.scene.split == s) for s in SPLITS}
    kind_counts: Dict[str, int] = {k: 0 for k in KINDS}
    for r in rendered:
        for obj in r.scene.objects:
            kind_counts[obj.kind] = kind_counts.get(obj.kind, 0) + 1
    return {
        "name": "synthetic",
        "version": WORLD_VERSION,
        "seed": int(seed),
        "size": size,
        "image_size": image_size,
        "splits": counts,
        "num_images": len(rendered),
        "num_captions": sum(len(r.sent_ids) for r in rendered),
        "num_annotations": sum(len(r.scene.objects) for r in rendered),
        "num_refs": num_refs,
        "shapes": list(SHAPES),
        "colours": {k: list(v) for k, v in COLOURS.items()},
        "sizes": list(SIZE_RANGES),
        "size_ranges": {k: list(v) for k, v in SIZE_RANGES.items()},
        "kinds": list(KINDS),
        "two_part_prob": TWO_PART_PROB,
        "two_part_size_ranges": {k: list(v) for k, v in TWO_PART_SIZE_RANGES.items()},
        "two_part_distractor_prob": TWO_PART_DISTRACTOR_PROB,
        "num_objects_by_kind": dict(sorted(kind_counts.items())),
        "backgrounds": list(BACKGROUNDS),
        "heldout_combos": [list(c) for c in HELDOUT_COMBOS],
        "heldout_combos_of_two_part": "top colour and shape",
        "classnames": list(SHAPES),
        "class_label": "shape of the large object",
        "categories": categories(),
        "files": {
            "karpathy": "dataset_synthetic.json",
            "phrases": "phrases.json",
            "images": "images",
            "coco": {s: f"annotations/instances_{s}.json" for s in SPLITS},
            "refer": {"instances": "refsynth/instances.json", "refs": "refsynth/refs(unc).p", "splitBy": "unc"},
            "classification": "classification",
            "classnames": "classification/classnames.txt",
            "shards": dict(shard_files),
            "flickr30k_entities": F30K_DIR,
            **(dict(matching["files"]) if matching else {}),
        },
        **({"matching": dict(matching["counts"])} if matching else {}),
    }


def generate_world(
    out: Union[str, os.PathLike],
    seed: int = 0,
    size: str = "tiny",
    image_size: int = 64,
    progress: bool = False,
    workers: Optional[int] = None,
) -> Path:
    """Generate the synthetic world into ``out`` (layout in ``docs/architecture.md``) and return its path.

    :func:`sample_world` draws every scene; then one writer per format: :func:`write_images`,
    :func:`write_imagefolder`, :func:`write_shards`, :func:`write_coco`, :func:`write_refer`,
    :func:`write_flickr30k_entities`, :func:`write_karpathy`,
    :func:`~loupe_bench.data.synth_matching.write_matching`; last ``world.json`` (:func:`world_record`) and
    ``README.md``.

    Args:
        out: output folder (created; existing files of the same names are replaced).
        seed: random seed; same seed and options give byte-identical files.
        size: ``tiny``, ``small`` or ``medium`` (images per split in :data:`SIZES`).
        image_size: square image side in pixels (32 to :data:`MAX_IMAGE_SIZE`).
        progress: show a rich progress bar.
        workers: processes that render images (default: up to 4 CPUs for ``small``/``medium``, 1 for ``tiny``).
            The output does not depend on it.
    """
    if size not in SIZES:
        raise SpecError(f"unknown world size {size!r}; known: {', '.join(SIZES)}")
    if int(seed) < 0:
        raise SpecError(f"seed must be a non-negative integer, got {seed}")
    if not 32 <= int(image_size) <= MAX_IMAGE_SIZE:
        raise SpecError(f"image size must be 32 to {MAX_IMAGE_SIZE} pixels, got {image_size}")
    image_size = int(image_size)
    out = Path(out)
    _prepare_out(out)
    if workers is None:
        workers = 1 if size == "tiny" else max(1, min(4, os.cpu_count() or 1))

    rendered = sample_world(seed, SIZES[size], image_size, workers, progress)
    write_images(out, rendered)
    write_imagefolder(out, rendered)
    shard_files = write_shards(out, rendered)
    coco = coco_instances(rendered, image_size)
    write_coco(out, coco)
    num_refs = write_refer(out, rendered, coco, image_size)
    write_flickr30k_entities(out / F30K_DIR, [r.scene for r in rendered], image_size)
    write_karpathy(out, rendered)
    matching = importlib.import_module(MATCHING_WRITER).write_matching(out, rendered, seed, image_size)
    world = world_record(seed, size, image_size, rendered, num_refs, shard_files, matching)
    atomic_write_json(out / "world.json", world)
    atomic_write_text(out / "README.md", _readme(world))
    return out


def load_object_kinds(world_dir: Union[str, os.PathLike], split: str
                      ) -> Dict[int, List[Tuple[Tuple[float, float, float, float], str, int]]]:
    """Each object's normalised box, kind and annotation id per image of ``split``, from the world's COCO file.

    Reads ``annotations/instances_<split>.json`` (path from ``world.json``) with the COCO loader; every annotation
    carries ``kind`` (``flat`` / ``two-part``; worlds before version 3 have no such key and only flat objects, read
    as ``flat``). A pixel box ``(x, y, w, h)`` on a ``W × H`` image becomes ``(x/W, y/H, (x+w)/W, (y+h)/H)``; a
    two-part object's colours split at the box's middle row ``y + h//2`` (:attr:`SceneObject.split_row`), i.e. at
    normalised height ``(y + h//2)/H``.

    Returns:
        ``{image_id: [(box_xyxy_norm, kind, ann_id), ...]}`` with objects in drawing order (later ones on top);
        every image of the split is a key, also one without objects.
    """
    from .world import load_world
    from .formats.coco import CocoLoader

    world = load_world(world_dir)
    if split not in world.splits:
        raise SpecError(f"unknown split {split!r}; the world has {', '.join(world.splits)}")
    recs = CocoLoader(world.path("coco", split), verify_images=False).load()
    out: Dict[int, List[Tuple[Tuple[float, float, float, float], str, int]]] = {}
    for im in recs.images:
        W = float(im.width or world.image_size)
        H = float(im.height or world.image_size)
        rows = []
        for b in im.boxes:
            x, y, w, h = b.bbox
            rows.append(((x / W, y / H, (x + w) / W, (y + h) / H), b.attribute("kind") or "flat", b.ann_id))
        out[im.image_id] = rows
    return out


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import Progress

    prog = Progress(transient=True)
    prog.start()
    return prog, prog.add_task("synthetic world", total=total)


def _readme(world: Dict[str, Any]) -> str:
    splits = ", ".join(f"{k} {v}" for k, v in world["splits"].items())
    held = ", ".join(f"{c} {s}" for c, s in world["heldout_combos"])
    kinds = ", ".join(f"{v} {k}" for k, v in world["num_objects_by_kind"].items()) + " objects"
    counts = world.get("matching")
    matching = "" if not counts else (
        "| `captionsel/<split>/<kind>.json` | SugarCrepe caption selection (test, comptest; "
        f"{sum(sum(c.values()) for c in counts['captionsel'].values())} items): `{{id: {{filename, caption, "
        f"negative_caption}}}}`, one file per kind ({', '.join(next(iter(counts['captionsel'].values())))}) |\n"
        "| `winoground/<split>/` | Winoground layout (test, comptest; "
        f"{sum(sum(c.values()) for c in counts['winoground'].values())} pairs): `examples.jsonl`, "
        "`images/ex_<id>_img_<0,1>.png`; `objects.json` (each image's objects) |\n")
    return f"""# loupe-bench synthetic fine-grained world

Generated by `loupe-bench data synth` (world version {world['version']}, seed {world['seed']}, size
`{world['size']}`, {world['image_size']} px images). Same seed and options give byte-identical files.

Images per split: {splits} ({world['num_images']} images, {world['num_captions']} captions,
{world['num_annotations']} boxes, {world['num_refs']} referring expressions).

Each image shows 1-5 shapes ({', '.join(world['shapes'])}) in saturated colours ({', '.join(world['colours'])}),
exactly one of them large, on a noisy, striped, checkered or shaded background. Objects are `flat` (one colour)
or, with probability {world['two_part_prob']}, `two-part`: top half one colour, bottom half another, described
top colour first ("red-and-blue square"); {kinds}. Every image has 5 captions that mention some of its objects with
attributes and spatial relations. The `comptest` split holds the colour-shape combinations that never occur in
train/val/test (for a two-part object: its top colour and shape): {held}.

| path | format |
|---|---|
| `images/` | all images (JPEG, quality 95) |
| `dataset_synthetic.json` | Karpathy caption JSON (`images[].sentences[].raw/tokens`, `split`, `filename`) |
| `phrases.json` | gold phrase spans keyed by sentence id: `start`, `end` (character offsets), `text`, `ann_id`, `bbox` (xywh), `kind` of the object |
| `annotations/instances_<split>.json` | COCO detection (category = shape, boxes xywh pixels; extra keys `colour` (top colour), `colour2` (bottom colour, null when flat), `kind` (`flat` / `two-part`), `size`) |
| `refsynth/instances.json`, `refsynth/refs(unc).p` | refer-style referring expressions (pickle, protocol 2) |
| `classification/<split>/<class>/`, `classification/classnames.txt` | ImageFolder classification (class = shape of the large object) |
| `shards/<split>-NNNNNN.tar` | webdataset shards: `<key>.jpg` + `<key>.json` (captions, phrases, image id) |
| `flickr30k_entities/` | Flickr30K Entities layout: `Sentences/<id>.txt` (captions, phrases marked `[/EN#<ann_id>/<shape> ...]`), `Annotations/<id>.xml` (every object's box, 1-based VOC corners), `<split>.txt`, `types.txt` (shapes); images in `images/` (loader option `image_root`) |
{matching}| `world.json` | generator options, vocabulary, splits, class names, file map |
"""
