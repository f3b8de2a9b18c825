"""Per-player Shapley values of a batched game by antithetic permutation sampling.

``φ_i = E_π [ v(P_π(i) ∪ {i}) − v(P_π(i)) ]`` with ``P_π(i)`` the players before ``i`` in a uniformly random order
``π``. One order costs ``n + 1`` evaluations (its prefixes ``∅, {π_1}, {π_1, π_2}, …, N``) and gives one marginal
contribution of every player; the marginals of one order sum to ``v(N) − v(∅)`` (efficiency holds exactly for
every estimate). Orders come in antithetic pairs ``π`` and its reverse: a player early in one is late in the other,
which cancels most of the position noise of redundant ("any one of them is enough") players.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .games import Game


class PlayerValues(NamedTuple):
    """Estimated per-player Shapley values.

    Attributes:
        mean: ``[G, n]`` estimates ``φ̂_i``.
        stderr: ``[G, n]`` standard errors over the antithetic pairs (``0`` with one pair).
        full: ``[G]`` ``v(N)``; ``empty``: ``[G]`` ``v(∅)`` (``Σ_i φ̂_i = v(N) − v(∅)`` exactly).
        num_evals: masks evaluated.
    """

    mean: Tensor
    stderr: Tensor
    full: Tensor
    empty: Tensor
    num_evals: int


def permutation_orders(num_games: int, n: int, pairs: int, generator: Optional[torch.Generator] = None,
                       device=None) -> Tensor:
    """``[G, 2·pairs, n]`` player orders: ``pairs`` uniform random permutations per game, each followed by its
    reverse."""
    keys = torch.rand(num_games, pairs, n, generator=generator).to(device)
    fwd = keys.argsort(dim=-1)
    return torch.stack([fwd, fwd.flip(-1)], dim=2).reshape(num_games, 2 * pairs, n)


def sample_player_values(game: Game, num_games: int, n: int, pairs: int = 1,
                         generator: Optional[torch.Generator] = None, device=None) -> PlayerValues:
    """Per-player Shapley values ``φ̂_i`` of ``num_games`` games on ``n`` players from ``pairs`` antithetic pairs
    of orders (:func:`permutation_orders`), every prefix of every order in **one** call of the game.

    ``φ̂_i = (1/2R) Σ_r Σ_{π ∈ {π_r, rev π_r}} [v(P_π(i) ∪ {i}) − v(P_π(i))]``; unbiased; the standard error is
    taken over the ``R`` pair means (which are independent)."""
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    orders = permutation_orders(num_games, n, pairs, generator, device)  # [G, Q, n]
    q = orders.shape[1]
    rank = orders.argsort(dim=-1)  # rank[g, q, i] = position of player i in order q
    steps = torch.arange(n + 1, device=orders.device)
    prefixes = rank[:, :, None, :] < steps[None, None, :, None]  # [G, Q, n + 1, n]: first k players of the order
    vals = game(prefixes.reshape(num_games, -1, n)).reshape(num_games, q, n + 1).to(torch.float64)
    gain = vals[:, :, 1:] - vals[:, :, :-1]  # gain[g, q, k] = marginal of the player at position k
    marg = torch.gather(gain, 2, rank)  # [G, Q, n]: marginal of player i in order q
    per_pair = marg.reshape(num_games, pairs, 2, n).mean(2)
    mean = per_pair.mean(1)
    if pairs > 1:
        stderr = per_pair.std(1, unbiased=True) / pairs ** 0.5
    else:
        stderr = torch.zeros_like(mean)
    return PlayerValues(mean, stderr, vals[:, 0, -1], vals[:, 0, 0], int(prefixes[..., 0].numel()))
