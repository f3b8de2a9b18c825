"""Model zoo: specs, towers, tokenizers, CLIP, checkpoints, local pretrained towers (all offline, tiny)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from loupe_bench.errors import CheckpointError, SpecError
from loupe_bench.models import (
    MODEL_CLASSES, ImageFeatures, LossOutput, TextFeatures, create_model, get_spec, list_models, load_model,
    save_model,
)
from loupe_bench.models.gather import gather_batch
from loupe_bench.models.losses import clip_infonce
from loupe_bench.models.tokenizer import train_tokenizer

CAPTIONS = [
    "a red circle left of a blue square",
    "two green triangles",
    "a small yellow star above a purple circle",
    "a big blue square",
    "the orange triangle below a red star",
    "three circles",
]


def synthetic_batch(model, n=6, seed=0):
    """A random batch with the keys of docs/architecture.md (one caption per image)."""
    g = torch.Generator().manual_seed(seed)
    tb = model.tokenizer(CAPTIONS[:n])
    ptm = torch.zeros(n, 2, tb.input_ids.shape[1], dtype=torch.bool)
    ptm[:, 0, 1:3] = True
    return {
        "pixels": torch.randn(n, 3, model.image_size, model.image_size, generator=g),
        "input_ids": tb.input_ids, "attention_mask": tb.attention_mask,
        "phrase_token_mask": ptm, "phrase_mask": torch.tensor([[True, False]] * n),
        "image_ids": torch.arange(n),
    }


@pytest.fixture(scope="module", params=["clip-tiny", "filip-tiny"])
def tiny(request):
    return create_model(request.param, tokenizer_corpus=CAPTIONS, seed=0)


# -- registry and specs ---------------------------------------------------------------------------------------------
def test_list_models_shows_tiny_and_paper_specs():
    names = dict(list_models())
    for name in ("clip-tiny", "filip-tiny", "clip-vit-b16", "filip-vit-b16", "clip-swin-t", "filip-swin-t",
                 "clip-paper", "filip-paper", "clip-pretrained-vit-b32"):
        assert name in names, name
    assert names["filip-paper"].startswith("(filip) FILIP at LOUPE paper scale")
    assert get_spec("filip-paper")["image_tower"]["name"] == "swin_large_patch4_window7_224"
    assert {"clip", "filip", "clip-pretrained"} <= set(MODEL_CLASSES.names())


def test_cli_list_models():
    from click.testing import CliRunner

    from loupe_bench.cli.main import cli

    res = CliRunner().invoke(cli, ["list", "models"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "clip-tiny" in res.output and "filip-paper" in res.output


def test_unknown_spec_and_bad_keys_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="unknown model"):
        create_model("no-such-model")
    spec = get_spec("clip-tiny")
    spec["image_tower"]["colour"] = "blue"
    with pytest.raises(SpecError, match="colour"):
        create_model(spec)
    spec = get_spec("clip-tiny")
    spec["family"] = "nope"
    with pytest.raises(SpecError, match="model family"):
        create_model(spec)
    spec = get_spec("clip-tiny")
    spec["loss"]["weights"]["tsa"] = 1.0
    model = create_model(spec, tokenizer_corpus=CAPTIONS, seed=0)
    with pytest.raises(SpecError, match="tsa"):
        model.loss(synthetic_batch(model))


# -- tiny models ----------------------------------------------------------------------------------------------------
def test_forward_backward_on_synthetic_batch(tiny):
    tiny.train()
    batch = synthetic_batch(tiny)
    emb = tiny.embed(batch)
    assert emb["image_pooled"].shape == (6, 64) and emb["image_tokens"].shape == (6, 64, 64)
    assert emb["text_tokens"].shape == (6, 32, 64) and emb["text_mask"].dtype == torch.bool
    assert tiny.grid == (8, 8)
    for key in ("image_pooled", "image_tokens", "text_pooled", "text_tokens"):
        torch.testing.assert_close(emb[key].norm(dim=-1), torch.ones(emb[key].shape[:-1]))
    tiny.zero_grad()
    out = tiny(batch)
    assert isinstance(out, LossOutput) and torch.isfinite(out.total)
    # a random model at temperature 0.07 is near chance: log(6) per direction
    assert abs(out.total.item() - math.log(6)) < 1.0
    out.total.backward()
    missing = [n for n, p in tiny.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient (DDP would fail): {missing}"


def test_features_and_global_similarity(tiny):
    tiny.eval()
    batch = synthetic_batch(tiny)
    with torch.no_grad():
        img = tiny.encode_image(batch["pixels"])
        txt = tiny.encode_text(batch["input_ids"], batch["attention_mask"])
        assert isinstance(img, ImageFeatures) and isinstance(txt, TextFeatures)
        assert img.grid == (8, 8) and txt.mask.shape == batch["input_ids"].shape
        sim = tiny.similarity(img, txt, chunk_size=2)
    assert sim.shape == (6, 6)
    if tiny.spec["family"] == "clip":
        torch.testing.assert_close(sim, img.pooled @ txt.pooled.T)


def test_same_seed_same_model_and_logit_scale_clamp():
    a = create_model("clip-tiny", tokenizer_corpus=CAPTIONS, seed=3)
    b = create_model("clip-tiny", tokenizer_corpus=CAPTIONS, seed=3)
    c = create_model("clip-tiny", tokenizer_corpus=CAPTIONS, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        a.logit_scale.fill_(10.0)
    assert a.scale().item() == 100.0
    a.clamp_logit_scale_()
    assert a.logit_scale.item() == pytest.approx(math.log(100))


def test_clip_infonce_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    t = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    s = 7.0
    ref = 0.0
    for i in range(5):
        ref -= math.log(math.exp(s * float(v[i] @ t[i])) / sum(math.exp(s * float(v[i] @ t[j])) for j in range(5)))
        ref -= math.log(math.exp(s * float(v[i] @ t[i])) / sum(math.exp(s * float(v[j] @ t[i])) for j in range(5)))
    assert float(clip_infonce(v, t, torch.tensor(s))) == pytest.approx(ref / 10, abs=1e-5)
    assert gather_batch(v) is v  # no process group: identity


# -- checkpoints ----------------------------------------------------------------------------------------------------
def test_save_load_gives_identical_outputs(tiny, tmp_path):
    tiny.eval()
    batch = synthetic_batch(tiny)
    out_dir = save_model(tiny, tmp_path / "m")
    assert {"model.safetensors", "config.json", "tokenizer"} <= {p.name for p in out_dir.iterdir()}
    assert json.loads((out_dir / "config.json").read_text())["family"] == tiny.spec["family"]
    loaded = load_model(out_dir)
    assert type(loaded) is type(tiny)
    tb1, tb2 = tiny.tokenizer(CAPTIONS), loaded.tokenizer(CAPTIONS)
    assert all(torch.equal(x, y) for x, y in zip(tb1, tb2))
    with torch.no_grad():
        e1, e2 = tiny.embed(batch), loaded.embed(batch)
        assert all(torch.equal(e1[k], e2[k]) for k in e1)
        assert torch.equal(tiny.loss(batch).total, loaded.loss(batch).total)


def test_mismatched_checkpoint_names_keys(tmp_path):
    model = create_model("clip-tiny", tokenizer_corpus=CAPTIONS, seed=0)
    d = save_model(model, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["family"] = "filip"  # FILIP without a CLIP term has filip_logit_scale and no global logit_scale
    cfg["loss"]["weights"] = {"filip": 1.0}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing keys \[filip_logit_scale\].*unexpected keys \[logit_scale\]"):
        load_model(d)
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_model(tmp_path)


def test_run_directory_uses_latest_checkpoint(tmp_path):
    model = create_model("filip-tiny", tokenizer_corpus=CAPTIONS, seed=0)
    run = tmp_path / "run"
    save_model(model, run)
    (run / "run.json").write_text(json.dumps({"schema": "loupe-bench/run/v1", "recipe": {}, "finished_step": None}))
    step = run / "checkpoints" / "step_5"
    step.mkdir(parents=True)
    with torch.no_grad():
        model.filip_logit_scale.fill_(2.0)
    from loupe_bench.models.checkpoint import state_for_saving
    from safetensors.torch import save_file

    save_file(state_for_saving(model), str(step / "model.safetensors"))
    (run / "checkpoints" / "latest").write_text("step_5")
    (run / "model.safetensors").unlink()
    assert load_model(run).filip_logit_scale.item() == 2.0


# -- tokenizers -----------------------------------------------------------------------------------------------------
def test_trained_tokenizer_ids_offsets_and_roundtrip(tmp_path):
    tok = train_tokenizer(CAPTIONS * 3, vocab_size=200, max_length=12)
    hf = tok.hf
    assert hf.pad_token_id == 0 and hf.convert_ids_to_tokens([0, 2, 3]) == ["[PAD]", "[CLS]", "[SEP]"]
    text = "A red circle, zq!"
    tb = tok([text, "two"])
    assert tb.input_ids.shape == (2, 12) and tb.offsets.shape == (2, 12, 2)
    ids = tb.input_ids[0][tb.attention_mask[0].bool()].tolist()
    pieces = hf.convert_ids_to_tokens(ids)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and "red" in pieces and "circle" in pieces
    assert hf.unk_token_id not in ids  # unseen characters still have ids (alphabet always in the vocabulary)
    spans = [text[s:e].lower() for s, e in tb.offsets[0].tolist() if e > s]
    assert spans[:3] == ["a", "red", "circle"]
    assert tb.offsets[0, 0].tolist() == [0, 0] and tb.attention_mask[1].sum() == 3
    tok.save(tmp_path / "tok")
    from loupe_bench.models.tokenizer import Tokenizer

    again = Tokenizer.load(tmp_path / "tok", 12)([text, "two"])
    assert all(torch.equal(x, y) for x, y in zip(tb, again))


def test_trained_vocabulary_is_frequency_ranked_and_deterministic():
    from loupe_bench.models.tokenizer import ALPHABET, SPECIAL_TOKENS, train_vocab

    texts = ["zebra circle", "circle red", "Red circle", "apple"]
    vocab = train_vocab(texts, vocab_size=1000)
    base = len(SPECIAL_TOKENS) + 2 * len(ALPHABET)
    assert list(vocab)[:5] == list(SPECIAL_TOKENS) and vocab["##a"] == len(SPECIAL_TOKENS) + len(ALPHABET)
    # most frequent first, ties by spelling: circle (3), red (2), then apple / zebra (1 each)
    assert [vocab[w] for w in ("circle", "red", "apple", "zebra")] == [base, base + 1, base + 2, base + 3]
    assert train_vocab(list(reversed(texts)), vocab_size=1000) == vocab
    assert len(train_vocab(texts, vocab_size=base + 2)) == base + 2  # the size cap drops the rarest words


# -- towers and pretrained sources ------------------------------------------------------------------------------
def test_local_hf_text_tower_loads_offline(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = train_tokenizer(CAPTIONS, vocab_size=120, max_length=16)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=32), add_pooling_layer=False).eval()
    bert.save_pretrained(str(tmp_path / "bert"))
    tok.hf.save_pretrained(str(tmp_path / "bert"))
    spec = get_spec("clip-tiny")
    spec["text_tower"] = {"kind": "bert", "pretrained": str(tmp_path / "bert")}
    spec["tokenizer"] = {"kind": "pretrained", "max_length": 16}
    model = create_model(spec, seed=0).eval()
    tb = model.tokenizer(CAPTIONS[:2])
    assert torch.equal(tb.input_ids, tok(CAPTIONS[:2]).input_ids)
    with torch.no_grad():
        hidden = bert(input_ids=tb.input_ids, attention_mask=tb.attention_mask).last_hidden_state
        expected = F.normalize(model.text_proj(hidden[:, 0]), dim=-1)
        torch.testing.assert_close(model.encode_text(tb.input_ids, tb.attention_mask).pooled, expected)
    # the saved model rebuilds without the original directory
    d = save_model(model, tmp_path / "saved")
    shutil.rmtree(tmp_path / "bert")
    with torch.no_grad():
        torch.testing.assert_close(load_model(d).encode_text(tb.input_ids, tb.attention_mask).pooled, expected)
    spec["text_tower"]["pretrained"] = str(tmp_path / "bert")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        create_model(spec)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_weights_from_local_file(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file

    spec = get_spec("clip-tiny")
    torch.manual_seed(1)
    src = timm.create_model("vit_base_patch16_224", num_classes=10, **spec["image_tower"]["kwargs"])
    state = {k: v.contiguous() for k, v in src.state_dict().items()}  # includes the classifier head (ignored)
    path = tmp_path / f"vit{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, str(path))
    spec["image_tower"]["pretrained"] = str(path)
    model = create_model(spec, tokenizer_corpus=CAPTIONS, seed=0)
    torch.testing.assert_close(model.image_tower.model.pos_embed, src.pos_embed)
    assert model.image_mean == pytest.approx((0.5, 0.5, 0.5))
    bad = dict(state)
    bad.pop("blocks.0.attn.qkv.weight")
    bad["blocks.9.mlp.fc1.weight"] = torch.zeros(2, 2)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    spec["image_tower"]["pretrained"] = str(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys \[blocks\.0\.attn\.qkv\.weight\].*"
                                              r"unexpected keys \[blocks\.9\.mlp\.fc1\.weight\]"):
        create_model(spec, tokenizer_corpus=CAPTIONS)
    spec["image_tower"]["pretrained"] = str(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="not found"):
        create_model(spec, tokenizer_corpus=CAPTIONS)


def test_swin_tower_exposes_flattened_grid():
    spec = get_spec("filip-tiny")
    spec["image_tower"] = {"kind": "timm", "name": "swin_tiny_patch4_window7_224",
                           "kwargs": {"window_size": 4, "embed_dim": 32, "depths": [1, 1], "num_heads": [1, 2]}}
    model = create_model(spec, tokenizer_corpus=CAPTIONS, seed=0).eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        raw = model.image_tower.model.forward_features(x)  # NHWC
        out = model.image_tower(x)
        feats = model.encode_image(x)
    assert model.grid == (8, 8) and out.grid == (8, 8) and feats.tokens.shape == (2, 64, 64)
    torch.testing.assert_close(out.tokens[:, 8 * 3 + 5], raw[:, 3, 5])  # token n sits at row n // W
    torch.testing.assert_close(out.pooled, raw.mean(dim=(1, 2)))


def _tiny_clip_dir(root: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": 26 + i for i, c in enumerate(letters)})
    vocab.update({"re": 52, "red</w>": 53, "<|startoftext|>": 54, "<|endoftext|>": 55})
    tok = CLIPTokenizer(vocab=vocab, merges=[("r", "e"), ("re", "d</w>")])
    assert tok(["red"]).input_ids[0] == [54, 53, 55]  # transformers 5.x trap: the vocabulary really is ours
    cfg = CLIPConfig(
        text_config=dict(vocab_size=56, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=54, eos_token_id=55,
                         pad_token_id=55),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    d = root / "tiny-clip"
    CLIPModel(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32}).save_pretrained(str(d))
    return d


def test_pretrained_clip_from_local_directory_matches_transformers(tmp_path, monkeypatch):
    from transformers import CLIPModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = _tiny_clip_dir(tmp_path)
    spec = dict(get_spec("clip-pretrained-vit-b32"), pretrained=str(d))
    model = create_model(spec).eval()
    assert model.image_size == 32 and model.grid == (4, 4) and model.tokenizer.max_length == 16
    ref = CLIPModel.from_pretrained(str(d)).eval()
    texts = ["a red circle", "red", "bed"]
    tb = model.tokenizer(texts)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        img, txt = model.encode_image(pixels), model.encode_text(tb.input_ids, tb.attention_mask)
        out = ref(input_ids=tb.input_ids, attention_mask=tb.attention_mask, pixel_values=pixels)
        expected = out.logits_per_image / ref.logit_scale.exp()
        torch.testing.assert_close(model.similarity(img, txt), expected, atol=1e-5, rtol=0)
        assert img.tokens.shape == (2, 16, 16)
        assert not txt.mask[:, 0].any()  # <|startoftext|> excluded from token scoring
        saved = load_model(save_model(model, tmp_path / "saved"))
        torch.testing.assert_close(saved.similarity(saved.encode_image(pixels),
                                                    saved.encode_text(tb.input_ids, tb.attention_mask)), expected,
                                   atol=1e-5, rtol=0)
    loss = model.loss({"pixels": pixels[:2], "input_ids": tb.input_ids[:2], "attention_mask": tb.attention_mask[:2]})
    assert torch.isfinite(loss.total)
    with pytest.raises(CheckpointError, match="HF cache"):
        create_model(dict(spec, pretrained="nobody/no-such-clip"))


def test_tiny_world_batch(tiny_world):
    """A batch from the on-disk synthetic world (Karpathy JSON + JPEGs) through tiny CLIP and FILIP."""
    from PIL import Image

    data = json.loads((tiny_world / "dataset_synthetic.json").read_text())
    train = [im for im in data["images"] if im["split"] == "train"][:4]
    corpus = [s["raw"] for im in data["images"] if im["split"] == "train" for s in im["sentences"]]
    for name in ("clip-tiny", "filip-tiny"):
        model = create_model(name, tokenizer_corpus=corpus, seed=0)
        assert model.tokenizer.hf.unk_token_id not in model.tokenizer(corpus[:50]).input_ids
        pix = []
        for im in train:
            arr = torch.tensor(list(Image.open(tiny_world / im["filepath"] / im["filename"]).convert("RGB")
                                    .resize((64, 64)).getdata()), dtype=torch.float32).view(64, 64, 3) / 255
            pix.append((arr.permute(2, 0, 1) - torch.tensor(model.image_mean)[:, None, None])
                       / torch.tensor(model.image_std)[:, None, None])
        tb = model.tokenizer([im["sentences"][0]["raw"] for im in train])
        batch = {"pixels": torch.stack(pix), "input_ids": tb.input_ids, "attention_mask": tb.attention_mask,
                 "image_ids": torch.tensor([im["imgid"] for im in train])}
        out = model(batch)
        out.total.backward()
        assert torch.isfinite(out.total)


@pytest.mark.parametrize("name,grid,width,dim", [
    ("filip-paper", (7, 7), 1536, 256),  # Swin-L 224 px: last stage 7 x 7 x 1536
    ("clip-vit-b16", (14, 14), 768, 512),  # ViT-B/16 224 px: 14 x 14 patches
    ("filip-swin-t", (7, 7), 768, 256),
])
def test_paper_scale_specs_build_on_meta_device(name, grid, width, dim):
    """Paper-sized towers are built without memory (meta tensors) and give the published token grids."""
    with torch.device("meta"):
        model = create_model(name, tokenizer_corpus=CAPTIONS, seed=0)
        feats = model.encode_image(torch.empty(2, 3, 224, 224))
    assert model.image_size == 224 and model.grid == grid and feats.grid == grid
    assert model.image_tower.width == width and feats.tokens.shape == (2, grid[0] * grid[1], dim)
    assert model.text_tower.width == 768 and model.tokenizer.max_length == 77


def test_text_tower_mean_pool_and_image_avg_pool():
    """``text_tower.pool: mean`` is the attention-masked mean of the token states (padding excluded);
    ``class_token: false`` image towers pool by the mean of the patch tokens; a bad pool is a SpecError."""
    from loupe_bench.models.towers import TextTowerCfg

    model = create_model("clip-tiny", tokenizer_corpus=CAPTIONS, seed=0).eval()
    assert model.text_tower.cfg.pool == "mean" and model.image_tower.num_prefix_tokens == 0
    tb = model.tokenizer(CAPTIONS[:3])
    with torch.no_grad():
        out = model.text_tower(tb.input_ids, tb.attention_mask)
        for j in range(3):
            n = int(tb.attention_mask[j].sum())
            assert n < tb.input_ids.shape[1]  # padded rows exist, so padding would change an unmasked mean
            torch.testing.assert_close(out.pooled[j], out.tokens[j, :n].mean(0))
        pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        img = model.image_tower(pixels)
        torch.testing.assert_close(img.pooled, img.tokens.mean(1))
    with pytest.raises(SpecError):
        TextTowerCfg(pool="max")
