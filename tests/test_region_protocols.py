"""Identical protocols for the region tasks (grounding, detection): one region scorer for every model."""
from __future__ import annotations

import pytest
import torch

from test_tasks import fast


def _same_towers():
    """A CLIP, a FILIP and a LOUPE carrying the very same tower and projection weights."""
    from loupe_bench.models import create_model

    clip = create_model("clip-tiny", seed=0)
    filip = create_model("filip-tiny", seed=1)
    loupe = create_model("loupe-tiny", seed=2)
    state = {k: v for k, v in clip.state_dict().items() if k != "logit_scale"}
    for other in (filip, loupe):
        missing, unexpected = other.load_state_dict(state, strict=False)
        assert not unexpected
        assert all(not k.startswith(("image_tower", "text_tower", "image_proj", "text_proj")) for k in missing), missing
    return clip, filip, loupe


def test_shared_scorer_equals_the_naive_rule():
    """``shared``: cosine of the mean projected patch token inside the box with the pooled text (naive loop)."""
    from loupe_bench.models.base import ImageFeatures, TextFeatures
    from loupe_bench.tasks.region_scoring import shared_region_scores

    g = torch.Generator().manual_seed(0)
    tokens = torch.nn.functional.normalize(torch.randn(1, 16, 8, generator=g), dim=-1)
    img = ImageFeatures(tokens.mean(1), tokens, (4, 4))
    pooled = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)
    txt = TextFeatures(pooled, torch.zeros(3, 2, 8), torch.ones(3, 2))
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 1.0], [0.1, 0.1, 0.2, 0.2]])
    got = shared_region_scores(None, img, [boxes], txt)[0]
    for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        members = [r * 4 + c for r in range(4) for c in range(4)
                   if x0 <= (c + 0.5) / 4 <= x1 and y0 <= (r + 0.5) / 4 <= y1]
        if not members:   # no patch centre inside: the patch nearest the box centre
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            members = [int(cy * 4) * 4 + int(cx * 4)]
        region = torch.nn.functional.normalize(tokens[0, members].mean(0), dim=0)
        for t in range(3):
            assert got[k, t].item() == pytest.approx(float(region @ pooled[t]), abs=1e-6)


@pytest.mark.parametrize("task", ["synthetic-grounding-gt-boxes", "synthetic-detection-gt"])
def test_shared_scorer_gives_identical_numbers_for_identical_towers(task, tiny_world):
    """Under ``shared`` a CLIP, a FILIP and a LOUPE with the same towers get the same numbers; under ``native``
    FILIP's late interaction (and LOUPE's head) may differ — the protocol, not the class, decides."""
    from loupe_bench.tasks.evaluate import evaluate

    models = _same_towers()
    shared = [evaluate([m], [fast(task, splits=["test"])], data_root=tiny_world, out_dir=None)[0] for m in models]
    for r in shared[1:]:
        assert r["metrics"] == shared[0]["metrics"]
        assert r["task"]["fingerprint"] == shared[0]["task"]["fingerprint"]
    assert shared[0]["extra"]["region_scoring"] == "shared"
    native = [evaluate([m], [fast(task, splits=["test"], region_scoring="native")], data_root=tiny_world,
                       out_dir=None)[0] for m in models]
    assert native[0]["task"]["fingerprint"] != shared[0]["task"]["fingerprint"]
    assert native[0]["metrics"] == shared[0]["metrics"]          # CLIP's own scorer is the shared rule
    assert native[0]["extra"]["region_scoring"] == "native"


def test_native_scorer_differs_for_filip():
    """FILIP's native region score is not the shared cosine (so the option is not a no-op)."""
    from loupe_bench.tasks.region_scoring import REGION_SCORERS

    clip, filip, _ = _same_towers()
    pix = torch.randn(2, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(0))
    tok = filip.tokenizer(["a red circle", "a blue square"])
    with torch.no_grad():
        img = filip.encode_image(pix)
        txt = filip.encode_text(tok.input_ids, tok.attention_mask)
        boxes = [torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 1.0, 1.0]])] * 2
        shared = REGION_SCORERS.get("shared")(filip, img, boxes, txt)
        native = REGION_SCORERS.get("native")(filip, img, boxes, txt)
    assert not torch.allclose(shared[0], native[0])


def test_region_scoring_is_validated():
    from loupe_bench.errors import SpecError
    from loupe_bench.tasks import load_task

    with pytest.raises(SpecError, match="region_scoring"):
        load_task(fast("synthetic-grounding-gt-boxes", region_scoring="mine"))


def test_proposal_sources_have_one_spelling_in_every_box_task():
    """Detection, grounding and phrase grounding take their candidates from ``PROPOSAL_SOURCES`` under the same
    names: the ground-truth boxes are ``gt-boxes`` in every shipped spec and every box task type; ``gt`` is
    refused."""
    from loupe_bench.errors import SpecError
    from loupe_bench.specs import spec_files
    from loupe_bench.tasks import load_task
    from loupe_bench.tasks.proposals import GT_BOXES, PROPOSAL_SOURCES

    assert GT_BOXES == "gt-boxes" and PROPOSAL_SOURCES.names() == ["grid", "gt-boxes", "native"]
    used = {}
    for f in spec_files("tasks"):
        spec = load_task(f)
        if "proposals" in spec.options:
            used.setdefault(spec.type, set()).add(spec.options["proposals"])
    assert set(used) == {"detection", "grounding", "phrase-grounding"}
    assert all(GT_BOXES in names and names <= set(PROPOSAL_SOURCES.names()) for names in used.values()), used
    for task in ("synthetic-detection-gt", "synthetic-grounding-gt-boxes", "synthetic-phrase-grounding-gt-boxes"):
        for source in PROPOSAL_SOURCES.names():
            assert load_task(fast(task, proposals=source)).options["proposals"] == source
        with pytest.raises(SpecError, match="proposals must be one of grid, gt-boxes, native"):
            load_task(fast(task, proposals="gt"))


# ------------------------------------------------------------------------------------------------ grounding extras
def _box(ann_id, cat, colour, bbox=(0, 0, 10, 10)):
    from loupe_bench.data.records import BoxAnnotation

    return BoxAnnotation(ann_id=ann_id, image_id=1, category_id=cat, bbox=bbox, attributes=(("colour", colour),))


CATS = {1: "circle", 2: "square", 3: "star"}
ATTRS = {"colour": "colour", "shape": "category"}


@pytest.mark.parametrize("others, kind", [
    ([(2, "red"), (3, "blue")], "colour-only"),          # a red square shares only the colour
    ([(1, "blue"), (3, "green")], "shape-only"),         # a blue circle shares only the shape
    ([(1, "red"), (2, "red")], "colour+shape"),          # a second red circle shares both
    ([(2, "red"), (1, "blue")], "mixed"),                # one colour-only and one shape-only distractor
    ([(2, "blue"), (3, "green")], None),                 # nothing shared
])
def test_distractor_kind(others, kind):
    from loupe_bench.tasks.grounding import distractor_kind

    target = _box(1, 1, "red")
    assert distractor_kind(target, [_box(i + 2, c, col) for i, (c, col) in enumerate(others)], ATTRS, CATS) == kind


def test_attribute_oracle_counts_words_and_breaks_ties_low():
    from loupe_bench.tasks.grounding import oracle_pick

    cands = [_box(1, 2, "blue"), _box(2, 1, "red"), _box(3, 1, "blue")]
    assert oracle_pick("the blue circle", cands, CATS) == 2
    assert oracle_pick("the red circle left of the blue square", cands, CATS) == 0  # 2 words each: lowest index
    assert oracle_pick("the red circle", cands, CATS) == 1
    assert oracle_pick("something else", cands, CATS) == 0


def _iou(a, b):
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def test_chance_and_proposal_recall_equal_naive_loops(tiny_world):
    """Grid candidates: the chance row is the mean over queries of (#grid boxes with IoU ≥ 0.5 to the answer) / K;
    proposal recall@10 is the fraction of objects hit by one of the 10 coarsest grid boxes (naive loops)."""
    from loupe_bench.models import create_model
    from loupe_bench.tasks import load_task
    from loupe_bench.tasks.common import load_records
    from loupe_bench.tasks.evaluate import evaluate
    from loupe_bench.tasks.proposals import grid_boxes

    spec = fast("synthetic-grounding-grid", splits=["test"])
    r = evaluate([create_model("clip-tiny", seed=0)], [spec], data_root=tiny_world, out_dir=None)[0]
    recs = load_records(load_task(spec), tiny_world, "test")
    grid = grid_boxes((1, 2, 3, 4)).tolist()
    by_id = {im.image_id: im for im in recs.images}
    chance = []
    for ref in recs.refs:
        im = by_id[ref.image_id]
        x, y, w, h = ref.bbox
        gt = (x, y, x + w, y + h)
        px = [(a * im.width, b * im.height, c * im.width, d * im.height) for a, b, c, d in grid]
        chance.extend([sum(_iou(p, gt) >= 0.5 for p in px) / len(px)] * len(ref.sentences))
    assert r["reference_rows"]["chance"]["acc@0.5"]["value"] == pytest.approx(sum(chance) / len(chance))
    hit = []
    for iid in sorted({ref.image_id for ref in recs.refs}):
        im = by_id[iid]
        px = [(a * im.width, b * im.height, c * im.width, d * im.height) for a, b, c, d in grid[:10]]
        for b in im.boxes:
            x, y, w, h = b.bbox
            hit.append(any(_iou(p, (x, y, x + w, y + h)) >= 0.5 for p in px))
    assert r["metrics"]["proposal_recall@10"]["value"] == pytest.approx(sum(hit) / len(hit))
    assert "attribute-oracle" not in r["reference_rows"]          # the oracle reads gt-box attributes only


def test_head_phrase_protocol_and_breakdown(tiny_world):
    """Head-phrase queries are the world's head noun phrases; anchored sentences are tagged; the bag-of-attributes
    oracle gains from dropping the anchor's words (it cannot confuse the anchor with the target any more)."""
    from loupe_bench.models import create_model
    from loupe_bench.tasks import TASK_TYPES, load_adapters, load_task
    from loupe_bench.tasks.common import load_records
    from loupe_bench.tasks.evaluate import evaluate

    load_adapters()
    head_spec = load_task(fast("synthetic-grounding-head-phrase", splits=["test"]))
    recs = load_records(head_spec, tiny_world, "test")
    queries = TASK_TYPES.get("grounding")(head_spec).queries(recs)
    flat = [q for i in sorted(queries) for q in queries[i]]
    sentences = [(s, r) for r in recs.refs for s in r.sentences]
    assert len(flat) == len(sentences)
    anchored = [s for s, _ in sentences if " of the " in s or " above the " in s or " below the " in s]
    assert anchored, "the tiny world has anchored expressions"
    assert sum("anchor" in q.tags for q in flat) == len(anchored)
    expected = sorted((h, "anchor" if h != s else "no-anchor") for r in recs.refs for s, h in zip(r.sentences, r.heads))
    assert sorted((q.text, q.tags[-1]) for q in flat) == expected
    assert all(s.startswith(h) for r in recs.refs for s, h in zip(r.sentences, r.heads))   # the head leads
    model = create_model("clip-tiny", seed=0)
    head = evaluate([model], [head_spec], data_root=tiny_world, out_dir=None)[0]
    whole = evaluate([model], [fast("synthetic-grounding-gt-boxes", splits=["test"])], data_root=tiny_world,
                     out_dir=None)[0]
    assert head["task"]["fingerprint"] != whole["task"]["fingerprint"]
    o_head = head["reference_rows"]["attribute-oracle"]["acc@0.5"]["value"]
    o_whole = whole["reference_rows"]["attribute-oracle"]["acc@0.5"]["value"]
    assert o_head > o_whole
    assert head["reference_rows"]["attribute-oracle"]["acc@0.5:anchor"]["value"] > \
        whole["reference_rows"]["attribute-oracle"]["acc@0.5:anchor"]["value"]
    kinds = {k.split(":", 1)[1] for k in whole["metrics"] if ":" in k}
    assert {"colour-only", "shape-only", "colour+shape", "anchor", "no-anchor"} <= kinds
    counts = whole["extra"]["breakdown_counts"]
    assert counts["anchor"] + counts["no-anchor"] == len(flat)
    for k in ("colour-only", "shape-only", "colour+shape"):
        part = whole["metrics"][f"acc@0.5:{k}"]["value"] * counts[k]
        assert part == pytest.approx(round(part))                 # a fraction of that many queries


def test_reference_rows_appear_once_in_reports(tiny_world, tmp_path):
    from loupe_bench.models import create_model
    from loupe_bench.report.results_io import load_rows
    from loupe_bench.report.table import build_table
    from loupe_bench.tasks.evaluate import evaluate

    spec = fast("synthetic-grounding-gt-boxes", splits=["test"])
    evaluate([create_model("clip-tiny", seed=0), create_model("filip-tiny", seed=0)], [spec], data_root=tiny_world,
             out_dir=tmp_path)
    rows = [r for r in load_rows(tmp_path) if r.metric == "acc@0.5"]
    assert sorted(r.model for r in rows) == ["attribute-oracle", "chance", "clip-tiny", "filip-tiny"]
    table = build_table(rows)
    assert table.cell("chance", 0).n == 1


def test_any_box_rule():
    """A query whose entity has two boxes is answered by a candidate on either (and by nothing else)."""
    from loupe_bench.tasks.grounding import Query, acceptable

    q = [Query("two dogs", ((0, 0, 10, 10), (50, 50, 10, 10))), Query("a cat", ((20, 20, 10, 10),))]
    cands = torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 31, 31], [0, 0, 60, 60]], dtype=torch.float64)
    ok = acceptable(cands, q, 0.5)
    assert ok.tolist() == [[True, False], [True, False], [False, True], [False, False]]


def test_phrase_grounding_on_the_world(tiny_world):
    """Every boxed gold phrase of the world's captions is one query; chance equals the naive expected value."""
    import json

    from loupe_bench.models import create_model
    from loupe_bench.tasks.evaluate import evaluate

    r = evaluate([create_model("filip-tiny", seed=0)], [fast("synthetic-phrase-grounding-gt-boxes", splits=["test"])],
                 data_root=tiny_world, out_dir=None)[0]
    karpathy = json.loads((tiny_world / "dataset_synthetic.json").read_text())
    phrases = json.loads((tiny_world / "phrases.json").read_text())
    test_sents = [s for im in karpathy["images"] if im["split"] == "test" for s in im["sentences"]]
    expected = sum(len(phrases.get(str(s["sentid"]), [])) for s in test_sents)
    assert r["extra"]["n_queries"] == expected and r["extra"]["n_phrases_without_box"] == 0
    inst = json.loads((tiny_world / "annotations" / "instances_test.json").read_text())
    per_image = {}
    for a in inst["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a["bbox"])
    # gt-box candidates: exactly the phrase's own object has IoU >= 0.5 unless objects overlap that much
    chance = []
    for im in karpathy["images"]:
        if im["split"] != "test":
            continue
        boxes = per_image[im["cocoid"]]
        for s in im["sentences"]:
            for ph in phrases.get(str(s["sentid"]), []):
                x, y, w, h = ph["bbox"]
                hits = sum(_iou((bx, by, bx + bw, by + bh), (x, y, x + w, y + h)) >= 0.5 for bx, by, bw, bh in boxes)
                chance.append(hits / len(boxes))
    assert r["reference_rows"]["chance"]["acc@0.5"]["value"] == pytest.approx(sum(chance) / len(chance))
    assert 0 <= r["metrics"]["acc@0.5"]["value"] <= 1
    assert r["extra"]["region_scoring"] == "shared" and r["extra"]["proposal_source"] == "gt-boxes"
