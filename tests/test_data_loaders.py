"""Every loader reads the synthetic world written in its format back (round trip against independent readers)."""
from __future__ import annotations

import json
import pickle
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from loupe_bench.data import DATASETS, list_datasets, load_dataset, load_world
from loupe_bench.data.export import write_csv, write_hf, write_voc
from loupe_bench.data.formats.refer import read_refs_pickle, split_matches
from loupe_bench.data.synth import SHAPES
from loupe_bench.errors import DataError, SpecError


def _karpathy_raw(world):
    return json.loads((world / "dataset_synthetic.json").read_text())


def _captions_by_image(recs):
    return {r.image_id: [(c.sent_id, c.text) for c in r.captions] for r in recs.images}


@pytest.fixture(scope="module")
def expected_captions(tiny_world):
    return {im["cocoid"]: [(s["sentid"], s["raw"]) for s in im["sentences"]] for im in _karpathy_raw(tiny_world)["images"]}


def test_registry_and_listing():
    names = {n for n, _ in list_datasets()}
    assert {"karpathy", "coco", "refer", "voc", "webdataset", "csv", "hf", "imagefolder", "synthetic"} <= names
    assert all(d for _, d in list_datasets())
    with pytest.raises(SpecError):
        DATASETS.get("nope")


def test_karpathy_round_trip(tiny_world, expected_captions):
    recs = load_dataset("karpathy", tiny_world / "dataset_synthetic.json")
    assert _captions_by_image(recs) == expected_captions
    raw = {im["cocoid"]: im for im in _karpathy_raw(tiny_world)["images"]}
    phrases = json.loads((tiny_world / "phrases.json").read_text())
    for r in recs.images:
        assert r.split == raw[r.image_id]["split"] and r.path == tiny_world / "images" / raw[r.image_id]["filename"]
        assert (r.width, r.height) == (64, 64)
        for c in r.captions:
            got = [(p.start, p.end, p.text, p.ann_id, list(p.bbox)) for p in c.phrases]
            want = [(p["start"], p["end"], p["text"], p["ann_id"], p["bbox"]) for p in phrases[str(c.sent_id)]]
            assert got == want
    test = load_dataset("karpathy", tiny_world / "dataset_synthetic.json", split="test")
    assert len(test.images) == 12 and {r.split for r in test.images} == {"test"}
    nophr = load_dataset("karpathy", tiny_world / "dataset_synthetic.json", phrases=False)
    assert all(not c.phrases for r in nophr.images for c in r.captions)


def test_coco_round_trip_matches_pycocotools(tiny_world):
    from pycocotools.coco import COCO

    for split in ("train", "comptest"):
        path = tiny_world / "annotations" / f"instances_{split}.json"
        coco = COCO(str(path))
        recs = load_dataset("coco", path)
        assert sorted(r.image_id for r in recs.images) == sorted(coco.getImgIds())
        assert recs.categories == {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
        for r in recs.images:
            assert r.split == split and r.path.is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[r.image_id]))
            assert [(b.ann_id, b.category_id, list(b.bbox)) for b in r.boxes] == [
                (a["id"], a["category_id"], a["bbox"]) for a in anns
            ]
    COCO(str(tiny_world / "refsynth" / "instances.json"))


def test_refer_round_trip(tiny_world):
    with open(tiny_world / "refsynth" / "refs(unc).p", "rb") as fh:
        raw = pickle.load(fh)
    inst = json.loads((tiny_world / "refsynth" / "instances.json").read_text())
    boxes = {a["id"]: a["bbox"] for a in inst["annotations"]}
    recs = load_dataset("refer", tiny_world / "refsynth", split_by="unc")
    assert [(r.ref_id, r.ann_id, r.image_id, r.split, list(r.sentences), list(r.bbox), list(r.sent_ids)) for r in recs.refs] == [
        (x["ref_id"], x["ann_id"], x["image_id"], x["split"], [s["sent"] for s in x["sentences"]], boxes[x["ann_id"]],
         x["sent_ids"]) for x in raw
    ]
    val = load_dataset("refer", tiny_world / "refsynth", split="val")
    assert val.refs and {r.split for r in val.refs} == {"val"}
    assert {im.image_id for im in val.images} == {r.image_id for r in val.refs}
    with pytest.raises(DataError, match="splitBy"):
        load_dataset("refer", tiny_world / "refsynth", split_by="bogus")
    assert split_matches("testA", "testAB") and not split_matches("testA", "testB")


def _py2_pickle(refs):
    """A protocol-2 pickle as Python 2 writes it: str values as 8-bit SHORT_BINSTRING (no globals)."""
    def obj(v):
        if isinstance(v, str):
            b = v.encode("latin1")
            return b"U" + bytes([len(b)]) + b
        if isinstance(v, int):
            return b"J" + v.to_bytes(4, "little", signed=True)
        if isinstance(v, list):
            return b"](" + b"".join(obj(x) for x in v) + b"e"
        if isinstance(v, dict):
            return b"}(" + b"".join(obj(k) + obj(x) for k, x in v.items()) + b"u"
        raise TypeError(v)
    return b"\x80\x02" + obj(refs) + b"."


def test_refs_pickle_python2_latin1_and_no_globals(tmp_path):
    refs = [{"ref_id": 7, "ann_id": 1, "image_id": 1, "split": "testA", "category_id": 1,
             "sentences": [{"sent": "the caf\xe9 sign", "sent_id": 0, "tokens": ["the"]}]}]
    p = tmp_path / "refs(unc).p"
    p.write_bytes(_py2_pickle(refs))
    got = read_refs_pickle(p)
    assert got[0]["sentences"][0]["sent"] == "the caf\xe9 sign" and got[0]["ref_id"] == 7

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    bad = tmp_path / "refs(umd).p"
    bad.write_bytes(pickle.dumps([Evil()], protocol=2))
    with pytest.raises(DataError, match="refusing to load global"):
        read_refs_pickle(bad)


def test_voc_round_trip(tiny_world, tmp_path):
    voc = write_voc(tiny_world, tmp_path / "voc")
    recs = load_dataset("voc", voc)
    coco = json.loads((tiny_world / "refsynth" / "instances.json").read_text())
    want = {}
    for a in coco["annotations"]:
        want.setdefault(a["image_id"], []).append((a["category_id"], a["bbox"]))
    assert {r.image_id: [(b.category_id, list(b.bbox)) for b in r.boxes] for r in recs.images} == want
    assert recs.categories == {i + 1: s for i, s in enumerate(SHAPES)}
    # by hand: VOC corners are 1-based inclusive
    first = coco["annotations"][0]
    x, y, w, h = first["bbox"]
    bb = ET.parse(voc / "Annotations" / f"{first['image_id']:06d}.xml").getroot().find("object/bndbox")
    assert [float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")] == [x + 1, y + 1, x + w, y + h]
    val = load_dataset("voc", voc, split="val")
    assert len(val.images) == 12 and {r.split for r in val.images} == {"val"}


def test_webdataset_round_trip(tiny_world, expected_captions):
    recs = load_dataset("webdataset", tiny_world / "shards")
    assert _captions_by_image(recs) == expected_captions
    kar = load_dataset("karpathy", tiny_world / "dataset_synthetic.json")
    phr = {c.sent_id: c.phrases for r in kar.images for c in r.captions}
    assert all(c.phrases == phr[c.sent_id] for r in recs.images for c in r.captions)
    pattern = str(tiny_world / "shards" / "{train,val}-{000000..000000}.tar")
    part = load_dataset("webdataset", pattern)
    assert {r.split for r in part.images} == {"train", "val"} and len(part.images) == 52
    one = load_dataset("webdataset", tiny_world / "shards" / "test-000000.tar")
    assert len(one.images) == 12


def test_csv_round_trip(tiny_world, tmp_path, expected_captions):
    path = write_csv(tiny_world, tmp_path / "csv" / "captions.csv")
    assert path.read_text().splitlines()[0] == "filepath,caption,image_id,split,sent_id"
    recs = load_dataset("csv", path)
    assert _captions_by_image(recs) == expected_captions
    # a minimal open_clip-style CSV (only filepath,caption) also loads
    import csv

    rows = list(csv.reader(path.read_text().splitlines()))[1:6]
    mini = tmp_path / "csv" / "mini.csv"
    with open(mini, "w", newline="") as fh:
        csv.writer(fh).writerows([["filepath", "caption"]] + [r[:2] for r in rows])
    m = load_dataset("csv", mini)
    assert len(m.images) == 1 and [c.text for c in m.images[0].captions] == [t for _, t in expected_captions[1]]


def test_hf_round_trip(tiny_world, tmp_path, expected_captions):
    out = write_hf(tiny_world, tmp_path / "hf")
    recs = load_dataset("hf", out)
    assert _captions_by_image(recs) == expected_captions
    assert {r.split for r in recs.images} == {"train", "val", "test", "comptest"}
    test = load_dataset("hf", out, split="test")
    assert len(test.images) == 12
    import datasets

    row = datasets.load_from_disk(str(out))["test"][0]
    ref = np.asarray(Image.open(tiny_world / "images" / row["file_name"]).convert("RGB"))
    assert np.array_equal(np.asarray(row["image"].convert("RGB")), ref)
    with pytest.raises(DataError, match="Hugging Face"):
        load_dataset("hf", "no-such-user/no-such-dataset-xyz")  # offline in tests: a clear error


def test_imagefolder_round_trip(tiny_world):
    coco = json.loads((tiny_world / "refsynth" / "instances.json").read_text())
    large = {a["image_id"]: SHAPES.index(SHAPES[a["category_id"] - 1]) for a in coco["annotations"] if a["size"] == "large"}
    recs = load_dataset("imagefolder", tiny_world / "classification")
    assert recs.classnames == list(SHAPES)
    assert {s.image_id: s.label for s in recs.samples} == large
    test = load_dataset("imagefolder", tiny_world / "classification", split="test")
    assert len(test.samples) == 12 and all(s.split == "test" for s in test.samples)
    # a split folder on its own (torchvision layout) with classnames.txt one level up
    alone = load_dataset("imagefolder", tiny_world / "classification" / "val")
    assert len(alone.samples) == 12 and alone.classnames == list(SHAPES)
    for s in recs.samples:
        assert s.path.read_bytes() == (tiny_world / "images" / f"{s.image_id:06d}.jpg").read_bytes()


def test_synthetic_loader_merges_everything(tiny_world, expected_captions):
    recs = load_dataset("synthetic", tiny_world)
    assert _captions_by_image(recs) == expected_captions
    coco = json.loads((tiny_world / "refsynth" / "instances.json").read_text())
    n_boxes = sum(len(r.boxes) for r in recs.images)
    assert n_boxes == len(coco["annotations"])
    assert all(r.label is not None for r in recs.images) and len(recs.refs) > 0
    for r in recs.images:
        ids = {b.ann_id for b in r.boxes}
        assert all(p.ann_id in ids for c in r.captions for p in c.phrases)
    w = load_world(tiny_world)
    assert w.path("coco", "val") == tiny_world / "annotations" / "instances_val.json"
    assert w.classnames == tuple(SHAPES) and w.image_size == 64 and w.seed == 0


def test_imagefolder_imagenet_style_and_voc_overlapping_sets(tiny_world, tmp_path):
    import shutil

    root = tmp_path / "inet"
    wnid = {s: f"n{i:08d}" for i, s in enumerate(sorted(SHAPES, reverse=True))}
    present = []  # the classes (large-object shapes) that occur in the split: the 12 val images may miss one
    for split in ("val",):
        for shape in SHAPES:
            src = tiny_world / "classification" / split / shape
            if src.is_dir():
                present.append(shape)
                shutil.copytree(src, root / split / wnid[shape])
    assert len(present) >= 4
    (root / "classnames.txt").write_text("\n".join(f"readable {k}" for k in range(len(present))) + "\n")
    recs = load_dataset("imagefolder", root, split="val")
    order = sorted(wnid[s] for s in present)
    want = load_dataset("imagefolder", tiny_world / "classification", split="val")
    got = {s.image_id: s.label for s in recs.samples}
    assert got == {s.image_id: order.index(wnid[SHAPES[s.label]]) for s in want.samples}
    voc = write_voc(tiny_world, tmp_path / "voc")
    sets = voc / "ImageSets" / "Main"
    (sets / "trainval.txt").write_text((sets / "train.txt").read_text() + (sets / "val.txt").read_text())
    assert len(load_dataset("voc", voc, split="trainval").images) == 52
    assert len(load_dataset("voc", voc, split="train").images) == 40
