"""Zero-shot classification with class-name × template prompt ensembles, top-1 / top-5.

Global models (``similarity`` not overridden): CLIP's ensemble — per class the mean of the L2-normalised prompt
embeddings, renormalised, ``logits = v_i · w_c``. Token-level models (FILIP, LOUPE override ``similarity``): the
mean over templates of ``model.similarity(image, prompt, "i2t")``. The scoring mode is recorded in the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import DataError, SpecError
from . import TASK_TYPES
from .base import TaskAdapter
from .common import (
    SplitOutput, build_prompts, encode_images, encode_texts, ensemble_classifier, is_token_level, load_records,
    mean_metric, template_mean, to_device,
)
from .metric_catalog import TOP_K
from .metrics.classification import true_class_ranks

#: top-K accuracy (zero-shot and linear-probe classification, region classification)


def classification_samples(recs) -> Tuple[List[Path], List[int], List[str]]:
    """``(paths, labels, classnames)`` of a classification data set (ImageFolder samples, or labelled images)."""
    if recs.samples:
        return [s.path for s in recs.samples], [int(s.label) for s in recs.samples], list(recs.classnames)
    imgs = [r for r in recs.images if r.label is not None]
    if imgs:
        return [r.path for r in imgs], [int(r.label) for r in imgs], list(recs.classnames)
    raise DataError("no labelled images in the data set", file=recs.source)


@TASK_TYPES.register("classification")
class ZeroShotClassificationTask(TaskAdapter):
    """Zero-shot classification: prompt ensembles over class names, top-1 / top-5."""

    @dataclass
    class Options:
        templates: List[str] = field(default_factory=lambda: ["a photo of a {}."])
        classnames: Optional[List[str]] = None  # default: the data set's class names
        ks: Tuple[int, ...] = (1, 5)

        def __post_init__(self):
            self.ks = tuple(int(k) for k in self.ks)
            if not self.templates:
                raise ValueError("templates must be a non-empty list")

    @classmethod
    def known_metrics(cls, options) -> List[str]:
        return [f"top{k}" for k in options.get("ks", (1, 5))]

    def class_logits(self, model, img, classnames: List[str], device: str) -> Tuple[torch.Tensor, str]:
        """``[N_images, C]`` zero-shot logits and the scoring mode used."""
        templates = list(self.opts.templates)
        prompts = build_prompts(classnames, templates)
        txt = encode_texts(model, prompts, self.spec, device, desc="prompts")
        with torch.no_grad():
            if is_token_level(model):
                s = model.similarity(to_device(img, device), to_device(txt, device), direction="i2t",
                                     chunk_size=self.spec.chunk_size).float().cpu()
                return template_mean(s, len(classnames), len(templates)), "token-level similarity, template mean"
            w = ensemble_classifier(txt.pooled, len(classnames), len(templates))
            return img.pooled.float() @ w.T, "pooled prompt-ensemble (CLIP)"

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        recs = load_records(self.spec, data_root, split)
        paths, labels, classnames = classification_samples(recs)
        classnames = list(self.opts.classnames or classnames)
        if not classnames:
            raise SpecError(f"{self.spec.name}: no class names (neither in the spec nor in the data set)")
        if max(labels) >= len(classnames):
            raise DataError(f"label {max(labels)} outside the {len(classnames)} class names", file=recs.source)
        model.eval()
        img = encode_images(model, paths, self.spec, device, desc=f"{split} images")
        logits, mode = self.class_logits(model, img, classnames, device)
        ranks = true_class_ranks(logits, labels)
        res = SplitOutput(split)
        for k in self.opts.ks:
            name = f"top{k}"
            if name in self.spec.metrics:
                hits = (ranks < k).astype(np.float64)
                res.metrics[name] = mean_metric(hits, self.spec)
                res.per_item[name] = hits.astype(int).tolist()
        res.extra.update(n_images=len(paths), n_classes=len(classnames), n_templates=len(self.opts.templates),
                         scoring=mode, tie_rule="stable: lower class index wins",
                         predictions=logits.argmax(1).tolist(), labels=list(labels))
        return res
