"""What the evaluation shares between tasks of one process gives the same answers as computing it afresh."""
from __future__ import annotations

import json
import shutil

import torch

from loupe_bench.tasks import load_task
from loupe_bench.tasks import common
from loupe_bench.tasks.grounding import Query, acceptable
from loupe_bench.tasks.metrics.grounding import box_iou, xywh_to_xyxy


def test_acceptable_equals_the_per_query_loop():
    g = torch.Generator().manual_seed(0)
    cands = torch.rand(40, 2, generator=g) * 50
    cands = torch.cat([cands, cands + 5 + torch.rand(40, 2, generator=g) * 30], dim=1).double()
    queries = []
    for j in range(25):
        n = j % 4  # 0..3 gt boxes, including a query with none
        xy = (torch.rand(n, 2, generator=g) * 50).tolist()
        wh = (5 + torch.rand(n, 2, generator=g) * 30).tolist()
        queries.append(Query(f"q{j}", tuple((a[0], a[1], b[0], b[1]) for a, b in zip(xy, wh))))
    for thr in (0.1, 0.3, 0.5):
        want = torch.zeros(len(cands), len(queries), dtype=torch.bool)
        for k in range(len(cands)):
            for j, q in enumerate(queries):
                want[k, j] = any(float(box_iou(cands[k:k + 1], xywh_to_xyxy(b))[0, 0]) >= thr for b in q.gt)
        assert torch.equal(acceptable(cands, queries, thr), want)
        assert want.any() and not want.all()
    assert acceptable(cands[:0], queries, 0.5).shape == (0, 25)
    assert acceptable(cands, [], 0.5).shape == (40, 0)


def test_load_records_cache_is_transparent_and_sees_rewrites(tiny_world, tmp_path):
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world)
    spec = load_task("synthetic-grounding-gt-boxes")
    common._RECORDS_CACHE.clear()
    first = common.load_records(spec, world, "test")
    assert len(common._RECORDS_CACHE) == 1
    again = common.load_records(spec, world, "test")
    assert len(common._RECORDS_CACHE) == 1  # served from the cache
    assert again == first and again.refs is not first.refs  # equal records, a fresh container
    again.refs.clear()
    assert common.load_records(spec, world, "test").refs == first.refs  # a caller's edit does not leak
    common._RECORDS_CACHE.clear()
    assert common.load_records(spec, world, "test") == first  # the same as parsing afresh
    # a rewritten annotation file beside the data set is read again
    inst = world / "refsynth" / "instances.json"
    data = json.loads(inst.read_text())
    data["categories"][0]["name"] = "renamed-category"
    inst.write_text(json.dumps(data))
    fresh = common.load_records(spec, world, "test")
    assert "renamed-category" in fresh.categories.values()
    assert "renamed-category" not in first.categories.values()


def test_text_features_cache_equals_a_fresh_encoding_and_follows_the_weights():
    from loupe_bench.models import create_model

    model = create_model("clip-tiny", seed=0).eval()
    spec = load_task("synthetic-retrieval")
    texts = ["a red square", "two blue circles", "a small green-and-yellow triangle"]
    first = common.encode_texts(model, texts, spec)
    fresh = common._encode_texts(model, texts, max(1, spec.batch_size * 4), "cpu", "t")
    again = common.encode_texts(model, texts, spec)
    for a, b, c in zip(first, fresh, again):
        assert torch.equal(a, b) and torch.equal(a, c)
    again.pooled.mul_(0)  # a caller editing its copy in place does not reach the cache
    assert torch.equal(common.encode_texts(model, texts, spec).pooled, first.pooled)
    with torch.no_grad():  # an in-place weight change (an optimiser step) invalidates
        next(p for n, p in model.named_parameters() if "text" in n and p.dim() == 2).add_(0.5)
    changed = common.encode_texts(model, texts, spec)
    assert not torch.equal(changed.pooled, first.pooled)
    assert torch.equal(changed.pooled, common._encode_texts(model, texts, max(1, spec.batch_size * 4), "cpu",
                                                            "t").pooled)
    model.train()  # dropout on: never served from the cache
    n = len(common._TEXT_CACHE[model])
    common.encode_texts(model, texts, spec)
    assert len(common._TEXT_CACHE[model]) == n
