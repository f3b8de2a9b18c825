"""FILIP: token-wise late interaction between patches and words (Yao et al., arXiv 2111.07783).

Conventions (the paper's §3.1.1, as its token-wise similarity is defined there): the image ``[CLS]`` is dropped; text padding
is masked with -inf before every max and left out of every mean, so a padded caption scores exactly as the unpadded
one; whether ``[CLS]``/``[SEP]`` count is the spec option ``text_special_tokens`` (default false: only word tokens);
FILIP has its own learnable temperature ``filip_logit_scale``; the loss is a symmetric InfoNCE with ``s^I`` logits
for image→text and ``s^T`` logits for text→image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..specs import from_mapping
from ._registry import MODEL_CLASSES
from .base import ImageFeatures, LossOutput, TextFeatures, boxes_to_patch_mask
from .dual_encoder import DualEncoder, spec_get
from .losses import (
    default_chunk_elements, filip_infonce, filip_scores, filip_similarity, max_mask_value,
)
from .spec_fields import TEMPERATURE_RANGE, choice_check, range_check
from .tokenizer import Tokenizer

DIRECTIONS = ("i2t", "t2i", "mean")


def combine_directions(i2t: Tensor, t2i: Tensor, direction: str) -> Tensor:
    """Pick ``s^I`` (``"i2t"``), ``s^T`` (``"t2i"``) or their mean (``"mean"``)."""
    if direction == "i2t":
        return i2t
    if direction == "t2i":
        return t2i
    if direction == "mean":
        return 0.5 * (i2t + t2i)
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


@dataclass
class FilipCfg:
    """The ``filip`` block of a FILIP spec (its own temperature, the direction of region scores)."""

    temperature_init: float = field(default=0.07, metadata={"check": range_check(*TEMPERATURE_RANGE, low_open=True)})
    region_direction: str = field(default="mean", metadata={"check": choice_check(*DIRECTIONS)})


@MODEL_CLASSES.register("filip", help="FILIP dual encoder, token-wise late interaction")
class FILIP(DualEncoder):
    SPEC_KEYS = DualEncoder.SPEC_KEYS + ("filip",)
    """Dual encoder scored by token-wise late interaction.

        ``s^I_{i,j} = (1/n1) Σ_k max_r ⟨x^I_{i,k}, x^T_{j,r}⟩``,   ``s^T_{i,j} = (1/n2) Σ_r max_k ⟨x^I_{i,k}, x^T_{j,r}⟩``

        ``L = L_FILIP(s^I, s^T; s_F) + w_clip · L_CLIP``  (``w_clip`` = 0 by default; ``s_F`` = FILIP's own scale)

    Loss terms: ``filip`` (and ``clip`` when its weight is positive). Spec keys: ``loss.weights.{filip,clip}``,
    ``filip.temperature_init`` (default 0.07), ``filip.region_direction`` (default ``mean``).
    """

    #: bound on the similarity values held at once while scoring (None: 8M on CPU, 128M on a GPU)
    max_chunk_elements: Optional[int] = None

    def __init__(self, spec: Dict[str, Any], tokenizer: Tokenizer, load_pretrained: bool = True,
                 model_dir: Optional[Path] = None):
        self.uses_global_scale = float(spec_get(spec, "loss.weights.clip", 0.0)) > 0
        super().__init__(spec, tokenizer, load_pretrained=load_pretrained, model_dir=model_dir)
        t0 = float(spec_get(self.spec, "filip.temperature_init", self.temperature_init))
        self.filip_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / t0)))
        self.region_direction = str(spec_get(self.spec, "filip.region_direction", "mean"))
        if self.region_direction not in DIRECTIONS:
            from ..errors import SpecError

            raise SpecError(f"filip.region_direction must be one of {DIRECTIONS}")

    @classmethod
    def check_family_spec(cls, spec: Dict[str, Any]) -> None:
        """``filip:`` holds ``temperature_init`` (a positive number) and ``region_direction`` (:data:`DIRECTIONS`)."""
        from_mapping(FilipCfg, spec.get("filip"), "model spec", "filip")

    # -- training -------------------------------------------------------------------------------------------------
    def loss_from_embeddings(self, emb: Dict[str, Tensor], batch: Dict[str, Any]) -> LossOutput:
        weights = self.loss_weights({"filip": 1.0, "clip": 0.0})
        scale = self.scale(self.filip_logit_scale)
        terms = {"filip": filip_infonce(emb["image_tokens"], emb["text_tokens"], emb["text_mask"], scale,
                                        with_grad=self.gather_with_grad, local_loss=self.local_loss)}
        return self.total_with_clip(emb, weights, terms, {"filip_logit_scale": float(scale.detach())})

    # -- scoring --------------------------------------------------------------------------------------------------
    def similarity(self, image_features: ImageFeatures, text_features: TextFeatures, direction: str = "mean",
                   chunk_size: int = 1024) -> Tensor:
        """``[N_images, N_texts]`` FILIP scores, chunked (:func:`~loupe_bench.models.losses.filip_similarity`).

        ``direction``: ``"i2t"`` = ``s^I`` (rank texts for an image), ``"t2i"`` = ``s^T`` (rank images for a
        text), ``"mean"`` = their average.
        """
        scores = filip_similarity(image_features.tokens, text_features.tokens, text_features.mask,
                                  image_chunk=chunk_size, max_chunk_elements=self.max_chunk_elements)
        return combine_directions(scores.i2t, scores.t2i, direction)

    def similarity_pair(self, image_features: ImageFeatures, text_features: TextFeatures,
                        chunk_size: int = 1024) -> Tuple[Tensor, Tensor]:
        """``(s^I, s^T)`` from one pass of the late interaction (the values of ``similarity("i2t")`` and
        ``similarity("t2i")``: one product per block serves both directions)."""
        scores = filip_similarity(image_features.tokens, text_features.tokens, text_features.mask,
                                  image_chunk=chunk_size, max_chunk_elements=self.max_chunk_elements)
        return scores.i2t, scores.t2i

    def _text_chunk(self, rows: int, n1: int, n2: int, device: torch.device) -> int:
        bound = self.max_chunk_elements or default_chunk_elements(device)
        return max(1, bound // max(1, rows * n1 * n2))

    def score_regions(self, image_features: ImageFeatures, boxes: Sequence[Tensor],
                      text_features: TextFeatures) -> List[Tensor]:
        """Token-wise similarity of each box's patches to the texts' real tokens: one ``[K_b, N_texts]`` per image.

        A box keeps the patches whose centres it contains (:func:`boxes_to_patch_mask`); ``s^I`` averages over those
        patches, ``s^T`` maxes over them; ``filip.region_direction`` picks which (default their mean).
        The patch × text-token products are computed once per image and shared by all of its boxes (the values of
        :func:`~loupe_bench.models.losses.filip_scores` with ``image_mask`` = the box membership, tested equal).
        """
        out = []
        tt, tmask = text_features.tokens, text_features.mask.bool()
        nt, n2, d = tt.shape
        flat_t = tt.reshape(nt * n2, d)
        counts = tmask.sum(dim=1).clamp(min=1)
        for b, bx in enumerate(boxes):
            tokens = image_features.tokens[b]
            member = boxes_to_patch_mask(bx.to(tokens.dtype), image_features.grid).bool()  # [K, n1]
            k, n1 = member.shape
            if k == 0 or nt == 0:
                out.append(tokens.new_zeros(k, nt))
                continue
            sim = (tokens @ flat_t.T).view(n1, nt, n2)
            neg_inf = max_mask_value(sim.dtype)
            # image -> text: max over real tokens per patch, mean over the box's patches
            per_patch = sim.masked_fill(~tmask[None], neg_inf).amax(dim=2)  # [n1, nt]
            m = member.to(per_patch.dtype)
            s_i = (m @ per_patch) / m.sum(dim=1, keepdim=True).clamp(min=1)
            # text -> image: max over the box's patches per token, mean over real tokens (boxes chunked)
            step = max(1, self._text_chunk(1, n1, nt * n2, tokens.device))
            s_t = []
            flat = sim.reshape(1, n1, nt * n2)
            bias = torch.zeros(member.shape, dtype=sim.dtype, device=sim.device).masked_fill_(~member, neg_inf)
            for k0 in range(0, k, step):
                # adding a 0 / -inf bias per (box, patch) is ~4x faster on CPU than a broadcast masked_fill
                per_tok = (flat + bias[k0:k0 + step, :, None]).amax(dim=1).view(-1, nt, n2)  # [k', nt, n2]
                s_t.append(per_tok.masked_fill(~tmask[None], 0).sum(dim=2) / counts[None])
            out.append(combine_directions(s_i, torch.cat(s_t, 0), self.region_direction))
        return out

    def patch_similarity(self, image_features: ImageFeatures, text_features: TextFeatures) -> Tensor:
        """``[N_images, N_texts, H, W]``: for each patch the max over the text's real tokens (the summand of s^I)."""
        h, w = image_features.grid
        ni, n1, d = image_features.tokens.shape
        nt, n2, _ = text_features.tokens.shape
        out = torch.empty(ni, nt, n1, dtype=image_features.tokens.dtype, device=image_features.tokens.device)
        step = self._text_chunk(ni, n1, n2, image_features.tokens.device)
        flat = image_features.tokens.reshape(ni * n1, d)
        for j in range(0, nt, step):
            t = text_features.tokens[j:j + step]
            m = text_features.mask[j:j + step].bool()
            sim = (flat @ t.reshape(-1, d).T).view(ni, n1, t.shape[0], n2)
            sim = sim.masked_fill(~m[None, None], float("-inf")).amax(dim=3)  # [ni, n1, ct]
            out[:, j:j + t.shape[0]] = sim.permute(0, 2, 1)
        return out.reshape(ni, nt, h, w)
