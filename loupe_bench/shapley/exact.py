"""Exact Shapley values and coalition interactions by enumerating all ``2^n`` subsets (tiny ``n`` only).

Every subset is evaluated in one batched call of the game; the sums below are then index arithmetic on the value
table ``V[g, s]`` (bit ``i`` of ``s`` is player ``i``).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from ..errors import SpecError
from .games import Game

MAX_EXACT_PLAYERS = 16


def all_subsets(n: int, device=None) -> Tensor:
    """``[2^n, n]`` bool: row ``s`` holds the players of subset ``s`` (bit ``i`` of ``s`` = player ``i``)."""
    idx = torch.arange(2**n, device=device)
    return ((idx[:, None] >> torch.arange(n, device=device)) & 1).bool()


def shapley_weights(n: int, dtype=torch.float64) -> Tensor:
    """``p(s) = s! (n − s − 1)! / n!`` for ``s = 0..n−1``: the probability of a context of size ``s``."""
    return torch.tensor(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)], dtype=dtype
    )


def value_table(game: Game, n: int, num_games: int, device=None) -> Tensor:
    """``[G, 2^n]`` values of every subset of every game (one batched call)."""
    if n > MAX_EXACT_PLAYERS:
        raise SpecError(f"exact Shapley enumeration is limited to {MAX_EXACT_PLAYERS} players, got {n}")
    masks = all_subsets(n, device)[None].expand(num_games, -1, -1)
    return game(masks).to(torch.float64)


def exact_shapley(game: Game, n: int, num_games: int = 1, device=None) -> Tensor:
    """Shapley values of every player: ``[G, n]``.

    ``φ(i | N) = Σ_{S ⊆ N∖{i}} p(S) [v(S ∪ {i}) − v(S)]``,  ``p(S) = |S|! (n − |S| − 1)! / n!``.
    """
    table = value_table(game, n, num_games, device)
    subsets = all_subsets(n, device)
    size = subsets.sum(-1)
    w = shapley_weights(n).to(table.device)
    idx = torch.arange(2**n, device=table.device)
    out = torch.empty(num_games, n, dtype=torch.float64, device=table.device)
    for i in range(n):
        without = idx[(idx >> i) & 1 == 0]
        out[:, i] = ((table[:, without | (1 << i)] - table[:, without]) * w[size[without]]).sum(-1)
    return out


def _reduced_terms(table: Tensor, n: int, coalition: Tensor) -> Tuple[Tensor, Tensor]:
    """``(φ([A]|N_[A]), Σ_{i∈A} φ(i|N_i))`` of one coalition (``[n]`` bool) for every game of ``table`` (``[G, 2^n]``).

    Both reduced games have ``n' = n − |A| + 1`` players and share the contexts ``S ⊆ N∖A``:

    ``φ([A]|N_[A]) = Σ_{S⊆N∖A} p_{n'}(S) [v(S∪A) − v(S)]``,
    ``Σ_{i∈A} φ(i|N_i) = Σ_{S⊆N∖A} p_{n'}(S) Σ_{i∈A} [v(S∪{i}) − v(S)]``,
    ``p_{n'}(S) = |S|! (n' − |S| − 1)! / n'!``. Both are 0 for the empty coalition.
    """
    members = torch.nonzero(coalition).flatten().tolist()
    a = len(members)
    if a == 0:
        z = torch.zeros(table.shape[0], dtype=table.dtype, device=table.device)
        return z, z
    abit = sum(1 << i for i in members)
    idx = torch.arange(2**n, device=table.device)
    ctx = idx[(idx & abit) == 0]  # every S ⊆ N∖A
    size = ((ctx[:, None] >> torch.arange(n, device=table.device)) & 1).sum(-1)
    w = shapley_weights(n - a + 1).to(table.device)[size]  # both reduced games have n' = n − |A| + 1 players
    base = table[:, ctx]
    merged = table[:, ctx | abit] - base
    alone = torch.zeros_like(base)
    for i in members:
        alone = alone + (table[:, ctx | (1 << i)] - base)
    return (merged * w).sum(-1), (alone * w).sum(-1)


def _interaction_from_table(table: Tensor, n: int, coalition: Tensor) -> Tensor:
    """``I([A]) = φ([A]|N_[A]) − Σ_{i∈A} φ(i|N_i)`` of one coalition (``[n]`` bool) for every game of ``table``;
    0 for coalitions of fewer than two players."""
    if int(coalition.sum()) < 2:
        return torch.zeros(table.shape[0], dtype=table.dtype, device=table.device)
    merged, alone = _reduced_terms(table, n, coalition)
    return merged - alone


def _per_coalition(game: Game, n: int, coalitions: Tensor, fn) -> Tensor:
    """``fn(table_g, n, coalition)`` of every coalition of every game, on one enumeration: ``[G, C]`` float64."""
    g, c, _ = coalitions.shape
    table = value_table(game, n, g, coalitions.device)
    out = torch.zeros(g, c, dtype=torch.float64, device=coalitions.device)
    for gi in range(g):
        for ci in range(c):
            out[gi, ci] = fn(table[gi : gi + 1], n, coalitions[gi, ci])[0]
    return out


def exact_interaction(game: Game, n: int, coalitions: Tensor) -> Tensor:
    """Exact multivariate coalition interaction (Zhang et al., AAAI 2021) of each coalition: ``[G, C]``.

    ``I([A]) = φ([A] | N_[A]) − Σ_{i∈A} φ(i | N_i)`` with ``N_[A] = (N∖A) ∪ {[A]}``, ``N_i = (N∖A) ∪ {i}``. Both
    reduced games have ``n' = n − |A| + 1`` players and share the contexts ``S ⊆ N∖A``, so

    ``I([A]) = Σ_{S⊆N∖A} p_{n'}(S) [ v(S∪A) − v(S) − Σ_{i∈A} (v(S∪{i}) − v(S)) ]``.

    ``I = 0`` for coalitions of fewer than two players.

    Args:
        game: the batched game.
        n: number of players.
        coalitions: ``[G, C, n]`` bool.
    """
    return _per_coalition(game, n, coalitions, _interaction_from_table)


def exact_coalition_value(game: Game, n: int, coalitions: Tensor) -> Tensor:
    """Exact coalition value: the Shapley value of the merged player ``[A]`` in the reduced game, ``[G, C]``.

    ``φ([A] | N_[A]) = Σ_{S⊆N∖A} p_{n'}(S) [v(S∪A) − v(S)]``,  ``N_[A] = (N∖A) ∪ {[A]}``,  ``n' = n − |A| + 1``,
    ``p_{n'}(S) = |S|! (n' − |S| − 1)! / n'!``.

    For ``A = {i}`` this is the plain Shapley value ``φ(i | N)``; 0 for the empty coalition.

    Args:
        game: the batched game.
        n: number of players.
        coalitions: ``[G, C, n]`` bool.
    """
    return _per_coalition(game, n, coalitions, lambda t, n_, a: _reduced_terms(t, n_, a)[0])


def exact_shapley_and_interaction(game: Game, n: int, coalitions: Tensor) -> Tuple[Tensor, Tensor]:
    """Both at once (one enumeration): ``(φ [G, n], I [G, C])``."""
    return exact_shapley(game, n, coalitions.shape[0], coalitions.device), exact_interaction(game, n, coalitions)
