"""Metrics against hand-computed cases and independent references (naive loops, pycocotools, pycocoevalcap)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loupe_bench.errors import DataError
from loupe_bench.tasks.metrics import bootstrap as bs
from loupe_bench.tasks.metrics.classification import fit_logistic_regression, linear_probe, topk_accuracy
from loupe_bench.tasks.metrics.detection import coco_ap, per_class_nms, resample_coco
from loupe_bench.tasks.metrics.grounding import accuracy_at_iou, box_iou, grounding_hits, xywh_to_xyxy
from loupe_bench.tasks.metrics.retrieval import (
    image_to_text_ranks,
    retrieval_metrics,
    text_to_image_ranks,
)


# ---------------------------------------------------------------------------------------------------- retrieval
def naive_ranks(scores: np.ndarray, positives) -> np.ndarray:
    """Dense reference: stable argsort of negated scores (ties -> lower index first), best positive position."""
    out = []
    for q in range(scores.shape[0]):
        order = np.argsort(-scores[q], kind="stable")
        pos = set(positives[q])
        out.append(min(i for i, g in enumerate(order) if g in pos))
    return np.array(out)


def clip_benchmark_recall(scores_t_by_i: np.ndarray, positive_pairs: np.ndarray, k: int) -> float:
    """CLIP_benchmark's definition re-written here: per query count positives in topk, hit if > 0."""
    t = torch.from_numpy(scores_t_by_i)
    topk = t.topk(k, dim=1).indices
    nb_pos = torch.from_numpy(positive_pairs).gather(1, topk).sum(1)
    return float((nb_pos > 0).float().mean())


def test_retrieval_hand_computed_with_ties_and_several_captions():
    # 2 images, 4 captions: captions 0,1 -> image 0; captions 2,3 -> image 1
    s = torch.tensor([[0.1, 0.9, 0.9, 0.2], [0.5, 0.5, 0.3, 0.5]])
    owners = [0, 0, 1, 1]
    r_i2t = image_to_text_ranks(s, owners)
    # image 0: best positive caption 1 (0.9) ties caption 2 (0.9); caption 1 has the lower index -> rank 0
    # image 1: best positive caption 3 (0.5) ties captions 0,1 (0.5, lower index) -> rank 2
    assert r_i2t.tolist() == [0, 2]
    r_t2i = text_to_image_ranks(s, owners)
    # caption 0: col [0.1, 0.5] -> GT image 0 rank 1; caption 1: [0.9, 0.5] -> 0
    # caption 2: [0.9, 0.3] GT image 1 -> 1; caption 3: [0.2, 0.5] -> 0
    assert r_t2i.tolist() == [1, 0, 1, 0]
    out = retrieval_metrics(s, s, owners, ks=(1, 5, 10))
    assert out.metrics["i2t_R@1"] == 0.5
    assert out.metrics["t2i_R@1"] == 0.5
    assert out.metrics["i2t_R@5"] == 1.0
    assert out.metrics["rsum"] == pytest.approx(0.5 + 1 + 1 + 0.5 + 1 + 1)


def test_tie_rule_lower_gallery_index_wins():
    # all scores tied: the gallery order is the index order
    s = torch.zeros(2, 3)
    # image 0 owns captions 1, 2 -> caption 0 (image 1's) is ranked first -> best rank 1; image 1 -> rank 0
    assert image_to_text_ranks(s, [1, 0, 0]).tolist() == [1, 0]
    # caption queries: image 0 always precedes image 1
    assert text_to_image_ranks(s, [1, 0, 0]).tolist() == [1, 0, 0]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_chunked_equals_dense_reference(chunk):
    rng = np.random.default_rng(0)
    n_img, per = 9, 5
    owners = np.repeat(np.arange(n_img), per)
    rng.shuffle(owners)
    # quantised scores force many ties
    s = np.round(rng.normal(size=(n_img, owners.size)), 1).astype(np.float32)
    pos_i2t = [np.flatnonzero(owners == i) for i in range(n_img)]
    pos_t2i = [[owners[j]] for j in range(owners.size)]
    ref_i2t = naive_ranks(s, pos_i2t)
    ref_t2i = naive_ranks(s.T.copy(), pos_t2i)
    assert (image_to_text_ranks(torch.from_numpy(s), owners, chunk_size=chunk) == ref_i2t).all()
    assert (text_to_image_ranks(torch.from_numpy(s), owners, chunk_size=chunk) == ref_t2i).all()


@pytest.mark.parametrize("chunk,gblock", [(1, 1), (2, 3), (4, 7), (5, None), (1000, 2)])
def test_tiled_counting_equals_dense_reference(chunk, gblock):
    """Tiles cut the gallery axis too (the threshold switch at p* inside a tile), shuffled owners, heavy ties,
    infinite scores, and a transposed (non-contiguous) float64 input compared in float32."""
    rng = np.random.default_rng(3)
    n_img, per = 11, 4
    owners = np.repeat(np.arange(n_img), per)
    rng.shuffle(owners)
    s = np.round(rng.normal(size=(n_img, owners.size)), 1).astype(np.float32)
    s[2, :] = -np.inf  # image 2: every score -inf (its best positive has no float below it)
    s[:, 5] = np.inf
    s[4, owners == 4] = np.inf
    pos_i2t = [np.flatnonzero(owners == i) for i in range(n_img)]
    pos_t2i = [[owners[j]] for j in range(owners.size)]
    ref_i2t, ref_t2i = naive_ranks(s, pos_i2t), naive_ranks(s.T.copy(), pos_t2i)
    for m in (torch.from_numpy(s), torch.from_numpy(s.T.astype(np.float64).copy()).T):
        assert (image_to_text_ranks(m, owners, chunk_size=chunk, gallery_block=gblock) == ref_i2t).all()
        assert (text_to_image_ranks(m, owners, chunk_size=chunk, gallery_block=gblock) == ref_t2i).all()


def test_float32_comparison_of_float64_and_bf16_inputs():
    # 1 + 1e-9 and 1 are one float32 value: a tie in float32 (lower index first), whatever the input dtype
    s64 = torch.tensor([[1.0 + 1e-9, 1.0], [0.0, 0.0]], dtype=torch.float64)
    assert image_to_text_ranks(s64, [1, 0]).tolist() == [1, 0]
    sb = torch.tensor([[0.5, 0.25], [0.75, 0.25]], dtype=torch.bfloat16)
    assert text_to_image_ranks(sb, [0, 1]).tolist() == [1, 1]  # caption 1: tie 0.25, image 0 first
    assert image_to_text_ranks(sb, [0, 1]).tolist() == [0, 1]


def test_equals_clip_benchmark_definition_without_ties():
    rng = np.random.default_rng(1)
    n_img, per = 12, 5
    owners = np.repeat(np.arange(n_img), per)
    s = rng.normal(size=(n_img, owners.size))
    out = retrieval_metrics(torch.from_numpy(s), torch.from_numpy(s), owners)
    pos = (owners[None, :] == np.arange(n_img)[:, None]).astype(np.int64)  # [img, txt]
    for k in (1, 5, 10):
        # CLIP_benchmark: scores = text @ image.T; image retrieval uses rows of texts, text retrieval the transpose
        assert out.metrics[f"t2i_R@{k}"] == pytest.approx(clip_benchmark_recall(s.T.copy(), pos.T.copy(), k))
        assert out.metrics[f"i2t_R@{k}"] == pytest.approx(clip_benchmark_recall(s, pos, k))


def test_equals_clip_benchmark_library_and_ties_only_where_ambiguous():
    """The real CLIP_benchmark 1.6.2 metric (optional extra): equal recalls on a tie-free matrix; on a tied one the
    per-query hits differ only on tie-ambiguous queries (its ``topk`` order among equal scores is unspecified)."""
    from loupe_bench.bench.retrieval_metric import (clip_benchmark_hits, compare_with_clip_benchmark,
                                                    load_clip_benchmark, tie_bounds)

    zr = load_clip_benchmark()
    if zr is None:
        pytest.skip("clip-benchmark (extra 'bench') not installed")
    rng = np.random.default_rng(5)
    n_img, per = 30, 5
    owners = np.repeat(np.arange(n_img), per)
    rng.shuffle(owners)
    for decimals in (None, 1):
        s = rng.normal(size=(n_img, owners.size)) + 1.5 * (owners[None, :] == np.arange(n_img)[:, None])
        s = (s if decimals is None else np.round(s, decimals)).astype(np.float32)
        out = retrieval_metrics(torch.from_numpy(s), torch.from_numpy(s), owners)
        hits = clip_benchmark_hits(zr, s, owners, (1, 5, 10), batch_size=7)
        pos = s[owners, np.arange(owners.size)]
        best = np.full(n_img, -np.inf, dtype=np.float32)
        np.maximum.at(best, owners, pos)
        rows = compare_with_clip_benchmark(hits, out, tie_bounds(s, owners, best, pos, block=4))
        for key, r in rows.items():
            assert r["differing_unambiguous_queries"] == 0
            if decimals is None:
                assert r["tie_ambiguous_queries"] == 0 and r["recall_clip_benchmark"] == out.metrics[key]


def test_retrieval_rejects_nan_and_orphans():
    with pytest.raises(DataError):
        image_to_text_ranks(torch.tensor([[float("nan"), 0.0]]), [0, 0])
    with pytest.raises(DataError):
        image_to_text_ranks(torch.zeros(2, 2), [0, 0])  # image 1 has no caption


# ---------------------------------------------------------------------------------------------- classification
def test_topk_hand_computed_and_ties():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.3, 0.3, 0.3]])
    labels = [1, 1, 2]
    # sample 0 rank 0; sample 1 ties with class 0 (lower index wins) -> rank 1; sample 2 -> rank 2
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc["top1"] == pytest.approx(1 / 3)
    assert acc["top2"] == pytest.approx(2 / 3)
    assert acc["top5"] == 1.0


def test_logistic_regression_optimality_and_probe_selection():
    g = torch.Generator().manual_seed(0)
    n, d, c = 60, 5, 3
    centers = torch.randn(c, d, generator=g) * 3
    y = torch.arange(n) % c
    x = centers[y] + torch.randn(n, d, generator=g)
    l2 = 1e-2
    w, b = fit_logistic_regression(x, y, c, l2)
    # first-order optimality of the convex objective (independent check of the solver)
    w_ = w.clone().requires_grad_(True)
    b_ = b.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x.double() @ w_.T + b_, y) + 0.5 * l2 * (w_ * w_).sum()
    loss.backward()
    assert w_.grad.abs().max() < 1e-5 and b_.grad.abs().max() < 1e-5
    out = linear_probe(x[:30], y[:30], x[30:45], y[30:45], x[45:], c, l2_grid=(1e-3, 1.0))
    assert out.l2 in (1e-3, 1.0) and len(out.val_accuracy) == 2
    assert topk_accuracy(out.test_logits, y[45:], ks=(1,))["top1"] >= 0.9
    again = linear_probe(x[:30], y[:30], x[30:45], y[30:45], x[45:], c, l2_grid=(1e-3, 1.0))
    assert torch.equal(out.test_logits, again.test_logits)


# ---------------------------------------------------------------------------------------------- grounding
def test_iou_edge_cases():
    a = [[0, 0, 2, 2]]
    assert box_iou(a, [[2, 0, 4, 2]]).item() == 0.0  # touching
    assert box_iou(a, [[0.5, 0.5, 1.5, 1.5]]).item() == pytest.approx(1 / 4)  # contained
    assert box_iou(a, [[0, 0, 2, 2]]).item() == 1.0
    assert box_iou(a, [[1, 1, 3, 3]]).item() == pytest.approx(1 / 7)
    assert box_iou(a, [[1, 1, 1, 1]]).item() == 0.0  # zero-area inside
    assert box_iou([[1, 1, 1, 1]], [[1, 1, 1, 1]]).item() == 0.0  # both zero-area: defined as 0
    assert xywh_to_xyxy([[1, 2, 3, 4]]).tolist() == [[1, 2, 4, 6]]


def test_acc_at_iou_uses_greater_or_equal():
    gt = [[0, 0, 2, 1], [0, 0, 2, 2]]
    pred = [[0, 0, 1, 1], [0, 0, 2, 1]]  # IoU exactly 0.5 both
    assert grounding_hits(pred, gt).tolist() == [1, 1]
    assert accuracy_at_iou(pred, gt, 0.5) == 1.0
    assert accuracy_at_iou(pred, gt, 0.51) == 0.0


# ---------------------------------------------------------------------------------------------- detection
def _gt():
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in (1, 2)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [20, 20, 50, 50], "area": 2500, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 2, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
    ]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def test_detection_perfect_empty_partial():
    gt = _gt()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]
    assert coco_ap(gt, perfect) == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0), "AP75": pytest.approx(1.0)}
    assert coco_ap(gt, []) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    # only the class-1 boxes found: class 1 AP 1, class 2 AP 0 -> mean 0.5
    half = [d for d in perfect if d["category_id"] == 1]
    assert coco_ap(gt, half)["AP50"] == pytest.approx(0.5)
    # one of two class-2 boxes found, with the highest score: precision 1 up to recall 0.5 -> 101-point AP
    # = 51/101 for class 2; class 1 perfect -> mean (1 + 51/101) / 2
    partial = half + [d for d in perfect if d["category_id"] == 2 and d["image_id"] == 1]
    assert coco_ap(gt, partial)["AP"] == pytest.approx((1 + 51 / 101) / 2)
    # a box with IoU 0.64 with its GT (AP50 counts it, AP75 does not)
    shifted = [dict(d) for d in perfect]
    x, y, w, h = shifted[0]["bbox"]
    shifted[0]["bbox"] = [x + 6.6, y, w, h]  # IoU = 23.4 / 36.6 = 0.639
    out = coco_ap(gt, shifted)
    assert out["AP50"] == pytest.approx(1.0)
    # at IoU 0.75 class 1 finds one of its two boxes, both scored 0.9: COCOeval sorts detections stably, so the
    # shifted one (first) is a false positive before the true positive -> precision 1/2 at recall 1/2 and
    # interpolated precision 0.5 for recall points 0..0.5 (51 of 101) -> class-1 AP75 = 0.5*51/101
    assert out["AP75"] == pytest.approx((0.5 * 51 / 101 + 1.0) / 2)


def test_detection_resample_and_nms():
    gt = _gt()
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.9}]
    g2, d2 = resample_coco(gt, dets, [1, 1, 2])
    assert [im["id"] for im in g2["images"]] == [0, 1, 2]
    assert len(g2["annotations"]) == 6 and len(d2) == 2
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10.0]])
    keep = per_class_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 2]


# ---------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_intervals_deterministic_and_paired():
    v = np.array([0, 1] * 50, dtype=float)
    a = bs.bootstrap_ci(v, n_resamples=500, seed=3)
    b = bs.bootstrap_ci(v, n_resamples=500, seed=3)
    assert a == b and a.value == 0.5 and a.low < 0.5 < a.high
    # standard error of a mean of Bernoulli(0.5), n=100 is 0.05 -> 95 % half-width about 0.098
    assert 0.07 < (a.high - a.low) / 2 < 0.13
    const = bs.bootstrap_ci(np.ones(10), n_resamples=50)
    assert const == (1.0, 1.0, 1.0)
    d = bs.paired_bootstrap_delta(v + 0.1, v, n_resamples=200)
    assert d["delta"] == pytest.approx(0.1) and d["low"] == pytest.approx(0.1) and d["high"] == pytest.approx(0.1)
    fn = bs.bootstrap_ci_fn(100, lambda idx: float(v[idx].mean()), n_resamples=500, seed=3)
    assert fn.low == pytest.approx(a.low) and fn.high == pytest.approx(a.high)
    s = bs.seed_summary([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "n": 3}


def test_retrieval_metric_benchmark_small():
    """The benchmark's two implementations agree (small size here; the 5K x 25K run is `loupe-bench bench`)."""
    from loupe_bench.bench import load_all

    fn = load_all().get("retrieval-metric")
    out = fn(repeat=1, n_images=40, captions_per_image=5, chunk_size=7)
    figs = {f["label"]: f for f in out["figures"]}
    assert figs["recalls equal (6 values)"]["met"] and figs["ranks equal (all queries)"]["met"]
    assert out["metrics_project"]["i2t_R@1"] == out["metrics_naive"]["i2t_R@1"]


def _random_detection_case(seed: int, n_images: int = 30):
    rng = np.random.default_rng(seed)
    ims = [{"id": 100 + i, "width": 100, "height": 100} for i in range(n_images)]
    anns, dets = [], []
    for im in ims:
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, 60, 2)
            w, h = rng.uniform(8, 40, 2)
            c = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            for _ in range(int(rng.integers(0, 3))):  # near hits, sometimes with the wrong class
                dets.append({"image_id": im["id"], "category_id": int(rng.choice([c, c, 1 + (c % 3)])),
                             "bbox": [x + rng.normal(0, 4), y + rng.normal(0, 4), w, h],
                             "score": float(rng.uniform())})
        for _ in range(int(rng.integers(0, 3))):  # false positives
            dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, 4)),
                         "bbox": [float(v) for v in rng.uniform(0, 50, 4) + [0, 0, 5, 5]],
                         "score": float(rng.uniform())})
    cats = [{"id": c, "name": str(c)} for c in (1, 2, 3, 4)]  # category 4 has no ground truth (ignored)
    return {"images": ims, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_matches_reaccumulation_equals_pycocotools(seed):
    """AP re-accumulated from one matching pass == a fresh COCOeval, for the full set and for bootstrap replicates
    (images drawn with repeats, renamed so a repeat counts twice)."""
    from loupe_bench.tasks.metrics.bootstrap import resample_indices
    from loupe_bench.tasks.metrics.detection import COCOMatches

    gt, dets = _random_detection_case(seed)
    m = COCOMatches(gt, dets)
    ref = coco_ap(gt, dets)
    assert ref["AP50"] > 0.05  # a non-trivial case
    assert m.ap() == pytest.approx(ref, abs=1e-12)
    ids = [im["id"] for im in gt["images"]]
    for idx in resample_indices(len(ids), 4, seed):
        assert m.ap(idx) == pytest.approx(coco_ap(*resample_coco(gt, dets, [ids[i] for i in idx])), abs=1e-12)
    assert COCOMatches(gt, []).ap() == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
