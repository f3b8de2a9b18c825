"""Synthetic analogues of the compositional matching benchmarks (SugarCrepe-style caption selection, Winoground),
built exactly from the synthetic world's scenes and written in the real benchmarks' file layouts.

Written by :func:`write_matching` into the world folder for the splits :data:`MATCHING_SPLITS` (``test``,
``comptest``; never ``train``/``val``):

* ``captionsel/<split>/<kind>.json`` — SugarCrepe's layout ``{"0": {"filename", "caption", "negative_caption"},
  ...}``, ``filename`` relative to the world's ``images/`` folder; one file per kind of :data:`CAPTION_KINDS`
  (written also when empty). At most :data:`CAPTIONSEL_MAX` items per kind and split, taken round-robin over the
  split's images (one candidate per image, then a second one, ... up to :data:`CAPTIONSEL_PER_IMAGE`).
* ``winoground/<split>/examples.jsonl`` and ``winoground/<split>/images/ex_<id>_img_<0|1>.png`` — Winoground's
  layout (keys ``id``, ``image_0``, ``image_1``, ``caption_0``, ``caption_1``, ``tag``, ``secondary_tag``,
  ``num_main_preds``, ``collapsed_tag``); ``tag`` is the kind of :data:`WINOGROUND_KINDS`, ``collapsed_tag``
  Winoground's category of what the two captions swap (``Relation`` for swapped adjectives, ``Object`` for swapped
  noun phrases), ``secondary_tag`` empty, ``num_main_preds`` 1. An addition of ours, ignored by Winoground
  readers: ``winoground/<split>/objects.json``, ``{image name: [{"bbox" (xywh px), "shape", "colour", "colour2",
  "kind", "size"}, ...]}``. ``min(`` :data:`WINOGROUND_MAX` ``, images of the split)`` examples per split, kinds in
  turn.

**Truth.** A phrase ``[size] c shape`` (flat) or ``[size] c1-and-c2 shape`` (two-part, top colour first) *fits* an
object leniently (:func:`fits`) when the shapes agree and, flat: ``c`` is either of its colours; two-part: its
(top, bottom) colours are exactly ``(c1, c2)``; the size word, when there is one and it is taken into account,
must equal the object's size. A negative is kept only when it is surely false (:func:`surely_false`): some phrase
fits no object of the image (sizes ignored except for ``add_attribute``), or, for a caption with a relation, no
pair of distinct objects fitting its two phrases stands in that relation (:func:`~loupe_bench.data.synth.relation`).
Positives are the world's own captions of the image (true by construction) or, for ``add_object``, built from the
image's objects with the world's templates. In the ``test`` split no negative names a held-out (colour, shape)
combination (:data:`~loupe_bench.data.synth.HELDOUT_COMBOS`), so the split stays in the training distribution.

**Text balance.** Every negative is its positive with words replaced or reordered inside the same template:
``replace_colour``, ``replace_shape``, ``swap_colours``, ``swap_parts`` and ``replace_relation`` keep the word
count and template (``red-and-blue`` is one word); ``add_attribute`` adds one size word and ``add_object`` one
``and a <phrase>`` (``a P`` -> ``a P and a C``, ``a P and a Q`` -> ``a P, a Q and a C``), as in SugarCrepe's add
subsets. Replacement colours/shapes are drawn uniformly among those that make the caption false.

**Randomness.** Separate streams, so the rest of the world stays byte-identical: caption selection
``default_rng([seed, 8, split_index])``, Winoground sampling ``default_rng([seed, 7, split_index])`` and rendering
``default_rng([seed, 7, split_index, id + 1])`` (the same stream for both images of a pair: same background and
noise).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from .language import relation, t_and, t_plain, t_rel, t_three
from .render import encode_image, render_scene
from .sampling import (
    BACKGROUNDS, COLOURS, HELDOUT_COMBOS, SHAPES, SIZE_RANGES, TWO_PART_PROB, TWO_PART_SIZE_RANGES, Scene,
    SceneObject, jitter,
)
from .scenes import SPLITS, RenderedScene, file_name

MATCHING_SPLITS: Tuple[str, ...] = ("test", "comptest")
CAPTIONSEL_MAX = 150
CAPTIONSEL_PER_IMAGE = 2
WINOGROUND_MAX = 90
#: relation -> its opposite (``next to`` has none and is never replaced)
OPPOSITE: Dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_HELDOUT = frozenset(HELDOUT_COMBOS)


# ----------------------------------------------------------------------------------------------------------------
# phrases and captions
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phrase:
    """A noun phrase of the world's captions: ``[size] <colours joined by -and-> <shape>``."""

    shape: str
    colours: Tuple[str, ...]  # (colour,) flat, (top, bottom) two-part
    size: Optional[str] = None

    @classmethod
    def of(cls, obj: SceneObject, with_size: bool) -> "Phrase":
        colours = (obj.colour,) if obj.colour2 is None else (obj.colour, obj.colour2)
        return cls(obj.shape, colours, obj.size if with_size else None)

    @property
    def text(self) -> str:
        words = f"{'-and-'.join(self.colours)} {self.shape}"
        return f"{self.size} {words}" if self.size else words


@dataclass(frozen=True)
class Caption:
    """A caption as text pieces and phrases; ``relation`` is the relation word between its two phrases, if any."""

    parts: Tuple[Union[str, Phrase], ...]
    relation: Optional[str] = None

    @property
    def phrases(self) -> Tuple[Phrase, ...]:
        return tuple(p for p in self.parts if isinstance(p, Phrase))

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)

    def with_phrase(self, k: int, phrase: Phrase) -> "Caption":
        """The caption with its ``k``-th phrase replaced."""
        idx = [i for i, p in enumerate(self.parts) if isinstance(p, Phrase)][k]
        return Caption(self.parts[:idx] + (phrase,) + self.parts[idx + 1:], self.relation)

    def with_relation(self, new: str) -> "Caption":
        """The caption with its relation word replaced (it ends the piece between the two phrases)."""
        mid, old = self.parts[2], f" {self.relation} a "
        return Caption(self.parts[:2] + (mid[: -len(old)] + f" {new} a ",) + self.parts[3:], new)


def fill(template_parts: Sequence[Union[str, int]], phrases: Sequence[Phrase], relation_word: Optional[str] = None
         ) -> Caption:
    """A caption from a world template's output (ints index ``phrases``)."""
    return Caption(tuple(p if isinstance(p, str) else phrases[p] for p in template_parts), relation_word)


def scene_captions(scene: Scene, image_size: int) -> List[Caption]:
    """The scene's own captions as :class:`Caption` (a two-phrase caption whose middle piece ends in
    ``" <relation(obj0, obj1)> a "`` carries that relation)."""
    out = []
    for text, spans in scene.captions:
        parts: List[Union[str, Phrase]] = []
        pos = 0
        for start, end, k in spans:
            words = text[start:end]
            phrase = Phrase.of(scene.objects[k], words.split(" ", 1)[0] in SIZE_RANGES)
            if phrase.text != words:
                raise ValueError(f"caption phrase {words!r} does not describe its object ({phrase.text!r})")
            parts += [text[pos:start], phrase]
            pos = end
        parts.append(text[pos:])
        rel = None
        if len(spans) == 2:
            word = relation(scene.objects[spans[0][2]], scene.objects[spans[1][2]], image_size)
            rel = word if str(parts[2]).endswith(f" {word} a ") else None
        out.append(Caption(tuple(parts), rel))
    return out


def fits(obj: SceneObject, phrase: Phrase, use_size: bool = False) -> bool:
    """Lenient fit of a phrase to an object (module docstring, **Truth**)."""
    if obj.shape != phrase.shape or (use_size and phrase.size is not None and obj.size != phrase.size):
        return False
    if len(phrase.colours) == 2:
        return (obj.colour, obj.colour2) == phrase.colours
    return phrase.colours[0] in (obj.colour, obj.colour2)


def surely_false(objects: Sequence[SceneObject], caption: Caption, image_size: int, use_size: bool = False) -> bool:
    """True when some phrase fits no object, or the caption's relation holds for no pair of distinct objects that
    fit its two phrases (module docstring, **Truth**)."""
    phrases = caption.phrases
    if any(not any(fits(o, p, use_size) for o in objects) for p in phrases):
        return True
    if caption.relation is None:
        return False
    first = [o for o in objects if fits(o, phrases[0], use_size)]
    second = [o for o in objects if fits(o, phrases[1], use_size)]
    return all(relation(a, b, image_size) != caption.relation for a in first for b in second if a is not b)


def _heldout_free(caption: Caption) -> bool:
    return all((p.colours[0], p.shape) not in _HELDOUT for p in caption.phrases)


# ----------------------------------------------------------------------------------------------------------------
# caption selection: one proposer per kind, then a common filter
# ----------------------------------------------------------------------------------------------------------------
Pair = Tuple[Caption, Caption]


def _replace_colour(rng, scene: Scene, captions: Sequence[Caption], n: int) -> List[Pair]:
    """One colour word of one phrase (either part of a two-part phrase) replaced by a colour the phrase lacks."""
    out = []
    for cap in captions:
        for k, ph in enumerate(cap.phrases):
            for i in range(len(ph.colours)):
                for c in COLOURS:
                    if c not in ph.colours:
                        cols = ph.colours[:i] + (c,) + ph.colours[i + 1:]
                        out.append((cap, cap.with_phrase(k, Phrase(ph.shape, cols, ph.size))))
    return out


def _replace_shape(rng, scene: Scene, captions: Sequence[Caption], n: int) -> List[Pair]:
    """The shape noun of one phrase replaced by another shape."""
    return [(cap, cap.with_phrase(k, Phrase(s, ph.colours, ph.size)))
            for cap in captions for k, ph in enumerate(cap.phrases) for s in SHAPES if s != ph.shape]


def _swap_colours(rng, scene: Scene, captions: Sequence[Caption], n: int) -> List[Pair]:
    """The colour words of two phrases with different colours exchanged."""
    out = []
    for cap in captions:
        phs = cap.phrases
        for i in range(len(phs)):
            for j in range(i + 1, len(phs)):
                if phs[i].colours != phs[j].colours:
                    neg = cap.with_phrase(i, Phrase(phs[i].shape, phs[j].colours, phs[i].size))
                    out.append((cap, neg.with_phrase(j, Phrase(phs[j].shape, phs[i].colours, phs[j].size))))
    return out


def _swap_parts(rng, scene: Scene, captions: Sequence[Caption], n: int) -> List[Pair]:
    """The two colours of a two-part phrase exchanged (``red-and-blue`` -> ``blue-and-red``)."""
    return [(cap, cap.with_phrase(k, Phrase(ph.shape, ph.colours[::-1], ph.size)))
            for cap in captions for k, ph in enumerate(cap.phrases) if len(ph.colours) == 2]


def _add_attribute(rng, scene: Scene, captions: Sequence[Caption], n: int) -> List[Pair]:
    """A size word added to a phrase that has none (kept only when the size is wrong)."""
    return [(cap, cap.with_phrase(k, Phrase(ph.shape, ph.colours, s)))
            for cap in captions for k, ph in enumerate(cap.phrases) if ph.size is None for s in SIZE_RANGES]


def _replace_relation(rng, scene: Scene, captions: Sequence[Caption], n: int) -> List[Pair]:
    """The relation word replaced by its opposite (:data:`OPPOSITE`)."""
    return [(cap, cap.with_relation(OPPOSITE[cap.relation])) for cap in captions if cap.relation in OPPOSITE]


def random_phrase(rng: np.random.Generator) -> Phrase:
    """A phrase drawn like a world object's: two-part with probability ``TWO_PART_PROB``, uniform shape and
    colours (two distinct ones when two-part), a uniform size word with probability 1/2."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    names = list(COLOURS)
    c1 = names[int(rng.integers(len(names)))]
    colours: Tuple[str, ...] = (c1,)
    if rng.random() < TWO_PART_PROB:
        rest = [c for c in names if c != c1]
        colours = (c1, rest[int(rng.integers(len(rest)))])
    size = list(SIZE_RANGES)[int(rng.integers(len(SIZE_RANGES)))] if rng.random() < 0.5 else None
    return Phrase(shape, colours, size)


def _add_object(rng, scene: Scene, captions: Sequence[Caption], n: int, tries: int = 12) -> List[Pair]:
    """Positive ``a P`` or ``a P and a Q`` (world templates, the image's objects, size words with probability
    1/2); negative the same phrases plus a random phrase (:func:`random_phrase`) in the next longer template."""
    objs = scene.objects
    out = []
    for _ in range(tries):
        k = 1 if len(objs) == 1 or rng.random() < 0.5 else 2
        chosen = [objs[i] for i in rng.permutation(len(objs))[:k]]
        phrases = [Phrase.of(o, bool(rng.random() < 0.5)) for o in chosen]
        extra = random_phrase(rng)
        pos = fill((t_plain if k == 1 else t_and)(chosen, scene, n), phrases)
        neg = fill((t_and if k == 1 else t_three)(chosen, scene, n), phrases + [extra])
        out.append((pos, neg))
    return out


@dataclass(frozen=True)
class CaptionKind:
    """A caption-selection kind: its proposer ``(rng, scene, captions, image_size) -> [(positive, negative)]``,
    whether size words count in the falseness check, and whether the word count is kept."""

    propose: Callable[..., List[Pair]]
    use_size: bool = False
    same_length: bool = True


CAPTION_KINDS: Dict[str, CaptionKind] = {
    "replace_colour": CaptionKind(_replace_colour),
    "replace_shape": CaptionKind(_replace_shape),
    "swap_colours": CaptionKind(_swap_colours),
    "swap_parts": CaptionKind(_swap_parts),
    "add_object": CaptionKind(_add_object, same_length=False),
    "add_attribute": CaptionKind(_add_attribute, use_size=True, same_length=False),
    "replace_relation": CaptionKind(_replace_relation),
}


def caption_candidates(rng: np.random.Generator, kind: str, scene: Scene, image_size: int,
                       limit: int = CAPTIONSEL_PER_IMAGE, captions: Optional[Sequence[Caption]] = None
                       ) -> List[Tuple[str, str]]:
    """Up to ``limit`` distinct valid ``(positive, negative)`` texts of one image and kind, drawn uniformly without
    replacement from the kind's proposals (shuffled, then taken in order while valid); ``captions`` the scene's
    :func:`scene_captions` when already parsed.

    Valid: the negative differs from the positive, is surely false (:func:`surely_false`) and, outside
    ``comptest``, names no held-out combination."""
    spec = CAPTION_KINDS[kind]
    if captions is None:
        captions = scene_captions(scene, image_size)
    proposals = spec.propose(rng, scene, captions, image_size)
    out: List[Tuple[str, str]] = []
    for i in rng.permutation(len(proposals)):
        pos, neg = proposals[i]
        if scene.split != "comptest" and not _heldout_free(neg):
            continue
        if not surely_false(scene.objects, neg, image_size, spec.use_size):
            continue
        key = (pos.text, neg.text)
        if key[0] != key[1] and key not in out:
            out.append(key)
            if len(out) == limit:
                break
    return out


def caption_selection(rng: np.random.Generator, kind: str, scenes: Sequence[Tuple[Scene, Sequence[Caption]]],
                      image_size: int) -> Dict[str, Dict[str, str]]:
    """SugarCrepe items of one kind from ``(scene, its captions)`` pairs: round ``r`` takes the ``r``-th candidate
    of every image in order, rounds ``0 … CAPTIONSEL_PER_IMAGE - 1``, until :data:`CAPTIONSEL_MAX` items."""
    cands = [(scene, caption_candidates(rng, kind, scene, image_size, captions=caps)) for scene, caps in scenes]
    doc: Dict[str, Dict[str, str]] = {}
    for r in range(CAPTIONSEL_PER_IMAGE):
        for scene, pairs in cands:
            if r < len(pairs) and len(doc) < CAPTIONSEL_MAX:
                doc[str(len(doc))] = {"filename": file_name(scene.image_id), "caption": pairs[r][0],
                                      "negative_caption": pairs[r][1]}
    return doc


# ----------------------------------------------------------------------------------------------------------------
# Winoground pairs
# ----------------------------------------------------------------------------------------------------------------
def _spec(rng: np.random.Generator, comp: bool, two_part: Optional[bool], avoid_shape: Optional[str] = None
          ) -> Tuple[str, Tuple[str, ...]]:
    """``(shape, colours)`` of a pair object: kind two-part with probability ``TWO_PART_PROB`` unless forced;
    with ``comp`` its (top colour, shape) is a held-out combination."""
    two = bool(rng.random() < TWO_PART_PROB) if two_part is None else two_part
    names = list(COLOURS)
    if comp:
        c1, shape = HELDOUT_COMBOS[int(rng.integers(len(HELDOUT_COMBOS)))]
    else:
        shapes = [s for s in SHAPES if s != avoid_shape]
        shape, c1 = shapes[int(rng.integers(len(shapes)))], names[int(rng.integers(len(names)))]
    if not two:
        return shape, (c1,)
    rest = [c for c in names if c != c1]
    return shape, (c1, rest[int(rng.integers(len(rest)))])


def _object(rng: np.random.Generator, spec: Tuple[str, Tuple[str, ...]], size: str, n: int, roomy: bool
            ) -> SceneObject:
    """An object of the spec with jittered colours (box at 0, 0) and the world's side range for its size, the
    two-part range when ``roomy`` (the pair holds a two-part object: either may be two-part after a swap)."""
    shape, colours = spec
    lo, hi = (TWO_PART_SIZE_RANGES if roomy else SIZE_RANGES)[size]
    side = max(4, int(round(n * rng.uniform(lo, hi))))
    rgb2 = jitter(rng, colours[1]) if len(colours) == 2 else None
    return SceneObject(shape, colours[0], size, (0, 0, side, side), jitter(rng, colours[0]),
                       colour2=colours[1] if len(colours) == 2 else None, rgb2=rgb2)


def _box_at(centre: Tuple[int, int], side: int) -> Tuple[int, int, int, int]:
    return centre[0] - side // 2, centre[1] - side // 2, side, side


def _disjoint(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> bool:
    """Boxes at least one pixel apart."""
    return a[0] + a[2] < b[0] or b[0] + b[2] < a[0] or a[1] + a[3] < b[1] or b[1] + b[3] < a[1]


def _place(rng: np.random.Generator, a: SceneObject, b: SceneObject, n: int, exchange: bool) -> bool:
    """Put ``a`` and ``b`` at uniform integer centres (up to 60 tries) where each box fits the image at either
    centre and the boxes are disjoint — also with the centres exchanged when ``exchange``."""
    sa, sb = a.box[2], b.box[2]
    lo, hi = max(sa // 2, sb // 2), n - max(sa - sa // 2, sb - sb // 2)
    for _ in range(60):
        ca = tuple(int(v) for v in rng.integers(lo, hi + 1, size=2))
        cb = tuple(int(v) for v in rng.integers(lo, hi + 1, size=2))
        if not _disjoint(_box_at(ca, sa), _box_at(cb, sb)):
            continue
        if exchange and not _disjoint(_box_at(cb, sa), _box_at(ca, sb)):
            continue
        a.box, b.box = _box_at(ca, sa), _box_at(cb, sb)
        return True
    return False


Example = Tuple[List[SceneObject], List[SceneObject], Caption, Caption]


def _pair_objects(rng: np.random.Generator, comp: bool, n: int, two_part: Optional[bool], exchange: bool
                  ) -> Optional[Tuple[SceneObject, SceneObject]]:
    """A large object and a small one of another shape, placed (:func:`_place`); None when placement fails."""
    first = _spec(rng, comp, two_part)
    second = _spec(rng, False, None, avoid_shape=first[0])
    roomy = len(first[1]) == 2 or len(second[1]) == 2
    a, b = _object(rng, first, "large", n, roomy), _object(rng, second, "small", n, roomy)
    return (a, b) if _place(rng, a, b, n, exchange) else None


def _recoloured(obj: SceneObject, like: SceneObject) -> SceneObject:
    """``obj`` in the colours (names and RGB) of ``like``."""
    return dataclasses.replace(obj, colour=like.colour, colour2=like.colour2, rgb=like.rgb, rgb2=like.rgb2)


def _wino_colours(rng: np.random.Generator, comp: bool, n: int) -> Optional[Example]:
    """Image 1 = image 0 with the two objects' colours exchanged; ``a A and a B`` for each image."""
    pair = _pair_objects(rng, comp, n, None, exchange=False)
    if pair is None:
        return None
    a, b = pair
    if {a.colour, a.colour2} & {b.colour, b.colour2} - {None}:  # shared colours: the swap could stay true
        return None
    a1, b1 = _recoloured(a, b), _recoloured(b, a)
    caps = [fill(t_and(objs, None, n), [Phrase.of(o, False) for o in objs]) for objs in ([a, b], [a1, b1])]
    return [a, b], [a1, b1], caps[0], caps[1]


def _wino_relation(rng: np.random.Generator, comp: bool, n: int) -> Optional[Example]:
    """Image 1 = image 0 with the two objects' centres exchanged; ``a A <rel> a B`` / ``a B <rel> a A`` with
    ``rel = relation(A, B)`` in image 0, kept when one axis dominates (at least ``n/4`` apart and twice the other
    axis) and the world's :func:`~loupe_bench.data.synth.relation` flips in image 1."""
    pair = _pair_objects(rng, comp, n, None, exchange=True)
    if pair is None:
        return None
    a, b = pair
    (ax, ay), (bx, by) = a.centre, b.centre
    big, small = sorted((abs(ax - bx), abs(ay - by)), reverse=True)
    if big < n / 4 or big < 2 * small:
        return None
    ca = (a.box[0] + a.box[2] // 2, a.box[1] + a.box[3] // 2)
    cb = (b.box[0] + b.box[2] // 2, b.box[1] + b.box[3] // 2)
    a1, b1 = dataclasses.replace(a, box=_box_at(cb, a.box[2])), dataclasses.replace(b, box=_box_at(ca, b.box[2]))
    rel = relation(a, b, n)
    if rel not in OPPOSITE or relation(a1, b1, n) != OPPOSITE[rel] or relation(b1, a1, n) != rel:
        return None
    cap0 = fill(t_rel([a, b], None, n), [Phrase.of(a, False), Phrase.of(b, False)], rel)
    cap1 = fill(t_rel([b1, a1], None, n), [Phrase.of(b1, False), Phrase.of(a1, False)], rel)
    return [a, b], [a1, b1], cap0, cap1


def _wino_parts(rng: np.random.Generator, comp: bool, n: int) -> Optional[Example]:
    """Image 1 = image 0 with the two-part object's halves exchanged; ``a c1-and-c2 S and a B`` for each image."""
    pair = _pair_objects(rng, comp, n, True, exchange=False)
    if pair is None:
        return None
    a, b = pair
    a1 = dataclasses.replace(a, colour=a.colour2, colour2=a.colour, rgb=a.rgb2, rgb2=a.rgb)
    caps = [fill(t_and(objs, None, n), [Phrase.of(o, False) for o in objs]) for objs in ([a, b], [a1, b])]
    return [a, b], [a1, dataclasses.replace(b)], caps[0], caps[1]


@dataclass(frozen=True)
class WinogroundKind:
    """A Winoground kind: its sampler ``(rng, comp, image_size) -> example or None`` and Winoground's
    ``collapsed_tag`` for what its captions swap."""

    sample: Callable[..., Optional[Example]]
    collapsed_tag: str


WINOGROUND_KINDS: Dict[str, WinogroundKind] = {
    "swap_colours": WinogroundKind(_wino_colours, "Relation"),
    "swap_relation": WinogroundKind(_wino_relation, "Object"),
    "swap_parts": WinogroundKind(_wino_parts, "Relation"),
}


def winoground_example(rng: np.random.Generator, kind: str, split: str, n: int, tries: int = 500) -> Example:
    """A pair of the kind, redrawn until valid: both captions differ; outside ``comptest`` no object of either
    image is a held-out (top colour, shape) combination (in ``comptest`` the first object is one)."""
    for _ in range(tries):
        ex = WINOGROUND_KINDS[kind].sample(rng, split == "comptest", n)
        if ex is None or ex[2].text == ex[3].text:
            continue
        if split != "comptest" and any((o.colour, o.shape) in _HELDOUT for o in ex[0] + ex[1]):
            continue
        return ex
    raise RuntimeError(f"no {kind} Winoground pair found in {tries} draws at {n} px")


def _objects_json(objs: Sequence[SceneObject]) -> List[Dict[str, Any]]:
    return [{"bbox": [int(v) for v in o.box], "shape": o.shape, "colour": o.colour, "colour2": o.colour2,
             "kind": o.kind, "size": o.size} for o in objs]


def write_winoground(root: Path, seed: int, split: str, count: int, image_size: int) -> Dict[str, int]:
    """``count`` Winoground examples of ``split`` under ``root`` (kinds in turn); returns the count per kind."""
    split_index = SPLITS.index(split)
    rng = np.random.default_rng([seed, 7, split_index])
    kinds = list(WINOGROUND_KINDS)
    lines, objects, counts = [], {}, {k: 0 for k in kinds}
    for i in range(count):
        kind = kinds[i % len(kinds)]
        objs0, objs1, cap0, cap1 = winoground_example(rng, kind, split, image_size)
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        names = (f"ex_{i}_img_0", f"ex_{i}_img_1")
        for name, objs in zip(names, (objs0, objs1)):
            pixels, _ = render_scene(np.random.default_rng([seed, 7, split_index, i + 1]),
                                     Scene(0, split, background, objs), image_size)
            atomic_write_bytes(root / "images" / f"{name}.png", encode_image(pixels, "PNG"), fsync=False)
            objects[name] = _objects_json(objs)
        lines.append(json.dumps({
            "id": i, "image_0": names[0], "image_1": names[1], "caption_0": cap0.text, "caption_1": cap1.text,
            "tag": kind, "secondary_tag": "", "num_main_preds": 1,
            "collapsed_tag": WINOGROUND_KINDS[kind].collapsed_tag,
        }))
        counts[kind] += 1
    atomic_write_text(root / "examples.jsonl", "".join(line + "\n" for line in lines))
    atomic_write_json(root / "objects.json", objects, indent=None)
    return counts


# ----------------------------------------------------------------------------------------------------------------
# the writer called by generate_world
# ----------------------------------------------------------------------------------------------------------------
def write_matching(out: Path, rendered: Sequence[RenderedScene], seed: int, image_size: int) -> Dict[str, Any]:
    """Write ``captionsel/`` and ``winoground/`` (module docstring) for the world's rendered scenes.

    Returns ``{"files": {"captionsel": {split: folder}, "winoground": {split: folder}}, "counts":
    {"captionsel": {split: {kind: n}}, "winoground": {split: {kind: n}}}}`` for ``world.json``.
    """
    out = Path(out)
    files: Dict[str, Dict[str, str]] = {"captionsel": {}, "winoground": {}}
    counts: Dict[str, Dict[str, Dict[str, int]]] = {"captionsel": {}, "winoground": {}}
    for split in MATCHING_SPLITS:
        scenes = [(r.scene, scene_captions(r.scene, image_size)) for r in rendered if r.scene.split == split]
        rng = np.random.default_rng([seed, 8, SPLITS.index(split)])
        counts["captionsel"][split] = {}
        for kind in CAPTION_KINDS:
            doc = caption_selection(rng, kind, scenes, image_size)
            atomic_write_json(out / "captionsel" / split / f"{kind}.json", doc, indent=None)
            counts["captionsel"][split][kind] = len(doc)
        files["captionsel"][split] = f"captionsel/{split}"
        n_pairs = min(WINOGROUND_MAX, len(scenes))
        counts["winoground"][split] = write_winoground(out / "winoground" / split, seed, split, n_pairs, image_size)
        files["winoground"][split] = f"winoground/{split}"
    return {"files": files, "counts": counts}
