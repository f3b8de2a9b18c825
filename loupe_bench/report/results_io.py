"""Result JSONs as flat metric rows, for the report, the paper comparison and the regression gate.

The result file itself — schema, validation, the reader — is :mod:`loupe_bench.tasks.results`'s; this module asks
it once per file (:func:`load`) and flattens each record into :class:`MetricRow` s, one per (result, metric). What a
metric means (unit, display scale, direction) is :func:`~loupe_bench.tasks.metric_registry.metric_info`'s.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import DataError
from ..tasks.metric_registry import metric_info
from ..tasks.results import SCHEMA, identity_label, model_identity, validate_intervals
from ..tasks.results import read_results as read_result_records

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
    identity: str = ""          # the model identity (tasks.results.model_identity); ``reference:<row>`` for chance

    @property
    def key(self) -> Tuple[str, str, str, str]:
        """(model, task, split, metric): the identity of a row in a regression reference."""
        return (self.model, self.task, self.split, self.metric)


def result_rows(obj: Dict[str, Any], path: Path, label: Optional[str] = None) -> List[MetricRow]:
    """The metric rows of one result object already validated by the reader
    (:func:`~loupe_bench.tasks.results.read_results`); the model's rows are named ``label`` (default: the model's
    name), each reference row (chance, oracle) by its own name. A row's units are the metric's registered unit."""
    model, task = obj["model"], obj["task"]
    ident = model_identity(model)
    rows = _metric_rows(label or model["name"], obj["metrics"], task, obj["seed"], path, ident)
    for ref_name, ref_metrics in sorted((obj.get("reference_rows") or {}).items()):
        rows.extend(_metric_rows(str(ref_name), ref_metrics, task, obj["seed"], path, f"reference:{ref_name}"))
    return rows


def _metric_rows(model: str, metrics: Dict[str, Any], task: Dict[str, Any], seed: int, path: Path,
                 identity: str) -> List[MetricRow]:
    rows: List[MetricRow] = []
    for metric, entry in metrics.items():
        ci = entry.get("ci95")
        rows.append(MetricRow(
            model=model, task=task["name"], task_type=task["type"], dataset=str(task.get("dataset", "")),
            split=task["split"], fingerprint=task["fingerprint"], metric=str(metric), value=float(entry["value"]),
            ci_low=None if ci is None else float(ci[0]), ci_high=None if ci is None else float(ci[1]),
            units=metric_info(str(metric)).unit, seed=seed, path=str(path), identity=identity))
    return rows


def read_results(results_dir) -> List[Tuple[Path, Dict[str, Any]]]:
    """``(path, object)`` of every result under ``results_dir``, each read and validated once
    (:func:`~loupe_bench.tasks.results.read_results`); none is a :class:`DataError`."""
    pairs = read_result_records(results_dir)
    if not pairs:
        raise DataError(f"no result JSON ({SCHEMA}) found", file=str(results_dir))
    return pairs


def model_labels(pairs: Sequence[Tuple[Path, Dict[str, Any]]], *, same_name: str = "label") -> Dict[str, str]:
    """Path → the name a result's model is shown and gated under.

    Rule: results are one model when they share a model identity
    (:func:`~loupe_bench.tasks.results.model_identity`), never because they share a name. A name held by one
    identity is shown as is; a name held by several is shown as ``name [kind digest8]`` for each
    (``same_name="label"``), or refused with one line (``same_name="refuse"``: the regression gate, whose reference
    names one model per name).

    Raises:
        DataError: ``same_name="refuse"`` and a name is shared.
    """
    by_name: Dict[str, Dict[str, str]] = {}
    for p, obj in pairs:
        by_name.setdefault(obj["model"]["name"], {}).setdefault(model_identity(obj["model"]), str(p))
    labels = {}
    for p, obj in pairs:
        name, ident = obj["model"]["name"], model_identity(obj["model"])
        held = by_name[name]
        if len(held) > 1 and same_name == "refuse":
            files = " and ".join(sorted(held.values())[:2])
            raise DataError(f"{len(held)} different models share the name {name!r} ({', '.join(sorted(held))}: "
                            f"e.g. {files}); their numbers are never merged — gate one model per name (evaluate "
                            "them into separate folders)")
        labels[str(p)] = name if len(held) == 1 else f"{name} [{identity_label(ident)}]"
    return labels


def refuse_duplicates(pairs: Sequence[Tuple[Path, Dict[str, Any]]]) -> None:
    """Two files holding one result — the same model (name, identity, weights), task, split, protocol fingerprint
    and seed, e.g. a copied or stale file — are refused: a result is never counted twice.

    Raises:
        DataError: naming both files.
    """
    seen: Dict[tuple, Path] = {}
    for p, obj in pairs:
        m, t = obj["model"], obj["task"]
        key = (m["name"], model_identity(m), m.get("checkpoint_sha256"), t["name"], t["split"], t["fingerprint"],
               obj["seed"])
        if key in seen:
            raise DataError(f"{seen[key]} and {p} hold the same result (model {m['name']!r}, task {t['name']!r}, "
                            f"split {t['split']!r}, seed {obj['seed']}, one protocol); keep one of them, a result "
                            "is never averaged with its copy")
        seen[key] = p


class LoadedResults(NamedTuple):
    """Results read once (:func:`load`): the validated records and their metric rows."""

    records: List[Tuple[Path, Dict[str, Any]]]      # (path, result object), every file under the folders given
    rows: List[MetricRow]

    def objects(self) -> List[Dict[str, Any]]:
        """The result objects themselves (for their ``unavailable``, ``extra`` and ``model`` fields)."""
        return [obj for _, obj in self.records]

    def extras(self) -> Dict[str, Optional[Dict[str, Any]]]:
        """Path → the ``extra`` record of the result read from it (None when it has none)."""
        return {str(p): obj.get("extra") if isinstance(obj.get("extra"), dict) else None for p, obj in self.records}


def load(results_dir, *, models: Optional[Sequence[str]] = None, same_name: str = "label") -> LoadedResults:
    """Read every result under ``results_dir`` (a folder or file, or a list of them taken together) once, and
    flatten it into metric rows (optionally only some models' rows).

    Models are told apart by identity (:func:`model_labels`, ``same_name`` as there); duplicated results are
    refused (:func:`refuse_duplicates`), across all the folders given; then a value outside its own interval
    (:func:`~loupe_bench.tasks.results.validate_intervals`).

    Raises:
        DataError: when the folder holds no result JSON, a result is malformed, names a metric no task type
            declares, is duplicated, inconsistent with its own interval, or (with ``same_name="refuse"``) two
            models share a name.
    """
    dirs = list(results_dir) if isinstance(results_dir, (list, tuple)) else [results_dir]
    pairs = [pair for d in dirs for pair in read_results(d)]
    refuse_duplicates(pairs)
    for p, obj in pairs:
        validate_intervals(obj, file=str(p))
    labels = model_labels(pairs, same_name=same_name)
    rows: List[MetricRow] = []
    seen = set()
    for p, obj in pairs:
        for r in result_rows(obj, p, labels[str(p)]):
            # reference rows (chance, oracles) come with every model's result of a protocol: keep one per seed
            if r.identity.startswith("reference:"):
                key = (r.model, r.task, r.split, r.fingerprint, r.metric, r.seed)
                if key in seen:
                    continue
                seen.add(key)
            rows.append(r)
    if not rows:
        raise DataError("the results hold no metric values (every result's metrics are empty)",
                        file=", ".join(str(d) for d in dirs))
    if models:
        wanted = set(models)
        rows = [r for r in rows if r.model in wanted]
    return LoadedResults(pairs, rows)


def load_rows(results_dir, *, models: Optional[Sequence[str]] = None, same_name: str = "label") -> List[MetricRow]:
    """The metric rows of :func:`load`."""
    return load(results_dir, models=models, same_name=same_name).rows


def load_results_raw(results_dir) -> List[Dict[str, Any]]:
    """The validated result objects themselves, each file read once (for the ``unavailable`` and ``extra``
    fields); values outside their own interval are refused
    (:func:`~loupe_bench.tasks.results.validate_intervals`)."""
    pairs = read_results(results_dir)
    for p, obj in pairs:
        validate_intervals(obj, file=str(p))
    return [obj for _, obj in pairs]


#: the manifest fields a report reads and their types
_MANIFEST_FIELDS = (("runs", dict), ("world", str), ("environment", dict), ("plan", dict), ("timings", dict),
                    ("seeds", list))


def read_manifest(path: Path) -> Dict[str, object]:
    """A ``reproduce.json`` manifest, bounded and type-checked (:data:`_MANIFEST_FIELDS`, run folders as strings).

    Raises:
        DataError: naming the file and the field.
    """
    from ..utils.io import read_json

    data = read_json(path, kind="config")
    if not isinstance(data, dict):
        raise DataError("a reproduction manifest must be a JSON object", file=str(path))
    for key, typ in _MANIFEST_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], typ):
            raise DataError(f"field {key!r} must be {typ.__name__}, got {type(data[key]).__name__}", file=str(path))
    for name, folder in (data.get("runs") or {}).items():
        if not isinstance(folder, str):
            raise DataError(f"a run folder must be a string, got {folder!r}", file=str(path), record=f"runs[{name!r}]")
    return data


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
