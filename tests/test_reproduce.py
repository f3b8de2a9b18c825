"""The CI gate: `reproduce synthetic --quick` end to end (by the console script installed from the wheel into a
fresh venv), then `check` against the committed reference.

Also: the gate fails on a planted regression (a lowered metric, and a weakened model), and the report folder holds
the HTML (with LOUPE's explanations), Markdown and CSV.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from loupe_bench.cli.main import cli

pytestmark = [pytest.mark.slow, pytest.mark.reproduce]  # part of the default suite (CI); -m reproduce selects it

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference" / "synthetic-quick.json"


@pytest.fixture(scope="module")
def quick_run(installed_quick_run) -> Path:
    """A fresh `reproduce synthetic --quick` run by the installed console script (what a user runs; see conftest)."""
    return installed_quick_run


def test_quick_run_layout(quick_run):
    man = json.loads((quick_run / "reproduce.json").read_text())
    assert man["quick"] is True and man["seeds"] == [0]
    assert set(man["plan"]["models"]) == {"clip-tiny", "filip-tiny", "loupe-tiny"}
    for f in ("report.html", "report.md", "results.csv"):
        assert (quick_run / "report" / f).stat().st_size > 0
    html = (quick_run / "report" / "report.html").read_text()
    assert ">LOUPE explanations</h2>" in html and ">Training curves</h2>" in html
    assert html.count("data:image/png;base64,") >= 10 + 1 + 3   # task bar charts, curves, 3 explanations
    # every model has a result for every task the manifest lists
    results = list((quick_run / "results").rglob("*.json"))
    seen = {(json.loads(p.read_text())["model"]["name"], json.loads(p.read_text())["task"]["name"]) for p in results}
    for m in man["plan"]["models"]:
        for t in man["tasks"]:
            assert (m, t) in seen, (m, t)


def test_quick_run_passes_committed_reference(quick_run):
    assert REFERENCE.is_file(), "results/reference/synthetic-quick.json must be committed"
    res = CliRunner().invoke(cli, ["check", str(quick_run / "results"), "--reference", str(REFERENCE)])
    assert res.exit_code == 0, res.output
    assert "regressed" not in res.output.split("regression gate")[-1]


def test_models_learn(quick_run):
    """Well above chance: every trained model's test retrieval RSUM exceeds three times the chance level.

    Chance on the small world's test split (300 images, 5 captions each): R@k ≈ k/300 in both directions, so the
    chance RSUM is 2 · (1 + 5 + 10) / 300 ≈ 0.107. Measured in the 100-step quick run: CLIP 0.61, FILIP 0.96,
    LOUPE 0.53 (see the reference).
    """
    from loupe_bench.report.results_io import load_rows

    rows = {r.model: r.value for r in load_rows(quick_run / "results") if r.metric == "rsum"
            and r.task_type == "retrieval" and r.split == "test"}
    assert set(rows) == {"clip-tiny", "filip-tiny", "loupe-tiny"}
    chance = 2 * (1 + 5 + 10) / 300
    assert all(v > 3 * chance for v in rows.values()), rows


def test_planted_regression_fails_gate(quick_run, tmp_path):
    bad = tmp_path / "results"
    shutil.copytree(quick_run / "results", bad)
    # lower one gated metric of LOUPE by 0.2 (absolute, fraction units)
    ref = json.loads(REFERENCE.read_text())
    target = next(r for r in ref["rows"] if r["model"] == "loupe-tiny" and r["value"] > 0.25)
    for p in bad.rglob("*.json"):
        obj = json.loads(p.read_text())
        if (obj["model"]["name"], obj["task"]["name"], obj["task"]["split"]) == (target["model"], target["task"],
                                                                                   target["split"]):
            metric = obj["metrics"][target["metric"]]  # a result evaluated again lower: value and interval move
            metric["value"] -= 0.2
            if metric.get("ci95"):
                metric["ci95"] = [max(0.0, metric["ci95"][0] - 0.2), max(0.0, metric["ci95"][1] - 0.2)]
            p.write_text(json.dumps(obj))
    res = CliRunner().invoke(cli, ["check", str(bad), "--reference", str(REFERENCE)])
    assert res.exit_code == 1 and "regressed" in res.output


def test_weakened_model_fails_gate(quick_run, tmp_path):
    """An untrained FILIP evaluated (same protocol, same fingerprint) in place of the trained one fails the gate.
    Every result of the trained FILIP goes: two models under one name are refused, never gated together."""
    from loupe_bench.pipeline import QUICK_TASK_OVERRIDES, task_spec_mapping
    from loupe_bench.tasks.evaluate import evaluate

    bad = tmp_path / "results"
    shutil.copytree(quick_run / "results", bad)
    for p in bad.rglob("*.json"):
        obj = json.loads(p.read_text())
        if obj["model"]["name"] == "filip-tiny":
            p.unlink()
    spec = task_spec_mapping("synthetic-retrieval", QUICK_TASK_OVERRIDES)
    evaluate(["filip-tiny"], [spec], data_root=quick_run / "world", out_dir=bad / "weak", seed=0)
    res = CliRunner().invoke(cli, ["check", str(bad), "--reference", str(REFERENCE)])
    assert res.exit_code == 1 and "regressed" in res.output


def test_task_overrides_general_and_per_task():
    """General overrides change only keys a task spec has; ``TASK:key`` overrides reach one task, creating keys."""
    from loupe_bench.pipeline import task_spec_mapping

    ov = {"options.bootstrap_resamples": 7, "synthetic-captioning:options.use_java": False,
          "synthetic-grounding-grid:splits": ["test"]}
    cap = task_spec_mapping("synthetic-captioning", ov)
    det = task_spec_mapping("synthetic-detection-grid", ov)
    ret = task_spec_mapping("synthetic-retrieval", ov)
    grd = task_spec_mapping("synthetic-grounding-grid", ov)
    assert cap["options"]["bootstrap_resamples"] == 7 and cap["options"]["use_java"] is False
    assert det["options"]["bootstrap_resamples"] == 7 and "use_java" not in det["options"]
    assert "bootstrap_resamples" not in ret["options"]  # not a key of the retrieval spec: left alone
    assert grd["splits"] == ["test"] and ret["splits"] == ["test", "comptest"]


def test_default_plan_reference_is_current(quick_run):
    """`check` gates the default run too: the shipped `synthetic-default` reference was made by the default plan of
    this code (same task fingerprints on the same world, every model of the plan, three seeds)."""
    from loupe_bench.pipeline import default_plan, synthetic_tasks, task_spec_mapping
    from loupe_bench.report.gate import load_reference
    from loupe_bench.report.results_io import REFERENCE_ROWS
    from loupe_bench.specs import reference_path
    from loupe_bench.tasks import load_task

    ref = load_reference(reference_path("synthetic-default"))
    plan = default_plan(quick=False)
    assert ref["seeds"] == [0, 1, 2]
    assert {r["model"] for r in ref["rows"]} - set(REFERENCE_ROWS) == set(plan.models)
    for task in synthetic_tasks():
        spec = load_task(task_spec_mapping(task, plan.task_overrides))
        assert ref["fingerprints"][task] == spec.fingerprint(quick_run / "world"), task
