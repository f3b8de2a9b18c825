"""Reports from result JSONs: table grouping, best marking, fingerprints never merged, CSV/Markdown/HTML."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from loupe_bench.errors import DataError
from loupe_bench.report.render import render_report
from loupe_bench.report.results_io import load_rows
from loupe_bench.report.table import build_table


def _write(folder: Path, model: str, task: str, metrics: dict, *, seed=0, fp="fp-ret", split="test",
           ci=True, unavailable=None):
    """One result file; each metric in its registered units, with a ±0.05 interval (``ci``) where it has one."""
    from loupe_bench.tasks.metric_registry import metric_info

    info = {k: metric_info(k) for k in metrics}
    obj = {
        "schema": "loupe-bench/result/v1",
        "model": {"name": model, "spec": {"family": model.split("-")[0]}, "checkpoint_sha256": "a" * 64,
                  "source": f"runs/{model}"},
        "task": {"name": task, "type": task.split("-")[-1], "dataset": "synthetic", "split": split,
                 "spec": {}, "fingerprint": fp},
        "metrics": {k: ({"value": v, "ci95": [v - 0.05, v + 0.05], "units": info[k].unit}
                        if ci and info[k].has_interval else {"value": v, "units": info[k].unit})
                    for k, v in metrics.items()},
        "unavailable": unavailable or {}, "extra": {"proposal_source": "grid", "ranks": list(range(3000))},
        "seed": seed,
        "code_version": "0.1.0", "packages": {}, "device": "cpu", "timings": {"total_s": 0.5},
        "timestamp": "2026-11-27T12:00:00Z",
    }
    folder.mkdir(parents=True, exist_ok=True)
    # sorted keys put "schema" after a long "extra", as evaluate() writes it
    (folder / f"{model}__{task}__{split}__{seed}__{fp}.json").write_text(json.dumps(obj, sort_keys=True))


@pytest.fixture()
def results(tmp_path):
    r = tmp_path / "results"
    _write(r, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.40, "t2i_R@1": 0.30})
    _write(r, "filip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.60, "t2i_R@1": 0.30})
    _write(r, "loupe-tiny", "synthetic-retrieval", {"i2t_R@1": 0.45, "t2i_R@1": 0.20})
    _write(r, "loupe-tiny", "synthetic-grounding", {"acc@0.5": 0.6}, fp="fp-g",
           unavailable={"SPICE": "models missing"})
    return r


def test_table_best_and_units(results):
    t = build_table(load_rows(results))
    assert t.models == ["clip-tiny", "filip-tiny", "loupe-tiny"]
    labels = [c.label for c in t.columns]
    i2t = labels.index("synthetic-retrieval/test/i2t_R@1")
    t2i = labels.index("synthetic-retrieval/test/t2i_R@1")
    assert t.best[i2t] == ["filip-tiny"]                       # [55, 65] is clear of loupe-tiny's [40, 50]
    assert t2i not in t.best                                   # a tie is no best
    cell = t.cell("clip-tiny", i2t)
    assert cell.value == pytest.approx(40.0) and cell.ci_low == pytest.approx(35.0)
    # a column with a single model has no "best"
    g = labels.index("synthetic-grounding/test/acc@0.5")
    assert g not in t.best


def test_seeds_averaged_with_std(tmp_path):
    r = tmp_path / "r"
    for seed, v in enumerate([0.2, 0.4, 0.6]):
        _write(r, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": v}, seed=seed)
    t = build_table(load_rows(r))
    cell = t.cell("clip-tiny", 0)
    assert cell.n == 3 and cell.value == pytest.approx(40.0) and cell.std == pytest.approx(20.0)


def test_fingerprints_never_merged(tmp_path):
    r = tmp_path / "r"
    _write(r, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.4}, fp="aaaaaaaa1111")
    _write(r, "filip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.9}, fp="bbbbbbbb2222")
    t = build_table(load_rows(r))
    assert len(t.columns) == 2
    assert {c.label for c in t.columns} == {"synthetic-retrieval@aaaaaaaa/test/i2t_R@1",
                                            "synthetic-retrieval@bbbbbbbb/test/i2t_R@1"}
    assert t.notes and "never merged" in t.notes[0]
    assert t.best == {}          # one model per column: no false "best" across protocols


def test_bad_result_files(tmp_path):
    r = tmp_path / "r"
    _write(r, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.4})
    f = next(r.glob("*.json"))
    obj = json.loads(f.read_text())
    obj["metrics"]["i2t_R@1"]["value"] = "high"
    f.write_text(json.dumps(obj))
    with pytest.raises(DataError, match="i2t_R@1"):
        load_rows(r)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no result JSON"):
        load_rows(tmp_path / "empty")


def test_report_files(results, tmp_path):
    # a run directory with a JSONL log beside the results -> training curves in the HTML
    run = tmp_path / "runs" / "clip-tiny"
    run.mkdir(parents=True)
    run.joinpath("log.jsonl").write_text("\n".join(
        json.dumps({"step": s, "loss": 2.0 / (s + 1), "terms": {"cmc": 1.0 / (s + 1)}, "lr": 1e-3}) for s in range(5)))
    paths = render_report(results, out_dir=tmp_path / "out", quiet=True)
    df = pd.read_csv(paths.csv)
    assert len(df) == 7 and set(df.columns) >= {"model", "task", "metric", "value", "ci_low", "ci_high", "fingerprint"}
    assert df.loc[(df.model == "filip-tiny") & (df.metric == "i2t_R@1"), "value"].item() == pytest.approx(0.6)
    md = paths.markdown.read_text()
    assert "**60.0 [55.0, 65.0]**" in md and "| clip-tiny |" in md
    html = paths.html.read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) >= 3            # two task bar charts + training curves
    for b in imgs:
        assert base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Training curves" in html and "SPICE" in html and "models missing" in html
    assert "http://" not in html and "https://" not in html      # self-contained
    assert 'class="best"' in html
    assert "no LOUPE run directory" in html


def test_report_cli(results, tmp_path):
    from loupe_bench.cli.main import cli

    res = CliRunner().invoke(cli, ["report", str(results), "--csv", "--out", str(tmp_path / "o")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "results.csv").is_file()
    assert not (tmp_path / "o" / "report.html").exists()
    assert "filip-tiny" in res.output and "★" in res.output


def test_explanation_plot_on_world_sample(tiny_world):
    import numpy as np
    from PIL import Image

    from loupe_bench.report.explain import plot_explanation, sample_images

    samples = sample_images(tiny_world, n=2)
    assert len(samples) == 2
    s = samples[0]
    # gold spans index the caption text
    assert [s.caption[a:b] for a, b in s.spans] == s.phrases
    img = np.asarray(Image.open(s.path).convert("RGB"))
    k, p = 4, len(s.phrases)
    png = plot_explanation(img, np.array([[0, 0, .5, .5], [.5, .5, 1, 1], [0, .5, .5, 1], [.2, .2, .8, .8]]),
                           np.array([.9, .5, .3, .1]), s.phrases, [0] * p, np.random.rand(k, p), caption=s.caption)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="shape"):
        plot_explanation(img, np.zeros((4, 4)), np.zeros(4), s.phrases, [0] * p, np.zeros((3, p)))


def test_console_summary_fits_80_columns_without_wrapping(tmp_path):
    """Six models with long names, three seeds, every headline metric of a task: rendered to an 80-column console
    (as when redirected to a file), no line is longer than 80 and every cell appears whole on one line."""
    import io

    from rich.console import Console

    from loupe_bench.report.render import HEADLINE_METRICS, compact_cell, console_tables
    from loupe_bench.tasks.metric_registry import metric_info

    r = tmp_path / "results"
    models = ["clip-tiny", "filip-tiny", "loupe-tiny", "loupe-no-fsa-tiny", "loupe-no-tsa-tiny",
              "loupe-sampling-tiny"]
    many = {m: 0.1234 + 0.1 * i for i, m in enumerate(HEADLINE_METRICS)}   # 9 metrics in one task: must split
    for k, m in enumerate(models):
        for seed in range(3):
            _write(r, m, "synthetic-retrieval-compositional", {x: v + 0.01 * (k + seed) for x, v in many.items()},
                   seed=seed, split="comptest")
    table = build_table(load_rows(r), metrics=HEADLINE_METRICS)
    buf = io.StringIO()
    console = Console(file=buf, width=80, color_system=None)
    tables = console_tables(table, width=80)
    for t in tables:
        console.print(t)
    text = buf.getvalue()
    lines = text.splitlines()
    assert max(len(l) for l in lines) <= 80, max(lines, key=len)
    for ci, col in enumerate(table.columns):
        head = metric_info(col.metric).display
        assert any(head in l for l in lines), head
        for m in models:
            cell = compact_cell(table.cell(m, ci))
            assert "±" in cell and "[" in cell        # mean ±std [CI] over 3 seeds: the widest cell form
            row = [l for l in lines if l.startswith(m + " ") and cell in l]
            assert row, (m, col.metric, cell)        # the model name and its whole cell on one line
    # the nine metrics did not fit one 80-column table: they were split into several under the same title
    assert text.count("model ") >= 2
    assert "synthetic-retrieval-compositional · comptest" in text


def test_report_console_output_fits_80_columns(results, tmp_path):
    import io

    from rich.console import Console

    buf = io.StringIO()
    render_report(results, html=False, markdown=False, csv=False, console=Console(file=buf, width=80, color_system=None))
    lines = buf.getvalue().splitlines()
    assert max(len(l) for l in lines) <= 80
    assert any(l.startswith("filip-tiny ") and "★ 60.0 [55.0,65.0]" in l for l in lines)


def test_discover_context_finds_seed_run_folders_without_a_manifest(tmp_path):
    """``results/`` beside ``runs/s<seed>/<model>/`` (a reproduction copied without its manifest): the runs are
    found by model name (lowest seed), beside plain ``runs/<model>/`` folders."""
    from loupe_bench.report.render import discover_context

    for rel in ("runs/s1/clip-tiny", "runs/s0/clip-tiny", "runs/s0/loupe-tiny", "runs/filip-tiny", "runs/s0/empty"):
        (tmp_path / rel).mkdir(parents=True)
        if not rel.endswith("empty"):
            (tmp_path / rel / "log.jsonl").write_text("{}\n")
    (tmp_path / "results").mkdir()
    runs = discover_context(tmp_path / "results")["runs"]
    assert runs == {"filip-tiny": tmp_path / "runs/filip-tiny", "clip-tiny": tmp_path / "runs/s0/clip-tiny",
                    "loupe-tiny": tmp_path / "runs/s0/loupe-tiny"}


def test_oracle_bars_are_hatched_and_labelled():
    """An oracle model's bars are hatched and its legend entry says "(oracle)"; other models' bars are plain."""
    from loupe_bench.report.plots import bar_figure
    from loupe_bench.report.table import Cell, Column, ResultTable
    from loupe_bench.tasks.metric_registry import metric_info

    cols = [Column("t", "test", "acc", "fp", "acc", "fraction", metric_info("acc"))]
    cells = {("clip-tiny", 0): Cell(40.0, 30.0, 50.0, 0.0, 1), ("loupe-oracle-regions", 0): Cell(60.0, 50.0, 70.0, 0.0, 1)}
    table = ResultTable(["clip-tiny", "loupe-oracle-regions"], cols, cells, {}, [], {}, ("loupe-oracle-regions",))
    ax = bar_figure(table, [0], "t").axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert "loupe-oracle-regions (oracle)" in labels and "clip-tiny" in labels
    bars = [c for c in ax.containers if hasattr(c, "patches")]
    assert [b.patches[0].get_hatch() for b in bars] == [None, "//"]


def test_rerendering_a_reproduction_keeps_its_title(tmp_path):
    """``report RESULTS --force`` on a reproduction's results keeps the reproduction's title (the manifest says its
    kind); other folders get ``loupe-bench report: <name>``."""
    from loupe_bench.report.render import REPRODUCTION_TITLES, default_title

    assert default_title(tmp_path / "results", {"kind": "synthetic"}) == REPRODUCTION_TITLES["synthetic"]
    assert default_title(tmp_path / "results", {"kind": "paper"}) == REPRODUCTION_TITLES["paper"]
    assert default_title(tmp_path / "mine", None) == "loupe-bench report: mine"
    assert default_title(tmp_path / "mine", {"kind": "other"}) == "loupe-bench report: mine"


def test_scale_figure_draws_one_line_per_model_and_seed_ranges():
    """The scale curve: one panel per quantity present, one line per model over the steps, an error bar spanning
    the seeds' min–max at the multi-seed point."""
    from loupe_bench.report.plots import scale_figure

    def v(mean, lo=None, hi=None):
        return {"mean": mean, "n": 1} if lo is None else {"mean": mean, "n": 3, "min": lo, "max": hi}

    rec = {"models": ["clip-tiny", "loupe-tiny"], "points": [
        {"steps": 300, "values": {"clip-tiny": {"native recall@10": v(0.1)}, "loupe-tiny": {"native recall@10": v(0.4)}}},
        {"steps": 3000, "values": {"clip-tiny": {"native recall@10": v(0.2, 0.1, 0.3)},
                                   "loupe-tiny": {"native recall@10": v(0.5, 0.45, 0.6)}}}]}
    fig = scale_figure(rec)
    ax = [a for a in fig.axes if a.get_visible()][0]
    assert ax.get_title() == "native recall@10" and len([a for a in fig.axes if a.get_visible()]) == 1
    lines = ax.get_lines()
    data = sorted((tuple(l.get_xdata()), tuple(l.get_ydata())) for l in lines if l.get_marker() == "o")
    assert data == [((300, 3000), (0.1, 0.2)), ((300, 3000), (0.4, 0.5))]
    spans = sorted(tuple(round(float(y), 6) for y in seg[:, 1]) for c in ax.containers
                   for coll in c.lines[2] for seg in coll.get_segments() if float(seg[0, 0]) == 3000)
    assert spans == [(0.1, 0.3), (0.45, 0.6)]  # the seeds' min–max at the 3-seed point
    assert scale_figure({"points": []}) is None
