"""The report's layout rules: metric order, the "best" rule, plot colours and legends, run metadata, the synthetic
scope statement, explanation figures and which LOUPE run is explained."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from loupe_bench.report.render import render_report
from loupe_bench.report.results_io import load_rows
from loupe_bench.report.table import Cell, best_models, build_table, metric_sort_key
from loupe_bench.tasks.metric_registry import Metric, register_metric

from test_report import _write

RETRIEVAL = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum")
# metrics registered without an order (they sort after every ordered one, by name), and a lower-is-better one
for _metric in (Metric("alpha_score", description="a planted metric"), Metric("zeta_score", description="planted"),
                Metric("train_loss", direction="lower", description="a planted loss: lower is better")):
    register_metric(_metric)


def _retrieval_results(folder, models=("clip-tiny", "filip-tiny", "loupe-tiny")):
    # written in a scrambled order, with metrics registered without an order
    names = ["rsum", "t2i_R@10", "zeta_score", "i2t_R@10", "t2i_R@1", "i2t_R@5", "alpha_score", "i2t_R@1", "t2i_R@5"]
    for k, m in enumerate(models):
        _write(folder, m, "synthetic-retrieval", {n: 0.1 + 0.01 * i + 0.2 * k for i, n in enumerate(names)})
    return folder


# ------------------------------------------------------------------------------------------------ metric order
def test_metric_order_in_every_format(tmp_path):
    from loupe_bench.report.plots import bar_figure
    from loupe_bench.report.render import HEADLINE_METRICS, column_groups, console_tables

    want = list(RETRIEVAL) + ["alpha_score", "zeta_score"]         # metrics without an order after, alphabetically
    r = _retrieval_results(tmp_path / "results")
    table = build_table(load_rows(r))
    assert [c.metric for c in table.columns] == want
    paths = render_report(r, out_dir=tmp_path / "out", quiet=True)
    md = paths.markdown.read_text().split("### ")[1]  # the first group: its table, split into parts when wide
    heads = [l for l in md.splitlines() if l.startswith("| model |")]
    assert re.findall(r"\| (\S+) \((?:sum of )?%\)", " ".join(heads)) == want   # RSUM: a sum of %
    assert all(len(l) <= 140 for l in md.splitlines() if l.startswith("|"))  # every part fits ~1,000 px
    html = paths.html.read_text()
    assert re.findall(r'<th class="m">([^<]+)</th>', html.split('<h2 id="results">Results</h2>')[1]) == want
    csv = pd.read_csv(paths.csv)
    assert list(dict.fromkeys(csv.metric)) == want
    fig = bar_figure(table, column_groups(table)[0][1], "t")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == want
    # the console summary uses the same rule: HEADLINE_METRICS is itself in that order
    assert sorted(HEADLINE_METRICS, key=metric_sort_key) == list(HEADLINE_METRICS)
    headline = build_table(load_rows(r), metrics=HEADLINE_METRICS)
    assert [headline.columns[c].metric for c in range(len(headline.columns))] == ["i2t_R@1", "t2i_R@1", "rsum"]
    assert len(console_tables(headline)) == 1


def test_metric_sort_key_breakdowns_and_numbers():
    names = ["proposal_recall@10", "acc@0.5:shape-only", "acc@0.5", "proposal_recall@5", "AP50", "AP", "acc@0.5:anchor",
             "CIDEr-D", "BLEU-4", "top5", "top1"]
    assert sorted(names, key=metric_sort_key) == [
        "top1", "top5", "AP", "AP50", "acc@0.5", "acc@0.5:anchor", "acc@0.5:shape-only", "BLEU-4", "CIDEr-D",
        "proposal_recall@5", "proposal_recall@10"]


# ------------------------------------------------------------------------------------------------ best rule
def _c(v, lo=None, hi=None):
    return Cell(v, lo, hi, 0.0, 1)


@pytest.mark.parametrize("cells,higher,want", [
    ([("a", _c(50, 45, 55)), ("b", _c(40, 35, 46))], True, []),           # overlapping intervals: no best
    ([("a", _c(50, 45, 55)), ("b", _c(40, 35, 44.9))], True, ["a"]),      # clear of the runner-up
    ([("a", _c(0.0, 0.0, 0.1)), ("b", _c(0.0, 0.0, 0.1))], True, []),     # the issue's `0.0 [0.0, 0.1]` tie
    ([("a", _c(3.0)), ("b", _c(2.0)), ("c", _c(1.0))], True, ["a"]),      # no intervals: strictly better
    ([("a", _c(3.0)), ("b", _c(3.0))], True, []),                          # no intervals, tie: no best
    ([("a", _c(3.0, 2.5, 3.5)), ("b", _c(2.0))], True, ["a"]),             # one interval missing: value rule
    ([("a", _c(5.0, 4.0, 6.0)), ("b", _c(9.0, 8.0, 10.0))], False, ["a"]),  # lower is better
    ([("a", _c(5.0, 4.0, 8.5)), ("b", _c(9.0, 8.0, 10.0))], False, []),
    ([("a", _c(5.0, 4.0, 6.0))], True, []),                                 # nothing to compare with
])
def test_best_models_rule(cells, higher, want):
    assert best_models(cells, higher) == want


def test_best_rule_in_tables_and_legends(tmp_path):
    from loupe_bench.report.render import CONSOLE_LEGEND, TABLE_LEGEND

    r = tmp_path / "results"
    _write(r, "clip-tiny", "synthetic-grounding", {"acc@0.5": 0.30, "train_loss": 0.9}, fp="g")
    _write(r, "filip-tiny", "synthetic-grounding", {"acc@0.5": 0.45, "train_loss": 0.2}, fp="g")
    _write(r, "loupe-tiny", "synthetic-grounding", {"acc@0.5": 0.48, "train_loss": 0.5}, fp="g")   # overlaps filip
    for f in r.glob("*.json"):                    # a reference row far above every model is never best
        o = json.loads(f.read_text())
        o["reference_rows"] = {"attribute-oracle": {"acc@0.5": {"value": 0.99, "units": "fraction"}}}
        f.write_text(json.dumps(o))
    t = build_table(load_rows(r))
    acc = [c.metric for c in t.columns].index("acc@0.5")
    loss = [c.metric for c in t.columns].index("train_loss")
    assert acc not in t.best                     # 48 [43, 53] vs 45 [40, 50]: not separated
    assert t.best[loss] == ["filip-tiny"]        # lower is better, [15, 25] clear of [45, 55]
    paths = render_report(r, out_dir=tmp_path / "out", quiet=True)
    md, html = paths.markdown.read_text(), paths.html.read_text()
    for text in (md, html.replace("&#x27;", "'")):
        assert "clear of the runner-up's" in text and "strictly better" in text
    assert "clear of the runner-up's" in TABLE_LEGEND and any("clear of the runner-up's" in l for l in CONSOLE_LEGEND)
    tables = md[md.index("### "):]
    assert tables.count("**") == 2 and "**20.0 [15.0, 25.0]**" in tables
    assert html.count('class="best"') == 1


def test_no_best_on_equal_displayed_values_without_intervals(tmp_path):
    """CIDEr 0.7 vs 0.7 vs 0.7 (no intervals, values differ only below the shown precision): nothing is bold."""
    assert best_models([("a", _c(0.71)), ("b", _c(0.68)), ("c", _c(0.70))], True) == []
    assert best_models([("a", _c(47.54)), ("b", _c(47.46))], True) == []
    assert best_models([("a", _c(47.56)), ("b", _c(47.46))], True) == ["a"]      # 47.6 vs 47.5: differs
    r = tmp_path / "results"
    for m, v in (("clip-tiny", 0.0071), ("filip-tiny", 0.0068), ("loupe-tiny", 0.0070)):
        _write(r, m, "synthetic-captioning", {"CIDEr-D": v}, fp="c")
    for f in r.glob("*.json"):                                     # no intervals, units "score"
        o = json.loads(f.read_text())
        o["metrics"]["CIDEr-D"] = {"value": o["metrics"]["CIDEr-D"]["value"] * 100, "units": "score"}
        f.write_text(json.dumps(o))
    paths = render_report(r, out_dir=tmp_path / "out", quiet=True)
    assert paths.table.best == {}
    assert 'class="best"' not in paths.html.read_text()
    assert "**" not in paths.markdown.read_text().split("### ", 1)[1]


def test_oracle_and_reference_rows_marked_never_best(tmp_path):
    """``loupe-oracle-regions`` (spec description "NOT LOUPE ...") and the reference rows are tagged in the console,
    Markdown and HTML, never best, and the report says what they are."""
    from rich.console import Console

    r = tmp_path / "results"
    for m, v in (("clip-tiny", 0.20), ("loupe-tiny", 0.50), ("loupe-oracle-regions", 0.95)):
        _write(r, m, "synthetic-phrase-grounding-native", {"acc@0.5": v}, fp="p")
    for f in r.glob("*.json"):
        o = json.loads(f.read_text())
        if o["model"]["name"] == "loupe-oracle-regions":
            o["model"]["spec"] = {"description": "NOT LOUPE - an upper bound that uses box labels"}
        o["reference_rows"] = {"chance": {"acc@0.5": {"value": 0.1, "units": "fraction"}}}
        f.write_text(json.dumps(o))
    console = Console(width=80, record=True, color_system=None)
    paths = render_report(r, out_dir=tmp_path / "out", console=console)
    t = paths.table
    assert t.oracles == ("loupe-oracle-regions",)
    assert t.best == {0: ["loupe-tiny"]}                          # 50 [45, 55] clear of 20; the oracle's 95 is not
    text = console.export_text()
    assert "loupe-oracle-regions (oracle)" in text and "chance (reference)" in text
    assert not re.search(r"oracle-regions.*★|chance.*★", text)
    md = paths.markdown.read_text()
    assert "| loupe-oracle-regions _(oracle)_ |" in md and "| chance _(reference)_ |" in md
    assert not re.search(r"\| (loupe-oracle-regions|chance) _\(\w+\)_ \|[^\n]*\*\*", md)
    html = paths.html.read_text()
    for row in re.findall(r'<tr class="(?:oracle|reference)">.*?</tr>', html):
        assert 'class="best"' not in row and '<span class="tag">' in row
    assert len(re.findall(r'<tr class="(?:oracle|reference)">', html)) == 2
    for text in (md, html):
        assert "Oracle rows" in text and "box labels" in text and "is ever marked best" in text


# ------------------------------------------------------------------------------------------------ plots
def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_one_colour_per_model_and_legends_outside(tmp_path):
    from matplotlib.colors import to_hex

    from loupe_bench.report.plots import bar_figure, curves_figure, model_colours
    from loupe_bench.report.render import column_groups

    colours = model_colours(["loupe-no-fsa", "clip-tiny", "chance", "loupe-tiny", "filip-tiny", "clip-tiny"])
    assert colours == model_colours(sorted(colours))           # deterministic, order-free
    assert "chance" not in colours and len(set(colours.values())) == 4
    assert "#000000" not in colours.values()                   # black is the reference rows'
    # two charts with different model subsets: each model keeps its colour
    r1 = _retrieval_results(tmp_path / "a", models=("clip-tiny", "loupe-tiny"))
    r2 = _retrieval_results(tmp_path / "b", models=("filip-tiny", "loupe-no-fsa", "loupe-tiny"))
    for r in (r1, r2):
        t = build_table(load_rows(r))
        fig = bar_figure(t, column_groups(t)[0][1], "t", colours)
        ax = fig.axes[0]
        for cont in ax.containers:
            if hasattr(cont, "patches") and cont.get_label() in colours:
                assert {to_hex(p.get_facecolor()) for p in cont.patches} == {colours[cont.get_label()]}
        fig.canvas.draw()
        leg = ax.get_legend().get_window_extent()
        assert not _overlap(leg, ax.get_window_extent())           # the legend does not cover the bars
    logs = {}
    for m in ("clip-tiny", "loupe-tiny"):
        p = tmp_path / "runs" / m / "log.jsonl"
        p.parent.mkdir(parents=True)
        extra = {"tsa_nsi_r_corrected": 0.7} if m == "loupe-tiny" else {}   # g_θ's accuracy: LOUPE logs it
        p.write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / (s + 1), "loss/cmc": 0.5, **extra})
                               for s in range(4)))
        logs[m] = p
    fig = curves_figure(logs, colours)
    for ax in fig.axes:
        for line in ax.get_lines():
            assert to_hex(line.get_color()) == colours[line.get_label()]
    assert [ax.get_title() for ax in fig.axes] == ["loss", "loss/cmc", "tsa_nsi_r_corrected"]
    assert [line.get_label() for line in fig.axes[2].get_lines()] == ["loupe-tiny"]
    fig.canvas.draw()
    leg = fig.legends[0]
    assert [t.get_text() for t in leg.get_texts()] == ["clip-tiny", "loupe-tiny"]
    assert min(t.get_fontsize() for t in leg.get_texts()) >= 9
    for ax in fig.axes:
        assert not _overlap(leg.get_window_extent(), ax.get_window_extent())


# ------------------------------------------------------------------------------------------------ metadata
def test_run_metadata_from_manifest_and_from_results(tmp_path):
    out = tmp_path / "repro"
    r = out / "results" / "s0"
    _write(r, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.4}, seed=0)
    _write(r, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.5}, seed=1)
    (out / "reproduce.json").write_text(json.dumps({
        "schema": "loupe-bench/reproduce/v1", "kind": "synthetic", "seeds": [0, 1], "quick": True,
        "plan": {"world_size": "small", "image_size": 64, "world_seed": 0, "recipe": "tiny-cpu",
                 "recipe_overrides": {"steps": 40}, "models": ["clip-tiny"]},
        "timings": {"stage/world": 5.04, "stage/train": 48.2, "stage/eval": 61.9, "stage/report": 5.1,
                    "total": 120.3},
        "environment": {"code_version": "0.3.0+gabc", "packages": {"torch": "2.4.1"}, "device": "cpu",
                        "machine": {"platform": "Linux-6.1", "processor": "x86_64", "cpu_count": 2}},
        "runs": {}, "world": "world"}))
    paths = render_report(out / "results", out_dir=tmp_path / "rep", quiet=True)
    md = paths.markdown.read_text()
    top = md.split("### ")[0]                                 # before the first table
    for want in ("**date**: 2026-11-27T12:00:00Z", "0.3.0+gabc", "0.1.0", "tiny-cpu with steps=40 (quick plan)",
                 "**seeds**: 0, 1", "Linux-6.1", "2 CPUs", "torch 2.4.1",
                 "world 5.0 s, train 48.2 s, eval 61.9 s, report 5.1 s; total 120.3 s", "**world size**: small, 64×64 px"):
        assert want in top, want
    html = paths.html.read_text()
    assert html.index("wall time per stage") < html.index('<h2 id="results">Results</h2>')
    assert "train 48.2 s" in html and "tiny-cpu with steps=40" in html

    # no manifest: the result JSONs (and the runs' recipe.yaml) say what they can
    r2 = tmp_path / "plain" / "results"
    _write(r2, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.4}, seed=3)
    run = tmp_path / "plain" / "runs" / "clip-tiny"
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text(json.dumps({"step": 0, "loss": 1.0}))
    (run / "recipe.yaml").write_text("name: tiny-cpu\nseed: 3\n")
    from loupe_bench.report.metadata import run_metadata
    from loupe_bench.report.results_io import load_results_raw

    meta = dict(run_metadata(load_results_raw(r2), None, {"clip-tiny": run}, None))
    assert meta["seeds"] == "3" and meta["code version"] == "0.1.0" and meta["recipe"] == "tiny-cpu"
    assert meta["machine"] == "device cpu" and meta["wall time per stage"].startswith("evaluation 0.5 s")
    assert "world size" not in meta                       # nothing records it: left out, not invented


def test_scope_statement_only_for_synthetic_results(tmp_path):
    syn = tmp_path / "syn"
    _write(syn, "clip-tiny", "synthetic-retrieval", {"i2t_R@1": 0.4})
    p = render_report(syn, out_dir=tmp_path / "o1", quiet=True)
    for text in (p.markdown.read_text(), p.html.read_text()):
        head = text[:text.index("Results")] if '<h2 id="results">' in text else text[:text.index("### ")]
        assert "not on the paper's benchmarks" in head.replace("&#x27;", "'") and "not comparable" in head
        assert "loupe-bench compare --paper RESULTS_DIR" in head
    real = tmp_path / "real"
    _write(real, "clip-tiny", "flickr30k-retrieval", {"i2t_R@1": 0.4})
    f = next(real.glob("*.json"))
    obj = json.loads(f.read_text())
    obj["task"]["dataset"] = "flickr30k"
    f.write_text(json.dumps(obj))
    p = render_report(real, out_dir=tmp_path / "o2", quiet=True)
    assert "compare --paper" not in p.markdown.read_text() and "compare --paper" not in p.html.read_text()


# ------------------------------------------------------------------------------------------------ explanations
def test_explanation_draws_best_regions_and_labels_without_overlap(tiny_world):
    import numpy as np
    from PIL import Image

    from loupe_bench.report.explain import explanation_figure, sample_images

    s = sample_images(tiny_world, n=1)[0]
    img = np.asarray(Image.open(s.path).convert("RGB"))
    rng = np.random.default_rng(0)
    k, p = 12, len(s.phrases)
    xy = rng.uniform(0, 0.5, (k, 2))
    boxes = np.concatenate([xy, xy + 0.4], axis=1)
    boxes[:6] = [0.1, 0.1, 0.5, 0.5]                 # six nearly identical top boxes: labels on them would collide
    scores = np.r_[np.full(6, 0.34) + np.arange(6) * 1e-3, np.linspace(0.2, 0.1, 6)]
    best = [11] + [0] * (p - 1)                       # a phrase's best region is the least confident one
    fig = explanation_figure(img, boxes, scores, s.phrases, best, rng.random((k, p)), max_regions=4)
    ax0, ax1 = fig.axes[0], fig.axes[1]
    drawn0 = {r.get_gid() for r in ax0.patches}
    drawn1 = {r.get_gid() for r in ax1.patches}
    assert {f"r{i}" for i in best} <= drawn0 and {f"r{i}" for i in best} <= drawn1   # what is referred to is drawn
    assert drawn0 == {"r5", "r4", "r3", "r2"} | {f"r{i}" for i in best}   # top 4 by confidence + phrases' best
    assert not ax0.texts and not ax1.texts                     # no label written on the images
    fig.canvas.draw()
    labels = [t for ax in (ax0, ax1) for t in ax.get_legend().get_texts()]
    assert any(t.get_text().startswith("r11  0.10") for t in labels)
    boxes_px = [t.get_window_extent() for t in labels]
    for i in range(len(boxes_px)):
        for j in range(i + 1, len(boxes_px)):
            assert not _overlap(boxes_px[i], boxes_px[j]), (labels[i].get_text(), labels[j].get_text())
    for ax in fig.axes:
        for leg_ax in (ax0, ax1):
            assert not _overlap(leg_ax.get_legend().get_window_extent(), ax.get_window_extent())
    with pytest.raises(ValueError, match="best region"):
        explanation_figure(img, boxes, scores, s.phrases, [k] * p, rng.random((k, p)))


def test_explained_run_is_the_main_loupe_model(tmp_path, monkeypatch):
    from loupe_bench.report import explain
    from loupe_bench.report.render import explained_run, main_loupe_model

    assert main_loupe_model() == "loupe-tiny"
    from loupe_bench.pipeline import MAIN_MODELS  # the report names the plans' main LOUPE model without importing them

    assert main_loupe_model() == next(m for m in MAIN_MODELS if "loupe" in m.lower())
    names = ["clip-tiny", "loupe-no-fsa", "loupe-sampling", "loupe-tiny", "loupe-no-tsa"]
    assert explained_run(names) == "loupe-tiny"                       # not the alphabetically first
    assert explained_run(["loupe-sampling", "loupe-no-tsa", "loupe-no-fsa", "clip"]) == "loupe-no-fsa"  # shortest
    assert explained_run(["clip-tiny", "filip-tiny"]) is None
    # render_report() explains that run
    r = _retrieval_results(tmp_path / "results")
    runs = {}
    for n in names:
        runs[n] = tmp_path / "runs" / n
        runs[n].mkdir(parents=True)
    world = tmp_path / "world"
    world.mkdir()
    seen = []
    monkeypatch.setattr(explain, "explanation_figures",
                        lambda run_dir, world_dir, n_images=3, label="": seen.append((run_dir, label)) or [])
    render_report(r, out_dir=tmp_path / "out", runs=runs, world_dir=world, quiet=True)
    assert seen == [(runs["loupe-tiny"], "loupe-tiny")]
