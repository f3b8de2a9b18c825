"""Convert a local open_clip checkpoint (architecture name + ``.pt`` / ``.safetensors`` state dict) into the
transformers ``CLIPModel`` that :class:`~loupe_bench.models.pretrained_clip.PretrainedCLIP` wraps.

Reference syntax (``--model`` on the CLI, ``load_model`` in Python, ``pretrained:`` in a ``clip-pretrained`` spec)::

    open_clip:<ARCH>:<CHECKPOINT>

``ARCH`` is an open_clip architecture name (``ViT-B-32``, ``ViT-B-16-quickgelu``, or one registered with
``open_clip.add_model_config``; needs ``pip install 'loupe-bench[openclip]'``) or the path of an open_clip model-config
JSON file (``{"embed_dim": ..., "vision_cfg": {...}, "text_cfg": {...}}``, ``model_cfg`` of an
``open_clip_config.json`` also accepted; no open_clip install needed). ``CHECKPOINT`` is a ``.safetensors`` file or a
``torch.save`` file read with ``weights_only=True`` (a training checkpoint's ``state_dict`` is unwrapped, DDP's
``module.`` prefix dropped).

Only the standard open_clip ViT CLIP is convertible (the layout of OpenAI CLIP, which ``CLIPModel`` implements); any
option without a ``CLIPModel`` equivalent (layer scale, attentional pooling, custom attention blocks, timm or HF
towers, ResNet towers, a text projection bias, SigLIP's logit bias ...) is a :class:`CheckpointError` naming it.

The tokenizer is open_clip's ``SimpleTokenizer`` vocabulary (the OpenAI CLIP BPE, ``bpe_simple_vocab_16e6.txt.gz``,
shipped inside the open_clip package, so no download) rebuilt as a fast transformers ``CLIPTokenizer``
(see :func:`open_clip_bpe_tokenizer`).
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from torch import Tensor

from ..errors import CheckpointError, SpecError
from .hf_folder import channel_values
from .untrusted import (check_heads, check_params, check_patch_grid, ratio_field, read_config_json, size_field,
                        tower_params)

PREFIX = "open_clip:"

#: open_clip's default preprocessing constants (OpenAI CLIP's), used when the config has no ``preprocess_cfg``
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

#: the OpenAI CLIP BPE vocabulary: 256 byte symbols, the same with ``</w>``, 48 894 merges, start and end tokens
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BPE_VOCAB_SIZE = 49408
N_MERGES = 49152 - 256 - 2


def is_open_clip_ref(text: str) -> bool:
    return str(text).startswith(PREFIX)


def parse_ref(text: str) -> Tuple[str, Path]:
    """``open_clip:ARCH:PATH`` -> ``(ARCH, PATH)``; anything else is a :class:`SpecError` showing the syntax."""
    parts = str(text)[len(PREFIX):].split(":", 1)
    if not str(text).startswith(PREFIX) or len(parts) != 2 or not parts[0] or not parts[1]:
        raise SpecError(f"open_clip model {text!r}: expected open_clip:<ARCH>:<path to .pt or .safetensors>")
    return parts[0], Path(parts[1]).expanduser()


def _import_open_clip(what: str):
    try:
        import open_clip
    except ImportError:
        raise CheckpointError(
            f"{what} needs open_clip: pip install 'loupe-bench[openclip]' (or give the architecture as an open_clip "
            "model-config JSON file)"
        ) from None
    return open_clip


def architecture_config(arch: str) -> Dict[str, Any]:
    """The open_clip model config of ``arch``: a JSON file path (read within
    :data:`~loupe_bench.utils.bounded.LIMITS` ``["config"]``), else open_clip's registry of architectures."""
    path = Path(arch).expanduser()
    if path.suffix == ".json":
        cfg: Any = read_config_json(path)
        cfg = cfg.get("model_cfg", cfg)
    else:
        open_clip = _import_open_clip(f"open_clip architecture {arch!r}")
        cfg = open_clip.get_model_config(arch)
        if cfg is None:
            known = ", ".join(sorted(open_clip.list_models())[:12])
            raise SpecError(f"unknown open_clip architecture {arch!r} (known include: {known}, ...)")
    if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "text_cfg" not in cfg:
        raise CheckpointError(f"open_clip architecture {arch!r}: config lacks vision_cfg / text_cfg")
    for key in ("vision_cfg", "text_cfg"):
        if not isinstance(cfg[key], dict):
            raise CheckpointError(f"open_clip architecture {arch!r}: {key} must be an object, got "
                                  f"{type(cfg[key]).__name__}")
    return cfg


# -- architecture ---------------------------------------------------------------------------------------------------
#: config options of open_clip's ViT CLIP that ``CLIPModel`` has no counterpart for, with their neutral values
_UNSUPPORTED_VISION = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "act_kwargs": None,
                       "norm_kwargs": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
                       "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "timm_model_name": None,
                       "hf_model_name": None, "pool_type": "tok"}
_UNSUPPORTED_TEXT = {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "proj_bias": False,
                     "proj_type": "linear", "act_kwargs": None, "norm_kwargs": None, "qk_norm": False,
                     "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
                     "scale_fc": False, "hf_model_name": None, "hf_tokenizer_name": None, "tokenizer_mode": None}
_UNSUPPORTED_TOP = {"init_logit_bias": None, "multimodal_cfg": None}


def _check_supported(arch: str, cfg: Mapping[str, Any]) -> None:
    groups = (("", cfg, _UNSUPPORTED_TOP), ("vision_cfg.", cfg["vision_cfg"], _UNSUPPORTED_VISION),
              ("text_cfg.", cfg["text_cfg"], _UNSUPPORTED_TEXT))
    for where, section, neutral in groups:
        for key, value in neutral.items():
            if section.get(key) not in (value, None):
                raise CheckpointError(f"open_clip architecture {arch!r}: {where}{key}={section[key]!r} has no "
                                      "transformers CLIPModel equivalent (only the standard ViT CLIP converts)")
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    if v.get("block_type") not in (None, "default") or t.get("block_type") not in (None, "default"):
        raise CheckpointError(f"open_clip architecture {arch!r}: custom attention blocks do not convert")
    if isinstance(v.get("layers", 12), (list, tuple)):
        raise CheckpointError(f"open_clip architecture {arch!r}: ResNet image towers do not convert (ViT only)")
    for key in ("image_size", "patch_size"):
        val = v.get(key)
        if isinstance(val, (list, tuple)) and len(set(val)) != 1:
            raise CheckpointError(f"open_clip architecture {arch!r}: non-square vision_cfg.{key}={val} does not "
                                  "convert")
    if t.get("pool_type", "argmax") not in ("argmax", "eos"):
        raise CheckpointError(f"open_clip architecture {arch!r}: text_cfg.pool_type={t['pool_type']!r} does not "
                              "convert (argmax or eos)")


def _square_field(where: str, section: Mapping[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, (list, tuple)):
        value = value[0]
    return size_field(where, {key: value}, key, default)


def architecture_sizes(arch: str, cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The size fields of an open_clip ViT CLIP config with open_clip's defaults, each within its range
    (:data:`~loupe_bench.models.untrusted.SIZE_RANGES`), and the estimated parameter count within
    :data:`~loupe_bench.models.untrusted.MAX_PARAMS` (checked before any model is built)."""
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    vw, tw = f"open_clip architecture {arch!r}: vision_cfg", f"open_clip architecture {arch!r}: text_cfg"
    if cfg.get("embed_dim") is None:
        raise CheckpointError(f"open_clip architecture {arch!r}: embed_dim is missing")
    s: Dict[str, Any] = {"embed_dim": size_field(f"open_clip architecture {arch!r}", cfg, "embed_dim", 0),
                         "v_width": size_field(vw, v, "width", 768), "v_layers": size_field(vw, v, "layers", 12),
                         "head_width": size_field(vw, v, "head_width", 64),
                         "v_mlp": ratio_field(vw, v, "mlp_ratio", 4.0),
                         "image_size": _square_field(vw, v, "image_size", 224),
                         "patch_size": _square_field(vw, v, "patch_size", 16),
                         "t_width": size_field(tw, t, "width", 512), "heads": size_field(tw, t, "heads", 8),
                         "t_layers": size_field(tw, t, "layers", 12), "t_mlp": ratio_field(tw, t, "mlp_ratio", 4.0),
                         "vocab_size": size_field(tw, t, "vocab_size", 49408),
                         "context_length": size_field(tw, t, "context_length", 77)}
    check_heads(tw, s["t_width"], s["heads"])
    if s["v_width"] % s["head_width"]:
        raise CheckpointError(f"{vw}: width {s['v_width']} is not a multiple of head_width {s['head_width']}")
    patches = check_patch_grid(vw, s["image_size"], s["patch_size"])
    s["v_inter"], s["t_inter"] = int(s["v_width"] * s["v_mlp"]), int(s["t_width"] * s["t_mlp"])
    if min(s["v_inter"], s["t_inter"]) < 1:
        raise CheckpointError(f"open_clip architecture {arch!r}: mlp_ratio gives an empty MLP")
    params = tower_params(s["v_width"], s["v_layers"], s["v_inter"], patches + 1, 3 * s["patch_size"] ** 2) + \
        tower_params(s["t_width"], s["t_layers"], s["t_inter"], s["context_length"], s["vocab_size"]) + \
        s["embed_dim"] * (s["v_width"] + s["t_width"])
    check_params(f"open_clip architecture {arch!r}", params)
    s["eos"] = _eos_id(tw, t, s["vocab_size"])
    return s


def _eos_id(where: str, t: Mapping[str, Any], vocab: int) -> int:
    if t.get("pool_type", "argmax") != "eos":
        return vocab - 1
    eos = t.get("eos_id", 2)
    if not isinstance(eos, int) or isinstance(eos, bool) or not 0 <= eos < vocab:
        raise CheckpointError(f"{where}: eos_id must be an integer in [0, {vocab - 1}], got {eos!r}")
    return eos


def hf_clip_config(arch: str, cfg: Mapping[str, Any]):
    """The transformers ``CLIPConfig`` of an open_clip ViT CLIP config.

    Rules:

    * sizes: ``projection_dim = embed_dim``; vision ``hidden_size = width``, ``num_hidden_layers = layers``,
      ``num_attention_heads = width // head_width`` (default ``head_width`` 64), ``intermediate_size =
      int(width * mlp_ratio)`` (default 4), ``image_size``, ``patch_size``; text ``hidden_size = width``,
      ``num_attention_heads = heads``, ``num_hidden_layers = layers``, ``intermediate_size = int(width * mlp_ratio)``,
      ``vocab_size``, ``max_position_embeddings = context_length``.
    * activation: ``quick_gelu: true`` (open_clip's ``QuickGELU``, ``x * sigmoid(1.702 x)``, the OpenAI weights and
      the ``-quickgelu`` architectures) -> ``hidden_act = "quick_gelu"``; otherwise open_clip uses ``nn.GELU`` (exact
      erf form) -> ``hidden_act = "gelu"`` (transformers' exact GELU). Both towers use the same activation.
    * norms: open_clip's LayerNorms use eps 1e-5 -> ``layer_norm_eps = 1e-5``; ``ln_pre`` is ``pre_layrnorm``.
    * text pooling: open_clip's ``argmax`` pooling takes the state at the highest token id (the end token, the last id
      of the vocabulary) and ``eos`` pooling the first ``eos_id``; ``CLIPTextTransformer`` takes the first position of
      ``eos_token_id``. So ``eos_token_id = vocab_size - 1`` for ``argmax`` (``eos_id`` for ``eos``) and
      ``bos_token_id = vocab_size - 2``: identical whenever the text holds an end token, which open_clip's tokenizer
      always writes (also when it truncates).
    """
    from transformers import CLIPConfig

    _check_supported(arch, cfg)
    s = architecture_sizes(arch, cfg)
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    vocab = s["vocab_size"]
    vision = dict(hidden_size=s["v_width"], num_hidden_layers=s["v_layers"],
                  num_attention_heads=s["v_width"] // s["head_width"], intermediate_size=s["v_inter"],
                  image_size=s["image_size"], patch_size=s["patch_size"], hidden_act=act, layer_norm_eps=1e-5,
                  num_channels=3)
    text = dict(vocab_size=vocab, hidden_size=s["t_width"], num_hidden_layers=s["t_layers"],
                num_attention_heads=s["heads"], intermediate_size=s["t_inter"],
                max_position_embeddings=s["context_length"], hidden_act=act, layer_norm_eps=1e-5,
                eos_token_id=s["eos"], bos_token_id=max(vocab - 2, 0), pad_token_id=vocab - 1)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=s["embed_dim"])


# -- weights --------------------------------------------------------------------------------------------------------
Rule = Tuple["re.Pattern[str]", Callable[["re.Match[str]", Tensor], Dict[str, Tensor]]]


def _to(name: str) -> Callable[["re.Match[str]", Tensor], Dict[str, Tensor]]:
    return lambda m, t: {m.expand(name): t}


def _transposed(name: str) -> Callable[["re.Match[str]", Tensor], Dict[str, Tensor]]:
    return lambda m, t: {name: t.t().contiguous()}


def _split_qkv(target: str) -> Callable[["re.Match[str]", Tensor], Dict[str, Tensor]]:
    def fn(m: "re.Match[str]", t: Tensor) -> Dict[str, Tensor]:
        base, kind = f"{target}.encoder.layers.{m.group('i')}.self_attn", m.group("kind")
        q, k, v = t.chunk(3, dim=0)
        return {f"{base}.q_proj.{kind}": q.contiguous(), f"{base}.k_proj.{kind}": k.contiguous(),
                f"{base}.v_proj.{kind}": v.contiguous()}

    return fn


def _scalar(m: "re.Match[str]", t: Tensor) -> Dict[str, Tensor]:
    return {"logit_scale": t.reshape(())}


_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def _rules() -> List[Rule]:
    rules: List[Rule] = [
        (re.compile(r"visual\.class_embedding"), _to("vision_model.embeddings.class_embedding")),
        (re.compile(r"visual\.positional_embedding"), _to("vision_model.embeddings.position_embedding.weight")),
        (re.compile(r"visual\.conv1\.weight"), _to("vision_model.embeddings.patch_embedding.weight")),
        (re.compile(r"visual\.ln_pre\.(weight|bias)"), _to(r"vision_model.pre_layrnorm.\1")),
        (re.compile(r"visual\.ln_post\.(weight|bias)"), _to(r"vision_model.post_layernorm.\1")),
        (re.compile(r"visual\.proj"), _transposed("visual_projection.weight")),
        (re.compile(r"token_embedding\.weight"), _to("text_model.embeddings.token_embedding.weight")),
        (re.compile(r"positional_embedding"), _to("text_model.embeddings.position_embedding.weight")),
        (re.compile(r"ln_final\.(weight|bias)"), _to(r"text_model.final_layer_norm.\1")),
        (re.compile(r"text_projection"), _transposed("text_projection.weight")),
        (re.compile(r"logit_scale"), _scalar),
    ]
    for tower, target in (("visual.", "vision_model"), ("", "text_model")):
        pre = re.escape(tower) + r"transformer\.resblocks\.(?P<i>\d+)\."
        rules.append((re.compile(pre + r"attn\.in_proj_(?P<kind>weight|bias)"), _split_qkv(target)))
        for src, dst in _BLOCK.items():
            rules.append((re.compile(pre + re.escape(src) + r"\.(?P<p>weight|bias)"),
                          _to(rf"{target}.encoder.layers.\g<i>.{dst}.\g<p>")))
    return rules


#: keys of open_clip state dicts that carry no weights (the causal mask buffer of old checkpoints)
_IGNORED = re.compile(r"(visual\.)?attn_mask")


def convert_state_dict(state: Mapping[str, Tensor], source: str) -> Dict[str, Tensor]:
    """Rename an open_clip ViT CLIP state dict to ``CLIPModel`` names.

    Rules (open_clip name -> transformers name):

    * prefixes: DDP's ``module.`` is dropped; a ``CustomTextCLIP``'s ``text.`` tower prefix is dropped (its text
      tower holds the same names as the built-in one).
    * embeddings: ``visual.conv1.weight`` -> ``vision_model.embeddings.patch_embedding.weight`` (both bias-free);
      ``visual.class_embedding`` -> ``...embeddings.class_embedding``; ``visual.positional_embedding`` ``[N+1, W]``
      and ``positional_embedding`` ``[L, W]`` -> the ``position_embedding.weight`` tables;
      ``token_embedding.weight`` -> ``text_model.embeddings.token_embedding.weight``.
    * pre/post norms: ``visual.ln_pre`` -> ``vision_model.pre_layrnorm`` (sic); ``visual.ln_post`` ->
      ``vision_model.post_layernorm`` (open_clip normalises then takes ``[CLS]``, transformers takes ``[CLS]`` then
      normalises: the same for a per-token LayerNorm); ``ln_final`` -> ``text_model.final_layer_norm``.
    * blocks ``transformer.resblocks.<i>`` -> ``encoder.layers.<i>``: ``ln_1``/``ln_2`` -> ``layer_norm1``/
      ``layer_norm2``; ``attn.in_proj_weight`` ``[3W, W]`` (and ``in_proj_bias``) is split in order into
      ``self_attn.q_proj``, ``k_proj``, ``v_proj``; ``attn.out_proj`` -> ``self_attn.out_proj``; ``mlp.c_fc`` /
      ``mlp.c_proj`` -> ``mlp.fc1`` / ``mlp.fc2``. Attention scaling is ``head_dim ** -0.5`` on both sides.
    * projections: open_clip multiplies ``x @ proj`` with ``proj`` ``[W, D]``; ``nn.Linear`` computes ``x @ Wᵀ``, so
      ``visual_projection.weight = visual.projᵀ`` and ``text_projection.weight = text_projectionᵀ``.
    * logit scale: ``logit_scale`` is the log of the scale in both (``s = exp(logit_scale)``); a non-scalar ``[1]``
      one is reshaped to a scalar. SigLIP's ``logit_bias`` has no counterpart (refused by the architecture check).
    * ignored: the non-persistent ``attn_mask`` causal-mask buffer some old checkpoints saved.

    Any other key is a :class:`CheckpointError` (nothing is dropped silently).
    """
    rules = _rules()
    out: Dict[str, Tensor] = {}
    unknown: List[str] = []
    for key, tensor in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        name = name[len("text."):] if name.startswith("text.") else name
        if _IGNORED.fullmatch(name):
            continue
        for pattern, fn in rules:
            m = pattern.fullmatch(name)
            if m:
                out.update(_apply(fn, m, tensor, key, source))
                break
        else:
            unknown.append(key)
    if unknown:
        more = f" (+{len(unknown) - 6} more)" if len(unknown) > 6 else ""
        raise CheckpointError(f"{source}: open_clip keys without a CLIPModel counterpart: {unknown[:6]}{more}")
    return out


def _apply(fn: Callable[["re.Match[str]", Tensor], Dict[str, Tensor]], m: "re.Match[str]", tensor: Tensor, key: str,
           source: str) -> Dict[str, Tensor]:
    """One renaming rule on one tensor; a tensor whose shape the rule cannot take is a :class:`CheckpointError`."""
    try:
        return fn(m, tensor)
    except (RuntimeError, IndexError, ValueError) as exc:
        raise CheckpointError(f"{source}: {key} of shape {tuple(tensor.shape)} does not convert "
                              f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


# -- tokenizer ------------------------------------------------------------------------------------------------------
def _byte_symbols() -> List[str]:
    """The 256 printable stand-ins of the byte-level BPE: printable Latin-1 bytes map to themselves, the others to
    ``chr(256 + n)`` in byte order (the GPT-2 / CLIP convention)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes = {b: b for b in keep}
    n = 0
    for b in range(256):
        if b not in codes:
            codes[b] = 256 + n
            n += 1
    order = keep + [b for b in range(256) if b not in keep]
    return [chr(codes[b]) for b in order]


def open_clip_bpe_tokenizer(context_length: int = 77, bpe_path: Optional[Path] = None):
    """open_clip's ``SimpleTokenizer`` vocabulary as a fast transformers ``CLIPTokenizer`` (with character offsets).

    Vocabulary (ids in this order, as open_clip builds it): the 256 byte symbols, the same with ``</w>``, the joined
    pairs of the first 48 894 merges of ``bpe_simple_vocab_16e6.txt.gz``, then start (49406) and end (49407) tokens.
    Text is lower-cased and whitespace-collapsed on both sides; open_clip additionally runs ``ftfy.fix_text`` and HTML
    unescaping (only broken-encoding or HTML-escaped text tokenises differently). Padding differs on purpose:
    open_clip pads with id 0, this tokenizer with the end token and an attention mask; the pooled text embedding is
    read at the first end token under a causal mask, so padding never changes it.
    """
    from transformers import CLIPTokenizer

    from .tokenizer import Tokenizer

    if bpe_path is None:
        open_clip = _import_open_clip("the open_clip tokenizer")
        bpe_path = Path(open_clip.__file__).resolve().parent / BPE_FILE
    lines = gzip.open(str(bpe_path)).read().decode("utf-8").split("\n")[1:N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + \
        ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    hf = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=int(context_length))
    return Tokenizer(hf, int(context_length))


# -- the whole conversion -------------------------------------------------------------------------------------------
def _mean_std(arch: str, cfg: Mapping[str, Any]) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """``preprocess_cfg``'s ``mean`` / ``std`` (a number or 1 or 3 numbers; std positive), else OpenAI's."""
    pre = cfg.get("preprocess_cfg") or {}
    where = f"open_clip architecture {arch!r}: preprocess_cfg"
    if not isinstance(pre, dict):
        raise CheckpointError(f"{where} must be an object, got {type(pre).__name__}")
    return (channel_values(where, pre, "mean", OPENAI_MEAN, positive=False),
            channel_values(where, pre, "std", OPENAI_STD, positive=True))


def with_tag_cfg(cfg: Dict[str, Any], tag_cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """An architecture config with what open_clip's pretrained cfg of a tag says about its weights: the tag's
    ``quick_gelu: true`` (weights trained with QuickGELU) turns QuickGELU on, and the tag's ``mean`` / ``std``
    replace the architecture's ``preprocess_cfg`` ones (open_clip merges the tag's preprocessing the same way)."""
    if not tag_cfg:
        return cfg
    cfg = dict(cfg)
    if tag_cfg.get("quick_gelu"):
        cfg["quick_gelu"] = True
    pre = cfg.get("preprocess_cfg") or {}
    if isinstance(pre, dict):
        cfg["preprocess_cfg"] = {**pre, **{k: tag_cfg[k] for k in ("mean", "std") if tag_cfg.get(k) is not None}}
    return cfg


def load_open_clip(ref: str, weights: Optional[Path] = None, tag_cfg: Optional[Mapping[str, Any]] = None):
    """``open_clip:ARCH:PATH`` -> ``(clip_model, tokenizer_or_reason, image_size, mean, std)``.

    ``weights`` / ``tag_cfg``: for ``open_clip:ARCH:TAG``, the weights file the tag resolved to and open_clip's
    pretrained cfg of the tag (:func:`with_tag_cfg`; see :mod:`~loupe_bench.models.pretrained_names`).

    The model is a transformers ``CLIPModel`` with the converted weights loaded strictly (every key must match).
    The tokenizer is :func:`open_clip_bpe_tokenizer` when the text vocabulary is the BPE's 49 408 ids (any other
    size gets a string saying why there is none). Preprocessing: the config's ``preprocess_cfg`` mean / std, else
    open_clip's OpenAI constants; resize the short side and centre-crop to ``image_size`` (open_clip's eval default).
    """
    from transformers import CLIPModel

    from .towers import load_state_file, load_strict

    arch, path = parse_ref(ref)
    path = path if weights is None else Path(weights)
    cfg = with_tag_cfg(architecture_config(arch), tag_cfg)
    conf = hf_clip_config(arch, cfg)
    state = convert_state_dict(load_state_file(path), str(path))
    model = CLIPModel(conf)
    load_strict(model, state, f"open_clip {arch} ({path})")
    model.eval()
    mean, std = _mean_std(arch, cfg)
    vocab = int(conf.text_config.vocab_size)
    if vocab == BPE_VOCAB_SIZE:
        tokenizer: Any = open_clip_bpe_tokenizer(int(conf.text_config.max_position_embeddings))
    else:
        tokenizer = (f"open_clip {arch}: text vocabulary of {vocab} ids is not the {BPE_VOCAB_SIZE}-id BPE of "
                     "open_clip's SimpleTokenizer; feed token ids to encode_text directly")
    return model, tokenizer, int(conf.vision_config.image_size), mean, std
