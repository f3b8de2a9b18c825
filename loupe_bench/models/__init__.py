"""Model zoo: one interface (:class:`VLModel`) for CLIP, FILIP, LOUPE and pretrained checkpoints.

Families register into :data:`MODEL_CLASSES` (spec ``family`` -> class); every shipped spec (CLIP, FILIP,
LOUPE and its ablations) lives in ``baselines/*.yaml``, their shared towers in ``baselines/towers/*.yaml``. The built-in families register on import; ``loupe`` (another module) is
imported on first use (:func:`load_families`). Entry points: :func:`create_model` (``factory``), :func:`load_model`
(``sources``), :func:`save_model` / :func:`load_model_dir` (``checkpoint``, the model-directory format),
:func:`list_models`.
"""
from __future__ import annotations

from ._registry import MODEL_CLASSES, load_families
from .base import ImageFeatures, LossOutput, Regions, TextFeatures, TokenBatch, VLModel
from .checkpoint import load_model_dir, save_model
from .factory import available_specs, create_model, get_spec, list_models
from .sources import load_model, load_model_and_transforms

load_families()  # the one way a family registers: its module in FAMILY_MODULES (loud when one is missing)

__all__ = [
    "MODEL_CLASSES", "VLModel", "ImageFeatures", "TextFeatures", "TokenBatch", "LossOutput", "Regions",
    "create_model", "load_model", "load_model_and_transforms", "save_model", "load_model_dir", "list_models", "available_specs", "get_spec",
    "load_families",
]
