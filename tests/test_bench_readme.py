"""The README's performance table is the rendering of the committed benchmark JSON (it cannot go stale)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from loupe_bench.bench.readme import BEGIN, END, readme_block, render_performance, update_readme
from loupe_bench.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]


def test_committed_readme_block_equals_the_rendering_of_the_committed_json():
    block = readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block is not None, "README.md needs the performance markers"
    assert block == render_performance(ROOT / "results" / "benchmarks"), (
        "README performance block is stale: run `loupe-bench bench --render-only --readme README.md`")


def _record(folder: Path, name: str, figures, env=None, stamp="2026-12-02T01:00:00Z"):
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"name": name, "figures": figures, "timestamp": stamp,
           "environment": env or {"device": "cpu", "machine": {"cpu_count": 2}}}
    (folder / f"{name.replace('-', '_')}.json").write_text(json.dumps(rec))


def test_render_rows_targets_and_ratios_only(tmp_path):
    fig = lambda label, value, unit, target="", met=None: {"label": label, "value": value, "unit": unit,  # noqa: E731
                                                           "target": target, "met": met}
    _record(tmp_path, "alpha", [fig("speed-up a / b", 21.456, "x", ">= 20", True), fig("raw time", 3.0, "s"),
                                fig("rho", 0.87, "rho", ">= 0.9", False)])
    _record(tmp_path / "cuda-h200", "beta", [fig("ratio | piped", 0.5, "x")],
            env={"device": "cuda", "device_name": "NVIDIA H200"}, stamp="2026-11-20T00:00:00Z")
    text = render_performance(tmp_path)
    rows = [l for l in text.splitlines() if l.startswith("| `")]
    assert rows == [
        "| `alpha` | speed-up a / b | 21.5× | >= 20 | yes | 2-core CPU, 2026-12-02 |",
        "| `alpha` | rho | 0.87 | >= 0.9 | **no** | 2-core CPU, 2026-12-02 |",
        "| `beta` | ratio \\| piped | 0.5× |  |  | 1× NVIDIA H200, 2026-11-20 |",
    ]
    assert "raw time" not in text  # no target, not a ratio


def test_rows_name_the_model_state_when_recorded(tmp_path):
    """A figure (or its record) stating the model it was measured on names it in its row; others are unchanged."""
    fig = {"label": "tsa neural speed-up", "value": 3.0, "unit": "x", "target": "", "met": None}
    _record(tmp_path, "shapley", [{**fig, "model_state": "trained (runs/x, step 300)"}, {**fig, "label": "fsa"}])
    _record(tmp_path, "other", [fig])
    rec = json.loads((tmp_path / "other.json").read_text())
    (tmp_path / "other.json").write_text(json.dumps({**rec, "model_state": "untrained"}))
    rows = [l for l in render_performance(tmp_path).splitlines() if l.startswith("| `")]
    assert rows == [
        "| `other` | tsa neural speed-up; model untrained | 3× |  |  | 2-core CPU, 2026-12-02 |",
        "| `shapley` | tsa neural speed-up; model trained (runs/x, step 300) | 3× |  |  | 2-core CPU, 2026-12-02 |",
        "| `shapley` | fsa | 3× |  |  | 2-core CPU, 2026-12-02 |",
    ]


def test_update_readme_rewrites_only_the_block_atomically(tmp_path):
    _record(tmp_path / "b", "alpha", [{"label": "r", "value": 2.0, "unit": "x", "target": "", "met": None}])
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n{BEGIN}\nold table\n{END}\nafter\n")
    assert update_readme(readme, tmp_path / "b") is True
    text = readme.read_text()
    assert text.startswith("# T\n\nbefore\n" + BEGIN + "\n| benchmark |") and text.endswith(END + "\nafter\n")
    assert "old table" not in text
    assert update_readme(readme, tmp_path / "b") is False  # idempotent
    readme.write_text("no markers\n")
    with pytest.raises(SpecError, match="no performance block"):
        update_readme(readme, tmp_path / "b")


def test_cli_render_only(tmp_path, capsys):
    from loupe_bench.cli.main import cli

    _record(tmp_path / "b", "alpha", [{"label": "r", "value": 2.0, "unit": "x", "target": "", "met": None}])
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    res = CliRunner().invoke(cli, ["bench", "--render-only", "--out", str(tmp_path / "b"), "--readme", str(readme)])
    assert res.exit_code == 0, res.output
    assert "rewritten" in res.output and "| `alpha` | r | 2× |" in readme.read_text()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text("{not json")
    from loupe_bench.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--render-only", "--out", str(bad), "--readme", str(readme)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "x.json: not a benchmark record" in err and "Traceback" not in err
