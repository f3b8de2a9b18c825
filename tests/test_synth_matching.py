"""The synthetic matching benchmarks (``captionsel/``, ``winoground/`` of the world; :mod:`loupe_bench.data.
synth.matching`), checked against the world's COCO annotations and pixels by a caption reader written here,
independently of the generator."""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import loupe_bench.data.synth.matching as sm
from loupe_bench.data.synth import SIZES, SceneObject, Scene, generate_world, sample_world

SPLITS = ("test", "comptest")
SAME_LENGTH = ("replace_colour", "replace_shape", "swap_colours", "swap_parts", "replace_relation")
KINDS = SAME_LENGTH + ("add_object", "add_attribute")
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


# ------------------------------------------------------------------------------------------ an independent reader
class Reader:
    """Reads a caption of the world's language (vocabulary from ``world.json``) and decides it against objects
    ``{"shape", "colour", "colour2", "size", "bbox"}``: a caption holds when some injective assignment of objects to
    its phrases fits every phrase and makes its relation / location / count statement true."""

    def __init__(self, world: Path):
        meta = json.loads((world / "world.json").read_text())
        self.n = meta["image_size"]
        self.heldout = {tuple(c) for c in meta["heldout_combos"]}
        self.colours, self.shapes = list(meta["colours"]), list(meta["shapes"])
        col = "|".join(self.colours)
        self.phrase = re.compile(rf"(?:(small|large) )?((?:{col})(?:-and-(?:{col}))?) ({'|'.join(self.shapes)})")
        p = r"(?:(?:small|large) )?[a-z-]+ [a-z]+"
        loc = r"in the centre|on the (?:left|right)|at the (?:top|bottom)|in the (?:top|bottom) (?:left|right) corner"
        self.templates = [
            rf"a {p}", rf"a {p} on a (?:noisy|striped|checkered|shaded) background", rf"there is a {p} (?P<loc>{loc})",
            rf"a picture of a {p}", rf"a (?P<single>single) {p}",
            rf"(?:there is )?a {p} (?:is )?(?P<rel>left of|right of|above|below|next to) a {p}",
            rf"a {p} and a {p}", rf"a {p}, a {p} and a {p}", rf"(?P<count>two|three|four|five) shapes including a {p}",
        ]

    def parse(self, text: str) -> dict:
        for t in self.templates:
            m = re.fullmatch(t, text)
            if m:
                phrases = [(s or None, tuple(c.split("-and-")), sh) for s, c, sh in self.phrase.findall(text)]
                assert len(phrases) == t.count("[a-z-]+ [a-z]+"), text  # every phrase slot read in the vocabulary
                return {"phrases": phrases, **{k: v for k, v in m.groupdict().items() if v}}
        raise AssertionError(f"caption outside the world's templates: {text!r}")

    def relation(self, a: dict, b: dict) -> str:
        (ax, ay, aw, ah), (bx, by, bw, bh) = a["bbox"], b["bbox"]
        dx, dy = (ax + aw / 2) - (bx + bw / 2), (ay + ah / 2) - (by + bh / 2)
        if abs(dx) < 0.1 * self.n and abs(dy) < 0.1 * self.n:
            return "next to"
        if abs(dx) >= abs(dy):
            return "left of" if dx < 0 else "right of"
        return "above" if dy < 0 else "below"

    def location(self, a: dict) -> str:
        x, y, w, h = a["bbox"]
        cx, cy, third = x + w / 2, y + h / 2, self.n / 3
        v = "top" if cy < third else "bottom" if cy > 2 * third else "middle"
        hz = "left" if cx < third else "right" if cx > 2 * third else "centre"
        if (v, hz) == ("middle", "centre"):
            return "in the centre"
        return f"on the {hz}" if v == "middle" else f"at the {v}" if hz == "centre" else f"in the {v} {hz} corner"

    @staticmethod
    def fits(obj: dict, phrase: tuple, strict: bool) -> bool:
        size, colours, shape = phrase
        if obj["shape"] != shape or (size and obj["size"] != size):
            return False
        have = (obj["colour"],) if obj["colour2"] is None else (obj["colour"], obj["colour2"])
        if strict or len(colours) == 2:
            return have == colours
        return colours[0] in have

    def holds(self, text: str, objs: list, strict: bool) -> bool:
        c = self.parse(text)
        counts = {"two": 2, "three": 3, "four": 4, "five": 5}
        if ("count" in c and counts[c["count"]] != len(objs)) or ("single" in c and len(objs) != 1):
            return False
        for chosen in itertools.permutations(objs, len(c["phrases"])):
            if not all(self.fits(o, p, strict) for o, p in zip(chosen, c["phrases"])):
                continue
            if "rel" in c and self.relation(chosen[0], chosen[1]) != c["rel"]:
                continue
            if "loc" in c and self.location(chosen[0]) != c["loc"]:
                continue
            return True
        return False


def _coco_objects(world: Path, split: str) -> dict:
    """``{file name: [object]}`` from ``annotations/instances_<split>.json`` (plain JSON, categories by id)."""
    doc = json.loads((world / "annotations" / f"instances_{split}.json").read_text())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    names = {im["id"]: im["file_name"] for im in doc["images"]}
    out = {name: [] for name in names.values()}
    for a in doc["annotations"]:
        out[names[a["image_id"]]].append({"shape": cats[a["category_id"]], "colour": a["colour"],
                                          "colour2": a["colour2"], "size": a["size"], "bbox": a["bbox"]})
    return out


def _items(world: Path, split: str, kind: str) -> list:
    return list(json.loads((world / "captionsel" / split / f"{kind}.json").read_text()).values())


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ caption selection
@pytest.mark.parametrize("split", SPLITS)
def test_positives_true_negatives_false(tiny_world, split):
    """Every positive holds for its image read strictly (exact colours); every negative fails even read leniently
    (a flat colour word fits either half of a two-part object); images belong to the split."""
    reader = Reader(tiny_world)
    objects = _coco_objects(tiny_world, split)
    for kind in KINDS:
        items = _items(tiny_world, split, kind)
        assert len(items) >= 5, (kind, len(items))
        for it in items:
            objs = objects[it["filename"]]
            assert reader.holds(it["caption"], objs, strict=True), (kind, it)
            assert not reader.holds(it["negative_caption"], objs, strict=False), (kind, it)


def _diff(a: str, b: str) -> list:
    return [(x, y) for x, y in zip(a.split(), b.split()) if x != y]


@pytest.mark.parametrize("split", SPLITS)
def test_negatives_change_what_the_kind_says(tiny_world, split):
    """Word-level structure per kind; the replace / swap kinds keep the template and the word count (no
    text-only length shortcut); add_attribute inserts one size word, add_object one phrase."""
    reader = Reader(tiny_world)
    colour_words = {"-and-".join(p) for p in itertools.product(reader.colours, repeat=2)} | set(reader.colours)
    checks = {
        "replace_colour": lambda d: len(d) == 1 and {d[0][0], d[0][1]} <= colour_words,
        "replace_shape": lambda d: len(d) == 1 and {d[0][0].rstrip(","), d[0][1].rstrip(",")} <= set(reader.shapes),
        "swap_colours": lambda d: len(d) == 2 and d[0] == d[1][::-1] and {d[0][0], d[0][1]} <= colour_words,
        "swap_parts": lambda d: len(d) == 1 and d[0][1].split("-and-") == d[0][0].split("-and-")[::-1],
        "replace_relation": lambda d: len(d) == 1 and OPPOSITE.get(d[0][0]) == d[0][1],
    }
    for kind in KINDS:
        for it in _items(tiny_world, split, kind):
            pos, neg = it["caption"], it["negative_caption"]
            if kind in SAME_LENGTH:
                assert len(pos.split()) == len(neg.split()), (kind, it)
                assert checks[kind](_diff(pos, neg)), (kind, it)
            elif kind == "add_attribute":
                p, n = pos.split(), neg.split()
                extra = [i for i in range(len(n)) if p[:i] + n[i + 1:] == p]
                assert extra and n[extra[0]] in ("small", "large"), it
            else:
                pp, nn = reader.parse(pos)["phrases"], reader.parse(neg)["phrases"]
                assert len(nn) == len(pp) + 1 and nn[:-1] == pp and len(pp) in (1, 2), it


def test_test_split_names_no_heldout_combination(tiny_world):
    """No caption of the ``test`` split names a held-out (top colour, shape); ``comptest`` positives do."""
    reader = Reader(tiny_world)
    comp_hits = 0
    for split in SPLITS:
        for kind in KINDS:
            for it in _items(tiny_world, split, kind):
                for text in (it["caption"], it["negative_caption"]):
                    hits = [p for p in reader.parse(text)["phrases"] if (p[1][0], p[2]) in reader.heldout]
                    assert split == "comptest" or not hits, it
                    comp_hits += len(hits)
    assert comp_hits > 20


def test_falseness_filter_on_a_closed_case():
    """Red circle + blue circle, caption "a red circle and a blue circle": swapping the colours gives a true
    caption, so there is no swap_colours item; no replace_colour negative names a colour a circle has, and in the
    test split none names a held-out combination."""
    objs = [SceneObject("circle", "red", "large", (4, 20, 20, 20), (225, 30, 30)),
            SceneObject("circle", "blue", "small", (40, 22, 14, 14), (35, 70, 230))]
    text = "a red circle and a blue circle"
    scene = Scene(1, "test", "noisy", objs, [(text, [(2, 12, 0), (19, 30, 1)])])
    rng = np.random.default_rng(0)
    assert sm.caption_candidates(rng, "swap_colours", scene, 64, limit=100) == []
    negs = {n for _, n in sm.caption_candidates(rng, "replace_colour", scene, 64, limit=100)}
    # the colours outside {red, blue} for each phrase, less green: (green, circle) is held out of the test split
    others = ("yellow", "purple", "cyan")
    assert negs == {f"a {c} circle and a blue circle" for c in others} | {f"a red circle and a {c} circle"
                                                                           for c in others}
    scene.split = "comptest"
    negs = {n for _, n in sm.caption_candidates(rng, "replace_colour", scene, 64, limit=100)}
    assert len(negs) == 8 and "a green circle and a blue circle" in negs
    rel = [n for _, n in sm.caption_candidates(rng, "replace_relation", scene, 64, limit=100)]
    assert rel == []  # the caption has no relation


# ------------------------------------------------------------------------------------------------ winoground
def _nearest(rgb, table: dict) -> str:
    names = list(table)
    d = ((np.array([table[c] for c in names], float) - np.asarray(rgb, float)) ** 2).sum(-1)
    return names[int(np.argmin(d))]


def _wino(world: Path, split: str):
    root = world / "winoground" / split
    lines = [json.loads(x) for x in (root / "examples.jsonl").read_text().splitlines()]
    return root, lines, json.loads((root / "objects.json").read_text())


@pytest.mark.parametrize("split", SPLITS)
def test_winoground_pairs(tiny_world, split):
    """Real layout; caption i holds for image i only; pixels outside the objects' boxes equal; every object shows
    its stated colours (top and bottom half) at its box; the pair differs as its tag says."""
    reader = Reader(tiny_world)
    table = {k: v for k, v in json.loads((tiny_world / "world.json").read_text())["colours"].items()}
    root, lines, objects = _wino(tiny_world, split)
    assert len(lines) == min(sm.WINOGROUND_MAX, SIZES["tiny"][split])
    assert {x["tag"] for x in lines} == {"swap_colours", "swap_relation", "swap_parts"}
    for i, ex in enumerate(lines):
        assert list(ex) == ["id", "image_0", "image_1", "caption_0", "caption_1", "tag", "secondary_tag",
                            "num_main_preds", "collapsed_tag"] and ex["id"] == i
        objs = [objects[ex["image_0"]], objects[ex["image_1"]]]
        pix = [np.asarray(Image.open(root / "images" / f"{ex[f'image_{k}']}.png").convert("RGB")) for k in (0, 1)]
        for k in (0, 1):
            assert reader.holds(ex[f"caption_{k}"], objs[k], strict=True), ex
            assert not reader.holds(ex[f"caption_{1 - k}"], objs[k], strict=False), ex
            for o in objs[k]:
                x, y, w, h = o["bbox"]
                assert _nearest(pix[k][y + int(0.3 * h), x + w // 2], table) == o["colour"], (ex, o)
                assert _nearest(pix[k][y + int(0.72 * h), x + w // 2], table) == (o["colour2"] or o["colour"])
        outside = np.ones(pix[0].shape[:2], bool)
        for o in objs[0] + objs[1]:
            x, y, w, h = o["bbox"]
            outside[y:y + h, x:x + w] = False
        assert outside.sum() > 0.3 * outside.size and (pix[0][outside] == pix[1][outside]).all()
        assert (pix[0] != pix[1]).any()
        _check_swap(ex["tag"], objs[0], objs[1])


def _check_swap(tag: str, a: list, b: list) -> None:
    """What changes between the two images' objects (two objects each, same order)."""
    def colours(o):
        return (o["colour"], o["colour2"])
    assert [o["shape"] for o in a] == [o["shape"] for o in b] and len(a) == 2 and a[0]["shape"] != a[1]["shape"]
    if tag == "swap_relation":
        centre = [[(o["bbox"][0] + o["bbox"][2] // 2, o["bbox"][1] + o["bbox"][3] // 2) for o in x] for x in (a, b)]
        assert centre[1] == centre[0][::-1] and [colours(o) for o in a] == [colours(o) for o in b]
        return
    assert [o["bbox"] for o in a] == [o["bbox"] for o in b]
    if tag == "swap_colours":
        assert [colours(o) for o in b] == [colours(o) for o in a][::-1]
    else:
        assert colours(b[0]) == colours(a[0])[::-1] and colours(b[1]) == colours(a[1]) and a[0]["colour2"]


def test_winoground_heldout_combinations(tiny_world):
    """``test`` pairs show no held-out (top colour, shape); every ``comptest`` pair shows one."""
    heldout = Reader(tiny_world).heldout
    for split in SPLITS:
        _, lines, objects = _wino(tiny_world, split)
        for ex in lines:
            found = [o for k in (0, 1) for o in objects[ex[f"image_{k}"]] if (o["colour"], o["shape"]) in heldout]
            assert bool(found) == (split == "comptest"), ex


# ------------------------------------------------------------------------------------------------ the world
@pytest.fixture(scope="module")
def world_without_matching(tmp_path_factory) -> Path:
    """The tiny world generated with :func:`~loupe_bench.data.synth.matching.write_matching` disabled."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sm, "write_matching", lambda *a, **k: None)
        return generate_world(tmp_path_factory.mktemp("nomatch") / "w", seed=0, size="tiny", image_size=64)


def test_other_world_files_unchanged(tiny_world, world_without_matching):
    """Every file of a world generated without the matching writer is byte-identical in the full world; the full
    world adds only ``captionsel/`` and ``winoground/``; world.json and README.md differ only by their entries."""
    full, bare = _tree(tiny_world), _tree(world_without_matching)
    assert not any(k.startswith(("captionsel", "winoground")) for k in bare)
    assert sorted(k for k in full if not k.startswith(("captionsel/", "winoground/"))) == sorted(bare)
    assert {k: v for k, v in bare.items() if k not in ("world.json", "README.md")} == \
        {k: full[k] for k in bare if k not in ("world.json", "README.md")}
    meta, meta0 = (json.loads((w / "world.json").read_text()) for w in (tiny_world, world_without_matching))
    counts = meta.pop("matching")
    for name in ("captionsel", "winoground"):
        assert meta["files"].pop(name) == {split: f"{name}/{split}" for split in SPLITS}
    assert meta == meta0
    for split in SPLITS:
        for kind in KINDS:
            assert counts["captionsel"][split][kind] == len(_items(tiny_world, split, kind))
        assert sum(counts["winoground"][split].values()) == len(_wino(tiny_world, split)[1])
    readme = [ln for ln in (tiny_world / "README.md").read_text().splitlines()
              if not ln.startswith(("| `captionsel/", "| `winoground/"))]
    assert readme == (world_without_matching / "README.md").read_text().splitlines()


def test_same_seed_same_bytes(tiny_world, tmp_path):
    """The writer run again on a freshly sampled world gives byte-identical folders."""
    rendered = sample_world(0, SIZES["tiny"], 64)
    sm.write_matching(tmp_path, rendered, 0, 64)
    for name in ("captionsel", "winoground"):
        assert _tree(tmp_path / name) == _tree(tiny_world / name)


# ------------------------------------------------------------------------------------------------ the real loaders
@pytest.mark.parametrize("split", SPLITS)
def test_real_loaders_read_the_files(tiny_world, split):
    """The ``sugarcrepe`` loader reads every kind file (subset = ``split`` option, images under the world's
    ``images/``) and the ``winoground`` loader the split folder: same items, texts and image files."""
    from loupe_bench.data import load_dataset

    for kind in KINDS:
        items = _items(tiny_world, split, kind)
        recs = load_dataset("sugarcrepe", tiny_world / "captionsel" / split, split=kind,
                            image_root=tiny_world / "images")
        assert [(g.texts, g.images, g.kind) for g in recs.groups] == [
            ((it["caption"], it["negative_caption"]), (tiny_world / "images" / it["filename"],), kind)
            for it in items]
    root, lines, _ = _wino(tiny_world, split)
    recs = load_dataset("winoground", root, split=split)
    assert [(g.group_id, g.texts, g.images, g.kind, dict(g.tags)) for g in recs.groups] == [
        (str(ex["id"]), (ex["caption_0"], ex["caption_1"]),
         (root / "images" / f"{ex['image_0']}.png", root / "images" / f"{ex['image_1']}.png"), ex["tag"],
         {"secondary_tag": "", "collapsed_tag": ex["collapsed_tag"], "num_main_preds": "1"}) for ex in lines]


# ------------------------------------------------------------------------------------------------- shipped specs
def _eval(task: str, world: Path, model):
    from loupe_bench.tasks import TASK_TYPES, load_adapters, load_task

    spec = load_task(task)
    adapter = load_adapters().get(spec.type)(spec)
    return {split: adapter.run(model, world, split) for split in spec.splits}


@pytest.mark.parametrize("task", ["synthetic-caption-selection", "synthetic-winoground"])
def test_synthetic_matching_specs_per_kind_and_chance(tiny_world, task):
    """The shipped synthetic specs read the world's files per split; every per-kind metric equals the mean of that
    kind's per-item hits (an independent recount), and the chance row is 1/2 (two texts) or 1/4, 1/4, 1/6."""
    import numpy as np

    from loupe_bench.models import load_model

    import torch

    torch.manual_seed(0)
    model = load_model("clip-tiny")
    model.eval()
    out = _eval(task, tiny_world, model)
    for split in ("test", "comptest"):
        res = out[split]
        ids = res.extra["item_ids"]
        if task == "synthetic-caption-selection":
            kinds = []  # (id, kind) in the loader's order: subset files sorted by name, entries in file order
            for f in sorted((tiny_world / "captionsel" / split).glob("*.json")):
                kinds += [(str(k), f.stem) for k in json.loads(f.read_text())]
            hits, name, chance = np.array(res.per_item["acc"]), "acc", {"acc": 0.5}
        else:
            rows = [json.loads(line) for line in
                    (tiny_world / "winoground" / split / "examples.jsonl").read_text().splitlines()]
            kinds = [(str(r["id"]), r["tag"]) for r in rows]
            hits, name = np.array(res.per_item["group_score"]), "group_score"
            chance = {"text_score": 0.25, "image_score": 0.25, "group_score": 1 / 6}
        assert ids == [i for i, _ in kinds]
        for kind in {k for _, k in kinds}:
            sel = np.array([k == kind for _, k in kinds])
            assert res.metrics[f"{name}:{kind}"].value == pytest.approx(float(hits[sel].mean()))
            assert res.reference_rows["chance"][f"{name}:{kind}"].value == pytest.approx(chance[name])
        for metric, value in chance.items():
            assert res.reference_rows["chance"][metric].value == pytest.approx(value)
