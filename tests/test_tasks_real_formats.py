"""The real-benchmark specs run unchanged on the tiny synthetic world laid out in each benchmark's real format and
folder layout (Flickr30K/COCO Karpathy JSON, COCO instances, PASCAL VOC XML, refer pickles, ImageFolder)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from test_tasks import fast

REAL_TASKS = ["flickr30k-retrieval-1k", "coco-retrieval-5k", "coco-captioning-karpathy", "coco-detection",
              "voc-detection", "refcoco-unc", "refcoco+-unc", "refcocog-umd", "imagenet-zeroshot"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src.resolve(), dst, target_is_directory=src.is_dir())


@pytest.fixture(scope="module")
def real_root(tiny_world, tmp_path_factory) -> Path:
    """One --data-root per benchmark family, built from the tiny world in the benchmarks' own layouts."""
    from loupe_bench.data.export import write_voc

    root = tmp_path_factory.mktemp("real")
    karpathy = json.loads((tiny_world / "dataset_synthetic.json").read_text())
    # Flickr30K: no filepath, images in flickr30k-images/
    flickr = {"dataset": "flickr30k", "images": [{k: v for k, v in im.items() if k != "filepath"}
                                                  for im in karpathy["images"]]}
    (root / "flickr").mkdir()
    (root / "flickr" / "dataset_flickr30k.json").write_text(json.dumps(flickr))
    _link(tiny_world / "images", root / "flickr" / "flickr30k-images")
    # COCO Karpathy: filepath train2014 / val2014, part of train marked restval
    coco = {"dataset": "coco", "images": []}
    for n, im in enumerate(karpathy["images"]):
        im = dict(im)
        im["filepath"] = "train2014" if im["split"] == "train" else "val2014"
        if im["split"] == "train" and n % 4 == 0:
            im["split"] = "restval"
        coco["images"].append(im)
    (root / "coco").mkdir()
    (root / "coco" / "dataset_coco.json").write_text(json.dumps(coco))
    for d in ("train2014", "val2014"):
        _link(tiny_world / "images", root / "coco" / d)
    # COCO detection val2017
    (root / "coco" / "annotations").mkdir()
    shutil.copy(tiny_world / "annotations" / "instances_test.json",
                root / "coco" / "annotations" / "instances_val2017.json")
    _link(tiny_world / "images", root / "coco" / "val2017")
    # PASCAL VOC 2007
    write_voc(tiny_world, root / "voc" / "VOCdevkit" / "VOC2007")
    # refer: refcoco / refcoco+ (unc: testA/testB), refcocog (umd: val/test)
    refs = pickle.loads((tiny_world / "refsynth" / "refs(unc).p").read_bytes())
    for name, split_by, mapping in [("refcoco", "unc", {"test": "testA", "comptest": "testB"}),
                                    ("refcoco+", "unc", {"test": "testA", "comptest": "testB"}),
                                    ("refcocog", "umd", {})]:
        d = root / "refer" / name
        d.mkdir(parents=True)
        shutil.copy(tiny_world / "refsynth" / "instances.json", d / "instances.json")
        out = [dict(r, split=mapping.get(r["split"], r["split"])) for r in refs]
        (d / f"refs({split_by}).p").write_bytes(pickle.dumps(out, protocol=2))
    _link(tiny_world / "images", root / "refer" / "images" / "mscoco" / "images" / "train2014")
    # ImageNet-style ImageFolder
    _link(tiny_world / "classification", root / "imagenet-root" / "imagenet")
    return root


DATA_ROOT = {"flickr30k-retrieval-1k": "flickr", "coco-retrieval-5k": "coco", "coco-captioning-karpathy": "coco",
             "coco-detection": "coco", "voc-detection": "voc", "refcoco-unc": "refer", "refcoco+-unc": "refer",
             "refcocog-umd": "refer", "imagenet-zeroshot": "imagenet-root"}


def test_real_specs_run_on_real_formats(real_root, tmp_path):
    from loupe_bench.models import create_model
    from loupe_bench.tasks.evaluate import evaluate
    from loupe_bench.tasks.results import validate_result

    model = create_model("clip-tiny", seed=0)
    seen = {}
    for task in REAL_TASKS:
        spec = fast(task)
        results = evaluate([model], [spec], data_root=real_root / DATA_ROOT[task], out_dir=tmp_path)
        assert [r["task"]["split"] for r in results] == spec["splits"]
        for r in results:
            validate_result(r)
            assert r["metrics"], (task, r["unavailable"])
            seen[(task, r["task"]["split"])] = r
    # every split of a grounding benchmark is its own result (never averaged)
    assert {s for t, s in seen if t == "refcoco-unc"} == {"val", "testA", "testB"}
    assert {s for t, s in seen if t == "refcocog-umd"} == {"val", "test"}
    assert seen[("flickr30k-retrieval-1k", "test")]["extra"]["n_images"] == 12
    assert seen[("coco-captioning-karpathy", "test")]["extra"]["n_train_images"] == 40  # train + restval
    assert seen[("voc-detection", "test")]["extra"]["n_images"] == 12
    assert seen[("imagenet-zeroshot", "val")]["extra"]["n_templates"] == 80
