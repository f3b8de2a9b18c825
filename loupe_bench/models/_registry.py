"""The model-family registry (spec ``family`` -> model class with ``from_spec``), shared by every model module.

Everything that turns a spec into a class looks it up here (:func:`model_class`): the factory (a new model) and the
model-directory format (:mod:`loupe_bench.models.checkpoint`, a saved one). This module imports no other module of
``loupe_bench.models`` at import time; :func:`load_families` imports the family modules by name, on first use.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import SpecError
from ..registry import Registry, import_registering_modules

MODEL_CLASSES = Registry("model family")

#: modules whose import registers model families (imported when ``loupe_bench.models`` is)
FAMILY_MODULES = (
    "loupe_bench.models.clip",
    "loupe_bench.models.filip",
    "loupe_bench.models.sparc",
    "loupe_bench.models.siglip",
    "loupe_bench.models.pretrained_clip",
    "loupe_bench.models.loupe",
)


def load_families() -> None:
    """Import every module that registers a family (each once; a missing one is an ImportError naming it)."""
    import_registering_modules(FAMILY_MODULES)


def model_class(spec: Mapping[str, Any]):
    """The class registered for ``spec["family"]`` (a string; anything else is a :class:`SpecError`)."""
    load_families()
    if "family" not in spec:
        raise SpecError(f"model spec {spec.get('name', '?')!r}: missing required key 'family'")
    if not isinstance(spec["family"], str):
        raise SpecError(f"model spec {spec.get('name', '?')!r}: field 'family': must be a string naming a model "
                        f"family, got {spec['family']!r}")
    return MODEL_CLASSES.get(spec["family"])
