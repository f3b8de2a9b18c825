"""Captioning: the same caption head and recipe for every backbone (trained, seeded, on the frozen image tokens
with the training captions), greedy or beam decoding on the evaluated split, pycocoevalcap metrics."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch

from ..errors import DataError, SpecError
from . import TASK_TYPES
from .base import TaskAdapter
from .caption_head import CaptionHeadConfig, single_thread, train_caption_head
from .common import MetricValue, SplitOutput, encode_images, load_records, mean_metric
from .metric_registry import metric_info
from .metrics.bootstrap import resample_indices
from .metrics.captioning import CAPTION_METRICS, bleu_cider, caption_metrics, metric_status



@TASK_TYPES.register("captioning")
class CaptioningTask(TaskAdapter):
    """Caption head on frozen image tokens; BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE via pycocoevalcap."""

    @dataclass
    class Options:
        train_split: Union[str, List[str]] = "train"  # several splits are concatenated (COCO: train + restval)
        decoding: str = "beam"  # greedy | beam
        use_java: Optional[bool] = None  # None = use Java when available
        head: Optional[dict] = None  # CaptionHeadConfig overrides
        bootstrap_resamples: int = 100  # corpus BLEU/CIDEr-D are recomputed per replicate (cost)

        def __post_init__(self):
            if self.decoding not in ("greedy", "beam"):
                raise ValueError(f"decoding must be greedy or beam, got {self.decoding!r}")
            CaptionHeadConfig(**(self.head or {}))

    @classmethod
    def validate_spec(cls, spec) -> None:
        unknown = sorted(set(spec.metrics) - set(CAPTION_METRICS))
        if unknown:
            raise SpecError(f"{spec.name}: unknown caption metric(s) {', '.join(unknown)}")

    @classmethod
    def missing_metrics(cls, spec) -> dict:
        opts = spec.options or {}
        wanted = list(spec.metrics)
        if opts.get("use_java") is False:   # Java parts switched off by the spec: METEOR and SPICE are not run
            return {m: "the spec sets use_java: false" for m in wanted if m in ("METEOR", "SPICE")}
        return metric_status(wanted)

    def _memory(self, model, paths, device, desc):
        f = encode_images(model, paths, self.spec, device, desc=desc)
        return torch.cat([f.pooled[:, None], f.tokens], 1).float()

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        cfg = CaptionHeadConfig(**(self.opts.head or {}))
        train_splits = [self.opts.train_split] if isinstance(self.opts.train_split, str) else self.opts.train_split
        train = [r for s in train_splits for r in load_records(self.spec, data_root, s).images if r.captions]
        test = [r for r in load_records(self.spec, data_root, split).images if r.captions]
        if not train or not test:
            raise DataError(f"captioning needs captioned images in {self.opts.train_split!r} and {split!r}")
        model.eval()
        tr_mem = self._memory(model, [r.path for r in train], device, f"{'+'.join(train_splits)} images")
        te_mem = self._memory(model, [r.path for r in test], device, f"{split} images")
        head, vocab, losses = train_caption_head(tr_mem, [[c.text for c in r.captions] for r in train], cfg, seed)
        with torch.no_grad(), single_thread():
            ids = head.beam(te_mem, cfg.beam_size) if self.opts.decoding == "beam" else head.greedy(te_mem)
        hyps = {r.image_id: (vocab.decode(s) or "<empty>") for r, s in zip(test, ids)}
        refs = {r.image_id: [c.text for c in r.captions] for r in test}
        scores = caption_metrics(refs, hyps, use_java=self.opts.use_java, metrics=self.spec.metrics)
        res = SplitOutput(split)
        keys = list(scores.gts.keys()) or list(refs)
        corpus = [n for n in self.spec.metrics if metric_info(n).interval == "corpus" and n in scores.metrics]
        b = self.spec.bootstrap
        n_boot = min(self.opts.bootstrap_resamples, b.n_resamples)
        ci = {}
        if n_boot > 0 and corpus:
            reps = []
            for idx in resample_indices(len(keys), n_boot, b.seed):
                # resampled images get fresh keys so that an image drawn twice counts twice
                reps.append(bleu_cider({j: scores.gts[keys[i]] for j, i in enumerate(idx)},
                                       {j: scores.res[keys[i]] for j, i in enumerate(idx)}))
            for n in corpus:
                lo, hi = np.quantile([r[n] for r in reps], [b.alpha / 2, 1 - b.alpha / 2])
                ci[n] = [float(lo), float(hi)]
        for name in self.spec.metrics:
            info = metric_info(name)
            if name in scores.unavailable:
                res.unavailable[name] = scores.unavailable[name]
            elif info.interval == "corpus":
                res.metrics[name] = MetricValue(scores.metrics[name], ci.get(name), info.unit)
            elif name in scores.per_image and name == "ROUGE-L":
                vals = [scores.per_image[name][k] for k in keys]
                mv = mean_metric(vals, self.spec)
                res.metrics[name] = MetricValue(scores.metrics[name], mv.ci95, info.unit)
                res.per_item[name] = vals
            elif name in scores.metrics:
                # METEOR / SPICE: corpus values (METEOR's corpus score is not the mean of per-image scores)
                res.metrics[name] = MetricValue(scores.metrics[name], None, info.unit)
        if not scores.comparable and scores.tokenizer == "python":
            res.extra["note"] = "tokenised in Python (no java): not comparable to COCO-server numbers"
        res.extra.update(
            tokenizer=scores.tokenizer, decoding=self.opts.decoding, head=asdict(cfg), vocab_size=len(vocab),
            train_loss_first=losses[0], train_loss_last=losses[-1], n_train_images=len(train), n_images=len(test),
            samples={str(k): v for k, v in list(hyps.items())[:10]},
        )
        return res
