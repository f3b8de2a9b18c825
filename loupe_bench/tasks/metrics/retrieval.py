"""Image–text retrieval recall (R@k) with several captions per image, chunked, with a fixed tie rule.

Definition (CLIP_benchmark / LAVIS "hit rate"): every query ``q`` has a positive set ``P(q)`` (all ground-truth
captions of an image for an image query; the one image of a caption for a caption query) and

    R@k = (1/|Q|) * sum_q 1[ min_{p in P(q)} rank_q(p) < k ]

with 0-based ranks. **Tie rule (documented, tested):** the gallery is ordered by descending score and, among equal
scores, by ascending gallery index (a stable sort of the negated scores), i.e.

    rank_q(g) = #{g' : s_qg' > s_qg} + #{g' < g : s_qg' = s_qg}.

The best-ranked positive is therefore the positive with the highest score, the lowest index among equal ones, so the
rank is computed in ``O(N_gallery)`` per query without sorting: one strict comparison per score against a
per-query threshold (:func:`stable_ranks`), on cache-sized tiles counted in a thread pool, so that memory stays
bounded for COCO 5K (5,000 × 25,010) and no whole-matrix copy (float64 or transposed) is made.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, NamedTuple, Optional, Sequence

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


#: elements of the score matrix per tile (``2**19`` float32 = 2 MiB: the tile and its boolean mask stay in cache)
TILE_ELEMENTS = 1 << 19
#: rows summed at once as uint8 (at most 255 ones per column cannot overflow)
U8_RUN = 255


def _as_scores(scores: Tensor) -> Tensor:
    """CPU, no autograd; the dtype is kept (tiles are converted to float32 one at a time, no full copy)."""
    return scores.detach().cpu()


def _tile(scores: Tensor, rows: slice, cols: slice) -> np.ndarray:
    """One tile as a float32 numpy array (a view when ``scores`` is already float32)."""
    t = scores[rows, cols]
    return (t if t.dtype == torch.float32 else t.float()).numpy()


def _workers() -> int:
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def stable_ranks(scores: Tensor, best: np.ndarray, split: np.ndarray, query_axis: int, query_block: int = 1024,
                 gallery_block: Optional[int] = None, check_nan: bool = True) -> np.ndarray:
    """``rank_q = #{g : s_qg > b_q} + #{g < p_q : s_qg = b_q}`` for every query ``q`` without sorting or a
    whole-matrix temporary.

    ``b_q`` is the float32 score of the query's best positive and ``p_q`` its gallery index. With
    ``b_q^- = nextafter(b_q, -inf)`` (the largest float32 below ``b_q``), ``s >= b_q  <=>  s > b_q^-``, so the rank is
    one strict comparison per element against a per-query threshold that switches at ``p_q``:

        rank_q = #{g < p_q : s_qg > b_q^-} + #{g >= p_q : s_qg > b_q}

    (the positive itself, ``s_qp = b_q`` at ``g = p_q``, is not counted). The matrix is cut into tiles of
    ``query_block`` queries × ``gallery_block`` gallery items; inside a gallery block ``[a, c)`` a query uses
    ``b_q^-`` when ``p_q >= c``, ``b_q`` otherwise, and the queries with ``a <= p_q < c`` add the ties of
    ``[a, p_q)`` from their own rows of the tile. Tiles are counted in a thread pool (integer counts: the result
    does not depend on the order). When queries are columns the boolean tile is summed down its rows as uint8 in
    runs of at most 255 rows (exact, vectorised along the contiguous axis). Queries with ``b_q = -inf`` (no float
    below it) are counted directly.

    Args:
        scores: ``[N_images, N_texts]`` scores (any float dtype, compared in float32).
        best: ``[Q]`` best-positive score of every query (float32 values).
        split: ``[Q]`` gallery index ``p_q`` of the best positive.
        query_axis: 0 when rows are the queries (image → text), 1 when columns are (text → image).
        query_block: queries per tile.
        gallery_block: gallery items per tile (default: ``TILE_ELEMENTS // query_block``; at most 255 when the
            queries are columns).
        check_nan: raise :class:`DataError` when a tile holds NaN (skip only for a matrix already checked).

    Returns:
        ``[Q]`` int64 ranks.
    """
    n_q, n_g = scores.shape[query_axis], scores.shape[1 - query_axis]
    out = np.zeros(n_q, dtype=np.int64)
    if n_q == 0 or n_g == 0:
        return out
    best = np.asarray(best, dtype=np.float32)
    split = np.asarray(split, dtype=np.int64)
    lo = np.nextafter(best, np.float32(-np.inf))
    qb = max(1, min(int(query_block), n_q))
    default_gb = max(1, TILE_ELEMENTS // qb) if query_axis == 0 else min(U8_RUN, max(1, TILE_ELEMENTS // qb))
    gb = max(1, min(int(gallery_block) if gallery_block else default_gb, n_g))

    def count(job):
        q0, g0 = job
        return q0, _count_tile(scores, best, lo, split, query_axis, (q0, min(n_q, q0 + qb)), (g0, min(n_g, g0 + gb)),
                               check_nan)

    jobs = [(q0, g0) for g0 in range(0, n_g, gb) for q0 in range(0, n_q, qb)]
    workers = _workers()
    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(count, jobs))
    else:
        results = [count(j) for j in jobs]
    for q0, n in results:
        out[q0 : q0 + n.size] += n
    for q in np.flatnonzero(best == -np.inf):  # nothing below -inf: count this query directly
        out[q] = _count_query(scores, best[q], split[q], query_axis, q)
    return out


def _count_tile(scores: Tensor, best: np.ndarray, lo: np.ndarray, split: np.ndarray, query_axis: int,
                queries: tuple, gallery: tuple, check_nan: bool) -> np.ndarray:
    """The part of :func:`stable_ranks` that gallery block ``[a, c)`` adds to the queries ``[q0, q1)``.

        n_q = #{a <= g < c : s_qg > t_q} + 1[a <= p_q < c] * #{a <= g < p_q : s_qg = b_q},
        t_q = b_q^- if p_q >= c else b_q

    ``queries = (q0, q1)``, ``gallery = (a, c)``; ``lo`` holds ``b^-``. When queries are columns
    (``query_axis == 1``) the boolean tile is summed down its rows as uint8 in runs of at most 255 rows (exact).

    Returns:
        ``[q1 - q0]`` int64 counts.
    """
    (q0, q1), (g0, g1) = queries, gallery
    b, sp = best[q0:q1], split[q0:q1]
    thr = np.where(sp >= g1, lo[q0:q1], b)
    inside = np.flatnonzero((sp >= g0) & (sp < g1))
    if query_axis == 0:
        t = _tile(scores, slice(q0, q1), slice(g0, g1))
        if check_nan and np.isnan(t).any():
            raise DataError("score matrix holds NaN values")
        n = np.count_nonzero(t > thr[:, None], axis=1)
        if inside.size:
            sub = t[inside]
            before = np.arange(g0, g1)[None, :] < sp[inside, None]
            n[inside] += np.count_nonzero((sub == b[inside, None]) & before, axis=1)
    else:
        t = _tile(scores, slice(g0, g1), slice(q0, q1))
        if check_nan and np.isnan(t).any():
            raise DataError("score matrix holds NaN values")
        above = (t > thr[None, :]).view(np.uint8)
        n = np.zeros(q1 - q0, dtype=np.int64)
        for r in range(0, above.shape[0], U8_RUN):  # <= 255 ones per column: exact in uint8
            n += above[r : r + U8_RUN].sum(axis=0, dtype=np.uint8)
        if inside.size:
            sub = t[:, inside]
            before = np.arange(g0, g1)[:, None] < sp[None, inside]
            n[inside] += np.count_nonzero((sub == b[None, inside]) & before, axis=0)
    return n


def _count_query(scores: Tensor, best: np.float32, split: np.int64, query_axis: int, q: int) -> int:
    """``rank_q = #{g : s_qg > b_q} + #{g < p_q : s_qg = b_q}`` for one query counted over its whole row (or
    column): used for ``b_q = -inf``, which has no float below it for the threshold of :func:`stable_ranks`."""
    v = _tile(scores, slice(q, q + 1), slice(None)).ravel() if query_axis == 0 else \
        _tile(scores, slice(None), slice(q, q + 1)).ravel()
    return np.count_nonzero(v > best) + np.count_nonzero(v[:split] == best)


def image_to_text_ranks(scores: Tensor, text_to_image: Sequence[int], chunk_size: int = 1024,
                        gallery_block: Optional[int] = None, check_nan: bool = True) -> np.ndarray:
    """Best rank of any GT caption for each image query; ``scores`` is ``[N_images, N_texts]``.

    The best positive ``p*`` of image ``i`` is found by gathering the scores of its own captions only (a padded
    ``[N_images, P_max]`` index table: the largest score, the lowest caption index among equal ones), then
    ``rank = #{j : s_ij > s_ip*} + #{j < p* : s_ij = s_ip*}`` is counted tile by tile (:func:`stable_ranks`).

    Args:
        scores: image-query score matrix (rows rank texts).
        text_to_image: ``[N_texts]`` index of the image each caption belongs to.
        chunk_size: image queries per tile.
        gallery_block: captions per tile (default from :data:`TILE_ELEMENTS`).
        check_nan: raise :class:`DataError` on NaN scores (checked tile by tile).
    """
    t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    scores = _as_scores(scores)
    _check(scores, t2i)
    n_img, n_txt = scores.shape
    counts = torch.bincount(t2i, minlength=n_img)
    if n_img and counts.min() == 0:
        raise DataError("a retrieval query has no positive in the gallery (an image without captions)")
    if n_img == 0:
        return np.zeros(0, dtype=np.int64)
    order = torch.argsort(t2i, stable=True)  # caption indices grouped by image, ascending within an image
    p_max = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_txt) - starts[t2i[order]]
    table = torch.full((n_img, max(p_max, 1)), -1, dtype=torch.long)
    table[t2i[order], slot] = order
    valid = table >= 0
    vals = scores.gather(1, table.clamp(min=0)).float().masked_fill(~valid, float("-inf"))
    best = vals.max(1).values
    p_star = torch.where(valid & (vals == best[:, None]), table, torch.full_like(table, n_txt)).min(1).values
    return stable_ranks(scores, best.numpy(), p_star.numpy(), 0, chunk_size, gallery_block, check_nan)


def text_to_image_ranks(scores: Tensor, text_to_image: Sequence[int], chunk_size: int = 1024,
                        gallery_block: Optional[int] = None, check_nan: bool = True) -> np.ndarray:
    """Rank of the GT image for each caption query; ``scores`` is ``[N_images, N_texts]`` (columns are queries).

    One positive per query: ``rank_j = #{i : s_ij > s_{o(j) j}} + #{i < o(j) : s_ij = s_{o(j) j}}``, counted on
    tiles of the row-major matrix without transposing (:func:`stable_ranks` with ``query_axis=1``).

    Args:
        chunk_size: caption queries per tile.
        gallery_block: images per tile (default from :data:`TILE_ELEMENTS`).
    """
    t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    scores = _as_scores(scores)
    _check(scores, t2i)
    n_img, n_txt = scores.shape
    if n_txt == 0:
        return np.zeros(0, dtype=np.int64)
    best = scores[t2i, torch.arange(n_txt)].float()
    return stable_ranks(scores, best.numpy(), t2i.numpy(), 1, chunk_size, gallery_block, check_nan)


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
    # one NaN scan per distinct matrix: the i2t pass has already checked a shared (global-model) matrix
    r_t2i = text_to_image_ranks(scores_t2i, text_to_image, chunk_size, check_nan=scores_t2i is not scores_i2t)
    metrics: Dict[str, float] = {}
    for k in ks:
        metrics[f"i2t_R@{k}"] = recall_at_k(r_i2t, k)
    for k in ks:
        metrics[f"t2i_R@{k}"] = recall_at_k(r_t2i, k)
    metrics["rsum"] = float(sum(metrics[f"i2t_R@{k}"] + metrics[f"t2i_R@{k}"] for k in ks))
    return RetrievalOutput(metrics, r_i2t, r_t2i)
