"""Issue 29, gathering results: models are told apart by identity, never by name; a result is never counted twice;
malformed results and references are one line (exit 2); names are escaped in every report format."""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from cli_run import one_line_error as _one_line_error, run_cli as _cli
from loupe_bench.errors import DataError
from loupe_bench.report.results_io import load_rows
from loupe_bench.report.table import build_table
from loupe_bench.tasks.results import check_interval, model_identity

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "synthetic-retrieval"
FP = "fp-retrieval"
SPEC = {"name": "clip-tiny", "family": "clip", "embed_dim": 32}





def _model(kind: str, name: str = "clip-tiny", seed: int = 0) -> dict:
    """The model record of a freshly initialised spec model or of a trained run folder, as ``eval`` writes it
    before model identities were recorded."""
    if kind == "spec":
        return {"name": name, "spec": SPEC, "checkpoint_sha256": f"{seed}" * 64,
                "source": f"spec {name} (initialised with seed {seed})"}
    return {"name": name, "spec": SPEC, "checkpoint_sha256": "b" * 64, "source": f"runs/{name}",
            "finished": True, "checkpoint_step": 10}


def _result(model: dict, value: float, *, seed: int = 0, metric: str = "i2t_R@1") -> dict:
    return {
        "schema": "loupe-bench/result/v1", "model": model,
        "task": {"name": TASK, "type": "retrieval", "dataset": "synthetic", "split": "test", "spec": {},
                 "fingerprint": FP},
        "metrics": {metric: {"value": value, "ci95": [max(0.0, value - 0.05), value + 0.05], "units": "fraction"}},
        "unavailable": {}, "extra": {}, "reference_rows": {"chance": {metric: {"value": 0.1, "ci95": None,
                                                                                "units": "fraction"}}},
        "per_item": {}, "seed": seed, "code_version": "t", "packages": {}, "device": "cpu",
        "timings": {"total_s": 0.1}, "timestamp": "2026-11-27T12:00:00Z",
    }


def _write(folder: Path, name: str, obj) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _reference(path: Path, value: float = 0.0, model: str = "clip-tiny") -> Path:
    ref = {"schema": "loupe-bench/reference/v1", "fingerprints": {TASK: FP}, "seeds": [0],
           "rows": [{"model": model, "task": TASK, "split": "test", "metric": "i2t_R@1", "value": value,
                     "abs_tol": 0.03, "rel_tol": 0.05, "spread": 0.0, "n_seeds": 1, "units": "fraction"}]}
    return _write(path.parent, path.name, ref)


def _same_name_folder(tmp_path: Path) -> Path:
    """A spec ``clip-tiny`` (0.0) and a trained run folder ``clip-tiny`` (0.25) in one results folder."""
    res = tmp_path / "results"
    _write(res, "clip-tiny__synthetic-retrieval__test.json", _result(_model("spec"), 0.0))
    _write(res, "clip-tiny__synthetic-retrieval__test__1234abcd.json", _result(_model("run"), 0.25))
    return res


# -- item 3: identity, not names ---------------------------------------------------------------------------------------
def test_item3_same_name_different_models_not_averaged(tmp_path, capsys):
    res = _same_name_folder(tmp_path)
    table = build_table(load_rows(res))
    models = [m for m in table.models if m != "chance"]
    assert len(models) == 2 and all(m.startswith("clip-tiny [") for m in models)
    assert {m.split("[")[1].split()[0] for m in models} == {"spec", "trained"}
    cells = {m: table.cell(m, 0) for m in models}
    assert sorted(c.value for c in cells.values()) == pytest.approx([0.0, 25.0])
    assert all(c.n == 1 for c in cells.values())                     # never 12.5 ± 17.7 over "two seeds"
    code, out, err = _cli(["report", res, "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    md = (tmp_path / "rep" / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| clip-tiny")]
    assert len(rows) == 2 and not any("12.5" in r or "±" in r for r in rows)
    csv = (tmp_path / "rep" / "results.csv").read_text()
    assert csv.count("clip-tiny [spec ") == 1 and csv.count("clip-tiny [trained ") == 1


def test_item3_check_refuses_two_models_sharing_a_name(tmp_path, capsys):
    res = _same_name_folder(tmp_path)
    ref = _reference(tmp_path / "ref.json", value=0.125)             # the mean of the two would pass
    code, _, err = _cli(["check", res, "--reference", ref], capsys)
    _one_line_error(code, err, contains=["'clip-tiny'", "share the name"])
    code, _, err = _cli(["check", res, "--reference", tmp_path / "new.json", "--update"], capsys)
    _one_line_error(code, err, contains=["share the name"])
    assert not (tmp_path / "new.json").exists()


def test_item3_stale_copy_refused_not_averaged(tmp_path, capsys):
    res = tmp_path / "results"
    first = _write(res, "clip-tiny__synthetic-retrieval__test.json", _result(_model("spec"), 0.40))
    stale = _result(_model("spec"), 0.40)
    stale["metrics"]["i2t_R@1"]["value"] = 0.90                      # outside its own interval
    copy_path = _write(res / "old", first.name, stale)
    _reference(tmp_path / "ref.json", value=0.65)
    for argv in (["report", res, "--out", tmp_path / "rep"], ["check", res, "--reference", tmp_path / "ref.json"],
                 ["compare", "--paper", res]):
        code, _, err = _cli(argv, capsys)
        _one_line_error(code, err, contains=[str(first), str(copy_path), "same result"])
    assert not (tmp_path / "rep").exists()


def test_item3_seeds_of_one_identity_still_average(tmp_path, capsys):
    res = tmp_path / "results"
    for seed, v in ((0, 0.2), (1, 0.4)):
        _write(res / f"s{seed}", "clip-tiny__synthetic-retrieval__test.json",
               _result(_model("spec", seed=seed), v, seed=seed))
    table = build_table(load_rows(res))
    cell = table.cell("clip-tiny", 0)
    assert table.models == ["clip-tiny", "chance"] and cell.n == 2 and cell.value == pytest.approx(30.0)
    _reference(tmp_path / "ref.json", value=0.3)
    code, out, err = _cli(["check", res, "--reference", tmp_path / "ref.json"], capsys)
    assert code == 0, out + err


def test_item3_identity_recorded_by_eval_and_shared_by_seeds(tiny_world, tmp_path, capsys):
    task = yaml.safe_load((Path(__file__).parents[1] / "tasks" / f"{TASK}.yaml").read_text())
    task.update(splits=["test"], bootstrap={"n_resamples": 20, "seed": 0})
    task_file = _write(tmp_path, "task.yaml", yaml.safe_dump(task))
    for seed in (0, 1):
        code, out, err = _cli(["eval", "--model", "clip-tiny", "--task", task_file, "--data-root", tiny_world,
                               "--out", tmp_path / "results" / f"s{seed}", "--seed", seed], capsys)
        assert code == 0, err
    objs = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").rglob("*.json"))]
    idents = {o["model"]["identity"] for o in objs}
    assert len(objs) == 2 and len(idents) == 1 and next(iter(idents)).startswith("spec:")
    assert {o["model"]["checkpoint_sha256"] for o in objs} != {objs[0]["model"]["checkpoint_sha256"]}
    legacy = copy.deepcopy(objs[0]["model"])
    del legacy["identity"]                                           # older files: derived the same way
    assert model_identity(legacy) == objs[0]["model"]["identity"]
    rows = [r for r in load_rows(tmp_path / "results") if r.model == "clip-tiny" and r.metric == "i2t_R@1"]
    assert len(rows) == 2 and build_table(rows).cell("clip-tiny", 0).n == 2


def test_item3_reference_without_fingerprints_refused(tmp_path, capsys):
    res = tmp_path / "results"
    _write(res, "clip-tiny__synthetic-retrieval__test.json", _result(_model("spec"), 0.40))
    ref = json.loads(_reference(tmp_path / "ref.json", value=0.40).read_text())
    for label, change in (("no fingerprints", lambda r: r.pop("fingerprints")),
                          ("empty fingerprints", lambda r: r.update(fingerprints={})),
                          ("task without fingerprint", lambda r: r.update(fingerprints={"other": "x"}))):
        bad = copy.deepcopy(ref)
        change(bad)
        path = _write(tmp_path, "bad.json", bad)
        code, _, err = _cli(["check", res, "--reference", path], capsys)
        _one_line_error(code, err, contains=[str(path)])


def test_committed_references_still_load():
    from loupe_bench.report.gate import load_reference

    for path in sorted((Path(__file__).parents[1] / "results" / "reference").glob("*.json")):
        assert load_reference(path)["fingerprints"]


# -- item 8: malformed results and references are one line, exit 2 -----------------------------------------------------
def _m(obj):
    return obj["metrics"]["i2t_R@1"]


RESULT_MUTATIONS = {
    "value-string": lambda o: _m(o).update(value="0.5"),
    "value-infinite": "1e999",
    "value-bool": lambda o: _m(o).update(value=True),
    "value-missing": lambda o: _m(o).pop("value"),
    "ci-wrong-type": lambda o: _m(o).update(ci95=[0.1, "a"]),
    "ci-infinite": "ci-1e999",
    "ci-reversed": lambda o: _m(o).update(ci95=[0.9, 0.1]),
    "metric-not-object": lambda o: o["metrics"].update({"i2t_R@1": 0.5}),
    "metrics-list": lambda o: o.update(metrics=[1, 2]),
    "model-missing": lambda o: o.pop("model"),
    "model-name-int": lambda o: o["model"].update(name=5),
    "model-name-empty": lambda o: o["model"].update(name=""),
    "model-spec-list": lambda o: o["model"].update(spec=[1]),
    "task-string": lambda o: o.update(task="retrieval"),
    "fingerprint-missing": lambda o: o["task"].pop("fingerprint"),
    "split-int": lambda o: o["task"].update(split=3),
    "seed-string": lambda o: o.update(seed="0"),
    "seed-missing": lambda o: o.pop("seed"),
    "reference-row-number": lambda o: o.update(reference_rows={"chance": 5}),
    "reference-row-infinite": "ref-1e999",
    "unavailable-list": lambda o: o.update(unavailable=["SPICE"]),
    "packages-list": lambda o: o.update(packages=["torch"]),
    "timings-string": lambda o: o.update(timings={"total_s": "slow"}),
    "truncated-json": "truncated",
}


def _mutated_text(how) -> str:
    obj = _result(_model("spec"), 0.40)
    if callable(how):
        how(obj)
        return json.dumps(obj)
    text = json.dumps(obj)
    if how == "truncated":
        return text[: len(text) // 2]
    if how == "value-1e999" or how == "1e999":
        return text.replace('"value": 0.4,', '"value": 1e999,', 1)
    if how == "ci-1e999":
        return text.replace('"ci95": [0.35', '"ci95": [-1e999', 1)
    return text.replace('"value": 0.1', '"value": 1e999', 1)


@pytest.mark.parametrize("case", sorted(RESULT_MUTATIONS))
def test_item8_malformed_result_is_one_line_in_every_gathering_command(case, tmp_path, capsys):
    res = tmp_path / "results"
    _write(res, "good__synthetic-retrieval__test.json", _result(_model("spec", name="good"), 0.5))
    bad = _write(res, "clip-tiny__synthetic-retrieval__test.json", _mutated_text(RESULT_MUTATIONS[case]))
    assert bad.read_text() != json.dumps(_result(_model("spec"), 0.40))
    ref = _reference(tmp_path / "ref.json", value=0.40)
    for argv in (["report", res, "--out", tmp_path / "rep"], ["check", res, "--reference", ref],
                 ["export", res, "--format", "clip_benchmark", "--out", tmp_path / "cb"], ["compare", "--paper", res]):
        code, _, err = _cli(argv, capsys)
        _one_line_error(code, err, contains=[str(bad)])
    assert not (tmp_path / "rep").exists()


REFERENCE_MUTATIONS = {
    "top-level-list": lambda r: [r],
    "rows-object": lambda r: dict(r, rows={"a": 1}),
    "row-number": lambda r: dict(r, rows=[5]),
    "value-string": lambda r: dict(r, rows=[dict(r["rows"][0], value="0.4")]),
    "value-bool": lambda r: dict(r, rows=[dict(r["rows"][0], value=False)]),
    "abs-tol-negative": lambda r: dict(r, rows=[dict(r["rows"][0], abs_tol=-1)]),
    "metric-missing": lambda r: dict(r, rows=[{k: v for k, v in r["rows"][0].items() if k != "metric"}]),
    "model-int": lambda r: dict(r, rows=[dict(r["rows"][0], model=3)]),
    "higher-is-better-string": lambda r: dict(r, rows=[dict(r["rows"][0], higher_is_better="yes")]),
    "fingerprints-list": lambda r: dict(r, fingerprints=[TASK]),
    "fingerprint-number": lambda r: dict(r, fingerprints={TASK: 5}),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_MUTATIONS) + ["value-infinite", "not-json"])
def test_item8_malformed_reference_is_one_line(case, tmp_path, capsys):
    res = tmp_path / "results"
    _write(res, "clip-tiny__synthetic-retrieval__test.json", _result(_model("spec"), 0.40))
    ref = json.loads(_reference(tmp_path / "ref.json", value=0.40).read_text())
    if case == "value-infinite":
        text = json.dumps(ref).replace('"value": 0.4', '"value": 1e999')
    elif case == "not-json":
        text = json.dumps(ref)[:40]
    else:
        text = json.dumps(REFERENCE_MUTATIONS[case](copy.deepcopy(ref)))
    path = _write(tmp_path, "bad.json", text)
    code, _, err = _cli(["check", res, "--reference", path], capsys)
    _one_line_error(code, err, contains=[str(path)])


# -- item 9: names are escaped in every format -------------------------------------------------------------------------
HOSTILE = "<script>alert(1)</script> | *x* `y` [l](http://e) $\\frac$ [/]\n# z _u_"


def _md_cells(line: str):
    """The cells of a Markdown table row, split on pipes that are not backslash-escaped."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_item9_report_escapes_names_in_markdown_html_console_and_plots(tmp_path, capsys):
    res = tmp_path / "results"
    obj = _result(_model("spec", name=HOSTILE), 0.4)
    obj["task"]["name"] = "task<b>|*"
    _write(res, "hostile.json", obj)
    _write(res, "plain.json", _result(_model("spec", name="plain"), 0.2))
    code, out, err = _cli(["report", res, "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "<script>" not in md and "<b>" not in md and "\n# z" not in md
    row = next(line for line in md.splitlines() if "alert" in line)
    assert len(_md_cells(row)) == 2                                  # model | one metric: the pipe is escaped
    assert "\\*x\\*" in row and "\\`y\\`" in row and "\\[l\\]" in row and "\\_u\\_" in row
    assert "### task\\<b\\>\\|\\*" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<script>" not in html and "<b>" not in html and "&lt;script&gt;" in html
    assert "alert" in out                                            # the console shows the name as text


def test_item9_csv_cells_never_start_a_formula(tmp_path, capsys):
    """A model name such as ``=HYPERLINK(...)`` is written to ``results.csv`` as text (a leading ``'``), numbers as
    numbers."""
    import csv as _csv

    res = tmp_path / "results"
    _write(res, "f.json", _result(_model("spec", name="=HYPERLINK(\"http://x\",\"y\")"), 0.4))
    code, _, err = _cli(["report", res, "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    rows = list(_csv.DictReader((tmp_path / "rep" / "results.csv").open()))
    assert rows and all(not str(v).startswith(("=", "+", "@")) for r in rows for v in r.values())
    assert any(str(v).startswith("'=HYPERLINK") for r in rows for v in r.values())


# -- item 3: a value outside its own interval, result detection, seeds, reference rules -----------------------------

GATHERING = ("report", "check", "export", "compare")


def _gather(command: str, res: Path, tmp_path: Path, ref: Path):
    """One gathering command over ``res`` (its outputs under ``tmp_path``)."""
    return {"report": ["report", res, "--out", tmp_path / "rep"],
            "check": ["check", res, "--reference", ref],
            "export": ["export", res, "--format", "clip_benchmark", "--out", tmp_path / "cb"],
            "compare": ["compare", "--paper", res]}[command]


def _good_folder(tmp_path: Path):
    """A results folder with one valid result (i2t_R@1 0.40, ci95 [0.35, 0.45]; chance 0.1, ci95 [0.09, 0.11]) and a
    reference it passes."""
    res = tmp_path / "results"
    obj = _result(_model("spec"), 0.40)
    obj["reference_rows"]["chance"]["i2t_R@1"]["ci95"] = [0.09, 0.11]
    path = _write(res, "clip-tiny__synthetic-retrieval__test.json", obj)
    return res, path, obj, _reference(tmp_path / "ref.json", value=0.40)


@pytest.mark.parametrize("command", GATHERING)
def test_item3_value_far_outside_its_ci95_refused(command, tmp_path, capsys):
    res, path, obj, ref = _good_folder(tmp_path)
    code, out, err = _cli(_gather(command, res, tmp_path, ref), capsys)
    assert code == 0, out + err                                      # the untouched result is read
    shutil.rmtree(tmp_path / "rep", ignore_errors=True)
    shutil.rmtree(tmp_path / "cb", ignore_errors=True)
    obj["metrics"]["i2t_R@1"]["value"] = 0.95                        # a stale/edited value; ci95 still [0.35, 0.45]
    _write(res, path.name, obj)
    _reference(ref, value=0.95)                                      # the gate alone would pass it
    code, _, err = _cli(_gather(command, res, tmp_path, ref), capsys)
    line = _one_line_error(code, err, contains=[str(path), "metrics['i2t_R@1']", "outside its own ci95"])
    assert "reference_rows" not in line
    assert not (tmp_path / "rep").exists() and not (tmp_path / "cb").exists()


@pytest.mark.parametrize("command", GATHERING)
def test_item3_reference_row_far_outside_its_ci95_refused(command, tmp_path, capsys):
    res, path, obj, ref = _good_folder(tmp_path)
    code, out, err = _cli(_gather(command, res, tmp_path, ref), capsys)
    assert code == 0, out + err
    shutil.rmtree(tmp_path / "rep", ignore_errors=True)
    shutil.rmtree(tmp_path / "cb", ignore_errors=True)
    obj["reference_rows"]["chance"]["i2t_R@1"]["value"] = 0.6        # chance's ci95 is still [0.09, 0.11]
    _write(res, path.name, obj)
    code, _, err = _cli(_gather(command, res, tmp_path, ref), capsys)
    _one_line_error(code, err, contains=[str(path), "reference_rows['chance']", "i2t_R@1", "outside its own ci95"])
    assert not (tmp_path / "rep").exists() and not (tmp_path / "cb").exists()


def _interval_ok(name: str, value: float, ci) -> bool:
    try:
        check_interval(name, {"value": value, "ci95": ci, "units": "fraction"}, file="f.json")
    except DataError:
        return False
    return True


MEAN_METRICS = ("i2t_R@1", "t2i_R@10", "rsum", "top1", "acc@0.5", "acc@0.5:anchor", "ROUGE-L",
                "proposal_recall@10")
CORPUS_METRICS = ("BLEU-1", "BLEU-4", "CIDEr-D", "AP", "AP50", "AP75")


@pytest.mark.parametrize("name", MEAN_METRICS)
def test_item3_interval_rule_mean_metric_half_a_width(name):
    ci = [0.4, 0.6]                                                  # width 0.2: allowance 0.1 (+ 1e-6 rounding)
    for v in (0.4, 0.5, 0.6, 0.7, 0.3, 0.7000005, 0.2999995):
        assert _interval_ok(name, v, ci), v
    for v in (0.700002, 0.299998, 0.75, 0.25, 0.9):
        assert not _interval_ok(name, v, ci), v


@pytest.mark.parametrize("name", CORPUS_METRICS)
def test_item3_interval_rule_corpus_metric_two_widths(name):
    ci = [0.4, 0.6]                                                  # width 0.2: allowance 0.4 (+ 1e-6 rounding)
    for v in (0.75, 0.25, 0.9, 0.1, 1.0, 0.0, 1.0000005, -0.0000005):
        assert _interval_ok(name, v, ci), v                          # beyond what a mean metric may
    for v in (1.000002, -0.000002, 1.1, -0.1):
        assert not _interval_ok(name, v, ci), v
    assert not _interval_ok("top1", 0.75, ci) and _interval_ok(name, 0.75, ci)


@pytest.mark.parametrize("name", ["METEOR", "SPICE"])
def test_item3_interval_on_a_metric_registered_without_one_refused(name):
    """METEOR and SPICE are corpus values without an interval (metric registry): a ci95 on one is refused."""
    assert not _interval_ok(name, 0.5, [0.4, 0.6])
    assert _interval_ok(name, 0.5, None)


def test_item3_interval_rule_rounding_allowance():
    # a zero-width interval: only rounding, 1e-6 × max(1, |low|, |high|)
    assert _interval_ok("top1", 0.5 + 5e-7, [0.5, 0.5]) and _interval_ok("top1", 0.5 - 5e-7, [0.5, 0.5])
    assert not _interval_ok("top1", 0.5 + 2e-6, [0.5, 0.5]) and not _interval_ok("top1", 0.5 - 2e-6, [0.5, 0.5])
    assert not _interval_ok("AP", 0.5 + 2e-6, [0.5, 0.5])           # two widths of nothing is nothing
    # relative to the interval's magnitude: CIDEr-D-like scores of hundreds
    assert _interval_ok("rsum", 300.0 + 2e-4, [300.0, 300.0])
    assert not _interval_ok("rsum", 300.0 + 4e-4, [300.0, 300.0])
    # tiny corpus values (BLEU-4 ~ 1e-13 with its interval just above it, as a barely trained caption head gives)
    assert _interval_ok("BLEU-4", 1.0108e-13, [1.0198e-13, 1.6014e-13])
    assert _interval_ok("top1", 1e-9, [2e-9, 3e-9])
    # no interval: nothing to check
    assert _interval_ok("top1", 0.9, None)


def test_item3_interval_rule_names_file_and_metric():
    with pytest.raises(DataError) as info:
        check_interval("CIDEr-D", {"value": 5.0, "ci95": [0.1, 0.2]}, file="some/res.json",
                       where="reference_rows['oracle']")
    msg = str(info.value)
    assert msg.startswith("some/res.json: ") and "reference_rows['oracle']['CIDEr-D']" in msg
    assert "\n" not in msg


# -- legitimate results of real evaluations are never refused ----------------------------------------------------------
def _cheap_task(tmp_path: Path, name: str) -> Path:
    d = yaml.safe_load((Path(__file__).parents[1] / "tasks" / f"{name}.yaml").read_text())
    d["splits"] = ["test"]
    d["bootstrap"] = {"n_resamples": 30, "seed": 0}
    opts = d.setdefault("options", {})
    if d["type"] == "captioning":
        opts["head"] = dict(opts.get("head") or {}, steps=4, batch_size=16, width=16)
        opts["decoding"] = "greedy"
        opts["use_java"] = False
        opts["bootstrap_resamples"] = 5
    if d["type"] == "detection":
        opts["bootstrap_resamples"] = 4
    return _write(tmp_path / "tasks", f"{name}.yaml", yaml.safe_dump(d))


def test_item3_real_eval_results_never_refused(tiny_world, tmp_path, capsys):
    """Cheap but real protocols. With these options (today) COCO AP lies just below its own bootstrap interval and the
    barely trained caption head's BLEU-2..4 (~1e-9..1e-13) just below theirs: legitimate, and accepted by the corpus
    allowance of ``check_interval`` (a strict interval check fails this test)."""
    names = ("synthetic-detection-gt", "synthetic-captioning", "synthetic-classification")
    argv = ["eval", "--model", "clip-tiny", "--data-root", tiny_world, "--out", tmp_path / "results"]
    for name in names:
        argv += ["--task", _cheap_task(tmp_path, name)]
    code, out, err = _cli(argv, capsys)
    assert code == 0, err
    objs = {json.loads(p.read_text())["task"]["name"]: json.loads(p.read_text())
            for p in (tmp_path / "results").rglob("*.json")}
    assert set(objs) == set(names)
    assert {"AP", "top1", "CIDEr-D"} <= {m for o in objs.values() for m in o["metrics"]}
    res = tmp_path / "results"
    for argv in (["report", res, "--out", tmp_path / "rep"],
                 ["export", res, "--format", "clip_benchmark", "--out", tmp_path / "cb"],
                 ["compare", "--paper", res],
                 ["check", res, "--reference", tmp_path / "ref.json", "--update"],
                 ["check", res, "--reference", tmp_path / "ref.json"]):
        code, out, err = _cli(argv, capsys)
        assert code == 0, (argv[0], out + err)
        assert "error:" not in err
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "cb" / "benchmark.csv").is_file()


# -- which JSON files under a results folder are results ---------------------------------------------------------------
RESULT_SHAPED = {
    "other-schema": lambda o: o.update(schema="other-tool/result/v3"),
    "no-schema": lambda o: o.pop("schema"),
    "schema-null": lambda o: o.update(schema=None),
    "schema-number": lambda o: o.update(schema=1),
    "newer-version": lambda o: o.update(schema="loupe-bench/result/v2"),
    "older-version": lambda o: o.update(schema="loupe-bench/result/v0"),
    "family-not-shaped": lambda o: (o.clear(), o.update(schema="loupe-bench/result/v2")),
}


@pytest.mark.parametrize("case", sorted(RESULT_SHAPED))
def test_item3_result_shaped_file_with_another_schema_refused(case, tmp_path, capsys):
    res, _, _, ref = _good_folder(tmp_path)
    obj = _result(_model("spec", name="other"), 0.3)
    RESULT_SHAPED[case](obj)
    bad = _write(res / "sub", "other.json", obj)
    for command in GATHERING:
        code, _, err = _cli(_gather(command, res, tmp_path, ref), capsys)
        line = _one_line_error(code, err, contains=[str(bad)])
        assert "schema" in line
    assert not (tmp_path / "rep").exists() and not (tmp_path / "cb").exists()


def test_item3_non_result_json_files_skipped(tmp_path, capsys):
    res, _, _, ref = _good_folder(tmp_path)
    code, _, err = _cli(["export", res, "--format", "clip_benchmark", "--out", tmp_path / "cb0"], capsys)
    assert code == 0, err
    exported = sorted((tmp_path / "cb0").glob("*.json"))
    assert exported                                                  # CLIP_benchmark layout: model/task strings
    (res / "exports").mkdir()
    for p in exported:
        e = json.loads(p.read_text())
        assert isinstance(e["model"], str) and isinstance(e["task"], str) and "metrics" in e
        shutil.copy(p, res / "exports" / p.name)
    _write(res, "reproduce.json", {"kind": "synthetic", "quick": True, "seeds": [0], "plan": {"name": "quick"},
                                   "tasks": [TASK], "runs": {"clip-tiny": "runs/clip-tiny"}, "world": "world",
                                   "environment": {"code_version": "t"}, "timings": {"total_s": 1.0}})
    shutil.copy(ref, res / "reference.json")
    _write(res / "runs" / "clip-tiny", "run.json", {"schema": "loupe-bench/run/v1", "model": "clip-tiny",
                                                    "recipe": {"steps": 3}, "model_spec_digest": "abc",
                                                    "data": {"source": "x"}, "finished_step": 3})
    _write(res, "other-tool.json", {"model": {"name": "m"}, "scores": [1, 2]})   # no task, no metrics
    _write(res, "list.json", [1, 2, 3])
    _write(res, "metrics-only.json", {"metrics": {"top1": 0.5}})
    for argv in (["report", res, "--out", tmp_path / "rep"],
                 ["export", res, "--format", "clip_benchmark", "--out", tmp_path / "cb"],
                 ["check", res, "--reference", ref], ["compare", "--paper", res]):
        code, out, err = _cli(argv, capsys)
        assert code == 0, (argv[0], out + err)
    csv = (tmp_path / "rep" / "results.csv").read_text()
    assert "clip-tiny" in csv and ",m," not in csv
    assert sorted(p.name for p in (tmp_path / "cb").glob("*.json")) == [p.name for p in exported]


# -- seeds are 0 … 2**32 - 1 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 2 ** 32, 2 ** 70, "x", 1.5, True, None])
def test_item3_result_seed_out_of_range_refused(seed, tmp_path, capsys):
    res, path, obj, ref = _good_folder(tmp_path)
    obj["seed"] = seed
    _write(res, path.name, obj)
    for command in GATHERING:
        code, _, err = _cli(_gather(command, res, tmp_path, ref), capsys)
        _one_line_error(code, err, contains=[str(path), "seed"])


def test_item3_largest_seed_accepted(tmp_path, capsys):
    res, path, obj, ref = _good_folder(tmp_path)
    obj["seed"] = 2 ** 32 - 1
    _write(res, path.name, obj)
    for command in GATHERING:
        code, out, err = _cli(_gather(command, res, tmp_path, ref), capsys)
        assert code == 0, (command, out + err)
    code, out, err = _cli(["check", res, "--reference", tmp_path / "new.json", "--update"], capsys)
    assert code == 0, err
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["seeds"] == [2 ** 32 - 1]
    code, out, err = _cli(["check", res, "--reference", tmp_path / "new.json"], capsys)
    assert code == 0, out + err


# -- references ---------------------------------------------------------------------------------------------------------
def _row(r):
    return r["rows"][0]


BROKEN_REFERENCES = {
    "rows-empty": (lambda r: r.update(rows=[]), "without rows"),
    "rows-missing": (lambda r: r.pop("rows"), "'rows'"),
    "rows-string": (lambda r: r.update(rows="i2t_R@1"), "'rows'"),
    "rows-null": (lambda r: r.update(rows=None), "'rows'"),
    "row-duplicated": (lambda r: r["rows"].append(copy.deepcopy(_row(r))), "rows 0 and 1"),
    "row-duplicated-other-value": (lambda r: r["rows"].append(dict(_row(r), value=0.9)), "rows 0 and 1"),
    "schema-unknown": (lambda r: r.update(schema="loupe-bench/reference/v2"), "schema"),
    "schema-result": (lambda r: r.update(schema="loupe-bench/result/v1"), "schema"),
    "schema-number": (lambda r: r.update(schema=1), "schema"),
    "seeds-string": (lambda r: r.update(seeds="0"), "seeds"),
    "seeds-object": (lambda r: r.update(seeds={"0": 0}), "seeds"),
    "seeds-of-strings": (lambda r: r.update(seeds=["0"]), "seeds"),
    "seeds-bool": (lambda r: r.update(seeds=[True]), "seeds"),
    "seeds-negative": (lambda r: r.update(seeds=[0, -1]), "seeds"),
    "seeds-too-large": (lambda r: r.update(seeds=[2 ** 32]), "seeds"),
    "row-seeds-negative": (lambda r: _row(r).update(seeds=[-1]), "seeds"),
    "fingerprints-missing": (lambda r: r.pop("fingerprints"), "fingerprints"),
    "fingerprints-empty": (lambda r: r.update(fingerprints={}), "fingerprints"),
    "fingerprint-empty-string": (lambda r: r.update(fingerprints={TASK: ""}), "fingerprint"),
    "value-nan-string": (lambda r: _row(r).update(value="NaN"), "value"),
    "value-string": (lambda r: _row(r).update(value="0.4"), "value"),
    "value-null": (lambda r: _row(r).update(value=None), "value"),
    "value-list": (lambda r: _row(r).update(value=[0.4]), "value"),
    "abs-tol-string": (lambda r: _row(r).update(abs_tol="0.03"), "abs_tol"),
    "rel-tol-negative": (lambda r: _row(r).update(rel_tol=-0.05), "non-negative"),
    "spread-negative": (lambda r: _row(r).update(spread=-1.0), "non-negative"),
    "n-seeds-zero": (lambda r: _row(r).update(n_seeds=0), "n_seeds"),
    "split-empty": (lambda r: _row(r).update(split=""), "split"),
    **{f"row-missing-{key}": ((lambda key: lambda r: _row(r).pop(key))(key), f"'{key}'")
       for key in ("model", "task", "split", "metric", "value", "abs_tol", "rel_tol")},
}


@pytest.mark.parametrize("case", sorted(BROKEN_REFERENCES))
def test_item3_broken_reference_refused_by_check(case, tmp_path, capsys):
    res, _, _, ref_path = _good_folder(tmp_path)
    code, out, err = _cli(["check", res, "--reference", ref_path], capsys)
    assert code == 0, out + err                                      # the unbroken reference gates and passes
    ref = json.loads(ref_path.read_text())
    change, fragment = BROKEN_REFERENCES[case]
    change(ref)
    bad = _write(tmp_path, "bad.json", json.dumps(ref))
    code, _, err = _cli(["check", res, "--reference", bad], capsys)
    _one_line_error(code, err, contains=[str(bad), fragment])


def test_item3_reference_value_nan_literal_refused(tmp_path, capsys):
    res, _, _, ref_path = _good_folder(tmp_path)
    bad = _write(tmp_path, "bad.json", ref_path.read_text().replace('"value": 0.4', '"value": NaN'))
    assert "NaN" in bad.read_text()
    code, _, err = _cli(["check", res, "--reference", bad], capsys)
    _one_line_error(code, err, contains=[str(bad)])


def test_item3_reference_without_schema_still_gates(tmp_path, capsys):
    res, _, _, _ = _good_folder(tmp_path)
    for value, expected in ((0.40, 0), (0.90, 1)):                   # pass, then a regression
        ref = json.loads(_reference(tmp_path / "ref.json", value=value).read_text())
        ref.pop("schema")
        path = _write(tmp_path, "noschema.json", ref)
        code, out, err = _cli(["check", res, "--reference", path], capsys)
        assert code == expected, out + err
        assert "error:" not in err and "Traceback" not in err
    assert "regressed" in out


def test_item3_update_refuses_a_reference_without_rows(tmp_path, capsys):
    res = tmp_path / "results"
    obj = _result(_model("spec"), 0.40)
    obj.update(metrics={}, reference_rows={})                        # a valid result that measured nothing
    path = _write(res, "clip-tiny__synthetic-retrieval__test.json", obj)
    new = tmp_path / "new.json"
    code, _, err = _cli(["check", res, "--reference", new, "--update"], capsys)
    _one_line_error(code, err, contains=[str(res), "no metric values"])
    assert not new.exists() and not list(tmp_path.glob("new.json*"))
    old = _reference(tmp_path / "old.json", value=0.40)              # an existing reference is left as it was
    before = old.read_bytes()
    code, _, err = _cli(["check", res, "--reference", old, "--update"], capsys)
    _one_line_error(code, err, contains=["no metric values"])
    assert old.read_bytes() == before
    assert path.is_file()


def test_item8_results_without_metric_values_are_one_line(tmp_path, capsys):
    """A folder whose results hold no metric value at all is one line for every gathering command, never a crash."""
    res = tmp_path / "results"
    obj = _result(_model("spec", name="m"), 0.4)
    obj.update(metrics={}, reference_rows={})
    _write(res, "empty.json", obj)
    for argv in (["report", res, "--out", tmp_path / "rep"], ["check", res, "--reference", "synthetic-quick"]):
        code, _, err = _cli(argv, capsys)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "no metric values" in err
