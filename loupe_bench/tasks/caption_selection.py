"""Caption selection (SugarCrepe, ARO VG-Relation / VG-Attribution): does the model prefer an image's true caption
to its hard negatives?

Each item is a :class:`~loupe_bench.data.records.MatchGroup` with one image ``I`` (cropped to the item's box first
when it has one: ARO) and ``K >= 2`` texts, ``T_0`` the true caption. With the pair scorer of ``options.scoring``
(:data:`~loupe_bench.tasks.pair_scoring.PAIR_SCORERS`: ``shared`` pooled cosine, or each model's ``native`` scorer)
``s_k = s(I, T_k)`` and

    correct = [s_0 >= max_{k>0} s_k]    tie_rule positive-wins (default)
    correct = [s_0 >  max_{k>0} s_k]    tie_rule strict

``positive-wins`` is CLIP_benchmark 1.6.2's ``image_caption_selection``: ``argmax`` over ``[T_0, negatives]``, and
``torch.argmax`` returns the first maximum, so the true caption wins an exact tie. ``strict`` is SugarCrepe's own
``main_eval.py`` (``pos_score > neg_score``) and ARO's ``evaluate_scores`` (``argmax`` over ``[false, true]``: the
false caption is first and wins a tie).

Per split:

* ``acc`` = mean over items of ``correct``;
* ``acc_k`` = the same over the items of kind ``k`` (SugarCrepe subset, ARO relation or attribute pair), in
  ``extra.kind_acc`` (``{kind: {value, ci95, n}}``; not metrics: ARO has dozens of relations and over a hundred
  attribute pairs, a report column each would drown the table);
* ``macro_acc`` = mean of ``acc_k`` over the kinds with ``n_k >= options.min_count`` and not in
  ``options.macro_exclude`` (ARO's macro accuracy: VG-Attribution keeps the attribute pairs with at least 25 cases,
  VG-Relation leaves out the relations of its notebook's list; SugarCrepe: no rule).

Intervals: ``acc`` and ``acc_k``: percentile bootstrap over items; ``macro_acc``: stratified bootstrap (items
resampled within each kind, kind ``j`` with seed ``seed + j``; the kinds are fixed). Every unique image view
(file, crop) and every unique text is encoded once; cropped views are read in the calling thread
(``--num-workers`` applies to uncropped images only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from ..registry import Registry
from . import TASK_TYPES
from .base import TaskAdapter
from .common import (MetricValue, SplitOutput, encode_images, encode_texts, load_records, mean_metric, select_features,
                     to_device)
from .metrics.bootstrap import resample_indices
from .pair_scoring import PAIR_SCORERS, check_kinds, check_pair_scoring, unique_index as _index

#: items scored per pair-scorer call (their unique images × their unique texts)
ITEMS_PER_CALL = 64


TIE_RULES = Registry("tie rule")


@TIE_RULES.register("positive-wins", help="s_0 >= max negative: the true caption wins ties (CLIP_benchmark's argmax)")
def positive_wins(scores: Tensor) -> bool:
    """``scores[0] >= max(scores[1:])``."""
    return bool(scores[0] >= scores[1:].max())


@TIE_RULES.register("strict", help="s_0 > max negative: a tie is wrong (SugarCrepe's main_eval.py, ARO)")
def strict(scores: Tensor) -> bool:
    """``scores[0] > max(scores[1:])``."""
    return bool(scores[0] > scores[1:].max())


View = Tuple[Path, Optional[Tuple[float, float, float, float]]]


def _crop_view(view: View):
    """The view's image as RGB PIL, cropped to its box with ``PIL.Image.crop((x, y, x + w, y + h))`` (ARO's crop)."""
    from ..data.formats.base import to_rgb
    from .common import open_image

    path, box = view
    img = to_rgb(open_image(path), path)
    if box is None:
        return img
    x, y, w, h = box
    return img.crop((x, y, x + w, y + h))


@torch.no_grad()
def encode_views(model, views: Sequence[View], spec, device: str = "cpu", desc: str = "images"):
    """``ImageFeatures`` of ``(path, box or None)`` views: :func:`~loupe_bench.tasks.common.encode_images` when no
    view has a box, else each image cropped (:func:`_crop_view`), then the same preprocessing
    (:func:`~loupe_bench.tasks.common.image_transform`), batch size and precision as ``encode_images``."""
    from .common import _autocast, _cat_features, _to_cpu_float, current_encode_options, image_transform, progress_bar

    if all(box is None for _, box in views):
        return encode_images(model, [p for p, _ in views], spec, device, desc)
    tf = image_transform(model, spec)
    bs = current_encode_options().image_batch(spec)
    parts = []
    with progress_bar(f"encode {desc}", len(views)) as advance:
        for s in range(0, len(views), bs):
            batch = torch.stack([tf(_crop_view(v)) for v in views[s : s + bs]])
            with _autocast(device):
                feats = model.encode_image(batch.to(device))
            parts.append(_to_cpu_float(feats))
            advance(len(batch))
    return _cat_features(parts)


def _view(group) -> View:
    """An item's image view: its image file and its crop box (``None``: the whole image)."""
    return group.images[0], (group.crops[0] if group.crops else None)


@TASK_TYPES.register("caption-selection")
class CaptionSelectionTask(TaskAdapter):
    """One image, its true caption and hard negatives: accuracy, per kind and macro (module docstring)."""

    @dataclass
    class Options:
        scoring: str = "shared"
        tie_rule: str = "positive-wins"
        min_count: int = 0
        macro_exclude: List[str] = field(default_factory=list)
        kinds: List[str] = field(default_factory=list)  # kinds also reported as metrics ``acc:<kind>``
        reference_rows: bool = True  # the ``chance`` row: a uniform pick among the item's texts

        def __post_init__(self):
            check_pair_scoring(self.scoring)
            check_kinds(self.kinds)
            if self.tie_rule not in TIE_RULES:
                raise ValueError(f"tie_rule must be one of {', '.join(TIE_RULES.names())}, got {self.tie_rule!r}")
            if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) or self.min_count < 0:
                raise ValueError(f"min_count must be a whole number >= 0, got {self.min_count!r}")
            if not isinstance(self.macro_exclude, list) or not all(isinstance(k, str) for k in self.macro_exclude):
                raise ValueError(f"macro_exclude must be a list of kind names, got {self.macro_exclude!r}")

    @classmethod
    def known_metrics(cls, options) -> List[str]:
        return ["acc", "macro_acc"] + [f"acc:{k}" for k in options.get("kinds", [])]

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        recs = load_records(self.spec, data_root, split)
        groups = [g for g in recs.groups if g.split in (None, split)]
        if not groups:
            raise DataError(f"no caption-selection items in split {split!r}", file=recs.source)
        for g in groups:
            if len(g.images) != 1 or len(g.texts) < 2:
                raise DataError(f"a caption-selection item needs one image and at least two texts, got "
                                f"{len(g.images)} and {len(g.texts)}", file=recs.source, record=g.group_id)
        model.eval()
        scores = self.item_scores(model, groups, split, device)
        rule = TIE_RULES.get(self.opts.tie_rule)
        correct = np.array([rule(s) for s in scores], dtype=np.float64)
        res = self.output(split, groups, correct)
        res.extra.update(n_skipped=len(recs.skipped))
        return res

    def item_scores(self, model, groups, split: str, device: str) -> List[Tensor]:
        """Per item the ``[K]`` scores of its texts against its image view (pair scorer of ``options.scoring``)."""
        views, view_pos = _index([_view(g) for g in groups])
        texts, text_pos = _index([t for g in groups for t in g.texts])
        img = encode_views(model, views, self.spec, device, desc=f"{split} images")
        txt = encode_texts(model, texts, self.spec, device, desc=f"{split} captions")
        scorer = PAIR_SCORERS.get(self.opts.scoring)
        out: List[Tensor] = []
        for s in range(0, len(groups), ITEMS_PER_CALL):
            chunk = groups[s : s + ITEMS_PER_CALL]
            vi, vpos = _index([view_pos[_view(g)] for g in chunk])
            ti, tpos = _index([text_pos[t] for g in chunk for t in g.texts])
            m = scorer(model, to_device(select_features(img, vi), device), to_device(select_features(txt, ti), device))
            if torch.isnan(m).any():
                raise DataError("score matrix holds NaN values")
            for g in chunk:
                row = vpos[view_pos[_view(g)]]
                out.append(m[row, [tpos[text_pos[t]] for t in g.texts]])
        return out

    def output(self, split: str, groups, correct: np.ndarray) -> SplitOutput:
        """``acc``, ``macro_acc``, the per-kind accuracies and the protocol record of one split."""
        res = SplitOutput(split)
        kinds = np.array([g.kind for g in groups], dtype=object)
        names = sorted(set(kinds.tolist()))
        counts = {k: int((kinds == k).sum()) for k in names}
        if "acc" in self.spec.metrics:
            res.metrics["acc"] = mean_metric(correct, self.spec)
            res.per_item["acc"] = correct.astype(int).tolist()
        kind_acc = {k: dict(mean_metric(correct[kinds == k], self.spec).to_dict(), n=counts[k]) for k in names}
        left_out = {k: f"fewer than {self.opts.min_count} items" for k in names if counts[k] < self.opts.min_count}
        left_out.update({k: "in options.macro_exclude" for k in names if k in set(self.opts.macro_exclude)})
        kept = [k for k in names if k not in left_out]
        if "macro_acc" in self.spec.metrics:
            if kept:
                res.metrics["macro_acc"] = self.macro_metric([correct[kinds == k] for k in kept])
            else:
                res.unavailable["macro_acc"] = f"no kind is left for the macro mean (left out: {len(left_out)})"
        for k in self.opts.kinds:
            if f"acc:{k}" in self.spec.metrics:
                if counts.get(k):
                    res.metrics[f"acc:{k}"] = mean_metric(correct[kinds == k], self.spec)
                else:
                    res.unavailable[f"acc:{k}"] = f"no item of kind {k!r} in split {split!r}"
        if self.opts.reference_rows:
            res.reference_rows["chance"] = self.chance_row(groups, kinds, kept)
        tie_help = TIE_RULES.help(self.opts.tie_rule)
        res.extra.update(
            scoring=self.opts.scoring, tie_rule=f"{self.opts.tie_rule}: {tie_help}", n_items=len(groups),
            n_images=len({_view(g) for g in groups}),
            n_texts=len({t for g in groups for t in g.texts}), kind_acc=kind_acc, min_count=self.opts.min_count,
            macro_kinds=kept, macro_left_out=left_out, item_ids=[g.group_id for g in groups],
        )
        return res

    def chance_row(self, groups, kinds: np.ndarray, kept: List[str]) -> Dict[str, MetricValue]:
        """Expected accuracy of a uniform pick among each item's ``K`` texts, ``1/K`` (exact, no interval), for every
        metric of the split: ``acc``, ``macro_acc`` (the mean over the kept kinds) and ``acc:<kind>``."""
        p = np.array([1.0 / len(g.texts) for g in groups])
        row: Dict[str, MetricValue] = {}
        if "acc" in self.spec.metrics:
            row["acc"] = MetricValue(float(p.mean()))
        if "macro_acc" in self.spec.metrics and kept:
            row["macro_acc"] = MetricValue(float(np.mean([p[kinds == k].mean() for k in kept])))
        for k in self.opts.kinds:
            if f"acc:{k}" in self.spec.metrics and bool((kinds == k).any()):
                row[f"acc:{k}"] = MetricValue(float(p[kinds == k].mean()))
        return row

    def macro_metric(self, per_kind: List[np.ndarray]) -> MetricValue:
        """Mean of the per-kind accuracies, with the stratified bootstrap interval (module docstring)."""
        value = float(np.mean([v.mean() for v in per_kind]))
        b = self.spec.bootstrap
        if b.n_resamples <= 0:
            return MetricValue(value)
        reps = np.zeros(b.n_resamples)
        for j, v in enumerate(per_kind):
            reps += v[resample_indices(v.size, b.n_resamples, b.seed + j)].mean(axis=1)
        reps /= len(per_kind)
        lo, hi = np.quantile(reps, [b.alpha / 2, 1 - b.alpha / 2])
        return MetricValue(value, [float(lo), float(hi)])
