"""The synthetic world: determinism, layout, and the properties the benchmark relies on."""
from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loupe_bench.data import load_world
from loupe_bench.data.synth import COLOURS, HELDOUT_COMBOS, SHAPES, SIZES, generate_world, relation, SceneObject
from loupe_bench.errors import SpecError


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _coco_all(world: Path) -> dict:
    return json.loads((world / "refsynth" / "instances.json").read_text())


def test_same_seed_identical_bytes_and_worker_count_irrelevant(tiny_world, tmp_path):
    again = generate_world(tmp_path / "again", seed=0, size="tiny", image_size=64, workers=2)
    a, b = _tree_bytes(tiny_world), _tree_bytes(again)
    assert sorted(a) == sorted(b)
    diff = [k for k in a if a[k] != b[k]]
    assert diff == []


def test_other_seed_differs(tiny_world, tmp_path):
    other = generate_world(tmp_path / "other", seed=1, size="tiny", image_size=64)
    assert (other / "images" / "000001.jpg").read_bytes() != (tiny_world / "images" / "000001.jpg").read_bytes()
    assert (other / "dataset_synthetic.json").read_bytes() != (tiny_world / "dataset_synthetic.json").read_bytes()


def test_bad_options(tmp_path):
    with pytest.raises(SpecError):
        generate_world(tmp_path / "x", size="huge")
    with pytest.raises(SpecError):
        generate_world(tmp_path / "x", image_size=8)


def test_layout_and_counts(tiny_world):
    w = load_world(tiny_world)
    assert w.splits == SIZES["tiny"]
    for rel in ["README.md", "world.json", "dataset_synthetic.json", "phrases.json", "refsynth/instances.json",
                "refsynth/refs(unc).p", "classification/classnames.txt"]:
        assert (tiny_world / rel).is_file(), rel
    for split, n in SIZES["tiny"].items():
        inst = json.loads((tiny_world / "annotations" / f"instances_{split}.json").read_text())
        assert len(inst["images"]) == n
        assert [p.name for p in w.shards(split)] == [f"{split}-000000.tar"]
    kar = json.loads((tiny_world / "dataset_synthetic.json").read_text())
    assert kar["dataset"] == "synthetic"
    assert len(kar["images"]) == sum(SIZES["tiny"].values())
    for im in kar["images"]:
        assert len(im["sentences"]) == 5 and im["sentids"] == [s["sentid"] for s in im["sentences"]]
        assert (tiny_world / im["filepath"] / im["filename"]).is_file()
        with Image.open(tiny_world / im["filepath"] / im["filename"]) as pic:
            assert pic.size == (64, 64) and pic.format == "JPEG"
    assert (tiny_world / "classification" / "classnames.txt").read_text().split() == list(SHAPES)
    assert "comptest" in (tiny_world / "README.md").read_text()


def test_phrases_match_captions_and_annotations(tiny_world):
    kar = json.loads((tiny_world / "dataset_synthetic.json").read_text())
    phrases = json.loads((tiny_world / "phrases.json").read_text())
    anns = {a["id"]: a for a in _coco_all(tiny_world)["annotations"]}
    n_phr = 0
    for im in kar["images"]:
        for s in im["sentences"]:
            plist = phrases[str(s["sentid"])]
            assert 1 <= len(plist) <= 3
            for p in plist:
                n_phr += 1
                assert s["raw"][p["start"]:p["end"]] == p["text"]
                a = anns[p["ann_id"]]
                assert a["image_id"] == im["cocoid"] and a["bbox"] == p["bbox"]
                # the phrase names the referred object's colour and shape, and its size when it says one
                words = p["text"].split()
                assert words[-1] == SHAPES[a["category_id"] - 1] and words[-2] == a["colour"]
                if len(words) == 3:
                    assert words[0] == a["size"]
            assert s["tokens"] == [t for t in s["raw"].replace(",", " ").split()]
    assert n_phr > len(kar["images"]) * 5


def test_objects_sizes_and_labels(tiny_world):
    coco = _coco_all(tiny_world)
    by_img = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    counts = Counter(len(v) for v in by_img.values())
    assert set(counts) <= {1, 2, 3, 4, 5} and len(counts) >= 3
    labels = {}
    for split in SIZES["tiny"]:
        for cls_dir in (tiny_world / "classification" / split).iterdir():
            for f in cls_dir.iterdir():
                labels[int(f.stem)] = cls_dir.name
    for iid, anns in by_img.items():
        large = [a for a in anns if a["size"] == "large"]
        assert len(large) == 1
        assert labels[iid] == SHAPES[large[0]["category_id"] - 1]
        for a in anns:
            x, y, w, h = a["bbox"]
            assert w >= 12 and h >= 12 and x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
            assert 0 < a["area"] <= w * h
    assert len(labels) == len(by_img) == sum(SIZES["tiny"].values())


def test_top_object_has_its_colour(tiny_world):
    """The last-drawn (unoccluded) object's centre pixel is nearest to its nominal colour."""
    coco = _coco_all(tiny_world)
    last = {}
    for a in coco["annotations"]:
        last[a["image_id"]] = a  # annotations are in drawing order
    names = list(COLOURS)
    table = np.array([COLOURS[c] for c in names], dtype=float)
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    for iid, a in last.items():
        x, y, w, h = a["bbox"]
        pix = np.asarray(Image.open(tiny_world / "images" / files[iid]).convert("RGB"), dtype=float)
        cy, cx = int(y + h / 2), int(x + w / 2)
        rgb = pix[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
        assert names[int(np.argmin(((table - rgb) ** 2).sum(1)))] == a["colour"], (iid, rgb)


def test_compositional_split(tiny_world):
    coco = _coco_all(tiny_world)
    split_of = {}
    for split in SIZES["tiny"]:
        for im in json.loads((tiny_world / "annotations" / f"instances_{split}.json").read_text())["images"]:
            split_of[im["id"]] = split
    held = set(HELDOUT_COMBOS)
    comp_imgs = set()
    for a in coco["annotations"]:
        combo = (a["colour"], SHAPES[a["category_id"] - 1])
        if split_of[a["image_id"]] != "comptest":
            assert combo not in held
        elif combo in held:
            comp_imgs.add(a["image_id"])
    assert comp_imgs == {i for i, s in split_of.items() if s == "comptest"}
    # every comptest caption mentions a held-out combination
    kar = json.loads((tiny_world / "dataset_synthetic.json").read_text())
    for im in kar["images"]:
        if im["split"] == "comptest":
            for s in im["sentences"]:
                assert any(f"{c} {sh}" in s["raw"] for c, sh in held), s["raw"]


def test_referring_expressions_are_unambiguous(tiny_world):
    coco = _coco_all(tiny_world)
    anns = {a["id"]: a for a in coco["annotations"]}
    by_img = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    with open(tiny_world / "refsynth" / "refs(unc).p", "rb") as fh:
        refs = pickle.load(fh)
    assert len(refs) > 20
    for r in refs:
        t = anns[r["ann_id"]]
        assert t["image_id"] == r["image_id"] and t["category_id"] == r["category_id"]
        shape = SHAPES[t["category_id"] - 1]
        others = [a for a in by_img[r["image_id"]] if a["id"] != t["id"]]
        # a distractor shares the shape or the colour: bag of words of one attribute is not enough
        assert any(SHAPES[a["category_id"] - 1] == shape or a["colour"] == t["colour"] for a in others)
        first = r["sentences"][0]["sent"]
        assert first.startswith("the ") and f"{t['colour']} {shape}" in first
        if first == f"the {t['colour']} {shape}":
            assert not any(SHAPES[a["category_id"] - 1] == shape and a["colour"] == t["colour"] for a in others)
        if first == f"the {t['size']} {t['colour']} {shape}":
            assert not any(SHAPES[a["category_id"] - 1] == shape and a["colour"] == t["colour"]
                           and a["size"] == t["size"] for a in others)


def test_relation_words():
    a = SceneObject("circle", "red", "small", (0, 20, 10, 10), (0, 0, 0))
    b = SceneObject("square", "blue", "small", (40, 22, 10, 10), (0, 0, 0))
    c = SceneObject("square", "blue", "small", (2, 50, 10, 10), (0, 0, 0))
    assert relation(a, b, 64) == "left of" and relation(b, a, 64) == "right of"
    assert relation(a, c, 64) == "above" and relation(c, a, 64) == "below"
    assert relation(a, a, 64) == "next to"


def test_rerun_replaces_a_world_and_refuses_foreign_folders(tmp_path):
    from loupe_bench.errors import DataError

    out = tmp_path / "w"
    generate_world(out, seed=0, size="tiny")
    (out / "images" / "999999.jpg").write_bytes(b"stale")
    generate_world(out, seed=0, size="tiny")
    assert not (out / "images" / "999999.jpg").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing"):
        generate_world(foreign, size="tiny")
    assert (foreign / "notes.txt").read_text() == "keep me"
