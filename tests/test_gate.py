"""Regression gate: pass / regressed / improved / missing, fingerprints, tolerance from seed spread, --update."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from loupe_bench.errors import SpecError
from loupe_bench.report.gate import ToleranceConfig, build_reference, check, check_rows, update_reference


def _write_result(folder: Path, model: str, task: str, metrics: dict, seed: int = 0, fp: str = "fpA",
                  units: str = "fraction"):
    obj = {
        "schema": "loupe-bench/result/v1",
        "model": {"name": model, "spec": {}, "checkpoint_sha256": "0" * 64, "source": "runs/x"},
        "task": {"name": task, "type": "retrieval", "dataset": "synthetic", "split": "test", "spec": {},
                 "fingerprint": fp},
        "metrics": {k: {"value": v, "ci95": [v, v], "units": units} for k, v in metrics.items()},
        "unavailable": {}, "extra": {}, "seed": seed, "code_version": "t", "packages": {}, "device": "cpu",
        "timings": {}, "timestamp": "2026-11-27T12:00:00Z",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{model}__{task}__s{seed}.json").write_text(json.dumps(obj))


def _results(folder: Path, seed=0, r1=0.50, r5=0.80, ap=0.30, fp="fpA"):
    _write_result(folder, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": r1, "i2t_R@5": r5}, seed, fp)
    _write_result(folder, "loupe-tiny", "synthetic-detection", {"AP": ap}, seed, fp + "d")
    return folder


def _cli(args, env=None):
    from loupe_bench.cli.main import cli

    return CliRunner(env=env).invoke(cli, args)


def test_reference_from_seeds_records_spread(tmp_path):
    a = _results(tmp_path / "s0", seed=0, r1=0.50)
    b = _results(tmp_path / "s1", seed=1, r1=0.56)
    ref = build_reference([a, b], config=ToleranceConfig(k=3.0, abs_floor=0.01, rel_tol=0.0))
    row = [r for r in ref["rows"] if r["metric"] == "i2t_R@1"][0]
    assert row["value"] == pytest.approx(0.53)
    # sample std of (0.50, 0.56) = 0.0424264; abs_tol = 3 * std * sqrt(1 + 1/2) (a band for one new run)
    assert row["spread"] == pytest.approx(0.0424264, abs=1e-6)
    assert row["abs_tol"] == pytest.approx(3 * 0.0424264 * 1.5 ** 0.5, abs=1e-5)
    assert row["n_seeds"] == 2 and row["seeds"] == [0, 1]
    # equal seeds: the floor applies
    row5 = [r for r in ref["rows"] if r["metric"] == "i2t_R@5"][0]
    assert row5["spread"] == 0 and row5["abs_tol"] == pytest.approx(0.01)
    assert ref["fingerprints"] == {"synthetic-retrieval": "fpA", "synthetic-detection": "fpAd"}


def test_a_small_spread_is_floored_by_the_metrics_pooled_spread(tmp_path):
    """A model whose seeds happened to agree gets at least ``pool`` × the RMS spread of the same metric over the
    reference's models (here: two models, spreads 0 and 0.0424264 → RMS 0.03)."""
    dirs = []
    for seed, r1 in ((0, 0.50), (1, 0.56)):
        d = _results(tmp_path / f"s{seed}", seed=seed, r1=r1)
        _write_result(d, "filip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.40, "i2t_R@5": 0.7}, seed, "fpA")
        dirs.append(d)
    ref = build_reference(dirs, config=ToleranceConfig(k=3.0, abs_floor=0.0, rel_tol=0.0, pool=0.5))
    rows = {(r["model"], r["metric"]): r for r in ref["rows"]}
    steady = rows[("filip-tiny", "i2t_R@1")]
    assert steady["spread"] == 0
    pooled = ((0.0424264 ** 2 + 0.0) / 2) ** 0.5
    assert steady["abs_tol"] == pytest.approx(3 * 0.5 * pooled * 1.5 ** 0.5, abs=1e-5)
    own = rows[("clip-tiny", "i2t_R@1")]  # its own spread is above the floor
    assert own["abs_tol"] == pytest.approx(3 * 0.0424264 * 1.5 ** 0.5, abs=1e-5)


def test_statuses(tmp_path):
    ref = build_reference([_results(tmp_path / "ref")], config=ToleranceConfig(abs_floor=0.02, rel_tol=0.1))
    p = tmp_path / "ref.json"
    p.write_text(json.dumps(ref))
    # equal -> all pass
    rep = check(_results(tmp_path / "same"), p)
    assert {r.status for r in rep.rows} == {"pass"} and not rep.failed
    # planted drop beyond band: band(R@1) = max(0.02, 0.1*0.5) = 0.05
    rep = check(_results(tmp_path / "drop", r1=0.44), p)
    st = {r.metric: r.status for r in rep.rows}
    assert st["i2t_R@1"] == "regressed" and rep.failed
    # inside the band -> pass
    rep = check(_results(tmp_path / "small", r1=0.46), p)
    assert {r.status for r in rep.rows} == {"pass"}
    # improvement is not a failure
    rep = check(_results(tmp_path / "up", r1=0.60), p)
    st = {r.metric: r.status for r in rep.rows}
    assert st["i2t_R@1"] == "improved" and not rep.failed
    # missing row -> failure
    d = tmp_path / "miss"
    _write_result(d, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.5, "i2t_R@5": 0.8})
    rep = check(d, p)
    assert [r.status for r in rep.rows if r.metric == "AP"] == ["missing"] and rep.failed


def test_lower_is_better_metrics_flip(tmp_path):
    """The direction is the metric's registered one: a mean rank registered lower-is-better regresses when it grows,
    and the reference records that direction."""
    from loupe_bench.report.results_io import load_rows
    from loupe_bench.tasks.metric_registry import Metric, register_metric

    register_metric(Metric("gate_test_mean_rank", direction="lower", unit="count", description="a planted rank"))
    _write_result(tmp_path / "a", "clip-tiny", "t", {"gate_test_mean_rank": 10.0}, units="count")
    ref = build_reference([tmp_path / "a"], config=ToleranceConfig(abs_floor=0.5, rel_tol=0.0))
    assert ref["rows"][0]["higher_is_better"] is False and ref["rows"][0]["units"] == "count"
    _write_result(tmp_path / "b", "clip-tiny", "t", {"gate_test_mean_rank": 12.0}, units="count")
    assert check_rows(load_rows(tmp_path / "b"), ref).rows[0].status == "regressed"
    _write_result(tmp_path / "c", "clip-tiny", "t", {"gate_test_mean_rank": 8.0}, units="count")
    assert check_rows(load_rows(tmp_path / "c"), ref).rows[0].status == "improved"


def test_reference_row_disagreeing_with_the_registry_refused(tmp_path):
    """A reference that records another direction or unit than the metric's registered ones gates nothing."""
    from loupe_bench.errors import DataError
    from loupe_bench.report.gate import load_reference

    ref = build_reference([_results(tmp_path / "ref")])
    for field, value, needle in (("higher_is_better", False, "lower-is-better"), ("units", "score", "units")):
        bad = json.loads(json.dumps(ref))
        bad["rows"][0][field] = value
        p = tmp_path / f"bad-{field}.json"
        p.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=needle):
            load_reference(p)
    unknown = json.loads(json.dumps(ref))
    unknown["rows"][0]["metric"] = "mean_rank"
    (tmp_path / "unknown.json").write_text(json.dumps(unknown))
    with pytest.raises(DataError, match="unknown metric 'mean_rank'"):
        load_reference(tmp_path / "unknown.json")


def test_fingerprint_mismatch_refused(tmp_path):
    p = tmp_path / "ref.json"
    p.write_text(json.dumps(build_reference([_results(tmp_path / "ref")])))
    with pytest.raises(SpecError, match="fingerprint"):
        check(_results(tmp_path / "other", fp="fpB"), p)
    from loupe_bench.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["check", str(tmp_path / "other"), "--reference", str(p)])
    assert exc.value.code == 2


def test_cli_exit_codes_and_update(tmp_path):
    p = tmp_path / "ref.json"
    res = _cli(["check", str(_results(tmp_path / "s0")), "--reference", str(p), "--update",
                "--seeds-from", str(_results(tmp_path / "s1", seed=1, r1=0.52))])
    assert res.exit_code == 0, res.output
    ref = json.loads(p.read_text())
    assert ref["seeds"] == [0, 1] and len(ref["rows"]) == 3
    assert _cli(["check", str(tmp_path / "s0"), "--reference", str(p)]).exit_code == 0
    res = _cli(["check", str(_results(tmp_path / "bad", ap=0.05)), "--reference", str(p)])
    assert res.exit_code == 1 and "regressed" in res.output
    # a one-seed update keeps the tolerance measured from several seeds
    old_tol = {r["metric"]: r["abs_tol"] for r in ref["rows"]}
    update_reference([tmp_path / "s0"], p)
    new = {r["metric"]: r["abs_tol"] for r in json.loads(p.read_text())["rows"]}
    assert all(new[m] >= old_tol[m] for m in old_tol)


def test_check_output_fits_80_columns_and_names_the_failures_whole(tmp_path):
    """At 80 columns (CI logs) the output is a per-task · split count table plus the rows that did not pass, each
    with model, task, split and metric whole (no `…`), and every line fits; ``--all`` lists the passing rows too."""
    model, task = "loupe-oracle-regions", "synthetic-phrase-grounding-gt-boxes"
    metric = "part_interaction_positive:two-part"           # a fraction with a long name
    ref_dir, bad_dir = tmp_path / "ref", tmp_path / "bad"
    for d, v in ((ref_dir, 0.50), (bad_dir, 0.20)):
        _write_result(d, model, task, {metric: v, "acc@0.5": 0.7})
        _results(d)
    p = tmp_path / "ref.json"
    p.write_text(json.dumps(build_reference([ref_dir])))
    res = _cli(["check", str(bad_dir), "--reference", str(p)], env={"COLUMNS": "80"})
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert max(len(l) for l in lines) <= 80, max(lines, key=len)
    assert "…" not in res.output
    assert "4 pass, 1 regressed, 0 improved, 0 missing" in res.output
    head = [i for i, l in enumerate(lines) if l.strip() == f"{model} · {task} · test"]
    assert len(head) == 1  # the regressed row, whole, once
    tail = " ".join(lines[head[0] + 1:head[0] + 3])
    assert metric in tail and "reference 50.00" in tail and "value 20.00" in tail and "Δ -30.00" in tail
    # the count table: one line per task · split, names whole
    assert any(l.split()[:2] == [task, "test"] and l.split()[2:] == ["1", "1", "0", "0"] for l in lines)
    assert "i2t_R@1" not in res.output  # passing rows are counted, not listed
    full = _cli(["check", str(bad_dir), "--reference", str(p), "--all"], env={"COLUMNS": "80"})
    assert "i2t_R@1: reference 50.00, value 50.00" in full.output  # shown in % as in the reports
    assert max(len(l) for l in full.output.splitlines()) <= 80
