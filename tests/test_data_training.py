"""Training-side plumbing: transforms, PairDataset determinism, shard pairs, span -> token masks, the collator."""
from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

from loupe_bench.data.training import (
    PairDataset,
    ShardPairs,
    TrainCollator,
    load_caption_records,
    phrase_token_mask,
)
from loupe_bench.data.transforms import build_transform, crop_boxes
from loupe_bench.models.base import TokenBatch


class WhitespaceTokenizer:
    """[CLS] w1 w2 ... [SEP] padded to ``max_len``; offsets (0, 0) for special and padding tokens."""

    def __init__(self, max_len: int = 16):
        self.max_len = max_len
        self.vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2}

    def __call__(self, texts):
        b, l = len(texts), self.max_len
        ids = torch.zeros(b, l, dtype=torch.long)
        mask = torch.zeros(b, l, dtype=torch.long)
        offs = torch.zeros(b, l, 2, dtype=torch.long)
        for i, t in enumerate(texts):
            words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", t)][: l - 2]
            toks = [(0, 0, "[CLS]")] + words + [(0, 0, "[SEP]")]
            for j, (s, e, w) in enumerate(toks):
                ids[i, j] = self.vocab.setdefault(w, len(self.vocab))
                mask[i, j] = 1
                offs[i, j, 0], offs[i, j, 1] = s, e
        return TokenBatch(ids, mask, offs)


def _naive_mask(tok: TokenBatch, spans, P):
    b, l = tok.input_ids.shape
    out = np.zeros((b, P, l), dtype=bool)
    for i in range(b):
        for p, (s, e) in enumerate(list(spans[i])[:P]):
            for j in range(l):
                a, z = tok.offsets[i, j].tolist()
                if tok.attention_mask[i, j] and z > a and a < e and z > s:
                    out[i, p, j] = True
    return out


def test_phrase_token_mask_against_naive_loop():
    texts = ["a small red triangle left of a large blue circle", "two shapes including a cyan star", "x"]
    spans = [[(2, 20), (31, 48)], [(23, 32)], []]
    tok = WhitespaceTokenizer(16)(texts)
    ptm, pm = phrase_token_mask(tok.offsets, tok.attention_mask, spans, max_phrases=3)
    assert ptm.dtype == torch.bool and ptm.shape == (3, 3, 16) and pm.shape == (3, 3)
    assert np.array_equal(ptm.numpy(), _naive_mask(tok, spans, 3))
    # by hand: "small red triangle" = tokens 2..4 ([CLS] a small red triangle ...), "large blue circle" = 8..10
    assert ptm[0, 0].nonzero().flatten().tolist() == [2, 3, 4]
    assert ptm[0, 1].nonzero().flatten().tolist() == [8, 9, 10]
    assert pm.tolist() == [[True, True, False], [True, False, False], [False, False, False]]


def test_truncated_and_surplus_phrases_are_dropped():
    text = "one two three four five six seven"
    tok = WhitespaceTokenizer(5)(  # keeps [CLS] one two three [SEP]
        [text]
    )
    spans = [[(0, 3), (24, 33), (4, 7)]]
    ptm, pm = phrase_token_mask(tok.offsets, tok.attention_mask, spans, max_phrases=2)
    assert pm.tolist() == [[True, False]]  # "six seven" was cut off; the third phrase exceeds P
    assert ptm[0, 0].nonzero().flatten().tolist() == [1]


def test_partial_token_overlap_counts():
    tok = WhitespaceTokenizer(8)(["reddish circle"])
    ptm, pm = phrase_token_mask(tok.offsets, tok.attention_mask, [[(0, 3)]], 1)
    assert ptm[0, 0].nonzero().flatten().tolist() == [1]


def test_transforms():
    img = Image.new("RGB", (80, 64), (255, 0, 51))
    ev = build_transform(32, (0.5, 0.5, 0.5), (0.25, 0.5, 0.5), train=False)
    x = ev(img)
    assert x.shape == (3, 32, 32)
    # (v / 255 - mean) / std per channel on a constant image
    assert torch.allclose(x[:, 5, 5], torch.tensor([(1 - 0.5) / 0.25, (0 - 0.5) / 0.5, (0.2 - 0.5) / 0.5]), atol=1e-5)
    tr = build_transform(32, (0.5,) * 3, (0.5,) * 3, train=True)
    assert tr(img.convert("L")).shape == (3, 32, 32)
    names = [type(t).__name__ for t in tr.transforms]
    assert "RandomHorizontalFlip" not in names and "RandomResizedCrop" in names
    assert "RandomHorizontalFlip" in [type(t).__name__ for t in build_transform(32, (0,) * 3, (1,) * 3, True, hflip=True).transforms]


def test_load_caption_records_specs(tiny_world):
    recs = load_caption_records(tiny_world, "train")
    assert len(recs) == 40 and all(len(r.captions) == 5 and r.captions[0].phrases for r in recs)
    same = load_caption_records(f"karpathy:{tiny_world / 'dataset_synthetic.json'}", "train")
    assert [r.captions for r in same] == [r.captions for r in recs]
    shards = load_caption_records({"format": "webdataset", "path": str(tiny_world / "shards")}, "val")
    assert len(shards) == 12


def test_pair_dataset_is_deterministic_and_epoch_dependent(tiny_world):
    recs = load_caption_records(tiny_world, "train")
    tr = build_transform(64, (0.5,) * 3, (0.5,) * 3, train=True)
    a, b = PairDataset(recs, tr, seed=3), PairDataset(recs, tr, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    torch.manual_seed(123)  # global RNG state must not matter
    sa = [a[i] for i in range(6)]
    torch.manual_seed(999)
    sb = [b[i] for i in reversed(range(6))][::-1]
    for x, y in zip(sa, sb):
        assert x.caption == y.caption and torch.equal(x.pixels, y.pixels) and x.spans == y.spans
    caps_by_epoch = []
    for ep in range(4):
        a.set_epoch(ep)
        caps_by_epoch.append([a.caption_index(i) for i in range(len(a))])
    assert len({tuple(c) for c in caps_by_epoch}) == 4
    s = a[0]
    cap = next(c for c in recs[0].captions if c.text == s.caption)
    assert s.spans == tuple((p.start, p.end) for p in cap.phrases) and s.image_id == recs[0].image_id
    cyc = PairDataset(recs, tr, caption_policy="cycle")
    cyc.set_epoch(1)
    assert cyc[0].caption == recs[0].captions[(1 + recs[0].image_id) % 5].text


def test_shard_pairs_match_pair_dataset(tiny_world):
    tr = build_transform(64, (0.5,) * 3, (0.5,) * 3, train=True)
    recs = load_caption_records(tiny_world, "val")
    ds = PairDataset(recs, tr, seed=1)
    ds.set_epoch(3)
    sp = ShardPairs(str(tiny_world / "shards" / "val-{000000..000000}.tar"), tr, seed=1)
    sp.set_epoch(3)
    got = list(sp)
    assert [g.image_id for g in got] == [r.image_id for r in recs]
    for g, i in zip(got, range(len(ds))):
        want = ds[i]
        assert g.caption == want.caption and g.spans == want.spans and torch.equal(g.pixels, want.pixels)
        torch.testing.assert_close(torch.tensor(g.phrase_boxes), torch.tensor(want.phrase_boxes), equal_nan=True)


def test_collator_batch_contract(tiny_world):
    recs = load_caption_records(tiny_world, "train")
    ds = PairDataset(recs, build_transform(64, (0.5,) * 3, (0.5,) * 3, train=False))
    tok = WhitespaceTokenizer(24)
    coll = TrainCollator(tok, max_phrases=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=coll)
    batch = next(iter(loader))
    assert set(batch) == {"pixels", "input_ids", "attention_mask", "phrase_token_mask", "phrase_mask", "image_ids",
                          "phrase_boxes"}  # the synthetic world knows each phrase's object
    assert batch["phrase_boxes"].shape == (8, 4, 4)
    assert torch.isfinite(batch["phrase_boxes"]).all(-1).equal(batch["phrase_mask"])
    assert batch["pixels"].shape == (8, 3, 64, 64)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (8, 24)
    assert batch["phrase_token_mask"].shape == (8, 4, 24) and batch["phrase_token_mask"].dtype == torch.bool
    assert batch["phrase_mask"].shape == (8, 4) and batch["image_ids"].dtype == torch.long
    assert batch["image_ids"].tolist() == [r.image_id for r in recs[:8]]
    # every real phrase slot selects exactly the words of the phrase text
    samples = [ds[i] for i in range(8)]
    tb = tok([s.caption for s in samples])
    for i, s in enumerate(samples):
        words = s.caption.split()
        for p, (a, z) in enumerate(s.spans[:4]):
            idx = batch["phrase_token_mask"][i, p].nonzero().flatten().tolist()
            assert " ".join(words[j - 1] for j in idx).rstrip(",") == s.caption[a:z]
        assert batch["phrase_mask"][i].sum() == min(len(s.spans), 4)
    assert torch.equal(batch["input_ids"], tb.input_ids)
    # plain tuples work too
    tup = coll([tuple(samples[0]), tuple(samples[1])])
    assert tup["pixels"].shape[0] == 2
    # eval transform of the 64 px world is the identity geometry: the box is the phrase's bbox / 64
    cap = next(c for c in recs[0].captions if c.text == samples[0].caption)
    x, y, w, h = cap.phrases[0].bbox
    want = torch.tensor([x / 64, y / 64, (x + w) / 64, (y + h) / 64])
    assert torch.allclose(batch["phrase_boxes"][0, 0], want, atol=1e-6)
    # data without phrase boxes: no phrase_boxes key
    plain = coll([s._replace(phrase_boxes=None) for s in samples[:2]])
    assert "phrase_boxes" not in plain


def test_shard_pairs_split_filter(tiny_world):
    ident = lambda img: torch.zeros(1)  # noqa: E731
    val = list(ShardPairs(tiny_world / "shards", ident, split="val"))
    assert len(val) == 12
    assert len(list(ShardPairs(tiny_world / "shards", ident))) == 76
    # a shard list mixing splits keeps only samples whose JSON names the split
    both = [tiny_world / "shards" / "val-000000.tar", tiny_world / "shards" / "test-000000.tar"]
    assert [s.image_id for s in ShardPairs(both, ident, split="test")] == list(range(53, 65))


def test_pair_dataset_image_cache_changes_nothing_and_keeps_global_rng(tiny_world):
    recs = load_caption_records(tiny_world, "train")
    tr = build_transform(64, (0.5,) * 3, (0.5,) * 3, train=True)
    cached, plain = PairDataset(recs, tr, seed=1), PairDataset(recs, tr, seed=1, cache_images=False)
    assert cached.cache is not None and plain.cache is None  # the tiny world is under CACHE_MAX_IMAGES
    for epoch in (0, 1):  # the second epoch reads from the cache
        cached.set_epoch(epoch)
        plain.set_epoch(epoch)
        for i in range(5):
            assert torch.equal(cached[i].pixels, plain[i].pixels)
    assert len(cached.cache) == 5
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    cached[0]
    assert torch.equal(torch.rand(3), expected)  # augmentation seeds its own draws, the caller's RNG is untouched


def _planted(width=96, height=72, box=(20, 10, 50, 40)):
    """A black image with one white rectangle at pixel corners ``box`` (x0, y0, x1, y1; exclusive ends)."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 255
    norm = torch.tensor([[x0 / width, y0 / height, x1 / width, y1 / height]], dtype=torch.float64)
    return Image.fromarray(arr), norm


def _bright_box(x: torch.Tensor):
    """Pixel-edge xyxy of the pixels brighter than half (None when there is none)."""
    on = x[0] > 0.5
    if not on.any():
        return None
    ys, xs = on.any(1).nonzero().flatten(), on.any(0).nonzero().flatten()
    return torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float64)


def test_boxes_follow_the_random_resized_crop():
    """A planted rectangle: under the same seed ``with_boxes`` gives exactly the pixels of ``transform(img)`` and a
    box that matches where the rectangle landed (within bicubic blur); cut boxes are clipped, vanished ones NaN."""
    img, box = _planted()
    tr = build_transform(48, (0.0,) * 3, (1.0,) * 3, train=True, scale=(0.15, 0.5))
    kinds = {"inside": 0, "clipped": 0, "gone": 0}
    for seed in range(40):
        torch.manual_seed(seed)
        x, b = tr.with_boxes(img, box)
        torch.manual_seed(seed)
        assert torch.equal(x, tr(img))  # same random draws, same pixels
        bright = _bright_box(x)
        if torch.isnan(b).all():
            kinds["gone"] += 1
            assert bright is None or (x[0] > 0.5).sum() <= 2, seed
            continue
        assert torch.isfinite(b).all() and (b >= 0).all() and (b <= 1).all()
        assert bright is not None and torch.allclose(b[0] * 48, bright, atol=1.5), (seed, b[0] * 48, bright)
        kinds["clipped" if ((b == 0) | (b == 1)).any() else "inside"] += 1
    assert min(kinds.values()) > 0, kinds


def test_boxes_follow_centre_crop_and_flip():
    img, box = _planted(width=120, height=60, box=(10, 5, 40, 30))
    ev = build_transform(30, (0.0,) * 3, (1.0,) * 3, train=False)  # 120x60 -> 60x30 -> centre 30x30 (x 15..45)
    x, b = ev.with_boxes(img, box)
    assert torch.allclose(b, torch.tensor([[0.0, 2.5 / 30, 5 / 30, 0.5]], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(b[0] * 30, _bright_box(x), atol=1.0)
    flip = build_transform(30, (0.0,) * 3, (1.0,) * 3, train=True, hflip=True, scale=None)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        x, fb = flip.with_boxes(img, box)
        flipped = bool(fb[0, 2] == 1.0)
        seen.add(flipped)
        want = torch.tensor([[1 - 5 / 30, 2.5 / 30, 1.0, 0.5]], dtype=torch.float64) if flipped else b
        assert torch.allclose(fb, want, atol=1e-9)
        assert torch.allclose(fb[0] * 30, _bright_box(x), atol=1.0)
    assert seen == {True, False}
    # a step without a box rule makes the boxes unknown
    from torchvision import transforms as T

    odd = type(ev)([T.RandomRotation(10), T.ToTensor()])
    assert odd.with_boxes(img, box)[1] is None


def test_crop_boxes_closed_form():
    b = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.05, 0.05], [float("nan")] * 4])
    got = crop_boxes(b, 100, 100, 10, 20, 50, 40)  # crop x 10..60, y 20..60
    assert torch.allclose(got[0], torch.tensor([0.0, 0.0, 0.4, 0.25]))
    assert torch.isnan(got[1:]).all()
