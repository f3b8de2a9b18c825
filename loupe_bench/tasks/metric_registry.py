"""What a metric means, in one place: better up or down, unit and display scale, short name, precision, the kind of
its interval and where its columns sit in a report.

Every task type declares the metrics it emits (:func:`declare_metrics`): the shipped ones in the torch-free
:mod:`~loupe_bench.tasks.metric_catalog`, so the report and the gate read meanings without loading a model; a task
type from elsewhere in its own module, which the registry imports (with every adapter) only when a name is not in
the catalog. The result reader, the report tables, plots, regression gate, exports and the paper comparison ask
:func:`metric_info`. A name that no declaration covers is an error (:class:`~loupe_bench.errors.SpecError`), never a
guess.

Names. A declaration's ``name`` is an exact metric name (``rsum``) or a pattern whose placeholders stand for a
parameter of the protocol: ``<k>`` an integer (``i2t_R@<k>`` covers ``i2t_R@1`` and ``i2t_R@10``), ``<x>`` a decimal
number (``acc@<x>`` covers ``acc@0.5``). Any metric may also be reported on a subset of the items,
``NAME:<tag>`` (``acc@0.5:anchor``, ``top1:small``, ``mean_I:two-part``), which means what ``NAME`` means. An exact
name wins over a pattern; a name that two patterns cover is an error.

Units (:data:`UNITS`). A value is stored in its unit and shown as ``value · scale``: a fraction ×100 as percent, a
sum of fractions ×100 as a sum of percents (RSUM, 0–600 for six recalls, the scale CLIP_benchmark and the papers
write), every other unit as stored.

Adding a metric: one :class:`Metric` passed to :func:`declare_metrics` (in the catalog for a shipped task type), and
the code that computes it; every report format then shows it with its unit, direction and name.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Dict, List, Tuple

from ..errors import SpecError
from .metric_types import (  # noqa: F401  (re-exported: the registry is where callers look a metric up)
    DIRECTIONS, INTERVALS, PLACEHOLDERS, UNITS, Metric, Unit, _PLACEHOLDER, shown_unit, shown_value, unit_of,
)


class _State:
    """The registered metrics: exact names, patterns (with their compiled matchers), the declarations of each task
    type, resolved names, and whether the catalog and the task types' modules have been imported."""

    exact: Dict[str, Metric] = {}
    patterns: Dict[str, Tuple["re.Pattern[str]", Metric]] = {}
    by_task: Dict[str, List[str]] = {}
    resolved: Dict[str, Metric] = {}
    catalog = False
    adapters = False


def register_metric(metric: Metric) -> Metric:
    """Register ``metric`` (an exact name or a pattern) and return it.

    Registering an equal definition again does nothing; a different definition under a registered name is a
    :class:`SpecError` naming both, so two modules never disagree silently about what a name means.
    """
    if not isinstance(metric, Metric):
        raise SpecError(f"register_metric needs a Metric, got {type(metric).__name__}")
    leftover, found = _PLACEHOLDER.sub("", metric.name), _PLACEHOLDER.findall(metric.name)
    if ":" in metric.name:
        raise SpecError(f"metric {metric.name!r}: a registered name has no ':' (':' starts a breakdown tag)")
    if "<" in leftover or ">" in leftover or len(found) != len(set(found)):
        raise SpecError(f"metric {metric.name!r}: placeholders are {', '.join(PLACEHOLDERS)}, each at most once")
    known = _State.exact.get(metric.name) or (_State.patterns.get(metric.name) or (None, None))[1]
    if known is not None:
        if known != metric:
            raise SpecError(f"metric {metric.name!r} registered twice with different meanings: {known} and {metric}")
        return metric
    if metric.is_pattern:
        _State.patterns[metric.name] = (metric.matcher(), metric)
    else:
        _State.exact[metric.name] = metric
    _State.resolved.clear()
    return metric


def declare_metrics(task_type: str, *metrics: Metric) -> None:
    """Register each of ``metrics`` (:func:`register_metric`) as emitted by ``task_type``
    (:func:`task_metrics`)."""
    names = _State.by_task.setdefault(task_type, [])
    for metric in metrics:
        register_metric(metric)
        if metric.name not in names:
            names.append(metric.name)


def task_metrics(task_type: str) -> List[Metric]:
    """The metrics ``task_type`` declares (exact names and patterns), in declaration order."""
    _load_catalog()
    if task_type not in _State.by_task:
        _load_adapters()
    if task_type not in _State.by_task:
        raise SpecError(f"task type {task_type!r} declares no metrics; declaring: {', '.join(sorted(_State.by_task))}")
    return [_State.exact.get(n) or _State.patterns[n][1] for n in _State.by_task[task_type]]


def _load_catalog() -> None:
    """Declare the entries of :mod:`~loupe_bench.tasks.metric_catalog` once (the shipped task types' metrics; no
    torch)."""
    if not _State.catalog:
        from .metric_catalog import DECLARATIONS

        for task_type, metrics in DECLARATIONS.items():
            declare_metrics(task_type, *metrics)
        _State.catalog = True


def _load_adapters() -> bool:
    """Import every task type's module once (one may declare metrics the catalog lacks); False when already
    imported, so a caller retries a lookup only after something new was loaded."""
    if _State.adapters:
        return False
    from . import load_adapters

    load_adapters()
    _State.adapters = True
    return True


def _short_number(text: str) -> str:
    """``0.5`` → ``.5`` (a decimal below 1 without its leading zero); anything else unchanged."""
    return text[1:] if text.startswith("0.") else text


def _family(base: str) -> Tuple[Metric, Dict[str, str]]:
    """The registered metric covering ``base`` (a name without a breakdown tag) and its placeholder values."""
    if base in _State.exact:
        return _State.exact[base], {}
    hits = [(m, match.groupdict()) for rx, m in _State.patterns.values() for match in [rx.fullmatch(base)] if match]
    if len(hits) > 1:
        raise SpecError(f"metric {base!r} matches several registered patterns "
                        f"({', '.join(m.name for m, _ in hits)}); make one of them exact")
    if not hits:
        known = ", ".join(sorted(_State.exact) + sorted(_State.patterns))
        raise SpecError(f"unknown metric {base!r}: no task type declares it (declare it with "
                        f"loupe_bench.tasks.metric_registry.declare_metrics in the module that computes it); "
                        f"known: {known}")
    return hits[0]


def metric_info(name: str) -> Metric:
    """What the metric ``name`` means: the registered :class:`Metric` covering it, with ``name`` the given name and
    ``display`` its short name (placeholders filled in; a breakdown ``NAME:<tag>`` keeps its tag).

    Raises:
        SpecError: no registered metric covers ``name``, or two patterns do.
    """
    if not isinstance(name, str):
        raise SpecError(f"a metric name is a string, got {name!r}")
    if name in _State.resolved:
        return _State.resolved[name]
    _load_catalog()
    base, sep, tag = name.partition(":")
    if not base or (sep and not tag):
        raise SpecError(f"malformed metric name {name!r} (NAME or NAME:<tag>)")
    try:
        family, values = _family(base)
    except SpecError:
        if not _load_adapters():
            raise
        family, values = _family(base)
    display = family.display or base
    for key, value in values.items():
        display = display.replace(f"<{key}>", _short_number(value) if key == "x" else value)
    info = replace(family, name=name, display=display + (f":{tag}" if sep else ""))
    _State.resolved[name] = info
    return info
