"""Scene sampling: the world's vocabulary (shapes, colours, sizes, object kinds, backgrounds, held-out
combinations), the scene and object records, and the draw of one scene's objects from its generator."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

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


def jitter(rng: np.random.Generator, colour: str) -> Tuple[int, int, int]:
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


def sample_objects(rng: np.random.Generator, image_size: int, comp: bool) -> List[SceneObject]:
    """The objects of one scene, in drawing order (object 0 is the large one).

    Per object: its kind (two-part with probability :data:`TWO_PART_PROB`, independently), then its attributes
    (:func:`_draw_attributes`, redrawn until ``(top colour, shape)`` is not held out unless ``comp``; in
    ``comptest`` one object is forced to a held-out ``(top colour, shape)``), then its side
    ``round(image_size · u)``, ``u ~ U(lo, hi)`` of :data:`SIZE_RANGES` (flat) or :data:`TWO_PART_SIZE_RANGES`
    (two-part), then up to 60 uniform placements accepted by :func:`_overlap_ok` (an object that finds none is
    dropped), then its jittered RGB (:func:`jitter`; one per part).
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
        rgb = jitter(rng, colour)
        rgb2 = jitter(rng, colour2) if colour2 is not None else None
        objects.append(SceneObject(shape, colour, size, placed, rgb, colour2=colour2, rgb2=rgb2))
    if comp and not any((o.colour, o.shape) in heldout for o in objects):
        # placement failed for the forced object: recolour one existing object into a held-out combination (its top
        # colour; a two-part object whose bottom colour is the new top colour takes the old top colour below)
        o = objects[-1]
        old, o.colour = o.colour, next(c for c, s in HELDOUT_COMBOS if s == o.shape)
        o.rgb = jitter(rng, o.colour)
        if o.colour2 == o.colour:
            o.colour2 = old
            o.rgb2 = jitter(rng, old)
    return objects

