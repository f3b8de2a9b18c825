"""FILIP late interaction against a naive Python-loop reference (values, padding invariance, masking, loss)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from loupe_bench.models.losses import filip_infonce, filip_scores, filip_similarity

CAPTIONS = ["a red circle left of a blue square", "two green triangles", "a small yellow star above a purple circle"]


@pytest.fixture(scope="module")
def tiny_filip_spec():
    from loupe_bench.models import get_spec

    return get_spec("filip-tiny")


@pytest.fixture(scope="module")
def tiny_filip(tiny_filip_spec):
    from loupe_bench.models import create_model

    model = create_model(tiny_filip_spec, tokenizer_corpus=CAPTIONS, seed=0).eval()
    tb = model.tokenizer(CAPTIONS)
    g = torch.Generator().manual_seed(0)
    batch = {"pixels": torch.randn(3, 3, 64, 64, generator=g), "input_ids": tb.input_ids,
             "attention_mask": tb.attention_mask}
    return model, batch


def naive_filip(img, txt, lengths):
    """Direct transcription of FILIP's definitions with Python loops over real tokens only."""
    ni, nt = img.shape[0], txt.shape[0]
    s_i = torch.zeros(ni, nt, dtype=torch.float64)
    s_t = torch.zeros(ni, nt, dtype=torch.float64)
    for i in range(ni):
        for j in range(nt):
            n2 = lengths[j]
            dots = [[float(img[i, k] @ txt[j, r]) for r in range(n2)] for k in range(img.shape[1])]
            s_i[i, j] = sum(max(row) for row in dots) / len(dots)
            s_t[i, j] = sum(max(dots[k][r] for k in range(len(dots))) for r in range(n2)) / n2
    return s_i, s_t


def random_case(seed=0, ni=3, nt=5, n1=6, n2=7, d=8):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(ni, n1, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(nt, n2, d, generator=g), dim=-1)
    lengths = [int(x) for x in torch.randint(1, n2 + 1, (nt,), generator=g)]
    lengths[0] = n2  # one unpadded caption
    lengths[1] = 1  # one single-token caption
    mask = torch.arange(n2)[None, :] < torch.tensor(lengths)[:, None]
    return img, txt, mask, lengths


def test_dense_scores_equal_naive_reference():
    img, txt, mask, lengths = random_case()
    # fill the padding with large garbage: it must not leak into any max or mean
    txt = torch.where(mask[..., None], txt, torch.full_like(txt, 5.0))
    ref_i, ref_t = naive_filip(img, txt, lengths)
    got = filip_scores(img, txt, mask)
    torch.testing.assert_close(got.i2t.double(), ref_i, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.t2i.double(), ref_t, atol=1e-5, rtol=0)


@pytest.mark.parametrize("buckets", [True, False])
@pytest.mark.parametrize("image_chunk,max_elems", [(1, 1), (2, 100), (256, 1 << 20)])
def test_chunked_scorer_equals_naive_reference(image_chunk, max_elems, buckets):
    img, txt, mask, lengths = random_case(seed=1, ni=5, nt=7)
    txt = torch.where(mask[..., None], txt, torch.full_like(txt, -3.0))
    ref_i, ref_t = naive_filip(img, txt, lengths)
    got = filip_similarity(img, txt, mask, image_chunk=image_chunk, max_chunk_elements=max_elems,
                           length_buckets=buckets)
    torch.testing.assert_close(got.i2t.double(), ref_i, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.t2i.double(), ref_t, atol=1e-5, rtol=0)


def test_padded_caption_scores_as_unpadded():
    img, txt, mask, lengths = random_case(seed=2)
    j, n = 2, lengths[2]
    short_txt, short_mask = txt[j:j + 1, :n], mask[j:j + 1, :n]
    long_txt = torch.cat([txt[j:j + 1], torch.randn(1, 9, txt.shape[2])], dim=1)  # extra random padding
    long_mask = torch.cat([mask[j:j + 1], torch.zeros(1, 9, dtype=torch.bool)], dim=1)
    for fn in (filip_scores, filip_similarity):
        a, b = fn(img, short_txt, short_mask), fn(img, long_txt, long_mask)
        torch.testing.assert_close(a.i2t, b.i2t, atol=1e-6, rtol=0)
        torch.testing.assert_close(a.t2i, b.t2i, atol=1e-6, rtol=0)


def test_padding_never_wins_when_all_similarities_negative():
    # mindformers' flaw: zeroed pads win the max when every real similarity is negative
    img = F.normalize(torch.tensor([[[1.0, 0.0]]]), dim=-1)
    txt = torch.tensor([[[-1.0, 0.0], [0.0, 0.0]]])  # one real token at cosine -1, one zero pad
    mask = torch.tensor([[True, False]])
    for fn in (filip_scores, filip_similarity):
        s = fn(img, txt, mask)
        assert s.i2t.item() == pytest.approx(-1.0)
        assert s.t2i.item() == pytest.approx(-1.0)


def test_image_mask_restricts_patches():
    img, txt, mask, lengths = random_case(seed=3, ni=1)
    keep = torch.tensor([[True, False, True, False, False, True]])
    a = filip_scores(img, txt, mask, image_mask=keep)
    b = filip_scores(img[:, keep[0]], txt, mask)
    torch.testing.assert_close(a.i2t, b.i2t)
    torch.testing.assert_close(a.t2i, b.t2i)


def test_filip_infonce_uses_si_for_i2t_and_st_for_t2i():
    img, txt, mask, _ = random_case(seed=4, ni=4, nt=4)
    scale = torch.tensor(10.0)
    s = filip_scores(img, txt, mask)
    ref = 0.0
    for i in range(4):  # image -> text with s^I
        ref += -math.log(math.exp(10 * s.i2t[i, i]) / sum(math.exp(10 * s.i2t[i, j]) for j in range(4))) / 8
    for j in range(4):  # text -> image with s^T
        ref += -math.log(math.exp(10 * s.t2i[j, j]) / sum(math.exp(10 * s.t2i[i, j]) for i in range(4))) / 8
    assert float(filip_infonce(img, txt, mask, scale)) == pytest.approx(ref, abs=1e-5)


def test_model_masks_special_tokens_and_scores_regions(tiny_filip):
    model, batch = tiny_filip
    ids, am = batch["input_ids"][:3], batch["attention_mask"][:3]
    with torch.no_grad():
        img = model.encode_image(batch["pixels"][:2])
        txt = model.encode_text(ids, am)
    special = torch.isin(ids, model.special_token_ids)
    assert not (txt.mask & special).any()  # [CLS]/[SEP]/[PAD] excluded (text_special_tokens: false)
    assert torch.equal(txt.mask, am.bool() & ~special)
    # model similarity == naive reference over the masked tokens, per direction
    lengths = txt.mask.sum(1).tolist()
    packed = torch.zeros_like(txt.tokens)
    for j in range(3):
        packed[j, : lengths[j]] = txt.tokens[j][txt.mask[j]]
    ref_i, ref_t = naive_filip(img.tokens, packed, lengths)
    torch.testing.assert_close(model.similarity(img, txt, "i2t").double(), ref_i, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.similarity(img, txt, "t2i").double(), ref_t, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.similarity(img, txt, "mean").double(), (ref_i + ref_t) / 2, atol=1e-5, rtol=0)
    # a whole-image box scores as the whole image; a quarter box scores as its 16 patches
    full_and_quarter = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    regions = model.score_regions(img, [full_and_quarter, full_and_quarter], txt)
    torch.testing.assert_close(regions[0][0].double(), (ref_i[0] + ref_t[0]) / 2, atol=1e-5, rtol=0)
    quarter = img.tokens[1].view(8, 8, -1)[:4, :4].reshape(1, 16, -1)
    q_i, q_t = naive_filip(quarter, packed, lengths)
    torch.testing.assert_close(regions[1][1].double(), ((q_i + q_t) / 2)[0], atol=1e-5, rtol=0)
    # dense map: per patch, the max over the text's real tokens; its mean over patches is s^I
    pmap = model.patch_similarity(img, txt)
    assert pmap.shape == (2, 3, 8, 8)
    torch.testing.assert_close(pmap.mean(dim=(2, 3)).double(), ref_i, atol=1e-5, rtol=0)


def test_special_tokens_option_counts_cls_sep(tiny_filip_spec):
    from loupe_bench.models import create_model

    spec = dict(tiny_filip_spec, text_special_tokens=True)
    model = create_model(spec, tokenizer_corpus=["a red circle"], seed=0)
    tb = model.tokenizer(["a red circle"])
    txt = model.encode_text(tb.input_ids, tb.attention_mask)
    assert torch.equal(txt.mask, tb.attention_mask.bool())


def test_region_scores_equal_masked_dense_scores_with_box_chunking(tiny_filip):
    """Many boxes scored with a small chunk bound (boxes processed in several chunks) equal filip_scores with the
    box membership as image mask, box by box."""
    from loupe_bench.models.base import boxes_to_patch_mask
    from loupe_bench.models.filip import combine_directions
    from loupe_bench.tasks.proposals import grid_boxes

    model, batch = tiny_filip
    with torch.no_grad():
        img = model.encode_image(batch["pixels"][:2])
        txt = model.encode_text(batch["input_ids"], batch["attention_mask"])
    boxes = [grid_boxes((1, 2, 3)), grid_boxes((2, 4))]
    old = model.max_chunk_elements
    try:
        model.max_chunk_elements = 64 * txt.tokens.shape[0] * txt.tokens.shape[1] * 5  # 5 boxes per chunk
        got = model.score_regions(img, boxes, txt)
    finally:
        model.max_chunk_elements = old
    for b, bx in enumerate(boxes):
        member = boxes_to_patch_mask(bx, img.grid)
        rows = img.tokens[b].unsqueeze(0).expand(member.shape[0], -1, -1)
        s = filip_scores(rows, txt.tokens, txt.mask, image_mask=member)
        torch.testing.assert_close(got[b], combine_directions(s.i2t, s.t2i, model.region_direction),
                                   atol=1e-5, rtol=0)


def test_length_buckets_with_masked_holes_equal_padded_scoring():
    """Real tokens need not be a prefix (special tokens masked out at both ends): packing keeps their order and the
    bucketed scores equal the padded ones."""
    g = torch.Generator().manual_seed(4)
    img = F.normalize(torch.randn(4, 6, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(9, 7, 8, generator=g), dim=-1)
    mask = torch.rand(9, 7, generator=g) > 0.4
    mask[:, 0] = False  # a [CLS]-like slot, never real
    mask[torch.arange(9), 1 + torch.arange(9) % 6] = True  # at least one real token each
    a = filip_similarity(img, txt, mask, length_buckets=True)
    b = filip_similarity(img, txt, mask, length_buckets=False)
    torch.testing.assert_close(a.i2t, b.i2t, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.t2i, b.t2i, atol=1e-6, rtol=0)


def pairwise_reference(img, txt, mask):
    """float64 per-pair loop: each pair's [n1, L] dot products over the caption's real tokens only."""
    ni, nt = img.shape[0], txt.shape[0]
    s_i = torch.zeros(ni, nt, dtype=torch.float64)
    s_t = torch.zeros(ni, nt, dtype=torch.float64)
    for i in range(ni):
        for j in range(nt):
            dots = img[i].double() @ txt[j][mask[j]].double().T  # [n1, L]
            s_i[i, j] = dots.max(dim=1).values.mean()
            s_t[i, j] = dots.max(dim=0).values.mean()
    return s_i, s_t


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("max_elems", [64, 1000, 1 << 23])
def test_tiled_unpadded_scorer_equals_pairwise_loop(threads, max_elems):
    """The cache-tiled scorer (one length bucket per call, several image and text blocks, blocks in a thread pool)
    against a per-pair float64 loop, with padding filled by garbage; 1 and 2 threads give the same bits."""
    from loupe_bench.models.losses import unpadded_tile_shape

    g = torch.Generator().manual_seed(7)
    ni, nt, n1, n2, d = 13, 21, 6, 9, 8
    img = F.normalize(torch.randn(ni, n1, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(nt, n2, d, generator=g), dim=-1)
    lengths = torch.randint(1, n2 + 1, (nt,), generator=g)
    lengths[:3] = n2
    mask = torch.arange(n2)[None, :] < lengths[:, None]
    txt = torch.where(mask[..., None], txt, torch.full_like(txt, 7.0))
    ref_i, ref_t = pairwise_reference(img, txt, mask)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = filip_similarity(img, txt, mask, image_chunk=4, max_chunk_elements=max_elems)
        full = filip_similarity(img, txt[:3], mask[:3], image_chunk=4, max_chunk_elements=max_elems)  # unpadded
        assert torch.get_num_threads() == threads  # restored after the pool
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(got.i2t.double(), ref_i, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.t2i.double(), ref_t, atol=1e-6, rtol=0)
    torch.testing.assert_close(full.i2t.double(), ref_i[:, :3], atol=1e-6, rtol=0)
    torch.testing.assert_close(full.t2i.double(), ref_t[:, :3], atol=1e-6, rtol=0)
    ci, ct = unpadded_tile_shape(ni, 3, n1, n2, 4, min(max_elems, 1 << 19))
    assert ci * n1 * ct * n2 <= max(min(max_elems, 1 << 19), n1 * n2) and ci <= 4
    if threads == 2:
        torch.set_num_threads(1)
        try:
            one = filip_similarity(img, txt, mask, image_chunk=4, max_chunk_elements=max_elems)
        finally:
            torch.set_num_threads(old)
        assert torch.equal(one.i2t, got.i2t) and torch.equal(one.t2i, got.t2i)


def test_similarity_pair_equals_both_directions(tiny_filip):
    model, batch = tiny_filip
    with torch.no_grad():
        img = model.encode_image(batch["pixels"])
        txt = model.encode_text(batch["input_ids"], batch["attention_mask"])
        s_i, s_t = model.similarity_pair(img, txt)
        assert torch.equal(s_i, model.similarity(img, txt, "i2t"))
        assert torch.equal(s_t, model.similarity(img, txt, "t2i"))


def test_repeated_captions_scored_once_equal_columns():
    """Texts repeated (same real tokens and mask, different padding garbage) get bit-equal columns, equal to the
    scores without deduplication and to the per-pair loop."""
    g = torch.Generator().manual_seed(11)
    img = F.normalize(torch.randn(5, 6, 8, generator=g), dim=-1)
    base = F.normalize(torch.randn(4, 7, 8, generator=g), dim=-1)
    lengths = torch.tensor([7, 3, 5, 3])
    idx = torch.tensor([0, 1, 2, 1, 3, 0, 1])  # captions 1 and 0 repeated
    txt = base[idx].clone()
    mask = torch.arange(7)[None, :] < lengths[idx][:, None]
    txt[~mask] = torch.randn(int((~mask).sum()), 8, generator=g)  # padding differs between repeats
    a = filip_similarity(img, txt, mask)
    b = filip_similarity(img, txt, mask, dedupe=False)
    ref_i, ref_t = pairwise_reference(img, txt, mask)
    for got, ref in ((a.i2t, ref_i), (a.t2i, ref_t), (b.i2t, ref_i), (b.t2i, ref_t)):
        torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=0)
    for j, k in ((1, 3), (1, 6), (0, 5)):
        assert torch.equal(a.i2t[:, j], a.i2t[:, k]) and torch.equal(a.t2i[:, j], a.t2i[:, k])


def _dense_filip_reference(img, txt, tmask, imask=None):
    """Both FILIP directions by plain dense autograd (einsum, masked copies, amax): the reference of the sparse
    backward in :func:`filip_scores`."""
    sim = torch.einsum("ikd,jrd->ikjr", img, txt)
    per_patch = sim.masked_fill(~tmask[None, None], float("-inf")).amax(3)
    if imask is None:
        s_i = per_patch.mean(1)
    else:
        s_i = per_patch.masked_fill(~imask[:, :, None], 0).sum(1) / imask.sum(1).clamp(min=1)[:, None]
        sim = sim.masked_fill(~imask[:, :, None, None], float("-inf"))
    per_token = sim.amax(1)
    s_t = per_token.masked_fill(~tmask[None], 0).sum(2) / tmask.sum(1).clamp(min=1)[None]
    return s_i, s_t


@pytest.mark.parametrize("with_image_mask", [False, True])
def test_filip_scores_sparse_backward_matches_dense_autograd(with_image_mask):
    g = torch.Generator().manual_seed(3)
    img = F.normalize(torch.randn(5, 7, 6, generator=g, dtype=torch.double), dim=-1)
    txt = F.normalize(torch.randn(4, 5, 6, generator=g, dtype=torch.double), dim=-1)
    img.requires_grad_()
    txt.requires_grad_()
    tmask = torch.rand(4, 5, generator=g) > 0.3
    tmask[:, 0] = True
    imask = None
    if with_image_mask:
        imask = torch.rand(5, 7, generator=g) > 0.4
        imask[:, 0] = True
    got = filip_scores(img, txt, tmask, image_mask=imask)
    ref = _dense_filip_reference(img, txt, tmask, imask)
    assert torch.allclose(got.i2t, ref[0], atol=1e-12)
    assert torch.allclose(got.t2i, ref[1], atol=1e-12)
    w1, w2 = torch.randn(5, 4, generator=g, dtype=torch.double), torch.randn(5, 4, generator=g, dtype=torch.double)
    g_got = torch.autograd.grad((got.i2t * w1).sum() + (got.t2i * w2).sum(), (img, txt))
    g_ref = torch.autograd.grad((ref[0] * w1).sum() + (ref[1] * w2).sum(), (img, txt))
    for a, b in zip(g_got, g_ref):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, y: filip_scores(x, y, tmask, image_mask=imask), (img, txt))
