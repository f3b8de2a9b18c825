"""Two-by-two matching (Winoground, MMVP-VLM): two images, two texts, text ``i`` describes image ``i``.

Each item is a :class:`~loupe_bench.data.records.MatchGroup` with images ``I_0, I_1`` and texts ``T_0, T_1``
(each text written through ``options.template``, ``"{}"``: as given; MMVP-VLM: ``"a photo of {}"``). With the pair
scorer of ``options.scoring`` (:data:`~loupe_bench.tasks.pair_scoring.PAIR_SCORERS`: ``shared`` pooled cosine,
or each model's ``native`` scorer) and ``s(i, j) = s(I_i, T_j)``, Winoground's scores (Thrush et al., 2022) are

    text  = [s(0,0) ≻ s(0,1)  and  s(1,1) ≻ s(1,0)]     each image picks its text
    image = [s(0,0) ≻ s(1,0)  and  s(1,1) ≻ s(0,1)]     each text picks its image
    group = text and image

where ``a ≻ b`` ("the right candidate ``a`` beats the other one ``b``") is ``a > b``, or on an exact tie ``a = b``
what ``options.tie_rule`` says (:data:`TIE_RULES`; the candidates of a choice are ordered by index 0, 1):

* ``first-wins`` (default): candidate 0 wins a tie. This is CLIP_benchmark 1.6.2's winoground metric exactly
  (``image_caption_selection.evaluate``: ``argmax`` over each row / column, ``torch.argmax`` returns the first
  maximum; its ``text_acc`` / ``image_acc`` / ``acc`` are ``text`` / ``image`` / ``group``);
* ``last-wins``: candidate 1 wins a tie. MMVP's ``scripts/evaluate_vlm.py``: per statement, image 1 is predicted
  when ``softmax(logits_per_text)[image 1] > 0.5``, else image 2;
* ``strict``: a tie is wrong (the ``>`` of the Winoground paper).

Per split, each an item mean with its percentile bootstrap interval over items:

* ``text_score``, ``image_score``, ``group_score``: the means of ``text``, ``image`` and ``group``; ``extra.
  breakdown`` holds them per ``kind`` (Winoground's ``tag``) and per value of each item tag (``secondary_tag``,
  ``collapsed_tag``, ``num_main_preds``), with counts;
* ``pair_acc`` (MMVP-VLM): a pair counts when **each statement picks its own image** — the ``image`` direction
  above (the script compares the two images' probabilities for one statement); ``pair_acc:<kind>`` is the mean
  over the pairs of one kind (MMVP's visual pattern) and ``pair_acc`` the mean over the kinds of ``pair_acc:<kind>``
  (MMVP's ``average_score``, here a fraction, not a percentage). Its interval is a stratified bootstrap (pairs
  resampled within each kind, kind ``j`` with seed ``seed + j``); its ``per_item`` holds the pair hits, whose mean
  equals ``pair_acc`` when every kind has as many pairs (MMVP-VLM: 15 each).

Every unique image file and every unique text is encoded once.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from ..registry import Registry
from . import TASK_TYPES
from .base import TaskAdapter
from .common import (MetricValue, SplitOutput, encode_images, encode_texts, load_records, mean_metric, select_features,
                     to_device)
from .metric_catalog import ITEM_SCORES
from .metrics.bootstrap import resample_indices
from .pair_scoring import PAIR_SCORERS, check_kinds, check_pair_scoring, unique_index as _index

#: items scored per pair-scorer call (their unique images × their unique texts)
ITEMS_PER_CALL = 64
#: chance of each score when the four scores of an item are i.i.d. continuous: a text (image) score needs two
#: independent pairwise orders, 1/4; the group score needs both diagonal scores above both off-diagonal ones,
#: 2!·2!/4! = 1/6; ``pair_acc`` (each statement picks its own of two images) 1/4
CHANCE = {"text_score": 0.25, "image_score": 0.25, "group_score": 1.0 / 6.0, "pair_acc": 0.25}


TIE_RULES = Registry("two-by-two tie rule")


@TIE_RULES.register("first-wins", help="a > b, or a tie won by candidate 0 (CLIP_benchmark's torch.argmax)")
def first_wins(right: Tensor, other: Tensor, right_is_first: bool) -> Tensor:
    """``right > other``, or ``right == other`` when the right candidate is candidate 0."""
    return (right > other) | ((right == other) & right_is_first)


@TIE_RULES.register("last-wins", help="a > b, or a tie won by candidate 1 (MMVP's evaluate_vlm.py: p > 0.5 else 2)")
def last_wins(right: Tensor, other: Tensor, right_is_first: bool) -> Tensor:
    """``right > other``, or ``right == other`` when the right candidate is candidate 1."""
    return (right > other) | ((right == other) & (not right_is_first))


@TIE_RULES.register("strict", help="a > b: a tie is wrong (the Winoground paper's definition)")
def strict(right: Tensor, other: Tensor, right_is_first: bool) -> Tensor:
    """``right > other``."""
    return right > other


def two_by_two_hits(scores: Tensor, tie_rule: str) -> Dict[str, np.ndarray]:
    """``text_score`` / ``image_score`` / ``group_score`` hits (0/1, float64) of ``[N, 2, 2]`` scores
    ``scores[n, i, j] = s(I_i, T_j)`` under ``tie_rule`` (the module docstring)."""
    beats = TIE_RULES.get(tie_rule)
    s = scores
    text = beats(s[:, 0, 0], s[:, 0, 1], True) & beats(s[:, 1, 1], s[:, 1, 0], False)
    image = beats(s[:, 0, 0], s[:, 1, 0], True) & beats(s[:, 1, 1], s[:, 0, 1], False)
    out = {"text_score": text, "image_score": image, "group_score": text & image}
    return {k: v.numpy().astype(np.float64) for k, v in out.items()}


@TASK_TYPES.register("two-by-two")
class TwoByTwoTask(TaskAdapter):
    """Two images × two texts: Winoground's text / image / group scores and MMVP's pair accuracy."""

    @dataclass
    class Options:
        scoring: str = "shared"
        tie_rule: str = "first-wins"
        template: str = "{}"
        kinds: List[str] = field(default_factory=list)  # kinds (tags) also reported as ``<score>:<kind>``
        reference_rows: bool = True  # the ``chance`` row: i.i.d. continuous scores

        def __post_init__(self):
            check_pair_scoring(self.scoring)
            check_kinds(self.kinds)
            if self.tie_rule not in TIE_RULES:
                raise ValueError(f"tie_rule must be one of {', '.join(TIE_RULES.names())}, got {self.tie_rule!r}")
            if not isinstance(self.template, str) or self.template.count("{}") != 1:
                raise ValueError(f"template must hold one '{{}}' for the text, got {self.template!r}")
            try:
                self.template.format("text")
            except (IndexError, KeyError, ValueError):
                raise ValueError(f"template {self.template!r} has braces other than one '{{}}'") from None

    @classmethod
    def known_metrics(cls, options) -> List[str]:
        return [*ITEM_SCORES, "pair_acc"] + [f"{m}:{k}" for k in options.get("kinds", []) for m in ITEM_SCORES]

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        recs = load_records(self.spec, data_root, split)
        groups = [g for g in recs.groups if g.split in (None, split)]
        if not groups:
            raise DataError(f"no two-by-two items in split {split!r}", file=recs.source)
        for g in groups:
            if len(g.images) != 2 or len(g.texts) != 2 or any(c is not None for c in g.crops):
                raise DataError(f"a two-by-two item needs two whole images and two texts, got {len(g.images)} "
                                f"image(s){' with crops' if g.crops else ''} and {len(g.texts)} text(s)",
                                file=recs.source, record=g.group_id)
        model.eval()
        scores = self.item_scores(model, groups, split, device)
        res = self.output(split, groups, scores, two_by_two_hits(scores, self.opts.tie_rule))
        res.extra.update(n_skipped=len(recs.skipped))
        return res

    def item_scores(self, model, groups, split: str, device: str) -> Tensor:
        """``[N, 2, 2]`` scores ``s(I_i, T_j)`` of each item (pair scorer of ``options.scoring``), float32 CPU."""
        texts_of = [tuple(self.opts.template.format(t) for t in g.texts) for g in groups]
        images, image_pos = _index([p for g in groups for p in g.images])
        texts, text_pos = _index([t for ts in texts_of for t in ts])
        img = encode_images(model, images, self.spec, device, desc=f"{split} images")
        txt = encode_texts(model, texts, self.spec, device, desc=f"{split} texts")
        scorer = PAIR_SCORERS.get(self.opts.scoring)
        out = torch.empty(len(groups), 2, 2)
        for s in range(0, len(groups), ITEMS_PER_CALL):
            rows = [[image_pos[p] for p in g.images] for g in groups[s : s + ITEMS_PER_CALL]]
            cols = [[text_pos[t] for t in ts] for ts in texts_of[s : s + ITEMS_PER_CALL]]
            vi, vpos = _index([i for r in rows for i in r])
            ti, tpos = _index([j for c in cols for j in c])
            m = scorer(model, to_device(select_features(img, vi), device), to_device(select_features(txt, ti), device))
            for n, (r, c) in enumerate(zip(rows, cols)):
                out[s + n] = m[[vpos[i] for i in r]][:, [tpos[j] for j in c]]
        if not torch.isfinite(out).all():
            raise DataError("the pair scorer gave non-finite scores (NaN or infinity)")
        return out

    def output(self, split: str, groups, scores: Tensor, hits: Dict[str, np.ndarray]) -> SplitOutput:
        """The requested metrics, per-item hits, breakdowns and the protocol record of one split."""
        res = SplitOutput(split)
        for name in ITEM_SCORES:
            if name in self.spec.metrics:
                res.metrics[name] = mean_metric(hits[name], self.spec)
                res.per_item[name] = hits[name].astype(int).tolist()
        kinds = [g.kind for g in groups]
        if "pair_acc" in self.spec.metrics:
            res.metrics.update(self.pair_accuracy(hits["image_score"], kinds))
            res.per_item["pair_acc"] = hits["image_score"].astype(int).tolist()
        kind_arr = np.array(kinds, dtype=object)
        for k in self.opts.kinds:
            for name in ITEM_SCORES:
                if f"{name}:{k}" in self.spec.metrics:
                    if bool((kind_arr == k).any()):
                        res.metrics[f"{name}:{k}"] = mean_metric(hits[name][kind_arr == k], self.spec)
                    else:
                        res.unavailable[f"{name}:{k}"] = f"no item of kind {k!r} in split {split!r}"
        if self.opts.reference_rows:
            res.reference_rows["chance"] = {m: MetricValue(CHANCE[m.split(":")[0]]) for m in res.metrics
                                            if m.split(":")[0] in CHANCE}
        requested = [m for m in ITEM_SCORES if m in self.spec.metrics]
        res.extra.update(
            scoring=self.opts.scoring, tie_rule=f"{self.opts.tie_rule}: {TIE_RULES.help(self.opts.tie_rule)}",
            template=self.opts.template, n_items=len(groups), n_images=len({p for g in groups for p in g.images}),
            n_texts=len({t for g in groups for t in g.texts}), kind_counts=dict(sorted(Counter(kinds).items())),
            item_ids=[g.group_id for g in groups], scores=scores.tolist(),
        )
        if "pair_acc" in self.spec.metrics:
            res.extra["pair_acc_rule"] = "each text picks its own image (image direction), mean over kinds"
        if requested:
            res.extra["breakdown"] = breakdown(groups, {m: hits[m] for m in requested})
        return res

    def pair_accuracy(self, hits: np.ndarray, kinds: Sequence[str]) -> Dict[str, MetricValue]:
        """``pair_acc:<kind>`` per kind and ``pair_acc``, their mean, with a stratified bootstrap interval."""
        names = sorted(set(kinds))
        k = np.asarray(kinds, dtype=object)
        per_kind = [hits[k == name] for name in names]
        out = {f"pair_acc:{name}": mean_metric(v, self.spec) for name, v in zip(names, per_kind)}
        value = float(np.mean([v.mean() for v in per_kind]))
        b = self.spec.bootstrap
        if b.n_resamples <= 0:
            out["pair_acc"] = MetricValue(value)
            return out
        reps = np.zeros(b.n_resamples)
        for j, v in enumerate(per_kind):
            reps += v[resample_indices(v.size, b.n_resamples, b.seed + j)].mean(axis=1)
        lo, hi = np.quantile(reps / len(per_kind), [b.alpha / 2, 1 - b.alpha / 2])
        out["pair_acc"] = MetricValue(value, [float(lo), float(hi)])
        return out


def breakdown(groups, hits: Dict[str, np.ndarray]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``{"kind": {value: {"n": count, metric: mean, ...}}, tag key: {...}}`` over the items of each ``kind`` and
    each non-empty value of each item tag."""
    labels: Dict[str, List[Tuple[int, str]]] = {"kind": [(n, g.kind) for n, g in enumerate(groups) if g.kind]}
    for n, g in enumerate(groups):
        for key, value in g.tags:
            if value:
                labels.setdefault(key, []).append((n, value))
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for key, pairs in labels.items():
        by_value: Dict[str, List[int]] = {}
        for n, value in pairs:
            by_value.setdefault(value, []).append(n)
        out[key] = {value: {"n": len(idx), **{m: float(h[idx].mean()) for m, h in hits.items()}}
                    for value, idx in sorted(by_value.items())}
    return {k: v for k, v in out.items() if v}
