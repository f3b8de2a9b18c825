"""Task specs, fingerprints, results schema and full evaluations of tiny models on the tiny synthetic world."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from loupe_bench.errors import DataError, SpecError
from loupe_bench.report.export import export_clip_benchmark
from loupe_bench.specs import load_yaml, spec_files
from loupe_bench.tasks import TASK_TYPES, list_tasks, load_adapters, load_task
from loupe_bench.tasks.results import load_results, paired_delta, result_filename, summarize_seeds, validate_result

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SYNTHETIC_TASKS = [
    "synthetic-retrieval", "synthetic-classification", "synthetic-linear-probe", "synthetic-captioning",
    "synthetic-detection-grid", "synthetic-detection-native", "synthetic-detection-gt",
    "synthetic-grounding-gt-boxes", "synthetic-grounding-native", "synthetic-grounding-grid",
    "synthetic-phrase-grounding-native",
]


def fast(name_or_path, splits=None, **option_overrides):
    """A shipped spec made cheap for tests (few bootstrap replicates, few caption-head steps)."""
    path = name_or_path if isinstance(name_or_path, Path) else next(
        p for p in spec_files("tasks") if load_yaml(p).get("name") == name_or_path)
    d = load_yaml(path)
    d["bootstrap"] = {"n_resamples": 30, "seed": 0}
    if splits is not None:
        d["splits"] = splits
    opts = d.setdefault("options", {})
    if d["type"] == "captioning":
        opts["head"] = dict(opts.get("head") or {}, steps=12, batch_size=16, width=32)
        opts["use_java"] = False
        opts["bootstrap_resamples"] = 5
    if d["type"] == "detection":
        opts["bootstrap_resamples"] = 4
    if d["type"] == "linear-probe":
        opts["l2_grid"] = [1e-2, 1.0]
        opts["max_iter"] = 50
    opts.update(option_overrides)
    return d


# -------------------------------------------------------------------------------------------- specs / registry
def test_registry_and_listing():
    load_adapters()
    assert set(TASK_TYPES.names()) == {"retrieval", "classification", "linear-probe", "captioning", "detection",
                                       "grounding", "phrase-grounding", "token-interaction", "caption-selection",
                                       "two-by-two", "region-classification"}
    names = [n for n, _ in list_tasks()]
    for t in SYNTHETIC_TASKS + ["flickr30k-retrieval-1k", "coco-retrieval-5k", "coco-captioning-karpathy",
                                "coco-detection", "voc-detection", "refcoco-unc", "refcoco+-unc", "refcocog-umd",
                                "imagenet-zeroshot"]:
        assert t in names


@pytest.mark.parametrize("path", spec_files("tasks"), ids=lambda p: p.stem)
def test_every_shipped_spec_loads(path):
    spec = load_task(path)
    assert spec.type in TASK_TYPES
    assert spec.metrics and spec.splits


def test_imagenet_templates_are_clips_80():
    spec = load_task("imagenet-zeroshot")
    t = spec.options["templates"]
    assert len(t) == 80 and len(set(t)) == 80 and all("{}" in x for x in t)
    assert "itap of a {}." in t and "a photo of a {}." in t


def test_bad_specs_are_spec_errors(tmp_path):
    base = load_yaml(next(p for p in spec_files("tasks") if p.stem == "synthetic-retrieval"))
    for mutate, what in [
        (lambda d: d.pop("metrics"), "metrics"),
        (lambda d: d.update(type="nope"), "unknown task type"),
        (lambda d: d["options"].update(bogus=1), "bogus"),
        (lambda d: d.update(image={"crop": "weird"}), "crop"),
    ]:
        d = copy.deepcopy(base)
        mutate(d)
        with pytest.raises(SpecError, match=what):
            load_task(d)
    with pytest.raises(SpecError, match="unknown task"):
        load_task("no-such-task")
    d = load_yaml(next(p for p in spec_files("tasks") if p.stem == "synthetic-detection-grid"))
    d["image"]["crop"] = "center"
    with pytest.raises(SpecError, match="crop: none"):
        load_task(d)


def test_fingerprint_changes_with_protocol_and_not_otherwise(tiny_world, tmp_path):
    base = load_yaml(next(p for p in spec_files("tasks") if p.stem == "synthetic-retrieval"))
    fp = load_task(base).fingerprint(tiny_world)
    same = copy.deepcopy(base)
    same["description"] = "reworded"
    same["name"] = "renamed"
    same["options"].pop("captions_per_image")  # spelling out / omitting a default
    assert load_task(same).fingerprint(tiny_world) == fp
    for mutate in [lambda d: d.update(splits=["test"]), lambda d: d["options"].update(captions_per_image=1),
                   lambda d: d["bootstrap"].update(seed=1), lambda d: d["image"].update(crop="none")]:
        d = copy.deepcopy(base)
        mutate(d)
        assert load_task(d).fingerprint(tiny_world) != fp
    # the annotation file's content enters the fingerprint
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world)
    assert load_task(base).fingerprint(world) == fp
    ann = world / "dataset_synthetic.json"
    data = json.loads(ann.read_text())
    data["images"][0]["sentences"][0]["raw"] += " changed"
    ann.write_text(json.dumps(data))
    assert load_task(base).fingerprint(world) != fp
    with pytest.raises(DataError):
        load_task(base).fingerprint(tmp_path / "missing")


# -------------------------------------------------------------------------------------------- full evaluations
def _check_results(results, out_dir):
    for r in results:
        validate_result(r)
        assert Path(r["_path"]).name == result_filename(r["model"]["name"], r["task"]["name"], r["task"]["split"])
        on_disk = json.loads(Path(r["_path"]).read_text())
        validate_result(on_disk)
        for name, m in r["metrics"].items():
            if m["units"] == "fraction":
                assert 0.0 <= m["value"] <= 1.0, (name, m)
            if m["ci95"] is not None and name in r["per_item"]:  # a mean: its percentile interval holds it
                assert m["ci95"][0] <= m["value"] + 1e-9 and m["value"] <= m["ci95"][1] + 1e-9, (name, m)
    assert len(load_results(out_dir)) >= len(results)


@pytest.mark.parametrize("model_name", ["clip-tiny", "filip-tiny", "loupe-tiny"])
def test_full_eval_every_task(model_name, tiny_world, tmp_path):
    from loupe_bench.models import available_specs, create_model
    from loupe_bench.tasks.evaluate import evaluate

    if model_name not in available_specs():
        pytest.fail(f"model spec {model_name} missing")
    model = create_model(model_name, seed=0)
    specs = [fast(t, splits=["test"]) for t in SYNTHETIC_TASKS]
    results = evaluate([model], specs, data_root=tiny_world, out_dir=tmp_path)
    assert len(results) == len(SYNTHETIC_TASKS)
    _check_results(results, tmp_path)
    by_task = {r["task"]["name"]: r for r in results}
    assert set(by_task["synthetic-retrieval"]["metrics"]) == {
        "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum"}
    assert by_task["synthetic-retrieval"]["extra"]["n_captions"] == 5 * by_task["synthetic-retrieval"]["extra"][
        "n_images"]
    assert set(by_task["synthetic-classification"]["metrics"]) == {"top1", "top5"}
    assert "top1" in by_task["synthetic-linear-probe"]["metrics"]
    cap = by_task["synthetic-captioning"]
    assert {"BLEU-4", "CIDEr-D", "ROUGE-L"} <= set(cap["metrics"])
    assert "SPICE" in cap["unavailable"] and "METEOR" in cap["unavailable"]
    assert "not comparable" in cap["extra"]["note"]
    for task, src in (("synthetic-detection-grid", "grid"), ("synthetic-detection-gt", "gt-boxes")):
        r = by_task[task]
        recall = {"proposal_recall@10"} if src == "grid" else set()
        assert r["extra"]["proposal_source"] == src and set(r["metrics"]) == {"AP", "AP50", "AP75"} | recall
    assert by_task["synthetic-grounding-gt-boxes"]["metrics"]["acc@0.5"]["value"] >= 0
    native = [by_task["synthetic-detection-native"], by_task["synthetic-grounding-native"]]
    if model.has_native_regions:
        assert all(r["metrics"] for r in native)
        assert native[0]["extra"]["proposal_source"] == "native"
    else:
        assert all(not r["metrics"] and "region head" in r["extra"]["skipped"] for r in native)
    # deterministic: same model, seed and data -> same numbers (retrieval, classification rerun)
    again = evaluate([model], specs[:2], data_root=tiny_world, out_dir=None)
    for r in again:
        assert r["metrics"] == by_task[r["task"]["name"]]["metrics"]


def test_retrieval_matches_direct_similarity(tiny_world):
    """The adapter's R@k equal a dense recomputation from the model's own similarity on the same data."""
    from loupe_bench.data import load_dataset
    from loupe_bench.models import create_model
    from loupe_bench.tasks.common import encode_images, encode_texts
    from loupe_bench.tasks.evaluate import evaluate

    model = create_model("filip-tiny", seed=0)
    spec_d = fast("synthetic-retrieval", splits=["test"])
    r = evaluate([model], [spec_d], data_root=tiny_world, out_dir=None)[0]
    recs = load_dataset("karpathy", tiny_world / "dataset_synthetic.json", split="test")
    spec = load_task(spec_d)
    img = encode_images(model, [im.path for im in recs.images], spec)
    texts = [c.text for im in recs.images for c in im.captions]
    owners = np.repeat(np.arange(len(recs.images)), [len(im.captions) for im in recs.images])
    txt = encode_texts(model, texts, spec)
    with torch.no_grad():
        s_i2t = model.similarity(img, txt, direction="i2t").numpy()
        s_t2i = model.similarity(img, txt, direction="t2i").numpy()
    for k in (1, 5, 10):
        hits_i = [any(owners[j] == i for j in np.argsort(-s_i2t[i], kind="stable")[:k]) for i in range(len(img.pooled))]
        hits_t = [owners[j] in np.argsort(-s_t2i[:, j], kind="stable")[:k] for j in range(len(texts))]
        assert r["metrics"][f"i2t_R@{k}"]["value"] == pytest.approx(np.mean(hits_i))
        assert r["metrics"][f"t2i_R@{k}"]["value"] == pytest.approx(np.mean(hits_t))


def test_results_export_and_paired_delta(tiny_world, tmp_path):
    from loupe_bench.models import create_model
    from loupe_bench.tasks.evaluate import evaluate

    specs = [fast("synthetic-retrieval", splits=["test"]), fast("synthetic-classification")]
    res = evaluate([create_model("clip-tiny", seed=0), create_model("filip-tiny", seed=0)], specs,
                   data_root=tiny_world, out_dir=tmp_path / "res")
    loaded = load_results(tmp_path / "res")
    assert len(loaded) == 4
    paths = export_clip_benchmark(loaded, tmp_path / "cb")
    cb = json.loads(next(p for p in paths if "retrieval" in p.name).read_text())
    assert {"dataset", "model", "pretrained", "task", "metrics", "language"} <= set(cb)
    assert cb["task"] == "zeroshot_retrieval" and "text_retrieval_recall@5" in cb["metrics"]
    csv_text = (tmp_path / "cb" / "benchmark.csv").read_text().splitlines()
    assert csv_text[0].startswith("dataset,model,pretrained,model_fullname,task,language") and len(csv_text) == 5
    a, b = [r for r in loaded if r["task"]["type"] == "retrieval"]
    d = paired_delta(a, b, "i2t_R@5", n_resamples=200)
    diff = np.mean(a["per_item"]["i2t_R@5"]) - np.mean(b["per_item"]["i2t_R@5"])
    assert d["delta"] == pytest.approx(diff) and d["low"] <= diff <= d["high"]
    other = copy.deepcopy(b)
    other["task"]["fingerprint"] = "different"
    with pytest.raises(DataError, match="different protocols"):
        paired_delta(a, other, "i2t_R@5")
    bad = copy.deepcopy(a)
    del bad["metrics"]["i2t_R@1"]["units"]
    with pytest.raises(DataError):
        validate_result(bad)
    # mean +- std across seeds (two copies standing for seeds 0 and 1)
    s1 = copy.deepcopy(a)
    s1["seed"] = 1
    s1["metrics"]["i2t_R@5"]["value"] = a["metrics"]["i2t_R@5"]["value"] + 0.2
    rows = [row for row in summarize_seeds([a, s1]) if row["metric"] == "i2t_R@5"]
    assert len(rows) == 1 and rows[0]["n"] == 2 and rows[0]["seeds"] == [0, 1]
    assert rows[0]["mean"] == pytest.approx(a["metrics"]["i2t_R@5"]["value"] + 0.1)
    assert rows[0]["std"] == pytest.approx(0.2 / np.sqrt(2))
    bad = copy.deepcopy(a)
    bad["unavailable"]["SPICE"] = ""
    with pytest.raises(DataError):
        validate_result(bad)


def test_cli_eval(tiny_world, tmp_path):
    import yaml
    from click.testing import CliRunner

    from loupe_bench.cli.main import cli

    spec_path = tmp_path / "ret.yaml"
    spec_path.write_text(yaml.safe_dump(fast("synthetic-retrieval", splits=["test"])))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["eval", "--model", "clip-tiny", "--task", str(spec_path), "--data-root",
                                   str(tiny_world), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "clip-tiny__synthetic-retrieval__test.json").is_file()
    res = CliRunner().invoke(cli, ["eval", "--model", "clip-tiny", "--task", "no-such-task"])
    assert res.exit_code != 0


def test_eval_model_directory_and_bad_data(tiny_world, tmp_path):
    """A saved model directory evaluates with its weights' sha256 recorded; a missing image is a DataError naming
    the file."""
    from loupe_bench.models import create_model, save_model
    from loupe_bench.tasks.evaluate import evaluate
    from loupe_bench.utils.io import sha256_file

    model = create_model("clip-tiny", seed=0)
    run = save_model(model, tmp_path / "runs" / "clip-run")
    spec = fast("synthetic-retrieval", splits=["test"])
    from_dir = evaluate([str(run)], [spec], data_root=tiny_world, out_dir=tmp_path / "res")[0]
    from_obj = evaluate([model], [spec], data_root=tiny_world, out_dir=None)[0]
    assert from_dir["model"]["name"] == "clip-run"
    assert from_dir["model"]["checkpoint_sha256"] == sha256_file(Path(run) / "model.safetensors")
    assert from_dir["metrics"] == from_obj["metrics"]
    assert (tmp_path / "res" / "clip-run__synthetic-retrieval__test.json").is_file()
    world = tmp_path / "broken"
    shutil.copytree(tiny_world, world)
    data = json.loads((world / "dataset_synthetic.json").read_text())
    victim = next(im for im in data["images"] if im["split"] == "test")
    (world / "images" / victim["filename"]).unlink()
    with pytest.raises(DataError, match=victim["filename"]):
        evaluate([model], [spec], data_root=world, out_dir=None)


def test_feature_cache_encodes_once_per_model_and_preprocessing(tiny_world):
    """Inside ``feature_cache`` the same (model, images, preprocessing) is encoded once and equals an uncached
    encoding; another model or preprocessing misses the cache; outside the block nothing is kept."""
    from loupe_bench.data import load_dataset
    from loupe_bench.models import create_model
    from loupe_bench.tasks import common

    a, b = create_model("clip-tiny", seed=0).eval(), create_model("clip-tiny", seed=1).eval()
    recs = load_dataset("karpathy", tiny_world / "dataset_synthetic.json", split="test")
    paths = [im.path for im in recs.images]
    spec = load_task(fast("synthetic-retrieval"))
    other = load_task(fast("synthetic-detection-gt"))  # crop: none
    calls = []
    real = common._encode_images

    def counting(*args, **kw):
        calls.append(args[0])
        return real(*args, **kw)

    common._encode_images = counting
    try:
        plain = common.encode_images(a, paths, spec)
        with common.feature_cache():
            f1 = common.encode_images(a, paths, spec)
            f2 = common.encode_images(a, paths, spec)
            common.encode_images(b, paths, spec)
            common.encode_images(a, paths, other)
        assert f1 is f2 and torch.equal(f1.pooled, plain.pooled)
        assert len(calls) == 4  # plain, a once, b, a with other preprocessing
        common.encode_images(a, paths, spec)
        assert len(calls) == 5 and common._FEATURE_CACHE is None
    finally:
        common._encode_images = real
