"""The shapley benchmark runs end to end on tiny settings (no timing asserted: speed belongs to benchmarks)."""
from __future__ import annotations

import math


def test_shapley_benchmark_smoke(tiny_world):
    from loupe_bench.bench import load_all

    rec = load_all().get("shapley")(repeat=1, batch_size=4, train_batches=2, samples=(8,), reference_samples=64,
                                    fsa_regions=3, train_steps=10, world=str(tiny_world), num_samples=8)
    for level in ("tsa", "fsa"):
        r = rec["levels"][level]
        assert r["coalitions"] > 0
        assert r["neural"]["time_s"] > 0 and -1 <= r["neural"]["spearman"] <= 1
        assert "sampling_M8" in r
    assert "exact" in rec["levels"]["fsa"] and "exact" not in rec["levels"]["tsa"]
    # exact vs a 64-sample reference: strongly rank-correlated on this small game
    assert rec["levels"]["fsa"]["exact"]["spearman"] > 0.5
    assert any(f["label"].endswith("speed-up vs sampling M=8") for f in rec["figures"])
    assert all(math.isfinite(f["value"]) for f in rec["figures"])
