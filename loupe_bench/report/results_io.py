"""Read result JSONs (schema ``loupe-bench/result/v1``) into flat metric rows.

A result JSON holds one (model, task, split); see ``docs/architecture.md``. Reports, the paper comparison and the
regression gate all work on :class:`MetricRow` lists, one row per (result, metric).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import DataError
from ..utils.io import read_json

RESULT_SCHEMA = "loupe-bench/result/v1"

#: rows a task reports beside the models that are not models (``reference_rows`` of a result): the expected
#: accuracy of a uniform pick among the candidates, and the bag-of-attributes oracle of the grounding tasks
REFERENCE_ROWS = ("chance", "attribute-oracle")

#: the protocol details a result records in ``extra`` that a table title names (what makes two protocols differ)
PROTOCOL_LABEL_KEYS = (("region_scoring", "{} region scoring"), ("proposal_source", "candidates: {}"),
                       ("query", "queries: {}"))


def protocol_label(extra: Dict[str, Any]) -> str:
    """``"shared region scoring · candidates: gt-boxes · queries: sentence"`` from a result's ``extra``."""
    return " · ".join(fmt.format(extra[k]) for k, fmt in PROTOCOL_LABEL_KEYS if extra.get(k) is not None)


class MetricRow(NamedTuple):
    """One metric of one result file."""

    model: str
    task: str
    task_type: str
    dataset: str
    split: str
    fingerprint: str
    metric: str
    value: float
    ci_low: Optional[float]
    ci_high: Optional[float]
    units: str
    seed: Optional[int]
    path: str

    @property
    def key(self) -> Tuple[str, str, str, str]:
        """(model, task, split, metric): the identity of a row in a regression reference."""
        return (self.model, self.task, self.split, self.metric)


def _require(obj: Dict[str, Any], key: str, path: Path, kind: type) -> Any:
    if key not in obj:
        raise DataError(f"missing field {key!r}", file=str(path))
    val = obj[key]
    if not isinstance(val, kind):
        raise DataError(f"field {key!r} must be {kind.__name__}, got {type(val).__name__}", file=str(path))
    return val


def parse_result(obj: Any, path: Path) -> List[MetricRow]:
    """Validate one result object and flatten its metrics into rows.

    Raises:
        DataError: when a required field is missing or malformed (names the file and the metric).
    """
    if not isinstance(obj, dict):
        raise DataError("result JSON must be an object", file=str(path))
    schema = obj.get("schema")
    if schema != RESULT_SCHEMA:
        raise DataError(f"unknown result schema {schema!r} (expected {RESULT_SCHEMA!r})", file=str(path))
    model = _require(obj, "model", path, dict)
    task = _require(obj, "task", path, dict)
    metrics = _require(obj, "metrics", path, dict)
    name = model.get("name")
    if not isinstance(name, str) or not name:
        raise DataError("model.name missing", file=str(path))
    for field in ("name", "type", "split", "fingerprint"):
        if not isinstance(task.get(field), str) or not task.get(field):
            raise DataError(f"task.{field} missing", file=str(path))
    seed = obj.get("seed")
    rows = _metric_rows(name, metrics, task, seed, path)
    refs = obj.get("reference_rows") or {}
    if not isinstance(refs, dict):
        raise DataError("reference_rows must be an object", file=str(path))
    for ref_name, ref_metrics in sorted(refs.items()):
        if not isinstance(ref_metrics, dict):
            raise DataError("a reference row must map metric names to entries", file=str(path), record=ref_name)
        rows.extend(_metric_rows(str(ref_name), ref_metrics, task, seed, path))
    return rows


def _metric_rows(model: str, metrics: Dict[str, Any], task: Dict[str, Any], seed, path: Path) -> List[MetricRow]:
    rows: List[MetricRow] = []
    for metric, entry in metrics.items():
        if not isinstance(entry, dict) or "value" not in entry:
            raise DataError("metric entry must be an object with a 'value'", file=str(path), record=metric)
        value = entry["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise DataError(f"metric value must be a finite number, got {value!r}", file=str(path), record=metric)
        ci = entry.get("ci95")
        lo = hi = None
        if ci is not None:
            if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)):
                raise DataError(f"ci95 must be [low, high], got {ci!r}", file=str(path), record=metric)
            lo, hi = float(ci[0]), float(ci[1])
        rows.append(
            MetricRow(
                model=model,
                task=task["name"],
                task_type=task["type"],
                dataset=str(task.get("dataset", "")),
                split=task["split"],
                fingerprint=task["fingerprint"],
                metric=str(metric),
                value=float(value),
                ci_low=lo,
                ci_high=hi,
                units=str(entry.get("units", "fraction")),
                seed=seed if isinstance(seed, int) else None,
                path=str(path),
            )
        )
    return rows


def _is_result(path: Path) -> bool:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and obj.get("schema") == RESULT_SCHEMA


def result_files(results_dir) -> List[Path]:
    """Every ``*.json`` under ``results_dir`` (recursively, hidden folders skipped) with the result schema, sorted.

    Other JSON files (manifests, references, unreadable files) are not results and are skipped.
    """
    root = Path(results_dir)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError("results directory not found", file=str(root))
    return [p for p in sorted(root.rglob("*.json"))
            if not any(part.startswith(".") for part in p.relative_to(root).parts) and _is_result(p)]


def load_rows(results_dir, *, models: Optional[Sequence[str]] = None) -> List[MetricRow]:
    """Load every result under ``results_dir`` as metric rows (optionally only some models).

    Raises:
        DataError: when the folder holds no result JSON, or a result is malformed.
    """
    files = result_files(results_dir)
    if not files:
        raise DataError(f"no result JSON ({RESULT_SCHEMA}) found", file=str(results_dir))
    rows: List[MetricRow] = []
    seen = set()
    for p in files:
        obj = read_json(p)
        refs = set(obj.get("reference_rows") or {}) if isinstance(obj, dict) else set()
        for r in parse_result(obj, p):
            # reference rows (chance, oracles) come with every model's result of a protocol: keep one per seed
            key = (r.model, r.task, r.split, r.fingerprint, r.metric, r.seed)
            if r.model in refs and r.model != obj["model"]["name"]:
                if key in seen:
                    continue
                seen.add(key)
            rows.append(r)
    if models:
        wanted = set(models)
        rows = [r for r in rows if r.model in wanted]
    return rows


def load_results_raw(results_dir) -> List[Dict[str, Any]]:
    """The parsed result objects themselves (for the ``unavailable`` and ``extra`` fields)."""
    return [read_json(p) for p in result_files(results_dir)]


def to_percent(value: float, units: str) -> float:
    """Fractions are shown as percent; anything else unchanged."""
    return value * 100.0 if units == "fraction" else value


def mean_std(values: Iterable[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no values")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var)
