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
    # the semantics-level game is small: its exact targets are the reference; the token level's is Monte-Carlo
    fsa, tsa = rec["levels"]["fsa"], rec["levels"]["tsa"]
    assert fsa["reference"] == "exact" and tsa["reference"] == "monte-carlo (64 contexts)" and "exact" not in tsa
    # a 64-sample Monte-Carlo reference vs exact: strongly rank-correlated on this small game, yet not exact
    assert 0.5 < fsa["exact"]["monte_carlo_reference_spearman"] < 1
    assert any(f["label"].endswith("speed-up vs sampling M=8") for f in rec["figures"])
    assert any("speed-up at matched accuracy" in f["label"] for f in rec["figures"])
    assert all(math.isfinite(f["value"]) for f in rec["figures"])
    # no --run: a freshly initialised model, said in the record and on every figure
    assert rec["model_state"] == "untrained" and {f["model_state"] for f in rec["figures"]} == {"untrained"}
    cost = rec["levels"]["tsa"]["g_training"]
    assert cost["targets_s"] > 0 and cost["fit_s"] > 0 and cost["bench_s"] == cost["targets_s"] + cost["fit_s"]
    ma = rec["levels"]["fsa"]["matched_accuracy"]
    assert ma["draws"] == 1 and set(ma["kinds"]) == {"pooled", "image"}


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
        # two draws per rung: each rung's pooled ρ is their mean, inside its interval
        for m in (2, 4):
            mean, lo, hi = res.ladder[m]["pooled"]
            assert lo <= mean == res.ladder_rho[m] <= hi
        assert res.draws == 2 and res.kinds["pooled"]["speedup"] == res.speedup


# ------------------------------------------------------------------------------------- within-image ρ, crossings
def _naive_within(pred, ref, valid, min_coalitions=4):
    """Per row: scipy's Spearman over the row's valid coalitions; the mean over rows with enough of them and a
    defined ρ."""
    import warnings

    import numpy as np
    from scipy.stats import spearmanr

    rhos = []
    for g in range(valid.shape[0]):
        a, b = pred[g][valid[g]].numpy(), ref[g][valid[g]].numpy()
        if len(a) < min_coalitions:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant row: undefined, left out
            r = spearmanr(a, b).statistic
        if np.isfinite(r):
            rhos.append(r)
    return float(np.mean(rhos)) if rhos else float("nan")


def test_within_image_rho_matches_a_naive_per_row_loop():
    """Ties, rows with too few valid coalitions, a constant row, and predictions given one per valid coalition."""
    import torch

    from loupe_bench.bench.shapley_bench import within_image_rho

    gen = torch.Generator().manual_seed(3)
    g, c = 7, 12
    pred = (torch.randn(g, c, generator=gen) * 2).round()  # ties
    ref = pred + torch.randn(g, c, generator=gen)
    valid = torch.rand(g, c, generator=gen) < 0.7
    valid[0] = False
    valid[0, :3] = True  # 3 valid: left out
    pred[1] = 5.0  # constant: ρ undefined, left out
    got = within_image_rho(pred, ref, valid)
    want = _naive_within(pred, ref, valid)
    assert math.isfinite(want) and abs(got - want) < 1e-12
    assert abs(within_image_rho(pred[valid], ref, valid) - want) < 1e-12
    assert math.isnan(within_image_rho(pred, ref, torch.zeros(g, c, dtype=torch.bool)))


def test_within_image_rho_differs_from_pooled_when_images_are_offset():
    """Two images ranked perfectly inside each, but the second image's values all sit below the first's in the
    predictions and above them in the reference: within-image ρ = 1, pooled ρ far from it."""
    import torch

    from loupe_bench.bench.shapley_bench import rho_pair

    ref = torch.tensor([[1.0, 2, 3, 4], [11, 12, 13, 14]])
    pred = torch.tensor([[11.0, 12, 13, 14], [1, 2, 3, 4]])
    rho = rho_pair(pred, ref, torch.ones(2, 4, dtype=torch.bool))
    assert rho["image"] == 1.0
    # ranks: pred (5..8, 1..4) vs ref (1..4, 5..8): Σd² = 8·16 = 128, ρ = 1 − 6·128 / (8·63)
    assert abs(rho["pooled"] - (1 - 6 * 128 / (8 * 63))) < 1e-12


def test_crossing_interval_on_a_planted_ladder():
    """A fake ladder of 5 draws per M (m ± {0, d, 2d}: sd = d·√2.5, half-width h = t·d/√2) and a fake time table;
    the neural ρ 0.915 is reached by M=8's upper bound, M=16's mean and M=32's lower bound."""
    from scipy.stats import t as student_t

    from loupe_bench.bench.shapley_bench import crossing, crossing_speedup, mean_interval

    t4 = float(student_t.ppf(0.975, 4))
    d = 0.03 * math.sqrt(2) / t4  # h = 0.03 exactly
    means = {2: 0.80, 4: 0.86, 8: 0.89, 16: 0.94, 32: 0.96}
    ladder = {m: [mu - 2 * d, mu - d, mu, mu + d, mu + 2 * d] for m, mu in means.items()}
    summary = {m: mean_interval(v) for m, v in ladder.items()}
    for m, (mean, lo, hi) in summary.items():
        assert abs(mean - means[m]) < 1e-12 and abs(hi - mean - 0.03) < 1e-12 and abs(mean - lo - 0.03) < 1e-12
    cross = crossing(summary, 0.915)
    assert tuple(cross) == (8, 16, 32)
    times = {2: 1.0, 4: 2.0, 8: 4.0, 16: 8.0, 32: 16.0}
    res = crossing_speedup(cross, times, 0.5, 32)
    assert res["matched"] and res["matched_samples"] == 16 and res["speedup"] == 16.0
    assert res["speedup_interval"] == [8.0, 32.0] and res["samples_interval"] == [8, 32]
    # above every upper bound: nothing crosses; the largest rung gives a lower bound, unbounded above
    none = crossing(summary, 0.9999)
    assert tuple(none) == (None, None, None)
    res = crossing_speedup(none, times, 0.5, 32)
    assert not res["matched"] and res["speedup"] == 32.0 and res["speedup_interval"] == [32.0, None]
    # reached by M=16's upper bound and M=32's mean, by no lower bound (0.96 − 0.03 < 0.95)
    assert tuple(crossing(summary, 0.95)) == (16, 32, None)
    # one draw: no spread, the interval is the point; nan draws are left out
    assert mean_interval([0.5]) == (0.5, 0.5, 0.5) and mean_interval([0.5, float("nan")]) == (0.5, 0.5, 0.5)


def test_level_samples_are_the_ones_training_uses():
    from loupe_bench.bench.shapley_bench import level_samples
    from loupe_bench.models.loupe import LoupeCfg

    assert level_samples(LoupeCfg.from_dict({"num_samples": 32, "tsa": {"num_samples": 8}})) == {"tsa": 8, "fsa": 32}
    assert level_samples(LoupeCfg.from_dict({"num_samples": 16})) == {"tsa": 16, "fsa": 16}


def test_training_log_nsi_share_and_routing(tmp_path):
    """ℒ_NSI share = mean of nsi_time_s / step_time_s over the rows holding both; routing and monitor values are
    means over the last 10 % of rows; a row cut by a kill is skipped and counted."""
    import json

    from loupe_bench.bench.shapley_bench import read_training_log, routing_speedup

    rows = [{"step": i, "step_time_s": 0.2, "tsa_routed_fraction": 1.0 if i <= 18 else 0.25} for i in range(1, 21)]
    rows[4]["nsi_time_s"], rows[9]["nsi_time_s"] = 0.02, 0.06
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 21, "step_ti'
    (tmp_path / "log.jsonl").write_text(text)
    log = read_training_log(tmp_path)
    assert log["rows"] == 20 and log["skipped_rows"] == 1
    assert abs(log["nsi_step_share"] - (0.1 + 0.3) / 2) < 1e-12
    assert log["tsa_routed_fraction"] == 0.25 and log["fsa_routed_fraction"] is None
    assert log["tsa_nsi_r_corrected"] is None
    rows[-1]["tsa_nsi_r_corrected"] = 0.8
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_training_log(tmp_path)["tsa_nsi_r_corrected"] == 0.8
    (tmp_path / "log.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert read_training_log(tmp_path)["nsi_step_share"] is None
    assert routing_speedup(10.0, 1.0, 0.5) == 10.0 / 6.0 and routing_speedup(10.0, 1.0, 0.0) == 10.0


# --------------------------------------------------------------------------------------------- a trained run
def test_bench_loads_the_runs_trained_g_theta(trained_run):
    """--run measures the run's own g_θ (the weights in its model.safetensors, not a fresh one), on its recorded
    training data, with the run's phrase slots and regions (g_θ's features depend on them)."""
    import torch
    from safetensors.torch import load_file

    from loupe_bench.bench.shapley_bench import _setup

    setup = _setup(None, str(trained_run), None, 0, 4, None, None, 1, "cpu")
    saved = load_file(str(trained_run / "model.safetensors"))
    for level in ("tsa", "fsa"):
        for key, val in setup.g[level].state_dict().items():
            torch.testing.assert_close(val, saved[f"{level}_estimator.module.{key}"], rtol=0, atol=0)
    assert setup.info["model_state"] == f"trained ({trained_run}, step 20)"
    assert setup.info["world_from"] == "run.json" and setup.info["world"].endswith("dataset_synthetic.json")
    batch = setup.batches[-1]
    assert len(setup.batches) == 1 and batch["phrase_mask"].shape[1] == 6  # tiny-cpu: data.max_phrases 6
    assert setup.model.cfg.fsa.num_regions == 6 and setup.model.cfg.tsa.target_images == 4


def test_cli_bench_shapley_on_a_trained_run(trained_run, tmp_path):
    """`bench shapley --run` end to end: the record and every figure say `trained (RUN, step 20)`, each level is
    compared at the M its training uses, g_θ's cost is reported (not measured: the log has no per-term timing),
    and the README rows name the model state."""
    import json

    from loupe_bench.bench.readme import render_performance
    from loupe_bench.cli.main import main

    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "shapley", "--run", str(trained_run), "--out", str(out), "--repeat", "1",
              "--matched-draws", "2", "--set", "shapley.reference_samples=64", "--set", "shapley.train_batches=0",
              "--set", "shapley.matched_ladder=[2, 8]"])
    assert exc.value.code == 0
    rec = json.loads((out / "shapley.json").read_text())
    state = f"trained ({trained_run}, step 20)"
    assert rec["model_state"] == state and {f["model_state"] for f in rec["figures"]} == {state}
    tsa, fsa = rec["levels"]["tsa"], rec["levels"]["fsa"]
    assert (tsa["num_samples"], fsa["num_samples"]) == (8, 32)  # loupe.tsa.num_samples, loupe.num_samples
    assert tsa["speedup_vs_sampling"] == tsa["sampling_M8"]["time_s"] / tsa["neural"]["time_s"]
    assert "sampling_M32" in fsa and fsa["matched_accuracy"]["draws"] == 2
    assert tsa["g_training"]["bench_s"] == 0.0 and tsa["g_training"]["nsi_step_share"] is None
    assert tsa["g_training"]["routed_fraction"] is not None
    for level in (tsa, fsa):                           # the training monitor checked against the reference
        check = level["monitor_check"]
        assert check["draws"] == 2 and check["num_samples"] == level["num_samples"]
        assert -1.0 <= check["r_reference"] <= 1.0 and len(check["r_sampled"]) == 3
    assert any("corrected for the M=8 noise" in f["label"] for f in rec["figures"])
    assert any(f["label"].startswith("g_θ: ℒ_NSI share") and f["value"] == "not measured" for f in rec["figures"])
    rows = [r for r in render_performance(out).splitlines() if r.startswith("| `shapley`")]
    assert rows and all(f"; model {state}" in r for r in rows)


def test_cli_run_errors_are_one_line(tmp_path, trained_run, tiny_world, capsys):
    """A missing folder, a folder that is no run, a run of a model without LOUPE's neural module, and --run given
    twice: one line on stderr, exit 2, before anything is measured."""
    import torch

    from loupe_bench.cli.main import main
    from loupe_bench.train.engine import train_model

    threads = torch.get_num_threads()
    clip = tmp_path / "clip-run"
    try:
        train_model("clip-tiny", str(tiny_world), "tiny-cpu", clip, overrides={"steps": 1, "data.batch_size": 4,
                                                                          "threads": 1, "log.progress": False})
    finally:
        torch.set_num_threads(threads)
    (tmp_path / "empty").mkdir()
    cases = [([str(tmp_path / "missing")], "no such run folder"),
             ([str(tmp_path / "empty")], "not a loupe-bench training run"),
             ([str(clip)], "not of a LOUPE model with a neural interaction module"),
             ([str(trained_run), "--set", f"shapley.run={trained_run}"], "given twice")]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(["bench", "shapley", "--out", str(tmp_path / "out"), "--run", *args])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "shapley.json").exists()


def test_run_data_falls_back_to_world_only_when_unreadable(trained_run, tiny_world, tmp_path):
    """The run's recorded training data comes first; when its path is gone, --world; without it, one DataError."""
    import json
    import shutil

    from loupe_bench.bench.shapley_bench import _setup
    from loupe_bench.errors import DataError

    moved = tmp_path / "run"
    shutil.copytree(trained_run, moved)
    rec = json.loads((moved / "run.json").read_text())
    rec["data"] = {**rec["data"], "path": str(tmp_path / "gone.json"), "source": f"karpathy:{tmp_path}/gone.json"}
    (moved / "run.json").write_text(json.dumps(rec))
    with pytest.raises(DataError, match="is not readable here; pass --world"):
        _setup(None, str(moved), None, 0, 4, None, None, 0, "cpu")
    setup = _setup(None, str(moved), str(tiny_world), 0, 4, None, None, 0, "cpu")
    assert setup.info["world"] == str(tiny_world) and setup.info["world_from"].startswith("--world")
    assert setup.info["model_state"] == f"trained ({moved}, step 20)"
