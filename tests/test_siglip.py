"""SigLIP (Zhai et al., ICCV 2023): the pairwise sigmoid loss against a naive loop, its learnable temperature and
bias, the chunked (ring) form under DDP against the full batch, the shipped specs, and a CLI training run."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from loupe_bench.models import create_model, get_spec
from loupe_bench.models.losses import sigmoid_pair_loss, siglip_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = ["a red square", "a blue circle", "a green triangle above a red square", "two blue circles",
            "a yellow square left of a green circle", "a red-and-blue square"]
WORLD = 2


def _embeddings(n: int, d: int = 8, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1),
            F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1))


def naive_siglip(x, y, t: float, b: float) -> float:
    """``−(1/n) Σ_i Σ_j log σ(z_ij (t·x_i·y_j + b))`` with two Python loops, ``z_ij = 1`` iff ``i = j``."""
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = t * sum(float(a) * float(c) for a, c in zip(x[i], y[j])) + b
            total += math.log1p(math.exp(-z * logit))  # −log σ(z·logit)
    return total / n


@pytest.mark.parametrize("t, b", [(10.0, -10.0), (3.7, -2.3), (25.0, 4.0)])
def test_loss_equals_naive_double_loop(t, b):
    x, y = _embeddings(7)
    got = siglip_loss(x, y, torch.tensor(t, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    want = naive_siglip(x.tolist(), y.tolist(), t, b)
    assert abs(got.item() - want) <= 1e-6
    # float32 inputs: the same value to float32 precision (relative 1e-6)
    got32 = siglip_loss(x.float(), y.float(), torch.tensor(t), torch.tensor(b))
    assert got32.dtype == torch.float32 and abs(got32.item() - want) <= 1e-6 * max(1.0, abs(want))


def test_loss_equals_open_clip_siglip_loss():
    """open_clip's ``SigLipLoss`` (one process) computes the same value (it takes ``t`` already exponentiated)."""
    loss_mod = pytest.importorskip("open_clip.loss")
    x, y = _embeddings(9)
    t, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    theirs = loss_mod.SigLipLoss()(x, y, t, b)
    assert siglip_loss(x, y, t, b).item() == pytest.approx(theirs.item(), abs=1e-9)


def test_block_without_positives_and_gradients_match_autograd_check():
    x, y = _embeddings(4)
    t, b = torch.tensor(2.0, dtype=torch.float64), torch.tensor(-1.5, dtype=torch.float64)
    # negatives only: every pair has z = −1
    want = sum(math.log1p(math.exp(t.item() * float(x[i] @ y[j]) + b.item())) for i in range(4) for j in range(4)) / 4
    assert sigmoid_pair_loss(x, y, t, b, positives=False).item() == pytest.approx(want, abs=1e-9)
    leaves = [v.clone().requires_grad_(True) for v in (x, y, t, b)]
    assert torch.autograd.gradcheck(lambda *a: sigmoid_pair_loss(*a, positives=True), leaves)


def test_paper_initialisation_and_gradient_to_temperature_and_bias():
    model = create_model("siglip-tiny", tokenizer_corpus=CAPTIONS, seed=0)
    assert model.siglip_logit_scale.item() == pytest.approx(math.log(10.0))  # t' = log 10
    assert model.siglip_logit_bias.item() == pytest.approx(-10.0)  # b = −10
    assert model.scale(model.siglip_logit_scale).item() == pytest.approx(10.0)
    assert not hasattr(model, "logit_scale")  # no CLIP term: no unused global temperature (DDP needs every grad)
    tb = model.tokenizer(CAPTIONS)
    batch = {"pixels": torch.randn(len(CAPTIONS), 3, 64, 64), "input_ids": tb.input_ids,
             "attention_mask": tb.attention_mask}
    model.train()
    out = model.loss(batch)
    assert set(out.terms) == {"siglip"} and out.logs["siglip_logit_bias"] == pytest.approx(-10.0)
    # at init every negative pair has logit ≈ −10 ± 10 and every positive one too: L ≈ 10 per image
    assert 0 < out.total.item() < 25
    out.total.backward()
    for p in (model.siglip_logit_scale, model.siglip_logit_bias):
        assert p.grad is not None and p.grad.abs().item() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    # the bias's gradient is the analytic one: ∂L/∂b = (1/n) Σ_ij −z_ij σ(−z_ij logit_ij)
    emb = model.embed(batch)
    logits = 10.0 * emb["image_pooled"] @ emb["text_pooled"].T - 10.0
    z = 2 * torch.eye(len(CAPTIONS)) - 1
    want = (-z * torch.sigmoid(-z * logits)).sum() / len(CAPTIONS)
    assert model.siglip_logit_bias.grad.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6)


def test_spec_keys_and_a_clip_term_on_request():
    spec = get_spec("siglip-tiny")
    spec["siglip"]["scale_init"] = 0.0
    from loupe_bench.errors import SpecError

    with pytest.raises(SpecError, match="scale_init"):
        create_model(spec, tokenizer_corpus=CAPTIONS, seed=0)
    spec = get_spec("siglip-tiny")
    spec["loss"]["weights"]["clip"] = 0.5
    model = create_model(spec, tokenizer_corpus=CAPTIONS, seed=0)
    tb = model.tokenizer(CAPTIONS)
    out = model.loss({"pixels": torch.randn(6, 3, 64, 64), "input_ids": tb.input_ids,
                      "attention_mask": tb.attention_mask})
    assert set(out.terms) == {"siglip", "clip"}
    assert out.total.item() == pytest.approx(out.terms["siglip"].item() + 0.5 * out.terms["clip"].item(), rel=1e-6)


@pytest.mark.parametrize("size", ["tiny", "small", "paper", "swin-t", "vit-b16"])
def test_siglip_specs_are_their_clip_spec_with_the_sigmoid_loss(size):
    """``siglip-SIZE`` differs from ``clip-SIZE`` only in family, loss and the ``siglip`` block: same towers,
    tokenizer, projection, embedding width and scorer."""
    siglip, clip = get_spec(f"siglip-{size}"), get_spec(f"clip-{size}")
    differ = {k for k in set(siglip) | set(clip) if siglip.get(k) != clip.get(k)}
    assert differ == {"name", "description", "family", "loss", "siglip"}
    assert siglip["family"] == "siglip" and siglip["loss"]["weights"] == {"siglip": 1.0, "clip": 0.0}
    assert siglip["siglip"] == {"scale_init": 10.0, "bias_init": -10.0}


def test_scoring_is_clips_cosine():
    model = create_model("siglip-tiny", tokenizer_corpus=CAPTIONS, seed=0).eval()
    tb = model.tokenizer(CAPTIONS)
    with torch.no_grad():
        img = model.encode_image(torch.randn(4, 3, 64, 64))
        txt = model.encode_text(tb.input_ids, tb.attention_mask)
        i2t, t2i = model.similarity_pair(img, txt)
    torch.testing.assert_close(i2t, img.pooled @ txt.pooled.T)
    assert i2t is t2i


# -- the chunked form under DDP -------------------------------------------------------------------------------------
def test_chunk_arithmetic_of_simulated_ranks_equals_full_batch():
    """What the ring computes, rank by rank without processes: rank ``r``'s images against its own texts (with the
    positives), then against the texts of ranks ``r−1, r−2, …`` (negatives only); the mean over ranks is the
    full-batch loss, for any world size dividing the batch."""
    x, y = _embeddings(12)
    t, b = torch.tensor(7.0, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64)
    full = siglip_loss(x, y, t, b)
    for world in (2, 3, 4, 6):
        per = 12 // world
        rows = [slice(r * per, (r + 1) * per) for r in range(world)]
        losses = []
        for r in range(world):
            loss = sigmoid_pair_loss(x[rows[r]], y[rows[r]], t, b, positives=True)
            for step in range(1, world):
                loss = loss + sigmoid_pair_loss(x[rows[r]], y[rows[(r - step) % world]], t, b, positives=False)
            losses.append(loss)
        assert (sum(losses) / world).item() == pytest.approx(full.item(), abs=1e-9)


def _ring_worker(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, y = _embeddings(6, dtype=torch.float32)
        rows = slice(rank * 3, rank * 3 + 3)
        results = {}
        for key, with_grad in (("grad", True), ("nograd", False)):
            leaves = [x[rows].clone().requires_grad_(True), y[rows].clone().requires_grad_(True),
                      torch.tensor(5.0, requires_grad=True), torch.tensor(-3.0, requires_grad=True)]
            loss = siglip_loss(*leaves, with_grad=with_grad)
            loss.backward()
            results[key] = (loss.item(), [p.grad.clone() for p in leaves])
        torch.save(results, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ring_on_two_gloo_processes_equals_full_batch(tmp_path):
    mp.spawn(_ring_worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    x, y = _embeddings(6, dtype=torch.float32)
    leaves = [x.clone().requires_grad_(True), y.clone().requires_grad_(True),
              torch.tensor(5.0, requires_grad=True), torch.tensor(-3.0, requires_grad=True)]
    full = siglip_loss(*leaves)
    full.backward()
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(WORLD)]
    # L = (1/W) Σ_r L_r: the engine's mean over ranks
    assert sum(res["grad"][0] for res in ranks) / WORLD == pytest.approx(full.item(), abs=1e-6)
    assert [res["nograd"][0] for res in ranks] == pytest.approx([res["grad"][0] for res in ranks], abs=1e-7)
    for r, res in enumerate(ranks):
        img_g, txt_g, t_g, b_g = res["grad"][1]
        # a rank's rows get Σ_s ∂L_s/∂(its rows) (the texts' gradients come back along the ring) = W · ∂L/∂rows;
        # the engine's averaging over ranks then gives the full-batch gradient
        torch.testing.assert_close(img_g / WORLD, leaves[0].grad[r * 3:r * 3 + 3], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(txt_g / WORLD, leaves[1].grad[r * 3:r * 3 + 3], atol=1e-6, rtol=1e-5)
        # without the gradient through the ring a rank's texts only see its own images
        assert not torch.allclose(res["nograd"][1][1], txt_g)
        torch.testing.assert_close(res["nograd"][1][0], img_g)
    for k in (2, 3):  # temperature and bias: replicated, the mean over ranks of ∂L_r is ∂L
        mean = sum(res["grad"][1][k] for res in ranks) / WORLD
        torch.testing.assert_close(mean, leaves[k].grad, atol=1e-6, rtol=1e-5)


# -- end to end -----------------------------------------------------------------------------------------------------
def test_cli_trains_siglip_tiny(tiny_world, tmp_path, capsys):
    import json

    from loupe_bench.cli.main import main
    from loupe_bench.models import load_model

    run = tmp_path / "run"
    argv = ["train", "--model", "siglip-tiny", "--data", str(tiny_world), "--out", str(run), "--recipe", "tiny-cpu",
            "--steps", "2", "--set", "threads=1", "--set", "data.batch_size=8", "--set", "log.progress=false"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0, capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["family"] == "siglip"
    model = load_model(str(run))
    assert type(model).__name__ == "SigLIP"
    assert math.isfinite(model.siglip_logit_bias.item()) and model.siglip_logit_bias.item() != -10.0  # trained
