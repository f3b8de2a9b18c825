"""Region scorers for the box tasks (grounding, detection): registry :data:`REGION_SCORERS`, chosen by the task
spec's ``options.region_scoring`` (part of the normalised spec, hence of the protocol fingerprint).

* ``shared`` (the default for comparisons): one rule for every model, through the ``VLModel`` features only.
  A box's embedding is the L2-normalised mean of the image's projected patch tokens whose centres it contains
  (:func:`~loupe_bench.models.base.boxes_to_patch_mask`), in the ℒ_CMC space; a text's embedding is its pooled
  ℒ_CMC embedding; the score is their cosine

      s(b, t) = ⟨ normalize( (1/|b|) Σ_{n ∈ b} x_n ), z_t ⟩,   x_n = projected patch token, z_t = pooled text.

  No model-specific head (LOUPE's ``W_r``, FILIP's token late interaction) takes part, so two models with the same
  towers get the same numbers whatever their class.
* ``native``: each model's own :meth:`~loupe_bench.models.base.VLModel.score_regions` (FILIP: token-wise late
  interaction over the box's patches; LOUPE: its region projection and phrase embedding; SPARC: the text's tokens
  grouped over the box's patches as over a whole image, against the tokens; CLIP: the shared rule).
  Reported as a separately fingerprinted variant.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from ..models.base import boxes_to_patch_mask
from ..registry import Registry

REGION_SCORERS = Registry("region scorer")


@REGION_SCORERS.register("shared", help="one rule for all models: pooled box patch tokens · pooled text (cosine)")
def shared_region_scores(model, image_features, boxes: Sequence[Tensor], text_features) -> List[Tensor]:
    """``[K_b, N_texts]`` per image: cosine of the mean projected patch token of each box with each pooled text."""
    out = []
    texts = torch.nn.functional.normalize(text_features.pooled, dim=-1)
    for b, bx in enumerate(boxes):
        tokens = image_features.tokens[b]
        member = boxes_to_patch_mask(bx.to(tokens.dtype), image_features.grid).to(tokens.dtype)
        region = member @ tokens / member.sum(dim=1, keepdim=True).clamp(min=1)
        out.append(torch.nn.functional.normalize(region, dim=-1) @ texts.to(region.dtype).T)
    return out


@REGION_SCORERS.register("native", help="each model's own region scorer (VLModel.score_regions)")
def native_region_scores(model, image_features, boxes: Sequence[Tensor], text_features) -> List[Tensor]:
    """The model's own :meth:`score_regions` (a separately fingerprinted protocol variant)."""
    return model.score_regions(image_features, boxes, text_features)


def check_region_scoring(name: str) -> str:
    """Validate an ``options.region_scoring`` value (used by the adapters' ``Options``)."""
    if name not in REGION_SCORERS:
        raise ValueError(f"region_scoring must be one of {', '.join(REGION_SCORERS.names())}, got {name!r}")
    return name
