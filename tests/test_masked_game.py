"""The tower-evaluated token game (ℒ_TSA's value): dropping hidden tokens equals encoding the kept tokens alone."""
import pytest
import torch
import torch.nn.functional as F

from loupe_bench.errors import SpecError
from loupe_bench.models.factory import create_model
from loupe_bench.models.masked_game import MaskedTowerGame


@pytest.fixture(scope="module")
def model():
    m = create_model("loupe-tiny", tokenizer_corpus=["a red square", "a blue circle"], seed=0)
    m.train()  # the game must switch the tower to eval itself and restore the mode
    return m


def _naive(model, pixels, text, mask):
    """Encode the kept patch tokens of one image as a sequence of their own (prefix tokens kept)."""
    tower = model.image_tower
    with torch.no_grad():
        st = tower.token_states(pixels[None])
        p = tower.num_prefix_tokens
        keep = torch.cat([torch.arange(p), p + torch.nonzero(mask).flatten()])
        emb = F.normalize(model.image_proj(tower.finish_states(st[:, keep])), dim=-1)[0]
    return float(emb @ F.normalize(text, dim=-1))


def test_full_mask_is_the_global_matching_score(model):
    g = torch.Generator().manual_seed(0)
    px, t = torch.randn(3, 3, 64, 64, generator=g), torch.randn(3, 64, generator=g)
    for drop in ("tokens", "pixels"):
        game = MaskedTowerGame(model, px, t, drop=drop)
        v = game(torch.ones(3, 1, 64, dtype=torch.bool))[:, 0]
        model.eval()
        with torch.no_grad():
            ref = (model.encode_image(px).pooled * F.normalize(t, dim=-1)).sum(-1)
        model.train()
        torch.testing.assert_close(v, ref, atol=1e-5, rtol=1e-5)
        assert model.image_tower.training  # mode restored


def test_token_drop_equals_naive_loop_and_empty_is_zero(model):
    g = torch.Generator().manual_seed(1)
    px, t = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 64, generator=g)
    masks = torch.rand(2, 12, 64, generator=g) < torch.rand(2, 12, 1, generator=g)
    masks[0, 0] = False
    masks[1, 3] = False
    masks[1, 3, 5] = True  # one patch alone
    game = MaskedTowerGame(model, px, t, chunk=50)  # a small chunk: several calls per size group
    v = game(masks)
    assert v[0, 0] == 0.0
    for gi in range(2):
        for q in range(12):
            if masks[gi, q].any():
                assert abs(float(v[gi, q]) - _naive(model, px[gi], t[gi], masks[gi, q])) < 1e-5
    sub = game.select(torch.tensor([1]))
    torch.testing.assert_close(sub(masks[1:]), v[1:])


@pytest.mark.parametrize("class_token", [False, True])
@pytest.mark.parametrize("bucket", [3, 8, 64])
def test_bucketed_padding_equals_naive_loop(class_token, bucket):
    """Rows padded to a shared length (key-masked, not pooled) give each unpadded row's value, with fewer calls."""
    from loupe_bench.models import get_spec

    spec = get_spec("loupe-tiny")
    spec["image_tower"]["kwargs"]["class_token"] = class_token
    spec["image_tower"]["kwargs"]["global_pool"] = "token" if class_token else "avg"
    m = create_model(spec, tokenizer_corpus=["a red square"], seed=0)
    g = torch.Generator().manual_seed(2)
    px, t = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 64, generator=g)
    masks = torch.rand(2, 20, 64, generator=g) < torch.rand(2, 20, 1, generator=g)  # nearly every size
    masks[0, 0] = False
    masks[1, 1] = False
    masks[1, 1, 7] = True
    calls = []
    tower = m.image_tower
    orig = tower.finish_states
    tower.finish_states = lambda *a, **k: calls.append(a[0].shape[1]) or orig(*a, **k)
    v = MaskedTowerGame(m, px, t, bucket=bucket)(masks)
    padded_calls = len(calls)
    calls.clear()
    exact = MaskedTowerGame(m, px, t)(masks)
    assert v[0, 0] == 0.0
    for gi in range(2):
        for q in range(20):
            if masks[gi, q].any():
                assert abs(float(v[gi, q]) - _naive(m, px[gi], t[gi], masks[gi, q])) < 1e-5
    torch.testing.assert_close(v, exact, atol=1e-5, rtol=0)
    assert padded_calls < len(calls)  # fewer tower calls than one per kept count
    with pytest.raises(SpecError, match="bucket"):
        MaskedTowerGame(m, px, t, bucket=0)


@pytest.mark.parametrize("class_token", [False, True])
@pytest.mark.parametrize("last_blocks", [None, 1])
def test_packed_rows_equal_naive_loop_in_one_tower_call(class_token, last_blocks):
    """Masked images packed several to a row (block-diagonal attention) give each one's own value, in one call."""
    from loupe_bench.models import get_spec

    spec = get_spec("loupe-tiny")
    spec["image_tower"]["kwargs"]["class_token"] = class_token
    spec["image_tower"]["kwargs"]["global_pool"] = "token" if class_token else "avg"
    m = create_model(spec, tokenizer_corpus=["a red square"], seed=0)
    m.train()
    g = torch.Generator().manual_seed(3)
    px, t = torch.randn(3, 3, 64, 64, generator=g), torch.randn(3, 64, generator=g)
    masks = torch.rand(3, 16, 64, generator=g) < torch.rand(3, 16, 1, generator=g)
    masks[0, 0] = False  # empty: 0
    masks[1, 1] = False
    masks[1, 1, 7] = True  # one patch alone
    masks[2, 2] = True  # the whole image fills a row
    calls = []
    tower = m.image_tower
    orig = tower.run_blocks
    tower.run_blocks = lambda *a, **k: calls.append(a[0].shape) or orig(*a, **k)
    v = MaskedTowerGame(m, px, t, last_blocks=last_blocks, pack=True)(masks)
    assert len(calls) == 1 and calls[0][1] == tower.num_prefix_tokens + 64
    tower.run_blocks = orig
    assert calls[0][0] < int(masks.any(-1).sum())  # fewer rows than masked images: rows are shared
    ref = MaskedTowerGame(m, px, t, last_blocks=last_blocks)(masks)
    assert v[0, 0] == 0.0
    torch.testing.assert_close(v, ref, atol=1e-5, rtol=0)
    if last_blocks is None:
        for gi in range(3):
            for q in range(16):
                if masks[gi, q].any():
                    assert abs(float(v[gi, q]) - _naive(m, px[gi], t[gi], masks[gi, q])) < 1e-5
    assert m.image_tower.training  # mode restored
    small = MaskedTowerGame(m, px, t, last_blocks=last_blocks, pack=True, chunk=3 * 65)  # at most 3 rows a call
    torch.testing.assert_close(small(masks), v, atol=1e-6, rtol=0)


def test_pack_segments_is_a_valid_best_fit_packing():
    """Every segment lies inside one row, segments of a row do not overlap, and rows are nearly full."""
    from loupe_bench.models.masked_game import pack_segments

    g = torch.Generator().manual_seed(4)
    lengths = torch.randint(1, 66, (300,), generator=g).tolist()
    row, off = pack_segments(lengths, 65)
    used = {}
    for ln, r, o in zip(lengths, row, off):
        assert 0 <= o and o + ln <= 65
        cells = set(range(o, o + ln))
        assert not (used.setdefault(r, set()) & cells)
        used[r] |= cells
    assert sorted(used) == list(range(len(used)))
    assert len(used) <= sum(lengths) / 65 * 1.15 + 1  # best-fit decreasing wastes little
    assert pack_segments([65, 1, 64], 65) == ([0, 1, 1], [0, 64, 0])
    assert pack_segments([], 65) == ([], [])
    with pytest.raises(ValueError, match="outside"):
        pack_segments([66], 65)


def test_masked_value_depends_on_the_kept_patches_only(model):
    g = torch.Generator().manual_seed(2)
    px, t = torch.randn(1, 3, 64, 64, generator=g), torch.randn(1, 64, generator=g)
    mask = torch.zeros(1, 1, 64, dtype=torch.bool)
    mask[0, 0, :16] = True  # the top two patch rows (8x8 grid)
    px2 = px.clone()
    px2[..., 16:, :] = torch.randn(1, 3, 48, 64, generator=g)  # change every hidden patch
    a = MaskedTowerGame(model, px, t)(mask)
    b = MaskedTowerGame(model, px2, t)(mask)
    torch.testing.assert_close(a, b)


def test_unknown_drop_and_tower_without_token_drop_are_spec_errors(model):
    px, t = torch.randn(1, 3, 64, 64), torch.randn(1, 64)
    with pytest.raises(SpecError, match="tsa.drop"):
        MaskedTowerGame(model, px, t, drop="blur")

    class NoDrop(torch.nn.Module):
        supports_token_drop = False

    class Fake:
        image_tower = NoDrop()
        grid = (8, 8)

    with pytest.raises(SpecError, match="drop: pixels"):
        MaskedTowerGame(Fake(), px, t)


@pytest.mark.parametrize("contrast", ["log", "prob"])
def test_contrastive_value_is_log_softmax_over_the_bank_plus_log_k(model, contrast):
    """``log``: ``v(S) = log softmax_k(s · cos(f(x_S), t_k))[target] + log K``; ``prob``: ``softmax(...)[target] − 1/K``
    (naive per-mask loop); ``v(∅) = 0``; a bank without targets is an error."""
    import math

    g = torch.Generator().manual_seed(4)
    px, t = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 64, generator=g)
    bank = torch.randn(5, 64, generator=g)
    target = torch.tensor([3, 0])
    masks = torch.rand(2, 6, 64, generator=g) < 0.5
    masks[1, 2] = False
    game = MaskedTowerGame(model, px, t, bank=bank, target=target, scale=7.0, bucket=8, contrast=contrast)
    v = game(masks)
    assert v[1, 2] == 0.0
    tower = model.image_tower
    for gi in range(2):
        for q in range(6):
            if not masks[gi, q].any():
                continue
            with torch.no_grad():
                st = tower.token_states(px[gi][None])
                keep = torch.nonzero(masks[gi, q]).flatten()
                emb = F.normalize(model.image_proj(tower.finish_states(st[:, keep])), dim=-1)[0]
            logits = 7.0 * F.normalize(bank, dim=-1) @ emb
            logp = float(torch.log_softmax(logits, -1)[target[gi]])
            ref = logp + math.log(5) if contrast == "log" else math.exp(logp) - 1 / 5
            assert abs(float(v[gi, q]) - ref) < 1e-4
    torch.testing.assert_close(game.select(torch.tensor([1]))(masks[1:]), v[1:])
    with pytest.raises(ValueError, match="bank and target"):
        MaskedTowerGame(model, px, t, bank=bank)
    with pytest.raises(ValueError, match="contrast must be"):
        MaskedTowerGame(model, px, t, bank=bank, target=target, contrast="odds")
