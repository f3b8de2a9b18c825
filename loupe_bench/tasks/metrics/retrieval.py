"""Image–text retrieval recall (R@k) with several captions per image, chunked, with a fixed tie rule.

Definition (CLIP_benchmark / LAVIS "hit rate"): every query ``q`` has a positive set ``P(q)`` (all ground-truth
captions of an image for an image query; the one image of a caption for a caption query) and

    R@k = (1/|Q|) * sum_q 1[ min_{p in P(q)} rank_q(p) < k ]

with 0-based ranks. **Tie rule (documented, tested):** the gallery is ordered by descending score and, among equal
scores, by ascending gallery index (a stable sort of the negated scores), i.e.

    rank_q(g) = #{g' : s_qg' > s_qg} + #{g' < g : s_qg' = s_qg}.

The best-ranked positive is therefore the positive with the highest score, the lowest index among equal ones, so the
rank is computed in ``O(N_gallery)`` per query without sorting. Scores are processed ``chunk_size`` queries at a
time so that memory stays bounded for COCO 5K (5,000 × 25,010).
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ...errors import DataError


class RetrievalOutput(NamedTuple):
    """Recall values and the per-query material needed for bootstrap intervals.

    Attributes:
        metrics: ``{"i2t_R@1": ..., "t2i_R@10": ..., "rsum": ...}``, fractions in ``[0, 1]`` (rsum is a sum of six).
        i2t_ranks: ``[N_images]`` best 0-based rank of a GT caption for each image query.
        t2i_ranks: ``[N_texts]`` 0-based rank of the GT image for each caption query.
    """

    metrics: Dict[str, float]
    i2t_ranks: np.ndarray
    t2i_ranks: np.ndarray


def best_positive_rank(scores: Tensor, positive: Tensor) -> Tensor:
    """0-based rank of the best-ranked positive of every query row (stable tie rule, see module docstring).

    ``rank = #{g : s_g > s_p*} + #{g < p* : s_g = s_p*}`` where ``p*`` is the positive with the largest score
    (lowest index among equal scores).

    Args:
        scores: ``[Q, G]`` float scores (higher is better).
        positive: ``[Q, G]`` bool, True at the positives of each query; every row needs at least one.

    Returns:
        ``[Q]`` long ranks.
    """
    if scores.shape != positive.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positive mask {tuple(positive.shape)} differ")
    if torch.isnan(scores).any():
        raise DataError("score matrix holds NaN values")
    if not positive.any(dim=1).all():
        raise DataError("a retrieval query has no positive in the gallery")
    q, g = scores.shape
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype)
    best = torch.where(positive, scores, neg_inf).max(dim=1).values  # [Q]
    idx = torch.arange(g).expand(q, g)
    is_best = positive & (scores == best[:, None])
    p_star = torch.where(is_best, idx, torch.full_like(idx, g)).min(dim=1).values  # lowest index among best
    above = (scores > best[:, None]).sum(dim=1)
    tied_before = ((scores == best[:, None]) & (idx < p_star[:, None])).sum(dim=1)
    return above + tied_before


def _check(scores: Tensor, t2i: Tensor) -> None:
    n_img, n_txt = scores.shape
    if t2i.numel() != n_txt:
        raise DataError(f"{t2i.numel()} caption owners for {n_txt} score columns")
    if n_txt and (t2i.min() < 0 or t2i.max() >= n_img):
        raise DataError("a caption belongs to an image outside the score matrix")
    if torch.isnan(scores).any():
        raise DataError("score matrix holds NaN values")


def image_to_text_ranks(scores: Tensor, text_to_image: Sequence[int], chunk_size: int = 1024) -> np.ndarray:
    """Best rank of any GT caption for each image query; ``scores`` is ``[N_images, N_texts]``.

    The best positive ``p*`` of image ``i`` is found by gathering the scores of its own captions only (a padded
    ``[N_images, P_max]`` index table), then ``rank = #{j : s_ij > s_ip*} + #{j < p* : s_ij = s_ip*}`` costs two
    passes over each chunk of rows.

    Args:
        scores: image-query score matrix (rows rank texts).
        text_to_image: ``[N_texts]`` index of the image each caption belongs to.
        chunk_size: image queries per chunk.
    """
    t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    _check(scores, t2i)
    n_img, n_txt = scores.shape
    counts = torch.bincount(t2i, minlength=n_img)
    if n_img and counts.min() == 0:
        raise DataError("a retrieval query has no positive in the gallery (an image without captions)")
    order = torch.argsort(t2i, stable=True)  # caption indices grouped by image, ascending within an image
    p_max = int(counts.max()) if n_img else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_txt) - starts[t2i[order]]
    table = torch.full((n_img, max(p_max, 1)), -1, dtype=torch.long)
    table[t2i[order], slot] = order
    out = []
    for s in range(0, n_img, chunk_size):
        block = scores[s : s + chunk_size].float()
        g = table[s : s + chunk_size]
        valid = g >= 0
        vals = block.gather(1, g.clamp(min=0)).masked_fill(~valid, float("-inf"))
        best = vals.max(1).values
        p_star = torch.where(valid & (vals == best[:, None]), g, torch.full_like(g, n_txt)).min(1).values
        above = (block > best[:, None]).sum(1)
        tied = ((block == best[:, None]) & (torch.arange(block.shape[1])[None] < p_star[:, None])).sum(1)
        out.append(above + tied)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def text_to_image_ranks(scores: Tensor, text_to_image: Sequence[int], chunk_size: int = 1024) -> np.ndarray:
    """Rank of the GT image for each caption query; ``scores`` is ``[N_images, N_texts]`` (columns are queries).

    One positive per query: ``rank_j = #{i : s_ij > s_{o(j) j}} + #{i < o(j) : s_ij = s_{o(j) j}}``, computed on
    column blocks without transposing.
    """
    t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    _check(scores, t2i)
    n_img, n_txt = scores.shape
    rows = torch.arange(n_img)[:, None]
    out = []
    for s in range(0, n_txt, chunk_size):
        block = scores[:, s : s + chunk_size].float()
        owners = t2i[s : s + chunk_size]
        best = block.gather(0, owners[None]).squeeze(0)
        above = (block > best[None]).sum(0)
        tied = ((block == best[None]) & (rows < owners[None])).sum(0)
        out.append(above + tied)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """``R@k = mean(rank < k)`` over queries."""
    ranks = np.asarray(ranks)
    return float((ranks < k).mean()) if ranks.size else float("nan")


def retrieval_metrics(
    scores_i2t: Tensor,
    scores_t2i: Tensor,
    text_to_image: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> RetrievalOutput:
    """R@k both ways and ``rsum = sum_k (i2t_R@k + t2i_R@k)``.

    Args:
        scores_i2t: ``[N_images, N_texts]`` scores used to rank texts for each image (``direction="i2t"``).
        scores_t2i: ``[N_images, N_texts]`` scores used to rank images for each caption (``direction="t2i"``);
            for global models the same matrix.
        text_to_image: image index of every caption (all captions of every image, flattened).
        ks: recall cut-offs.
        chunk_size: queries per chunk.
    """
    r_i2t = image_to_text_ranks(scores_i2t, text_to_image, chunk_size)
    r_t2i = text_to_image_ranks(scores_t2i, text_to_image, chunk_size)
    metrics: Dict[str, float] = {}
    for k in ks:
        metrics[f"i2t_R@{k}"] = recall_at_k(r_i2t, k)
    for k in ks:
        metrics[f"t2i_R@{k}"] = recall_at_k(r_t2i, k)
    metrics["rsum"] = float(sum(metrics[f"i2t_R@{k}"] + metrics[f"t2i_R@{k}"] for k in ks))
    return RetrievalOutput(metrics, r_i2t, r_t2i)
