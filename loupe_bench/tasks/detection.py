"""Zero-shot detection: proposals (``native`` | ``grid`` | ``gt-boxes``) scored against class prompts with the spec's
region scorer (``options.region_scoring``: ``shared`` or ``native``; :mod:`loupe_bench.tasks.region_scoring`),
per-class NMS, COCOeval AP / AP50 / AP75; for ``grid`` and ``native`` proposals also ``proposal_recall@K`` (the
fraction of ground-truth objects matched at IoU ≥ 0.5 by the first K proposals, :mod:`.proposals`).

Class probability of box ``k``: ``p_kc = softmax_c(tau * mean_t s_k(c, t))`` with ``s_k(c, t)`` the region score
against prompt ``t`` of class ``c`` and ``tau = logit_scale`` (100, CLIP's); detection score
``p_kc * objectness_k``. Every (box, class) pair with score ≥ ``min_score`` enters per-class NMS (IoU
``nms_iou``); the ``max_dets`` best per image are kept (COCO's maxDets 100).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import DataError, SpecError
from . import TASK_TYPES
from .base import BoxTaskAdapter
from .common import (
    MetricValue, SplitOutput, build_prompts, mean_metric, encode_images, encode_texts, load_records, progress_bar,
    select_features, template_mean, to_device,
)
from .metrics.bootstrap import resample_indices
from .metrics.detection import AP_NAMES, COCOMatches, per_class_nms
from .metric_catalog import AP_METRICS, PROPOSAL_RECALL
from .proposals import GT_BOXES, PROPOSAL_SOURCES, proposal_recall_items
from .region_scoring import REGION_SCORERS, check_region_scoring



def gt_coco(images, categories: Dict[int, str]) -> dict:
    """COCO ground-truth dict from image records (any detection format goes through here)."""
    ims, anns = [], []
    for im in images:
        ims.append({"id": im.image_id, "width": im.width, "height": im.height, "file_name": im.file_name})
        for a in im.boxes:
            anns.append({"id": len(anns) + 1, "image_id": im.image_id, "category_id": a.category_id,
                         "bbox": list(a.bbox), "area": float(a.area or a.bbox[2] * a.bbox[3]),
                         "iscrowd": int(a.iscrowd)})
    cats = [{"id": k, "name": v} for k, v in sorted(categories.items())]
    return {"images": ims, "annotations": anns, "categories": cats}


@TASK_TYPES.register("detection")
class ZeroShotDetectionTask(BoxTaskAdapter):
    """Zero-shot detection with a recorded proposal source; COCOeval AP, AP50, AP75."""

    @dataclass
    class Options:
        proposals: str = "grid"  # native | grid | gt-boxes
        templates: List[str] = field(default_factory=lambda: ["a photo of a {}."])
        logit_scale: float = 100.0
        nms_iou: float = 0.5
        min_score: float = 0.001
        max_dets: int = 100
        top_k_proposals: int = 100
        grid_scales: Tuple[int, ...] = (1, 2, 3, 4)
        region_scoring: str = "shared"  # shared (one rule for every model) | native (the model's own scorer)
        bootstrap_resamples: int = 100
        recall_k: int = 10  # proposal_recall@K for grid and native proposals (same K for every source)

        def __post_init__(self):
            if self.proposals not in PROPOSAL_SOURCES:
                raise ValueError(f"proposals must be one of {', '.join(PROPOSAL_SOURCES.names())}")
            self.grid_scales = tuple(int(s) for s in self.grid_scales)
            check_region_scoring(self.region_scoring)

    @classmethod
    def validate_spec(cls, spec) -> None:
        super().validate_spec(spec)
        unknown = sorted(m for m in set(spec.metrics) - set(AP_NAMES) if not re.fullmatch(r"proposal_recall@\d+", m))
        if unknown:
            raise SpecError(f"{spec.name}: unknown detection metric(s) {', '.join(unknown)}")

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        if self.opts.proposals == "native" and not getattr(model, "has_native_regions", False):
            raise SpecError(f"{type(model).__name__} has no native region head (proposal source 'native' needs one)")
        recs = load_records(self.spec, data_root, split)
        images = [im for im in recs.images if im.width and im.height]
        if not images or not recs.categories:
            raise DataError(f"no images with sizes / categories in split {split!r}", file=recs.source)
        gt = gt_coco(images, recs.categories)
        cat_ids = sorted(recs.categories)
        classnames = [recs.categories[c] for c in cat_ids]
        model.eval()
        img = encode_images(model, [im.path for im in images], self.spec, device, desc=f"{split} images")
        templates = list(self.opts.templates)
        txt = encode_texts(model, build_prompts(classnames, templates), self.spec, device, desc="prompts")
        props = PROPOSAL_SOURCES.get(self.opts.proposals)(
            model, img, images, top_k=self.opts.top_k_proposals, scales=self.opts.grid_scales, device=device
        )
        txt_d = to_device(txt, device)
        score = REGION_SCORERS.get(self.opts.region_scoring)
        dets: List[dict] = []
        n_props = []
        bs = max(1, self.spec.batch_size)
        with progress_bar(f"detect {split}", len(images)) as advance, torch.no_grad():
            for s in range(0, len(images), bs):
                chunk = list(range(s, min(s + bs, len(images))))
                feats = to_device(select_features(img, chunk), device)
                boxes = [props[i][0].to(device) for i in chunk]
                scores = score(model, feats, boxes, txt_d)
                for i, sc in zip(chunk, scores):
                    dets.extend(self._detections(images[i], props[i][0], props[i][1], sc.float().cpu(), cat_ids,
                                                 len(templates)))
                    n_props.append(len(props[i][0]))
                advance(len(chunk))
        res = SplitOutput(split)
        # one COCOeval matching pass; the point estimate and every bootstrap replicate re-accumulate its matches
        matches = COCOMatches(gt, dets)
        base = matches.ap()
        wanted = [n for n in AP_NAMES if n in self.spec.metrics]
        b = self.spec.bootstrap
        n_boot = min(self.opts.bootstrap_resamples, b.n_resamples)
        ci = {}
        if n_boot > 0 and wanted:
            reps = [matches.ap(idx) for idx in resample_indices(len(images), n_boot, b.seed)]
            for n in wanted:
                lo, hi = np.quantile([r[n] for r in reps], [b.alpha / 2, 1 - b.alpha / 2])
                ci[n] = [float(lo), float(hi)]
        for name in wanted:
            res.metrics[name] = MetricValue(base[name], ci.get(name), "fraction")
        if self.opts.proposals != GT_BOXES:
            recall = proposal_recall_items(props, images, self.opts.recall_k, 0.5)
            rname = f"proposal_recall@{self.opts.recall_k}"
            res.metrics[rname] = mean_metric(recall, self.spec)
            res.per_item[rname] = recall.astype(int).tolist()
        res.extra.update(proposal_source=self.opts.proposals, region_scoring=self.opts.region_scoring, n_images=len(images), n_detections=len(dets),
                         mean_proposals=float(np.mean(n_props)) if n_props else 0.0, n_classes=len(cat_ids),
                         nms_iou=self.opts.nms_iou, logit_scale=self.opts.logit_scale)
        return res

    def _detections(self, im, boxes, objectness, scores, cat_ids, n_templates) -> List[dict]:
        if len(boxes) == 0:
            return []
        sim = template_mean(scores, len(cat_ids), n_templates)  # [K, C]
        prob = torch.softmax(self.opts.logit_scale * sim, dim=-1) * objectness[:, None]
        k_idx, c_idx = torch.nonzero(prob >= self.opts.min_score, as_tuple=True)
        if k_idx.numel() == 0:
            return []
        sc = prob[k_idx, c_idx]
        w, h = float(im.width), float(im.height)
        px = boxes[k_idx] * torch.tensor([w, h, w, h])
        keep = per_class_nms(px, sc, c_idx, self.opts.nms_iou)
        keep = keep[torch.sort(sc[keep], descending=True, stable=True).indices][: self.opts.max_dets]
        out = []
        for j in keep.tolist():
            x0, y0, x1, y1 = px[j].tolist()
            out.append({"image_id": im.image_id, "category_id": cat_ids[int(c_idx[j])],
                        "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(sc[j])})
        return out
