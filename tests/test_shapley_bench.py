"""The shapley benchmark runs end to end on tiny settings (no timing asserted: speed belongs to benchmarks)."""
from __future__ import annotations

import math


def test_shapley_benchmark_smoke(tiny_world):
    from loupe_bench.bench import load_all

    rec = load_all().get("shapley")(repeat=1, batch_size=4, train_batches=2, samples=(8,), reference_samples=64,
                                    fsa_regions=3, train_steps=10, world=str(tiny_world), num_samples=8,
                                    matched_ladder=(2, 8), matched_draws=1)
    for level in ("tsa", "fsa"):
        r = rec["levels"][level]
        assert r["coalitions"] > 0
        assert r["neural"]["time_s"] > 0 and -1 <= r["neural"]["spearman"] <= 1
        assert "sampling_M8" in r
        ma = r["matched_accuracy"]
        assert ma["matched_samples"] in (2, 8) and ma["neural_rho"] == r["neural"]["spearman"]
        assert ma["matched"] == (ma["mc_rho"] >= ma["neural_rho"])
    assert "exact" in rec["levels"]["fsa"] and "exact" not in rec["levels"]["tsa"]
    # exact vs a 64-sample reference: strongly rank-correlated on this small game
    assert rec["levels"]["fsa"]["exact"]["spearman"] > 0.5
    assert any(f["label"].endswith("speed-up vs sampling M=8") for f in rec["figures"])
    assert any("speed-up at matched accuracy" in f["label"] for f in rec["figures"])
    assert all(math.isfinite(f["value"]) for f in rec["figures"])


import pytest  # noqa: E402


@pytest.mark.parametrize("features", ["tower", "coalition", "image"])
def test_neural_predictor_is_timed_on_the_features_it_was_trained_on(tiny_world, features):
    """The bench's timed ``g_θ`` call computes the same features as training (``tsa_problem``) for the spec's
    ``tsa.features``: a mismatch would time (and rank) a predictor on inputs it never saw."""
    import torch

    from loupe_bench.bench.common import build_tiny, world_batches
    from loupe_bench.bench.shapley_bench import _neural_predictor, _problems

    model = build_tiny("loupe-tiny", 0, tiny_world, tsa__features=features).eval()
    batch = world_batches(model, 1, 4, 0, tiny_world)[0]
    tsa, _, emb = _problems(model, batch)
    seen = {}

    class Spy:
        def predict(self, f):
            seen["f"] = f
            return torch.zeros(f.shape[0]), None

    _neural_predictor(model, "tsa", tsa, emb, Spy())()
    torch.testing.assert_close(seen["f"], tsa.feats[tsa.valid])


# ------------------------------------------------------------------------------------ matched-accuracy speed-up
def _planted(num_games=24, n=10, seed=0):
    import torch

    from loupe_bench.shapley import AndOrGame

    gen = torch.Generator().manual_seed(seed)
    size = torch.randint(2, 5, (num_games,), generator=gen)
    is_and = torch.rand(num_games, generator=gen) < 0.5
    order = torch.rand(num_games, n, generator=gen).argsort(-1)
    planted = torch.zeros(num_games, n, dtype=torch.bool).scatter_(1, order, torch.arange(n) < size[:, None])
    game = AndOrGame(planted & is_and[:, None], planted & ~is_and[:, None])
    return game, planted[:, None], torch.where(is_and, 1.0, 1.0 - size.float())[:, None]


def test_matched_accuracy_zero_variance_game_matches_at_cheapest_rung():
    """On planted AND/OR games every Monte-Carlo sample is exact, so any M reaches the exact predictor's ρ = 1."""
    import torch

    from loupe_bench.bench.shapley_bench import matched_accuracy_speedup

    game, coal, exact = _planted()
    res = matched_accuracy_speedup(game, coal, lambda: exact, ladder=(8, 2, 4), reference_samples=64, draws=1,
                                   repeat=1, generator=torch.Generator().manual_seed(0))
    assert res.matched and res.matched_samples == 2 and res.ladder_rho == {2: 1.0}
    assert res.neural_rho == 1.0 and res.mc_rho == 1.0
    assert res.speedup == res.mc_time_s / res.neural_time_s > 0
    # a predictor with the sign convention flipped is beaten by every rung (ρ = −1): still the cheapest rung
    flipped = matched_accuracy_speedup(game, coal, lambda: -exact, ladder=(2, 4), reference_samples=64, draws=1,
                                       repeat=1)
    assert flipped.neural_rho == -1.0 and flipped.matched and flipped.matched_samples == 2


def test_matched_accuracy_exact_predictor_on_noisy_game_is_unmatched():
    """Exact values on a random game beat short Monte-Carlo: no rung reaches ρ_N, so the ratio is against the largest
    M and flagged matched=False; predictions one per valid coalition are accepted too."""
    import torch

    from loupe_bench.bench.shapley_bench import matched_accuracy_speedup
    from loupe_bench.shapley import TableGame, exact_coalition_value, exact_interaction

    gen = torch.Generator().manual_seed(1)
    n, g = 6, 8
    game = TableGame(torch.randn(g, 2**n, generator=gen, dtype=torch.float64), n)
    coal = torch.rand(g, 4, n, generator=gen) < 0.5
    coal[..., :2] = True
    valid = torch.ones(g, 4, dtype=torch.bool)
    valid[:, 3] = False
    for target, exact_fn in (("interaction", exact_interaction), ("coalition_value", exact_coalition_value)):
        exact = exact_fn(game, n, coal)
        res = matched_accuracy_speedup(game, coal, lambda: exact[valid], valid=valid, target=target, ladder=(2, 4),
                                       reference_samples=2048, draws=2, repeat=1, generator=gen)
        assert res.neural_rho > 0.95
        assert not res.matched and res.matched_samples == 4 and set(res.ladder_rho) == {2, 4}
        assert res.mc_rho == res.ladder_rho[4] < res.neural_rho
        assert res.speedup > 0
