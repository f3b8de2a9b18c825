"""``loupe-bench export --format clip_benchmark``: read back the way CLIP_benchmark 1.6.2's ``build`` reads its
per-run JSONs, the values equal the loupe-bench results they came from."""
from __future__ import annotations

import copy
import csv
import glob
import json
import os

import numpy as np
import pandas as pd
import pytest

from loupe_bench.cli.main import main
from loupe_bench.errors import DataError
from loupe_bench.report.export import EXPORT_FORMATS, export_clip_benchmark, mean_per_class_recall
from loupe_bench.tasks.results import load_results, write_result

from test_tasks import fast


def clip_benchmark_build(folder):
    """CLIP_benchmark ``build``'s reading logic, re-implemented: every ``*.json`` of the folder, its ``metrics``
    flattened into the row, then the JSON's other keys, ``model_fullname = model + ' ' + pretrained``."""
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as fh:
            data = json.load(fh)
        row = dict(data["metrics"])
        row.update(data)
        del row["metrics"]
        row["model_fullname"] = row["model"] + " " + row["pretrained"]
        row["_file"] = os.path.basename(path)
        rows.append(row)
    return pd.DataFrame(rows)


def _balanced_accuracy(pred, labels):
    """Per-class recall from a confusion matrix (rows: true class), averaged over the classes that occur."""
    n = max(max(pred), max(labels)) + 1
    cm = np.zeros((n, n))
    for t, p in zip(labels, pred):
        cm[t, p] += 1
    support = cm.sum(1)
    return float(np.mean(np.diag(cm)[support > 0] / support[support > 0]))


@pytest.fixture(scope="module")
def evaluated(tiny_world, tmp_path_factory):
    from loupe_bench.tasks.evaluate import evaluate

    out = tmp_path_factory.mktemp("res")
    specs = [fast("synthetic-retrieval", splits=["test"]), fast("synthetic-classification"),
             fast("synthetic-linear-probe")]
    evaluate(["clip-tiny"], specs, data_root=tiny_world, out_dir=out)
    return out


def test_export_read_like_clip_benchmark_build(evaluated, tmp_path, capsys):
    assert "clip_benchmark" in EXPORT_FORMATS
    with pytest.raises(SystemExit) as info:
        main(["export", "--format", "clip_benchmark", str(evaluated), "--out", str(tmp_path / "cb")])
    assert info.value.code == 0, capsys.readouterr().err
    df = clip_benchmark_build(str(tmp_path / "cb"))
    results = {r["task"]["type"]: r for r in load_results(evaluated)}
    assert sorted(df["task"]) == ["linear_probe", "zeroshot_classification", "zeroshot_retrieval"]
    for _, row in df.iterrows():
        # CLIP_benchmark's names: dataset without split suffix, language en, file name from its --output template
        assert row["dataset"] == "synthetic" and row["language"] == "en" and row["model"] == "clip-tiny"
        assert row["pretrained"] == "random-init-seed0"
        assert row["_file"] == f"synthetic_random-init-seed0_clip-tiny_en_{row['task']}.json"
        assert row["model_fullname"] == "clip-tiny random-init-seed0"
    by_task = df.set_index("task")
    ret = results["retrieval"]
    assert by_task.loc["zeroshot_retrieval", "pretrained_sha256"] == ret["model"]["checkpoint_sha256"]
    for k in (1, 5, 10):
        assert by_task.loc["zeroshot_retrieval", f"text_retrieval_recall@{k}"] == ret["metrics"][f"i2t_R@{k}"]["value"]
        assert by_task.loc["zeroshot_retrieval", f"image_retrieval_recall@{k}"] == \
            ret["metrics"][f"t2i_R@{k}"]["value"]
    cls = results["classification"]
    assert by_task.loc["zeroshot_classification", "acc1"] == cls["metrics"]["top1"]["value"]
    assert by_task.loc["zeroshot_classification", "acc5"] == cls["metrics"]["top5"]["value"]
    assert by_task.loc["zeroshot_classification", "mean_per_class_recall"] == pytest.approx(
        _balanced_accuracy(cls["extra"]["predictions"], cls["extra"]["labels"]))
    lp = results["linear-probe"]
    assert by_task.loc["linear_probe", "lp_acc1"] == lp["metrics"]["top1"]["value"]
    # the linear probe's top-1 hits are the predictions that equal the labels
    hits = [int(p == t) for p, t in zip(lp["extra"]["predictions"], lp["extra"]["labels"])]
    assert hits == lp["per_item"]["top1"]
    assert by_task.loc["linear_probe", "lp_mean_per_class_recall"] == pytest.approx(
        _balanced_accuracy(lp["extra"]["predictions"], lp["extra"]["labels"]))
    # benchmark.csv holds what build makes of the JSONs
    with open(tmp_path / "cb" / "benchmark.csv") as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == len(df)
    for w in written:
        row = df[df["_file"].str.endswith(w["task"] + ".json")].iloc[0]
        assert w["model_fullname"] == row["model_fullname"]
        for col in w:
            if w[col] != "" and isinstance(row[col], float):
                assert float(w[col]) == pytest.approx(row[col], abs=0, rel=1e-12)
    assert "README.md" in os.listdir(tmp_path / "cb")


def test_export_leaves_out_what_clip_benchmark_has_not(evaluated, tmp_path):
    results = load_results(evaluated)
    old = copy.deepcopy(next(r for r in results if r["task"]["type"] == "classification"))
    del old["extra"]["predictions"]  # a result written before predictions were recorded
    det = copy.deepcopy(old)
    det["task"]["type"], det["task"]["name"] = "detection", "synthetic-detection-gt"
    export_clip_benchmark([old, det], tmp_path / "cb")
    data = json.loads((tmp_path / "cb" / "synthetic_random-init-seed0_clip-tiny_en_zeroshot_classification.json")
                      .read_text())
    assert "mean_per_class_recall" not in data["metrics"] and data["metrics"]["acc1"] == old["metrics"]["top1"]["value"]
    readme = (tmp_path / "cb" / "README.md").read_text()
    assert "`mean_per_class_recall`" in readme and "'detection' has no CLIP_benchmark counterpart" in readme
    assert len(glob.glob(str(tmp_path / "cb" / "*.json"))) == 1
    # another split exports beside it under a dataset-name suffix
    other = copy.deepcopy(old)
    other["task"]["split"] = "val"
    export_clip_benchmark([old, other], tmp_path / "cb2")
    assert json.loads((tmp_path / "cb2" / "synthetic_val_random-init-seed0_clip-tiny_en_zeroshot_classification.json")
                      .read_text())["dataset"] == "synthetic_val"
    # two results with one CLIP_benchmark file name (same split and weights) are refused, not overwritten
    with pytest.raises(DataError, match="both export to"):
        export_clip_benchmark([old, copy.deepcopy(old)], tmp_path / "cb3")


def test_export_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--format", "nope", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "unknown export format 'nope'" in err and "clip_benchmark" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as info:
        main(["export", "--format", "clip_benchmark", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "no result JSON" in err and "Traceback" not in err


def test_mean_per_class_recall_rule():
    # class 0: 1 of 2 right, class 1: 1 of 1, class 2 never occurs in the labels
    assert mean_per_class_recall([0, 2, 1], [0, 0, 1]) == pytest.approx(0.75)
