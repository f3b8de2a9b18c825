"""The model-family registry (spec ``family`` -> model class with ``from_spec``), shared by every model module."""
from __future__ import annotations

from ..registry import Registry

MODEL_CLASSES = Registry("model family")
