"""Result records: the JSON schema of ``docs/architecture.md``, atomic writing, loading and validation (the
CLIP_benchmark-style export of these records is a report: :func:`loupe_bench.report.export.export_clip_benchmark`).

One file per (model, task, split): ``<model>__<task>__<split>.json`` (names made file-safe); when that name is
taken by a result of another model (two runs both called ``full``), ``<model>__<task>__<split>__<id8>.json`` with
the first 8 hex digits of the model id (:func:`model_id`). ``per_item`` values
(hits per query/image) are kept so model-vs-model deltas get paired bootstrap intervals
(:func:`paired_delta`).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..errors import DataError
from ..utils.io import atomic_write_json, atomic_write_text, read_json

SCHEMA = "loupe-bench/result/v1"
UNITS = ("fraction", "percent", "score", "sum of fractions", "count", "seconds")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")

REQUIRED = {
    "schema": str, "model": dict, "task": dict, "metrics": dict, "unavailable": dict, "extra": dict, "seed": int,
    "code_version": str, "packages": dict, "device": str, "timings": dict, "timestamp": str,
}


def safe_name(text: str) -> str:
    """File-safe form of a model / task / split name."""
    return _SAFE.sub("-", str(text)).strip("-") or "unnamed"


def result_filename(model: str, task: str, split: str) -> str:
    """``<model>__<task>__<split>.json``."""
    return f"{safe_name(model)}__{safe_name(task)}__{safe_name(split)}.json"


def model_id(model: Dict[str, Any]) -> str:
    """The unique id of a result's model: its ``id`` field, else (older results) the stable hash of its ``source``
    (a model / run directory is its resolved path) and ``checkpoint_sha256``.

    Rule: ``id = sha256(canonical JSON {"source": source, "sha": checkpoint_sha256})[:16]`` — for a directory the
    source alone (``sha`` null), so re-evaluating a run that trained further replaces its own result.
    """
    if isinstance(model.get("id"), str) and model["id"]:
        return model["id"]
    source, sha = str(model.get("source", "")), str(model.get("checkpoint_sha256", ""))
    if source and Path(source).is_dir():
        return compute_model_id(str(Path(source).resolve()), sha, is_dir=True)
    return compute_model_id(source, sha)


def compute_model_id(source: str, checkpoint_sha256: str, is_dir: bool = False) -> str:
    """See :func:`model_id`."""
    from ..utils.io import stable_hash

    return stable_hash({"source": source, "sha": None if is_dir else checkpoint_sha256})


def result_path(out_dir: Union[str, Path], result: Dict[str, Any]) -> Path:
    """Where :func:`write_result` puts ``result``: the plain name, unless a result of another model (other
    :func:`model_id`) holds it, then the name suffixed with ``__<id8>``."""
    model, task = result["model"], result["task"]
    path = Path(out_dir) / result_filename(model["name"], task["name"], task["split"])
    if not path.exists():
        return path
    try:
        other = read_json(path)
        same = isinstance(other, dict) and isinstance(other.get("model"), dict) and \
            model_id(other["model"]) == model_id(model)
    except DataError:
        same = False
    if same:
        return path
    return path.with_name(f"{path.stem}__{model_id(model)[:8]}.json")


def utc_timestamp() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def validate_result(obj: Any, file: Optional[str] = None) -> Dict[str, Any]:
    """Check ``obj`` against the result schema; raise :class:`DataError` naming the first problem."""
    if not isinstance(obj, dict):
        raise DataError("a result must be a JSON object", file=file)
    for key, typ in REQUIRED.items():
        if key not in obj:
            raise DataError(f"missing field {key!r}", file=file)
        if not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
            raise DataError(f"field {key!r} must be {typ.__name__}", file=file)
    if obj["schema"] != SCHEMA:
        raise DataError(f"unknown schema {obj['schema']!r} (expected {SCHEMA})", file=file)
    for key in ("name", "spec", "checkpoint_sha256", "source"):
        if key not in obj["model"]:
            raise DataError(f"model: missing field {key!r}", file=file)
    for key in ("name", "type", "dataset", "split", "spec", "fingerprint"):
        if key not in obj["task"]:
            raise DataError(f"task: missing field {key!r}", file=file)
    for name, m in obj["metrics"].items():
        if not isinstance(m, dict) or "value" not in m or "units" not in m or "ci95" not in m:
            raise DataError(f"metric {name!r} needs value, ci95 and units", file=file)
        if not isinstance(m["value"], (int, float)):
            raise DataError(f"metric {name!r}: value must be a number", file=file)
        if m["units"] not in UNITS:
            raise DataError(f"metric {name!r}: unknown units {m['units']!r}", file=file)
        ci = m["ci95"]
        if ci is not None:
            if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)):
                raise DataError(f"metric {name!r}: ci95 must be [low, high] or null", file=file)
            if not ci[0] <= ci[1]:
                raise DataError(f"metric {name!r}: ci95 low > high", file=file)
    for name, reason in obj["unavailable"].items():
        if not isinstance(reason, str) or not reason:
            raise DataError(f"unavailable metric {name!r} needs a reason", file=file)
        if name in obj["metrics"]:
            raise DataError(f"metric {name!r} is both reported and unavailable", file=file)
    if "total_s" not in obj["timings"]:
        raise DataError("timings: missing total_s", file=file)
    return obj


def write_result(out_dir: Union[str, Path], result: Dict[str, Any]) -> Path:
    """Validate and atomically write one result; returns its path."""
    validate_result(result)
    path = result_path(out_dir, result)
    atomic_write_json(path, result)
    return path


def load_results(directory: Union[str, Path], validate: bool = True) -> List[Dict[str, Any]]:
    """Every result JSON under ``directory`` (recursively; files with another ``schema`` are ignored), sorted by
    (model, task, split). Each record gets ``_path``."""
    directory = Path(directory)
    if not directory.exists():
        raise DataError("results folder not found", file=str(directory))
    out = []
    for p in sorted(directory.rglob("*.json")):
        obj = read_json(p)
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
            continue
        if validate:
            validate_result(obj, file=str(p))
        obj["_path"] = str(p)
        out.append(obj)
    out.sort(key=lambda r: (r["model"]["name"], r["task"]["name"], r["task"]["split"]))
    return out


def paired_delta(a: Dict[str, Any], b: Dict[str, Any], metric: str, n_resamples: int = 1000, seed: int = 0):
    """Paired bootstrap interval of ``a - b`` for a per-item metric of two results on the same protocol.

    Raises:
        DataError: the fingerprints differ or per-item values are missing.
    """
    from .metrics.bootstrap import paired_bootstrap_delta

    if a["task"]["fingerprint"] != b["task"]["fingerprint"]:
        raise DataError(
            f"results use different protocols (fingerprints {a['task']['fingerprint']} vs "
            f"{b['task']['fingerprint']}); refusing to compare"
        )
    pa, pb = a.get("per_item", {}).get(metric), b.get("per_item", {}).get(metric)
    if pa is None or pb is None:
        raise DataError(f"per-item values of {metric!r} missing; a paired bootstrap needs them")
    return paired_bootstrap_delta(pa, pb, n_resamples=n_resamples, seed=seed)


def summarize_seeds(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Mean ± std (``ddof=1``) of every metric across results that differ only by seed.

    Results are grouped by (model name, task name, split, fingerprint); groups mixing fingerprints are never
    formed. Returns one row per (group, metric): ``{model, task, split, fingerprint, metric, mean, std, n, seeds,
    units}``.
    """
    from .metrics.bootstrap import seed_summary

    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in results:
        key = (r["model"]["name"], r["task"]["name"], r["task"]["split"], r["task"]["fingerprint"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (model, task, split, fp), rs in sorted(groups.items()):
        names = sorted({m for r in rs for m in r["metrics"]})
        for name in names:
            vals = [r["metrics"][name]["value"] for r in rs if name in r["metrics"]]
            s = seed_summary(vals)
            rows.append({"model": model, "task": task, "split": split, "fingerprint": fp, "metric": name,
                         "mean": s["mean"], "std": s["std"], "n": s["n"],
                         "seeds": sorted(r["seed"] for r in rs if name in r["metrics"]),
                         "units": rs[0]["metrics"].get(name, {}).get("units", "fraction")})
    return rows
