"""``clip-pretrained``: transformers' ``CLIPModel`` (e.g. ``openai/clip-vit-base-patch32``) behind the VLModel interface.

The spec's ``pretrained`` names where the weights come from, found through :data:`CLIP_WEIGHT_SOURCES` by its scheme:

* ``open_clip:<ARCH>:<checkpoint>``: a local open_clip checkpoint, converted by
  :mod:`loupe_bench.models.open_clip_convert`;
* anything else (``hf``): a local Hugging Face ``CLIPModel`` directory (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``) or a hub id, from the HF cache (offline) or the hub (online). Weights are read by
  transformers with ``weights_only=True`` (safetensors preferred); remote code is never run.

Weights, tokenizer and preprocessing constants come from that source. Pooled features are the model's own projected
embeddings; token features are the post-layer-norm patch states (image ``[CLS]`` dropped) and the final-layer-norm
text states, passed through the same projections, so token-level tasks (patch maps, region scoring) also work.
"""
from __future__ import annotations

import contextlib
import copy
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CheckpointError, SpecError
from ..registry import Registry
from ..utils.run_files import CONFIG_FILE, TOKENIZER_DIR
from ._registry import MODEL_CLASSES
from .base import ImageFeatures, LossOutput, TextFeatures, VLModel
from .dual_encoder import spec_get
from .hf_folder import (PREPROCESSOR_FILE, PROCESSOR_FILE, check_hf_config, read_preprocessing,
                        vision_image_size)
from .losses import clip_infonce
from .spec_check import validate_spec
from .tokenizer import Tokenizer, UnavailableTokenizer
from .towers import hub_offline
from .untrusted import check_safetensors, check_safetensors_index, regular_files_of, torch_refusal

CLIP_CONFIG_DIR = "clip_config"
#: files of which at least one marks a saved Hugging Face tokenizer in a model directory
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
#: files of a Hugging Face model folder that loading it may read: each must be a regular file when present
HF_FOLDER_FILES = ("config.json", PREPROCESSOR_FILE, PROCESSOR_FILE, *HF_TOKENIZER_FILES, "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "generation_config.json", "chat_template.jinja",
                   "chat_template.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")

#: scheme of a ``pretrained`` reference (``open_clip:...``) -> loader ``ref -> PretrainedParts``; no scheme: ``hf``
CLIP_WEIGHT_SOURCES = Registry("pretrained CLIP source")


class PretrainedParts(NamedTuple):
    """What a weight source gives: the ``CLIPModel``, its tokenizer (or a one-line reason there is none) and the
    eval preprocessing (square ``image_size``, per-channel ``mean`` / ``std``)."""

    clip: Any
    tokenizer: Union[Tokenizer, str]
    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


def _resolve(src: str) -> Tuple[str, bool]:
    path = Path(src).expanduser()
    if path.is_dir():
        return str(path), True
    return src, False


def _hub_settings_folder(src: str, offline: bool) -> Optional[Path]:
    """The cache folder holding a hub model's processor settings file, or ``None`` when it has none."""
    from transformers.utils import cached_file

    for name in (PREPROCESSOR_FILE, PROCESSOR_FILE):
        try:
            found = cached_file(src, name, local_files_only=offline, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except OSError:
            found = None
        if found:
            return Path(found).parent
    return None


def check_hf_folder(folder: Path) -> Dict[str, Any]:
    """A local Hugging Face CLIP folder, before transformers reads it: the files it may read are regular files
    (:data:`HF_FOLDER_FILES`), ``config.json`` is within the architecture limits
    (:func:`~loupe_bench.models.hf_folder.check_hf_config`) and safetensors weights have headers that fit their
    files. Returns the config."""
    regular_files_of(folder, HF_FOLDER_FILES)
    config = check_hf_config(folder / "config.json")
    if os.path.lexists(folder / "model.safetensors"):
        check_safetensors(folder / "model.safetensors")
    elif os.path.lexists(folder / "model.safetensors.index.json"):
        check_safetensors_index(folder / "model.safetensors.index.json")
    return config


def _from_pretrained(src: str, offline: bool, local: bool) -> Any:
    """transformers' ``CLIPModel.from_pretrained`` (``weights_only=True``); whatever it raises on the folder's
    files is one :class:`CheckpointError` line naming the folder (or its pickled weights file)."""
    from transformers import CLIPModel

    with warnings.catch_warnings(), _no_progress_bar():
        warnings.simplefilter("ignore")
        try:
            return CLIPModel.from_pretrained(src, local_files_only=offline, weights_only=True)
        except OSError as exc:
            if not local:
                raise CheckpointError(f"pretrained CLIP {src!r}: not found locally or in the HF cache "
                                      f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
            raise CheckpointError(f"{src}: {torch_refusal(exc)}") from None
        except Exception as exc:  # transformers / torch on a user's files: any failure is the folder's fault
            pickled = Path(src) / "pytorch_model.bin"
            only_pickle = local and pickled.is_file() and not (Path(src) / "model.safetensors").exists()
            raise CheckpointError(f"{pickled if only_pickle else src}: {torch_refusal(exc)}") from None


@contextlib.contextmanager
def _no_progress_bar():
    """transformers' weight-loading progress bar off for the block (stderr holds only what the CLI says)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _hf_tokenizer(src: str, local: bool, offline: bool, max_length: int) -> Union[Tokenizer, str]:
    """The tokenizer saved with the model, or (a local folder without tokenizer files) the reason there is none."""
    from transformers import AutoTokenizer

    if local and not any((Path(src) / f).is_file() for f in HF_TOKENIZER_FILES):
        return (f"{src}: Hugging Face CLIP directory without tokenizer files ({', '.join(HF_TOKENIZER_FILES)}); "
                "save the tokenizer there (tokenizer.save_pretrained) or feed token ids to encode_text")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = AutoTokenizer.from_pretrained(src, local_files_only=offline, use_fast=True)
    except Exception as exc:  # malformed or partial tokenizer files: the folder's fault
        raise CheckpointError(f"pretrained CLIP {src!r}: cannot load its tokenizer ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'})") from None
    return Tokenizer(hf, max_length)


@CLIP_WEIGHT_SOURCES.register("hf", help="Hugging Face CLIPModel directory or hub id")
def load_hf_clip(src: str) -> PretrainedParts:
    """A transformers ``CLIPModel`` from a local directory or a hub id (HF cache when offline).

    A local folder is checked first (:func:`check_hf_folder`). The tokenizer is the one saved beside the weights; a
    local directory without tokenizer files (:data:`HF_TOKENIZER_FILES`) loads with a reason instead (encode token
    ids directly, or save the tokenizer there). Preprocessing comes from the saved image-processor settings
    (:func:`~loupe_bench.models.hf_folder.read_preprocessing`: a present but unreadable file is an error, an absent
    one the documented default).
    """
    src, local = _resolve(str(src))
    offline = local or hub_offline()
    # a local folder's own files are all checked before transformers reads its weights
    pre = read_preprocessing(Path(src), vision_image_size(check_hf_folder(Path(src)))) if local else None
    model = _from_pretrained(src, offline, local)
    max_length = int(model.config.text_config.max_position_embeddings)
    tokenizer = _hf_tokenizer(src, local, offline, max_length)
    if pre is None:
        pre = read_preprocessing(_hub_settings_folder(src, offline), int(model.config.vision_config.image_size))
    return PretrainedParts(model, tokenizer, *pre)


@CLIP_WEIGHT_SOURCES.register("open_clip", help="open_clip:<ARCH>:<checkpoint .pt/.safetensors or pretrained tag>, "
                                                "converted")
def load_open_clip_source(src: str) -> PretrainedParts:
    """A local open_clip checkpoint, or the weights of one of open_clip's pretrained tags, converted to
    ``CLIPModel`` (:func:`~loupe_bench.models.pretrained_names.load_open_clip_ref`)."""
    from .pretrained_names import load_open_clip_ref

    return PretrainedParts(*load_open_clip_ref(src))


@CLIP_WEIGHT_SOURCES.register("hf-hub", help="hf-hub:ORG/NAME: a Hugging Face CLIPModel repository via the HF cache")
def load_hf_hub_source(src: str) -> PretrainedParts:
    """``hf-hub:ORG/NAME``: the repository's snapshot in the Hugging Face cache
    (:func:`~loupe_bench.models.pretrained_names.hub_snapshot`), loaded as a local folder by :func:`load_hf_clip`."""
    from .pretrained_names import hub_snapshot

    return load_hf_clip(str(hub_snapshot(src)))


def weight_source(src: str) -> str:
    """The :data:`CLIP_WEIGHT_SOURCES` name for a ``pretrained`` reference: its ``scheme:`` prefix when registered,
    else ``hf``."""
    scheme = str(src).split(":", 1)[0]
    return scheme if ":" in str(src) and scheme in CLIP_WEIGHT_SOURCES else "hf"


@MODEL_CLASSES.register("clip-pretrained", help="transformers CLIPModel from a local directory or the HF cache")
class PretrainedCLIP(VLModel):
    #: top-level spec keys this family reads (any other key is refused by ``create_model``)
    SPEC_KEYS = ("name", "family", "description", "pretrained", "similarity", "loss", "max_logit_scale",
                 "text_special_tokens", "tokenizer", "image_size", "image_mean", "image_std", "embed_dim",
                 "temperature_init")
    """A pretrained transformers ``CLIPModel``; scores are cosines of the projected pooled embeddings.

    Loss (for fine-tuning): ``clip`` = symmetric InfoNCE with the checkpoint's ``logit_scale`` (clamped at 100),
    ``L = ½ [CE(s·V Tᵀ, I) + CE(s·T Vᵀ, I)]``.
    """

    def __init__(self, spec: Dict[str, Any], clip_model: Any, tokenizer: Tokenizer):
        super().__init__()
        self.spec = copy.deepcopy(dict(spec))
        self.clip = clip_model
        self.tokenizer = tokenizer
        vcfg = clip_model.config.vision_config
        self.image_size = int(self.spec["image_size"])
        self.image_mean = tuple(self.spec["image_mean"])
        self.image_std = tuple(self.spec["image_std"])
        self.grid = (self.image_size // int(vcfg.patch_size),) * 2
        self.max_logit_scale = float(self.spec.get("max_logit_scale", 100.0))
        self.text_special_tokens = bool(self.spec.get("text_special_tokens", False))
        self.register_buffer("special_token_ids", torch.tensor(tokenizer.special_ids, dtype=torch.long),
                             persistent=False)

    @classmethod
    def from_spec(cls, spec: Dict[str, Any], tokenizer_corpus: Optional[Iterable[str]] = None,
                  model_dir: Optional[Path] = None) -> "PretrainedCLIP":
        spec = copy.deepcopy(dict(spec))
        if model_dir is not None:
            return cls._from_model_dir(spec, Path(model_dir))
        src = spec.get("pretrained")
        if not src:
            raise SpecError(f"model spec {spec.get('name', '?')!r}: family clip-pretrained needs 'pretrained'")
        parts = CLIP_WEIGHT_SOURCES.get(weight_source(str(src)))(str(src))
        model = parts.clip
        spec.setdefault("image_size", parts.image_size)
        spec.setdefault("image_mean", list(parts.mean))
        spec.setdefault("image_std", list(parts.std))
        spec.setdefault("embed_dim", int(model.config.projection_dim))
        tok = dict(spec.get("tokenizer") or {})
        tok.setdefault("kind", "pretrained")
        tok.setdefault("max_length", int(model.config.text_config.max_position_embeddings))
        spec["tokenizer"] = tok
        tokenizer = parts.tokenizer
        if isinstance(tokenizer, str):
            tokenizer = UnavailableTokenizer(tokenizer, tok["max_length"])
        elif tokenizer.max_length != int(tok["max_length"]):
            tokenizer = Tokenizer(tokenizer.hf, int(tok["max_length"]))
        return cls(spec, model, tokenizer)

    @classmethod
    def _from_model_dir(cls, spec: Dict[str, Any], model_dir: Path) -> "PretrainedCLIP":
        """The spec in ``model_dir/config.json`` validated (:func:`~loupe_bench.models.spec_check.validate_spec`),
        the architecture saved in ``model_dir/clip_config`` (checked like any Hugging Face config) and the
        tokenizer saved in ``model_dir/tokenizer`` (a stand-in when the model was saved without one)."""
        from transformers import CLIPConfig, CLIPModel

        validate_spec(spec, str(model_dir / CONFIG_FILE), CheckpointError)
        conf_dir = model_dir / CLIP_CONFIG_DIR
        check_hf_config(conf_dir / "config.json")
        try:
            model = CLIPModel(CLIPConfig.from_pretrained(str(conf_dir), local_files_only=True))
        except Exception as exc:  # a config of the right sizes transformers still refuses: the folder's fault
            raise CheckpointError(f"{conf_dir / 'config.json'}: not a CLIP config transformers accepts "
                                  f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
                                  ) from None
        max_length = int(spec_get(spec, "tokenizer.max_length", 77))
        tok_dir = model_dir / TOKENIZER_DIR
        if not tok_dir.is_dir():  # saved from a checkpoint that had no tokenizer
            return cls(spec, model, UnavailableTokenizer(f"{model_dir}: model directory saved without a tokenizer",
                                                         max_length))
        return cls(spec, model, Tokenizer.load(tok_dir, max_length))

    def save_extra(self, directory: Path) -> None:
        self.tokenizer.save(Path(directory) / TOKENIZER_DIR)
        from ..utils.io import atomic_write_dir

        atomic_write_dir(Path(directory) / CLIP_CONFIG_DIR, lambda d: self.clip.config.save_pretrained(str(d)))

    # -- encoders -------------------------------------------------------------------------------------------------
    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        out = self.clip.vision_model(pixel_values=pixels)
        pooled = self.clip.visual_projection(out.pooler_output)
        tokens = self.clip.visual_projection(self.clip.vision_model.post_layernorm(out.last_hidden_state[:, 1:]))
        return ImageFeatures(F.normalize(pooled, dim=-1), F.normalize(tokens, dim=-1), self.grid)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        out = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.clip.text_projection(out.pooler_output)
        tokens = self.clip.text_projection(out.last_hidden_state)
        mask = attention_mask.bool()
        if not self.text_special_tokens and self.special_token_ids.numel():
            keep = mask & ~torch.isin(input_ids, self.special_token_ids.to(input_ids.device))
            mask = torch.where(~keep.any(dim=1, keepdim=True), mask, keep)
        return TextFeatures(F.normalize(pooled, dim=-1), F.normalize(tokens, dim=-1), mask)

    # -- training -------------------------------------------------------------------------------------------------
    def embed(self, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        img = self.encode_image(batch["pixels"])
        txt = self.encode_text(batch["input_ids"], batch["attention_mask"])
        return {"image_pooled": img.pooled, "image_tokens": img.tokens, "text_pooled": txt.pooled,
                "text_tokens": txt.tokens, "text_mask": txt.mask}

    def loss_from_embeddings(self, emb: Dict[str, Tensor], batch: Dict[str, Any]) -> LossOutput:
        scale = self.clip.logit_scale.exp().clamp(max=self.max_logit_scale)
        term = clip_infonce(emb["image_pooled"], emb["text_pooled"], scale,
                            with_grad=bool(spec_get(self.spec, "loss.gather_with_grad", True)),
                            local_loss=bool(spec_get(self.spec, "loss.local_loss", False)))
        weight = float(spec_get(self.spec, "loss.weights.clip", 1.0))
        return LossOutput(weight * term, {"clip": term}, {"logit_scale": float(scale.detach())})
