"""LOUPE tiny: build, forward/backward with every term, routing, ablations, regions, explanation."""
from __future__ import annotations

import math

import pytest
import torch

from loupe_bench.errors import SpecError
from loupe_bench.models import create_model, get_spec
from loupe_bench.models.loupe_heads import fsa_loss, nms_topk, RegionHead, tsa_loss

COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["circle", "square", "triangle", "star"]
RELS = ["left of", "above", "below", "right of"]


def _captions(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        c1, c2 = (COLOURS[int(i)] for i in torch.randint(0, 4, (2,), generator=g))
        s1, s2 = (SHAPES[int(i)] for i in torch.randint(0, 4, (2,), generator=g))
        rel = RELS[int(torch.randint(0, 4, (1,), generator=g))]
        p1, p2 = f"a {c1} {s1}", f"a {c2} {s2}"
        text = f"{p1} {rel} {p2}"
        out.append((text, [(0, len(p1)), (len(p1) + len(rel) + 2, len(text))]))
    return out


def _batch(model, n=6, seed=0, max_phrases=3):
    caps = _captions(n, seed)
    tok = model.tokenizer([c for c, _ in caps])
    L = tok.input_ids.shape[1]
    ptm = torch.zeros(n, max_phrases, L, dtype=torch.bool)
    pm = torch.zeros(n, max_phrases, dtype=torch.bool)
    for b, (_, spans) in enumerate(caps):
        for j, (s, e) in enumerate(spans):
            off = tok.offsets[b]
            ptm[b, j] = (off[:, 0] >= s) & (off[:, 1] <= e) & (off[:, 1] > off[:, 0])
            pm[b, j] = True
    g = torch.Generator().manual_seed(seed)
    return {
        "pixels": torch.randn(n, 3, model.image_size, model.image_size, generator=g),
        "input_ids": tok.input_ids,
        "attention_mask": tok.attention_mask,
        "phrase_token_mask": ptm,
        "phrase_mask": pm,
        "image_ids": torch.arange(n),
    }


def _model(name="loupe-tiny", **loupe):
    spec = get_spec(name)
    for k, v in loupe.items():
        node = spec["loupe"]
        parts = k.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    corpus = [c for c, _ in _captions(50, 99)]
    return create_model(spec, tokenizer_corpus=corpus, seed=0)


def test_phrase_masks_hit_tokens():
    model = _model()
    batch = _batch(model)
    assert batch["phrase_token_mask"][batch["phrase_mask"]].any(-1).all()
    # "a <colour> <shape>": at least three word pieces, all inside the caption's real tokens
    assert (batch["phrase_token_mask"][:, 0].sum(-1) >= 3).all()
    assert not (batch["phrase_token_mask"].any(1) & ~batch["attention_mask"].bool()).any()


def test_forward_backward_all_terms_finite_and_nonzero():
    model = _model()
    model.train()
    out = model.loss(_batch(model))
    assert set(out.terms) == {"cmc", "tsa", "fsa", "nsi", "tsa_box"}
    for name, t in out.terms.items():
        assert torch.isfinite(t) and t.abs().item() > 0, name
    out.total.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["region_head.mlp.2.weight"] is not None and grads["region_head.mlp.2.weight"].abs().sum() > 0
    assert grads["region_proj.weight"].abs().sum() > 0
    assert any(n.startswith("tsa_estimator.module") and g is not None and g.abs().sum() > 0 for n, g in grads.items())
    assert out.logs["routed_fraction"] == 1.0  # warm-up
    assert "nsi_spearman" in out.logs and math.isfinite(out.logs["nsi_spearman"])
    expected = sum(out.terms[k] for k in ("cmc", "tsa", "fsa", "nsi", "tsa_box"))
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_box_jitter_term():
    model = _model(region__box_jitter=2)
    out = model.loss(_batch(model))
    assert "tsa_box" in out.terms and torch.isfinite(out.terms["tsa_box"])


def test_routed_fraction_falls_on_fixed_batch():
    torch.manual_seed(0)
    model = _model(neural__warmup_steps=3, neural__holdout=4, num_samples=8, tsa__num_samples=4)
    batch = _batch(model, n=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fr, tsa_fr = [], []
    for _ in range(36):  # the tower-evaluated token game needs ~25 steps before g_θ is confident
        out = model.loss(batch)
        fr.append(out.logs["routed_fraction"])
        tsa_fr.append(out.logs["tsa_routed_fraction"])
        assert all(torch.isfinite(t) for t in out.terms.values())
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert fr[:3] == [1.0, 1.0, 1.0]  # warm-up: everything sampled
    assert sum(fr[-3:]) / 3 < 0.75, fr
    assert sum(tsa_fr[-3:]) / 3 < 0.5, tsa_fr


@pytest.mark.parametrize("name,absent", [("loupe-no-tsa", "tsa"), ("loupe-no-fsa", "fsa"), ("loupe-sampling", "nsi")])
def test_ablation_specs(name, absent):
    model = _model(name)
    out = model.loss(_batch(model, n=4))
    assert absent not in out.terms
    assert "cmc" in out.terms and torch.isfinite(out.total)
    if name == "loupe-sampling":
        assert type(model.tsa_estimator).__name__ == "SamplingEstimator"
        assert not any(n.startswith("tsa_estimator.module") for n, _ in model.named_parameters())


def test_exact_estimator_refuses_large_games():
    model = _model(shapley="exact")
    with pytest.raises(SpecError):
        model.loss(_batch(model, n=2))


def test_unknown_config_is_spec_error():
    with pytest.raises(SpecError):
        _model(shapley="magic")
    spec = get_spec("loupe-tiny")
    spec["loupe"]["region"]["bogus"] = 1
    with pytest.raises(SpecError):
        create_model(spec)


def test_propose_regions_valid_and_scoring():
    model = _model().eval()
    batch = _batch(model, n=3)
    img = model.encode_image(batch["pixels"])
    txt = model.encode_text(batch["input_ids"], batch["attention_mask"])
    regions = model.propose_regions(img, top_k=5)
    assert len(regions) == 3
    for r in regions:
        assert 1 <= r.boxes.shape[0] <= 5 and r.scores.shape == r.boxes.shape[:1]
        assert (r.boxes >= 0).all() and (r.boxes <= 1).all()
        assert (r.boxes[:, 2] >= r.boxes[:, 0]).all() and (r.boxes[:, 3] >= r.boxes[:, 1]).all()
        assert ((r.scores >= 0) & (r.scores <= 1)).all()
        assert (r.scores[:-1] >= r.scores[1:]).all()
    scores = model.score_regions(img, [r.boxes for r in regions], txt)
    assert scores[0].shape == (regions[0].boxes.shape[0], 3)
    assert torch.isfinite(scores[0]).all() and (scores[0].abs() <= 1 + 1e-5).all()
    # retrieval = plain dual encoder: global cosine
    sim = model.similarity(img, txt)
    assert torch.allclose(sim, img.pooled @ txt.pooled.T, atol=1e-6)


def test_explain_outputs():
    model = _model().eval()
    batch = _batch(model, n=2)
    batch["phrase_mask"][1, 1] = False
    ex = model.explain(batch["pixels"], batch["input_ids"], batch["attention_mask"], batch["phrase_token_mask"],
                       batch["phrase_mask"], top_k=4)
    assert ex["boxes"].shape == (2, 4, 4) and ex["box_scores"].shape == (2, 4)
    assert ex["interaction_matrix"].shape == (2, 4, 3)
    assert ex["phrase_best_region"][1, 1].item() == -1 and ex["phrase_best_region"][0, 0].item() >= 0
    assert (ex["interaction_matrix"][1, :, 1] == 0).all()


def test_save_load_roundtrip(tmp_path):
    from loupe_bench.models import load_model, save_model

    model = _model().eval()
    batch = _batch(model, n=2)
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    a = model.encode_image(batch["pixels"])
    b = again.encode_image(batch["pixels"])
    ra, rb = model.propose_regions(a, 4), again.propose_regions(b, 4)
    assert torch.allclose(ra[0].boxes, rb[0].boxes) and torch.allclose(ra[0].scores, rb[0].scores)


def test_heads_standalone():
    torch.manual_seed(0)
    head = RegionHead(8, 16, init_size=2.0)
    boxes, logits = head(torch.randn(2, 16, 8), (4, 4))
    assert boxes.shape == (2, 16, 4) and logits.shape == (2, 16)
    assert (boxes >= 0).all() and (boxes <= 1).all()
    b = torch.tensor([[0, 0, .5, .5], [0, 0, .5, .49], [.5, .5, 1, 1]])
    keep = nms_topk(b, torch.tensor([.9, .8, .7]), 3, 0.5, fill=False)
    assert keep.tolist() == [0, 2]
    assert nms_topk(b, torch.tensor([.9, .8, .7]), 3, 0.5, fill=True).tolist() == [0, 2, 1]
    # TSA: BCE toward targets, minimum at logit = logit(target)
    t = torch.tensor([[0.2, 0.8]])
    v = torch.ones_like(t, dtype=torch.bool)
    assert tsa_loss(torch.logit(t), t, v) < tsa_loss(torch.zeros(1, 2), t, v)
    # FSA: hand-computed value; a padding phrase changes nothing
    sim = torch.tensor([[[0.5, 0.1], [0.2, 0.4]]])
    inter = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    pv = torch.tensor([[True, True]])
    got = fsa_loss(sim, inter, pv, 1.0, 1.0)
    q = inter[0].softmax(0)
    ref_r = -(q * sim[0].log_softmax(0)).sum(0).mean()
    ref_t = -(inter[0].softmax(1) * sim[0].log_softmax(1)).sum(1).mean()
    assert got.item() == pytest.approx(0.5 * (ref_r + ref_t).item(), abs=1e-6)
    sim3 = torch.cat([sim, torch.full((1, 2, 1), 9.0)], dim=2)
    inter3 = torch.cat([inter, torch.full((1, 2, 1), 5.0)], dim=2)
    got3 = fsa_loss(sim3, inter3, torch.tensor([[True, True, False]]), 1.0, 1.0)
    assert got3.item() == pytest.approx(got.item(), abs=1e-6)


def test_tsa_features_extreme_context_terms_match_game():
    from loupe_bench.models.loupe_heads import TSA_STATS, tsa_features
    from loupe_bench.shapley import PooledCosineGame

    g = torch.Generator().manual_seed(0)
    tok, text = torch.randn(1, 6, 4, generator=g), torch.randn(1, 4, generator=g)
    members = torch.tensor([[[1, 1, 0, 1, 0, 0]]], dtype=torch.bool)
    f = tsa_features(tok, text, members, torch.zeros(1, 1, 4))
    assert f.shape[-1] == 3 * 4 + TSA_STATS + 4
    game = PooledCosineGame(tok, text)

    def v(s):
        m = torch.zeros(1, 1, 6, dtype=torch.bool)
        m[0, 0, list(s)] = True
        return game(m).item()

    a, n = [0, 1, 3], set(range(6))
    st = f[0, 0, 12:12 + TSA_STATS]
    assert st[0].item() == pytest.approx(v(a), abs=1e-5)
    assert st[6].item() == pytest.approx(v(n - set(a)), abs=1e-5)
    assert st[7].item() == pytest.approx(v(a) - sum(v([i]) for i in a), abs=1e-5)
    assert st[8].item() == pytest.approx((v(n) - v(n - set(a))) - sum(v(n) - v(n - {i}) for i in a), abs=1e-5)
