"""The token-interaction probe: shifted boxes, interaction + value from one set of contexts, and the adapter on
planted games (known answers) and on untrained tiny models (end to end, deterministic)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from loupe_bench.data.records import BoxAnnotation, Caption, ImageRecord, Phrase
from loupe_bench.errors import SpecError
from loupe_bench.models.base import boxes_to_patch_mask
from loupe_bench.shapley import AdditiveGame, AndGame, TableGame, sample_interaction
from loupe_bench.specs import load_yaml, spec_files
from loupe_bench.tasks import list_tasks, load_task
from loupe_bench.tasks.results import validate_result
from loupe_bench.tasks.token_interaction import (
    TokenInteractionTask, bank_texts, choose_caption, interaction_and_value, metric_names, patch_rectangle,
    placement_overlap, shifted_box,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GRID = (8, 8)
NAME = "synthetic-token-interaction"


def fast(**options):
    """The shipped spec made cheap: few contexts, few images, few bootstrap replicates."""
    d = load_yaml(next(p for p in spec_files("tasks") if load_yaml(p).get("name") == NAME))
    d["bootstrap"] = {"n_resamples": 50, "seed": 0}
    d["options"].update({"num_samples": 4, "max_images": 4, **options})
    return d


@pytest.fixture(scope="module")
def clip():
    from loupe_bench.models.factory import create_model

    return create_model("clip-tiny", tokenizer_corpus=["a small red square left of a large blue circle"], seed=0)


# ------------------------------------------------------------------------------------------------ shifted_box
def test_shifted_box_keeps_its_patch_shape_and_finds_background():
    box = (0.1, 0.1, 0.45, 0.3)  # patch centres 0.1875, 0.3125, 0.4375 across, 0.1875 down: 1 x 3 patches
    occupied = [box, (0.5, 0.0, 1.0, 0.5), (0.0, 0.55, 0.4, 1.0)]
    r0, c0, h, w = patch_rectangle(box, GRID)
    for seed in range(5):
        s = shifted_box(box, occupied, GRID, np.random.default_rng(seed))
        assert s is not None and s.overlap == 0.0
        assert patch_rectangle(s.box, GRID)[2:] == (h, w)
        torch.testing.assert_close(boxes_to_patch_mask(torch.tensor([s.box], dtype=torch.float64), GRID)[0],
                                   s.patches)
        orig = boxes_to_patch_mask(torch.tensor([box], dtype=torch.float64), GRID)[0]
        assert not (s.patches & orig).any()
        # no patch of the shifted rectangle touches an occupied box
        rows, cols = torch.nonzero(s.patches.reshape(GRID), as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist()):
            assert placement_overlap((r, c, 1, 1), np.asarray(occupied), GRID) == 0.0
        assert s.shift == (patch_rectangle(s.box, GRID)[0] - r0, patch_rectangle(s.box, GRID)[1] - c0)


def test_shifted_box_is_deterministic_and_ties_follow_the_rng():
    box = (0.0, 0.0, 0.25, 0.25)
    a = shifted_box(box, [box], GRID, np.random.default_rng(3))
    b = shifted_box(box, [box], GRID, np.random.default_rng(3))
    assert a.box == b.box and torch.equal(a.patches, b.patches)
    picks = {shifted_box(box, [box], GRID, np.random.default_rng(s)).shift for s in range(20)}
    assert len(picks) > 1  # many free places: the generator chooses among them
    assert shifted_box(box, [box], GRID, None).shift == (0, 2)  # no generator: the first free one, row-major


def test_shifted_box_minimal_overlap_and_no_placement():
    box = (0.0, 0.0, 0.25, 0.25)  # 2 x 2 patches at the top left
    crowd = [box, (0.25, 0.0, 1.0, 1.0), (0.0, 0.25, 0.25, 1.0)]  # everything else holds an object
    crowd.append((0.0, 0.75, 0.25, 1.0))  # the bottom-left corner twice: more crowded there
    s = shifted_box(box, crowd, GRID, np.random.default_rng(0))
    occ = np.asarray(crowd)
    cands = [placement_overlap((r, c, 2, 2), occ, GRID) for r in range(7) for c in range(7) if r >= 2 or c >= 2]
    assert s is not None and s.overlap == pytest.approx(min(cands)) and s.overlap > 0
    assert shifted_box((0.0, 0.1, 1.0, 0.9), [], GRID) is None  # spans the width and most of the height


# ------------------------------------------------------------------------------------------------ estimation
def test_interaction_and_value_match_sample_interaction_and_closed_forms():
    g = torch.Generator().manual_seed(0)
    n = 6
    table = torch.randn(3, 2**n, generator=g)
    coal = torch.zeros(3, 3, n, dtype=torch.bool)
    coal[0, 0, :2] = True
    coal[0, 1, 2:5] = True
    coal[1, 0, [0, 5]] = True
    coal[1, 2, 1:4] = True
    coal[2, 1, :] = False
    coal[2, 1, 3] = True  # one player: no interaction, a value
    game = TableGame(table, n)
    mine = interaction_and_value(game, coal, 16, torch.Generator().manual_seed(7))
    ref = sample_interaction(game, coal, 16, torch.Generator().manual_seed(7))
    torch.testing.assert_close(mine.mean, ref.mean)
    torch.testing.assert_close(mine.stderr, ref.stderr)
    assert mine.num_evals == int(16 * (coal.sum(-1) + 2).sum())  # no padded members
    assert (mine.mean[2, 1] == 0) and (mine.value[2, 1] != 0)
    # AdditiveGame: every context gains exactly Σ_{i∈A} w_i, and no interaction
    w = torch.randn(3, n, generator=g)
    add = interaction_and_value(AdditiveGame(w), coal, 8, torch.Generator().manual_seed(1))
    torch.testing.assert_close(add.value, (coal.double() * w.double()[:, None]).sum(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(add.mean, torch.zeros(3, 3, dtype=torch.float64), atol=1e-5, rtol=0)
    # AndGame on A: I([A]) = φ([A]) = 1; a disjoint coalition gets 0 and 0
    A = torch.zeros(1, n, dtype=torch.bool)
    A[0, :3] = True
    pair = torch.stack([A, ~A & (torch.arange(n) < 5)], dim=1)
    r = interaction_and_value(AndGame(A), pair, 8, torch.Generator().manual_seed(2))
    torch.testing.assert_close(r.mean, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(r.value, torch.tensor([[1.0, 0.0]], dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ objects
def _image(iid, boxes, captions):
    return ImageRecord(image_id=iid, file_name=f"{iid}.jpg", path=Path(f"/nonexistent/{iid}.jpg"), width=64,
                       height=64, boxes=tuple(BoxAnnotation(a, iid, 1, b, attributes=attrs) for a, b, attrs in boxes),
                       captions=tuple(captions))


def _cap(sid, text, *named):
    phrases = tuple(Phrase(text.index(w), text.index(w) + len(w), w, ann_id=a) for w, a in named)
    return Caption(sid, text, phrases=phrases)


def test_objects_skip_and_count_by_reason_and_kind():
    task = TokenInteractionTask(load_task(fast()))
    im1 = _image(1, [(1, (8.0, 8.0, 24.0, 24.0), ()), (2, (40.0, 40.0, 6.0, 6.0), ()),
                     (3, (40.0, 0.0, 16.0, 16.0), (("kind", "two-part"),)), (4, (40.0, 20.0, 16.0, 16.0), ())],
                 [_cap(0, "a red square and a blue circle", ("a red square", 1), ("a blue circle", 2)),
                  _cap(1, "a red square", ("a red square", 1)),
                  _cap(2, "a green thing and a red square", ("a green thing", 3), ("a red square", 1))])
    im2 = _image(2, [(5, (0.0, 0.0, 64.0, 64.0), ())], [_cap(3, "a big square", ("a big square", 5))])
    captions = {im.image_id: im.captions for im in (im1, im2)}
    objs, skipped = task.objects([im1, im2], captions, GRID)
    assert [(o.ann_id, o.kind) for o in objs] == [(1, "flat"), (3, "two-part")]
    assert objs[0].text == "a red square"  # the caption naming the fewest objects
    assert dict(skipped) == {"too_few_patches": 1, "not_named": 1, "no_placement": 1}
    assert choose_caption(im1.captions, 3, "phrase") == "a green thing"
    assert choose_caption(im1.captions, 4) is None
    for o in objs:
        assert int(o.box.sum()) == int(o.shifted.sum()) >= 2 and not (o.box & o.shifted).any()


# ------------------------------------------------------------------------------------------------ planted games
class OrGame:
    """``v(S) = 1[S ∩ A ≠ ∅]``: any patch of the object is enough (no cooperation: ``I([A]) = 1 − |A| < 0``)."""

    def __init__(self, coalition):
        self.coalition = coalition.bool()

    def __call__(self, masks):
        return (masks & self.coalition[:, None, :]).any(-1).float()


def _kind_world(tiny_world, tmp_path):
    """The tiny world with every other test annotation marked ``two-part``."""
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    path = world / "annotations" / "instances_test.json"
    data = json.loads(path.read_text())
    for k, a in enumerate(data["annotations"]):
        a["kind"] = "two-part" if k % 2 else "flat"
    path.write_text(json.dumps(data))
    return world


@pytest.mark.parametrize("planted", ["and", "or"])
def test_planted_games_give_the_known_rates(planted, tiny_world, tmp_path, clip, monkeypatch):
    cls = AndGame if planted == "and" else OrGame
    monkeypatch.setattr(TokenInteractionTask, "game", lambda self, model, px, text, coal: cls(coal[:, 0]))
    world = _kind_world(tiny_world, tmp_path)
    task = TokenInteractionTask(load_task(fast(max_images=None)))
    out = task.run(clip, world, "test")
    m = {k: v.value for k, v in out.metrics.items()}
    n = out.extra["n_evaluated"]
    assert n["flat"] > 0 and n["two-part"] > 0 and n["flat"] + n["two-part"] == n["all"]
    for kind in ("flat", "two-part", "all"):
        assert m[f"box_beats_shifted@phi:{kind}"] == 1.0
        assert m[f"box_beats_shifted@I:{kind}"] == (1.0 if planted == "and" else 0.0)
        assert m[f"mean_phi:{kind}"] == pytest.approx(1.0) and m[f"mean_phi_shifted:{kind}"] == 0.0
        assert m[f"mean_I_shifted:{kind}"] == 0.0
        assert out.reference_rows["chance"][f"box_beats_shifted@I:{kind}"].value == 0.5
    sizes = np.asarray(out.per_item["mean_I:all"]) / np.asarray(out.per_item["mean_I_per_patch:all"])
    if planted == "and":
        assert m["mean_I:all"] == pytest.approx(1.0)
        assert m["mean_phi_per_patch:all"] == pytest.approx(float(np.mean(1 / sizes)))
    else:
        np.testing.assert_allclose(out.per_item["mean_I:all"], 1 - sizes)  # 1 − |A|
    assert sum(out.extra["skipped_objects"].values()) + n["all"] == out.extra["n_objects"]
    ci = out.metrics["box_beats_shifted@phi:all"].ci95
    assert ci is not None and ci[0] <= 1.0 <= ci[1]


# ------------------------------------------------------------------------------------------------ end to end
def test_spec_is_registered_and_validated():
    assert NAME in [n for n, _ in list_tasks()]
    spec = load_task(NAME)
    assert spec.type == "token-interaction" and set(spec.metrics) == set(metric_names())
    assert "shifted" in spec.description
    bad = fast()
    bad["metrics"] = ["mean_I:round"]
    with pytest.raises(SpecError, match="unknown token-interaction metric"):
        load_task(bad)
    bad = fast()
    bad["image"]["crop"] = "center"
    with pytest.raises(SpecError, match="crop: none"):
        load_task(bad)
    with pytest.raises(SpecError, match="text must be"):
        load_task(fast(text="sentence"))
    from loupe_bench.pipeline import synthetic_tasks

    assert NAME not in synthetic_tasks(quick=True) and NAME in synthetic_tasks()  # the default plan only
    prob = load_task("synthetic-token-interaction-prob")  # the same probe under the matching-probability value
    assert (prob.type, set(prob.metrics), prob.options["value"], prob.options["text"]) == (
        "token-interaction", set(metric_names()), "prob", "phrase")
    assert prob.name not in synthetic_tasks(quick=True) and prob.name in synthetic_tasks()


def test_untrained_model_end_to_end_and_deterministic(tiny_world, tmp_path, clip):
    from loupe_bench.tasks.evaluate import evaluate

    spec = fast(images_per_call=1)
    res = evaluate(clip, spec, data_root=tiny_world, out_dir=tmp_path / "out")[0]
    validate_result(json.loads(Path(res["_path"]).read_text()))
    for name in ("box_beats_shifted@I:all", "box_beats_shifted@phi:all", "mean_I:all", "mean_phi_shifted:flat",
                 "mean_I_per_patch:all"):
        assert res["metrics"][name]["ci95"] is not None
    assert res["metrics"]["box_beats_shifted@I:all"]["units"] == "fraction"
    assert res["metrics"]["mean_I:all"]["units"] == "score"
    assert res["metrics"]["box_beats_shifted@I:two-part"]["ci95"] is not None  # the world has two-part objects
    assert res["extra"]["n_evaluated"]["two-part"] > 0
    assert res["metrics"]["part_interaction_positive:all"]["units"] == "fraction"
    assert res["reference_rows"]["chance"]["box_beats_shifted@phi:all"]["value"] == 0.5
    assert set(res["extra"]["skipped_objects"]) == {"too_few_patches", "not_named", "no_placement"}
    again = evaluate(clip, fast(images_per_call=3), data_root=tiny_world, out_dir=None)[0]  # other batching
    for name, m in res["metrics"].items():
        assert again["metrics"][name]["value"] == pytest.approx(m["value"], abs=1e-6), name
    other = evaluate(clip, fast(seed=1), data_root=tiny_world, out_dir=None)[0]
    assert other["metrics"]["mean_I:all"]["value"] != res["metrics"]["mean_I:all"]["value"]
    assert other["task"]["fingerprint"] != res["task"]["fingerprint"]


def test_cli_eval_loupe(tiny_world, tmp_path):
    import yaml
    from click.testing import CliRunner

    from loupe_bench.cli.main import cli

    path = tmp_path / "ti.yaml"
    path.write_text(yaml.safe_dump(fast(max_images=2)))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["eval", "--model", "loupe-tiny", "--task", str(path), "--data-root",
                                   str(tiny_world), "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads((out / f"loupe-tiny__{NAME}__test.json").read_text())
    assert "box_beats_shifted@I:all" in got["metrics"] and got["extra"]["n_images"] == 2


def test_part_interaction_planted_and_or_games():
    """Parts as players: 'both parts needed' (AND over the box) gives +1, 'either part is enough' (OR) gives −1."""
    from loupe_bench.shapley import AndGame, OrGame
    from loupe_bench.shapley.sampling import sample_contexts
    from loupe_bench.tasks.token_interaction import part_interaction, top_half

    grid = (4, 4)
    a = torch.zeros(1, 1, 16, dtype=torch.bool)
    a[0, 0, [5, 6, 9, 10]] = True  # a 2x2 box: rows 1-2, cols 1-2
    top = top_half(a, grid)
    assert top[0, 0].nonzero().flatten().tolist() == [5, 6]
    ctx = sample_contexts(a, 16, torch.Generator().manual_seed(0))
    mean, se = part_interaction(AndGame(a[:, 0]), a, top, ctx)
    assert float(mean) == pytest.approx(1.0) and float(se) == 0.0
    mean, _ = part_interaction(OrGame(a[:, 0]), a, top, ctx)
    assert float(mean) == pytest.approx(-1.0)
    one_row = torch.zeros(1, 1, 16, dtype=torch.bool)
    one_row[0, 0, [5, 6]] = True
    assert not top_half(one_row, grid).any()
    mean, _ = part_interaction(AndGame(one_row[:, 0]), one_row, top_half(one_row, grid),
                               sample_contexts(one_row, 4, torch.Generator().manual_seed(0)))
    assert float(mean) == 0.0  # undefined for a one-row box: reported as 0, never as cooperation


def test_bank_texts_are_the_distinct_captions_or_phrases_sorted():
    caps = {1: [Caption(0, "a red square left of a blue circle",
                        phrases=(Phrase(2, 12, "red square", 7), Phrase(21, 32, "blue circle", 8)))],
            2: [Caption(1, "a red square", phrases=(Phrase(2, 12, "red square", 9),)), Caption(2, "a star")]}
    assert bank_texts(caps, "phrase") == ["blue circle", "red square"]
    assert bank_texts(caps, "caption") == ["a red square", "a red square left of a blue circle", "a star"]


@pytest.mark.parametrize("value", ["prob", "logprob"])
def test_prob_value_scores_each_object_among_the_splits_phrases(value, tiny_world, tmp_path, clip, monkeypatch):
    """``value: prob``/``logprob``: the game gets a bank of every distinct gold phrase of the split (independently
    counted from the world's files), each object's target is its own phrase, and the scale is the task's."""
    seen = []

    def game(self, model, px, text, coal, contrast=None):
        seen.append((text, contrast))
        return AndGame(coal[:, 0])

    monkeypatch.setattr(TokenInteractionTask, "game", game)
    task = TokenInteractionTask(load_task(fast(value=value, text="phrase", scale=9.0)))
    out = task.run(clip, tiny_world, "test")
    assert out.extra["value"] == value and out.metrics["box_beats_shifted@phi:all"].value == 1.0
    karpathy = json.loads((tiny_world / "dataset_synthetic.json").read_text())
    phrases = json.loads((tiny_world / "phrases.json").read_text())
    test_sents = {str(s["sentid"]) for im in karpathy["images"] if im["split"] == "test" for s in im["sentences"]}
    expected = sorted({p["text"] for sid, ps in phrases.items() if sid in test_sents for p in ps})
    from loupe_bench.tasks.common import encode_texts

    ref = torch.nn.functional.normalize(encode_texts(clip, expected, task.spec, "cpu").pooled, dim=-1)
    for text, (bank, target, scale) in seen:
        assert bank.shape[0] == len(expected) and scale == 9.0
        torch.testing.assert_close(torch.nn.functional.normalize(bank, dim=-1), ref, atol=1e-5, rtol=0)
        own = torch.nn.functional.normalize(text, dim=-1)
        torch.testing.assert_close(ref[target], own, atol=1e-5, rtol=0)  # the target is the object's own phrase
    with pytest.raises(SpecError, match="value must be"):
        load_task(fast(value="cosine-squared"))
    with pytest.raises(SpecError, match="scale must be"):
        load_task(fast(value="prob", scale=0))
