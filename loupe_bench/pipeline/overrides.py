"""Spec mappings as a plan runs them: the shipped model and task specs with the plan's dotted overrides applied."""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..specs import set_dotted
from .plan import SyntheticPlan


def apply_overrides(data: Dict[str, Any], name: str, overrides: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Apply dotted ``overrides`` to the spec mapping ``data`` (named ``name``) in place and return it.

    ``"dotted.key": value`` replaces an existing key only; ``"NAME:dotted.key": value`` applies to the spec named
    ``NAME`` only, creating the key (and missing parent mappings) when needed (both through
    :func:`~loupe_bench.specs.set_dotted`).
    """
    for key, value in (overrides or {}).items():
        create = ":" in key  # "name:dotted.key" applies to that spec only, creating the key if needed
        if create:
            only, key = key.split(":", 1)
            if only != name:
                continue
        set_dotted(data, key, value, create=create)
    return data


def model_spec_mapping(name: str, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The shipped model spec ``name`` as a mapping with the plan's dotted ``model_overrides`` applied (rules of
    :func:`apply_overrides`), e.g. ``{"image_tower.kwargs.depth": 1, "text_tower.config.num_hidden_layers": 1}``."""
    from ..models.factory import get_spec

    return apply_overrides(get_spec(name), name, overrides)


def plan_model(plan: SyntheticPlan, name: str):
    """What the train stage passes for model ``name``: the spec name (no ``model_overrides``), else the spec
    mapping with the overrides applied."""
    return model_spec_mapping(name, plan.model_overrides) if plan.model_overrides else name


def task_spec_mapping(name: str, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The shipped task spec ``name`` as a mapping, with dotted ``overrides`` applied where the key exists.

    A key ``"TASK:dotted.key"`` applies to the task named ``TASK`` only, and is created when missing (e.g.
    ``"synthetic-captioning:options.use_java"``).
    """
    from ..specs import load_named

    data, _ = load_named("tasks", name)
    return apply_overrides(data, name, overrides)
