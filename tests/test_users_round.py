"""What a user meets on a default reproduction's results: export of test + comptest, report --force, RSUM on the
0–600 scale, literal metric names (no emoji), the eval summary and compare at 80 columns."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from loupe_bench.cli.main import cli, main

SPEC = {"name": "clip-tiny", "family": "clip", "embed_dim": 32}


def _model(name: str = "clip-tiny") -> dict:
    return {"name": name, "spec": dict(SPEC, name=name), "checkpoint_sha256": "0" * 64,
            "source": f"spec {name} (initialised with seed 0)"}


def _metric(value: float, units: str = "fraction") -> dict:
    return {"value": value, "ci95": [value * 0.9, value * 1.1], "units": units}


def _result(metrics: dict, *, split: str = "test", model: str = "clip-tiny", task: str = "synthetic-retrieval",
            ttype: str = "retrieval") -> dict:
    return {
        "schema": "loupe-bench/result/v1", "model": _model(model),
        "task": {"name": task, "type": ttype, "dataset": "synthetic", "split": split, "spec": {},
                 "fingerprint": f"fp-{task}"},
        "metrics": metrics, "unavailable": {}, "extra": {}, "reference_rows": {}, "per_item": {}, "seed": 0,
        "code_version": "t", "packages": {}, "device": "cpu", "timings": {"total_s": 0.1},
        "timestamp": "2026-11-27T12:00:00Z",
    }


RETRIEVAL = {"i2t_R@1": _metric(0.3), "t2i_R@1": _metric(0.2), "rsum": _metric(1.7, "sum of fractions")}


def _results(folder: Path, models=("clip-tiny", "loupe-tiny")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for m in models:
        for split in ("test", "comptest"):
            (folder / f"{m}__synthetic-retrieval__{split}.json").write_text(
                json.dumps(_result(RETRIEVAL, split=split, model=m)))
    return folder


def _cli(args, columns: int = 80):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": str(columns)})


def _one_line_error(capsys, args, *needles) -> str:
    """Run the CLI entry point as a user does: exit 2 and one line on stderr holding every needle."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def test_export_of_test_and_comptest_splits(tmp_path):
    res = _cli(["export", "--format", "clip_benchmark", _results(tmp_path / "r"), "--out", tmp_path / "cb"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "cb").glob("*.json"))
    assert names == sorted(f"{d}_random-init-seed0_{m}_en_zeroshot_retrieval.json"
                           for d in ("synthetic", "synthetic_comptest") for m in ("clip-tiny", "loupe-tiny"))
    data = json.loads((tmp_path / "cb" / names[0]).read_text())
    # CLIP_benchmark's readers: a flat metrics block {name: value}
    assert data["metrics"] == {"text_retrieval_recall@1": 0.3, "image_retrieval_recall@1": 0.2}
    with open(tmp_path / "cb" / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted({(r["dataset"], r["split"]) for r in rows}) == [("synthetic", "test"),
                                                                  ("synthetic_comptest", "comptest")]


def test_export_split_option(tmp_path, capsys):
    results = _results(tmp_path / "r")
    res = _cli(["export", "--format", "clip_benchmark", results, "--out", tmp_path / "cb", "--split", "comptest"])
    assert res.exit_code == 0, res.output
    assert all("_comptest_" in p.name for p in (tmp_path / "cb").glob("*.json"))
    assert len(list((tmp_path / "cb").glob("*.json"))) == 2
    _one_line_error(capsys, ["export", "--format", "clip_benchmark", results, "--out", tmp_path / "cb2", "--split",
                             "val"], "'val'", "comptest, test")
    assert not (tmp_path / "cb2").exists()


def test_report_default_output_is_never_overwritten_without_force(tmp_path, capsys):
    results = _results(tmp_path / "r")
    assert _cli(["report", results, "--markdown", "--csv"]).exit_code == 0
    md = results / "report" / "report.md"
    before = md.read_text()
    md.write_text(before + "\nkept\n")
    line = _one_line_error(capsys, ["report", results, "--markdown", "--csv"], "exists", "--force")
    assert str(results / "report") in line
    assert md.read_text().endswith("kept\n")     # nothing written
    res = _cli(["report", results, "--markdown", "--csv", "--force"])
    assert res.exit_code == 0, res.output
    assert md.read_text() == before
    # --out to another folder needs no --force
    assert _cli(["report", results, "--markdown", "--csv", "--out", tmp_path / "o"]).exit_code == 0


def test_leaderboard_csv_and_rsum_on_the_0_600_scale(tmp_path):
    results = _results(tmp_path / "r")
    res = _cli(["report", results, "--markdown", "--csv", "--out", tmp_path / "o"])
    assert res.exit_code == 0, res.output
    assert "170.0" in res.output and "1.7 " not in res.output            # console
    md = (tmp_path / "o" / "report.md").read_text()
    assert "170.0" in md and "sum of %" in md                           # Markdown
    with open(tmp_path / "o" / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "rsum"]
    assert rows and all(float(r["display_value"]) == 170.0 and r["display_units"] == "sum of %" for r in rows)
    assert all(float(r["value"]) == 1.7 for r in rows)                   # the stored value is unchanged
    with open(tmp_path / "o" / "leaderboard.csv") as f:
        board = list(csv.DictReader(f))
    assert [r["model"] for r in board] == ["clip-tiny", "loupe-tiny"]
    assert board[0]["synthetic-retrieval/comptest/rsum [sum of %]"] == "170.0"
    assert board[0]["synthetic-retrieval/test/i2t_R@1 [%]"] == "30.0"


def test_check_prints_metric_names_literally(tmp_path):
    results = tmp_path / "r"
    results.mkdir()
    metrics = {"acc@0.5:anchor": _metric(0.5), "rsum": _metric(1.7, "sum of fractions")}
    (results / "a.json").write_text(json.dumps(_result(metrics, task="synthetic-grounding", ttype="grounding")))
    ref = tmp_path / "ref.json"
    assert _cli(["check", results, "--reference", ref, "--update"]).exit_code == 0
    res = _cli(["check", results, "--reference", ref, "--all"])
    assert res.exit_code == 0, res.output
    assert "⚓" not in res.output and "acc@0.5:anchor:" in res.output
    assert "reference 170.00" in res.output and "(sum of %)" in res.output   # RSUM on 0–600 in the check too


def test_eval_summary_keeps_names_distinguishable_at_80_columns():
    from rich.console import Console

    from loupe_bench.report.table import eval_summary

    names = ["acc@0.5:colour-and-shape-and-size-combined", "acc@0.5:colour-and-shape-and-size-combined-2",
             "acc@0.5:anchor"]
    result = _result({n: _metric(0.5) for n in names}, model="loupe-oracle-regions",
                     task="synthetic-phrase-grounding-gt-boxes", ttype="grounding")
    console = Console(width=80, record=True, emoji=False)
    for part in eval_summary([result], "results (1 files in out)", width=80):
        console.print(part)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "⚓" not in text
    joined = "".join(line.strip() for line in text.splitlines())
    assert all(n in joined for n in names)


def test_compare_on_synthetic_results_says_why_nothing_matches(tmp_path):
    res = _cli(["compare", "--paper", _results(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "synthetic" in res.output and "never matched" in res.output and "loupe-bench check" in res.output


def test_compare_all_reads_at_80_columns(tmp_path):
    res = _cli(["compare", "--paper", _results(tmp_path / "r"), "--all"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines[1:]) <= 80, max(lines[1:], key=len)
    assert len(lines) < 600
    assert any(line.startswith("retrieval · flickr30k") for line in lines)
