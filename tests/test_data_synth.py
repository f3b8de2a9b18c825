"""The synthetic world: determinism, layout, and the properties the benchmark relies on."""
from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loupe_bench.data import load_world
from loupe_bench.data.synth import (
    COLOURS, HELDOUT_COMBOS, KINDS, SHAPES, SIZES, TWO_PART_PROB, Scene, SceneObject, generate_world,
    load_object_kinds, relation,
)
from loupe_bench.errors import SpecError


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _coco_all(world: Path) -> dict:
    return json.loads((world / "refsynth" / "instances.json").read_text())


def _colour_words(a: dict) -> str:
    """How a caption names an annotation's colours: ``red`` (flat) or ``red-and-blue`` (two-part, top first)."""
    return a["colour"] if a["colour2"] is None else f"{a['colour']}-and-{a['colour2']}"


def _nearest_colour(rgb) -> str:
    names = list(COLOURS)
    table = np.array([COLOURS[c] for c in names], dtype=float)
    return names[int(np.argmin(((table - np.asarray(rgb, dtype=float)) ** 2).sum(-1)))]


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
                # the phrase names the referred object's colour(s) and shape, and its size when it says one; a
                # two-part object's phrase names both colours, top first ("red-and-blue square")
                words = p["text"].split()
                assert words[-1] == SHAPES[a["category_id"] - 1] and words[-2] == _colour_words(a)
                if len(words) == 3:
                    assert words[0] == a["size"]
                assert len(words) in (2, 3) and p["kind"] == a["kind"]
            # Karpathy tokens: words split at commas, spaces and the hyphens of "red-and-blue"
            assert s["tokens"] == [t for t in s["raw"].replace(",", " ").replace("-", " ").split()]
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
    """The last-drawn (unoccluded) object's colour in the JPEG: a flat object's centre pixels are nearest to its
    nominal colour; a two-part object's fully covered pixels above its middle row to its top colour and those below
    to its bottom colour (the row next to the split is skipped: JPEG blurs the edge)."""
    from loupe_bench.data.synth.render import _shape_alpha

    coco = _coco_all(tiny_world)
    last = {}
    for a in coco["annotations"]:
        last[a["image_id"]] = a  # annotations are in drawing order
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    kinds = Counter()
    for iid, a in last.items():
        x, y, w, h = (int(v) for v in a["bbox"])
        pix = np.asarray(Image.open(tiny_world / "images" / files[iid]).convert("RGB"), dtype=float)
        kinds[a["kind"]] += 1
        if a["kind"] == "flat":
            cy, cx = int(y + h / 2), int(x + w / 2)
            rgb = pix[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
            assert _nearest_colour(rgb) == a["colour"], (iid, rgb)
            continue
        obj = SceneObject(SHAPES[a["category_id"] - 1], a["colour"], a["size"], (x, y, w, h), (0, 0, 0))
        full = _shape_alpha(obj) >= 0.999
        box = pix[y:y + h, x:x + w]
        top, bottom = full.copy(), full.copy()
        top[h // 2 - 1:] = False
        bottom[:h // 2 + 1] = False
        assert top.sum() >= 4 and bottom.sum() >= 4, (iid, a)
        assert _nearest_colour(box[top].mean(0)) == a["colour"], (iid, a)
        assert _nearest_colour(box[bottom].mean(0)) == a["colour2"], (iid, a)
    assert kinds["flat"] > 5 and kinds["two-part"] > 5


@pytest.mark.parametrize("shape", SHAPES)
def test_two_part_rendered_in_two_colours_split_at_the_middle_row(shape):
    """Every fully covered pixel of a two-part object on the box rows ``y … y+h//2-1`` is nearest to its top colour
    and every one on rows ``y+h//2 …`` to its bottom colour (the rendered array, before JPEG); the coverage mask is
    the flat object's."""
    from loupe_bench.data.synth.render import _shape_alpha, render_scene

    for k, (c1, c2) in enumerate([("red", "blue"), ("yellow", "green"), ("purple", "cyan"), ("blue", "purple")]):
        rng = np.random.default_rng([7, k])
        box = (9, 6, 27, 27)  # odd side: the bottom half holds the extra row
        rgb1 = tuple(int(v) + 12 for v in COLOURS[c1])  # off-nominal by the largest jitter on every channel
        rgb2 = tuple(max(0, int(v) - 12) for v in COLOURS[c2])
        obj = SceneObject(shape, c1, "large", box, tuple(min(255, v) for v in rgb1), colour2=c2, rgb2=rgb2)
        assert obj.kind == "two-part" and obj.split_row == 6 + 13
        img, areas = render_scene(rng, Scene(1, "test", "striped", [obj]), 64)
        flat = SceneObject(shape, c1, "large", box, obj.rgb)
        alpha = _shape_alpha(obj)
        assert np.array_equal(alpha, _shape_alpha(flat)) and areas == [round(float(alpha.sum()), 2)]
        x, y, w, h = box
        full = alpha >= 0.999
        rows = np.arange(h)[:, None].repeat(w, 1)
        pix = img[y:y + h, x:x + w].astype(float)
        got = np.array([[_nearest_colour(p) for p in row] for row in pix])
        assert full[rows < h // 2].any() and full[rows >= h // 2].any()
        assert (got[full & (rows < h // 2)] == c1).all(), (shape, c1)
        assert (got[full & (rows >= h // 2)] == c2).all(), (shape, c2)
        # the split is crisp: the last top row and the first bottom row, where covered, differ
        for r in (h // 2 - 1, h // 2):
            assert set(got[r][full[r]]) <= {c1 if r < h // 2 else c2}


def test_describe_two_part():
    o = SceneObject("square", "red", "large", (0, 0, 20, 20), (0, 0, 0), colour2="blue", rgb2=(0, 0, 0))
    assert o.describe(False) == "red-and-blue square" and o.describe(True) == "large red-and-blue square"
    assert SceneObject("square", "red", "small", (0, 0, 20, 20), (0, 0, 0)).describe(True) == "small red square"
    assert SceneObject("square", "red", "small", (0, 0, 20, 20), (0, 0, 0)).kind == "flat"


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
    # every comptest caption mentions a held-out combination: "<colour> <shape>" for a flat object, "<colour>-and-
    # <colour2> <shape>" for a two-part one (held out on its top colour)
    kar = json.loads((tiny_world / "dataset_synthetic.json").read_text())
    n_two = 0
    for im in kar["images"]:
        if im["split"] == "comptest":
            for s in im["sentences"]:
                assert any(re.search(rf"(?<![-a-z]){c}(-and-[a-z]+)? {sh}\b", s["raw"]) for c, sh in held), s["raw"]
                n_two += any(re.search(rf"(?<![-a-z]){c}-and-[a-z]+ {sh}\b", s["raw"]) for c, sh in held)
    assert n_two > 0


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
        # a distractor shares the shape or a colour (either part): bag of words of one attribute is not enough
        assert any(SHAPES[a["category_id"] - 1] == shape or {a["colour"], a["colour2"]} & {t["colour"]} - {None}
                   or {a["colour"], a["colour2"]} & {t["colour2"]} - {None} for a in others)
        first = r["sentences"][0]["sent"]
        name = f"{_colour_words(t)} {shape}"
        assert first.startswith("the ") and re.search(rf"(?<![-a-z]){name}\b", first)

        def same(a):
            return SHAPES[a["category_id"] - 1] == shape and a["colour"] == t["colour"] and a["colour2"] == t["colour2"]

        if first == f"the {name}":
            assert not any(same(a) for a in others)
        if first == f"the {t['size']} {name}":
            assert not any(same(a) and a["size"] == t["size"] for a in others)


_REF = re.compile(r"^the (?:(small|large) )?([a-z]+)(?:-and-([a-z]+))? ([a-z]+)"
                  r"(?: (on the left|on the right|at the top|at the bottom))?$")


def test_referring_expressions_match_exactly_one_object(tiny_world):
    """Brute force over every scene of the world: the first sentence's attribute set (size?, colour, colour2?,
    shape) matches exactly the target among the scene's objects, or, with a position word, the target is the
    matching object furthest that way (by more than the 8 % margin); a two-part target's expression names both of
    its colours. The anchor of a second sentence shares neither the target's shape nor any of its colours."""
    coco = _coco_all(tiny_world)
    by_img = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    with open(tiny_world / "refsynth" / "refs(unc).p", "rb") as fh:
        refs = pickle.load(fh)
    margin = 0.08 * 64
    n_two = 0
    for r in refs:
        objs = by_img[r["image_id"]]
        target = next(a for a in objs if a["id"] == r["ann_id"])
        m = _REF.match(r["sentences"][0]["sent"])
        assert m, r["sentences"][0]["sent"]
        size, c1, c2, shape, where = m.groups()
        hits = [a for a in objs if a["colour"] == c1 and a["colour2"] == c2 and SHAPES[a["category_id"] - 1] == shape
                and (size is None or a["size"] == size)]
        assert target in hits
        n_two += target["kind"] == "two-part"
        if target["kind"] == "two-part":
            assert c2 == target["colour2"] is not None
        if where is None:
            assert hits == [target], (r, hits)
        else:
            def centre(a):
                x, y, w, h = a["bbox"]
                return x + w / 2, y + h / 2
            (tx, ty), rest = centre(target), [centre(a) for a in hits if a is not target]
            assert rest
            axis, sign = {"on the left": (0, -1), "on the right": (0, 1), "at the top": (1, -1),
                          "at the bottom": (1, 1)}[where]
            t = (tx, ty)[axis]
            assert all(sign * (t - c[axis]) > margin for c in rest), (r, hits)
        second = r["sentences"][1]["sent"]
        head = r["sentences"][1]["head"]
        if second != head:
            anchor_text = second.rsplit(" the ", 1)[1]
            colours_t = {target["colour"], target["colour2"]} - {None}
            anchors = [a for a in objs if f"{_colour_words(a)} {SHAPES[a['category_id'] - 1]}" == anchor_text]
            assert anchors and all(SHAPES[a["category_id"] - 1] != shape
                                   and not ({a["colour"], a["colour2"]} & colours_t) for a in anchors)
    assert n_two > 10


def _joint_distractor(o: SceneObject, others) -> bool:
    """Another object with ``o``'s shape that shares one of its colours but not its whole description."""
    cs = {o.colour, o.colour2} - {None}
    return any(p.shape == o.shape and ({p.colour, p.colour2} - {None}) & cs
               and (p.colour, p.colour2) != (o.colour, o.colour2) for p in others)


def test_two_part_fraction_and_distractors():
    """Over 1500 sampled scenes (the draws of ``make_scene``): the share of two-part objects is within 0.03 of
    :data:`TWO_PART_PROB` (sd ≈ 0.007); two-part small objects are at least 16 px (each half 8 rows, one patch of
    an 8 × 8 grid); every distractor type occurs: a swapped pair, a flat object with one part's colour, a two-part
    object sharing one part; a clear share of the two-part objects has such a distractor."""
    from loupe_bench.data.synth import sample_objects as _sample_objects

    kinds, types, with_distractor, n_two = Counter(), Counter(), 0, 0
    for i in range(1500):
        objs = _sample_objects(np.random.default_rng([0, 0, i]), 64, comp=False)
        kinds.update(o.kind for o in objs)
        for j, o in enumerate(objs):
            if o.kind != "two-part":
                continue
            n_two += 1
            assert o.colour != o.colour2 and o.box[3] // 2 >= 8
            others = objs[:j] + objs[j + 1:]
            with_distractor += _joint_distractor(o, others)
            for p in others:
                if p.shape != o.shape:
                    continue
                if (p.colour, p.colour2) == (o.colour2, o.colour):
                    types["swap"] += 1
                elif p.colour2 is None and p.colour in (o.colour, o.colour2):
                    types["flat-part"] += 1
                elif p.colour2 is not None and (p.colour == o.colour) != (p.colour2 == o.colour2):
                    types["part-shared"] += 1
    frac = kinds["two-part"] / sum(kinds.values())
    assert abs(frac - TWO_PART_PROB) < 0.03, frac
    assert min(types[t] for t in ("swap", "flat-part", "part-shared")) > 50, types
    assert with_distractor / n_two > 0.25, with_distractor / n_two


def test_kind_recorded_in_annotations_and_world(tiny_world):
    """Every COCO annotation names its ``kind`` (and ``colour2``, null exactly when flat); world.json records the
    kind settings and counts; :func:`load_object_kinds` gives each test image's objects as normalised xyxy boxes
    with kind and ann_id, in annotation order."""
    counts = Counter()
    for split in SIZES["tiny"]:
        inst = json.loads((tiny_world / "annotations" / f"instances_{split}.json").read_text())
        for a in inst["annotations"]:
            assert a["kind"] in KINDS and (a["colour2"] is None) == (a["kind"] == "flat")
            assert a["colour2"] != a["colour"] and (a["colour2"] is None or a["colour2"] in COLOURS)
            counts[a["kind"]] += 1
        if split == "test":
            kinds = load_object_kinds(tiny_world, "test")
            assert sorted(kinds) == sorted(im["id"] for im in inst["images"])
            by_img = {}
            for a in inst["annotations"]:
                x, y, w, h = a["bbox"]
                by_img.setdefault(a["image_id"], []).append(((x / 64, y / 64, (x + w) / 64, (y + h) / 64), a["kind"],
                                                             a["id"]))
            assert {k: v for k, v in kinds.items() if v} == by_img
    world = json.loads((tiny_world / "world.json").read_text())
    assert world["version"] == 4 and world["two_part_prob"] == TWO_PART_PROB and world["kinds"] == list(KINDS)
    assert world["num_objects_by_kind"] == dict(counts) and counts["two-part"] > 20
    with pytest.raises(SpecError):
        load_object_kinds(tiny_world, "nope")


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
