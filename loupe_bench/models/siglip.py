"""SigLIP: a CLIP dual encoder trained with the pairwise sigmoid loss (Zhai et al., ICCV 2023, arXiv 2303.15343).

Same towers, projections and scorer as CLIP; only the training objective differs. Every pair of the batch is an
independent binary problem (match / no match), so the loss needs no normalisation over the batch and, under DDP,
no all-gather: each rank passes its texts around the ring (:func:`~loupe_bench.models.losses.siglip_loss`).

Scoring at evaluation: the model's match probability ``σ(t·⟨x, y⟩ + b)`` is an increasing function of the cosine
``⟨x, y⟩`` (``t > 0``), so ranking texts for an image, images for a text, or classes for an image by the cosine gives
the same order. Retrieval, zero-shot classification and the shared region scorer therefore use the CLIP protocols
unchanged (:meth:`~loupe_bench.models.base.VLModel.similarity`, the pooled cosine); ``t`` and ``b`` are training-only
parameters, like CLIP's temperature.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from ._registry import MODEL_CLASSES
from .base import LossOutput
from .clip import CLIP
from .dual_encoder import spec_get
from .losses import siglip_loss
from .tokenizer import Tokenizer

#: the paper's initialisation (§3.2 / Algorithm 1): ``t' = log 10`` (``t = exp(t') = 10``) and ``b = −10``
PAPER_SCALE_INIT = 10.0
PAPER_BIAS_INIT = -10.0


@MODEL_CLASSES.register("siglip", help="CLIP dual encoder trained with SigLIP's pairwise sigmoid loss")
class SigLIP(CLIP):
    """Global dual encoder trained with the sigmoid loss; scores are cosines ``⟨x_i, y_j⟩`` as CLIP's.

        ``L = −(1/|B|) Σ_i Σ_j log σ(z_ij · (t·⟨x_i, y_j⟩ + b))``,  ``z_ij = +1`` for ``i = j``, else ``−1``

        total ``= w_siglip · L + w_clip · L_CLIP``  (``w_clip`` = 0 by default; the global ``logit_scale`` exists
        only when ``w_clip > 0``, as in FILIP)

    Parameters: ``siglip_logit_scale`` = ``t'`` (``t = exp(t')``, clamped to ``[1, max_logit_scale]`` after each
    optimiser step with every ``*logit_scale``; excluded from weight decay by name) and ``siglip_logit_bias`` = ``b``
    (a scalar: no weight decay). Spec keys: ``loss.weights.{siglip,clip}``, ``siglip.scale_init`` (``t`` at init,
    default 10), ``siglip.bias_init`` (default −10), ``loss.gather_with_grad`` (gradients return along the ring;
    default true). ``loss.local_loss`` does not apply: the ring form always scores local rows.
    """

    SPEC_KEYS = CLIP.SPEC_KEYS + ("siglip",)

    def __init__(self, spec: Dict[str, Any], tokenizer: Tokenizer, load_pretrained: bool = True,
                 model_dir: Optional[Path] = None):
        self.uses_global_scale = float(spec_get(spec, "loss.weights.clip", 0.0)) > 0
        super().__init__(spec, tokenizer, load_pretrained=load_pretrained, model_dir=model_dir)
        scale0 = float(spec_get(self.spec, "siglip.scale_init", PAPER_SCALE_INIT))
        bias0 = float(spec_get(self.spec, "siglip.bias_init", PAPER_BIAS_INIT))
        if not (scale0 > 0 and math.isfinite(scale0) and math.isfinite(bias0)):
            from ..errors import SpecError

            raise SpecError(f"model spec {self.spec.get('name', '?')!r}: siglip.scale_init must be a finite number "
                            f"> 0 and siglip.bias_init finite (got {scale0}, {bias0})")
        self.siglip_logit_scale = nn.Parameter(torch.tensor(math.log(scale0)))
        self.siglip_logit_bias = nn.Parameter(torch.tensor(bias0))

    def loss_from_embeddings(self, emb: Dict[str, Tensor], batch: Dict[str, Any]) -> LossOutput:
        weights = self.loss_weights({"siglip": 1.0, "clip": 0.0})
        scale = self.scale(self.siglip_logit_scale)
        terms = {"siglip": siglip_loss(emb["image_pooled"], emb["text_pooled"], scale, self.siglip_logit_bias,
                                       with_grad=self.gather_with_grad)}
        logs = {"siglip_logit_scale": float(scale.detach()),
                "siglip_logit_bias": float(self.siglip_logit_bias.detach())}
        return self.total_with_clip(emb, weights, terms, logs)
