"""Shapley library against closed forms and naive permutation references."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from loupe_bench.errors import SpecError
from loupe_bench.shapley import (
    TARGETS,
    AdditiveGame,
    AndGame,
    AndOrGame,
    EstimatorConfig,
    LateInteractionGame,
    NeuralConfig,
    OrGame,
    PooledCosineGame,
    PooledRegionPhraseGame,
    TableGame,
    build_estimator,
    exact_coalition_value,
    exact_interaction,
    exact_shapley,
    sample_coalition_value,
    sample_coalition_value_subset,
    sample_contexts,
    sample_interaction,
    sample_interaction_subset,
    spearman,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def _naive_reduced(table, n, coalition):
    """(φ([A]|N_[A]), Σ_{i∈A} φ(i|N_i)) by building the reduced games explicitly and averaging over permutations."""
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
    return merged, alone


def _naive_interaction(table, n, coalition):
    """I([A]) = φ([A]|N_[A]) − Σ_{i∈A} φ(i|N_i), naively."""
    merged, alone = _naive_reduced(table, n, coalition)
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
    for step in range(60):
        game, coal, valid, x = _linear_game_setup(g, w)
        out = est(game, coal, valid, x, g)
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


# ------------------------------------------------------------------------------------------ coalition value φ([A])
def test_coalition_value_exact_naive_and_sampled():
    """φ([A]|N_[A]) against the explicit merged game; singletons are Shapley values; MC within 4 SE and cheaper."""
    g = torch.Generator().manual_seed(11)
    n = 5
    table = torch.randn(2, 2**n, generator=g, dtype=torch.float64)
    game = TableGame(table, n)
    sets = [(0, 1), (1, 2, 4), (3,), (0, 2, 3, 4)]
    coal = torch.stack([_mask(n, s, 2) for s in sets], dim=1)
    exact = exact_coalition_value(game, n, coal)
    for ci, s in enumerate(sets):
        assert exact[1, ci].item() == pytest.approx(_naive_reduced(table[1], n, s)[0], abs=1e-10)
    assert exact[:, 2].tolist() == pytest.approx(exact_shapley(game, n, 2)[:, 3].tolist(), abs=1e-10)
    est = sample_coalition_value(game, coal, 4000, g)
    assert ((est.mean - exact).abs() / est.stderr < 4).all()
    # the interaction call returns the same φ̂ from the same contexts, and the value alone needs 2 masks per context
    both = sample_interaction(game, coal, 64, torch.Generator().manual_seed(3), with_value=True)
    alone = sample_coalition_value(game, coal, 64, torch.Generator().manual_seed(3))
    assert torch.allclose(both.value, alone.mean) and torch.allclose(both.value_stderr, alone.stderr)
    # the interaction evaluates only the M (|A| + 2) masks each coalition needs (sizes 2, 3, 1, 4), in 2 games
    assert alone.num_evals == 2 * 2 * 4 * 64 and both.num_evals == 2 * 64 * sum(len(s) + 2 for s in sets)
    assert sample_interaction(game, coal, 8).value is None


def test_coalition_value_subset_scatters_selected():
    coal = torch.tensor([[[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]]], dtype=torch.bool).expand(2, -1, -1).clone()
    game = OrGame(torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool))
    sel = torch.tensor([[True, False], [True, True]])
    est = sample_coalition_value_subset(game, coal, sel, 8, torch.Generator().manual_seed(0))
    assert est.mean.tolist() == [[1.0, 0.0], [0.0, 1.0]]  # OR game 0 is {0,1}: [A]={3,4} is a null coalition
    both = sample_interaction_subset(game, coal, sel, 8, torch.Generator().manual_seed(0), with_value=True)
    assert both.value.tolist() == [[1.0, 0.0], [0.0, 1.0]] and both.mean.tolist() == [[-1.0, 0.0], [0.0, -1.0]]


# ------------------------------------------------------------------------------------- planted AND / OR games
@pytest.mark.parametrize("members", [(0, 1), (1, 3, 4), (0, 1, 2, 3, 4)])
def test_or_game_closed_forms(members):
    """"Any part is enough": I([A]) = 1 − |A| < 0, φ([A]) = 1, φ_i = 1/|A| (and AND: φ([A]) = 1 too)."""
    a = _mask(6, members)
    game = OrGame(a)
    assert exact_interaction(game, 6, a[:, None]).item() == pytest.approx(1 - len(members))
    assert exact_coalition_value(game, 6, a[:, None]).item() == pytest.approx(1.0)
    assert exact_coalition_value(AndGame(a), 6, a[:, None]).item() == pytest.approx(1.0)
    phi = exact_shapley(game, 6)[0]
    for i in range(6):
        assert phi[i].item() == pytest.approx(1 / len(members) if i in members else 0.0)
    # Σ_{i∈A} φ(i|N_i) = |A|: each member alone (others of A absent) completes the OR
    table = game(torch.tensor([_bits(s, 6) for s in range(64)])[None]).double()[0]
    assert _naive_reduced(table, 6, members)[1] == pytest.approx(len(members))
    and_table = AndGame(a)(torch.tensor([_bits(s, 6) for s in range(64)])[None]).double()[0]
    assert _naive_reduced(and_table, 6, members)[1] == pytest.approx(0.0)  # AND: a member alone never completes A


def test_and_or_mixed_game_closed_forms():
    """v = AND over A + OR over B + additive noise: I([A]) = 1 > 0 > I([B]) = 1 − |B|, φ as in the docstring."""
    n = 9
    A, B, noise = (0, 1, 2), (3, 4), (5, 6, 7, 8)
    w = torch.zeros(1, n)
    w[0, list(noise)] = torch.tensor([0.5, -0.25, 0.75, 0.1])
    game = AndOrGame(_mask(n, A), _mask(n, B), w)
    sets = [A, B, A + B, (5,), (5, 6), (0, 3)]
    coal = torch.stack([_mask(n, s) for s in sets], dim=1)
    inter = exact_interaction(game, n, coal)[0].tolist()
    value = exact_coalition_value(game, n, coal)[0].tolist()
    assert inter[:5] == pytest.approx([1.0, 1.0 - len(B), 2.0 - len(B), 0.0, 0.0], abs=1e-6)
    assert value[:5] == pytest.approx([1.0, 1.0, 2.0, 0.5, 0.25], abs=1e-6)
    assert inter[0] > 0 > inter[1]
    est = sample_interaction(game, coal, 2000, torch.Generator().manual_seed(12), with_value=True)
    for got, se, ref in ((est.mean, est.stderr, inter), (est.value, est.value_stderr, value)):
        assert ((got[0] - torch.tensor(ref, dtype=torch.float64)).abs() <= 4 * se[0] + 1e-6).all()
    assert est.stderr[0, 5] > 0  # the cut coalition {a, b} is genuinely random: the 4-SE check is not vacuous
    with pytest.raises(ValueError):
        AndOrGame(_mask(n, A), _mask(n, (2, 3)))


def _planted_family(num_games, n, gen, noise=True):
    """Random pure AND / pure OR games (one per image) of sizes 2–4 and their planted coalitions.

    Returns (game, coalitions [G, 2, n] (the planted one, then an invalid padding slot), valid [G, 2], is_and [G],
    size [G], feats [G, 2, 8]: one-hot family, |A|/4, family × |A|/4, three nuisance dims).
    """
    is_and = torch.rand(num_games, generator=gen) < 0.5
    size = torch.randint(2, 5, (num_games,), generator=gen)
    order = torch.rand(num_games, n, generator=gen).argsort(-1)
    planted = torch.zeros(num_games, n, dtype=torch.bool).scatter_(1, order, torch.arange(n) < size[:, None])
    weights = torch.randn(num_games, n, generator=gen) * 0.3 * noise * ~planted
    game = AndOrGame(planted & is_and[:, None], planted & ~is_and[:, None], weights)
    coal = torch.stack([planted, planted], dim=1)
    valid = torch.tensor([True, False]).expand(num_games, -1).clone()
    fam = torch.stack([is_and.float(), (~is_and).float(), size / 4, is_and * size / 4, ~is_and * size / 4], -1)
    feats = torch.cat([fam, torch.randn(num_games, 3, generator=gen)], -1)[:, None].expand(-1, 2, -1).clone()
    return game, coal, valid, is_and, size, feats


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", ["exact", "sampling", "neural"])
def test_planted_and_or_games_through_estimators(name, target):
    """"All parts needed" → I = +1, "any part is enough" → I = 1 − |A| < 0; coalition values 1 for both.

    The neural estimator is fresh (warm-up: every coalition is sampled), so its targets are the sampled quantity.
    """
    gen = torch.Generator().manual_seed(13)
    n = 10
    game, coal, valid, is_and, size, feats = _planted_family(12, n, gen)
    est = build_estimator(name, feats.shape[-1], EstimatorConfig(num_samples=8, target=target))
    out = est(game, coal, valid, feats, gen)
    got = out.targets[:, 0].double()
    if target == "interaction":
        want = torch.where(is_and, 1.0, 1.0 - size.double())
        assert (got[is_and] > 0).all() and (got[~is_and] < 0).all()
    else:
        want = torch.ones(12, dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-5), (got, want)
    assert (out.targets[:, 1] == 0).all()  # invalid slot


def test_unknown_target_is_spec_error():
    with pytest.raises(SpecError, match="interaction.*coalition_value"):
        EstimatorConfig(target="shapley_value")
    cfg = EstimatorConfig()
    assert cfg.target == "interaction"
    cfg.target = "nope"
    with pytest.raises(SpecError):
        build_estimator("sampling", 4, cfg)


def test_neural_learns_and_or_sign_and_routes_less():
    """Train g_θ through the estimator's own training path on random AND/OR games (n = 16, |A| = 2–4); after
    warm-up its unrouted predictions μ have the sign of the interaction on held-out games and routing falls."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(14)
    n = 16
    cfg = EstimatorConfig(num_samples=4, neural=NeuralConfig(hidden=32, warmup_steps=5, gamma=0.25, holdout=4))
    est = build_estimator("neural", 8, cfg)
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    fractions = []
    for _ in range(60):
        game, coal, valid, *_, feats = _planted_family(32, n, gen)
        out = est(game, coal, valid, feats, gen)
        fractions.append(out.logs["routed_fraction"])
        opt.zero_grad()
        out.nsi.backward()
        opt.step()
    assert fractions[:5] == [1.0] * 5
    assert sum(fractions[-10:]) / 10 < 0.25, fractions
    est.eval()
    game, coal, valid, is_and, size, feats = _planted_family(64, n, gen)
    routed, _, _ = est.module.route(feats[:, 0])
    assert routed.float().mean() < 0.25
    with torch.no_grad():
        mu = est.module.predict(feats[:, 0])[0]
    assert (mu[is_and] > 0).all() and (mu[~is_and] < 0).all(), mu
    want = torch.where(is_and, 1.0, 1.0 - size.float())
    assert (mu - want).abs().mean() < 0.35
    out = est(game, coal, valid, feats, gen)  # unrouted coalitions are answered with μ
    assert torch.allclose(out.targets[:, 0][~routed], mu[~routed])


def _linear_game_setup(g, w):
    """One step's problem: 24 images, each an AND game of players {0, 1} scaled by ``s_g = 2 + x_g · w``
    (``I([{0,1}]) = s_g``) with random features ``x_g`` drawn from ``g``: ``(game, coalitions, valid, feats)``."""

    class Scaled:
        def __init__(self, s):
            self.s = s

        def __call__(self, masks):
            return (masks[..., 0] & masks[..., 1]).float() * self.s[:, None]

        def select(self, idx):
            return Scaled(self.s[idx])

    coal = torch.zeros(24, 1, 5, dtype=torch.bool)
    coal[..., :2] = True
    x = torch.randn(24, 1, 8, generator=g)
    return Scaled(2 + x[:, 0] @ w), coal, torch.ones(24, 1, dtype=torch.bool), x


def test_accuracy_gate_routes_everything_until_rho_is_reached():
    """``min_rho``: after warm-up every coalition is sampled while the prequential ρ of g_θ is below the gate; the
    gate opens once g_θ has learnt the game (ρ in the log, pooled and within game)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(9)
    w = torch.randn(8, generator=g)
    cfg = EstimatorConfig(num_samples=8, neural=NeuralConfig(hidden=32, warmup_steps=3, gamma=0.25, holdout=4,
                                                             min_rho=0.95, rho_window=64))
    est = build_estimator("neural", 8, cfg)
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    log = []
    for step in range(80):
        game, coal, valid, x = _linear_game_setup(g, w)
        out = est(game, coal, valid, x, g)
        log.append(out.logs)
        opt.zero_grad()
        out.nsi.backward()
        opt.step()
    gated = [l for l in log[3:] if l.get("nsi_rho", -1) < 0.95]
    assert gated and all(l["routed_fraction"] == 1.0 for l in gated)  # closed gate: everything sampled
    assert "nsi_rho" not in log[0]  # no prequential pairs during warm-up
    assert log[-1]["nsi_rho"] >= 0.95 and log[-1]["routed_fraction"] < 1.0  # learnt: the gate is open
    # the held-out window (4 a call after warm-up) gives nsi_r; the AND game's samples are exact (se 0): r̂ = r
    from loupe_bench.shapley import attenuation_corrected_r

    mod = est.module
    assert int(mod.held_count) == 64 and bool(mod.held_se.eq(0).all())
    assert (log[-1]["nsi_r"], log[-1]["nsi_r_corrected"]) == pytest.approx(
        attenuation_corrected_r(mod.held_pred, mod.held_true, mod.held_se))
    assert log[-1]["nsi_r_corrected"] == pytest.approx(log[-1]["nsi_r"]) and log[-1]["nsi_r"] >= 0.95
    # the window's ρ is the Spearman ρ of the recorded pairs (an independent recount)
    mod = est.module
    c = int(mod.rho_count)
    assert mod.window_rho() == pytest.approx(spearman(mod.rho_pred[:c], mod.rho_true[:c]))


def test_no_gate_by_default_and_window_ring():
    """``min_rho = 0`` never gates; the accuracy window is a ring of the last ``rho_window`` pairs."""
    from loupe_bench.shapley.neural import NeuralInteraction

    mod = NeuralInteraction(4, NeuralConfig(hidden=8, rho_window=5))
    assert mod.accurate()
    mod.record(torch.arange(3.0), torch.arange(3.0))
    mod.record(torch.tensor([10.0, 11.0, 12.0]), torch.tensor([3.0, 2.0, 1.0]))
    assert int(mod.rho_count) == 5
    assert sorted(mod.rho_pred.tolist()) == [1.0, 2.0, 10.0, 11.0, 12.0]  # the oldest pair was overwritten
    gated = NeuralInteraction(4, NeuralConfig(hidden=8, min_rho=0.5))
    assert not gated.accurate()  # no pairs yet: closed


def test_attenuation_corrected_r_recovers_the_noise_free_correlation():
    """Predictions correlated ρ with the true values, compared with values plus Gaussian noise of known standard
    error: the raw r is attenuated by √R (R = var(I) / (var(I) + se²)), the corrected r̂ recovers ρ. Checked against
    numpy's corrcoef on the noise-free values (an independent reference), with heteroscedastic noise as well."""
    import numpy as np

    from loupe_bench.shapley import attenuation_corrected_r

    rng = np.random.default_rng(0)
    n = 200000
    for rho, se_scale in ((0.9, 1.0), (0.6, 2.0), (0.85, 0.5)):
        truth = rng.normal(size=n)
        pred = rho * truth + np.sqrt(1 - rho**2) * rng.normal(size=n)
        se = se_scale * rng.uniform(0.5, 1.5, size=n)                     # each value's own standard error
        sampled = truth + se * rng.normal(size=n)
        r, r_hat = attenuation_corrected_r(torch.tensor(pred), torch.tensor(sampled), torch.tensor(se))
        clean = np.corrcoef(pred, truth)[0, 1]
        reliability = 1.0 / (1.0 + np.mean(se**2))
        assert r == pytest.approx(np.corrcoef(pred, sampled)[0, 1], abs=1e-9)
        assert r == pytest.approx(clean * np.sqrt(reliability), abs=0.02)  # attenuated
        assert r_hat == pytest.approx(clean, abs=0.02)                      # recovered
    # no noise: nothing to correct; all noise: nothing to say
    x = torch.arange(10.0)
    assert attenuation_corrected_r(x, 2 * x + 1, torch.zeros(10)) == pytest.approx((1.0, 1.0))
    r, r_hat = attenuation_corrected_r(x, x, torch.full((10,), 100.0))
    assert r == pytest.approx(1.0) and r_hat != r_hat


def test_the_window_keeps_standard_errors_and_logs_the_corrected_r():
    """The monitor records each sampled value's standard error beside it; the window's (r, r̂) is
    attenuation_corrected_r of the recorded triples (an independent recount)."""
    from loupe_bench.shapley import attenuation_corrected_r
    from loupe_bench.shapley.neural import NeuralInteraction

    mod = NeuralInteraction(4, NeuralConfig(hidden=8, rho_window=64))
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(40, generator=g)
    sampled = truth + 0.5 * torch.randn(40, generator=g)
    mod.record(truth + 0.2 * torch.randn(40, generator=g), sampled, torch.full((40,), 0.5))
    c = int(mod.rho_count)
    r, r_hat = mod.window_r_corrected()
    assert (r, r_hat) == pytest.approx(attenuation_corrected_r(mod.rho_pred[:c], mod.rho_true[:c], mod.rho_se[:c]))
    assert r_hat > r
    assert mod.rho_se[:c].eq(0.5).all()
