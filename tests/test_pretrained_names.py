"""Pretrained models by name (``open_clip:ARCH:TAG``, ``hf-hub:ORG/NAME``) without the network.

A temporary Hugging Face cache (the hub's own layout: ``models--ORG--NAME/{blobs,snapshots/<rev>,refs/main}``) is
filled with tiny random models; a tiny open_clip architecture gets a pretrained tag in open_clip's registry pointing
at it. Loading by name must give the same features as loading the same files directly, the offline error for an
empty cache is one line saying how to fetch, and hostile names are refused before any library sees them. Every test
runs with ``HF_HUB_OFFLINE=1`` and a socket whose ``connect`` raises."""
from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import open_clip  # noqa: F401  (a dev dependency: a missing open_clip fails the suite)
import pytest
import torch
import torch.nn.functional as F

from loupe_bench.cli.main import main
from loupe_bench.errors import LoupeBenchError, SpecError
from loupe_bench.models import load_model
from loupe_bench.models import pretrained_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REV = "0123456789abcdef0123456789abcdef01234567"
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TAG_MEAN, TAG_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Offline, an empty temporary HF cache, and no socket may connect: an attempt raises and is recorded, and the
    test fails on it even where library code caught the error."""
    attempts = []

    def refuse(sock, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(pretrained_names, "_RESOLVED", {})
    yield tmp_path / "hub"
    assert not attempts, f"network access attempted: {attempts}"


def _cache_repo(cache: Path, repo: str, files: dict) -> Path:
    """Put ``files`` (name -> source file) into the hub cache as the hub does: content in ``blobs/<sha256>``, a
    relative link in ``snapshots/<rev>/<name>``, ``refs/main`` holding the revision. Returns the snapshot folder."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / REV
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(REV)
    return snap


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _features(model, pixels, ids, mask):
    with torch.no_grad():
        img, txt = model.encode_image(pixels), model.encode_text(ids, mask)
    return img.pooled, img.tokens, txt.pooled, txt.tokens


def _inputs(vocab: int, size: int = 32):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, vocab - 2, (2, 12), generator=g)
    ids[:, 0], ids[0, 7], ids[1, 11] = vocab - 2, vocab - 1, vocab - 1
    mask = torch.zeros_like(ids)
    mask[0, :8], mask[1, :12] = 1, 1
    return torch.randn(2, 3, size, size, generator=g), ids, mask


def _one_line(capsys, argv, expected: int = 2) -> str:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == expected and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- open_clip:ARCH:TAG ----------------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_tag(monkeypatch, tmp_path):
    """A tiny open_clip architecture (GELU) registered with open_clip, with pretrained tags in open_clip's registry:
    ``tiny`` (safetensors in the cache, the tag's own mean / std) and ``tiny-quickgelu`` (the same architecture
    trained with QuickGELU, as OpenAI's tags are: pickled ``open_clip_pytorch_model.bin`` only)."""
    from safetensors.torch import save_file

    name = "loupe-test-named-tiny"
    cfg_path = tmp_path / f"{name}.json"
    cfg_path.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(cfg_path)
    models = {}
    for tag, quick in (("tiny", False), ("tiny_quickgelu", True)):
        torch.manual_seed(0)
        oc = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick)
        _perturb(oc, 4 + quick)
        models[tag] = oc.eval()
    state = {k: v.contiguous() for k, v in models["tiny"].state_dict().items()}
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    torch.save(models["tiny_quickgelu"].state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, name, {
        "tiny": {"url": "", "hf_hub": "loupe-test/tiny-open-clip/", "mean": TAG_MEAN, "std": TAG_STD},
        "tiny_quickgelu": {"url": "", "hf_hub": "loupe-test/tiny-open-clip-qg/", "quick_gelu": True},
    })
    return name, models, tmp_path


def _fill_tag_cache(cache: Path, d: Path) -> None:
    _cache_repo(cache, "loupe-test/tiny-open-clip", {"open_clip_model.safetensors": d / "open_clip_model.safetensors"})
    _cache_repo(cache, "loupe-test/tiny-open-clip-qg", {"open_clip_pytorch_model.bin":
                                                        d / "open_clip_pytorch_model.bin"})


@pytest.mark.parametrize("tag", ["tiny", "tiny_quickgelu"])
def test_open_clip_tag_resolves_from_the_cache(tiny_tag, no_network, tag):
    """``open_clip:ARCH:TAG`` finds the tag's file in the cache and gives the features of the same file loaded
    directly, and open_clip's own; the tag's mean / std and its QuickGELU flag are applied."""
    name, models, d = tiny_tag
    _fill_tag_cache(no_network, d)
    ref = f"open_clip:{name}:{tag}"
    model = load_model(ref)
    assert model.spec["pretrained"] == ref
    weights, _ = pretrained_names.tag_weights(name, tag)
    assert weights.is_relative_to(no_network) and "snapshots" in weights.parts
    arch = name
    if tag == "tiny_quickgelu":  # the tag's weights need QuickGELU: the direct route needs a quick_gelu config
        arch = d / "tiny-quickgelu.json"
        arch.write_text(json.dumps(dict(TINY_OPEN_CLIP, quick_gelu=True)))
        assert model.clip.config.vision_config.hidden_act == "quick_gelu"
    else:
        assert model.image_mean == TAG_MEAN and model.image_std == TAG_STD
    direct = load_model(f"open_clip:{arch}:{weights}")  # the same file through the file route
    px, ids, mask = _inputs(49408)
    for ours, same in zip(_features(model, px, ids, mask), _features(direct, px, ids, mask)):
        assert torch.equal(ours, same)
    oc = models[tag]  # open_clip pads with 0 and pools at the highest id (the end token)
    with torch.no_grad():
        assert (model.encode_image(px).pooled - F.normalize(oc.encode_image(px), dim=-1)).abs().max() < 1e-5
        assert (model.encode_text(ids, mask).pooled - F.normalize(oc.encode_text(F.pad(ids * mask, (0, 65))), dim=-1)
                ).abs().max() < 1e-5


def test_open_clip_tag_in_list_pretrained(tiny_tag, no_network, capsys):
    name, _, d = tiny_tag
    _cache_repo(no_network, "loupe-test/tiny-open-clip", {"open_clip_model.safetensors":
                                                          d / "open_clip_model.safetensors"})
    rows = pretrained_names.list_pretrained(name)
    assert rows == [(name, "tiny", "yes", "yes", "loupe-test/tiny-open-clip"),
                    (name, "tiny_quickgelu", "yes", "no", "loupe-test/tiny-open-clip-qg")]
    with pytest.raises(SystemExit) as info:
        main(["list", "pretrained", name])
    assert info.value.code == 0 and "tiny_quickgelu" in capsys.readouterr().out
    assert "no pretrained tags" in _one_line(capsys, ["list", "pretrained", "no-such-arch"])
    assert "ARCH applies" in _one_line(capsys, ["list", "models", name])


def test_open_clip_tag_offline_empty_cache_is_one_line(tiny_tag, capsys, tmp_path):
    name, _, _ = tiny_tag
    line = _one_line(capsys, ["eval", "--model", f"open_clip:{name}:tiny", "--task", "synthetic-retrieval",
                              "--data-root", _world_stub(tmp_path)])
    assert f"open_clip:{name}:tiny" in line and "not in the local cache" in line and "HF_HUB_OFFLINE" in line
    assert "loupe-test/tiny-open-clip" in line and "create_model_and_transforms" in line
    unknown = _one_line(capsys, ["eval", "--model", f"open_clip:{name}:laion9b", "--task", "synthetic-retrieval",
                                 "--data-root", _world_stub(tmp_path)])
    assert "unknown pretrained tag 'laion9b'" in unknown and "tiny, tiny_quickgelu" in unknown


def _world_stub(tmp_path: Path) -> Path:
    """A folder that passes the retrieval task's data check (the model fails before any data is read)."""
    d = tmp_path / "stub-world"
    d.mkdir(exist_ok=True)
    (d / "dataset_synthetic.json").write_text(json.dumps({"images": []}))
    return d


# -- hf-hub:ORG/NAME -------------------------------------------------------------------------------------------------
def _tiny_hf_folder(d: Path) -> Path:
    """A tiny random CLIPModel with open_clip's BPE tokenizer and its own image-processor settings, saved to ``d``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from loupe_bench.models.open_clip_convert import open_clip_bpe_tokenizer

    vocab = 49408
    conf = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=vocab - 2,
                         eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    hf = CLIPModel(conf)
    _perturb(hf, 1)
    hf.save_pretrained(str(d))
    open_clip_bpe_tokenizer(16).hf.save_pretrained(str(d))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=list(TAG_MEAN),
                       image_std=list(TAG_STD)).save_pretrained(str(d))
    return d


@pytest.fixture()
def hub_repo(tmp_path, no_network):
    """``loupe-test/tiny-clip`` in the temporary hub cache, and the same files as a plain folder."""
    direct = _tiny_hf_folder(tmp_path / "direct")
    files = {p.name: p for p in direct.iterdir() if p.is_file()}
    assert "model.safetensors" in files and "preprocessor_config.json" in files
    return _cache_repo(no_network, "loupe-test/tiny-clip", files), direct


def test_hf_hub_repository_resolves_from_the_cache(hub_repo):
    """``hf-hub:ORG/NAME`` loads the cached snapshot through the Hugging Face folder route: the same features,
    tokenizer and preprocessing as the folder itself."""
    snap, direct = hub_repo
    model = load_model("hf-hub:loupe-test/tiny-clip")
    same = load_model(direct)
    assert model.spec["pretrained"] == "hf-hub:loupe-test/tiny-clip"
    assert pretrained_names.hub_snapshot("hf-hub:loupe-test/tiny-clip") == snap
    px, ids, mask = _inputs(49408)
    for ours, ref_out in zip(_features(model, px, ids, mask), _features(same, px, ids, mask)):
        assert torch.equal(ours, ref_out)
    assert model.image_mean == TAG_MEAN and model.image_std == TAG_STD and model.image_size == 32
    captions = ["a red cube", "two green balls"]
    assert torch.equal(model.tokenizer(captions).input_ids, same.tokenizer(captions).input_ids)


def test_hf_hub_eval_with_name(hub_repo, tiny_world, tmp_path, capsys):
    """``eval --model hf-hub:ORG/NAME --name LABEL`` runs from the cache and records the label as the model name."""
    import yaml

    from loupe_bench.specs import load_yaml, spec_files

    task = next(t for t in map(load_yaml, spec_files("tasks")) if t.get("name") == "synthetic-retrieval")
    task.update(splits=["test"], bootstrap={"n_resamples": 20, "seed": 0})
    spec_path = tmp_path / "ret.yaml"
    spec_path.write_text(yaml.safe_dump(task))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["eval", "--model", "hf-hub:loupe-test/tiny-clip", "--name", "tiny CLIP (hub)", "--task",
              str(spec_path), "--data-root", str(tiny_world), "--out", str(out)])
    assert info.value.code == 0, capsys.readouterr().err
    record = json.loads((out / "tiny-CLIP-hub__synthetic-retrieval__test.json").read_text())
    assert record["model"]["name"] == "tiny CLIP (hub)" and record["model"]["source"] == "hf-hub:loupe-test/tiny-clip"
    assert record["model"]["checkpoint_sha256"] == hashlib.sha256(
        (hub_repo[1] / "model.safetensors").read_bytes()).hexdigest()


def test_hf_hub_offline_empty_cache_is_one_line(capsys, tmp_path):
    line = _one_line(capsys, ["eval", "--model", "hf-hub:loupe-test/not-cached", "--task", "synthetic-retrieval",
                              "--data-root", _world_stub(tmp_path)])
    assert "hf-hub:loupe-test/not-cached: not in the Hugging Face cache" in line and "HF_HUB_OFFLINE" in line
    assert "hf download loupe-test/not-cached" in line


def test_hf_hub_refuses_a_repository_that_is_not_clip(no_network, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "siglip", "architectures": ["SiglipModel"]}))
    _cache_repo(no_network, "loupe-test/siglip", {"config.json": cfg})
    with pytest.raises(LoupeBenchError, match="not a CLIPModel repository") as info:
        load_model("hf-hub:loupe-test/siglip")
    assert "\n" not in str(info.value)


# -- hostile names, --name -------------------------------------------------------------------------------------------
HOSTILE = ["hf-hub:../../etc", "hf-hub:https://x/y", "hf-hub:/etc/passwd", "hf-hub:a/b/c", "hf-hub:org/..",
           "hf-hub:org/na..me", "hf-hub:", "hf-hub:org/name\n", "open_clip:ViT-B-32:../../x",
           "open_clip:ViT-B-32:/etc/passwd-x", "open_clip:../../x:openai", "open_clip:ViT-B-32:a b"]


@pytest.mark.parametrize("ref", HOSTILE)
def test_hostile_names_refused_before_any_library_call(ref, monkeypatch):
    import huggingface_hub

    def called(*args, **kwargs):
        raise AssertionError(f"a library was called for {ref!r}")

    for module, attr in ((huggingface_hub, "snapshot_download"), (huggingface_hub, "try_to_load_from_cache"),
                         (huggingface_hub, "hf_hub_download"), (open_clip.pretrained, "get_pretrained_cfg"),
                         (open_clip.pretrained, "download_pretrained"), (open_clip, "get_model_config")):
        monkeypatch.setattr(module, attr, called)
    with pytest.raises(LoupeBenchError) as info:
        load_model(ref)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_model_name_is_checked(capsys, tmp_path):
    from loupe_bench.tasks.evaluate import check_model_name

    assert check_model_name("CLIP ViT-B/32 (LAION-2B)") == "CLIP ViT-B/32 (LAION-2B)"
    for bad in ("", "   ", "two\nlines", "red\x1b[31m", "rtl\u202eoverride", "x" * 121, " padded"):
        with pytest.raises(SpecError, match="a name is one line"):
            check_model_name(bad)
    line = _one_line(capsys, ["eval", "--model", "clip-tiny", "--name", "a\tb", "--task", "synthetic-retrieval",
                              "--data-root", _world_stub(tmp_path)])
    assert "non-printable character" in line
    assert "one --name per --model" in _one_line(capsys, ["eval", "--model", "clip-tiny", "--model", "filip-tiny",
                                                          "--name", "a", "--task", "synthetic-retrieval"])


def test_online_routes_use_the_libraries_download_with_the_cache(hub_repo, tiny_tag, no_network, monkeypatch):
    """Without HF_HUB_OFFLINE the names go through the libraries' own download functions (stubbed here: they return
    what they would have cached) with the cache folder; a repository is fetched without its pickled weights."""
    import huggingface_hub

    snap, _ = hub_repo
    name, _, d = tiny_tag
    _fill_tag_cache(no_network, d)
    calls = []

    def snapshot_download(repo, **kwargs):
        calls.append(("snapshot", repo, kwargs["cache_dir"], kwargs["local_files_only"], kwargs["allow_patterns"]))
        return str(snap)

    def download_pretrained(cfg, cache_dir=None, **kwargs):
        calls.append(("open_clip", cfg["hf_hub"], cache_dir))
        return str(no_network / "models--loupe-test--tiny-open-clip" / "snapshots" / REV /
                   "open_clip_model.safetensors")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", download_pretrained)
    assert pretrained_names.hub_snapshot("hf-hub:loupe-test/tiny-clip") == snap
    assert pretrained_names.tag_weights(name, "tiny")[0].name == "open_clip_model.safetensors"
    (_, repo, cache, local_only, patterns), oc_call = calls
    assert (repo, cache, local_only) == ("loupe-test/tiny-clip", str(no_network), False)
    assert "model.safetensors" in patterns and "config.json" in patterns and "pytorch_model.bin" not in patterns
    assert oc_call == ("open_clip", "loupe-test/tiny-open-clip/", str(no_network))
