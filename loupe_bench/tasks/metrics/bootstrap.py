"""Uncertainty: percentile bootstrap intervals, paired bootstrap deltas, mean ± std across seeds.

Percentile bootstrap: draw ``B`` replicates of the ``n`` items (images or queries) with replacement using
``numpy.random.default_rng(seed)``, compute the statistic on each, and report the ``alpha/2`` and ``1 - alpha/2``
quantiles (``numpy.quantile``, linear interpolation) as the 95 % interval (``alpha = 0.05``).
"""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Sequence

import numpy as np


class Interval(NamedTuple):
    """A point estimate with its bootstrap interval."""

    value: float
    low: float
    high: float


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``[B, n]`` bootstrap index matrix (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_resamples, n))


def bootstrap_ci(
    values: Sequence[float],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    statistic: Callable[[np.ndarray], float] = np.mean,
) -> Interval:
    """Interval of ``statistic(values)`` (default the mean) by resampling the items."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    idx = resample_indices(v.size, n_resamples, seed)
    if statistic is np.mean:
        reps = v[idx].mean(axis=1)
    else:
        reps = np.array([statistic(v[row]) for row in idx])
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Interval(float(statistic(v)), float(lo), float(hi))


def bootstrap_ci_fn(
    n: int,
    fn: Callable[[np.ndarray], float],
    n_resamples: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Interval of a statistic that needs the whole resampled set (AP, corpus BLEU/CIDEr): ``fn(indices)``."""
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    idx = resample_indices(n, n_resamples, seed)
    reps = np.array([fn(row) for row in idx], dtype=np.float64)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Interval(float(fn(np.arange(n))), float(lo), float(hi))


def paired_bootstrap_delta(
    values_a: Sequence[float],
    values_b: Sequence[float],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Dict[str, float]:
    """Paired bootstrap of ``mean(a) - mean(b)`` over the same items (the same indices resample both).

    Returns:
        ``{"delta", "low", "high", "p_value"}`` where ``p_value`` is the two-sided bootstrap estimate
        ``min(1, 2 * min(P(delta* <= 0), P(delta* >= 0)))``.
    """
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same items: {a.shape} vs {b.shape}")
    d = a - b
    idx = resample_indices(d.size, n_resamples, seed)
    reps = d[idx].mean(axis=1)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float((reps <= 0).mean()), float((reps >= 0).mean())))
    return {"delta": float(d.mean()), "low": float(lo), "high": float(hi), "p_value": p}


def seed_summary(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for one run) across seeds."""
    v = np.asarray(values, dtype=np.float64)
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "n": int(v.size)}
