"""COCO-style detection AP through pycocotools, plus per-class NMS.

``AP`` is COCOeval ``stats[0]`` (mean over IoU 0.50:0.05:0.95, 101 recall points, maxDets 100, all areas),
``AP50`` is ``stats[1]``, ``AP75`` is ``stats[2]``. An empty result set scores 0 (pycocotools' ``loadRes`` raises on
an empty list, so it is never called then). Categories without ground truth are ignored by COCOeval.
"""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Dict, List, Mapping, Sequence

import torch
from torch import Tensor

from ...errors import DataError

AP_NAMES = ("AP", "AP50", "AP75")


def per_class_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Indices kept by non-maximum suppression run separately within each label (``xyxy`` boxes), by score."""
    from torchvision.ops import batched_nms

    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    return batched_nms(boxes.float(), scores.float(), labels.long(), float(iou_threshold))


def _coco_from_dict(gt: Mapping[str, Any]):
    from pycocotools.coco import COCO

    coco = COCO()
    data = copy.deepcopy(dict(gt))
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    for i, ann in enumerate(data.get("annotations", [])):
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann.setdefault("id", i + 1)
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_ap(gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """AP, AP50, AP75 of COCO-format ``detections`` against a COCO ``gt`` dict.

    Args:
        gt: COCO instances dict (``images``, ``annotations``, ``categories``).
        detections: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` in pixels.

    Returns:
        ``{"AP": ..., "AP50": ..., "AP75": ...}`` as fractions; all 0 for an empty result set.
    """
    from pycocotools.cocoeval import COCOeval

    if not gt.get("annotations"):
        raise DataError("detection ground truth holds no annotations")
    if len(detections) == 0:
        return {name: 0.0 for name in AP_NAMES}
    image_ids = {im["id"] for im in gt["images"]}
    for d in detections:
        if d["image_id"] not in image_ids:
            raise DataError(f"detection for unknown image {d['image_id']}")
    coco_gt = _coco_from_dict(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats
    # -1 means "no ground truth in this bucket"; with GT present and detections given it means nothing matched
    return {name: max(float(stats[i]), 0.0) for i, name in enumerate(AP_NAMES)}


def resample_coco(gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], image_ids: Sequence[int]):
    """A bootstrap replicate: the images ``image_ids`` (with repeats) renamed ``0..n-1`` with their annotations and
    detections, so that a resampled set is a valid COCO set."""
    by_img_ann: Dict[int, List[dict]] = {}
    for a in gt["annotations"]:
        by_img_ann.setdefault(a["image_id"], []).append(a)
    by_img_det: Dict[int, List[dict]] = {}
    for d in detections:
        by_img_det.setdefault(d["image_id"], []).append(d)
    images = {im["id"]: im for im in gt["images"]}
    new_images, new_anns, new_dets = [], [], []
    for new_id, old in enumerate(image_ids):
        im = dict(images[old])
        im["id"] = new_id
        new_images.append(im)
        for a in by_img_ann.get(old, []):
            a2 = dict(a)
            a2["image_id"] = new_id
            a2["id"] = len(new_anns) + 1
            new_anns.append(a2)
        for d in by_img_det.get(old, []):
            d2 = dict(d)
            d2["image_id"] = new_id
            new_dets.append(d2)
    return {"images": new_images, "annotations": new_anns, "categories": gt["categories"]}, new_dets
