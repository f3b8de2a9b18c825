"""Region classification (CLIPSelf / FG-CLIP box classification; FG-OVD descriptions): closed-form planted cases,
a naive-loop reference for the ranks and their tie rules, exclusions and breakdowns, the real COCO layout through
the CLI, bad input, and the shipped synthetic specs on the tiny world."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cli_run import one_line_error, run_cli
from test_tasks import fast

from loupe_bench.data.records import tokenize
from loupe_bench.errors import DataError, SpecError
from loupe_bench.models.base import ImageFeatures, TextFeatures, TokenBatch, VLModel
from loupe_bench.tasks import load_adapters, load_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
WORDS = list(RGB)


class ColourModel(VLModel):
    """Planted features: a patch token is the L2-normalised mean RGB of its 8 × 8 pixels (8 × 8 grid of a 64 px
    input, black patches give 0); a text is the one-hot RGB axis of the colour word it names. A box painted in one
    pure colour on black, aligned to the patches, has mean token = that colour's text embedding: cosine 1 with its
    colour, 0 with the others."""

    image_size = 64
    image_mean = (0.0, 0.0, 0.0)
    image_std = (1.0, 1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.spec = {"name": "colour-stub"}
        self.anchor = nn.Parameter(torch.zeros(1))
        self.tokenizer = self._tokenize

    @staticmethod
    def _tokenize(texts):
        ids = torch.tensor([[next((i + 1 for i, w in enumerate(WORDS) if w in tokenize(t)), 0)] for t in texts])
        return TokenBatch(ids, torch.ones_like(ids), torch.zeros(len(texts), 1, 2, dtype=torch.long))

    def encode_image(self, pixels):
        tokens = nn.functional.normalize(nn.functional.avg_pool2d(pixels, 8).flatten(2).transpose(1, 2), dim=-1)
        return ImageFeatures(nn.functional.normalize(tokens.mean(1), dim=-1), tokens, (8, 8))

    def encode_text(self, input_ids, attention_mask):
        onehot = nn.functional.one_hot(input_ids[:, 0], 4)[:, 1:].float()
        return TextFeatures(onehot, onehot[:, None], attention_mask.bool())


# image, painted colour, pixel bbox, COCO area (None: the loader's w*h), iscrowd, size bin by hand
# (default thresholds 32² = 1024 and 96² = 9216 px²: small < 1024 <= medium < 9216 <= large)
PLANTED = [
    (1, "red", (8, 8, 16, 16), None, 0, "small"),        # w*h = 256
    (1, "green", (32, 32, 24, 16), 1024.0, 0, "medium"),  # exactly 32²: medium (COCOeval: small and medium)
    (1, "blue", (40, 0, 16, 8), None, 1, None),           # crowd: excluded
    (2, "blue", (0, 40, 24, 24), 9216.0, 0, "large"),     # exactly 96²: large
    (2, "red", (40, 8, 16, 24), 1023.5, 0, "small"),
    (3, "blue", (0, 0, 40, 32), 20000.0, 0, "large"),
    (3, "green", (48, 40, 16, 24), 5000.0, 0, "medium"),
    (3, "red", (48, 0, 8, 4), None, 0, "small"),          # a side of 4 px (min_box_side tests)
]


def write_planted(root: Path, names, isthing=None, rows=PLANTED) -> Path:
    """A COCO instances file + 64 px PNGs of ``rows``; category ``k`` (id k+1) is painted ``WORDS[k]`` and named
    ``names[k]``."""
    from PIL import Image, ImageDraw

    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    for k, c in enumerate(cats):
        if isthing is not None:
            c["isthing"] = isthing[k]
    anns, ims = [], {}
    for n, (iid, colour, (x, y, w, h), area, crowd, _) in enumerate(rows):
        im = ims.setdefault(iid, Image.new("RGB", (64, 64)))
        ImageDraw.Draw(im).rectangle([x, y, x + w - 1, y + h - 1], fill=RGB[colour])
        a = {"id": n + 1, "image_id": iid, "category_id": WORDS.index(colour) + 1, "bbox": [x, y, w, h],
             "iscrowd": crowd}
        if area is not None:
            a["area"] = area
        anns.append(a)
    for iid, im in ims.items():
        im.save(root / "images" / f"{iid:06d}.png")
    doc = {"images": [{"id": i, "file_name": f"{i:06d}.png", "width": 64, "height": 64} for i in sorted(ims)],
           "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(doc))
    return root


def planted_spec(**options):
    return {"name": "planted", "type": "region-classification",
            "dataset": {"name": "planted", "format": "coco", "path": "annotations/instances_{split}.json",
                        "options": {"image_root": "images"}},
            "splits": ["val"], "metrics": ["top1"], "image": {"resize": "model", "crop": "none"},
            "bootstrap": {"n_resamples": 0}, "options": {"templates": ["a photo of a {}.", "a {} thing."], **options}}


def run_spec(spec_dict, model, root, split="val"):
    spec = load_task(spec_dict)
    return load_adapters().get(spec.type)(spec).run(model, root, split)


def expected_rank(painted: int, true: int) -> int:
    """Closed form: the painted class scores 1 and every other 0; ties go to the lower class index."""
    return 0 if painted == true else 1 + sum(1 for c in range(true) if c != painted)


# ------------------------------------------------------------------------------------------------ closed form
def test_planted_boxes_are_all_right(tmp_path):
    """Box k's mean token equals class k's text embedding: top-1 = 100 %; the crowd box is left out."""
    root = write_planted(tmp_path, WORDS)
    for scoring in ("shared", "native"):
        out = run_spec(planted_spec(region_scoring=scoring, ks=[1, 2]), ColourModel(), root)
        assert out.metrics["top1"].value == 1.0 and out.metrics["top2"].value == 1.0
        assert out.extra["n_boxes"] == 7 and out.extra["excluded"] == {"crowd": 1}
        assert out.extra["predictions"] == [WORDS.index(r[1]) for r in PLANTED if not r[4]]


def test_permuted_names_give_the_closed_form_ranks_and_size_bins(tmp_path):
    """Names permuted (red boxes are called "blue", blue ones "red"): each box's rank is the closed form of
    :func:`expected_rank` (ties: lower class index), top-k and every size bin follow from it by hand."""
    names = ["blue", "green", "red"]   # category painted WORDS[k] is named names[k]
    root = write_planted(tmp_path, names)
    out = run_spec(planted_spec(ks=[1, 2, 3]), ColourModel(), root)
    kept = [r for r in PLANTED if not r[4]]
    ranks = [expected_rank(names.index(r[1]), WORDS.index(r[1])) for r in kept]
    assert ranks == [1, 0, 2, 1, 2, 0, 1]   # the closed form, spelled out
    for k in (1, 2, 3):
        hits = [float(r < k) for r in ranks]
        assert out.metrics[f"top{k}"].value == pytest.approx(np.mean(hits))
        assert out.per_item[f"top{k}"] == [int(h) for h in hits]
        for tag in ("small", "medium", "large"):
            sel = [h for h, r in zip(hits, kept) if r[5] == tag]
            assert out.metrics[f"top{k}:{tag}"].value == pytest.approx(np.mean(sel)), (k, tag)
    assert out.extra["breakdown_counts"] == {"small": 3, "medium": 2, "large": 2}
    assert out.extra["tie_rule"].startswith("stable")


def test_size_units_image_fraction_and_box_area(tmp_path):
    """``size_units: image-fraction`` bins area / (64·64); ``size_area: box`` takes w·h instead of COCO's area."""
    root = write_planted(tmp_path, WORDS)
    kept = [r for r in PLANTED if not r[4]]
    out = run_spec(planted_spec(size_units="image-fraction", size_thresholds=[0.1, 0.3], size_area="box"),
                   ColourModel(), root)
    frac = [r[2][2] * r[2][3] / 4096 for r in kept]
    by_hand = ["small" if f < 0.1 else "medium" if f < 0.3 else "large" for f in frac]
    assert out.extra["breakdown_counts"] == {t: by_hand.count(t) for t in ("small", "medium", "large")
                                             if t in by_hand}


def test_min_box_side_and_thing_stuff(tmp_path):
    """Boxes with a side below ``min_box_side`` are excluded and counted; ``isthing`` gives the thing/stuff rows."""
    names = ["blue", "green", "red"]
    root = write_planted(tmp_path, names, isthing=[1, 1, 0])   # red- and green-painted: thing; blue: stuff
    out = run_spec(planted_spec(min_box_side=5), ColourModel(), root)
    kept = [r for r in PLANTED if not r[4] and min(r[2][2:]) >= 5]
    assert out.extra["excluded"] == {"crowd": 1, "below_min_box_side": 1} and out.extra["n_boxes"] == len(kept)
    hits = [float(r[1] == "green") for r in kept]   # only the fixed point of the naming is right
    for tag, painted in (("thing", {"red", "green"}), ("stuff", {"blue"})):
        sel = [h for h, r in zip(hits, kept) if r[1] in painted]
        assert out.metrics[f"top1:{tag}"].value == pytest.approx(np.mean(sel))
        assert out.extra["breakdown_counts"][tag] == len(sel)
    out = run_spec(planted_spec(thing_stuff=False), ColourModel(), root)
    assert "top1:thing" not in out.metrics


def test_label_from_attributes_where_and_vocabulary(tmp_path):
    """``label`` formats attributes and the category; the default vocabulary is the split's sorted labels; ``where``
    filters by attribute; a label outside ``classnames`` and a box without the attribute are handled."""
    root = write_planted(tmp_path, ["thing", "shape", "blob"])
    doc = json.loads((root / "annotations" / "instances_val.json").read_text())
    for a in doc["annotations"]:
        a["colour"] = WORDS[a["category_id"] - 1]
        a["kind"] = "flat" if a["id"] % 2 else "two-part"
    doc["annotations"][0].pop("colour")
    (root / "annotations" / "instances_val.json").write_text(json.dumps(doc))
    out = run_spec(planted_spec(label="{colour} {category}"), ColourModel(), root)
    assert out.metrics["top1"].value == 1.0   # the colour word decides
    assert out.extra["n_classes"] == 3 and out.extra["excluded"] == {"crowd": 1, "missing_attribute": 1}
    flat = [a for a in doc["annotations"] if a["kind"] == "flat" and not a["iscrowd"] and "colour" in a]
    out = run_spec(planted_spec(label="{colour} {category}", where={"kind": "flat"}), ColourModel(), root)
    assert out.extra["n_boxes"] == len(flat)
    with pytest.raises(DataError, match="not among the 1 class names"):
        run_spec(planted_spec(label="{colour}", classnames=["red"]), ColourModel(), root)


# ------------------------------------------------------------------------------------------------ naive reference
def _naive_fixture(all_texts: bool, seed: int):
    """Random integer scores (many ties) for 5 images; the scorer reads them back by image and prompt row."""
    from loupe_bench.tasks.region_classification import RegionItem, Targets

    rng = np.random.default_rng(seed)
    n_c, n_t = 6, 2
    counts = [3, 1, 4, 2, 5]
    table = {i: rng.integers(0, 3, size=(k, n_c * n_t)).astype(np.float64) for i, k in enumerate(counts)}
    items = []
    for i, k in enumerate(counts):
        for b in range(k):
            if all_texts:
                items.append(RegionItem(i, (0.0, 0.0, 1.0, 1.0), int(rng.integers(n_c)), (), ()))
            else:
                cand = rng.permutation(n_c)[: int(rng.integers(2, n_c + 1))]
                items.append(RegionItem(i, (0.0, 0.0, 1.0, 1.0), int(cand[0]), tuple(int(c) for c in cand[1:]), ()))
    tg = Targets([f"c{c}" for c in range(n_c)], ["{}", "a {}"], items, {}, all_texts)
    img = ImageFeatures(torch.arange(5.0)[:, None], torch.zeros(5, 1, 1), (1, 1))
    txt = TextFeatures(torch.arange(float(n_c * n_t))[:, None], torch.zeros(n_c * n_t, 1, 1),
                       torch.ones(n_c * n_t, 1, dtype=torch.bool))

    def scorer(model, feats, boxes, text):
        rows = text.pooled[:, 0].long().numpy()
        return [torch.tensor(table[int(i)][:, rows]) for i in feats.pooled[:, 0].long().tolist()]

    def class_scores(n):
        it = items[n]
        b = sum(1 for m in items[:n] if m.image == it.image)
        return [(table[it.image][b, 2 * c] + table[it.image][b, 2 * c + 1]) / 2 for c in range(n_c)]

    return tg, img, txt, scorer, class_scores


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_category_ranks_match_a_naive_loop_with_ties(chunk):
    """Rank of the true class = #{higher} + #{equal with a lower class index}; top-k = rank < k; the prediction is
    the first maximum. Any image chunking gives the same answer."""
    from loupe_bench.tasks.region_classification import region_ranks

    tg, img, txt, scorer, class_scores = _naive_fixture(True, 0)
    ranks, preds = region_ranks(None, img, txt, list(range(5)), tg, scorer, "cpu", chunk, "t")
    for n, it in enumerate(tg.items):
        s = class_scores(n)
        y = it.target
        naive = sum(1 for c in range(len(s)) if s[c] > s[y] or (s[c] == s[y] and c < y))
        assert ranks[n] == naive
        assert preds[n] == max(range(len(s)), key=lambda c: (s[c], -c))
    assert len(set(ranks.tolist())) > 2   # ties and misses really occur


def test_description_ranks_match_a_naive_loop_ties_against_the_positive():
    """FG-OVD: rank = #{negatives scoring >= the positive} (ties count against the positive)."""
    from loupe_bench.tasks.region_classification import region_ranks

    tg, img, txt, scorer, class_scores = _naive_fixture(False, 1)
    ranks, preds = region_ranks(None, img, txt, list(range(5)), tg, scorer, "cpu", 1, "t")
    assert preds is None
    ties = 0
    for n, it in enumerate(tg.items):
        s = class_scores(n)
        assert ranks[n] == sum(1 for c in it.negatives if s[c] >= s[it.target])
        ties += any(s[c] == s[it.target] for c in it.negatives)
    assert ties > 0


# ------------------------------------------------------------------------------------------------ FG-OVD variant
def _fgovd(root: Path, split: str, boxes) -> None:
    """An FG-OVD-layout file (images under val2017/, descriptions as categories, neg_category_ids per box)."""
    from PIL import Image, ImageDraw

    (root / "val2017").mkdir(parents=True, exist_ok=True)
    descs = {1: "a red object.", 2: "a green object.", 3: "a blue object.", 4: "a small red object."}
    anns = []
    im = Image.new("RGB", (64, 64))
    for n, (colour, xywh, pos, negs) in enumerate(boxes):
        x, y, w, h = xywh
        ImageDraw.Draw(im).rectangle([x, y, x + w - 1, y + h - 1], fill=RGB[colour])
        if pos is not None:
            anns.append({"id": n + 1, "image_id": 7, "bbox": list(xywh), "area": w * h, "category_id": pos,
                         "neg_category_ids": negs, "needs_revision": False, "segmentation": []})
    im.save(root / "val2017" / "000000000007.jpg", quality=100)
    doc = {"images": [{"id": 7, "file_name": "val2017/000000000007.jpg", "width": 64, "height": 64,
                       "coco_url": "http://images.cocodataset.org/val2017/000000000007.jpg", "neg_category_ids": []}],
           "annotations": anns, "categories": [{"id": k, "name": v, "synonyms": []} for k, v in descs.items()]}
    (root / "fg-ovd").mkdir(exist_ok=True)
    (root / "fg-ovd" / f"{split}.json").write_text(json.dumps(doc))


def fgovd_spec(**options):
    d = planted_spec(**{"descriptions": "fg-ovd/{split}.json", **options})
    d["dataset"] = {"name": "fg-ovd", "format": "coco", "path": "fg-ovd/{split}.json", "options": {"image_root": "."}}
    d["splits"] = ["1_attributes", "shuffle_negatives"]
    d["options"].pop("templates")
    return d


def test_fgovd_descriptions_positive_against_its_negatives(tmp_path):
    """Per box, its positive description against its own negatives; one result per difficulty file (split)."""
    _fgovd(tmp_path, "1_attributes", [
        ("red", (0, 0, 16, 16), 1, [2, 3]),       # right: 1 vs 0, 0 -> rank 0
        ("green", (32, 0, 16, 16), 1, [2, 3]),    # wrong: red scores 0, green 1 -> rank 1 (blue ties 0 >= 0: +1)
        ("blue", (0, 32, 16, 16), 3, [4]),        # too few negatives with n_negatives 2
    ])
    _fgovd(tmp_path, "shuffle_negatives", [("blue", (0, 32, 16, 16), 3, [1, 2]), ("red", (0, 0, 8, 8), 1, []),
                                           ("green", (32, 32, 16, 16), 1, [2])])
    out = run_spec(fgovd_spec(), ColourModel(), tmp_path, "shuffle_negatives")
    assert out.per_item["top1"] == [1, 0] and out.extra["excluded"] == {"too_few_negatives": 1}  # no negative at all
    # a separate descriptions file without the first box: that box is left out and counted
    doc = json.loads((tmp_path / "fg-ovd" / "shuffle_negatives.json").read_text())
    doc["annotations"] = doc["annotations"][1:]
    (tmp_path / "fg-ovd" / "desc-shuffle_negatives.json").write_text(json.dumps(doc))
    out = run_spec(fgovd_spec(descriptions="fg-ovd/desc-{split}.json"), ColourModel(), tmp_path, "shuffle_negatives")
    assert out.extra["excluded"] == {"no_description": 1, "too_few_negatives": 1} and out.per_item["top1"] == [0]


def test_fgovd_bad_descriptions(tmp_path):
    _fgovd(tmp_path, "1_attributes", [("red", (0, 0, 16, 16), 1, [2, 99])])
    with pytest.raises(DataError, match="unknown description id 99"):
        run_spec(fgovd_spec(), ColourModel(), tmp_path, "1_attributes")
    _fgovd(tmp_path, "1_attributes", [("red", (0, 0, 16, 16), 1, [2, 1])])
    with pytest.raises(DataError, match="among its own negatives"):
        run_spec(fgovd_spec(), ColourModel(), tmp_path, "1_attributes")
    _fgovd(tmp_path, "1_attributes", [("red", (0, 0, 16, 16), 1, [2])])
    doc = json.loads((tmp_path / "fg-ovd" / "1_attributes.json").read_text())
    doc["annotations"][0]["image_id"] = 8
    (tmp_path / "fg-ovd" / "desc-1_attributes.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="image_id 8 differs") as info:
        run_spec(fgovd_spec(descriptions="fg-ovd/desc-{split}.json"), ColourModel(), tmp_path, "1_attributes")
    assert info.value.file.endswith("desc-1_attributes.json") and info.value.record == "annotation 1"
    (tmp_path / "fg-ovd" / "1_attributes.json").unlink()
    with pytest.raises(DataError, match="not found"):
        run_spec(fgovd_spec(), ColourModel(), tmp_path, "1_attributes")


# ------------------------------------------------------------------------------------------------ specs
@pytest.mark.parametrize("bad, match", [
    ({"region_scoring": "mine"}, "region_scoring"),
    ({"label": "{category.__class__}"}, "plain name"),
    ({"label": "no field"}, "names no field"),
    ({"size_thresholds": [9216, 1024]}, "increasing"),
    ({"size_units": "cm"}, "size_units"),
    ({"descriptions": "../x.json"}, "relative path"),
    ({"n_negatives": 3}, "needs descriptions"),
    ({"templates": ["a photo"]}, "slot"),
    ({"descriptions": "x.json", "classnames": ["a"]}, "neither classnames nor label"),
    ({"metrics_typo": 1}, "unknown field"),
])
def test_bad_options_are_spec_errors(bad, match):
    with pytest.raises(SpecError, match=match):
        load_task(planted_spec(**bad))


def test_spec_checks_crop_and_metric_names():
    d = planted_spec()
    d["image"]["crop"] = "center"
    with pytest.raises(SpecError, match="crop: none"):
        load_task(d)
    d = planted_spec()
    d["metrics"] = ["top1:small", "top5:stuff", "top1:tiny"]
    with pytest.raises(SpecError, match="'top1:tiny'"):
        load_task(d)


# ------------------------------------------------------------------------------------------------ real COCO layout
def _coco_root(root: Path, edit=None) -> Path:
    """COCO's own layout: annotations/instances_val2017.json + val2017/<12-digit id>.jpg (non-contiguous ids)."""
    from PIL import Image

    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    ims = []
    for iid in (139, 285):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "val2017" / f"{iid:012d}.jpg")
        ims.append({"id": iid, "file_name": f"{iid:012d}.jpg", "width": 48, "height": 40, "license": 1})
    anns = [{"id": 10, "image_id": 139, "category_id": 1, "bbox": [1.5, 2.0, 20.0, 30.0], "area": 400.0,
             "iscrowd": 0, "segmentation": [[1.5, 2.0, 21.5, 2.0, 21.5, 32.0]]},
            {"id": 11, "image_id": 139, "category_id": 18, "bbox": [24.0, 5.0, 20.0, 20.0], "area": 380.0,
             "iscrowd": 0, "segmentation": []},
            {"id": 12, "image_id": 285, "category_id": 17, "bbox": [0.0, 0.0, 48.0, 40.0], "area": 1900.0,
             "iscrowd": 1, "segmentation": {"counts": [], "size": [40, 48]}},
            {"id": 13, "image_id": 285, "category_id": 1, "bbox": [10.0, 10.0, 30.0, 25.0], "area": 700.0,
             "iscrowd": 0, "segmentation": []}]
    doc = {"info": {}, "licenses": [], "images": ims, "annotations": anns,
           "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                          {"id": 17, "name": "cat", "supercategory": "animal"},
                          {"id": 18, "name": "dog", "supercategory": "animal"}]}
    if edit:
        edit(doc)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(doc))
    return root


def test_shipped_coco_spec_runs_on_the_real_layout_through_the_cli(tmp_path, capsys):
    root = _coco_root(tmp_path / "coco")
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", "coco-region-classification",
                            "--data-root", root, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    (res_file,) = (tmp_path / "out").rglob("*.json")
    res = json.loads(res_file.read_text())
    assert res["task"]["type"] == "region-classification" and res["task"]["split"] == "val2017"
    assert res["extra"]["n_boxes"] == 3 and res["extra"]["excluded"] == {"crowd": 1}
    assert res["extra"]["n_classes"] == 3 and res["extra"]["n_templates"] == 80
    assert res["extra"]["breakdown_counts"] == {"small": 3}   # areas 400, 380, 700 < 32²
    for name in ("top1", "top5", "top1:small"):
        assert 0.0 <= res["metrics"][name]["value"] <= 1.0
    assert res["metrics"]["top5"]["value"] == 1.0   # 3 classes


@pytest.mark.parametrize("edit, needles", [
    (lambda d: d["annotations"][1].update(bbox=[30.0, 5.0, 20.0, 20.0]), ["outside the 48x40 image", "annotation 11"]),
    (lambda d: d["annotations"][0].update(category_id=99), ["unknown category id 99", "annotation 10"]),
])
def test_bad_coco_input_is_one_line_exit_2(tmp_path, capsys, edit, needles):
    root = _coco_root(tmp_path / "coco", edit)
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", "coco-region-classification",
                            "--data-root", root, "--out", tmp_path / "out"], capsys)
    one_line_error(code, err, "instances_val2017.json", *needles)


# ------------------------------------------------------------------------------------------------ synthetic world
def test_synthetic_specs_on_the_tiny_world(tiny_world):
    """The shipped specs run on the tiny world; values in [0, 1]; the colour + shape labels are the annotations'."""
    from loupe_bench.models import create_model
    from loupe_bench.tasks.evaluate import evaluate
    from loupe_bench.tasks.results import validate_result

    model = create_model("clip-tiny", seed=0)
    tasks = [fast("synthetic-region-classification"), fast("synthetic-region-classification-attr")]
    results = evaluate([model], tasks, data_root=tiny_world, out_dir=None)
    assert [(r["task"]["name"], r["task"]["split"]) for r in results] == [
        (t["name"], s) for t in tasks for s in ("test", "comptest")]
    for r in results:
        validate_result(r)
        assert all(0.0 <= m["value"] <= 1.0 for m in r["metrics"].values()), r["metrics"]
        doc = json.loads((tiny_world / "annotations" / f"instances_{r['task']['split']}.json").read_text())
        anns = doc["annotations"]
        if r["task"]["name"].endswith("-attr"):
            flat = [a for a in anns if a["kind"] == "flat"]
            assert r["extra"]["n_boxes"] == len(flat) and r["extra"]["excluded"] == {"where": len(anns) - len(flat)}
            assert r["extra"]["n_classes"] == 36
            classnames = load_task("synthetic-region-classification-attr").options["classnames"]
            assert {classnames.index(f"{a['colour']} {doc['categories'][a['category_id'] - 1]['name']}")
                    for a in flat} <= set(range(36))
        else:
            assert r["extra"]["n_boxes"] == len(anns) and r["extra"]["n_classes"] == 6
        assert sum(r["extra"]["breakdown_counts"].values()) == r["extra"]["n_boxes"]


def test_shared_and_native_scorers(tiny_world, monkeypatch):
    """CLIP: native is the shared rule (equal numbers, different fingerprint); FILIP: its native late interaction
    gives different region scores than the shared rule."""
    from loupe_bench.models import create_model
    from loupe_bench.tasks import region_classification as rc
    from loupe_bench.tasks.evaluate import evaluate

    seen = {}

    class Recording:
        def get(self, name):
            def score(model, feats, boxes, txt):
                out = rc.REGION_SCORERS_REAL.get(name)(model, feats, boxes, txt)
                seen.setdefault((type(model).__name__, name), []).extend(o.clone() for o in out)
                return out
            return score

    monkeypatch.setattr(rc, "REGION_SCORERS_REAL", rc.REGION_SCORERS, raising=False)
    monkeypatch.setattr(rc, "REGION_SCORERS", Recording())
    task = fast("synthetic-region-classification", splits=["test"])
    native = fast("synthetic-region-classification-native", splits=["test"])
    out = {}
    for name in ("clip-tiny", "filip-tiny"):
        model = create_model(name, seed=0)
        out[name] = [evaluate([model], [t], data_root=tiny_world, out_dir=None)[0] for t in (task, native)]
    shared_clip, native_clip = out["clip-tiny"]
    assert shared_clip["metrics"] == native_clip["metrics"]
    assert shared_clip["task"]["fingerprint"] != native_clip["task"]["fingerprint"]
    assert native_clip["extra"]["region_scoring"] == "native"
    clip_s, clip_n = (torch.cat(seen[("CLIP", k)]) for k in ("shared", "native"))
    assert torch.allclose(clip_s, clip_n, atol=1e-6)
    filip = [k for k in seen if k[0] != "CLIP"]
    filip_s, filip_n = (torch.cat(seen[(filip[0][0], k)]) for k in ("shared", "native"))
    assert filip_s.shape == filip_n.shape and not torch.allclose(filip_s, filip_n, atol=1e-3)
