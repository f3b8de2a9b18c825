"""Box IoU and grounding accuracy (Acc@IoU).

Boxes here are pixel or normalised ``xyxy``; :func:`xywh_to_xyxy` converts COCO boxes.

**Threshold rule (documented, tested):** a prediction is correct when ``IoU >= threshold`` (MDETR convention;
ReCLIP uses ``>``; only exact ties differ). Accuracy is reported per split and never averaged across splits.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def xywh_to_xyxy(boxes) -> Tensor:
    """``(x, y, w, h) -> (x, y, x + w, y + h)``."""
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)


def xyxy_to_xywh(boxes) -> Tensor:
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], dim=1)


def box_iou(a, b) -> Tensor:
    """Pairwise IoU of ``xyxy`` boxes: ``[N, 4] x [M, 4] -> [N, M]``.

    ``IoU = |A ∩ B| / |A ∪ B|`` with ``|A ∩ B| = max(0, min(x1) - max(x0)) * max(0, min(y1) - max(y0))``.
    Touching boxes have IoU 0; when the union is 0 (two zero-area boxes) the IoU is defined as 0.
    """
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1, 4)
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(union))


def grounding_hits(pred_boxes, gt_boxes, threshold: float = 0.5) -> np.ndarray:
    """``hit_i = 1[IoU(pred_i, gt_i) >= threshold]`` for paired ``xyxy`` boxes (``[N, 4]`` each)."""
    p = torch.as_tensor(pred_boxes, dtype=torch.float64).reshape(-1, 4)
    g = torch.as_tensor(gt_boxes, dtype=torch.float64).reshape(-1, 4)
    if p.shape != g.shape:
        raise ValueError(f"{p.shape[0]} predictions for {g.shape[0]} ground-truth boxes")
    if p.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    iou = box_iou(p, g).diagonal()
    return (iou >= threshold).numpy().astype(np.int64)


def accuracy_at_iou(pred_boxes, gt_boxes, threshold: float = 0.5) -> float:
    """``Acc@t = (1/N) sum_i 1[IoU(pred_i, gt_i) >= t]``."""
    hits = grounding_hits(pred_boxes, gt_boxes, threshold)
    return float(hits.mean()) if hits.size else float("nan")
