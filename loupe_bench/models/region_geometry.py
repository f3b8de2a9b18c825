"""Box targets of LOUPE's region head from a per-patch Shapley map (``loupe.region.geometry: patch_map``).

The token-level game gives each patch ``i`` its Shapley value ``φ_i`` (:func:`~loupe_bench.shapley.permutation.
sample_player_values`). Shapley values share a redundant object's value evenly among its patches ("any one patch is
enough" still gives each of ``k`` patches ``1/k``), so the **excess map** ``m_i = φ_i − (v(N) − v(∅)) / N`` is
positive on the patches that carry more than their fair share and about ``−v(N)/N`` on background (with a threshold
``λ``: ``m_i = φ_i − λ (v(N) − v(∅)) / N``), and a box's score is additive:

``S(R) = Σ_{i ∈ R} m_i``

which grows while a rectangle ``R`` takes in object patches and falls as it takes in background: it peaks at an
object's extent whatever the size of the object, unlike a coalition value ``φ([A])``, which saturates once a few
patches of an object are in and so peaks at a patch or two. The target of a box ``b`` is the best rectangle of the
patch grid among those that overlap it enough:

``b* = argmax_{R : IoU(R, b) ≥ τ} S(R)``

an exhaustive search over the ``(H(H+1)/2)·(W(W+1)/2)`` grid rectangles (1,296 on 8 × 8), not a greedy walk.

A few sampled orders give a spiky map: in one order the first patch of a redundant object takes the whole object's
value, so a rectangle around that one patch can win; antithetic pairs (an order and its reverse) halve the spikes.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def grid_rectangles(grid: Tuple[int, int], device=None, dtype=torch.float32) -> Tuple[Tensor, Tensor]:
    """Every axis-aligned rectangle of whole patches: ``(boxes [R, 4] normalised xyxy, members [R, H·W] bool)``."""
    h, w = grid
    r0, r1 = torch.triu_indices(h, h, device=device)  # rows r0 ≤ r1
    c0, c1 = torch.triu_indices(w, w, device=device)
    rows = torch.stack([r0, r1], -1).repeat_interleave(c0.numel(), 0)
    cols = torch.stack([c0, c1], -1).repeat(r0.numel(), 1)
    boxes = torch.stack([cols[:, 0] / w, rows[:, 0] / h, (cols[:, 1] + 1) / w, (rows[:, 1] + 1) / h], -1).to(dtype)
    y = torch.arange(h, device=device)
    x = torch.arange(w, device=device)
    in_r = (y[None] >= rows[:, :1]) & (y[None] <= rows[:, 1:])  # [R, H]
    in_c = (x[None] >= cols[:, :1]) & (x[None] <= cols[:, 1:])  # [R, W]
    members = (in_r[:, :, None] & in_c[:, None, :]).reshape(-1, h * w)
    return boxes, members


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes ``a [..., K, 4]`` with boxes ``b [R, 4]`` (xyxy): ``[..., K, R]``."""
    lt = torch.maximum(a[..., :, None, :2], b[:, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(-1)
    return inter / (area_a[..., :, None] + area_b - inter).clamp_min(1e-9)


def excess_map(phi: Tensor, threshold: float = 1.0) -> Tensor:
    """``m_i = φ_i − λ · mean_j φ_j`` (``[G, N]``): by efficiency the mean is ``(v(N) − v(∅)) / N``, the fair share;
    ``λ`` (``threshold``) > 1 asks a patch for more than its share, so that a rectangle spanning two objects pays
    for the background between them."""
    return phi - threshold * phi.mean(-1, keepdim=True)


def map_targets(boxes: Tensor, patch_map: Tensor, grid: Tuple[int, int], min_iou: float) -> Tuple[Tensor, Tensor]:
    """The target rectangle of every box: ``b* = argmax_{R: IoU(R, b) ≥ min_iou} Σ_{i∈R} m_i``.

    Args:
        boxes: ``[G, K, 4]`` normalised xyxy (one set per game / image).
        patch_map: ``[G, N]`` excess map ``m`` (:func:`excess_map`).
        grid: ``(H, W)`` with ``H·W = N``.
        min_iou: ``τ``; the rectangle nearest the box (largest IoU) is always allowed, so every box has a target.

    Returns:
        ``(targets [G, K, 4], scores [G, K])``: the target rectangles and their ``S``.
    """
    rects, members = grid_rectangles(grid, boxes.device, boxes.dtype)
    score = patch_map.to(boxes.dtype) @ members.to(boxes.dtype).T  # [G, R]
    iou = pairwise_iou(boxes, rects)  # [G, K, R]
    nearest = iou >= iou.amax(-1, keepdim=True)
    allowed = (iou >= min_iou) | nearest
    masked = score[:, None, :].expand_as(iou).masked_fill(~allowed, float("-inf"))
    best = masked.argmax(-1)  # [G, K]
    return rects[best], masked.gather(-1, best[..., None])[..., 0]

