"""Shapley library against closed forms and naive permutation references."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from loupe_bench.errors import SpecError
from loupe_bench.shapley import (
    AdditiveGame,
    AndGame,
    EstimatorConfig,
    LateInteractionGame,
    NeuralConfig,
    PooledCosineGame,
    PooledRegionPhraseGame,
    TableGame,
    build_estimator,
    exact_interaction,
    exact_shapley,
    sample_contexts,
    sample_interaction,
    sample_interaction_subset,
    spearman,
)


def _bits(s, n):
    return [(s >> i) & 1 == 1 for i in range(n)]


def _naive_shapley(v, players):
    """Average marginal contribution over all orderings; ``v`` takes a frozenset of players."""
    out = {p: 0.0 for p in players}
    perms = list(itertools.permutations(players))
    for perm in perms:
        cur = frozenset()
        for p in perm:
            out[p] += v(cur | {p}) - v(cur)
            cur = cur | {p}
    return {p: x / len(perms) for p, x in out.items()}


def _naive_interaction(table, n, coalition):
    """I([A]) by building the merged game explicitly and averaging over permutations."""
    a = frozenset(coalition)
    rest = [i for i in range(n) if i not in a]

    def v_of(players):
        s = 0
        for p in players:
            for i in (a if p == "A" else [p]):
                s |= 1 << i
        return float(table[s])

    merged = _naive_shapley(v_of, rest + ["A"])["A"]
    alone = sum(_naive_shapley(v_of, rest + [i])[i] for i in a)
    return merged - alone


def _mask(n, members, g=1):
    m = torch.zeros(g, n, dtype=torch.bool)
    m[:, list(members)] = True
    return m


def test_additive_game_has_no_interaction():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 6, generator=g)
    game = AdditiveGame(w)
    coal = torch.stack([_mask(6, s, 2) for s in [(0, 1), (2, 3, 4), (0, 1, 2, 3, 4, 5), (5,)]], dim=1)
    assert torch.allclose(exact_interaction(game, 6, coal), torch.zeros(2, 4, dtype=torch.float64), atol=1e-6)
    est = sample_interaction(game, coal, 64, g)
    assert torch.allclose(est.mean, torch.zeros_like(est.mean), atol=1e-5)
    assert torch.allclose(exact_shapley(game, 6, 2), w.double(), atol=1e-6)


@pytest.mark.parametrize("members", [(0, 1), (1, 3, 4), (0, 1, 2, 3, 4)])
def test_and_game_interaction_is_one(members):
    a = _mask(5, members)
    game = AndGame(a)
    assert exact_interaction(game, 5, a[:, None]).item() == pytest.approx(1.0)
    est = sample_interaction(game, a[:, None], 16, torch.Generator().manual_seed(1))
    assert est.mean.item() == pytest.approx(1.0)
    phi = exact_shapley(game, 5)[0]
    for i in range(5):
        assert phi[i].item() == pytest.approx(1 / len(members) if i in members else 0.0)


def test_efficiency_and_naive_reference_on_random_games():
    g = torch.Generator().manual_seed(2)
    n = 5
    table = torch.randn(3, 2**n, generator=g, dtype=torch.float64)
    game = TableGame(table, n)
    phi = exact_shapley(game, n, 3)
    assert torch.allclose(phi.sum(-1), table[:, -1] - table[:, 0], atol=1e-10)
    ref = _naive_shapley(lambda s: float(table[1, sum(1 << i for i in s)]), list(range(n)))
    assert torch.allclose(phi[1], torch.tensor([ref[i] for i in range(n)], dtype=torch.float64), atol=1e-10)
    for coalition in [(0, 1), (1, 2, 4), (0, 2, 3, 4)]:
        got = exact_interaction(game, n, _mask(n, coalition, 3)[:, None])[2, 0].item()
        assert got == pytest.approx(_naive_interaction(table[2], n, coalition), abs=1e-10)


def test_symmetry():
    g = torch.Generator().manual_seed(3)
    n = 5
    table = torch.randn(1, 2**n, generator=g, dtype=torch.float64)
    for s in range(2**n):  # make players 1 and 3 interchangeable
        b = _bits(s, n)
        b[1], b[3] = b[3], b[1]
        t = sum(1 << i for i, x in enumerate(b) if x)
        table[0, t] = table[0, s] = min(t, s) * 0.1 + float(table[0, min(t, s)])
    phi = exact_shapley(TableGame(table, n), n)[0]
    assert phi[1].item() == pytest.approx(phi[3].item(), abs=1e-12)


def test_exact_limits_players():
    with pytest.raises(SpecError):
        exact_shapley(AdditiveGame(torch.zeros(1, 17)), 17)


def test_context_distribution_matches_shapley_weights():
    n = 4
    a = _mask(n, (0,))[:, None]  # N∖A has 3 players, n' = 4
    ctx = sample_contexts(a, 40000, torch.Generator().manual_seed(4))[0, 0]
    assert not ctx[:, 0].any()
    idx = (ctx.long() * (2 ** torch.arange(n))).sum(-1)
    freq = torch.bincount(idx, minlength=2**n).double() / idx.numel()
    for s in range(2**n):
        if s & 1:
            continue
        k = bin(s).count("1")
        p = math.factorial(k) * math.factorial(4 - k - 1) / math.factorial(4)
        assert freq[s].item() == pytest.approx(p, abs=0.01)


def test_sampling_within_four_standard_errors_and_converges():
    g = torch.Generator().manual_seed(5)
    n = 7
    table = torch.randn(4, 2**n, generator=g, dtype=torch.float64)
    game = TableGame(table, n)
    coal = torch.stack([_mask(n, s, 4) for s in [(0, 1), (2, 3, 4), (1, 5), (0, 2, 4, 6)]], dim=1)
    exact = exact_interaction(game, n, coal)
    est = sample_interaction(game, coal, 4000, g)
    z = ((est.mean - exact).abs() / est.stderr)
    assert (z < 4).all(), z
    errs = []
    for m in (16, 1024):
        reps = torch.stack([sample_interaction(game, coal, m, g).mean for _ in range(8)])
        errs.append(((reps - exact) ** 2).mean().sqrt().item())
    assert errs[1] < errs[0] / 3  # ~ 1/√M: expected ratio 8


def test_subset_sampling_only_selected():
    a = torch.tensor([[[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 1]]], dtype=torch.bool).expand(2, -1, -1)
    game = AndGame(torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool))
    sel = torch.tensor([[True, False, False], [False, False, True]])
    est = sample_interaction_subset(game, a.clone(), sel, 8, torch.Generator().manual_seed(0))
    assert est.mean.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_pooled_cosine_game_matches_loop():
    g = torch.Generator().manual_seed(6)
    tokens, text = torch.randn(2, 6, 4, generator=g), torch.randn(2, 4, generator=g)
    masks = torch.rand(2, 10, 6, generator=g) > 0.5
    masks[0, 0] = False
    got = PooledCosineGame(tokens, text)(masks)
    for gi in range(2):
        for q in range(10):
            m = masks[gi, q]
            ref = 0.0 if not m.any() else torch.cosine_similarity(tokens[gi][m].mean(0), text[gi], dim=0).item()
            assert got[gi, q].item() == pytest.approx(ref, abs=1e-5)
    # the n > D branch
    tokens2 = torch.randn(1, 6, 3, generator=g)
    a = PooledCosineGame(tokens2, text[:1, :3])(masks[:1])
    m = masks[0, 3]
    assert a[0, 3].item() == pytest.approx(torch.cosine_similarity(tokens2[0][m].mean(0), text[0, :3], dim=0).item(), abs=1e-5)


def test_late_interaction_game_matches_loop_and_null_players():
    g = torch.Generator().manual_seed(7)
    k, p = 3, 3
    sim = torch.randn(1, k, p, generator=g)
    masks = torch.rand(1, 20, k + p, generator=g) > 0.4
    got = LateInteractionGame(sim)(masks)
    for q in range(20):
        ri = [i for i in range(k) if masks[0, q, i]]
        tj = [j for j in range(p) if masks[0, q, k + j]]
        if not ri or not tj:
            ref = 0.0
        else:
            a = sum(max(sim[0, i, j].item() for j in tj) for i in ri) / len(ri)
            b = sum(max(sim[0, i, j].item() for i in ri) for j in tj) / len(tj)
            ref = 0.5 * (a + b)
        assert got[0, q].item() == pytest.approx(ref, abs=1e-6)
    # a padding phrase (null player) leaves interactions of real pairs unchanged
    small = LateInteractionGame(sim[:, :, :2])
    pad = LateInteractionGame(sim, torch.tensor([[True] * (k + 2) + [False]]))
    for i in range(k):
        for j in range(2):
            c_small = _mask(k + 2, (i, k + j))[:, None]
            c_pad = _mask(k + p, (i, k + j))[:, None]
            assert exact_interaction(small, k + 2, c_small).item() == pytest.approx(
                exact_interaction(pad, k + p, c_pad).item(), abs=1e-9
            )


def test_pooled_region_phrase_game_matches_loop_and_null_players():
    g = torch.Generator().manual_seed(11)
    k, p, d = 3, 3, 5
    reg, phr = torch.randn(2, k, d, generator=g), torch.randn(2, p, d, generator=g)
    masks = torch.rand(2, 24, k + p, generator=g) > 0.4
    game = PooledRegionPhraseGame(reg, phr)
    got = game(masks)
    for gi in range(2):
        for q in range(24):
            ri = masks[gi, q, :k]
            tj = masks[gi, q, k:]
            if not ri.any() or not tj.any():
                ref = 0.0
            else:
                ref = torch.cosine_similarity(reg[gi][ri].sum(0), phr[gi][tj].sum(0), dim=0).item()
            assert got[gi, q].item() == pytest.approx(ref, abs=1e-5)
    sub = game.select(torch.tensor([1]))
    assert torch.allclose(sub(masks[1:]), got[1:])
    # a padding phrase (null player, whatever its vector) leaves interactions of real pairs unchanged
    small = PooledRegionPhraseGame(reg[:1], phr[:1, :2])
    pad = PooledRegionPhraseGame(reg[:1], phr[:1], torch.tensor([[True] * (k + 2) + [False]]))
    for i in range(k):
        for j in range(2):
            a = exact_interaction(small, k + 2, _mask(k + 2, (i, k + j))[:, None]).item()
            b = exact_interaction(pad, k + p, _mask(k + p, (i, k + j))[:, None]).item()
            assert a == pytest.approx(b, abs=1e-9)


def test_pooled_region_phrase_game_closed_form_interactions():
    """One region, one phrase: ``I = cos(r, p)`` (the only context is ∅). Two orthogonal regions ``e1``, ``e2`` and
    a phrase ``e1``: ``I(r1, p) = ½ (1 + 1/√2)``, ``I(r2, p) = ½ (1/√2 − 1)`` (contexts ∅ and the other region)."""
    r = torch.tensor([[[1.0, 2.0, 0.0]]])
    ph = torch.tensor([[[0.5, -1.0, 3.0]]])
    one = exact_interaction(PooledRegionPhraseGame(r, ph), 2, _mask(2, (0, 1))[:, None]).item()
    assert one == pytest.approx(torch.cosine_similarity(r[0, 0], ph[0, 0], dim=0).item(), abs=1e-6)
    e = torch.eye(2)
    game = PooledRegionPhraseGame(e[None], e[None, :1])
    i1 = exact_interaction(game, 3, _mask(3, (0, 2))[:, None]).item()
    i2 = exact_interaction(game, 3, _mask(3, (1, 2))[:, None]).item()
    assert i1 == pytest.approx(0.5 * (1 + 2 ** -0.5), abs=1e-6)
    assert i2 == pytest.approx(0.5 * (2 ** -0.5 - 1), abs=1e-6)
    # a coalition with no phrase or no region is worth 0
    assert game(torch.tensor([[[True, True, False], [False, False, True]]])).abs().sum().item() == 0.0


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(30, generator=g), torch.randn(30, generator=g)
    b[:5] = b[5]
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-9)


def test_neural_module_learns_and_routes_less():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(9)
    w = torch.randn(8, generator=g)
    cfg = EstimatorConfig(num_samples=8, neural=NeuralConfig(hidden=32, warmup_steps=3, gamma=0.25, holdout=8))
    est = build_estimator("neural", 8, cfg)
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    fractions, rhos = [], []
    class Scaled:
        """One AND game of players {0, 1} per image, scaled by s_g: I([{0,1}]) = s_g."""

        def __init__(self, s):
            self.s = s

        def __call__(self, masks):
            return (masks[..., 0] & masks[..., 1]).float() * self.s[:, None]

        def select(self, idx):
            return Scaled(self.s[idx])

    coal = torch.zeros(24, 1, 5, dtype=torch.bool)
    coal[..., :2] = True
    for step in range(60):
        x = torch.randn(24, 1, 8, generator=g)
        out = est(Scaled(2 + x[:, 0] @ w), coal, torch.ones(24, 1, dtype=torch.bool), x, g)
        fractions.append(out.logs["routed_fraction"])
        if "nsi_spearman" in out.logs:
            rhos.append(out.logs["nsi_spearman"])
        opt.zero_grad()
        out.nsi.backward()
        opt.step()
    print(fractions[::10], rhos[::10])
    assert fractions[0] == 1.0
    assert sum(fractions[-10:]) / 10 < 0.5
    assert sum(rhos[-10:]) / 10 > 0.8
