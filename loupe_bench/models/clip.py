"""CLIP: a dual encoder trained with the global symmetric InfoNCE loss (Radford et al., 2021)."""
from __future__ import annotations

from typing import Any, Dict

from torch import Tensor

from ._registry import MODEL_CLASSES
from .base import LossOutput
from .dual_encoder import DualEncoder
from .losses import clip_infonce


@MODEL_CLASSES.register("clip", help="CLIP dual encoder, global symmetric InfoNCE")
class CLIP(DualEncoder):
    """Global image–text contrastive model; scores are cosines of pooled embeddings ``s_ij = ⟨v_i, t_j⟩``.

    Loss terms: ``clip`` = :func:`~loupe_bench.models.losses.clip_infonce` on the (all-gathered) pooled embeddings,

        ``L_CLIP = ½ [ CE(s·V Tᵀ, I) + CE(s·T Vᵀ, I) ]``, ``s = min(exp(logit_scale), 100)``.
    """

    def loss_from_embeddings(self, emb: Dict[str, Tensor], batch: Dict[str, Any]) -> LossOutput:
        weights = self.loss_weights({"clip": 1.0})
        scale = self.scale()
        term = clip_infonce(emb["image_pooled"], emb["text_pooled"], scale, with_grad=self.gather_with_grad,
                            local_loss=self.local_loss)
        return LossOutput(weights["clip"] * term, {"clip": term}, {"logit_scale": float(scale.detach())})
