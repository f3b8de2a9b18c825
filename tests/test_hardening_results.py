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

from loupe_bench.cli.main import main
from loupe_bench.report.results_io import load_rows
from loupe_bench.report.table import build_table
from loupe_bench.tasks.results import model_identity

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "synthetic-retrieval"
FP = "fp-retrieval"
SPEC = {"name": "clip-tiny", "family": "clip", "embed_dim": 32}


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _one_line_error(code, err, *, contains=None):
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    if contains:
        assert all(c in errors[0] for c in contains), errors[0]
    return errors[0]


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
