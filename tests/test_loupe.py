"""LOUPE tiny: build, forward/backward with every term, routing, ablations, regions, explanation."""
from __future__ import annotations

import math

import pytest
import torch

from loupe_bench.errors import SpecError
from loupe_bench.models import create_model, get_spec
from loupe_bench.errors import DataError
from loupe_bench.models.loupe import fsa_schedule
from loupe_bench.models.loupe_heads import fsa_logits, fsa_loss, fsa_targets, nms_topk, RegionHead, tsa_loss

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


FSA_NOW = {"fsa__start_step": 0, "fsa__ramp_steps": 0, "region__box_start": 0}  # ℒ_FSA and box geometry from step 0


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
    model = _model(**FSA_NOW)
    model.train()
    out = model.loss(_batch(model))
    assert set(out.terms) == {"cmc", "tsa", "fsa", "nsi", "tsa_box"}
    for name, t in out.terms.items():
        assert torch.isfinite(t) and t.abs().item() > 0, name
    out.total.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["region_head.mlp.2.weight"] is not None and grads["region_head.mlp.2.weight"].abs().sum() > 0
    assert "region_proj.weight" not in grads  # fsa.region_projection: none — no parameter only ℒ_FSA trains
    assert any(n.startswith("tsa_estimator.module") and g is not None and g.abs().sum() > 0 for n, g in grads.items())
    assert out.logs["routed_fraction"] == 1.0  # warm-up
    assert "nsi_spearman" in out.logs and math.isfinite(out.logs["nsi_spearman"])
    expected = sum(out.terms[k] for k in ("cmc", "tsa", "fsa", "nsi", "tsa_box"))
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_box_jitter_term():
    model = _model(region__box_jitter=2, region__box_start=0)
    out = model.loss(_batch(model))
    assert "tsa_box" in out.terms and torch.isfinite(out.terms["tsa_box"])


def test_routed_fraction_falls_on_fixed_batch():
    torch.manual_seed(0)
    model = _model(neural__warmup_steps=3, neural__holdout=4, num_samples=8, tsa__num_samples=4)  # ℒ_FSA off (starts at 60)
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
    model = _model(name, **FSA_NOW)
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


# -- ℒ_FSA ----------------------------------------------------------------------------------------------------------
def test_fsa_targets_zscore_and_affine_invariance():
    g = torch.Generator().manual_seed(0)
    inter = torch.randn(2, 5, 3, generator=g)
    pv = torch.tensor([[True, True, False], [True, False, False]])
    q = fsa_targets(inter, pv, 0.5)
    assert torch.allclose(q.sum(1), pv.float(), atol=1e-6)  # a distribution per valid phrase, 0 for padding
    z = (inter - inter.mean(1, keepdim=True)) / inter.std(1, unbiased=False, keepdim=True)
    assert torch.allclose(q[0, :, 0], (z[0, :, 0] / 0.5).softmax(0), atol=1e-5)
    for a, c in ((3.0, 0.0), (0.05, 0.3), (250.0, -3.0)):  # up to ε and float32 rounding
        assert torch.allclose(fsa_targets(a * inter + c, pv, 0.5), q, atol=1e-4), (a, c)
    # equal interactions: uniform target (no NaN)
    flat = fsa_targets(torch.ones(1, 4, 1), torch.tensor([[True]]), 0.5)
    assert torch.allclose(flat[0, :, 0], torch.full((4,), 0.25))


def _unit(v):
    return torch.nn.functional.normalize(torch.as_tensor(v, dtype=torch.float32), dim=-1)


def test_fsa_loss_closed_form_and_minimal_when_prediction_ranks_as_target():
    """One image, one phrase: ℒ = −Σ_i q_i log softmax_i(s_i / τ); over every assignment of the same similarity
    values to the regions the loss is smallest when the prediction ranks the regions as the target does."""
    import itertools

    k = 4
    q = torch.tensor([0.5, 0.3, 0.15, 0.05])[None, :, None]  # [1, K, 1]
    pv = torch.tensor([[True]])
    phrase = _unit([[[1.0, 0.0]]])
    angles = torch.tensor([0.2, 0.7, 1.2, 1.9])  # cosines decrease with the angle
    losses = {}
    for perm in itertools.permutations(range(k)):
        a = angles[list(perm)]
        region = torch.stack([a.cos(), a.sin()], -1)[None]
        losses[perm] = fsa_loss(region, phrase, q, pv, 0.1).item()
        s = region[0] @ phrase[0, 0]
        ref = -(q[0, :, 0] * (s / 0.1).log_softmax(0)).sum().item()
        assert losses[perm] == pytest.approx(ref, abs=1e-5)
    assert min(losses, key=losses.get) == (0, 1, 2, 3)


def test_fsa_loss_cross_image_negatives():
    """The prediction's softmax covers every FSA image's regions: raising another image's region similarity to a
    phrase raises that phrase's loss; the target puts no mass there."""
    torch.manual_seed(0)
    region = _unit(torch.randn(2, 3, 4))
    phrase = _unit(torch.randn(2, 1, 4))
    q = fsa_targets(torch.randn(2, 3, 1), torch.tensor([[True], [False]]), 0.5)
    pv = torch.tensor([[True], [False]])  # only image 0's phrase counts
    base = fsa_loss(region, phrase, q, pv, 0.1)
    logits = fsa_logits(region, phrase, 0.1)
    assert logits.shape == (2, 1, 6)
    own = -(q[0, :, 0] * logits[0, 0].log_softmax(-1)[:3]).sum()
    assert base.item() == pytest.approx(own.item(), abs=1e-5)
    harder = region.clone()
    harder[1, 0] = phrase[0, 0]  # image 1's region 0 now matches image 0's phrase perfectly
    assert fsa_loss(harder, phrase, q, pv, 0.1) > base + 0.1
    far = region.clone()
    far[1] = -phrase[0, 0]  # image 1's regions pointing away: the loss falls
    assert fsa_loss(far, phrase, q, pv, 0.1) < base
    # no valid phrase: zero loss
    assert fsa_loss(region, phrase, q, torch.zeros(2, 1, dtype=torch.bool), 0.1).item() == 0.0


def test_fsa_schedule_and_train_step():
    assert [fsa_schedule(t, 3, 4) for t in range(9)] == [0, 0, 0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [fsa_schedule(t, 2, 0) for t in range(4)] == [0, 0, 1.0, 1.0]
    model = _model(fsa__start_step=2, fsa__ramp_steps=2).train()
    batch = _batch(model, n=4)
    seen = []
    for _ in range(4):
        out = model.loss(batch)
        seen.append((out.logs["fsa_factor"], "fsa" in out.terms))
        if "fsa" in out.terms:
            parts = sum(v for k, v in out.terms.items() if k != "fsa") + out.logs["fsa_factor"] * out.terms["fsa"]
            assert out.total.item() == pytest.approx(parts.item(), rel=1e-5)
    assert seen == [(0.0, False), (0.0, False), (0.5, True), (1.0, True)]
    assert int(model.train_step) == 4
    model.eval()
    with torch.no_grad():
        model.loss(batch)
    assert int(model.train_step) == 4  # evaluation does not advance the schedule
    assert "train_step" in model.state_dict()


def test_fsa_pooled_value_does_not_read_the_region_projection():
    """``fsa.value: pooled``: the game (targets) is built from the ℒ_CMC-space tokens; changing ``W_r`` changes the
    prediction only. ``late`` reads the prediction."""
    batch = None
    for value in ("pooled", "late"):
        model = _model(fsa__region_projection="linear", fsa__value=value, **FSA_NOW)
        assert model.region_proj.bias is None and torch.equal(model.region_proj.weight, torch.eye(model.embed_dim))
        batch = batch or _batch(model, n=3)
        with torch.no_grad():
            emb = model.embed(batch)
            boxes, logits = model.regions_all(emb["image_tokens"])
            a = model.fsa_problem(emb, batch, boxes, logits)
            model.region_proj.weight.add_(0.3 * torch.randn_like(model.region_proj.weight))
            b = model.fsa_problem(emb, batch, boxes, logits)
        masks = torch.rand(3, 16, a.coalitions.shape[-1], generator=torch.Generator().manual_seed(0)) > 0.5
        assert not torch.allclose(a.sim, b.sim)
        same = torch.allclose(a.game(masks), b.game(masks))
        assert same == (value == "pooled"), value


def test_fsa_late_value_and_unknown_options():
    model = _model(fsa__value="late", **FSA_NOW).train()
    out = model.loss(_batch(model, n=4))
    assert torch.isfinite(out.terms["fsa"])
    for key, bad in (("fsa__value", "magic"), ("fsa__region_projection", "mlp"), ("fsa__regions", 6),
                     ("fsa__regions", "gt")):
        with pytest.raises(SpecError):
            _model(**{key: bad})


def test_linear_region_projection_save_load(tmp_path):
    from loupe_bench.models import load_model, save_model

    model = _model(fsa__region_projection="linear").eval()
    with torch.no_grad():
        model.region_proj.weight.add_(0.1)
        model.train_step.fill_(7)
    batch = _batch(model, n=2)
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m").eval()
    assert again.region_proj is not None and again.region_proj.bias is None and int(again.train_step) == 7
    img, txt = model.encode_image(batch["pixels"]), model.encode_text(batch["input_ids"], batch["attention_mask"])
    img2, txt2 = again.encode_image(batch["pixels"]), again.encode_text(batch["input_ids"], batch["attention_mask"])
    bx = [torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.0, 1.0]])] * 2
    for s1, s2 in zip(model.score_regions(img, bx, txt), again.score_regions(img2, bx, txt2)):
        assert torch.allclose(s1, s2, atol=1e-6)


def test_region_scoring_without_projection_is_the_cmc_space_mean():
    model = _model().eval()
    batch = _batch(model, n=2)
    img = model.encode_image(batch["pixels"])
    bx = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    got = model.region_features(img, [bx, bx])[0]
    members = torch.zeros(64, dtype=torch.bool).reshape(8, 8)
    members[:4, :4] = True
    want = torch.nn.functional.normalize(img.tokens[0][members.flatten()].mean(0), dim=-1)
    assert torch.allclose(got[0], want, atol=1e-6)


def test_fsa_oracle_regions():
    model = _model("loupe-tiny", fsa__regions="oracle", **FSA_NOW).train()
    batch = _batch(model, n=4)
    with pytest.raises(DataError, match="phrase_boxes"):
        model.loss(batch)
    pb = torch.full((4, 3, 4), float("nan"))
    pb[:, 0] = torch.tensor([0.0, 0.0, 0.5, 0.5])
    pb[:, 1] = torch.tensor([0.5, 0.5, 1.0, 1.0])
    pb[1, 1] = float("nan")  # cut away by the crop: not a region
    batch["phrase_boxes"] = pb
    with torch.no_grad():
        emb = model.embed(batch)
        boxes, logits = model.regions_all(emb["image_tokens"])
        pr = model.fsa_problem(emb, batch, boxes, logits)
    assert pr.boxes.shape == (4, 6, 4)
    assert torch.equal(pr.boxes[0, :2], pb[0, :2]) and torch.equal(pr.boxes[1, 0], pb[1, 0])
    assert not torch.equal(pr.boxes[1, 1], pb[0, 1])  # image 1: one gt box, then proposals
    out = model.loss(batch)
    assert torch.isfinite(out.terms["fsa"])


def test_every_loupe_spec_parses_and_the_tiny_ones_build():
    from loupe_bench.models import available_specs
    from loupe_bench.models.loupe import LoupeCfg

    names = [n for n in available_specs() if get_spec(n).get("family") == "loupe"]
    assert {"loupe-tiny", "loupe-no-fsa", "loupe-no-tsa", "loupe-sampling", "loupe-paper", "loupe-swin-t",
            "loupe-oracle-regions"} <= set(names)
    for n in names:
        spec = get_spec(n)
        cfg = LoupeCfg.from_dict(spec["loupe"])
        assert (cfg.fsa.value, cfg.fsa.region_projection) == ("pooled", "none"), n
        assert cfg.fsa.regions == ("oracle" if n.endswith("oracle-regions") else "proposals"), n
        assert 0 < cfg.fsa.start_step and 0 < cfg.fsa.ramp_steps, n
        if spec["image_size"] == 64:
            model = _model(n, **FSA_NOW)
            assert model.region_proj is None
    for n in ("loupe-oracle-regions", "loupe-small-oracle-regions"):
        assert get_spec(n)["description"].startswith("NOT LOUPE"), n


def test_tsa_every_k_steps_and_region_head_untouched_between():
    """``tsa.every: 3``: ℒ_TSA (and its box term) on training steps 0, 3, ... only; between them the region head gets
    no gradient (the optimiser skips it); evaluation always computes it; a bad value is a SpecError."""
    model = _model(tsa__every=3, fsa__start_step=100).train()
    batch = _batch(model, n=4)
    seen = []
    for _ in range(5):
        model.zero_grad(set_to_none=True)
        out = model.loss(batch)
        out.total.backward()
        head_grads = [p.grad for p in model.region_head.parameters()]
        seen.append("tsa" in out.terms)
        if "tsa" not in out.terms:
            assert all(g is None for g in head_grads)
        else:
            assert any(g is not None and bool(g.abs().sum() > 0) for g in head_grads)
    assert seen == [True, False, False, True, False]
    model.eval()
    with torch.no_grad():
        assert "tsa" in model.loss(batch).terms  # step 5, not a multiple of 3: evaluation still scores it
    for bad in (0, 1.5, "2"):
        with pytest.raises(SpecError, match="tsa.every"):
            _model(tsa__every=bad)


@pytest.mark.parametrize("features", ["tower", "coalition", "image"])
def test_game_stats_evaluates_only_what_tsa_features_names(features):
    """``loupe.tsa.features``: ``tower`` = ``[u(A), u(N), u(N∖A)]`` (2C + 1 evaluations per image), ``coalition`` =
    ``[u(A), u(N), u(N) − u(A)]`` (C + 1), ``image`` = ``[0, u(N), 0]`` (1); checked on a planted additive game
    ``u(S) = Σ_{i∈S} w_i`` whose values are known in closed form."""
    from loupe_bench.models.loupe import LOUPE

    g = torch.Generator().manual_seed(0)
    t, c, n = 2, 5, 9
    w = torch.rand(t, n, generator=g)
    members = torch.rand(t, c, n, generator=g) > 0.5
    seen = []

    def game(masks):
        seen.append(masks.shape[1])
        return (masks.float() * w[:, None]).sum(-1)

    stats = LOUPE.game_stats(game, members, features)
    v_a = (members.float() * w[:, None]).sum(-1)
    v_n = w.sum(-1, keepdim=True).expand(t, c)
    want = {"tower": torch.stack([v_a, v_n, v_n - v_a], -1),
            "coalition": torch.stack([v_a, v_n, v_n - v_a], -1),
            "image": torch.stack([torch.zeros_like(v_n), v_n, torch.zeros_like(v_n)], -1)}[features]
    assert torch.allclose(stats, want, atol=1e-6)
    assert seen == [{"tower": 2 * c + 1, "coalition": c + 1, "image": 1}[features]]


def test_tsa_features_key_is_checked():
    with pytest.raises(SpecError, match="tsa.features"):
        _model(tsa__features="nope")


def test_loupe_fine_grained_scores_match_a_naive_region_word_loop():
    """LOUPE's native pair score = mean over the text's real tokens of the best native region (naive loop)."""
    import torch.nn.functional as F

    from loupe_bench.models import load_model

    torch.manual_seed(0)
    m = load_model("loupe-tiny")
    m.eval()
    img = m.encode_image(torch.randn(3, 3, 64, 64))
    tb = m.tokenizer(["a red circle", "a blue square left of a green star", "a cross"])
    txt = m.encode_text(tb.input_ids, tb.attention_mask)
    with torch.no_grad():
        got = m.fine_grained_scores(img, txt, chunk_size=2)
        regs = m.propose_regions(img, top_k=m.cfg.region.top_k)
        feats = m.region_features(img, [r.boxes for r in regs])
    ref = torch.zeros(3, 3)
    for i in range(3):
        for t in range(3):
            best = []
            for pos in range(txt.tokens.shape[1]):
                if bool(txt.mask[t, pos]):
                    with torch.no_grad():
                        u = txt.tokens[t, pos] if m.phrase_proj is None else m.phrase_proj(txt.tokens[t, pos])
                    u = F.normalize(u, dim=-1)
                    best.append(max(float((feats[i][r] @ u).detach()) for r in range(feats[i].shape[0])))
            ref[i, t] = sum(best) / len(best)
    assert torch.allclose(got, ref, atol=1e-5)
    assert float((got - got.mean()).abs().max()) > 0  # not constant


def test_text_hard_negatives_change_one_thing_each():
    """Head swaps first (two phrases exchange their last tokens), then one modifier replaced by another modifier
    of the batch; lengths unchanged, no duplicates, never the caption itself."""
    from loupe_bench.models.loupe_heads import text_hard_negatives

    ids = torch.tensor([[1, 10, 20, 5, 11, 21, 2], [1, 12, 22, 2, 0, 0, 0]])
    pt = torch.zeros(2, 2, 7, dtype=torch.bool)
    pt[0, 0, 1:3] = pt[0, 1, 4:6] = pt[1, 0, 1:3] = True
    pv = torch.tensor([[True, True], [True, False]])
    neg, owner = text_hard_negatives(ids, pt, pv, 3, torch.Generator().manual_seed(0))
    assert neg.shape[1] == 7 and owner.tolist().count(0) <= 3 and owner.tolist().count(1) <= 3
    assert neg[0].tolist() == [1, 10, 21, 5, 11, 20, 2]  # the binding swap comes first
    modifiers = {10, 11, 12}
    for row, b in zip(neg.tolist(), owner.tolist()):
        diff = [i for i, (x, y) in enumerate(zip(row, ids[b].tolist())) if x != y]
        assert diff, "a negative equal to its caption"
        if len(diff) == 1:  # a replaced modifier, by a modifier seen in the batch
            assert diff[0] in (1, 4) and row[diff[0]] in modifiers
        else:
            assert diff == [2, 5]
    assert len({tuple(r) for r in neg.tolist()}) == len(neg)


def test_phrase_sequences_keep_the_caption_markers():
    from loupe_bench.models.loupe_heads import phrase_sequences

    ids = torch.tensor([[1, 10, 20, 5, 11, 21, 2], [1, 12, 22, 2, 0, 0, 0]])
    am = (ids != 0).long()
    pt = torch.zeros(2, 2, 7, dtype=torch.bool)
    pt[0, 0, 1:3] = pt[0, 1, 4:6] = pt[1, 0, 1:3] = True
    pv = torch.tensor([[True, True], [True, False]])
    out, mask, owner, span = phrase_sequences(ids, am, pt, pv)
    assert out.tolist() == [[1, 10, 20, 2], [1, 11, 21, 2], [1, 12, 22, 2]]
    assert owner.tolist() == [0, 0, 1] and mask.all() and span[:, 1:3].all() and not span[:, [0, 3]].any()


def test_masked_game_several_targets_take_the_best_phrase():
    """``target [G, J]``: v = max_j p(text_j | x_S) − 1/K (padding −1 ignored), equal to a loop over the targets."""
    from loupe_bench.models.masked_game import MaskedTowerGame

    torch.manual_seed(0)
    model = create_model(get_spec("loupe-tiny"), tokenizer_corpus=["a red circle"], seed=0)
    model.eval()
    pixels = torch.randn(2, 3, 64, 64)
    bank = torch.randn(5, model.embed_dim if hasattr(model, "embed_dim") else 64)
    masks = torch.rand(2, 3, 64) > 0.5
    multi = MaskedTowerGame(model, pixels, bank[:2], bank=bank, target=torch.tensor([[0, 3], [1, -1]]),
                            scale=10.0, contrast="prob")(masks)
    single = [MaskedTowerGame(model, pixels, bank[:2], bank=bank, target=torch.tensor([t0, t1]), scale=10.0,
                              contrast="prob")(masks) for t0, t1 in ((0, 1), (3, 1))]
    assert torch.allclose(multi[0], torch.maximum(single[0][0], single[1][0]), atol=1e-6)
    assert torch.allclose(multi[1], single[0][1], atol=1e-6)


@pytest.mark.parametrize("value", ["probability", "phrase_probability"])
def test_contrastive_tsa_values_train(value):
    """Both contrastive token games run through a training step: finite terms, a bank with hard negatives."""
    model = _model(tsa__value=value, tsa__hard_negatives=2)
    model.train()
    batch = _batch(model)
    emb = model.embed(batch)
    bank, target = model._tsa_bank(emb, batch, 2)
    n_texts = batch["input_ids"].shape[0] if value == "probability" else int(batch["phrase_mask"].sum())
    assert bank.shape[0] > n_texts  # the hard negatives are in
    assert target.shape[0] == 2 and bool((target >= 0).any())
    out = model.loss(batch)
    assert all(torch.isfinite(t) for t in out.terms.values())


def test_confidence_targets_excess_rank_across_images_with_a_running_scale():
    """``tsa.confidence: excess``: y = σ(e / (T r)) with a running RMS r, so a positive excess is above ½ in every
    image (``centred`` puts half of each image's boxes above ½)."""
    model = _model(tsa__confidence="excess", region__move_margin=0.5)
    model.train()
    e = torch.tensor([[0.2, 0.1, 0.3], [-0.2, -0.1, -0.3]])
    ok = torch.ones_like(e, dtype=torch.bool)
    y = model._confidence_targets(e, ok)
    rms = float((e ** 2).mean().sqrt())
    assert float(model.tsa_scale) == pytest.approx(rms)
    assert torch.allclose(y, torch.sigmoid(e / (model.cfg.tsa.temperature * rms)))
    assert bool((y[0] > 0.5).all()) and bool((y[1] < 0.5).all())
    y2 = model._confidence_targets(2 * e, ok)  # the scale runs: r ← 0.9 r + 0.1 rms
    assert float(model.tsa_scale) == pytest.approx(0.9 * rms + 0.1 * 2 * rms)
    centred = _model()
    yc = centred._confidence_targets(e, ok)
    assert bool((yc[1] > 0.5).any())  # per-image centring: the best background box is above ½
    out = model.loss(_batch(model))
    assert torch.isfinite(out.terms["tsa"]) and "tsa_kl" in out.logs
    state = model.state_dict()
    assert "tsa_scale" in state and "tsa_scale" not in centred.state_dict()  # saved only where a spec reads it


@pytest.mark.parametrize("confidence", ["centred", "map"])
def test_patch_map_geometry_trains_every_anchor_toward_its_best_rectangle(confidence):
    """``region.geometry: patch_map``: every anchor of the target images gets an L1 target (a whole-patch
    rectangle), the map costs ``2 · (N + 1)`` masked images per image and pair, and the gradient reaches the
    region head; ``tsa.confidence: map`` trains every anchor's confidence."""
    model = _model(region__geometry="patch_map", region__box_start=0, tsa__confidence=confidence)
    model.train()
    batch = _batch(model)
    out = model.loss(batch)
    n = model.grid[0] * model.grid[1]
    t_img = model.cfg.tsa.target_images
    assert out.logs["tsa_map_evals"] == t_img * 2 * (n + 1)
    assert torch.isfinite(out.terms["tsa_box"]) and float(out.terms["tsa_box"]) > 0
    model.zero_grad()
    out.terms["tsa_box"].backward(retain_graph=True)
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.region_head.parameters())
    if confidence == "map":
        assert "tsa_scale" in model.state_dict() and float(model.tsa_scale) > 0
        model.zero_grad()
        out.terms["tsa"].backward()
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.region_head.parameters())


def test_unknown_geometry_is_a_spec_error():
    from loupe_bench.errors import SpecError

    with pytest.raises(SpecError, match="geometry"):
        _model(region__geometry="greedy")
