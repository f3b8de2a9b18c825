"""``clip-pretrained``: transformers' ``CLIPModel`` (e.g. ``openai/clip-vit-base-patch32``) behind the VLModel interface.

Weights, tokenizer and preprocessing constants come from a local HF-format directory or, for a hub id, from the HF
cache (offline) or the hub (online). Pooled features are the model's own projected embeddings; token features are
the post-layer-norm patch states (image ``[CLS]`` dropped) and the final-layer-norm text states, passed through the
same projections, so token-level tasks (patch maps, region scoring) also work.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CheckpointError, SpecError
from ._registry import MODEL_CLASSES
from .base import ImageFeatures, LossOutput, TextFeatures, VLModel
from .dual_encoder import TOKENIZER_DIR, spec_get
from .losses import clip_infonce
from .tokenizer import Tokenizer
from .towers import hub_offline

CLIP_CONFIG_DIR = "clip_config"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


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
        from transformers import AutoTokenizer, CLIPConfig, CLIPModel

        spec = copy.deepcopy(dict(spec))
        if model_dir is not None:
            conf = CLIPConfig.from_pretrained(str(Path(model_dir) / CLIP_CONFIG_DIR), local_files_only=True)
            model = CLIPModel(conf)
            max_length = int(spec_get(spec, "tokenizer.max_length", 77))
            return cls(spec, model, Tokenizer.load(Path(model_dir) / TOKENIZER_DIR, max_length))
        src = spec.get("pretrained")
        if not src:
            raise SpecError(f"model spec {spec.get('name', '?')!r}: family clip-pretrained needs 'pretrained'")
        src, local = _resolve(str(src))
        try:
            model = CLIPModel.from_pretrained(src, local_files_only=local or hub_offline())
            hf_tok = AutoTokenizer.from_pretrained(src, local_files_only=local or hub_offline(), use_fast=True)
        except OSError as exc:
            raise CheckpointError(
                f"pretrained CLIP {src!r}: not found locally or in the HF cache ({str(exc).splitlines()[0]})"
            ) from None
        size, mean, std = _preprocessing(src, local or hub_offline(), int(model.config.vision_config.image_size))
        spec.setdefault("image_size", size)
        spec.setdefault("image_mean", list(mean))
        spec.setdefault("image_std", list(std))
        spec.setdefault("embed_dim", int(model.config.projection_dim))
        tok = dict(spec.get("tokenizer") or {})
        tok.setdefault("kind", "pretrained")
        tok.setdefault("max_length", int(model.config.text_config.max_position_embeddings))
        spec["tokenizer"] = tok
        return cls(spec, model, Tokenizer(hf_tok, tok["max_length"]))

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
