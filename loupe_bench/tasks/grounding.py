"""Visual grounding (referring expressions): rank candidate boxes of the image for each expression through
``model.score_regions`` and take the best (ties: the lower candidate index); Acc@IoU≥0.5 per split.

Candidate sources: ``gt-boxes`` (all ground-truth boxes of the image, ReCLIP's default zero-shot setting),
``grid`` (the fixed multi-scale grid) and ``native`` (the model's region head). Every sentence of every ref is one
query. Splits are evaluated and reported separately, never averaged.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import DataError, SpecError
from . import TASK_TYPES
from .base import TaskAdapter
from .common import (
    SplitOutput, encode_images, encode_texts, load_records, mean_metric, progress_bar, select_features, to_device,
)
from .metrics.grounding import grounding_hits, xywh_to_xyxy
from .proposals import PROPOSAL_SOURCES

_SOURCES = {"gt-boxes": "gt", "grid": "grid", "native": "native"}


@TASK_TYPES.register("grounding")
class GroundingTask(TaskAdapter):
    """Referring-expression grounding: box ranking, Acc@0.5 (IoU >= 0.5) per split."""

    @dataclass
    class Options:
        proposals: str = "gt-boxes"  # gt-boxes | grid | native
        iou_threshold: float = 0.5
        top_k_proposals: int = 100
        grid_scales: Tuple[int, ...] = (1, 2, 3, 4)

        def __post_init__(self):
            if self.proposals not in _SOURCES:
                raise ValueError(f"proposals must be one of {', '.join(_SOURCES)}, got {self.proposals!r}")
            self.grid_scales = tuple(int(s) for s in self.grid_scales)

    @classmethod
    def validate_spec(cls, spec) -> None:
        if spec.image.crop != "none":
            raise SpecError(f"{spec.name}: box tasks need image.crop: none (boxes are normalised to the image)")

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        if self.opts.proposals == "native" and not getattr(model, "has_native_regions", False):
            raise SpecError(f"{type(model).__name__} has no native region head (proposal source 'native' needs one)")
        recs = load_records(self.spec, data_root, split)
        if not recs.refs:
            raise DataError(f"no referring expressions in split {split!r}", file=recs.source)
        by_id = {im.image_id: im for im in recs.images}
        queries = defaultdict(list)  # image_id -> [(text, gt xywh, ref_id)]
        for r in recs.refs:
            if r.image_id not in by_id:
                raise DataError(f"ref {r.ref_id} points at an image missing from the data set", file=recs.source)
            for s in r.sentences:
                queries[r.image_id].append((s, r.bbox, r.ref_id))
        image_ids = sorted(queries)
        images = [by_id[i] for i in image_ids]
        for im in images:
            if not (im.width and im.height):
                raise DataError("image size unknown", file=recs.source, record=im.image_id)
        model.eval()
        img = encode_images(model, [im.path for im in images], self.spec, device, desc=f"{split} images")
        props = PROPOSAL_SOURCES.get(_SOURCES[self.opts.proposals])(
            model, img, images, top_k=self.opts.top_k_proposals, scales=self.opts.grid_scales, device=device
        )
        texts = [q[0] for i in image_ids for q in queries[i]]
        txt = encode_texts(model, texts, self.spec, device, desc="expressions")
        preds, gts = [], []
        offset = 0
        with progress_bar(f"ground {split}", len(images)) as advance, torch.no_grad():
            for n, (iid, im) in enumerate(zip(image_ids, images)):
                q = queries[iid]
                t = to_device(select_features(txt, range(offset, offset + len(q))), device)
                offset += len(q)
                boxes = props[n][0]
                w, h = float(im.width), float(im.height)
                if len(boxes) == 0:
                    preds.extend([[0.0, 0.0, 0.0, 0.0]] * len(q))
                else:
                    sc = model.score_regions(to_device(select_features(img, [n]), device), [boxes.to(device)], t)[0]
                    sc = sc.float().cpu()  # [K, Q]
                    best = sc.argmax(0)  # first maximum = lower candidate index on ties
                    px = boxes[best] * torch.tensor([w, h, w, h])
                    preds.extend(px.tolist())
                gts.extend(xywh_to_xyxy([b for _, b, _ in q]).tolist())
                advance(1)
        hits = grounding_hits(preds, gts, self.opts.iou_threshold).astype(np.float64)
        res = SplitOutput(split)
        name = f"acc@{self.opts.iou_threshold:g}"
        if name in self.spec.metrics or "acc@0.5" in self.spec.metrics:
            res.metrics[name] = mean_metric(hits, self.spec)
            res.per_item[name] = hits.astype(int).tolist()
        res.extra.update(
            proposal_source=self.opts.proposals, n_expressions=len(hits), n_refs=len(recs.refs),
            n_images=len(images), iou_rule=f"IoU >= {self.opts.iou_threshold:g}",
            mean_candidates=float(np.mean([len(p[0]) for p in props])),
        )
        return res
