"""`bench region-teacher`: the box teachers of LOUPE's region head, measured on a trained run."""
import pytest
import torch

from loupe_bench.bench.region_teacher import box_iou_pairs, follow, jitter_teacher, map_teacher, start_boxes
from loupe_bench.models.loupe_heads import member_masks
from loupe_bench.models.region_geometry import excess_map
from loupe_bench.shapley import AdditiveGame


def _planted(rows, cols):
    w = torch.zeros(1, 64)
    for r in range(rows[0], rows[1] + 1):
        for c in range(cols[0], cols[1] + 1):
            w[0, r * 8 + c] = 1.0
    gt = torch.tensor([[cols[0] / 8, rows[0] / 8, (cols[1] + 1) / 8, (rows[1] + 1) / 8]])
    return w, gt


def test_start_boxes_are_shifted_copies():
    gt = torch.tensor([[0.2, 0.2, 0.4, 0.6]])
    assert torch.allclose(start_boxes(gt, 0.5), torch.tensor([[0.3, 0.4, 0.5, 0.8]]))


def test_map_teacher_leads_a_shifted_box_onto_a_planted_object():
    """Additive game: φ_i is the patch's weight, so the excess map is positive exactly on the object and the
    teacher's rectangle is the object's box after a step or two."""
    w, gt = _planted((2, 4), (1, 3))
    pmap = excess_map(w[0].double()[None])[0]
    final = follow(map_teacher(pmap, (8, 8), 0.3), start_boxes(gt, 0.3), 3)
    assert float(box_iou_pairs(final, gt)[0]) == pytest.approx(1.0)


def test_jitter_teacher_never_lowers_the_excess():
    """Under an additive game the sampled coalition value is exact, so each step keeps the box or moves it to a
    copy with a larger excess Σ_{i∈A} w_i − |A| v(N)/N."""
    w, gt = _planted((3, 5), (2, 4))
    game = AdditiveGame(w)
    v_full = float(w.sum())
    gen = torch.Generator().manual_seed(0)
    step = jitter_teacher(game, (8, 8), v_full, 3, 0.5, 2, gen)

    def excess(b):
        m = member_masks(b[None], (8, 8))[0].double()
        return m @ w[0].double() - m.sum(-1) * v_full / 64

    box = start_boxes(gt, 0.4)
    for _ in range(8):
        nxt = step(box)
        assert bool((excess(nxt) >= excess(box) - 1e-9).all())
        box = nxt


def test_bench_measures_every_teacher_on_the_trained_run(trained_run):
    from loupe_bench.bench.region_teacher import region_teacher

    rec = region_teacher(run=str(trained_run), images=3, pairs=[1], thresholds=[1.0, 2.0],
                         texts=["caption", "phrase"], iterations=2)
    assert rec["model_state"].startswith("trained") and "step 20" in rec["model_state"]
    labels = [r["label"] for r in rec["rows"]]
    assert len(labels) == 2 + 2 * 2 and len(set(labels)) == len(labels)
    for r in rec["rows"]:
        assert r["objects"] == rec["objects"] > 0 and 0.0 <= r["hit_rate"] <= 1.0 and 0.0 < r["area"] <= 1.0
    assert len(rec["figures"]) == len(rec["rows"])


def test_bench_refuses_a_missing_run():
    from loupe_bench.bench.region_teacher import region_teacher
    from loupe_bench.errors import DataError

    with pytest.raises(DataError, match="region-teacher"):
        region_teacher()
