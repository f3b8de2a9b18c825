"""COCO-style detection AP through pycocotools, plus per-class NMS and a fast image bootstrap of AP.

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
from ..metric_catalog import AP_NAMES



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


def _check_inputs(gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]) -> None:
    """Ground truth with annotations, and every detection on one of its images (else :class:`DataError`)."""
    if not gt.get("annotations"):
        raise DataError("detection ground truth holds no annotations")
    image_ids = {im["id"] for im in gt["images"]}
    for d in detections:
        if d["image_id"] not in image_ids:
            raise DataError(f"detection for unknown image {d['image_id']}")


def coco_ap(gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """AP, AP50, AP75 of COCO-format ``detections`` against a COCO ``gt`` dict.

    Args:
        gt: COCO instances dict (``images``, ``annotations``, ``categories``).
        detections: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` in pixels.

    Returns:
        ``{"AP": ..., "AP50": ..., "AP75": ...}`` as fractions; all 0 for an empty result set.
    """
    from pycocotools.cocoeval import COCOeval

    _check_inputs(gt, detections)
    if len(detections) == 0:
        return {name: 0.0 for name in AP_NAMES}
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


class COCOMatches:
    """Per-category detection matches of one COCOeval ``evaluate()`` (area ``all``, ``maxDets`` 100), from which AP of
    any multiset of images (a bootstrap replicate) is re-accumulated without re-matching.

    Matching is per image and category, so an image drawn twice contributes its matches twice: accumulating the
    matches of ``image_index`` (with repeats, in that order) equals running COCOeval on the replicate with the
    drawn images renamed (:func:`resample_coco`), which the tests check, at a fraction of the cost.

    Accumulation for one category ``k`` and IoU threshold ``t``, as pycocotools does it: concatenate the detections
    of the drawn images in draw order, stable-sort by descending score, ``TP_j = sum_{i<=j} tp_i``,
    ``FP_j = sum_{i<=j} fp_i`` (ignored detections count as neither), recall ``r_j = TP_j / n_pos`` with ``n_pos``
    the non-ignored ground truths, precision ``p_j = TP_j / (TP_j + FP_j + eps)`` made monotone from the right
    (``p_j = max_{i>=j} p_i``), and ``AP_kt = 1/101 sum_{r in {0, .01, ..., 1}} p_{j(r)}`` with ``j(r)`` the first
    index with ``r_j >= r`` (0 when recall never reaches ``r``). AP is the mean of ``AP_kt`` over IoU thresholds
    0.50:0.05:0.95 and the categories with ``n_pos > 0``; AP50 / AP75 fix ``t``.
    """

    def __init__(self, gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]):
        import numpy as np
        from pycocotools.cocoeval import COCOeval

        _check_inputs(gt, detections)
        self.image_ids = [im["id"] for im in gt["images"]]
        coco_gt = _coco_from_dict(gt)
        self.cat_ids = sorted(coco_gt.getCatIds())
        n_img = len(self.image_ids)
        self.iou_thrs = np.linspace(0.5, 0.95, 10)
        self.rec_thrs = np.linspace(0.0, 1.0, 101)
        # per category: detection scores/tp/fp concatenated over images (image order), offsets, positives per image
        self.cats: List[Dict[str, Any]] = []
        if len(detections) == 0:
            ev_imgs = None
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                coco_dt = coco_gt.loadRes([dict(d) for d in detections])
                ev = COCOeval(coco_gt, coco_dt, "bbox")
                ev.params.imgIds = list(self.image_ids)
                ev.params.catIds = list(self.cat_ids)
                ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
                ev.params.maxDets = [100]
                ev.evaluate()
            ev_imgs = ev.evalImgs
            self.iou_thrs = np.asarray(ev.params.iouThrs)
            self.rec_thrs = np.asarray(ev.params.recThrs)
        t = len(self.iou_thrs)
        for ki, cat in enumerate(self.cat_ids):
            scores, tps, fps = [], [], []
            n_det = np.zeros(n_img, dtype=np.int64)
            n_pos = np.zeros(n_img, dtype=np.int64)
            for ii in range(n_img):
                e = ev_imgs[ki * n_img + ii] if ev_imgs is not None else None
                if e is None:
                    if ev_imgs is None:  # no detections at all: positives still count
                        n_pos[ii] = len(coco_gt.getAnnIds(imgIds=[self.image_ids[ii]], catIds=[cat], iscrowd=False))
                    continue
                sc = np.asarray(e["dtScores"][:100], dtype=np.float64)
                m = np.asarray(e["dtMatches"])[:, :100].reshape(t, -1)
                ig = np.asarray(e["dtIgnore"])[:, :100].reshape(t, -1).astype(bool)
                scores.append(sc)
                tps.append(np.logical_and(m != 0, ~ig))
                fps.append(np.logical_and(m == 0, ~ig))
                n_det[ii] = sc.size
                n_pos[ii] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            self.cats.append({
                "scores": np.concatenate(scores) if scores else np.zeros(0),
                "tp": np.concatenate(tps, axis=1) if tps else np.zeros((t, 0), dtype=bool),
                "fp": np.concatenate(fps, axis=1) if fps else np.zeros((t, 0), dtype=bool),
                "start": np.concatenate([[0], np.cumsum(n_det)[:-1]]).astype(np.int64),
                "n_det": n_det, "n_pos": n_pos,
            })

    def ap(self, image_index=None) -> Dict[str, float]:
        """AP, AP50, AP75 of the images ``image_index`` (positions into ``gt["images"]``, repeats allowed, in draw
        order; ``None`` = every image once) — equal to pycocotools' ``stats[0:3]`` for that image multiset."""
        import numpy as np

        n_img = len(self.image_ids)
        idx = np.arange(n_img) if image_index is None else np.asarray(image_index, dtype=np.int64)
        t = len(self.iou_thrs)
        per_cat = []
        for c in self.cats:
            n_pos = int(c["n_pos"][idx].sum())
            if n_pos == 0:
                continue  # pycocotools leaves the category at -1 and averages over the others
            lens = c["n_det"][idx]
            total = int(lens.sum())
            q = np.zeros((t, len(self.rec_thrs)))
            if total:
                # positions of the drawn images' detections, concatenated in draw order
                offs = np.repeat(c["start"][idx] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
                pos = np.arange(total) + offs
                order = pos[np.argsort(-c["scores"][pos], kind="mergesort")]
                tp = np.cumsum(c["tp"][:, order], axis=1, dtype=np.float64)
                fp = np.cumsum(c["fp"][:, order], axis=1, dtype=np.float64)
                rc = tp / n_pos
                pr = tp / (fp + tp + np.spacing(1))
                pr = np.flip(np.maximum.accumulate(np.flip(pr, axis=1), axis=1), axis=1)
                for ti in range(t):
                    inds = np.searchsorted(rc[ti], self.rec_thrs, side="left")
                    ok = inds < total
                    q[ti, ok] = pr[ti, inds[ok]]
            per_cat.append(q)
        if not per_cat:
            return {name: 0.0 for name in AP_NAMES}
        prec = np.stack(per_cat)  # [K, T, R]
        t50 = int(np.argmin(np.abs(self.iou_thrs - 0.5)))
        t75 = int(np.argmin(np.abs(self.iou_thrs - 0.75)))
        return {"AP": float(prec.mean()), "AP50": float(prec[:, t50].mean()), "AP75": float(prec[:, t75].mean())}
