"""Uncertainty-aware neural Shapley interaction learning (LOUPE, Li et al. 2022; docs/loupe.md, ℒ_NSI).

A small network ``g_θ`` maps the features of a coalition (and its context) to a predicted interaction mean ``μ`` and
a log-variance ``log σ²``. It is trained with the heteroscedastic Gaussian negative log-likelihood (Kendall & Gal
2017) against Monte-Carlo targets ``Î``:

``ℒ_NSI = mean [ (Î − μ)² / (2 (σ² + se²)) + ½ log (σ² + se²) ]``

where ``se`` is the Monte-Carlo standard error of ``Î`` (known noise; without it ``σ²`` could never fall below the
sampling noise and the gate would never close, so ``σ²`` measures ``g_θ``'s own error beyond it), computed in *standardised* target units ``(Î − m) / s`` (``m``, ``s``: mean and sd of the targets in the replay
buffer), so the routing threshold ``γ`` is scale-free. Routing: a coalition whose predicted variance (standardised)
exceeds ``γ`` is estimated by sampling; that estimate is used as its target and added to the replay buffer; every
other coalition uses ``μ``. During the first ``warmup_steps`` every coalition is sampled.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn


@dataclass
class NeuralConfig:
    """Configuration of :class:`NeuralInteraction`.

    Attributes:
        hidden: width of the two hidden layers of ``g_θ``.
        gamma: routing threshold on the predicted variance in standardised units (0.25 = predicted sd above half
            the targets' sd is routed to sampling).
        warmup_steps: steps during which every coalition is sampled.
        buffer_size: replay-buffer capacity (coalitions).
        replay_batch: replayed coalitions per NSI loss evaluation.
        holdout: coalitions per step held out of training and estimated by sampling to log ``nsi_spearman``.
        holdout_every: after warm-up, the held-out coalitions are sampled on every ``holdout_every``-th call only
            (they are a monitor, not targets: on the tiny specs their tower passes were half of ℒ_TSA's sampling).
            During warm-up they come from the routed coalitions, which are sampled anyway.
        max_routed_fraction: after warm-up, at most this fraction of a call's coalitions is routed to sampling —
            the most uncertain ones first (a sampling budget; 1.0 = no cap).
        min_logvar, max_logvar: clamp of the predicted log-variance (standardised units).
        min_rho: the accuracy gate: every coalition is routed to sampling while the Spearman ρ of ``g_θ``'s
            out-of-sample predictions against the sampled values, pooled over the last ``rho_window`` pairs, is
            below this (``0``: no gate; the routing is then by predicted variance only). ``[I]``
        rho_window: the pairs (prediction made before the sampled value was seen, sampled value) the gate's ρ is
            computed over.
    """

    hidden: int = 128
    gamma: float = 0.25
    warmup_steps: int = 20
    buffer_size: int = 4096
    replay_batch: int = 256
    holdout: int = 16
    holdout_every: int = 1
    max_routed_fraction: float = 1.0
    min_logvar: float = -8.0
    max_logvar: float = 4.0
    min_rho: float = 0.0
    rho_window: int = 256


#: the accuracy windows of :class:`NeuralInteraction`: ``rho`` every coalition sampled after warm-up (routed or
#: held out; the gate's), ``held`` the held-out ones only — a random sample of the coalitions ``g_θ``'s mean stands
#: in for (the unrouted ones, while any are), so its figures say how accurate ``g_θ`` is where it supervises
WINDOWS = ("rho", "held")


class NeuralInteraction(nn.Module):
    """``g_θ``: coalition features ``[N, F]`` → ``(μ, log σ²)``, with its replay buffer and target statistics.

    The replay buffer is not part of the saved weights (``persistent=False``); the predictor, the target statistics
    and the step counter are.
    """

    def __init__(self, in_dim: int, cfg: Optional[NeuralConfig] = None):
        super().__init__()
        self.cfg = cfg or NeuralConfig()
        h = self.cfg.hidden
        self.net = nn.Sequential(
            nn.Linear(in_dim, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, 2)
        )
        self.in_dim = in_dim
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        self.register_buffer("buf_x", torch.zeros(self.cfg.buffer_size, in_dim), persistent=False)
        self.register_buffer("buf_y", torch.zeros(self.cfg.buffer_size), persistent=False)
        self.register_buffer("buf_se", torch.zeros(self.cfg.buffer_size), persistent=False)
        self.register_buffer("buf_count", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("buf_ptr", torch.zeros((), dtype=torch.long), persistent=False)
        w = max(1, int(self.cfg.rho_window))
        for window in WINDOWS:
            for part in ("pred", "true", "se"):
                self.register_buffer(f"{window}_{part}", torch.zeros(w), persistent=False)
            for part in ("count", "ptr"):
                self.register_buffer(f"{window}_{part}", torch.zeros((), dtype=torch.long), persistent=False)

    # -- prediction ---------------------------------------------------------------------------------------------
    def forward(self, feats: Tensor) -> Tuple[Tensor, Tensor]:
        """Standardised ``(μ, log σ²)`` of each coalition: two ``[N]`` tensors."""
        out = self.net(feats.to(self.net[0].weight.dtype))
        return out[:, 0], out[:, 1].clamp(self.cfg.min_logvar, self.cfg.max_logvar)

    def predict(self, feats: Tensor) -> Tuple[Tensor, Tensor]:
        """``(μ, σ²)`` in target units (``μ = m + s μ_std``, ``σ² = s² σ²_std``)."""
        mu, logvar = self(feats)
        s = self.target_std
        return self.target_mean + s * mu, (s**2) * logvar.exp()

    def in_warmup(self) -> bool:
        return int(self.step) < self.cfg.warmup_steps

    def _window(self, window: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
        return tuple(getattr(self, f"{window}_{part}") for part in ("pred", "true", "se", "count", "ptr"))

    @torch.no_grad()
    def record(self, predicted: Tensor, sampled: Tensor, stderr: Optional[Tensor] = None, window: str = "rho") -> None:
        """Add out-of-sample pairs (``g_θ``'s mean made before it saw the sampled value, the value) to an accuracy
        window (a ring of ``rho_window`` pairs; :data:`WINDOWS`), with each sampled value's standard error
        (``None``: 0)."""
        pred, true, err, count, ptr = self._window(window)
        w = pred.numel()
        n = min(predicted.numel(), w)
        if n == 0:
            return
        idx = (int(ptr) + torch.arange(n, device=pred.device)) % w
        pred[idx] = predicted.detach().flatten()[-n:].to(pred.dtype)
        true[idx] = sampled.detach().flatten()[-n:].to(true.dtype)
        se = torch.zeros_like(sampled) if stderr is None else stderr
        err[idx] = se.detach().flatten()[-n:].to(err.dtype)
        ptr.fill_((int(ptr) + n) % w)
        count.fill_(min(int(count) + n, w))

    def window_rho(self, window: str = "rho") -> float:
        """Spearman ρ over an accuracy window (``nan`` with fewer than 16 pairs or constant values)."""
        pred, true, _, count, _ = self._window(window)
        c = int(count)
        return spearman(pred[:c], true[:c]) if c >= 16 else float("nan")

    def window_r_corrected(self, window: str = "rho") -> Tuple[float, float]:
        """``(r, r̂)`` over an accuracy window: the Pearson r of ``g_θ``'s predictions against the sampled values,
        and its estimate against the noise-free targets (:func:`attenuation_corrected_r`; ``nan`` with fewer than
        16 pairs)."""
        pred, true, err, count, _ = self._window(window)
        c = int(count)
        if c < 16:
            return float("nan"), float("nan")
        return attenuation_corrected_r(pred[:c], true[:c], err[:c])

    def accurate(self) -> bool:
        """The accuracy gate is open: no gate (``min_rho <= 0``), or the window's ρ reaches ``min_rho``."""
        if self.cfg.min_rho <= 0:
            return True
        rho = self.window_rho()
        return rho == rho and rho >= self.cfg.min_rho

    def route(self, feats: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Which coalitions to sample: ``(routed [N] bool, μ [N] target units, σ²_std [N])`` (no gradient)."""
        with torch.no_grad():
            mu_s, logvar = self(feats)
            mu = self.target_mean + self.target_std * mu_s
            var_s = logvar.exp()
        if self.in_warmup() or int(self.buf_count) == 0 or not self.accurate():
            routed = torch.ones_like(var_s, dtype=torch.bool)
        else:
            routed = var_s > self.cfg.gamma
            cap = int(math.ceil(self.cfg.max_routed_fraction * var_s.numel()))
            if int(routed.sum()) > cap:  # sampling budget: keep the most uncertain routed coalitions
                keep = var_s.masked_fill(~routed, float("-inf")).topk(cap).indices
                routed = torch.zeros_like(routed)
                routed[keep] = True
        return routed, mu, var_s

    # -- training -----------------------------------------------------------------------------------------------
    def nll(self, feats: Tensor, targets: Tensor, stderr: Optional[Tensor] = None) -> Tensor:
        """``ℒ_NSI = mean[ (y − μ)² / (2v) + ½ log v ]``, ``v = σ² + (se/s)²``, ``y = (Î − m) / s`` (standardised)."""
        mu, logvar = self(feats)
        y = ((targets - self.target_mean) / self.target_std).to(mu.dtype)
        var = logvar.exp()
        if stderr is not None:
            var = var + (stderr.to(mu.dtype) / self.target_std) ** 2
        return (0.5 * (y - mu) ** 2 / var + 0.5 * var.log()).mean()

    @torch.no_grad()
    def add(self, feats: Tensor, targets: Tensor, stderr: Optional[Tensor] = None) -> None:
        """Append sampled coalitions (features, ``Î``, its standard error) to the ring buffer; refresh ``m``, ``s``."""
        feats = feats.detach().to(self.buf_x.dtype)
        targets = targets.detach().to(self.buf_y.dtype)
        stderr = torch.zeros_like(targets) if stderr is None else stderr.detach().to(self.buf_se.dtype)
        cap = self.cfg.buffer_size
        n = min(feats.shape[0], cap)
        feats, targets, stderr = feats[-n:], targets[-n:], stderr[-n:]
        idx = (int(self.buf_ptr) + torch.arange(n, device=feats.device)) % cap
        self.buf_x[idx] = feats
        self.buf_y[idx] = targets
        self.buf_se[idx] = stderr
        self.buf_ptr.fill_((int(self.buf_ptr) + n) % cap)
        self.buf_count.fill_(min(int(self.buf_count) + n, cap))
        y = self.buf_y[: int(self.buf_count)]
        self.target_mean.fill_(float(y.mean()))
        self.target_std.fill_(max(float(y.std()) if y.numel() > 1 else 1.0, 1e-6))

    def replay(self, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """A random batch ``(feats, targets, stderr)`` from the buffer (empty when the buffer is empty)."""
        count = int(self.buf_count)
        if count == 0:
            return self.buf_x[:0], self.buf_y[:0], self.buf_se[:0]
        k = min(self.cfg.replay_batch, count)
        idx = torch.randint(0, count, (k,), generator=generator, device=self.buf_x.device)
        return self.buf_x[idx], self.buf_y[idx], self.buf_se[idx]

    @torch.no_grad()
    def tick(self) -> None:
        """Advance the step counter (warm-up)."""
        self.step.add_(1)


def attenuation_corrected_r(pred: Tensor, sampled: Tensor, stderr: Tensor,
                            min_reliability: float = 0.05) -> Tuple[float, float]:
    """``(r, r̂)``: Pearson r of ``pred`` against noisy ``sampled`` values, and r̂, its estimate against the values'
    expectations (the correction for attenuation, Spearman 1904).

    Each sampled value is ``Î = I + ε`` with ``E[ε] = 0`` and ``E[ε²] = se²`` (its Monte-Carlo standard error), ε
    independent of ``pred``; so ``cov(μ, Î) = cov(μ, I)`` and ``var(I) = var(Î) − mean(se²)``. With the reliability
    ``R = 1 − mean(se²) / var(Î)``:

    ``r̂ = r(μ, Î) / √R``, clipped to [−1, 1]

    — what the in-training monitor can say about ``g_θ``'s accuracy against the targets it stands in for, when the
    only reference at hand is as noisy as a training target. ``nan`` when ``R < min_reliability`` (the sampled
    values are mostly noise) or either side is constant.
    """
    x, y = pred.detach().double().flatten(), sampled.detach().double().flatten()
    if x.numel() < 3:
        return float("nan"), float("nan")
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    if den <= 0:
        return float("nan"), float("nan")
    r = float((x * y).sum()) / den
    var_y = float((y * y).sum()) / (y.numel() - 1)
    reliability = 1.0 - float(stderr.detach().double().pow(2).mean()) / var_y
    if reliability < min_reliability:
        return r, float("nan")
    return r, max(-1.0, min(1.0, r / math.sqrt(reliability)))


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (average ranks for ties); ``nan`` if either is constant.

    ``ρ = Pearson(rank(a), rank(b))``.
    """
    from scipy.stats import rankdata

    if a.numel() < 2:
        return float("nan")
    ra = torch.as_tensor(rankdata(a.detach().cpu().double().numpy()))
    rb = torch.as_tensor(rankdata(b.detach().cpu().double().numpy()))
    ra = ra - ra.mean()
    rb = rb - rb.mean()
    den = float((ra.norm() * rb.norm()))
    return float((ra * rb).sum()) / den if den > 0 else float("nan")
