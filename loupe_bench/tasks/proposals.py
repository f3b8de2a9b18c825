"""Proposal sources for detection and grounding (registry :data:`PROPOSAL_SOURCES`).

* ``native``: the model's own region head (``model.propose_regions``; only models with ``has_native_regions``).
* ``grid``: one fixed multi-scale box set, identical for every model and image: square windows of side
  ``1/n`` of the image for ``n`` in ``scales``, slid with stride ``1/(2n)`` (``(2n - 1)^2`` windows per scale;
  scales (1, 2, 3, 4) give 1 + 9 + 25 + 49 = 84 boxes), plus, per scale, the same windows stretched 2:1 and 1:2.
* ``gt-boxes`` (:data:`GT_BOXES`): the image's ground-truth boxes (oracle localisation; detection then measures
  classification only; grounding then picks among the image's objects, ReCLIP's zero-shot setting).

Each source returns, per image, normalised ``xyxy`` boxes ``[K, 4]`` and an objectness ``[K]`` in ``[0, 1]``
(1 for grid and gt-boxes), best first: native by objectness, grid coarse to fine.

Proposal recall (:func:`proposal_recall_items`), a metric of the detection and grounding tasks: the fraction of
ground-truth objects matched at IoU ≥ t by any of a source's first ``K`` proposals — for every source at the same
``K`` (for the grid: its ``K`` coarsest windows). The ground-truth source has none (its recall is 1 by
construction).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

import torch
from torch import Tensor

from ..errors import SpecError
from ..registry import Registry

PROPOSAL_SOURCES = Registry("proposal source")
#: the registered name of the ground-truth source (the one spelling in task specs, results and docs)
GT_BOXES = "gt-boxes"

Proposals = List[Tuple[Tensor, Tensor]]



def grid_boxes(scales: Sequence[int] = (1, 2, 3, 4), aspect: bool = True) -> Tensor:
    """The fixed multi-scale grid (normalised xyxy), the same for every model and image."""
    boxes = []
    for n in scales:
        side = 1.0 / n
        shapes = [(side, side)]
        if aspect and n > 1:
            shapes += [(min(1.0, 2 * side), side), (side, min(1.0, 2 * side))]
        for w, h in shapes:
            stride = side / 2
            nx = int(round((1.0 - w) / stride)) + 1
            ny = int(round((1.0 - h) / stride)) + 1
            for iy in range(ny):
                for ix in range(nx):
                    x0, y0 = ix * stride, iy * stride
                    boxes.append([x0, y0, min(1.0, x0 + w), min(1.0, y0 + h)])
    return torch.tensor(boxes, dtype=torch.float32)


@PROPOSAL_SOURCES.register("grid")
def grid_proposals(model, img_feats, images, top_k: int = 100, scales=(1, 2, 3, 4), device: str = "cpu") -> Proposals:
    """Fixed multi-scale grid (objectness 1)."""
    g = grid_boxes(tuple(scales))
    return [(g.clone(), torch.ones(len(g))) for _ in images]


@PROPOSAL_SOURCES.register(GT_BOXES)
def gt_proposals(model, img_feats, images, top_k: int = 100, scales=None, device: str = "cpu") -> Proposals:
    """The image's ground-truth boxes (objectness 1)."""
    out = []
    for im in images:
        w, h = float(im.width), float(im.height)
        b = torch.tensor([[x / w, y / h, (x + bw) / w, (y + bh) / h] for x, y, bw, bh in (a.bbox for a in im.boxes)],
                         dtype=torch.float32).reshape(-1, 4)
        out.append((b.clamp(0, 1), torch.ones(len(b))))
    return out


@PROPOSAL_SOURCES.register("native")
def native_proposals(model, img_feats, images, top_k: int = 100, scales=None, device: str = "cpu") -> Proposals:
    """The model's region head (LOUPE); other models raise :class:`SpecError`."""
    if not getattr(model, "has_native_regions", False):
        raise SpecError(f"{type(model).__name__} has no native region head (proposal source 'native' needs one)")
    regions = []
    with torch.no_grad():
        for s in range(0, len(images), 64):
            part = type(img_feats)(*[f[s : s + 64].to(device) if isinstance(f, Tensor) else f for f in img_feats])
            regions.extend(model.propose_regions(part, top_k=top_k))
    return [(r.boxes.float().cpu().clamp(0, 1), r.scores.float().cpu()) for r in regions]


def proposal_recall_items(props, images, k: int, thr: float) -> np.ndarray:
    """Per ground-truth object: 1 when one of the first ``k`` proposals of its image has IoU ≥ ``thr`` with it."""
    from .metrics.grounding import box_iou, xywh_to_xyxy

    out = []
    for (boxes, _), im in zip(props, images):
        if not im.boxes:
            continue
        gt = xywh_to_xyxy([b.bbox for b in im.boxes])
        top = boxes[:k].double() * torch.tensor([im.width, im.height, im.width, im.height], dtype=torch.float64)
        if len(top) == 0:
            out.extend([0.0] * len(gt))
            continue
        out.extend((box_iou(gt, top) >= thr).any(dim=1).double().tolist())
    return np.asarray(out)
