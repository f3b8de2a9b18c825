"""Checkpoints users already have: a Hugging Face ``CLIPModel`` directory and a local open_clip checkpoint, loaded
through ``load_model`` / ``--model`` and compared with the reference libraries on tiny random models they create
themselves (no download). open_clip is a dev dependency: without it this module fails, it does not skip."""
from __future__ import annotations

import json

import open_clip  # noqa: F401  (the dev extra installs it; a missing open_clip must fail the suite)
import pytest
import torch
import torch.nn.functional as F

from loupe_bench.errors import CheckpointError
from loupe_bench.models import load_model, load_model_and_transforms
from loupe_bench.models.pretrained_clip import PretrainedCLIP

TOL = 1e-5
CAPTIONS = ["a red cube left of a blue ball.", "Two small GREEN spheres   near a tree!", "it's 3 o'clock"]
MAX_DIFFS = {}  # what the comparisons measured, printed with -s


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Add noise to every parameter so zero-initialised biases and unit norms are tested too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _close(name: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    diff = (ours - ref).abs().max().item()
    MAX_DIFFS[name] = diff
    print(f"max |diff| {name}: {diff:.2e}")
    assert diff <= TOL, f"{name}: max abs difference {diff:.2e} > {TOL}"


def _pooled(out):
    return getattr(out, "pooler_output", out)  # transformers 5 returns an output object, 4.x a tensor


# -- Hugging Face CLIPModel directory --------------------------------------------------------------------------------
def _tiny_hf_clip(act: str, vocab: int = 99):
    from transformers import CLIPConfig, CLIPModel

    conf = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, hidden_act=act, bos_token_id=vocab - 2,
                         eos_token_id=vocab - 1, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act=act),
        projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(conf)
    _perturb(model, 1)
    return model.eval()


def _token_ids(vocab: int, lengths=(5, 9, 16), length: int = 16):
    g = torch.Generator().manual_seed(2)
    ids = torch.zeros(len(lengths), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, vocab - 2, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = vocab - 2, vocab - 1
        mask[i, :n] = 1
    return ids, mask


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hf_clip_directory_matches_transformers(tmp_path, weights, act):
    """A saved ``CLIPModel`` folder loads as our CLIP model (it used to fail with "missing required key 'family'")
    and gives transformers' own normalised image and text embeddings on the same pixels and token ids."""
    hf = _tiny_hf_clip(act)
    d = tmp_path / "hf-clip"
    if weights == "model.safetensors":
        hf.save_pretrained(str(d))
    else:  # an older checkpoint: a pickled state dict, read with weights_only=True
        hf.config.save_pretrained(str(d))
        torch.save(hf.state_dict(), d / weights)
    assert (d / weights).is_file() and json.loads((d / "config.json").read_text())["model_type"] == "clip"
    model = load_model(d)
    assert isinstance(model, PretrainedCLIP) and model.spec["pretrained"] == str(d)
    ids, mask = _token_ids(hf.config.text_config.vocab_size)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _close(f"hf image ({act}, {weights})", model.encode_image(pixels).pooled,
               F.normalize(_pooled(hf.get_image_features(pixel_values=pixels)), dim=-1))
        _close(f"hf text ({act}, {weights})", model.encode_text(ids, mask).pooled,
               F.normalize(_pooled(hf.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1))
    assert model.clip.logit_scale.item() == hf.logit_scale.item()
    assert model.image_size == 32 and model.preprocess is not None
    with pytest.raises(CheckpointError, match="without tokenizer files"):  # a random tiny CLIP ships none
        model.tokenizer(["a cat"])


def test_hf_clip_directory_uses_its_tokenizer_and_cli_eval(tmp_path, tiny_world):
    """With tokenizer files saved beside the weights the model tokenises with them; ``eval --model DIR`` runs."""
    import yaml
    from click.testing import CliRunner

    from loupe_bench.cli.main import cli
    from loupe_bench.models.open_clip_convert import open_clip_bpe_tokenizer
    from loupe_bench.specs import load_yaml, spec_files

    hf = _tiny_hf_clip("quick_gelu", vocab=49408)
    d = tmp_path / "hf-clip-tok"
    hf.save_pretrained(str(d))
    bpe = open_clip_bpe_tokenizer(16)
    bpe.hf.save_pretrained(str(d))
    model, preprocess, tokenizer = load_model_and_transforms(d)
    assert torch.equal(tokenizer(CAPTIONS).input_ids, bpe(CAPTIONS).input_ids)
    task = next(t for t in map(load_yaml, spec_files("tasks")) if t.get("name") == "synthetic-retrieval")
    task.update(splits=["test"], bootstrap={"n_resamples": 30, "seed": 0})
    spec_path = tmp_path / "ret.yaml"
    spec_path.write_text(yaml.safe_dump(task))
    res = CliRunner().invoke(cli, ["eval", "--model", str(d), "--task", str(spec_path), "--data-root",
                                   str(tiny_world), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "out" / "hf-clip-tok__synthetic-retrieval__test.json").read_text())
    assert record["model"]["spec"]["family"] == "clip-pretrained" and "i2t_R@1" in record["metrics"]


# -- open_clip checkpoint ------------------------------------------------------------------------------------------
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(params=[False, True], ids=["gelu", "quickgelu"])
def open_clip_tiny(request, tmp_path):
    """A tiny random open_clip ViT CLIP registered with open_clip, its config file and its weights as a training
    checkpoint (``.pt``, ``state_dict`` with DDP's ``module.`` prefix) and as ``.safetensors``."""
    from safetensors.torch import save_file

    name = "loupe-test-tiny-" + ("quickgelu" if request.param else "gelu")
    cfg_path = tmp_path / f"{name}.json"
    cfg_path.write_text(json.dumps(dict(TINY_OPEN_CLIP, quick_gelu=request.param)))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    oc = open_clip.create_model(name, pretrained=None)
    _perturb(oc, 4)
    oc.eval()
    state = {k: v.contiguous() for k, v in oc.state_dict().items()}
    torch.save({"epoch": 1, "name": name, "state_dict": {"module." + k: v for k, v in state.items()}},
               tmp_path / "epoch_1.pt")
    save_file(state, str(tmp_path / "tiny.safetensors"))
    return name, cfg_path, oc, tmp_path


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_open_clip_checkpoint_matches_open_clip(open_clip_tiny, fmt):
    """``open_clip:ARCH:FILE`` (ARCH: the registered name, or the config file) converts to our CLIP model with
    open_clip's tokenizer ids, preprocessing and normalised image / text embeddings."""
    from PIL import Image

    name, cfg_path, oc, d = open_clip_tiny
    ref = f"open_clip:{name}:{d / 'tiny.safetensors'}" if fmt == "safetensors" else \
        f"open_clip:{cfg_path}:{d / 'epoch_1.pt'}"
    model, preprocess, tokenizer = load_model_and_transforms(ref)
    assert isinstance(model, PretrainedCLIP) and model.spec["pretrained"] == ref
    assert model.clip.config.vision_config.hidden_act == ("quick_gelu" if "quickgelu" in name else "gelu")

    oc_ids = open_clip.get_tokenizer(name)(CAPTIONS)
    tb = tokenizer(CAPTIONS)
    for i, n in enumerate(tb.attention_mask.sum(dim=1).tolist()):
        assert tb.input_ids[i, :n].tolist() == oc_ids[i, :n].tolist() and not oc_ids[i, n:].any()

    _, _, oc_preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    g = torch.Generator().manual_seed(5)
    images = [Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())
              for h, w in ((40, 48), (64, 36))]
    px = torch.stack([preprocess(im) for im in images])
    oc_px = torch.stack([oc_preprocess(im) for im in images])
    _close(f"open_clip preprocess ({name}, {fmt})", px, oc_px)
    with torch.no_grad():
        _close(f"open_clip image ({name}, {fmt})", model.encode_image(oc_px).pooled,
               F.normalize(oc.encode_image(oc_px), dim=-1))
        _close(f"open_clip text ({name}, {fmt})", model.encode_text(tb.input_ids, tb.attention_mask).pooled,
               F.normalize(oc.encode_text(oc_ids), dim=-1))
    assert model.clip.logit_scale.item() == oc.logit_scale.item()


def test_open_clip_conversion_refuses_what_clipmodel_cannot_hold(open_clip_tiny, tmp_path):
    """An option without a CLIPModel counterpart, or a key the rules do not know, is a one-line CheckpointError."""
    name, cfg_path, oc, d = open_clip_tiny
    cfg = json.loads(cfg_path.read_text())
    cfg["vision_cfg"]["ls_init_value"] = 1e-5
    bad_cfg = tmp_path / "layer-scale.json"
    bad_cfg.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="ls_init_value"):
        load_model(f"open_clip:{bad_cfg}:{d / 'tiny.safetensors'}")
    state = dict(oc.state_dict())
    state["visual.extra_head.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"without a CLIPModel counterpart: \['visual.extra_head.weight'\]"):
        load_model(f"open_clip:{name}:{tmp_path / 'extra.pt'}")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(f"open_clip:{name}:{tmp_path / 'missing.pt'}")


def test_foreign_directory_says_what_is_accepted(tmp_path):
    """A Hugging Face folder of another model type is not mistaken for ours: one line naming what --model takes."""
    from transformers import BertConfig, BertModel

    d = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(str(d))
    with pytest.raises(CheckpointError, match=r"model_type 'bert'.*Hugging Face CLIPModel directory") as err:
        load_model(d)
    assert "\n" not in str(err.value)

