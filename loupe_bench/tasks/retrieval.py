"""Zero-shot image–text retrieval: all images and all their captions of a split, scored through
``model.similarity`` (``direction="i2t"`` to rank captions for an image query, ``"t2i"`` to rank images for a
caption query), R@1/5/10 both ways and RSUM (see :mod:`loupe_bench.tasks.metrics.retrieval` for the hit definition
and the tie rule)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import DataError
from . import TASK_TYPES
from .base import TaskAdapter
from .common import MetricValue, SplitOutput, encode_images, encode_texts, load_records, mean_metric, to_device
from .metric_catalog import RSUM
from .metrics.bootstrap import resample_indices
from .metrics.retrieval import retrieval_metrics


@TASK_TYPES.register("retrieval")
class RetrievalTask(TaskAdapter):
    """Image–text retrieval R@k (any GT caption is a hit), all captions, chunked ``similarity``."""

    @dataclass
    class Options:
        ks: Tuple[int, ...] = (1, 5, 10)
        captions_per_image: Optional[int] = None  # None = all captions (the standard protocol)

        def __post_init__(self):
            self.ks = tuple(int(k) for k in self.ks)
            if self.captions_per_image is not None and self.captions_per_image < 1:
                raise ValueError(f"captions_per_image must be >= 1 (or null: all), got {self.captions_per_image}")

    @classmethod
    def known_metrics(cls, options) -> List[str]:
        ks = options.get("ks", (1, 5, 10))
        return [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in ks] + ["rsum"]

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        recs = load_records(self.spec, data_root, split)
        images = [r for r in recs.images if r.captions]
        if not images:
            raise DataError(f"no captioned images in split {split!r}", file=recs.source)
        texts, owners = [], []
        for i, r in enumerate(images):
            caps = r.captions if self.opts.captions_per_image is None else r.captions[: self.opts.captions_per_image]
            for c in caps:
                texts.append(c.text)
                owners.append(i)
        model.eval()
        img = encode_images(model, [r.path for r in images], self.spec, device, desc=f"{split} images")
        txt = encode_texts(model, texts, self.spec, device, desc=f"{split} captions")
        with torch.no_grad():
            img_d, txt_d = to_device(img, device), to_device(txt, device)
            # (i2t, t2i) in one pass; the same tensor for global models
            s_i2t, s_t2i = model.similarity_pair(img_d, txt_d, chunk_size=self.spec.chunk_size)
        s_i2t_cpu = s_i2t.float().cpu()
        s_t2i_cpu = s_i2t_cpu if s_t2i is s_i2t else s_t2i.float().cpu()
        out = retrieval_metrics(s_i2t_cpu, s_t2i_cpu, owners, self.opts.ks, self.spec.chunk_size)
        res = SplitOutput(split)
        per = {}
        for k in self.opts.ks:
            per[f"i2t_R@{k}"] = (out.i2t_ranks < k).astype(np.float64)
            per[f"t2i_R@{k}"] = (out.t2i_ranks < k).astype(np.float64)
        for name, v in per.items():
            if name in self.spec.metrics:
                res.metrics[name] = mean_metric(v, self.spec)
                res.per_item[name] = v.astype(int).tolist()
        if "rsum" in self.spec.metrics:
            res.metrics["rsum"] = self._rsum(out, per)
        res.extra.update(
            n_images=len(images), n_captions=len(texts), captions_per_image="all" if self.opts.captions_per_image
            is None else self.opts.captions_per_image, hit="any GT caption in top k",
            tie_rule="stable: lower gallery index wins", i2t_ranks=out.i2t_ranks.tolist(),
            t2i_ranks=out.t2i_ranks.tolist(),
        )
        return res

    def _rsum(self, out, per) -> MetricValue:
        """RSUM with an interval from resampling images (i2t queries) and captions (t2i queries) independently."""
        b = self.spec.bootstrap
        value = out.metrics["rsum"]
        if b.n_resamples <= 0:
            return MetricValue(value, None, RSUM.unit)
        i_idx = resample_indices(len(out.i2t_ranks), b.n_resamples, b.seed)
        t_idx = resample_indices(len(out.t2i_ranks), b.n_resamples, b.seed + 1)
        reps = np.zeros(b.n_resamples)
        for k in self.opts.ks:
            reps += per[f"i2t_R@{k}"][i_idx].mean(1) + per[f"t2i_R@{k}"][t_idx].mean(1)
        lo, hi = np.quantile(reps, [b.alpha / 2, 1 - b.alpha / 2])
        return MetricValue(value, [float(lo), float(hi)], RSUM.unit)
