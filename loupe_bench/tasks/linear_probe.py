"""Linear probe: multinomial logistic regression on frozen pooled image features (the same recipe for every
model), L2 strength chosen on the validation split, top-1 on the evaluated split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..errors import DataError
from . import TASK_TYPES
from .base import TaskAdapter
from .classification import classification_samples
from .common import SplitOutput, encode_images, load_records, mean_metric
from .metric_catalog import TOP_K
from .metrics.classification import linear_probe, true_class_ranks



@TASK_TYPES.register("linear-probe")
class LinearProbeTask(TaskAdapter):
    """Logistic regression (L-BFGS) on frozen image features; regularisation picked on the validation split."""

    @dataclass
    class Options:
        train_split: str = "train"
        val_split: str = "val"
        l2_grid: Tuple[float, ...] = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
        max_iter: int = 200
        feature: str = "pooled"  # pooled | mean-tokens

        def __post_init__(self):
            self.l2_grid = tuple(float(v) for v in self.l2_grid)
            if self.feature not in ("pooled", "mean-tokens"):
                raise ValueError(f"feature must be pooled or mean-tokens, got {self.feature!r}")
            if not self.l2_grid or any(not (v > 0 and v < float("inf")) for v in self.l2_grid):
                raise ValueError("l2_grid must be a non-empty list of positive finite numbers")
            if not 1 <= int(self.max_iter) <= 100_000:
                raise ValueError(f"max_iter must be in 1..100000, got {self.max_iter}")

    @classmethod
    def known_metrics(cls, options) -> List[str]:
        return ["top1", "top5"]

    def _features(self, model, data_root, split, device):
        recs = load_records(self.spec, data_root, split)
        paths, labels, classnames = classification_samples(recs)
        f = encode_images(model, paths, self.spec, device, desc=f"{split} images")
        x = f.pooled if self.opts.feature == "pooled" else f.tokens.mean(1)
        return x.float(), labels, classnames

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        model.eval()
        trx, trl, classnames = self._features(model, data_root, self.opts.train_split, device)
        vx, vl, _ = self._features(model, data_root, self.opts.val_split, device)
        tx, tl, _ = self._features(model, data_root, split, device)
        n_classes = max(len(classnames), max(trl + vl + tl) + 1)
        if len(set(trl)) < 2:
            raise DataError(f"the linear probe needs at least two classes in {self.opts.train_split!r}")
        out = linear_probe(trx, trl, vx, vl, tx, n_classes, self.opts.l2_grid, self.opts.max_iter)
        ranks = true_class_ranks(out.test_logits, tl)
        res = SplitOutput(split)
        for k in (1, 5):
            name = f"top{k}"
            if name in self.spec.metrics:
                hits = (ranks < k).astype(np.float64)
                res.metrics[name] = mean_metric(hits, self.spec)
                res.per_item[name] = hits.astype(int).tolist()
        res.extra.update(
            l2=out.l2, val_accuracy=dict(zip([str(v) for v in self.opts.l2_grid], out.val_accuracy)),
            n_train=len(trl), n_val=len(vl), n_test=len(tl), feature=self.opts.feature,
            predictions=out.test_logits.argmax(1).tolist(), labels=list(tl),
            solver="multinomial logistic regression, L-BFGS (float64), standardised features",
        )
        return res
