"""What one metric is: :class:`Metric` (direction, unit, display name, precision, interval kind, report order) and
the units values are stored and shown in. The registry of names is :mod:`~loupe_bench.tasks.metric_registry`; the
shipped task types' entries are :mod:`~loupe_bench.tasks.metric_catalog`'s.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional

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
