"""The dual-encoder base every from-scratch model builds on: towers, projection heads, temperature, preprocessing.

A model spec (YAML; saved as ``config.json``) looks like::

    name: clip-tiny
    family: clip                 # key in MODEL_CLASSES
    description: ...
    similarity: global           # global | token-wise (informative; the family decides the scorer)
    image_size: 64
    image_mean: [0.5, 0.5, 0.5]  # optional; default: the pretrained tower's constants, else 0.5
    image_std: [0.5, 0.5, 0.5]
    embed_dim: 64
    image_tower: {kind: timm, name: vit_base_patch16_224, kwargs: {...}, pretrained: null}
    text_tower: {kind: bert, config: {...}, pretrained: null}
    tokenizer: {kind: wordpiece, vocab_size: 1000, max_length: 32}
    projection: {shared_token_projection: true, bias: false}
    temperature_init: 0.07       # logit scale s = 1/τ, learnable, clamped at max_logit_scale
    max_logit_scale: 100
    text_special_tokens: false   # do [CLS]/[SEP] take part in token-level scoring (FILIP's open question)
    loss: {weights: {clip: 1.0}, gather_with_grad: true, local_loss: false}
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, SpecError
from ..utils.run_files import CONFIG_FILE, TOKENIZER_DIR
from .base import ImageFeatures, LossOutput, TextFeatures, VLModel
from .spec_check import validate_spec
from .tokenizer import Tokenizer, TokenizerCfg, build_tokenizer
from .towers import IMAGE_TOWERS, TEXT_TOWERS, ImageTowerCfg, TextTowerCfg

TEXT_TOWER_DIR = "text_tower"

EMBEDDING_KEYS = ("image_pooled", "image_tokens", "text_pooled", "text_tokens", "text_mask")


def spec_get(spec: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``spec_get(spec, "loss.weights.clip", 1.0)``: nested lookup with a default."""
    node: Any = spec
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _require(spec: Mapping[str, Any], key: str) -> Any:
    if key not in spec:
        raise SpecError(f"model spec {spec.get('name', '?')!r}: missing required key {key!r}")
    return spec[key]


class DualEncoder(VLModel):
    """Image tower + text tower + linear projections to a shared, L2-normalised space, and a learnable temperature.

    Subclasses (CLIP, FILIP, LOUPE) implement :meth:`loss_from_embeddings` and, for token-level scoring,
    :meth:`similarity`. The embeddings of :meth:`embed` are batch-first so the training engine can concatenate and
    all-gather them.

    Args:
        spec: the model spec (plain dict; kept as :attr:`spec`).
        tokenizer: the model's :class:`~loupe_bench.models.tokenizer.Tokenizer`.
        load_pretrained: load the towers' pretrained weights named by the spec (False when the weights come from a
            saved model directory).
        model_dir: a saved model directory; tower architectures are rebuilt from the configs saved there.
    """

    #: families whose spec needs a global temperature (``logit_scale``) even when its loss weight is 0
    uses_global_scale: bool = True
    #: top-level spec keys this family reads (any other key is refused by ``create_model``); subclasses add theirs
    SPEC_KEYS: Tuple[str, ...] = ("name", "family", "description", "embed_dim", "image_size", "image_tower",
                                  "text_tower", "tokenizer", "projection", "similarity", "loss", "temperature_init",
                                  "max_logit_scale", "text_special_tokens", "image_mean", "image_std")

    def __init__(self, spec: Dict[str, Any], tokenizer: Tokenizer, load_pretrained: bool = True,
                 model_dir: Optional[Path] = None):
        super().__init__()
        self.spec = copy.deepcopy(dict(spec))
        self.tokenizer = tokenizer
        self.source_dir = None if model_dir is None else Path(model_dir).resolve()
        self.image_size = int(self.spec.get("image_size", 64))
        embed_dim = int(_require(self.spec, "embed_dim"))
        self.embed_dim = embed_dim

        icfg = ImageTowerCfg.from_dict(_require(self.spec, "image_tower"))
        tcfg = TextTowerCfg.from_dict(_require(self.spec, "text_tower"))
        icfg.kwargs.setdefault("img_size", self.image_size)
        self.image_tower = IMAGE_TOWERS.get(icfg.kind)(icfg, load_pretrained=load_pretrained)
        text_dir = None if model_dir is None else Path(model_dir) / TEXT_TOWER_DIR
        self.text_tower = TEXT_TOWERS.get(tcfg.kind)(
            tcfg, vocab_size=len(tokenizer), max_length=tokenizer.max_length, pad_id=tokenizer.pad_id,
            load_pretrained=load_pretrained, config_dir=text_dir if text_dir and text_dir.is_dir() else None,
        )

        bias = bool(spec_get(self.spec, "projection.bias", False))
        self.shared_token_projection = bool(spec_get(self.spec, "projection.shared_token_projection", True))
        self.image_proj = nn.Linear(self.image_tower.width, embed_dim, bias=bias)
        self.text_proj = nn.Linear(self.text_tower.width, embed_dim, bias=bias)
        if not self.shared_token_projection:
            self.image_token_proj = nn.Linear(self.image_tower.width, embed_dim, bias=bias)
            self.text_token_proj = nn.Linear(self.text_tower.width, embed_dim, bias=bias)

        self.max_logit_scale = float(self.spec.get("max_logit_scale", 100.0))
        self.temperature_init = float(self.spec.get("temperature_init", 0.07))
        if self.uses_global_scale:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.temperature_init)))

        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        if icfg.pretrained and hasattr(self.image_tower, "pretrained_mean_std"):
            mean, std = self.image_tower.pretrained_mean_std
        self.image_mean = tuple(float(x) for x in self.spec.get("image_mean", mean))
        self.image_std = tuple(float(x) for x in self.spec.get("image_std", std))

        self.text_special_tokens = bool(self.spec.get("text_special_tokens", False))
        self.register_buffer("special_token_ids", torch.tensor(tokenizer.special_ids, dtype=torch.long),
                             persistent=False)
        self.grid = self._infer_grid()

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: Dict[str, Any], tokenizer_corpus: Optional[Iterable[str]] = None,
                  model_dir: Optional[Path] = None) -> "DualEncoder":
        """Build the model a spec describes; with ``model_dir``, rebuild a saved one (weights loaded by the caller)
        after validating its ``config.json`` (:func:`~loupe_bench.models.spec_check.validate_spec`, a
        :class:`~loupe_bench.errors.CheckpointError` naming the file)."""
        if model_dir is not None:
            validate_spec(spec, str(Path(model_dir) / CONFIG_FILE), CheckpointError)
        tok_cfg = TokenizerCfg.from_dict(spec.get("tokenizer"))
        if model_dir is not None:
            tokenizer = Tokenizer.load(Path(model_dir) / TOKENIZER_DIR, tok_cfg.max_length)
            return cls(spec, tokenizer, load_pretrained=False, model_dir=Path(model_dir))
        tokenizer = build_tokenizer(tok_cfg, tokenizer_corpus, spec_get(spec, "text_tower.pretrained"))
        return cls(spec, tokenizer, load_pretrained=True)

    @classmethod
    def check_family_spec(cls, spec: Mapping[str, Any]) -> None:
        """Check the family's own section of a spec (none here; subclasses add theirs) before anything is built."""

    def save_extra(self, directory: Path) -> None:
        """Save what rebuilding the architecture needs beside the weights: tokenizer and text tower config.

        Written once: a model rebuilt from ``directory`` itself (a resumed run) leaves the files it was built from
        alone, and an unchanged tokenizer / config is not rewritten (each folder is written atomically)."""
        if self.source_dir is not None and Path(directory).resolve() == self.source_dir:
            return
        self.tokenizer.save(Path(directory) / TOKENIZER_DIR)
        if hasattr(self.text_tower, "save_config"):
            self.text_tower.save_config(Path(directory) / TEXT_TOWER_DIR)

    def _infer_grid(self) -> Tuple[int, int]:
        info = getattr(self.image_tower.model, "feature_info", None)
        if info:
            red = int(info[-1]["reduction"])
            return (self.image_size // red, self.image_size // red)
        with torch.no_grad():  # pragma: no cover - towers without feature_info
            return self.image_tower(torch.zeros(1, 3, self.image_size, self.image_size)).grid

    # -- temperature ----------------------------------------------------------------------------------------------
    def scale(self, param: Optional[Tensor] = None) -> Tensor:
        """Logit scale ``s = exp(param)`` clamped at ``max_logit_scale`` (default: the global ``logit_scale``)."""
        p = self.logit_scale if param is None else param
        return p.exp().clamp(max=self.max_logit_scale)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp every ``*logit_scale`` parameter to ``[0, ln max_logit_scale]`` (call after an optimiser step)."""
        for name, p in self.named_parameters():
            if name.endswith("logit_scale"):
                p.clamp_(0.0, math.log(self.max_logit_scale))

    # -- encoders -------------------------------------------------------------------------------------------------
    def project_image_tokens(self, tokens: Tensor) -> Tensor:
        proj = self.image_proj if self.shared_token_projection else self.image_token_proj
        return F.normalize(proj(tokens), dim=-1)

    def project_text_tokens(self, tokens: Tensor) -> Tensor:
        proj = self.text_proj if self.shared_token_projection else self.text_token_proj
        return F.normalize(proj(tokens), dim=-1)

    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        out = self.image_tower(pixels)
        return ImageFeatures(
            F.normalize(self.image_proj(out.pooled), dim=-1), self.project_image_tokens(out.tokens), tuple(out.grid)
        )

    def text_token_mask(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Tokens that take part in token-level scoring: real tokens, minus ``[CLS]``/``[SEP]`` unless
        ``text_special_tokens`` is true. A text left with no token keeps its attention mask."""
        mask = attention_mask.bool()
        if not self.text_special_tokens and self.special_token_ids.numel():
            keep = mask & ~torch.isin(input_ids, self.special_token_ids.to(input_ids.device))
            empty = ~keep.any(dim=1, keepdim=True)
            mask = torch.where(empty, mask, keep)
        return mask

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        out = self.text_tower(input_ids, attention_mask)
        return TextFeatures(
            F.normalize(self.text_proj(out.pooled), dim=-1),
            self.project_text_tokens(out.tokens),
            self.text_token_mask(input_ids, attention_mask),
        )

    # -- training -------------------------------------------------------------------------------------------------
    def embed(self, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        """``{"image_pooled" [B,D], "image_tokens" [B,N,D], "text_pooled" [B,D], "text_tokens" [B,L,D],
        "text_mask" [B,L] bool}``; the patch grid is :attr:`grid`."""
        img = self.encode_image(batch["pixels"])
        txt = self.encode_text(batch["input_ids"], batch["attention_mask"])
        return {
            "image_pooled": img.pooled, "image_tokens": img.tokens,
            "text_pooled": txt.pooled, "text_tokens": txt.tokens, "text_mask": txt.mask,
        }

    def features_from_embeddings(self, emb: Mapping[str, Tensor]) -> Tuple[ImageFeatures, TextFeatures]:
        return (ImageFeatures(emb["image_pooled"], emb["image_tokens"], self.grid),
                TextFeatures(emb["text_pooled"], emb["text_tokens"], emb["text_mask"]))

    def loss_weights(self, defaults: Mapping[str, float]) -> Dict[str, float]:
        weights = dict(defaults)
        given = spec_get(self.spec, "loss.weights", {}) or {}
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise SpecError(f"model spec {self.spec.get('name', '?')!r}: unknown loss terms {unknown}; "
                            f"known: {sorted(defaults)}")
        weights.update({k: float(v) for k, v in given.items()})
        return weights

    def total_with_clip(self, emb: Dict[str, Tensor], weights: Mapping[str, float], terms: Dict[str, Tensor],
                        logs: Dict[str, float]) -> LossOutput:
        """``Σ_k w_k ℒ_k`` over ``terms``, with the global CLIP InfoNCE term (:func:`~.losses.clip_infonce`, the
        global temperature) added to ``terms`` first when ``weights["clip"] > 0`` — the optional ℒ_CLIP a family
        keeps beside its own loss (FILIP, SigLIP)."""
        from .losses import clip_infonce

        if weights.get("clip", 0.0) > 0:
            gscale = self.scale()
            terms["clip"] = clip_infonce(emb["image_pooled"], emb["text_pooled"], gscale,
                                         with_grad=self.gather_with_grad, local_loss=self.local_loss)
            logs["logit_scale"] = float(gscale.detach())
        return LossOutput(sum(weights[k] * v for k, v in terms.items()), terms, logs)

    @property
    def gather_with_grad(self) -> bool:
        return bool(spec_get(self.spec, "loss.gather_with_grad", True))

    @property
    def local_loss(self) -> bool:
        return bool(spec_get(self.spec, "loss.local_loss", False))
