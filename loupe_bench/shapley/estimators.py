"""Interaction estimators selected by name (``shapley: exact | sampling | neural`` in a LOUPE spec).

Each estimator is an ``nn.Module`` called as ``est(game, coalitions, valid, feats)`` and returns an
:class:`EstimatorOutput` with constant (detached) targets ``[G, C]``, the ℒ_NSI term when it has one, and scalar logs.
The estimated quantity is ``EstimatorConfig.target``: the interaction ``I([A]) = φ([A]|N_[A]) − Σ_{i∈A} φ(i|N_i)``
(default) or the coalition value ``φ([A]|N_[A])``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Registry
from .exact import exact_coalition_value, exact_interaction
from .games import Game
from .neural import NeuralConfig, NeuralInteraction, spearman
from .sampling import sample_coalition_value_subset, sample_interaction_subset

ESTIMATORS = Registry("shapley estimator")

EXACT_TARGETS = {"interaction": exact_interaction, "coalition_value": exact_coalition_value}
"""Exact enumeration of each estimable quantity (``fn(game, n, coalitions) -> [G, C]``)."""
SAMPLED_TARGETS = {"interaction": sample_interaction_subset, "coalition_value": sample_coalition_value_subset}
"""Monte-Carlo estimate of each quantity on selected coalitions (``fn(game, coalitions, select, M, generator)``)."""
TARGETS = tuple(EXACT_TARGETS)


def check_target(target: str) -> str:
    """``target`` if it is a known quantity, else a :class:`SpecError` naming the choices."""
    if target not in EXACT_TARGETS:
        raise SpecError(f"unknown shapley target {target!r}; known: {', '.join(TARGETS)}")
    return target


@dataclass
class EstimatorConfig:
    """Attributes:
    num_samples: ``M``, Monte-Carlo contexts per coalition.
    neural: configuration of the neural module (used by ``neural`` only).
    target: the estimated quantity: ``interaction`` — ``I([A]) = φ([A]|N_[A]) − Σ_{i∈A} φ(i|N_i)`` (default) —
        or ``coalition_value`` — ``φ([A]|N_[A]) = E_S[v(S∪A) − v(S)]``, ``S`` Shapley-weighted on ``N∖A``
        (2 masks per context instead of ``|A| + 2``).
    """

    num_samples: int = 32
    neural: NeuralConfig = field(default_factory=NeuralConfig)
    target: str = "interaction"

    def __post_init__(self) -> None:
        check_target(self.target)


class EstimatorOutput(NamedTuple):
    """Attributes:
    targets: ``[G, C]`` targets of the configured quantity (interaction or coalition value; detached; 0 at invalid
        coalitions).
    nsi: scalar ℒ_NSI (``None`` for estimators without a neural module).
    logs: floats to log (``routed_fraction``, ``nsi_spearman``, ``mc_evals``).
    """

    targets: Tensor
    nsi: Optional[Tensor]
    logs: Dict[str, float]


class _ConfiguredEstimator(nn.Module):
    """Shared constructor of the estimators that hold only their config (exact, sampling)."""

    def __init__(self, feature_dim: int, cfg: EstimatorConfig):
        super().__init__()
        check_target(cfg.target)
        self.cfg = cfg


@ESTIMATORS.register("exact", help="enumerate all 2^n subsets (tiny n only; tests)")
class ExactEstimator(_ConfiguredEstimator):
    @torch.no_grad()
    def forward(self, game: Game, coalitions: Tensor, valid: Tensor, feats: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> EstimatorOutput:
        out = EXACT_TARGETS[self.cfg.target](game, coalitions.shape[-1], coalitions & valid[..., None])
        return EstimatorOutput(out.float() * valid, None, {})


@ESTIMATORS.register("sampling", help="shared-context Monte-Carlo, M samples per coalition")
class SamplingEstimator(_ConfiguredEstimator):
    @torch.no_grad()
    def forward(self, game: Game, coalitions: Tensor, valid: Tensor, feats: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> EstimatorOutput:
        est = SAMPLED_TARGETS[self.cfg.target](game, coalitions, valid, self.cfg.num_samples, generator)
        return EstimatorOutput(est.mean.float(), None, {"routed_fraction": 1.0, "mc_evals": float(est.num_evals)})


@ESTIMATORS.register("neural", help="uncertainty-gated neural predictor, Monte-Carlo where uncertain")
class NeuralEstimator(nn.Module):
    """Routing between ``g_θ``'s mean and Monte-Carlo sampling (see :mod:`loupe_bench.shapley.neural`).

    Per call: ``routed = (step < warm-up) or σ²_std > γ``; routed coalitions are sampled (the configured quantity,
    ``cfg.target``) and their ``Î`` is both the target and new training data for ``g_θ``; the others use ``μ``.
    ``holdout`` extra coalitions (taken from the unrouted ones, or, during warm-up or when fewer are unrouted, from
    any, kept out of the buffer) are sampled to log the Spearman ρ between ``μ`` and ``Î`` (``nsi_spearman``), on
    every ``holdout_every``-th call after warm-up.
    ``feats`` are detached, so ℒ_NSI trains only ``g_θ``.
    """

    def __init__(self, feature_dim: int, cfg: EstimatorConfig):
        super().__init__()
        check_target(cfg.target)
        self.cfg = cfg
        self.module = NeuralInteraction(feature_dim, cfg.neural)

    def forward(self, game: Game, coalitions: Tensor, valid: Tensor, feats: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> EstimatorOutput:
        if feats is None:
            raise ValueError("the neural estimator needs coalition features")
        feats = feats.detach()
        f = feats[valid]  # [N, F]
        n_items = f.shape[0]
        targets = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
        if n_items == 0:
            return EstimatorOutput(targets, None, {})
        routed, mu, _ = self.module.route(f)
        perm = torch.randperm(n_items, generator=generator, device=f.device)
        warm = self.module.in_warmup()
        pool = routed if warm else ~routed
        if int(pool.sum()) < self.cfg.neural.holdout:  # too few unrouted coalitions: hold out sampled ones
            pool = torch.ones_like(routed)
        pool_idx = perm[pool[perm]]
        hold = torch.zeros_like(routed)
        every = max(1, int(self.cfg.neural.holdout_every))
        if warm or int(self.module.step) % every == 0:  # the monitor's own samples: every `holdout_every` calls
            hold[pool_idx[: self.cfg.neural.holdout]] = True
        sample = routed | hold
        sel = torch.zeros_like(valid)
        sel[valid] = sample
        est = SAMPLED_TARGETS[self.cfg.target](game, coalitions, sel, self.cfg.num_samples, generator)
        mc = est.mean[valid].float()
        se = est.stderr[valid].float()
        t = torch.where(routed, mc, mu.float())
        targets[valid] = t
        logs: Dict[str, float] = {
            "routed_fraction": float(routed.float().mean()),
            "mc_evals": float(est.num_evals),
        }
        if int(hold.sum()) >= 3:
            rho = spearman(mu[hold], mc[hold])
            if rho == rho:
                logs["nsi_spearman"] = rho
        self._monitor(mu, mc, se, routed, hold, torch.nonzero(valid)[:, 0], logs)
        nsi = None
        if self.training:
            train = routed & ~hold
            if bool(train.any()):
                self.module.add(f[train], mc[train], se[train])
            rx, ry, rs = self.module.replay(generator)
            nsi = self.module.nll(torch.cat([f[train], rx]), torch.cat([mc[train], ry]), torch.cat([se[train], rs]))
            self.module.tick()
        return EstimatorOutput(targets, nsi, logs)


    def _monitor(self, mu: Tensor, mc: Tensor, se: Tensor, routed: Tensor, hold: Tensor, game: Tensor,
                 logs: Dict[str, float]) -> None:
        """Out-of-sample accuracy of ``g_θ`` after warm-up: every coalition sampled in this call (routed or held
        out) was predicted before ``g_θ`` saw its sampled value, so each gives a prequential pair (μ, Î). Logs
        ``nsi_rho`` (Spearman, pooled over the module's window of recent pairs), ``nsi_r`` and ``nsi_r_corrected``
        (over the window of held-out pairs only — a random sample of the coalitions ``g_θ`` supervises: Pearson
        against the sampled values, and its estimate against their expectations given each value's standard
        error, :func:`~loupe_bench.shapley.neural.attenuation_corrected_r`) and ``nsi_rho_image`` (mean over
        games of the within-game ρ of this call, games with at least 4 sampled coalitions). The routed coalitions
        are the most uncertain ones, so while the gate is open the ``nsi_rho`` window leans to the hard cases."""
        if self.module.in_warmup():
            return
        seen = hold | routed
        if not bool(seen.any()):
            return
        self.module.record(mu[seen], mc[seen], se[seen])
        if bool(hold.any()):
            self.module.record(mu[hold], mc[hold], se[hold], window="held")
        rho = self.module.window_rho()
        if rho == rho:
            logs["nsi_rho"] = rho
        r, r_hat = self.module.window_r_corrected("held")
        for key, value in (("nsi_r", r), ("nsi_r_corrected", r_hat)):
            if value == value:
                logs[key] = value
        per = [spearman(mu[seen & (game == g)], mc[seen & (game == g)]) for g in torch.unique(game[seen]).tolist()
               if int((seen & (game == g)).sum()) >= 4]
        per = [r for r in per if r == r]
        if per:
            logs["nsi_rho_image"] = sum(per) / len(per)


def build_estimator(name: str, feature_dim: int, cfg: EstimatorConfig) -> nn.Module:
    """Instantiate the estimator registered as ``name``."""
    return ESTIMATORS.get(name)(feature_dim, cfg)
