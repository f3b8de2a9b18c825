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
from dataclasses import dataclass, replace
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..errors import SpecError


class Unit(NamedTuple):
    """How values of one unit are shown: multiplied by ``scale``, labelled ``label``."""

    scale: float
    label: str


#: unit -> how it is shown (the stored result keeps its own unit)
UNITS: Dict[str, Unit] = {
    "fraction": Unit(100.0, "%"),
    "sum of fractions": Unit(100.0, "sum of %"),
    "percent": Unit(1.0, "percent"),
    "score": Unit(1.0, "score"),
    "count": Unit(1.0, "count"),
    "seconds": Unit(1.0, "seconds"),
}
#: ``higher``: a larger value is better (recall, accuracy); ``lower``: a smaller one is (a median rank, an error)
DIRECTIONS = ("higher", "lower")
#: the kind of a metric's 95 % interval: ``mean`` (percentile bootstrap of a mean of per-item values), ``corpus``
#: (percentile bootstrap of a statistic of the whole resampled set: corpus BLEU, CIDEr-D, COCO AP) or ``none``
INTERVALS = ("mean", "corpus", "none")
#: placeholder -> the regular expression of what it stands for
PLACEHOLDERS = {"<k>": r"\d+", "<x>": r"\d+(?:\.\d+)?"}
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


def unit_of(unit: str) -> Unit:
    """The :class:`Unit` of a unit name; an unknown unit is a :class:`SpecError`."""
    try:
        return UNITS[unit]
    except (KeyError, TypeError):
        raise SpecError(f"unknown unit {unit!r}; known: {', '.join(UNITS)}") from None


def shown_value(value: float, unit: str) -> float:
    """The displayed number: ``value · scale`` of ``unit`` (fractions as percent, RSUM as a sum of percents), a
    unit of scale 1 unchanged."""
    scale = unit_of(unit).scale
    return value * scale if scale != 1.0 else value


def shown_unit(unit: str) -> str:
    """How a value shown by :func:`shown_value` is labelled: ``%``, ``sum of %`` (RSUM), else the unit itself."""
    return unit_of(unit).label


@dataclass(frozen=True)
class Metric:
    """What one metric (or one family of metrics, ``name`` a pattern) means.

    Attributes:
        name: the exact name, or a pattern with ``<k>`` / ``<x>`` placeholders (module docstring); registered names
            hold no ``:``; :func:`metric_info` returns a copy named as asked (``acc@0.5:anchor``).
        direction: ``higher`` or ``lower`` (:data:`DIRECTIONS`): which values are better (the best mark of the
            tables, the regression gate's sign).
        unit: a key of :data:`UNITS`: the unit the value is stored in, which fixes its display scale.
        display: the short name of console tables, with the same placeholders (a decimal below 1 is written without
            its leading zero: ``acc@<x>`` → ``acc@.5``); empty: the name itself.
        precision: decimals every report table shows; values equal at this precision are a tie for the best mark.
        interval: the kind of its 95 % interval (:data:`INTERVALS`); ``none``: the metric never has one.
        order: where its columns sit in every report (ascending); metrics without one come after, by name.
        description: what the number is.
    """

    name: str
    direction: str = "higher"
    unit: str = "fraction"
    display: str = ""
    precision: int = 1
    interval: str = "mean"
    order: Optional[int] = None
    description: str = ""

    def __post_init__(self):
        where = f"metric {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"{where}: a name is a non-empty string")
        if self.direction not in DIRECTIONS:
            raise SpecError(f"{where}: direction must be one of {DIRECTIONS}, got {self.direction!r}")
        unit_of(self.unit)
        if self.interval not in INTERVALS:
            raise SpecError(f"{where}: interval must be one of {INTERVALS}, got {self.interval!r}")
        if not isinstance(self.precision, int) or isinstance(self.precision, bool) or self.precision < 0:
            raise SpecError(f"{where}: precision must be a non-negative integer, got {self.precision!r}")
        if self.order is not None and (not isinstance(self.order, int) or isinstance(self.order, bool)):
            raise SpecError(f"{where}: order must be an integer or None, got {self.order!r}")

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    @property
    def has_interval(self) -> bool:
        return self.interval != "none"

    @property
    def unit_label(self) -> str:
        """The label of displayed values (:func:`shown_unit`)."""
        return shown_unit(self.unit)

    def shown(self, value: float) -> float:
        """``value`` on the display scale (:func:`shown_value`)."""
        return shown_value(value, self.unit)

    @property
    def is_pattern(self) -> bool:
        return bool(_PLACEHOLDER.search(self.name))

    def matcher(self) -> "re.Pattern[str]":
        """The regular expression a metric name (without a breakdown tag) must match in full."""
        parts, pos = [], 0
        for m in _PLACEHOLDER.finditer(self.name):
            parts += [re.escape(self.name[pos:m.start()]), f"(?P<{m.group()[1:-1]}>{PLACEHOLDERS[m.group()]})"]
            pos = m.end()
        return re.compile("".join(parts + [re.escape(self.name[pos:])]))


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
    """Import :mod:`~loupe_bench.tasks.metric_catalog` once (the shipped task types' metrics; no torch)."""
    if not _State.catalog:
        from . import metric_catalog  # noqa: F401  (declares when imported)

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
