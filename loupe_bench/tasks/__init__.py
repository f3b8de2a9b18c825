"""Task protocols: specs in ``tasks/*.yaml``, one adapter class per task type (:data:`TASK_TYPES`).

Every model goes through the same adapter unchanged, using only the :class:`~loupe_bench.models.base.VLModel`
interface. ``evaluate()`` (in :mod:`loupe_bench.tasks.evaluate`) runs models × tasks and writes result JSON.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import SpecError
from ..registry import Registry, import_registering_modules, registering_modules
from ..specs import load_named, load_yaml, spec_dir, spec_index

TASK_TYPES = Registry("task type")

# modules that register adapter classes into TASK_TYPES when imported (imported on first use: they need torch)
_ADAPTER_MODULES = registering_modules(
    "loupe_bench.tasks.retrieval",
    "loupe_bench.tasks.classification",
    "loupe_bench.tasks.linear_probe",
    "loupe_bench.tasks.captioning",
    "loupe_bench.tasks.detection",
    "loupe_bench.tasks.grounding",
    "loupe_bench.tasks.token_interaction",
    "loupe_bench.tasks.region_classification",
    "loupe_bench.tasks.caption_selection",
    "loupe_bench.tasks.two_by_two",
)


def load_adapters() -> Registry:
    """Import the adapter modules (registering them) and return :data:`TASK_TYPES`."""
    import_registering_modules(_ADAPTER_MODULES)
    return TASK_TYPES


def _shipped() -> Dict[str, Path]:
    """Name -> file of every shipped task spec (empty when the folder is missing; a malformed file is an error)."""
    try:
        spec_dir("tasks")
    except SpecError:
        return {}
    return spec_index("tasks")


def list_tasks() -> List[Tuple[str, str]]:
    """``(name, description)`` of every shipped task spec (for ``loupe-bench list tasks``)."""
    rows = []
    for name, path in sorted(_shipped().items()):
        data = load_yaml(path)
        rows.append((name, f"{data.get('type', '?')}: {data.get('description', '')}".strip()))
    return rows


def load_task(name_or_path: Union[str, Path, Dict[str, Any]]):
    """A :class:`~loupe_bench.tasks.spec.TaskSpec` from a shipped name, a YAML path or a mapping.

    The type-specific ``options`` are converted once by the adapter
    (:meth:`~loupe_bench.tasks.base.TaskAdapter.parse_options`: validated, defaults filled in): the spec keeps the
    result (``parsed_options``, what the adapter runs with) and its fields as ``options``, so the normalised spec (and
    the fingerprint) is complete.
    """
    from .spec import parse_task_spec

    if isinstance(name_or_path, dict):
        data, source = dict(name_or_path), None
    else:
        data, path = load_named("tasks", name_or_path)
        source = str(path)
    spec = parse_task_spec(data, source)
    adapter = load_adapters().get(spec.type)
    spec.parsed_options = adapter.parse_options(spec)
    spec.options = asdict(spec.parsed_options)
    if hasattr(adapter, "validate_spec"):
        adapter.validate_spec(spec)
    _check_metric_names(spec, adapter, source)
    return spec


def _check_metric_names(spec, adapter, source: Optional[str]) -> None:
    """Every metric a spec asks for is one its adapter computes (``known_metrics``); else one SpecError."""
    known = adapter.known_metrics(spec.options) if hasattr(adapter, "known_metrics") else None
    if known is None:
        return
    unknown = [m for m in spec.metrics if m not in known]
    if unknown:
        raise SpecError(f"{source or spec.name}: field 'metrics': unknown metric(s) {', '.join(map(repr, unknown))} "
                        f"for type {spec.type!r}; known with these options: {', '.join(known)}")


__all__ = ["TASK_TYPES", "list_tasks", "load_task", "load_adapters", "spec_dir"]
