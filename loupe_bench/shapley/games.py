"""Games: batched value functions over coalitions, plus the closed-form games used to test the estimators.

A *game* here is any callable ``v(masks) -> values`` with ``masks`` a bool tensor ``[G, Q, n]`` (``G`` independent
games, e.g. one per image of a batch; ``Q`` coalitions each; ``n`` players) returning ``[G, Q]`` float values. All
estimators in :mod:`loupe_bench.shapley` evaluate every mask they need in **one** call of the game, so a game should
be vectorised over ``G`` and ``Q`` (a masked mean or a masked max-matmul on cached features).

The LOUPE games (:class:`PooledCosineGame`, token level; :class:`PooledRegionPhraseGame` and
:class:`LateInteractionGame`, semantics level) are defined here too, because they are plain functions of cached,
detached features and are useful outside the model.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

Game = Callable[[Tensor], Tensor]
"""``v(masks[G, Q, n] bool) -> values[G, Q]``."""


def _check_masks(masks: Tensor, n: int) -> None:
    if masks.dim() != 3 or masks.shape[-1] != n:
        raise ValueError(f"masks must be [G, Q, {n}], got {tuple(masks.shape)}")


class AdditiveGame:
    """``v(S) = Σ_{i∈S} w_i`` (every interaction of ≥ 2 players is zero; ``φ_i = w_i``).

    Args:
        weights: ``[G, n]`` player weights.
    """

    def __init__(self, weights: Tensor):
        self.weights = weights

    def __call__(self, masks: Tensor) -> Tensor:
        _check_masks(masks, self.weights.shape[-1])
        return torch.einsum("gqn,gn->gq", masks.to(self.weights.dtype), self.weights)


class AndGame:
    """Unanimity game ("all parts needed") ``v(S) = 1[A ⊆ S]`` of a coalition ``A``.

    Closed forms (contexts ``S ⊆ N∖A``, so ``A ⊄ S``: ``v(S) = 0``, ``v(S ∪ A) = 1``, and for ``|A| ≥ 2`` also
    ``v(S ∪ {i}) = 0`` — alone, a member never completes ``A``, the other members being absent from ``N_i``):

    * ``φ_i = 1/|A|`` for ``i ∈ A`` else 0 (in the full game ``N``);
    * coalition value ``φ([A]|N_[A]) = Σ_{S⊆N∖A} p_{n'}(S) [v(S∪A) − v(S)] = Σ_S p_{n'}(S) = 1``;
    * ``φ(i|N_i) = Σ_S p_{n'}(S) [v(S∪{i}) − v(S)] = 0`` for ``|A| ≥ 2`` (``= 1`` when ``A = {i}``);
    * ``I([A]) = φ([A]|N_[A]) − Σ_{i∈A} φ(i|N_i) = 1 − 0 = 1`` for ``|A| ≥ 2``.

    Every Monte-Carlo sample of ``[A]`` itself is exact: ``Δ_m = 1`` (standard error 0).

    Args:
        coalition: ``[G, n]`` bool, the coalition ``A`` of each game (an empty ``A`` gives the constant game 1).
    """

    def __init__(self, coalition: Tensor):
        self.coalition = coalition.bool()

    def select(self, idx: Tensor) -> "AndGame":
        """The games ``idx`` only."""
        return AndGame(self.coalition[idx])

    def __call__(self, masks: Tensor) -> Tensor:
        _check_masks(masks, self.coalition.shape[-1])
        need = self.coalition[:, None, :]
        return ((masks | ~need).all(dim=-1)).to(torch.float32)


class OrGame:
    """Disjunction game ("any part is enough") ``v(S) = 1[S ∩ A ≠ ∅]`` of a coalition ``A``.

    Closed forms (contexts ``S ⊆ N∖A``, so ``S ∩ A = ∅``: ``v(S) = 0``, while ``v(S ∪ A) = 1`` and
    ``v(S ∪ {i}) = 1`` for every ``i ∈ A``):

    * ``φ_i = 1/|A|`` for ``i ∈ A`` else 0 (in the full game: the first member of ``A`` in a random order gets 1);
    * coalition value ``φ([A]|N_[A]) = Σ_{S⊆N∖A} p_{n'}(S) [v(S∪A) − v(S)] = 1``;
    * ``φ(i|N_i) = Σ_S p_{n'}(S) [v(S∪{i}) − v(S)] = 1`` for ``i ∈ A``;
    * ``I([A]) = φ([A]|N_[A]) − Σ_{i∈A} φ(i|N_i) = 1 − |A|`` (negative for ``|A| ≥ 2``: the members are
      redundant, each alone already does the whole job).

    Every Monte-Carlo sample of ``[A]`` itself is exact: ``Δ_m = 1 − |A|`` (standard error 0).

    Args:
        coalition: ``[G, n]`` bool, the coalition ``A`` of each game (an empty ``A`` gives the constant game 0).
    """

    def __init__(self, coalition: Tensor):
        self.coalition = coalition.bool()

    def select(self, idx: Tensor) -> "OrGame":
        """The games ``idx`` only."""
        return OrGame(self.coalition[idx])

    def __call__(self, masks: Tensor) -> Tensor:
        _check_masks(masks, self.coalition.shape[-1])
        return (masks & self.coalition[:, None, :]).any(dim=-1).to(torch.float32)


class AndOrGame:
    """Planted two-object game: "all parts of object A needed" + "any part of object B enough" + additive noise.

    ``v(S) = 1[A ⊆ S] + 1[S ∩ B ≠ ∅] + Σ_{i∈S} w_i``  with ``A ∩ B = ∅``.

    Every quantity below is linear in ``v``, so it is the sum of the three parts' values. For the coalition ``[A]``
    (contexts ``S ⊆ N∖A``; adding ``A`` or a member of ``A`` never changes ``1[S ∩ B ≠ ∅]``) and ``|A|, |B| ≥ 2``:

    * ``φ([A]|N_[A]) = 1 + Σ_{i∈A} w_i``,  ``φ(i|N_i) = 0 + w_i``  →  ``I([A]) = 1 > 0``;
    * ``φ([B]|N_[B]) = 1 + Σ_{i∈B} w_i``,  ``φ(i|N_i) = 1 + w_i``  →  ``I([B]) = 1 − |B| < 0``;
    * ``φ([A∪B]) = 2 + Σ_{i∈A∪B} w_i``, ``I([A∪B]) = 1 + (1 − |B|) = 2 − |B|`` (members of ``A`` contribute 0
      alone, members of ``B`` 1 each);
    * a noise player ``k ∉ A ∪ B``: ``φ([{k}]) = φ_k = w_k``; any coalition of noise players only has ``I = 0``.

    Players of ``A ∪ B`` typically carry ``w_i = 0`` (then ``φ([A]) = φ([B]) = 1``). An empty ``A`` (or ``B``)
    drops that part (a constant), so the same class gives pure AND, pure OR and mixed games per game index.

    Args:
        and_coalition: ``[G, n]`` bool, ``A`` of each game.
        or_coalition: ``[G, n]`` bool, ``B`` of each game (disjoint from ``A``).
        weights: optional ``[G, n]`` additive player weights ``w`` (default 0).
    """

    def __init__(self, and_coalition: Tensor, or_coalition: Tensor, weights: Optional[Tensor] = None):
        self.and_coalition = and_coalition.bool()
        self.or_coalition = or_coalition.bool()
        if (self.and_coalition & self.or_coalition).any():
            raise ValueError("the AND and OR coalitions of an AndOrGame must be disjoint")
        self.weights = torch.zeros(and_coalition.shape, dtype=torch.float32) if weights is None else weights

    def select(self, idx: Tensor) -> "AndOrGame":
        """The games ``idx`` only."""
        return AndOrGame(self.and_coalition[idx], self.or_coalition[idx], self.weights[idx])

    def __call__(self, masks: Tensor) -> Tensor:
        _check_masks(masks, self.and_coalition.shape[-1])
        v_and = (masks | ~self.and_coalition[:, None, :]).all(dim=-1).to(self.weights.dtype)
        v_or = (masks & self.or_coalition[:, None, :]).any(dim=-1).to(self.weights.dtype)
        return v_and + v_or + torch.einsum("gqn,gn->gq", masks.to(self.weights.dtype), self.weights)


class TableGame:
    """An arbitrary game given by its full value table ``v[g, s]`` over the ``2^n`` subsets (bit ``i`` of ``s`` = player ``i``).

    Used for random games in tests (``v(∅)`` is whatever the table says).
    """

    def __init__(self, table: Tensor, n: int):
        if table.shape[-1] != 2**n:
            raise ValueError(f"table must have 2^{n} = {2 ** n} entries per game, got {table.shape[-1]}")
        self.table = table
        self.n = n
        self._pow = 2 ** torch.arange(n)

    def __call__(self, masks: Tensor) -> Tensor:
        _check_masks(masks, self.n)
        idx = (masks.long() * self._pow.to(masks.device)).sum(-1)
        return torch.gather(self.table, 1, idx)


class PooledCosineGame:
    """LOUPE token-level value (ℒ_TSA): image–text matching of the kept patches.

    ``v(S) = cos( Σ_{i∈S} x_i , t )`` for ``S ≠ ∅`` and ``v(∅) = 0``, where ``x_i`` are the (projected, detached)
    patch-token embeddings and ``t`` the paired caption's pooled embedding. The cosine of the sum equals the cosine
    of the mean, so this is "cosine of the masked-mean-pooled patches with the text" (docs/loupe.md option
    (a), ``[I]``).

    Args:
        tokens: ``[G, n, D]`` patch embeddings of each game (image).
        text: ``[G, D]`` pooled caption embedding of each game.
    """

    def __init__(self, tokens: Tensor, text: Tensor):
        self.tokens = tokens
        self.text = torch.nn.functional.normalize(text, dim=-1)
        # cos(m X, t) = (m · X t) / ||m X||, and ||m X||^2 = m^T (X X^T) m: both are cheap in the player space.
        self.proj = torch.einsum("gnd,gd->gn", tokens, self.text)  # [G, n]
        self.gram = tokens @ tokens.transpose(1, 2)  # [G, n, n]

    def select(self, idx: Tensor) -> "PooledCosineGame":
        """The games ``idx`` only (cached projections sliced, not recomputed)."""
        out = PooledCosineGame.__new__(PooledCosineGame)
        out.tokens, out.text, out.proj, out.gram = self.tokens[idx], self.text[idx], self.proj[idx], self.gram[idx]
        return out

    def __call__(self, masks: Tensor) -> Tensor:
        _check_masks(masks, self.tokens.shape[1])
        m = masks.to(self.tokens.dtype)
        num = torch.einsum("gqn,gn->gq", m, self.proj)
        if self.tokens.shape[1] <= self.tokens.shape[2]:
            sq = (torch.bmm(m, self.gram) * m).sum(-1)
        else:
            sq = (torch.bmm(m, self.tokens) ** 2).sum(-1)
        return torch.where(masks.any(-1), num / sq.clamp_min(1e-12).sqrt(), torch.zeros_like(num))


class LateInteractionGame:
    """LOUPE semantics-level value (ℒ_FSA): bidirectional late interaction among the regions and phrases in ``S``.

    Players ``0..K-1`` are regions, ``K..K+P-1`` phrases. With ``S_I``, ``S_T`` the regions and phrases in ``S``
    and ``s_ij = <h_i^I, h_j^T>``:

    ``v(S) = ½ [ mean_{i∈S_I} max_{j∈S_T} s_ij + mean_{j∈S_T} max_{i∈S_I} s_ij ]``, and ``v(S) = 0`` if
    ``S_I = ∅`` or ``S_T = ∅`` (docs/loupe.md, ``[I]``).

    Players marked absent in ``player_mask`` (padding phrases) are null players: they never enter ``S_I``/``S_T``,
    which leaves every other player's Shapley value and interaction unchanged.

    Args:
        sim: ``[G, K, P]`` region–phrase similarities.
        player_mask: optional ``[G, K+P]`` bool, False at padding players.
    """

    def __init__(self, sim: Tensor, player_mask: Optional[Tensor] = None):
        self.sim = sim
        self.k = sim.shape[1]
        self.p = sim.shape[2]
        self.player_mask = player_mask

    def select(self, idx: Tensor) -> "LateInteractionGame":
        """The games ``idx`` only."""
        return LateInteractionGame(self.sim[idx], None if self.player_mask is None else self.player_mask[idx])

    def __call__(self, masks: Tensor) -> Tensor:
        _check_masks(masks, self.k + self.p)
        if self.player_mask is not None:
            masks = masks & self.player_mask[:, None, :]
        mi = masks[..., : self.k]  # [G, Q, K]
        mt = masks[..., self.k :]  # [G, Q, P]
        both = mi[..., :, None] & mt[..., None, :]  # [G, Q, K, P]
        s = self.sim[:, None].expand(-1, masks.shape[1], -1, -1)
        neg = torch.finfo(s.dtype).min
        s = s.masked_fill(~both, neg)
        row = s.max(dim=-1).values  # best phrase of each region  [G, Q, K]
        col = s.max(dim=-2).values  # best region of each phrase  [G, Q, P]
        ni = mi.sum(-1)
        nt = mt.sum(-1)
        r = (row.masked_fill(~mi, 0.0)).sum(-1) / ni.clamp_min(1)
        c = (col.masked_fill(~mt, 0.0)).sum(-1) / nt.clamp_min(1)
        v = 0.5 * (r + c)
        return torch.where((ni > 0) & (nt > 0), v, torch.zeros_like(v))


class PooledRegionPhraseGame:
    """LOUPE semantics-level value (ℒ_FSA, ``fsa.value: pooled``): matching of the pooled regions and phrases in ``S``.

    Players ``0..K-1`` are regions, ``K..K+P-1`` phrases. With ``S_I``, ``S_T`` the regions and phrases in ``S``:

    ``v(S) = cos( Σ_{i∈S_I} r_i , Σ_{j∈S_T} p_j )``, and ``v(S) = 0`` if ``S_I = ∅`` or ``S_T = ∅``,

    where ``r_i = Σ_{n ∈ box_i} x_n`` is the **sum** of the (projected, L2-normalised, detached) ℒ_CMC-space patch
    tokens inside region ``i``'s box and ``p_j = mean_{l ∈ span_j} w_l`` the mean of phrase ``j``'s ℒ_CMC-space token
    embeddings (not normalised). Neither goes through a region or phrase projection, so the value does not read
    the parameters that ℒ_FSA's prediction trains (docs/loupe.md, "Semantics-level value function").

    Evaluated in the player space: with ``a = m_I``, ``b = m_T`` the 0/1 membership vectors,
    ``v = aᵀ C b / sqrt( (aᵀ G_r a) (bᵀ G_p b) )``, ``C = R Pᵀ``, ``G_r = R Rᵀ``, ``G_p = P Pᵀ`` (cached), so a mask
    costs ``O((K + P)²)``. A zero pooled vector (norm ``< 1e-6``) gives ``v = 0``.

    Pairwise interaction (the ℒ_FSA target): for the pair ``{i, K + j}`` with context ``S = ∅`` the Shapley term is
    ``v({i, j}) = cos(r_i, p_j)``; larger contexts measure what region ``i`` adds to phrase ``j`` beyond the other
    regions and phrases present (similar regions substitute for each other and share the credit).

    Players marked absent in ``player_mask`` (padding phrases) are null players: they never enter ``S_I``/``S_T``,
    which leaves every other player's Shapley value and interaction unchanged.

    Args:
        regions: ``[G, K, D]`` region vectors ``r_i``.
        phrases: ``[G, P, D]`` phrase vectors ``p_j``.
        player_mask: optional ``[G, K+P]`` bool, False at padding players.
    """

    def __init__(self, regions: Tensor, phrases: Tensor, player_mask: Optional[Tensor] = None):
        self.regions = regions
        self.phrases = phrases
        self.k = regions.shape[1]
        self.p = phrases.shape[1]
        self.player_mask = player_mask
        self.cross = regions @ phrases.transpose(1, 2)  # [G, K, P]
        self.gram_r = regions @ regions.transpose(1, 2)  # [G, K, K]
        self.gram_p = phrases @ phrases.transpose(1, 2)  # [G, P, P]

    def select(self, idx: Tensor) -> "PooledRegionPhraseGame":
        """The games ``idx`` only (cached products sliced, not recomputed)."""
        out = PooledRegionPhraseGame.__new__(PooledRegionPhraseGame)
        out.regions, out.phrases = self.regions[idx], self.phrases[idx]
        out.k, out.p = self.k, self.p
        out.player_mask = None if self.player_mask is None else self.player_mask[idx]
        out.cross, out.gram_r, out.gram_p = self.cross[idx], self.gram_r[idx], self.gram_p[idx]
        return out

    def __call__(self, masks: Tensor) -> Tensor:
        _check_masks(masks, self.k + self.p)
        if self.player_mask is not None:
            masks = masks & self.player_mask[:, None, :]
        mi = masks[..., : self.k].to(self.cross.dtype)  # [G, Q, K]
        mt = masks[..., self.k :].to(self.cross.dtype)  # [G, Q, P]
        num = (torch.bmm(mi, self.cross) * mt).sum(-1)
        nr2 = (torch.bmm(mi, self.gram_r) * mi).sum(-1)
        nt2 = (torch.bmm(mt, self.gram_p) * mt).sum(-1)
        ok = (nr2 > 1e-12) & (nt2 > 1e-12)
        v = num / (nr2 * nt2).clamp_min(1e-24).sqrt()
        return torch.where(ok, v, torch.zeros_like(v))
