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

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CheckpointError, SpecError
from ..registry import Registry
from ._registry import MODEL_CLASSES
from .base import ImageFeatures, LossOutput, TextFeatures, VLModel
from .checkpoint import TOKENIZER_DIR
from .dual_encoder import spec_get
from .losses import clip_infonce
from .tokenizer import Tokenizer, UnavailableTokenizer
from .towers import hub_offline

CLIP_CONFIG_DIR = "clip_config"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: files of which at least one marks a saved Hugging Face tokenizer in a model directory
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")

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


def _preprocessing(src: str, local: bool, vision_image_size: int) -> Tuple[int, Tuple[float, ...], Tuple[float, ...]]:
    """Image size, mean and std from the checkpoint's image-processor config (OpenAI constants when absent)."""
    try:
        from transformers import CLIPImageProcessor

        proc = CLIPImageProcessor.from_pretrained(src, local_files_only=local)
        crop = getattr(proc, "crop_size", None) or {}
        size = int(crop.get("height", vision_image_size)) if isinstance(crop, dict) else int(crop)
        return size, tuple(float(x) for x in proc.image_mean), tuple(float(x) for x in proc.image_std)
    except (OSError, ValueError, TypeError):
        return vision_image_size, OPENAI_MEAN, OPENAI_STD


@CLIP_WEIGHT_SOURCES.register("hf", help="Hugging Face CLIPModel directory or hub id")
def load_hf_clip(src: str) -> PretrainedParts:
    """A transformers ``CLIPModel`` from a local directory or a hub id (HF cache when offline).

    The tokenizer is the one saved beside the weights; a local directory without tokenizer files
    (:data:`HF_TOKENIZER_FILES`) loads with a reason instead (encode token ids directly, or save the tokenizer there).
    """
    from transformers import AutoTokenizer, CLIPModel

    src, local = _resolve(str(src))
    offline = local or hub_offline()
    try:
        model = CLIPModel.from_pretrained(src, local_files_only=offline, weights_only=True)
    except OSError as exc:
        raise CheckpointError(
            f"pretrained CLIP {src!r}: not found locally or in the HF cache ({str(exc).splitlines()[0]})"
        ) from None
    max_length = int(model.config.text_config.max_position_embeddings)
    tokenizer: Union[Tokenizer, str]
    if local and not any((Path(src) / f).is_file() for f in HF_TOKENIZER_FILES):
        tokenizer = (f"{src}: Hugging Face CLIP directory without tokenizer files ({', '.join(HF_TOKENIZER_FILES)}); "
                     "save the tokenizer there (tokenizer.save_pretrained) or feed token ids to encode_text")
    else:
        try:
            tokenizer = Tokenizer(AutoTokenizer.from_pretrained(src, local_files_only=offline, use_fast=True),
                                  max_length)
        except OSError as exc:
            raise CheckpointError(f"pretrained CLIP {src!r}: cannot load its tokenizer "
                                  f"({str(exc).splitlines()[0]})") from None
    size, mean, std = _preprocessing(src, offline, int(model.config.vision_config.image_size))
    return PretrainedParts(model, tokenizer, size, mean, std)


@CLIP_WEIGHT_SOURCES.register("open_clip", help="open_clip:<ARCH>:<checkpoint .pt/.safetensors>, converted")
def load_open_clip_source(src: str) -> PretrainedParts:
    """A local open_clip checkpoint converted to ``CLIPModel``
    (:func:`~loupe_bench.models.open_clip_convert.load_open_clip`)."""
    from .open_clip_convert import load_open_clip

    return PretrainedParts(*load_open_clip(src))


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
        from transformers import CLIPConfig, CLIPModel

        spec = copy.deepcopy(dict(spec))
        if model_dir is not None:
            conf = CLIPConfig.from_pretrained(str(Path(model_dir) / CLIP_CONFIG_DIR), local_files_only=True)
            model = CLIPModel(conf)
            max_length = int(spec_get(spec, "tokenizer.max_length", 77))
            tok_dir = Path(model_dir) / TOKENIZER_DIR
            if not tok_dir.is_dir():  # saved from a checkpoint that had no tokenizer
                return cls(spec, model, UnavailableTokenizer(f"{model_dir}: model directory saved without a tokenizer",
                                                             max_length))
            return cls(spec, model, Tokenizer.load(tok_dir, max_length))
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
