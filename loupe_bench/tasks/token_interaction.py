"""Token-level interaction probe (``token-interaction``): does the token-level game find the objects?

For every object of every evaluated image the coalition ``A`` is the object's ground-truth box as a set of patches
(patch centre inside the box, :func:`~loupe_bench.models.base.boxes_to_patch_mask`), and ``A'`` is **the same patch
rectangle shifted** onto background (:func:`shifted_box`). The text is one caption of the image whose gold phrase
spans name the object (:func:`choose_caption`). Under the tower-evaluated game
(:class:`~loupe_bench.models.masked_game.MaskedTowerGame`,
``v(S) = cos(f(x_S), t)``: the image tower re-encodes the image with only the patches of ``S`` kept) the adapter
estimates, from ``M = options.num_samples`` Shapley-weighted contexts per coalition (:func:`interaction_and_value`),

* the interaction ``I([A]) = φ([A] | N_[A]) − Σ_{i∈A} φ(i | N_i)`` — positive when the patches of ``A`` cooperate
  (together they say more about the caption than each one alone), and
* the coalition value ``φ([A]) = E_S[v(S ∪ A) − v(S)]`` — the Shapley value of ``A`` as one player,

and the same two for ``A'``. ``options.value`` chooses the value: ``cosine`` (above, ℒ_TSA's own game), or the
matching score among the ``K`` distinct texts of the split (:func:`bank_texts`): ``prob``
``v(S) = softmax_k(s · cos(f(x_S), t_k))[t] − 1/K`` or ``logprob`` (its log + log K), ``s = options.scale`` for every
model (FILIP has no trained global temperature). The cosine saturates on
partial evidence (half of a red-and-blue square is already close to "red-and-blue square"); among texts that name
each part alone, a half leaves several texts as likely as the true one, so the halves of a two-part object become
complementary (``synthetic-token-interaction-prob``). Per object kind (``flat``, ``two-part`` and ``all``; a COCO annotation without a
``kind`` is ``flat``) it reports

* ``box_beats_shifted@I:<kind>`` = ``mean_o 1[I([A_o]) > I([A'_o])]`` and ``box_beats_shifted@phi:<kind>`` (the
  same for ``φ``; ties count as not beating); a ``chance`` reference row holds 0.5 for both;
* ``mean_I``, ``mean_I_shifted``, ``mean_phi``, ``mean_phi_shifted`` (``:<kind>``) and the same divided by ``|A|``
  (``mean_I_per_patch`` …; ``|A'| = |A|``),

each with a 95 % percentile bootstrap interval over objects. Objects are skipped and counted (``extra.
skipped_objects``) when the box covers fewer than two patches (``too_few_patches``: no interaction), when no caption
names them (``not_named``), or when no patch rectangle of the box's shape is disjoint from it (``no_placement``).

Everything random is fixed by ``options.seed`` and the object (:func:`object_rng` of ``[seed, image_id, ann_id]``):
the shifted box's tie-break and the contexts are the same for every model and every batching, so model-vs-model
deltas are paired (``per_item[...:all]`` follows ``extra.objects``).
All masks of ``options.images_per_call`` images go through **one** call of the game.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, SpecError
from ..models.base import boxes_to_patch_mask
from ..shapley.games import Game
from ..shapley.sampling import sample_contexts, sample_interaction
from . import TASK_TYPES
from .base import BoxTaskAdapter
from .common import (
    MetricValue, SplitOutput, encode_texts, image_transform, load_records, mean_metric, open_image, progress_bar,
)
from .metric_catalog import MEAN_STEMS, PART_MEAN_STEMS, PART_RATE_STEMS, PART_STEMS, PER_PATCH_STEMS, RATE_STEMS
from .metric_registry import metric_info

KINDS = ("flat", "two-part")
ALL = "all"
DEFAULT_KIND = "flat"
TEXTS = ("caption", "phrase")
#: ``cosine``: ``v(S) = cos(f(x_S), t)``; ``logprob``: ``v(S) = log softmax_k(s·cos(f(x_S), t_k))[t] + log K`` and
#: ``prob``: ``v(S) = softmax_k(s·cos(f(x_S), t_k))[t] − 1/K`` over the ``K`` distinct texts of the split
#: (:func:`bank_texts`), ``s = options.scale`` (the same for every model); ``v(∅) = 0`` for all three (:class:`~loupe_bench.models.masked_game.MaskedTowerGame`)
VALUES = ("cosine", "logprob", "prob")
SKIP_REASONS = ("too_few_patches", "not_named", "no_placement")
CHANCE = "chance"


def metric_names(kinds: Sequence[str] = KINDS + (ALL,)) -> List[str]:
    """Every metric the task can report: each stem of :data:`RATE_STEMS`, :data:`MEAN_STEMS` and
    :data:`PER_PATCH_STEMS` with a ``:<kind>`` suffix."""
    return [f"{s}:{k}" for k in kinds for s in RATE_STEMS + MEAN_STEMS + PER_PATCH_STEMS + PART_STEMS]


# ------------------------------------------------------------------------------------------------ shifted boxes
class ShiftedBox(NamedTuple):
    """A box moved by whole patches.

    Attributes:
        box: normalised ``(x0, y0, x1, y1)``, the input box translated by ``shift`` patches.
        shift: ``(rows, cols)`` of the translation, in patches.
        patches: ``[H·W]`` bool, the input box's patch rectangle translated (what the game's coalition is).
        overlap: fraction of the shifted patch rectangle covered by the occupied boxes (0: on background).
    """

    box: Tuple[float, float, float, float]
    shift: Tuple[int, int]
    patches: Tensor
    overlap: float


def patch_rectangle(box: Sequence[float], grid: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """``(row0, col0, rows, cols)`` of the patches a normalised xyxy box holds (patch centre inside the box, as
    :func:`~loupe_bench.models.base.boxes_to_patch_mask`; that set is always a rectangle of patches)."""
    mask = boxes_to_patch_mask(torch.tensor([list(box)], dtype=torch.float64), grid)[0].reshape(grid)
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _rect_mask(r0: int, c0: int, h: int, w: int, grid: Tuple[int, int]) -> Tensor:
    m = torch.zeros(grid, dtype=torch.bool)
    m[r0 : r0 + h, c0 : c0 + w] = True
    return m.reshape(-1)


def placement_overlap(rect: Tuple[int, int, int, int], occupied: np.ndarray, grid: Tuple[int, int]) -> float:
    """Fraction of a patch rectangle covered by boxes.

    With the rectangle's cells ``R = [c0/W, (c0+w)/W] × [r0/H, (r0+h)/H]`` (normalised) and occupied boxes ``b``:
    ``overlap(R) = Σ_b area(R ∩ b) / area(R)`` — 0 exactly when no box overlaps ``R`` with positive area (boxes that
    overlap each other count twice; only the zero / non-zero distinction and the order matter).
    """
    if len(occupied) == 0:
        return 0.0
    gh, gw = grid
    r0, c0, h, w = rect
    x0, y0, x1, y1 = c0 / gw, r0 / gh, (c0 + w) / gw, (r0 + h) / gh
    iw = np.clip(np.minimum(x1, occupied[:, 2]) - np.maximum(x0, occupied[:, 0]), 0, None)
    ih = np.clip(np.minimum(y1, occupied[:, 3]) - np.maximum(y0, occupied[:, 1]), 0, None)
    return float((iw * ih).sum() / ((x1 - x0) * (y1 - y0)))


def shifted_box(box: Sequence[float], occupied_boxes: Sequence[Sequence[float]], grid: Tuple[int, int],
                rng: Optional[np.random.Generator] = None) -> Optional[ShiftedBox]:
    """The box moved by whole patches onto the least occupied place of the image, or ``None`` when it cannot move.

    The box's patch rectangle ``(r0, c0, h, w)`` (:func:`patch_rectangle`) is placed at every ``(r, c)`` with
    ``0 ≤ r ≤ H − h``, ``0 ≤ c ≤ W − w`` whose rectangle shares **no patch** with the original one; among those the
    placements of least :func:`placement_overlap` with ``occupied_boxes`` (normalised xyxy; usually every object of
    the image, the box's own included) are kept — overlap 0, i.e. background only, whenever such a spot exists — and
    one of them is drawn uniformly with ``rng`` (``None``: the first in row-major order). The result is the box
    translated by ``(r − r0, c − c0)`` patches, so its shape in patch units is the original's. Deterministic for a
    given ``rng`` state.

    Args:
        box: normalised ``(x0, y0, x1, y1)``.
        occupied_boxes: normalised xyxy boxes to stay off.
        grid: ``(H, W)`` patches.
        rng: a numpy generator for the tie-break among equally free placements.
    """
    gh, gw = grid
    r0, c0, h, w = patch_rectangle(box, grid)
    occ = np.asarray([list(b) for b in occupied_boxes], dtype=np.float64).reshape(-1, 4)
    best: List[Tuple[int, int]] = []
    best_overlap = float("inf")
    for r in range(gh - h + 1):
        for c in range(gw - w + 1):
            if r < r0 + h and r0 < r + h and c < c0 + w and c0 < c + w:
                continue  # shares a patch with the box itself
            ov = placement_overlap((r, c, h, w), occ, grid)
            if ov < best_overlap - 1e-12:
                best, best_overlap = [(r, c)], ov
            elif ov <= best_overlap + 1e-12:
                best.append((r, c))
    if not best:
        return None
    r, c = best[int(rng.integers(len(best)))] if rng is not None and len(best) > 1 else best[0]
    dr, dc = r - r0, c - c0
    x0, y0, x1, y1 = (float(v) for v in box)
    moved = (x0 + dc / gw, y0 + dr / gh, x1 + dc / gw, y1 + dr / gh)
    return ShiftedBox(moved, (dr, dc), _rect_mask(r, c, h, w, grid), best_overlap)


# ------------------------------------------------------------------------------------------------ estimation
class InteractionValue(NamedTuple):
    """Monte-Carlo interaction and coalition value of coalitions, from one set of contexts.

    Attributes:
        mean: ``[G, C]`` ``Î([A])``; ``stderr``: its standard error.
        value: ``[G, C]`` ``φ̂([A])``; ``value_stderr``: its standard error.
        num_evals: masks evaluated (the game's calls hold no padding of other coalitions' members).
    """

    mean: Tensor
    stderr: Tensor
    value: Tensor
    value_stderr: Tensor
    num_evals: int


def interaction_and_value(game: Game, coalitions: Tensor, num_samples: int = 64,
                          generator: Optional[torch.Generator] = None,
                          contexts: Optional[Tensor] = None) -> InteractionValue:
    """Interaction and coalition value of every coalition of every game from **one** set of contexts and one call
    of the game.

    With contexts ``S_1..S_M ⊆ N∖A`` drawn with Shapley weights (:func:`~loupe_bench.shapley.sampling.
    sample_contexts`, the reduced game with ``[A]`` as one player) and each context's values ``v(S)``,
    ``v(S ∪ A)`` and ``v(S ∪ {i})`` for ``i ∈ A``:

    * ``Δ_m = v(S_m ∪ A) − v(S_m) − Σ_{i∈A} (v(S_m ∪ {i}) − v(S_m))``, ``Î([A]) = (1/M) Σ_m Δ_m``
      (as :func:`~loupe_bench.shapley.sampling.sample_interaction`; 0 for ``|A| < 2``);
    * ``δ_m = v(S_m ∪ A) − v(S_m)``, ``φ̂([A]) = (1/M) Σ_m δ_m`` (the Shapley value of ``[A]``; 0 for ``A = ∅``);
    * standard errors ``sd(Δ) / √M`` and ``sd(δ) / √M`` (unbiased sd).

    The library's :func:`~loupe_bench.shapley.sampling.sample_interaction` (``with_value=True``) computes both: only
    the ``M (|A| + 2)`` masks each coalition needs are evaluated (masks of one game packed, games padded to the
    longest with empty masks, free in :class:`~loupe_bench.models.masked_game.MaskedTowerGame`).

    Args:
        game: batched game ``[G, Q, n] -> [G, Q]``.
        coalitions: ``[G, C, n]`` bool.
        num_samples: ``M`` (≥ 2).
        generator: RNG of the contexts (when ``contexts`` is not given).
        contexts: ``[G, C, M, n]`` bool, contexts drawn beforehand (each disjoint from its coalition).
    """
    est = sample_interaction(game, coalitions, num_samples, generator, with_value=True, contexts=contexts)
    return InteractionValue(est.mean, est.stderr, est.value, est.value_stderr, est.num_evals)


def top_half(coalitions: Tensor, grid: Tuple[int, int]) -> Tensor:
    """The top part ``T`` of each coalition: its patches in rows above the middle of its row span
    (``row < r0 + ⌊rows / 2⌋``); the bottom part is ``B = A ∖ T``. ``[G, C, n]`` → ``[G, C, n]`` bool (empty when
    the coalition spans fewer than two rows)."""
    h, w = grid
    rows = torch.arange(h * w, device=coalitions.device) // w
    big = h * w
    r = torch.where(coalitions, rows, torch.full_like(rows, big))
    r0 = r.amin(-1, keepdim=True)
    r1 = torch.where(coalitions, rows, torch.full_like(rows, -1)).amax(-1, keepdim=True)
    span = (r1 - r0 + 1).clamp_min(0)
    return coalitions & (rows < r0 + span // 2)


def part_interaction(game: Game, coalitions: Tensor, top: Tensor, contexts: Tensor) -> Tuple[Tensor, Tensor]:
    """Interaction of a box's two **parts** ``T`` (top rows) and ``B = A ∖ T`` (bottom rows) as two players:

    ``I(T, B) = φ([A]) − φ(T) − φ(B)`` in the reduced game whose players are ``N ∖ A`` and the merged parts
    (Zhang et al.'s multivariate interaction with the parts as players), estimated from the same contexts
    ``S_m ⊆ N ∖ A`` as :func:`interaction_and_value`:
    ``Δ^part_m = v(S_m ∪ A) − v(S_m ∪ T) − v(S_m ∪ B) + v(S_m)``, ``Î(T, B) = (1/M) Σ_m Δ^part_m``.

    Positive when the parts are complementary (both needed, as the two colours of a two-part object), negative
    when either is enough (a flat object's halves). Returns ``(mean [G, C], stderr [G, C])``; 0 where ``T`` or
    ``B`` is empty. Costs 4 masks per context.
    """
    g, c, m, n = contexts.shape
    a = coalitions.bool()[:, :, None, :]
    t = top.bool()[:, :, None, :]
    b = a & ~t
    ctx = contexts.bool()
    masks = torch.stack([ctx | a, ctx | t, ctx | b, ctx], dim=3)  # [G, C, M, 4, n]
    vals = game(masks.reshape(g, -1, n)).to(torch.float64).reshape(g, c, m, 4)
    delta = vals[..., 0] - vals[..., 1] - vals[..., 2] + vals[..., 3]
    ok = (top.any(-1) & (coalitions.bool() & ~top.bool()).any(-1))[..., None]
    delta = delta * ok
    return delta.mean(-1), delta.std(-1, unbiased=True) / m ** 0.5


# ------------------------------------------------------------------------------------------------ objects
class ProbeObject(NamedTuple):
    """One evaluated object: where it is, its kind, the caption naming it, its coalition and its shifted copy."""

    image_index: int
    image_id: int
    ann_id: int
    kind: str
    text: str
    box: Tensor      # [N] bool, A
    shifted: Tensor  # [N] bool, A'
    overlap: float   # of A' with the image's boxes (0: background)


def choose_caption(captions, ann_id: int, text: str = "caption") -> Optional[str]:
    """The text naming object ``ann_id``: among the captions with a gold phrase span of that object, the one that
    names the fewest distinct objects (the most specific; ties: the first). ``text: caption`` returns that
    caption, ``phrase`` its first phrase span of the object. ``None`` when no caption names the object."""
    best, best_n = None, None
    for cap in captions:
        spans = [p for p in cap.phrases if p.ann_id == ann_id]
        if not spans:
            continue
        n_named = len({p.ann_id for p in cap.phrases if p.ann_id is not None})
        if best_n is None or n_named < best_n:
            best, best_n = (cap.text if text == "caption" else spans[0].text), n_named
    return best


def bank_texts(captions, text: str = "caption") -> List[str]:
    """The distinct texts of a split (``captions``: image id → captions), sorted: every caption (``text: caption``)
    or every gold phrase span (``phrase``) — the bank of the ``logprob`` / ``prob`` values, in which a part of a two-part object
    meets the phrases that name that part alone ("red square" beside "red-and-blue square")."""
    out = set()
    for caps in captions.values():
        for cap in caps:
            if text == "caption":
                out.add(cap.text)
            else:
                out.update(p.text for p in cap.phrases if p.text)
    return sorted(out)


def object_rng(seed: int, image_id: int, ann_id: int, stream: int) -> np.random.Generator:
    """The generator of one object's random choices, ``numpy.random.default_rng([seed, image_id, ann_id, stream])``:
    stream 0 breaks the shifted box's ties, stream 1 seeds its contexts."""
    return np.random.default_rng([int(seed), int(image_id), int(ann_id), int(stream)])


@TASK_TYPES.register("token-interaction")
class TokenInteractionTask(BoxTaskAdapter):
    """Token-level game probe: ``I`` and ``φ`` of each object's box vs the same box shifted onto background."""

    @dataclass
    class Options:
        num_samples: int = 64        # M, Shapley-weighted contexts per coalition
        max_images: Optional[int] = None  # the first N images of the split (by image id) that have objects
        seed: int = 0                # shifted-box tie-breaks and contexts (with image and annotation id)
        text: str = "caption"        # caption | phrase (the object's gold span only)
        drop: str = "tokens"         # MaskedTowerGame: tokens (ViT towers) | pixels (any tower)
        last_blocks: Optional[int] = None  # blocks re-run on the kept tokens (None: the whole tower)
        images_per_call: int = 4     # images whose masks go through one call of the game
        bucket: int = 1              # MaskedTowerGame: kept counts padded to a multiple (1: exact groups)
        value: str = "cosine"        # cosine | logprob | prob (the object's text among the split's texts)
        scale: float = 1 / 0.07      # logit scale of logprob / prob: one for every model (CLIP's initial 1/τ)
        captions: str = "dataset_synthetic.json"  # Karpathy caption JSON (relative to --data-root)
        phrases: str = "phrases.json"  # its gold phrase sidecar (relative to --data-root)
        reference_rows: bool = True  # the chance row (0.5 for both rates)

        def __post_init__(self):
            if int(self.num_samples) < 2:
                raise ValueError("num_samples must be >= 2")
            self.num_samples = int(self.num_samples)
            if self.max_images is not None and int(self.max_images) < 1:
                raise ValueError("max_images must be >= 1 (or null: every image)")
            if self.text not in TEXTS:
                raise ValueError(f"text must be one of {', '.join(TEXTS)}, got {self.text!r}")
            if self.drop not in ("tokens", "pixels"):
                raise ValueError(f"drop must be tokens or pixels, got {self.drop!r}")
            if int(self.images_per_call) < 1:
                raise ValueError("images_per_call must be >= 1")
            if int(self.bucket) < 1:
                raise ValueError("bucket must be >= 1")
            if self.value not in VALUES:
                raise ValueError(f"value must be one of {', '.join(VALUES)}, got {self.value!r}")
            if not float(self.scale) > 0:
                raise ValueError("scale must be > 0")
            self.scale = float(self.scale)

    @classmethod
    def validate_spec(cls, spec) -> None:
        super().validate_spec(spec)
        known = set(metric_names())
        unknown = sorted(set(spec.metrics) - known)
        if unknown:
            raise SpecError(f"{spec.name}: unknown token-interaction metric(s) {', '.join(unknown)}; known: "
                            f"<stem>:<kind> with stems {', '.join(RATE_STEMS + MEAN_STEMS + PER_PATCH_STEMS)} and "
                            f"kinds {', '.join(KINDS + (ALL,))}")

    # -- the game (tests replace it by a planted one) -----------------------------------------------------------
    def game(self, model, pixels: Tensor, text: Tensor, coalitions: Tensor, contrast=None) -> Game:
        """The value function of ``G`` (object, caption) pairs: :class:`MaskedTowerGame` on ``pixels [G, 3, H, W]``
        and ``text [G, D]``. ``coalitions [G, 2, N]`` (``A``, ``A'``) is not used by it (planted games use it).
        ``contrast = (bank [K, D], target [G], scale)``: the ``logprob`` / ``prob`` value (``options.value``)."""
        from ..models.masked_game import MaskedTowerGame

        bank, target, scale = contrast if contrast is not None else (None, None, 1.0)
        return MaskedTowerGame(model, pixels, text, last_blocks=self.opts.last_blocks, drop=self.opts.drop,
                               bucket=self.opts.bucket, bank=bank, target=target, scale=scale,
                               contrast="prob" if self.opts.value == "prob" else "log")

    # -- data ---------------------------------------------------------------------------------------------------
    def _captions(self, data_root: Optional[Path], split: str):
        from ..data import DATASETS

        path = self.spec.resolve_path(data_root, self.opts.captions, split)
        phrases = self.spec.resolve_path(data_root, self.opts.phrases, split)
        for p in (path, phrases):
            if not p.exists():
                raise self.spec.missing_data(p, data_root, "caption file not found")
        recs = DATASETS.get("karpathy")(path, split=split, verify_images=False, phrases=str(phrases)).load()
        return {im.image_id: im.captions for im in recs.images}

    def objects(self, images, captions, grid: Tuple[int, int]) -> Tuple[List[ProbeObject], Counter]:
        """The evaluated objects of ``images`` (in image order, then annotation order) and the skip counts."""
        out: List[ProbeObject] = []
        skipped: Counter = Counter()
        for k, im in enumerate(images):
            if not (im.width and im.height):
                raise DataError("image size unknown", record=im.image_id)
            scale = np.array([im.width, im.height, im.width, im.height], dtype=np.float64)
            norm = [tuple((np.array([b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]]) / scale)
                          .tolist()) for b in im.boxes]
            masks = boxes_to_patch_mask(torch.tensor(norm, dtype=torch.float64).reshape(-1, 4), grid)
            for b in sorted(range(len(im.boxes)), key=lambda i: im.boxes[i].ann_id):
                box = im.boxes[b]
                if int(masks[b].sum()) < 2:
                    skipped["too_few_patches"] += 1
                    continue
                text = choose_caption(captions.get(im.image_id, ()), box.ann_id, self.opts.text)
                if text is None:
                    skipped["not_named"] += 1
                    continue
                moved = shifted_box(norm[b], norm, grid, object_rng(self.opts.seed, im.image_id, box.ann_id, 0))
                if moved is None:
                    skipped["no_placement"] += 1
                    continue
                out.append(ProbeObject(k, im.image_id, box.ann_id, box.attribute("kind") or DEFAULT_KIND, text,
                                       masks[b], moved.patches, moved.overlap))
        return out, skipped

    # -- run ----------------------------------------------------------------------------------------------------
    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        for attr in ("image_tower", "image_proj", "grid"):
            if not hasattr(model, attr):
                raise SpecError(f"{type(model).__name__} has no {attr} (the token-interaction game re-encodes "
                                "masked images with the model's image tower)")
        recs = load_records(self.spec, data_root, split)
        captions = self._captions(data_root, split)
        all_images = sorted((im for im in recs.images if im.boxes), key=lambda im: im.image_id)
        images = all_images[: self.opts.max_images] if self.opts.max_images else all_images
        if not images:
            raise DataError(f"no images with objects in split {split!r}", file=recs.source)
        grid = tuple(int(x) for x in model.grid)
        objs, skipped = self.objects(images, captions, grid)
        if not objs:
            raise DataError(f"no object of split {split!r} can be probed (skipped: {dict(skipped)})",
                            file=recs.source)
        model.eval()
        pool = bank_texts(captions, self.opts.text) if self.opts.value != "cosine" else ()
        est = self.estimate(model, images, objs, grid, device, pool)
        return self.output(split, objs, est, skipped, n_images=len(images), n_images_in_split=len(all_images),
                           n_objects=sum(len(im.boxes) for im in images))

    def estimate(self, model, images, objs: List[ProbeObject], grid, device,
                 bank_pool: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        """``I``, ``φ`` (and standard errors) of ``A`` and ``A'`` for every object, ``images_per_call`` images per
        call of the game; arrays ``[objects, 2]`` (column 0: ``A``, 1: ``A'``). ``bank_pool``: the texts of the
        ``logprob`` / ``prob`` values (the probed objects' texts are added)."""
        m = self.opts.num_samples
        txt = encode_texts(model, [o.text for o in objs], self.spec, device, desc="captions").pooled
        bank = None
        if self.opts.value != "cosine":  # every distinct text of the split, sorted: the same for every model
            texts = sorted(set(bank_pool) | {o.text for o in objs})
            where = {t: k for k, t in enumerate(texts)}
            bank = encode_texts(model, texts, self.spec, device, desc="text bank").pooled.to(device)
            target = torch.tensor([where[o.text] for o in objs], device=device)
            scale = float(self.opts.scale)
        tf = image_transform(model, self.spec)
        by_image: Dict[int, List[int]] = defaultdict(list)
        for i, o in enumerate(objs):
            by_image[o.image_index].append(i)
        order = sorted(by_image)
        keys = ("I", "I_se", "phi", "phi_se", "part", "part_se")
        out = {k: np.zeros((len(objs), 2)) for k in keys}
        evals, t_game = 0, 0.0
        step = self.opts.images_per_call
        with progress_bar("token interaction", len(order)) as advance, torch.no_grad():
            for s in range(0, len(order), step):
                group = order[s : s + step]
                idx = [i for k in group for i in by_image[k]]
                pix = {k: tf(open_image(images[k].path, images[k].image_id)) for k in group}
                pixels = torch.stack([pix[objs[i].image_index] for i in idx]).to(device)
                coal = torch.stack([torch.stack([objs[i].box, objs[i].shifted]) for i in idx]).to(device)
                ctx = torch.cat([sample_contexts(coal[j : j + 1].cpu(), m, _generator(self.opts.seed, objs[i]))
                                 for j, i in enumerate(idx)]).to(device)
                t0 = time.perf_counter()
                if bank is None:
                    game = self.game(model, pixels, txt[idx].to(device), coal)
                else:
                    game = self.game(model, pixels, txt[idx].to(device), coal, (bank, target[idx], scale))
                r = interaction_and_value(game, coal, m, contexts=ctx)
                part, part_se = part_interaction(game, coal, top_half(coal, grid), ctx)
                t_game += time.perf_counter() - t0
                evals += r.num_evals + 4 * int(ctx.shape[0] * ctx.shape[1] * ctx.shape[2])
                for k, v in zip(keys, (r.mean, r.stderr, r.value, r.value_stderr, part, part_se)):
                    out[k][idx] = v.double().cpu().numpy()
                advance(len(group))
        out["num_evals"] = np.asarray(evals)
        out["game_s"] = np.asarray(t_game)
        return out

    # -- metrics ------------------------------------------------------------------------------------------------
    def output(self, split: str, objs: List[ProbeObject], est: Dict[str, np.ndarray], skipped: Counter,
               **counts) -> SplitOutput:
        """Rates and means per kind with bootstrap intervals over objects, the chance row and the counts."""
        res = SplitOutput(split)
        kinds = np.asarray([o.kind for o in objs])
        size = np.asarray([float(o.box.sum()) for o in objs])
        i_a, i_s, p_a, p_s = est["I"][:, 0], est["I"][:, 1], est["phi"][:, 0], est["phi"][:, 1]
        per = {
            "box_beats_shifted@I": (i_a > i_s).astype(np.float64),
            "box_beats_shifted@phi": (p_a > p_s).astype(np.float64),
            "mean_I": i_a, "mean_I_shifted": i_s, "mean_phi": p_a, "mean_phi_shifted": p_s,
        }
        part_a, part_s = est["part"][:, 0], est["part"][:, 1]
        per["part_interaction_positive"] = (part_a > 0).astype(np.float64)
        per["mean_part_interaction"] = part_a
        per["mean_part_interaction_shifted"] = part_s
        for stem in MEAN_STEMS:
            per[f"{stem}_per_patch"] = per[stem] / size
        wanted = set(self.spec.metrics)
        n_kind = {}
        for kind in KINDS + (ALL,):
            sel = np.ones(len(objs), dtype=bool) if kind == ALL else kinds == kind
            n_kind[kind] = int(sel.sum())
            for stem, values in per.items():
                name = f"{stem}:{kind}"
                if name not in wanted:
                    continue
                if not sel.any():
                    res.unavailable[name] = f"no {kind} object was evaluated in split {split!r}"
                    continue
                res.metrics[name] = mean_metric(values[sel], self.spec, metric_info(name).unit)
                res.per_item[name] = values[sel].tolist()
            if self.opts.reference_rows and sel.any():
                for stem in RATE_STEMS:
                    if f"{stem}:{kind}" in wanted:
                        res.reference_rows.setdefault(CHANCE, {})[f"{stem}:{kind}"] = MetricValue(0.5)
        overlap = np.asarray([o.overlap for o in objs])
        res.extra.update(
            game="MaskedTowerGame", value=self.opts.value, scale=self.opts.scale, drop=self.opts.drop,
            last_blocks=self.opts.last_blocks,
            bucket=self.opts.bucket,
            num_samples=self.opts.num_samples, text=self.opts.text, seed=self.opts.seed,
            n_evaluated=n_kind, skipped_objects={r: int(skipped.get(r, 0)) for r in SKIP_REASONS},
            n_shifted_on_background=int((overlap <= 1e-12).sum()), mean_shifted_overlap=float(overlap.mean()),
            mean_patches=float(size.mean()),
            mean_stderr={"I": float(est["I_se"][:, 0].mean()), "I_shifted": float(est["I_se"][:, 1].mean()),
                         "part": float(est["part_se"][:, 0].mean()),
                         "phi": float(est["phi_se"][:, 0].mean()), "phi_shifted": float(est["phi_se"][:, 1].mean())},
            num_evals=int(est["num_evals"]), game_s=round(float(est["game_s"]), 3),
            objects=[[o.image_id, o.ann_id] for o in objs], **counts,
        )
        return res


def _generator(seed: int, obj: ProbeObject) -> torch.Generator:
    """The contexts' generator of one object, seeded from :func:`object_rng` stream 1 (independent of batching)."""
    return torch.Generator().manual_seed(int(object_rng(seed, obj.image_id, obj.ann_id, 1).integers(2**62)))
