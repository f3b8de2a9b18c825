"""Regression gate: compare results with a committed reference (``results/reference/NAME.json``).

Reference format (``docs/architecture.md``)::

    {"schema": "loupe-bench/reference/v1",
     "rows": [{"model", "task", "split", "metric", "value", "abs_tol", "rel_tol", "spread", "n_seeds", "units"}],
     "fingerprints": {task: fingerprint}, "created_from": "...", "seeds": [...], "tolerance_rule": "..."}

A row's tolerance band is ``band = max(abs_tol, rel_tol · |reference|)``; with ``δ = value − reference`` the status is

* ``pass``       when ``|δ| ≤ band``,
* ``regressed``  when ``δ < −band`` (higher is better; for lower-is-better metrics the sign flips: a metric's
  direction is its registered one, :func:`~loupe_bench.tasks.metric_registry.metric_info`),
* ``improved``   when ``δ > band``,
* ``missing``    when the results hold no value for the row.

Tolerances come from measured seed-to-seed spread (:func:`build_reference`):
``abs_tol = max(abs_floor, k · s_eff · √(1 + 1/n), (max − min) / 2)`` with ``n`` the reference's seeds,
``s_eff = max(s, pool · s_pool)``, ``s`` the row's sample standard deviation over seeds and ``s_pool`` the RMS of
the spreads of the same task, split and metric over the reference's models; ``rel_tol`` a fixed relative slack.
``√(1 + 1/n)`` makes the band a prediction band for one new run (a check runs one seed against an ``n``-seed mean);
the pooled floor guards against a spread that three seeds happened to make small. Measured across two machines
(``docs/loupe.md``, "Across machines"): a run on another machine differs from the reference like a run with
another seed, so the same band covers both. Results whose protocol fingerprint differs from the reference's are refused (:class:`SpecError`): numbers of
different protocols are never compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import DataError, SpecError
from ..tasks.metric_registry import metric_info
from ..tasks.results import SEED_MAX, registered_metric
from ..utils.io import atomic_write_json, read_json
from .escape import console as console_text
from .results_io import MetricRow, load_rows, mean_std, read_manifest

REFERENCE_SCHEMA = "loupe-bench/reference/v1"
STATUSES = ("pass", "regressed", "improved", "missing")


@dataclass(frozen=True)
class ToleranceConfig:
    """How tolerance bands are derived from seed-to-seed spread.

    Attributes:
        k: multiplier of the seed-to-seed standard deviation.
        pool: the fraction of the pooled spread (RMS over the reference's models of one task, split and metric)
            below which a row's own spread is not trusted.
        abs_floor: minimum absolute tolerance (metric units, e.g. fraction).
        rel_tol: relative tolerance of every row.
    """

    k: float = 3.0
    abs_floor: float = 0.03
    rel_tol: float = 0.05
    pool: float = 0.5


class GateRow(NamedTuple):
    model: str
    task: str
    split: str
    metric: str
    reference: float
    value: Optional[float]
    delta: Optional[float]
    band: float
    status: str
    units: str = "fraction"


class GateReport(NamedTuple):
    rows: List[GateRow]
    reference_path: str
    extra_rows: List[Tuple[str, str, str, str]]   # in the results but not in the reference (informational)

    @property
    def failed(self) -> bool:
        return any(r.status in ("regressed", "missing") for r in self.rows)

    def counts(self) -> Dict[str, int]:
        return {s: sum(r.status == s for r in self.rows) for s in STATUSES}


def _group(rows: Sequence[MetricRow]) -> Dict[Tuple[str, str, str, str], List[MetricRow]]:
    out: Dict[Tuple[str, str, str, str], List[MetricRow]] = {}
    for r in rows:
        out.setdefault(r.key, []).append(r)
    return out


def task_fingerprints(rows: Sequence[MetricRow]) -> Dict[str, str]:
    """task name -> fingerprint; a task seen with two fingerprints is an error (two protocols under one name)."""
    fps: Dict[str, str] = {}
    for r in rows:
        old = fps.setdefault(r.task, r.fingerprint)
        if old != r.fingerprint:
            raise SpecError(f"task {r.task!r} appears with two protocol fingerprints ({old} and {r.fingerprint}); "
                            "results of different protocols are never merged")
    return fps


def build_reference(results_dirs: Sequence, *, config: ToleranceConfig = ToleranceConfig(),
                    created_from: str = "") -> Dict[str, Any]:
    """Build a reference from one or more result folders (one per seed, or one folder holding several seeds).

    For each (model, task, split, metric): ``value`` = mean over seeds, ``spread`` = sample std over seeds,
    ``abs_tol = max(abs_floor, k · spread, (max − min) / 2)``, ``rel_tol`` from ``config``.

    Raises:
        DataError: the results hold no metric (a reference without rows gates nothing), or as
            :func:`~loupe_bench.report.results_io.load_rows`.
    """
    rows = load_rows(list(results_dirs), same_name="refuse")
    fps = task_fingerprints(rows)
    groups = sorted(_group(rows).items())
    pooled = pooled_spreads(groups)
    out_rows = []
    for key, grp in groups:
        vals = [r.value for r in grp]
        mean, std = mean_std(vals)
        half_range = (max(vals) - min(vals)) / 2.0
        s_eff = max(std, config.pool * pooled.get(key[1:], 0.0))
        abs_tol = max(config.abs_floor, config.k * s_eff * math.sqrt(1.0 + 1.0 / len(vals)), half_range)
        out_rows.append({
            "model": key[0], "task": key[1], "split": key[2], "metric": key[3],
            "value": round(mean, 6), "spread": round(std, 6), "n_seeds": len(vals),
            "seeds": sorted({r.seed for r in grp if r.seed is not None}),
            "abs_tol": round(abs_tol, 6), "rel_tol": config.rel_tol, "units": grp[0].units,
            "higher_is_better": metric_info(key[3]).higher_is_better,
        })
    if not out_rows:
        raise DataError("the results hold no metric to gate; a reference without rows gates nothing",
                        file=", ".join(str(d) for d in results_dirs))
    seeds = sorted({r.seed for r in rows if r.seed is not None})
    return {
        "schema": REFERENCE_SCHEMA,
        "rows": out_rows,
        "fingerprints": dict(sorted(fps.items())),
        "created_from": created_from or ", ".join(str(d) for d in results_dirs),
        "seeds": seeds,
        "tolerance_rule": (f"band = max(abs_tol, rel_tol*|value|); abs_tol = max({config.abs_floor}, "
                           f"{config.k}*max(std over seeds, {config.pool}*RMS std of the metric over models)"
                           f"*sqrt(1 + 1/seeds), half range over seeds); rel_tol = {config.rel_tol}"),
    }


def pooled_spreads(groups: Sequence[Tuple[Tuple[str, str, str, str], List[MetricRow]]]
                   ) -> Dict[Tuple[str, str, str], float]:
    """``(task, split, metric) → s_pool``: the RMS of the seed-to-seed standard deviations of the models that have
    at least two seeds of that row."""
    sq: Dict[Tuple[str, str, str], List[float]] = {}
    for key, grp in groups:
        if len(grp) >= 2:
            sq.setdefault(key[1:], []).append(mean_std([r.value for r in grp])[1] ** 2)
    return {k: math.sqrt(sum(v) / len(v)) for k, v in sq.items()}


#: a reference row's fields: name → (type, required)
_ROW_FIELDS = {"model": (str, True), "task": (str, True), "split": (str, True), "metric": (str, True),
               "value": (float, True), "abs_tol": (float, True), "rel_tol": (float, True),
               "higher_is_better": (bool, False), "units": (str, False), "spread": (float, False),
               "n_seeds": (int, False), "seeds": (list, False)}
#: optional top-level fields of a reference and their types
_REFERENCE_FIELDS = (("schema", str), ("seeds", list), ("created_from", str), ("tolerance_rule", str),
                     ("reproduction", dict))


def load_reference(path) -> Dict[str, Any]:
    """Read and validate a reference JSON (bounded: a regular file within the ``reference`` size limit).

    Rule: an object with ``rows`` (a non-empty list: a reference without rows gates nothing) and ``fingerprints``
    (a non-empty mapping task → fingerprint string); ``schema``, when present, :data:`REFERENCE_SCHEMA`;
    ``seeds``, when present, a list of seeds (integers in ``0..2**32-1``); ``created_from`` and ``tolerance_rule``
    strings and ``reproduction`` an object when present. Every row an object with ``model``, ``task``, ``split``,
    ``metric`` non-empty strings, finite ``value``, ``abs_tol``, ``rel_tol`` (tolerances ≥ 0), optional fields
    typed (``spread`` finite and ≥ 0, ``n_seeds`` ≥ 1, ``seeds`` a list of seeds), a fingerprint for its task — a
    reference that cannot tell which protocol its numbers belong to gates nothing — and no two rows with one
    (model, task, split, metric): which of them would gate is undefined.

    Raises:
        DataError: naming the file and the row of the first problem.
    """
    ref = read_json(path, kind="reference")
    where = str(path)
    if not isinstance(ref, dict) or not isinstance(ref.get("rows"), list):
        raise DataError("a reference needs 'rows' (a list) and 'fingerprints' (task → fingerprint)", file=where)
    _check_reference_top(ref, where)
    fps = ref["fingerprints"]
    seen: Dict[Tuple[str, str, str, str], int] = {}
    for i, row in enumerate(ref["rows"]):
        _check_reference_row(row, fps, where, f"row {i}")
        key = (row["model"], row["task"], row["split"], row["metric"])
        if key in seen:
            raise DataError(f"rows {seen[key]} and {i} are both {' · '.join(key)}; one row per model, task, split "
                            "and metric", file=where, record=f"row {i}")
        seen[key] = i
    return ref


def _check_reference_top(ref: Dict[str, Any], where: str) -> None:
    """The top-level fields of :func:`load_reference`'s rule, rows excepted."""
    for key, typ in _REFERENCE_FIELDS:
        if key in ref and not isinstance(ref[key], typ):
            raise DataError(f"field {key!r} must be {typ.__name__}, got {ref[key]!r}"[:200], file=where)
    if "schema" in ref and ref["schema"] != REFERENCE_SCHEMA:
        raise DataError(f"unknown reference schema {ref['schema']!r} (expected {REFERENCE_SCHEMA})", file=where)
    if "seeds" in ref:
        _check_seeds(ref["seeds"], where, "seeds")
    if not ref["rows"]:
        raise DataError("a reference without rows gates nothing (every result would pass unchecked)", file=where)
    fps = ref.get("fingerprints")
    if not isinstance(fps, dict) or not fps:
        raise DataError("a reference needs 'fingerprints' (a non-empty mapping task → protocol fingerprint); "
                        "without them results of another protocol would be gated", file=where)
    for task, fp in fps.items():
        if not isinstance(fp, str) or not fp:
            raise DataError(f"fingerprint must be a non-empty string, got {fp!r}", file=where,
                            record=f"fingerprints[{task!r}]")


def _check_seeds(seeds: List[Any], where: str, record: str) -> None:
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
            raise DataError(f"seeds must be integers in 0..{SEED_MAX}, got {seed!r}"[:200], file=where,
                            record=record)


def _check_reference_row(row: Any, fps: Dict[str, Any], where: str, record: str) -> None:
    if not isinstance(row, dict):
        raise DataError("a reference row must be an object", file=where, record=record)
    for field, (typ, required) in _ROW_FIELDS.items():
        if field not in row:
            if required:
                raise DataError(f"missing field {field!r}", file=where, record=record)
            continue
        v = row[field]
        if typ is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        elif typ is bool:
            ok = isinstance(v, bool)
        else:
            ok = isinstance(v, typ) and not isinstance(v, bool) and (typ is not str or bool(v) or field == "units")
        if not ok:
            kind = "a finite number" if typ is float else f"a {'non-empty ' if typ is str else ''}{typ.__name__}"
            raise DataError(f"{field} must be {kind}, got {v!r}"[:200], file=where, record=record)
    if row["abs_tol"] < 0 or row["rel_tol"] < 0 or row.get("spread", 0) < 0:
        raise DataError("tolerances and spread must be non-negative", file=where, record=record)
    if row.get("n_seeds", 1) < 1:
        raise DataError("n_seeds must be at least 1", file=where, record=record)
    if "seeds" in row:
        _check_seeds(row["seeds"], where, record)
    if row["task"] not in fps:
        raise DataError(f"task {row['task']!r} has no entry in 'fingerprints'", file=where, record=record)
    _check_row_metric(row, where, record)


def _check_row_metric(row: Dict[str, Any], where: str, record: str) -> None:
    """A reference row's metric is a registered one, and the direction and units the row records (when it does)
    are the metric's registered ones: a reference built when they differed gates the wrong way."""
    info = registered_metric(row["metric"], where, record)
    if row.get("higher_is_better", info.higher_is_better) != info.higher_is_better:
        raise DataError(f"{row['metric']!r} is recorded {'higher' if row['higher_is_better'] else 'lower'}-is-better, "
                        f"registered {info.direction}-is-better; rebuild the reference (check --update)",
                        file=where, record=record)
    if row.get("units") and row["units"] != info.unit:
        raise DataError(f"{row['metric']!r} is recorded in units {row['units']!r}, registered {info.unit!r}; rebuild "
                        "the reference (check --update)", file=where, record=record)


def check_rows(rows: Sequence[MetricRow], reference: Dict[str, Any], reference_path: str = "") -> GateReport:
    """Compare metric rows with a loaded reference; see the module docstring for the status rule.

    Raises:
        SpecError: when a task's protocol fingerprint differs from the reference's.
    """
    fps = task_fingerprints(rows)
    ref_fps: Dict[str, str] = reference.get("fingerprints", {})
    for task, fp in fps.items():
        if task in ref_fps and ref_fps[task] != fp:
            raise SpecError(f"task {task!r}: protocol fingerprint {fp} differs from the reference's {ref_fps[task]} "
                            f"({reference_path or 'reference'}); refusing to compare different protocols")
    groups = _group(rows)
    out: List[GateRow] = []
    ref_keys = set()
    for ref in reference["rows"]:
        key = (ref["model"], ref["task"], ref["split"], ref["metric"])
        ref_keys.add(key)
        refv = float(ref["value"])
        band = max(float(ref["abs_tol"]), float(ref["rel_tol"]) * abs(refv))
        info = metric_info(key[3])
        grp = groups.get(key)
        if not grp:
            out.append(GateRow(*key, refv, None, None, band, "missing", info.unit))
            continue
        value, _ = mean_std(r.value for r in grp)
        delta = value - refv
        signed = delta if info.higher_is_better else -delta
        status = "pass" if abs(delta) <= band + 1e-12 else ("improved" if signed > 0 else "regressed")
        out.append(GateRow(*key, refv, value, delta, band, status, info.unit))
    extra = sorted(k for k in groups if k not in ref_keys)
    return GateReport(out, str(reference_path), extra)


def check(results_dir, reference_path) -> GateReport:
    """Load the reference and the results and run the gate (:func:`check_rows`). Two models sharing a name in the
    results are refused (:func:`~loupe_bench.report.results_io.model_labels`), never gated as one mean."""
    reference = load_reference(reference_path)
    return check_rows(load_rows(results_dir, same_name="refuse"), reference, str(reference_path))


def update_reference(results_dirs: Sequence, reference_path, *, config: Optional[ToleranceConfig] = None,
                     created_from: str = "") -> Dict[str, Any]:
    """Deliberately rewrite ``reference_path`` (atomically) from ``results_dirs``.

    When the reference exists and no ``config`` is given, its tolerance rule is kept per row: a row's ``abs_tol`` is
    never narrowed below what was recorded (the recorded spread came from several seeds; a one-seed update cannot
    measure spread).
    """
    path = Path(reference_path)
    old = _previous_reference(path)
    ref = build_reference(results_dirs, config=config or ToleranceConfig(), created_from=created_from)
    if old is not None and config is None:
        old_rows = {(r["model"], r["task"], r["split"], r["metric"]): r for r in old["rows"]}
        for row in ref["rows"]:
            prev = old_rows.get((row["model"], row["task"], row["split"], row["metric"]))
            if prev is not None and row["n_seeds"] < 2:
                row["abs_tol"] = max(row["abs_tol"], float(prev["abs_tol"]))
                row["rel_tol"] = max(row["rel_tol"], float(prev["rel_tol"]))
                row["spread"] = prev.get("spread", row["spread"])
    for d in results_dirs:                      # provenance of a reproduction's results
        for man_path in (Path(d) / "reproduce.json", Path(d).parent / "reproduce.json"):
            if man_path.is_file():
                man = read_manifest(man_path)
                ref["reproduction"] = {k: man.get(k) for k in ("kind", "quick", "seeds", "plan", "tasks")}
                ref["reproduction"]["code_version"] = (man.get("environment") or {}).get("code_version")
                ref["reproduction"]["timings"] = man.get("timings")
                break
        if "reproduction" in ref:
            break
    atomic_write_json(path, ref)
    return ref


def _previous_reference(path: Path) -> Optional[Dict[str, Any]]:
    """The reference being rewritten, when there is a valid one (a malformed one keeps no tolerances)."""
    if not path.exists():
        return None
    try:
        return load_reference(path)
    except DataError:
        return None


def _record(r: GateRow) -> List[str]:
    """One gated row as lines of at most 80 columns (names never cut): model · task · split, then the metric and its
    numbers (on a third line when a long metric name leaves no room). Numbers are shown as in the reports
    (the metric's display scale, :func:`~loupe_bench.tasks.metric_registry.shown_value`: fractions in %, RSUM as a
    sum of % on 0–600), the gate itself compares the stored values."""
    info = metric_info(r.metric)
    shown = info.unit_label
    scaled = shown != r.units
    digits, suffix = (2, f" ({shown})") if scaled else (4, "" if r.units == "fraction" else f" ({r.units})")
    pct = info.shown if scaled else float
    value = "–" if r.value is None else f"{pct(r.value):.{digits}f}"
    delta = "–" if r.delta is None else f"{pct(r.delta):+.{digits}f}"
    numbers = f"reference {pct(r.reference):.{digits}f}, value {value}, Δ {delta}, band ±{pct(r.band):.{digits}f}"
    numbers += suffix
    head = f"  {r.model} · {r.task} · {r.split}"
    if len(f"    {r.metric}: {numbers}") <= 80:
        return [head, f"    {r.metric}: {numbers}"]
    return [head, f"    {r.metric}:", f"      {numbers}"]


#: what each status means, for the list headings
STATUS_HELP = {"regressed": "worse than the reference by more than the band", "missing": "in the reference, not in "
               "the results", "improved": "better than the reference by more than the band (informational)",
               "pass": "within the band"}


def gate_table(report: GateReport):
    """A rich Table with one row per task · split and the count of gated rows of each status (fits 80 columns:
    names are never cut)."""
    from rich.table import Table
    from rich.text import Text

    style = {"pass": "green", "regressed": "bold red", "improved": "cyan", "missing": "bold magenta"}
    per: Dict[Tuple[str, str], Dict[str, int]] = {}
    for r in report.rows:
        per.setdefault((r.task, r.split), {s: 0 for s in STATUSES})[r.status] += 1
    t = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold underline")
    t.add_column("task", no_wrap=True)
    t.add_column("split", no_wrap=True)
    for s in STATUSES:
        t.add_column(s, justify="right", no_wrap=True)
    for (task, split), c in sorted(per.items()):
        cells = [f"[{style[s]}]{c[s]}[/{style[s]}]" if c[s] and s != "pass" else str(c[s]) for s in STATUSES]
        t.add_row(Text(task), Text(split), *cells)
    return t


def print_gate(console, report: GateReport, name: str = "", show_all: bool = False) -> None:
    """The gate's console output: a title with the counts, the per-task · split count table, then every row that
    is not ``pass`` (all rows with ``show_all``) as two-line records grouped by status."""
    c = report.counts()
    console.print(f"[bold]regression gate[/bold] vs {console_text(name or report.reference_path)}"
                  + (f" ({console_text(report.reference_path)})" if name and name != report.reference_path else ""),
                  emoji=False)
    console.print(f"{len(report.rows)} gated rows: " + ", ".join(f"{n} {s}" for s, n in c.items()))
    console.print(gate_table(report))
    for status in (("regressed", "missing", "improved", "pass") if show_all else ("regressed", "missing",
                                                                                   "improved")):
        rows = [r for r in report.rows if r.status == status]
        if not rows:
            continue
        console.print(f"[bold]{status}[/bold] ({len(rows)}): {STATUS_HELP[status]}", highlight=False)
        for r in sorted(rows, key=lambda r: (r.task, r.split, r.model, r.metric)):
            for line in _record(r):
                console.print(line, highlight=False, markup=False, emoji=False)
