"""Top-k classification accuracy and the linear probe (multinomial logistic regression on frozen features).

Top-k uses the same tie rule as retrieval: classes are ordered by descending logit, ties by ascending class index,
so the true class ``y`` has rank ``#{c : l_c > l_y} + #{c < y : l_c = l_y}`` and a sample is correct at ``k`` when
that rank is ``< k``.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ...errors import DataError
from .retrieval import best_positive_rank


def true_class_ranks(logits: Tensor, labels: Sequence[int]) -> np.ndarray:
    """0-based rank of the true class of each sample (stable tie rule)."""
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if logits.ndim != 2 or logits.shape[0] != labels_t.numel():
        raise DataError(f"logits {tuple(logits.shape)} do not match {labels_t.numel()} labels")
    if labels_t.numel() and (labels_t.min() < 0 or labels_t.max() >= logits.shape[1]):
        raise DataError("a label is outside the class range")
    pos = torch.zeros(logits.shape, dtype=torch.bool)
    pos[torch.arange(labels_t.numel()), labels_t] = True
    return best_positive_rank(logits.float(), pos).numpy()


def topk_accuracy(logits: Tensor, labels: Sequence[int], ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """``top{k} = mean_i 1[rank_i(y_i) < k]`` for every ``k`` (k larger than the class count counts all)."""
    ranks = true_class_ranks(logits, labels)
    return {f"top{k}": float((ranks < k).mean()) if ranks.size else float("nan") for k in ks}


class LinearProbeOutput(NamedTuple):
    """Result of :func:`linear_probe`.

    Attributes:
        weight: ``[C, D]``; bias: ``[C]`` of the final classifier.
        l2: the regularisation strength chosen on the validation split.
        val_accuracy: validation top-1 of every candidate ``l2`` (same order as the grid).
        test_logits: ``[N_test, C]``.
    """

    weight: Tensor
    bias: Tensor
    l2: float
    val_accuracy: List[float]
    test_logits: Tensor


def fit_logistic_regression(
    features: Tensor, labels: Tensor, num_classes: int, l2: float, max_iter: int = 200
) -> tuple:
    """Multinomial logistic regression by full-batch L-BFGS (deterministic on CPU).

    Minimises ``L(W, b) = (1/N) sum_i -log softmax(W x_i + b)_{y_i} + (l2 / 2) ||W||_F^2`` (bias unregularised),
    in float64, starting from zeros (the objective is strictly convex for ``l2 > 0``, so the start does not matter).

    Returns:
        ``(weight [C, D], bias [C])``.
    """
    x = features.double()
    y = labels.long()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small dense problem: one thread is fastest and machine-independent
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return w.detach(), b.detach()


def linear_probe(
    train_x: Tensor,
    train_y: Sequence[int],
    val_x: Tensor,
    val_y: Sequence[int],
    test_x: Tensor,
    num_classes: int,
    l2_grid: Sequence[float] = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    max_iter: int = 200,
) -> LinearProbeOutput:
    """Fit a probe for every ``l2`` in ``l2_grid`` on train, pick the best validation top-1 (ties: the larger
    ``l2``, the simpler model), refit on train with it and return test logits.

    Features are standardised with the training mean/std before fitting (same transform on val/test).
    """
    ty = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    vy = np.asarray(val_y)
    if len(train_x) == 0 or len(val_x) == 0:
        raise DataError("the linear probe needs non-empty train and validation splits")
    mean = train_x.double().mean(0, keepdim=True)
    std = train_x.double().std(0, keepdim=True, unbiased=False).clamp(min=1e-6)
    norm = lambda t: (t.double() - mean) / std  # noqa: E731
    trx, vx, tex = norm(train_x), norm(val_x), norm(test_x)
    accs: List[float] = []
    fits = []
    for l2 in l2_grid:
        w, b = fit_logistic_regression(trx, ty, num_classes, float(l2), max_iter)
        fits.append((w, b))
        pred = (vx @ w.T + b).argmax(1).numpy()
        accs.append(float((pred == vy).mean()))
    best = max(range(len(l2_grid)), key=lambda i: (accs[i], l2_grid[i]))
    w, b = fits[best]
    return LinearProbeOutput(w.float(), b.float(), float(l2_grid[best]), accs, (tex @ w.T + b).float())
