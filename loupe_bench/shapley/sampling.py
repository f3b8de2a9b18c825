"""Monte-Carlo coalition interactions and coalition values with shared Shapley-weighted contexts, all masks in one
batched call."""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .games import Game


class InteractionEstimate(NamedTuple):
    """A Monte-Carlo estimate of coalition interactions (or of coalition values).

    Attributes:
        mean: ``[G, C]`` estimate ``Î([A])`` (:func:`sample_interaction`) or ``φ̂([A])``
            (:func:`sample_coalition_value`).
        stderr: ``[G, C]`` standard error ``sd(Δ_m) / √M`` (unbiased sd over the ``M`` samples).
        num_evals: number of value-function evaluations spent (masks evaluated).
        value: ``[G, C]`` coalition value ``φ̂([A]|N_[A])`` from the same contexts, when asked for
            (``sample_interaction(..., with_value=True)``); else ``None``.
        value_stderr: its standard error ``sd(v(S_m∪A) − v(S_m)) / √M``; ``None`` with ``value``.
    """

    mean: Tensor
    stderr: Tensor
    num_evals: int
    value: Optional[Tensor] = None
    value_stderr: Optional[Tensor] = None


def sample_contexts(coalitions: Tensor, num_samples: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Contexts ``S_1..S_M ⊆ N∖A`` drawn with Shapley weights for each coalition: ``[G, C, M, n]`` bool.

    The size ``k`` is uniform on ``{0, …, n' − 1}`` with ``n' = n − |A| + 1``; then ``S`` is a uniform size-``k``
    subset of ``N∖A``. This reproduces ``p_{n'}(S) = |S|! (n' − |S| − 1)! / n'!``: the probability of one given
    ``S`` of size ``k`` is ``(1/n') / C(n'−1, k)``.
    """
    g, c, n = coalitions.shape
    dev = coalitions.device
    r = torch.rand(g, c, num_samples, n, generator=generator, device=dev)
    r = r.masked_fill(coalitions[:, :, None, :], 2.0)  # members sort last, never inside S
    order = r.argsort(dim=-1)  # a uniform random order of N∖A, then A
    free = (n - coalitions.sum(-1))[:, :, None]  # |N∖A| = n' − 1
    k = (torch.rand(g, c, num_samples, generator=generator, device=dev) * (free + 1)).floor().clamp(max=free)
    first_k = torch.arange(n, device=dev) < k[..., None]  # the first k positions of the order
    return torch.zeros_like(first_k).scatter_(-1, order, first_k)


def _mean_and_stderr(delta: Tensor) -> Tuple[Tensor, Tensor]:
    """``(mean, sd/√M)`` over the last dimension (``M`` samples; unbiased sd)."""
    return delta.mean(-1), delta.std(-1, unbiased=True) / delta.shape[-1] ** 0.5


def _check_samples(num_samples: int) -> None:
    if num_samples < 2:
        raise ValueError("num_samples must be >= 2")


def sample_interaction(
    game: Game,
    coalitions: Tensor,
    num_samples: int = 64,
    generator: Optional[torch.Generator] = None,
    with_value: bool = False,
    contexts: Optional[Tensor] = None,
) -> InteractionEstimate:
    """Monte-Carlo multivariate interaction of every coalition of every game.

    ``Î([A]) = (1/M) Σ_m Δ_m``,  ``Δ_m = v(S_m ∪ A) − v(S_m) − Σ_{i∈A} ( v(S_m ∪ {i}) − v(S_m) )``,

    with contexts ``S_m`` from :func:`sample_contexts`, shared by the coalition ``[A]`` and each of its members
    (both reduced games of ``I([A]) = φ([A]|N_[A]) − Σ_{i∈A} φ(i|N_i)`` have the same other players ``N∖A``).
    ``Î`` is unbiased; its standard error is ``sd(Δ) / √M``. Cost: ``M (|A| + 2)`` masks per coalition, all
    evaluated in **one** call of the game: the masks each coalition needs are packed to the front of its game and
    games are padded to the longest with empty masks (``v(∅)`` is evaluated but not used). Coalitions of fewer than
    two players get 0.

    With ``with_value=True`` the coalition value of the same contexts comes for free (its two masks are already
    evaluated): ``φ̂([A]) = (1/M) Σ_m [v(S_m ∪ A) − v(S_m)]`` in ``value`` (standard error in ``value_stderr``),
    defined for every non-empty coalition (singletons included: ``φ̂([{i}]) = φ̂_i``), 0 for empty ones.

    Args:
        game: batched game ``[G, Q, n] -> [G, Q]``.
        coalitions: ``[G, C, n]`` bool.
        num_samples: ``M``, contexts per coalition (≥ 2 for a standard error).
        generator: optional RNG (determinism; unused when ``contexts`` is given).
        with_value: also return ``φ̂([A])`` from the same contexts.
        contexts: ``[G, C, M, n]`` bool contexts drawn beforehand (each disjoint from its coalition), e.g. shared
            between estimates; default: :func:`sample_contexts` with ``generator``.
    """
    _check_samples(num_samples)
    coalitions = coalitions.bool()
    g, c, n = coalitions.shape
    dev = coalitions.device
    ctx = sample_contexts(coalitions, num_samples, generator) if contexts is None else contexts.bool()
    if ctx.shape != (g, c, num_samples, n):
        raise ValueError(f"contexts must be [{g}, {c}, {num_samples}, {n}], got {tuple(ctx.shape)}")
    if (ctx & coalitions[:, :, None, :]).any():
        raise ValueError("a context shares players with its coalition")
    size = coalitions.sum(-1)  # [G, C]
    a_max = max(int(size.max()) if size.numel() else 0, 1)
    # members of each coalition first (stable), padded to a_max
    members = (~coalitions).to(torch.int8).argsort(dim=-1, stable=True)[..., :a_max]  # [G, C, a_max]
    member_ok = torch.arange(a_max, device=dev) < size[..., None]  # [G, C, a_max]
    onehot = torch.nn.functional.one_hot(members, n).bool() & member_ok[..., None]  # [G, C, a_max, n]
    masks = torch.cat([ctx[:, :, :, None, :], (ctx | coalitions[:, :, None, :])[:, :, :, None, :],
                       ctx[:, :, :, None, :] | onehot[:, :, None, :, :]], dim=3)  # [G, C, M, 2 + a_max, n]
    need = torch.cat([torch.ones(g, c, 2, dtype=torch.bool, device=dev), member_ok], dim=-1)  # [G, C, 2 + a_max]
    need = need[:, :, None, :].expand(g, c, num_samples, 2 + a_max).reshape(g, -1)  # [G, C·M·(2 + a_max)]
    per_game = need.sum(-1)
    q = int(per_game.max()) if g else 0
    order = (~need).to(torch.int8).argsort(dim=-1, stable=True)[:, :q]  # needed masks first, in order
    flat = masks.reshape(g, -1, n)
    live = torch.arange(q, device=dev) < per_game[:, None]  # [G, q]: False = padding (empty mask)
    packed = torch.gather(flat, 1, order[..., None].expand(-1, -1, n)) & live[..., None]
    vals = torch.zeros(g, flat.shape[1], dtype=torch.float64, device=dev)
    if q:
        vals.scatter_(1, order, game(packed).to(torch.float64) * live)
    vals = vals.reshape(g, c, num_samples, 2 + a_max)
    base = vals[..., 0]
    merged = vals[..., 1] - base  # v(S ∪ A) − v(S)   [G, C, M]
    single = ((vals[..., 2:] - base[..., None]) * member_ok[:, :, None, :]).sum(-1)
    delta = (merged - single) * (size >= 2)[..., None]
    mean, stderr = _mean_and_stderr(delta)
    value = value_se = None
    if with_value:
        value, value_se = _mean_and_stderr(merged * (size >= 1)[..., None])
    return InteractionEstimate(mean=mean, stderr=stderr, num_evals=int(per_game.sum()), value=value,
                               value_stderr=value_se)


def sample_coalition_value(
    game: Game,
    coalitions: Tensor,
    num_samples: int = 64,
    generator: Optional[torch.Generator] = None,
) -> InteractionEstimate:
    """Monte-Carlo coalition value ``φ([A]|N_[A])`` (Shapley value of the merged player) of every coalition.

    ``φ̂([A]) = (1/M) Σ_m Δ_m``,  ``Δ_m = v(S_m ∪ A) − v(S_m)``,  ``S_m`` from :func:`sample_contexts` (Shapley
    weights ``p_{n'}(S)``, ``n' = n − |A| + 1``, on ``N∖A``); unbiased, standard error ``sd(Δ) / √M``.

    Only the masks ``S_m`` and ``S_m ∪ A`` are needed: ``2 M`` per coalition (against ``M (|A|_max + 2)`` for the
    interaction), all in **one** call of the game. With the same generator state the contexts, hence ``mean``, equal
    ``sample_interaction(..., with_value=True).value``. ``φ̂([{i}])`` estimates the plain Shapley value ``φ_i``; empty
    coalitions get 0.

    Args:
        game: batched game ``[G, Q, n] -> [G, Q]``.
        coalitions: ``[G, C, n]`` bool.
        num_samples: ``M``, contexts per coalition (≥ 2 for a standard error).
        generator: optional RNG (determinism).
    """
    _check_samples(num_samples)
    coalitions = coalitions.bool()
    g, c, n = coalitions.shape
    ctx = sample_contexts(coalitions, num_samples, generator)  # [G, C, M, n]
    masks = torch.stack([ctx, ctx | coalitions[:, :, None, :]], dim=3)  # [G, C, M, 2, n]
    vals = game(masks.reshape(g, -1, n)).reshape(g, c, num_samples, 2).to(torch.float64)
    mean, stderr = _mean_and_stderr(vals[..., 1] - vals[..., 0])
    return InteractionEstimate(mean=mean, stderr=stderr, num_evals=int(masks[..., 0].numel()))


def _select_games(game: Game, idx: Tensor) -> Game:
    """The sub-game of games ``idx`` when the game supports it (``game.select(idx)``), else the game itself."""
    sel = getattr(game, "select", None)
    return sel(idx) if sel is not None else game


def _sample_subset(sampler, game: Game, coalitions: Tensor, select: Tensor, num_samples: int,
                   generator: Optional[torch.Generator], **kw) -> InteractionEstimate:
    """``sampler(game, coalitions, num_samples, generator, **kw)`` on the selected coalitions only; zeros elsewhere.

    Selected coalitions are packed to the front of each game (padded with empty coalitions to the largest count),
    games without a selected coalition are dropped when the game has a ``select(game_idx)`` method, and everything
    is still evaluated in one call of the game. Optional fields (``value``) are scattered back like ``mean``.
    """
    g, c, n = coalitions.shape
    zeros = torch.zeros(g, c, dtype=torch.float64, device=coalitions.device)
    counts = select.sum(-1)
    if int(counts.sum()) == 0:
        extra = {"value": zeros.clone(), "value_stderr": zeros.clone()} if kw.get("with_value") else {}
        return InteractionEstimate(zeros, zeros.clone(), 0, **extra)
    keep_games = torch.nonzero(counts > 0).flatten()
    if getattr(game, "select", None) is None:
        keep_games = torch.arange(g, device=coalitions.device)
    sub_sel = select[keep_games]
    c_max = int(sub_sel.sum(-1).max())
    order = (~sub_sel).to(torch.int8).argsort(dim=-1, stable=True)[:, :c_max]  # selected first
    ok = torch.arange(c_max, device=coalitions.device) < sub_sel.sum(-1, keepdim=True)
    packed = torch.gather(coalitions[keep_games], 1, order[..., None].expand(-1, -1, n)) & ok[..., None]
    est = sampler(_select_games(game, keep_games), packed, num_samples, generator, **kw)
    rows = keep_games[:, None].expand(-1, c_max)[ok]
    cols = order[ok]

    def scatter(x: Optional[Tensor]) -> Optional[Tensor]:
        if x is None:
            return None
        out = zeros.clone()
        out[rows, cols] = x[ok]
        return out

    return InteractionEstimate(scatter(est.mean), scatter(est.stderr), est.num_evals, scatter(est.value),
                               scatter(est.value_stderr))


def sample_interaction_subset(
    game: Game,
    coalitions: Tensor,
    select: Tensor,
    num_samples: int = 64,
    generator: Optional[torch.Generator] = None,
    with_value: bool = False,
) -> InteractionEstimate:
    """:func:`sample_interaction` for the selected coalitions only (``select [G, C]`` bool); zeros elsewhere.

    Same estimator ``Î([A]) = (1/M) Σ_m [v(S_m∪A) − v(S_m) − Σ_{i∈A}(v(S_m∪{i}) − v(S_m))]`` (and, with
    ``with_value``, ``φ̂([A]) = (1/M) Σ_m [v(S_m∪A) − v(S_m)]``). Selected coalitions are packed to the front of
    each game (padded with empty coalitions to the largest count), games without a selected coalition are dropped
    when the game has a ``select(game_idx)`` method, and everything is still evaluated in one call of the game.
    """
    return _sample_subset(sample_interaction, game, coalitions, select, num_samples, generator, with_value=with_value)


def sample_coalition_value_subset(
    game: Game,
    coalitions: Tensor,
    select: Tensor,
    num_samples: int = 64,
    generator: Optional[torch.Generator] = None,
) -> InteractionEstimate:
    """:func:`sample_coalition_value` for the selected coalitions only (``select [G, C]`` bool); zeros elsewhere.

    ``φ̂([A]) = (1/M) Σ_m [v(S_m ∪ A) − v(S_m)]``, packed and evaluated in one call as in
    :func:`sample_interaction_subset`.
    """
    return _sample_subset(sample_coalition_value, game, coalitions, select, num_samples, generator)
