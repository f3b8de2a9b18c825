"""The metric registry: one place says what a metric means, every report format and the gate read it.

A toy lower-is-better metric (a median rank, "MedR"-like) registered through the public API shows up in the
console and Markdown tables (marked lower-is-better, the lowest value best), is gated lower-is-better, and is present
in the exports; every metric of the committed references, task specs and paper tables resolves; an unknown metric is
an error, not a guess.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from loupe_bench.errors import DataError, SpecError
from loupe_bench.tasks.metric_registry import Metric, metric_info, register_metric, task_metrics

from test_registry import fresh_python
from test_report import _write

ROOT = Path(__file__).resolve().parents[1]

#: a median rank: lower is better, a count, shown as "MedR", placed right after RSUM
TOY = Metric("toy_MedR", direction="lower", unit="count", display="MedR", order=13,
             description="median rank of the first ground-truth caption (a planted test metric)")
register_metric(TOY)

#: (model, toy median rank); each is written with a ±0.05 interval, so clip's is clear below the others'
TOY_VALUES = (("clip-tiny", 4.0), ("filip-tiny", 12.0), ("loupe-tiny", 30.0))


def _toy_results(folder: Path, shift: float = 0.0) -> Path:
    for model, medr in TOY_VALUES:
        value = medr + (shift if model == "filip-tiny" else 0.0)
        _write(folder, model, "synthetic-retrieval", {"i2t_R@1": 0.4, "rsum": 2.0, "toy_MedR": value})
    return folder


def test_toy_metric_resolves_with_its_meaning():
    info = metric_info("toy_MedR")
    assert (info.direction, info.unit, info.display, info.higher_is_better) == ("lower", "count", "MedR", False)
    assert info.shown(7.0) == 7.0 and info.unit_label == "count"         # a count is shown as stored
    assert metric_info("toy_MedR:long-captions").display == "MedR:long-captions"      # a breakdown means the same


def test_toy_metric_in_the_console_and_markdown_tables(tmp_path):
    from rich.console import Console

    from loupe_bench.report.render import console_tables, render_report
    from loupe_bench.report.results_io import load_rows
    from loupe_bench.report.table import build_table

    r = _toy_results(tmp_path / "results")
    table = build_table(load_rows(r))
    assert [c.metric for c in table.columns] == ["i2t_R@1", "rsum", "toy_MedR"]      # its registered order
    col = [c.metric for c in table.columns].index("toy_MedR")
    assert table.best[col] == ["clip-tiny"]                   # the lowest median rank, interval clear: best
    assert table.cell("clip-tiny", col).value == 4.0          # a count is not scaled
    buf = io.StringIO()
    console = Console(file=buf, width=80, color_system=None)
    for part in console_tables(table):
        console.print(part)
    text = buf.getvalue()
    assert "MedR ↓" in text and "★ 4.0 [4.0,4.0]" in text and "MedR ↓: count" in text
    md = render_report(r, out_dir=tmp_path / "out", quiet=True, html=False).markdown.read_text()
    assert "| toy_MedR ↓ (count) |" in md and "**4.0 [4.0, 4.0]**" in md
    assert "↓ lower is better (toy_MedR): the best is the lowest" in md


def test_toy_metric_is_gated_lower_is_better(tmp_path):
    from loupe_bench.report.gate import ToleranceConfig, build_reference, check

    ref = build_reference([_toy_results(tmp_path / "ref")], config=ToleranceConfig(abs_floor=1.0, rel_tol=0.0))
    row = next(r for r in ref["rows"] if r["metric"] == "toy_MedR" and r["model"] == "filip-tiny")
    assert row["higher_is_better"] is False and row["units"] == "count"
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(ref))
    status = {(g.model, g.metric): g.status for g in check(_toy_results(tmp_path / "worse", shift=5.0), path).rows}
    assert status[("filip-tiny", "toy_MedR")] == "regressed"           # a larger median rank is worse
    status = {(g.model, g.metric): g.status for g in check(_toy_results(tmp_path / "better", shift=-5.0), path).rows}
    assert status[("filip-tiny", "toy_MedR")] == "improved"


def test_toy_metric_in_the_exports(tmp_path):
    from loupe_bench.report.export import export_results
    from loupe_bench.report.render import render_report

    r = _toy_results(tmp_path / "results")
    paths = render_report(r, out_dir=tmp_path / "out", quiet=True, html=False, markdown=False)
    csv = pd.read_csv(paths.csv)
    toy = csv[csv.metric == "toy_MedR"]
    assert len(toy) == 3 and set(toy.display_units) == {"count"} and sorted(toy.display_value) == [4.0, 12.0, 30.0]
    board = pd.read_csv(paths.leaderboard)
    assert "synthetic-retrieval/test/toy_MedR [count]" in board.columns
    out = tmp_path / "cb"
    export_results(r, "clip_benchmark", out)
    readme = (out / "README.md").read_text()
    assert "- `toy_MedR` (count, lower is better): in 3 exported result(s)" in readme
    for f in out.glob("*.json"):                      # CLIP_benchmark's metrics are fractions: recalls only
        assert json.loads(f.read_text())["metrics"] == {"text_retrieval_recall@1": 0.4}


def test_an_unknown_metric_is_an_error_not_a_guess(tmp_path):
    with pytest.raises(SpecError, match="unknown metric 'median_rank'"):
        metric_info("median_rank")                    # "rank" in its name once made it lower-is-better silently
    from loupe_bench.report.results_io import load_rows

    r = tmp_path / "results"
    _write(r, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.4})
    f = next(r.glob("*.json"))
    obj = json.loads(f.read_text())
    obj["metrics"]["median_rank"] = {"value": 3.0, "ci95": None, "units": "count"}
    f.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=r"metrics\['median_rank'\].*unknown metric 'median_rank'"):
        load_rows(r)
    obj["metrics"] = {"rsum": {"value": 2.0, "ci95": None, "units": "fraction"}}   # not its registered units
    f.write_text(json.dumps(obj))
    with pytest.raises(DataError, match="units 'fraction' are not the metric's registered units 'sum of fractions'"):
        load_rows(r)


def test_registration_is_loud():
    register_metric(TOY)                                              # the same meaning again: nothing happens
    with pytest.raises(SpecError, match="registered twice with different meanings"):
        register_metric(Metric("toy_MedR", direction="higher", unit="count"))
    for bad, needle in (({"direction": "down"}, "direction"), ({"unit": "points"}, "unknown unit"),
                        ({"interval": "bayes"}, "interval"), ({"precision": -1}, "precision")):
        with pytest.raises(SpecError, match=needle):
            Metric("toy_bad", **bad)
    for name, needle in (("toy:tagged", "':'"), ("toy_<n>", "placeholders"), ("toy_<k>_<k>", "placeholders")):
        with pytest.raises(SpecError, match=needle):
            register_metric(Metric(name))
    register_metric(Metric("toy_amb<k>"))
    register_metric(Metric("toy_amb<x>"))
    with pytest.raises(SpecError, match="several registered patterns"):
        metric_info("toy_amb3")


def test_patterns_fill_in_their_parameters():
    for name, display, order in (("i2t_R@5", "i2t R@5", 10), ("t2i_R@10", "t2i R@10", 11), ("acc@0.5", "acc@.5", 40),
                                 ("acc@0.5:anchor", "acc@.5:anchor", 40), ("top5:small", "top5:small", 20),
                                 ("proposal_recall@10", "proposal_recall@10", None), ("CIDEr-D", "CIDEr", 56)):
        info = metric_info(name)
        assert (info.name, info.display, info.order) == (name, display, order)
    assert metric_info("rsum").unit == "sum of fractions" and metric_info("rsum").shown(1.7) == pytest.approx(170.0)
    assert metric_info("CIDEr-D").unit == "score" and metric_info("AP").interval == "corpus"
    assert not metric_info("METEOR").has_interval and metric_info("mean_I:two-part").unit == "score"


# ------------------------------------------------------------------------------------------------ committed names
def _reference_rows():
    for path in sorted((ROOT / "results" / "reference").glob("*.json")):
        for row in json.loads(path.read_text())["rows"]:
            yield path.name, row


def test_every_metric_of_the_committed_references_resolves():
    rows = list(_reference_rows())
    assert rows
    for name, row in rows:
        info = metric_info(row["metric"])
        assert info.unit == row["units"], (name, row["metric"])
        assert info.higher_is_better == row.get("higher_is_better", True), (name, row["metric"])


def _declares(task_type: str, metric: str) -> bool:
    base = metric.partition(":")[0]
    return any(m.name == base or (m.is_pattern and m.matcher().fullmatch(base)) for m in task_metrics(task_type))


def test_every_task_spec_metric_is_declared_by_its_task_type():
    from loupe_bench.tasks import TASK_TYPES, list_tasks, load_adapters, load_task

    load_adapters()
    for task_type in TASK_TYPES:
        assert task_metrics(task_type), task_type
    for name, _ in list_tasks():
        spec = load_task(name)
        for metric in spec.metrics:
            metric_info(metric)
            assert _declares(spec.type, metric), (name, spec.type, metric)


def test_every_metric_of_the_paper_tables_and_the_console_headline_resolves():
    from loupe_bench.report.render import HEADLINE_METRICS

    for path in sorted((ROOT / "results" / "paper").glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text()) or []:
            if isinstance(entry, dict) and "metric" in entry:
                metric_info(entry["metric"])
    for metric in HEADLINE_METRICS:
        metric_info(metric)


def test_the_shipped_meanings_load_without_torch():
    """The report and the gate read what every metric of the committed references means from the torch-free
    catalog: no task adapter and no torch is imported (``loupe-bench check`` stays a fast command)."""
    code = ("import json, sys, glob\nfrom loupe_bench.tasks.metric_registry import metric_info\n"
            "import loupe_bench.report.gate\n"
            "names = {r['metric'] for f in glob.glob('results/reference/*.json') for r in json.load(open(f))['rows']}\n"
            "infos = [metric_info(n) for n in sorted(names)]\n"
            "heavy = [m for m in sys.modules if m == 'torch' or m.startswith('loupe_bench.tasks.retrieval')]\n"
            "print(len(infos) > 20, heavy)\n")
    assert fresh_python(code) == "True []"


def test_the_catalog_covers_every_shipped_task_type():
    """Importing every adapter (in a fresh interpreter, after the catalog) declares nothing the catalog has not:
    the shipped meanings are all in one module, and every registered task type declares its metrics there."""
    code = ("from loupe_bench.tasks.metric_registry import _State, metric_info\n"
            "metric_info('rsum')\n"
            "snap = lambda: (dict(_State.exact), set(_State.patterns), {k: list(v) for k, v in _State.by_task.items()})\n"
            "before = snap()\nfrom loupe_bench.tasks import load_adapters\n"
            "shipped = set(load_adapters().names())\n"
            "print(snap() == before, sorted(shipped - set(before[2])), len(shipped) > 9)\n")
    assert fresh_python(code) == "True [] True"


def test_a_task_type_from_elsewhere_declares_in_its_own_module(monkeypatch):
    """A metric the catalog lacks is looked up again after the task types' modules are imported: a task type
    outside the package declares its metrics where it is defined."""
    import loupe_bench.tasks as tasks
    from loupe_bench.tasks.metric_registry import _State, declare_metrics

    monkeypatch.setattr(_State, "adapters", False)
    monkeypatch.setattr(tasks, "load_adapters",
                        lambda: declare_metrics("toy-plugin", Metric("toy_plugin_score", unit="score")))
    assert metric_info("toy_plugin_score").unit == "score"
    assert [m.name for m in task_metrics("toy-plugin")] == ["toy_plugin_score"]
    with pytest.raises(SpecError, match="unknown metric 'toy_never'"):
        metric_info("toy_never")                       # loaded once; a name still missing is an error
