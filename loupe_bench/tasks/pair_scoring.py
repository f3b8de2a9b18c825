"""Image–text pair scorers of the matching tasks (caption selection, two-by-two matching): registry
:data:`PAIR_SCORERS`, chosen by the task spec's ``options.scoring`` (part of the normalised spec, hence of the
protocol fingerprint).

* ``shared`` (the default for comparisons): one rule for every model, the cosine of the pooled embeddings

      s(I, T) = ⟨ v_I / ‖v_I‖, z_T / ‖z_T‖ ⟩,

  exactly what CLIP_benchmark computes from ``encode_image`` / ``encode_text``.
* ``native``: each model's own fine-grained scorer, :meth:`~loupe_bench.models.base.VLModel.fine_grained_scores`
  (FILIP: token-wise late interaction; LOUPE: its region–phrase alignment; global models: the pooled cosine).
  Reported as a separately fingerprinted variant.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from ..registry import Registry

PAIR_SCORERS = Registry("pair scorer")


@PAIR_SCORERS.register("shared", help="one rule for all models: cosine of the pooled image and text embeddings")
def shared_pair_scores(model, image_features, text_features) -> Tensor:
    """``[N_images, N_texts]`` cosine of the L2-normalised pooled embeddings (float32, CPU)."""
    img = torch.nn.functional.normalize(image_features.pooled.float(), dim=-1)
    txt = torch.nn.functional.normalize(text_features.pooled.float(), dim=-1)
    return (img @ txt.T).cpu()


@PAIR_SCORERS.register("native", help="each model's own fine-grained scorer (VLModel.fine_grained_scores)")
def native_pair_scores(model, image_features, text_features) -> Tensor:
    """``[N_images, N_texts]`` scores of :meth:`~loupe_bench.models.base.VLModel.fine_grained_scores` (float32, CPU)."""
    with torch.no_grad():
        return model.fine_grained_scores(image_features, text_features).float().cpu()


def check_pair_scoring(name: str) -> str:
    """Validate an ``options.scoring`` value (used by the adapters' ``Options``)."""
    if name not in PAIR_SCORERS:
        raise ValueError(f"scoring must be one of {', '.join(PAIR_SCORERS.names())}, got {name!r}")
    return name


def check_kinds(kinds) -> None:
    """Validate an ``options.kinds`` value of the matching tasks: the kinds also reported as metrics of their own."""
    if not isinstance(kinds, list) or not all(isinstance(k, str) and k for k in kinds):
        raise ValueError(f"kinds must be a list of kind names, got {kinds!r}")


def unique_index(items: Sequence) -> Tuple[List, Dict]:
    """Unique items in first-seen order, and item -> position (the matching tasks encode each image and text once)."""
    pos: Dict = {}
    for it in items:
        pos.setdefault(it, len(pos))
    return list(pos), pos
