"""The result file: its JSON schema (``docs/architecture.md``), atomic writing, and the one reader every gathering
command (report, check, compare, export) goes through (:func:`read_results`: each file read and validated once).
What each metric of a record means — unit, direction, interval kind — is the metric registry's
(:mod:`loupe_bench.tasks.metric_registry`); a record naming a metric no task type declares is refused. The
CLIP_benchmark-style export of these records is a report: :func:`loupe_bench.report.export.export_clip_benchmark`.

One file per (model, task, split): ``<model>__<task>__<split>.json`` (names made file-safe); when that name is
taken by a result of another model (two runs both called ``full``), ``<model>__<task>__<split>__<id8>.json`` with
the first 8 hex digits of the model id (:func:`model_id`). ``per_item`` values
(hits per query/image) are kept so model-vs-model deltas get paired bootstrap intervals
(:func:`paired_delta`).

A result's *model identity* (:func:`model_identity`, recorded as ``model.identity``) is what gathering commands
group by — never the display name: two models that share a name are two models.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import DataError, SpecError
from ..utils.io import atomic_write_json, read_json
from .metric_registry import Metric, metric_info

SCHEMA = "loupe-bench/result/v1"
#: the schema tags of every version of our result files: one this version does not read is refused, never skipped
SCHEMA_FAMILY = "loupe-bench/result/"
#: seeds are unsigned 32-bit integers (``eval --seed``, ``numpy.random.default_rng``, ``torch.manual_seed``)
SEED_MAX = 2 ** 32 - 1
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


#: the recipe fields that make two trainings of one spec two models (the seed is not one of them: seeds of one
#: recipe are one model, averaged)
IDENTITY_RECIPE_KEYS = ("name", "steps", "epochs", "optim")


def compute_identity(kind: str, *, spec: Optional[Dict[str, Any]] = None, sha: str = "",
                     step: Optional[int] = None, recipe: Optional[Dict[str, Any]] = None) -> str:
    """``<kind>:<digest>`` by the rule of :func:`model_identity`."""
    from ..utils.io import stable_hash

    if kind == "spec":
        return f"spec:{stable_hash(spec or {})}"
    if kind == "trained":
        kept = None if recipe is None else {k: recipe.get(k) for k in IDENTITY_RECIPE_KEYS}
        return f"trained:{stable_hash({'spec': spec or {}, 'step': step, 'recipe': kept})}"
    return f"weights:{str(sha)[:16]}"


def model_identity(model: Dict[str, Any]) -> str:
    """The identity of the model a result measures: what gathering commands group by, never the display name.

    Rule: ``model.identity`` when recorded, else derived from the record —

    * ``spec:<digest of the resolved spec>``: a freshly initialised model built from a spec (source ``spec ...``);
    * ``trained:<digest of spec, checkpoint step and the recipe's IDENTITY_RECIPE_KEYS>``: a training run (the record
      has ``checkpoint_step``; results written before the identity was recorded have no recipe in the digest);
    * ``weights:<checkpoint_sha256[:16]>``: anything else (model folder, Hugging Face folder, open_clip file).

    Seeds of one identity are averaged; results of two identities never are.
    """
    ident = model.get("identity")
    if isinstance(ident, str) and ident:
        return ident
    spec = model.get("spec") if isinstance(model.get("spec"), dict) else {}
    if str(model.get("source", "")).startswith("spec "):
        return compute_identity("spec", spec=spec)
    if "checkpoint_step" in model:
        return compute_identity("trained", spec=spec, step=model.get("checkpoint_step"))
    return compute_identity("weights", sha=str(model.get("checkpoint_sha256", "")))


def identity_label(identity: str) -> str:
    """``spec 1a2b3c4d`` for ``spec:1a2b3c4d…``: the short form shown beside a name two models share."""
    kind, _, digest = identity.partition(":")
    return f"{kind} {digest[:8]}" if digest else identity[:16]


def result_path(out_dir: Union[str, Path], result: Dict[str, Any]) -> Path:
    """Where :func:`write_result` puts ``result``: the plain name, unless a result of another model (other
    :func:`model_id`) holds it, then the name suffixed with ``__<id8>``."""
    model, task = result["model"], result["task"]
    path = Path(out_dir) / result_filename(model["name"], task["name"], task["split"])
    if not path.exists():
        return path
    try:
        other = read_json(path, kind="result")
        same = isinstance(other, dict) and isinstance(other.get("model"), dict) and \
            model_id(other["model"]) == model_id(model)
    except DataError:
        same = False
    if same:
        return path
    return path.with_name(f"{path.stem}__{model_id(model)[:8]}.json")


def utc_timestamp() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fail(message: str, file: Optional[str], record: Optional[str] = None) -> DataError:
    return DataError(message, file=file, record=record)


def registered_metric(name: str, file: Optional[str] = None, record: Optional[str] = None) -> Metric:
    """:func:`~loupe_bench.tasks.metric_registry.metric_info` of a metric a file names; an unknown name is a
    :class:`DataError` naming the file and the entry."""
    try:
        return metric_info(name)
    except SpecError as err:
        raise _fail(err.message, file, record) from None


def validate_metric(name: str, entry: Any, file: Optional[str] = None, where: str = "metrics",
                    full: bool = False) -> None:
    """One metric entry: ``name`` a registered metric (:func:`registered_metric`); ``value`` a finite number,
    ``ci95`` null or finite ``[low, high]`` with low ≤ high (always null for a metric registered without an
    interval), ``units`` the metric's registered unit (the key may be left out, except with ``full``)."""
    rec = f"{where}[{name!r}]"
    info = registered_metric(str(name), file, rec)
    if not isinstance(entry, dict) or "value" not in entry:
        raise _fail("a metric entry must be an object with a 'value'", file, rec)
    if full and ("units" not in entry or "ci95" not in entry):
        raise _fail("a metric entry needs value, ci95 and units", file, rec)
    if not _finite(entry["value"]):
        raise _fail(f"value must be a finite number, got {entry['value']!r}", file, rec)
    ci = entry.get("ci95")
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(_finite(v) for v in ci)):
        raise _fail(f"ci95 must be [low, high] (finite numbers) or null, got {ci!r}", file, rec)
    if ci is not None and not ci[0] <= ci[1]:
        raise _fail("ci95 low > high", file, rec)
    if ci is not None and not info.has_interval:
        raise _fail(f"{name!r} has no interval (registered interval: none), got ci95 {ci!r}", file, rec)
    units = entry.get("units", info.unit)
    if units != info.unit:
        raise _fail(f"units {units!r} are not the metric's registered units {info.unit!r}", file, rec)


#: how far past its own interval a value may lie, in widths of the interval (see :func:`check_interval`)
INTERVAL_SLACK = {"mean": 0.5, "corpus": 2.0}
#: float rounding allowed on top, relative to the interval's magnitude (at least 1)
INTERVAL_ROUNDING = 1e-6


def check_interval(name: str, entry: Dict[str, Any], file: Optional[str] = None, where: str = "metrics") -> None:
    """A metric's value lies within its own ``ci95`` (when it has one), up to a slack.

    Rule: with ``w = high - low``, the value must lie in ``[low - s, high + s]``,
    ``s = INTERVAL_SLACK[kind] · w + INTERVAL_ROUNDING · max(1, |low|, |high|)``, ``kind`` the metric's registered
    interval kind (:data:`~loupe_bench.tasks.metric_registry.INTERVALS`). For a mean of per-item values
    (``kind = "mean"``) the percentile interval holds the mean (the
    resampled means are centred on it); half a width more absorbs the quantile noise of few resamples. For a
    statistic of the whole resampled set (``kind = "corpus"``: corpus BLEU, CIDEr-D, COCO AP) the percentile
    interval need not hold the point
    estimate — resampling with duplicates biases corpus CIDEr-D (document frequencies) and COCO AP — so two widths are
    allowed. A value further out is a stale or edited result.

    Raises:
        DataError: naming the file and the metric.
    """
    ci = entry.get("ci95")
    if ci is None:
        return
    low, high, value = float(ci[0]), float(ci[1]), float(entry["value"])
    kind = registered_metric(name, file, f"{where}[{name!r}]").interval
    if kind not in INTERVAL_SLACK:
        raise _fail(f"{name!r} has no interval (registered interval: {kind}), got ci95 {ci!r}", file,
                    f"{where}[{name!r}]")
    slack = INTERVAL_SLACK[kind] * (high - low) + INTERVAL_ROUNDING * max(1.0, abs(low), abs(high))
    if not low - slack <= value <= high + slack:
        raise _fail(f"value {value!r} lies outside its own ci95 [{low!r}, {high!r}]: a stale or edited result "
                    "(evaluate again)", file, f"{where}[{name!r}]")


def validate_intervals(obj: Dict[str, Any], file: Optional[str] = None) -> None:
    """:func:`check_interval` for every metric and reference-row entry of a validated result
    (:func:`validate_record`); gathering commands run it after refusing duplicated results, so a stale copy of a
    result is named together with the file it copies.

    Raises:
        DataError: naming the file and the metric.
    """
    for name, entry in obj["metrics"].items():
        check_interval(name, entry, file)
    for row, metrics in (obj.get("reference_rows") or {}).items():
        for name, entry in metrics.items():
            check_interval(name, entry, file, where=f"reference_rows[{row!r}]")


#: (section, field, type, required): the fields a gathering command reads from a result
_RECORD_FIELDS = (
    ("model", "name", str, True), ("model", "identity", str, False), ("model", "spec", dict, False),
    ("model", "checkpoint_sha256", str, False), ("model", "source", str, False), ("model", "finished", bool, False),
    ("task", "name", str, True), ("task", "type", str, True), ("task", "split", str, True),
    ("task", "fingerprint", str, True), ("task", "dataset", str, False), ("task", "spec", dict, False),
)
#: optional top-level fields and their types (``None`` allowed for the mappings)
_OPTIONAL_TOP = (("unavailable", dict), ("extra", dict), ("reference_rows", dict), ("per_item", dict),
                 ("packages", dict), ("timings", dict), ("code_version", str), ("device", str), ("timestamp", str))


def validate_record(obj: Any, file: Optional[str] = None, full: bool = False) -> Dict[str, Any]:
    """The part of the result schema that gathering commands (report, check, compare, export) rely on: the schema
    tag; ``model`` and ``task`` with their fields typed (names non-empty strings); ``seed`` an integer in
    ``0..SEED_MAX``; every metric
    and reference-row entry a registered metric, finite, in its registered units (:func:`validate_metric`, metric
    entries complete with ``full``); optional fields of the right type when present.

    Raises:
        DataError: naming the file and the entry of the first problem.
    """
    if not isinstance(obj, dict):
        raise _fail("a result must be a JSON object", file)
    if obj.get("schema") != SCHEMA:
        raise _fail(f"unknown schema {obj.get('schema')!r} (expected {SCHEMA})", file)
    for key in ("model", "task", "metrics"):
        if not isinstance(obj.get(key), dict):
            raise _fail(f"field {key!r} must be an object", file)
    _check_fields(obj, file)
    seed = obj.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
        raise _fail(f"field 'seed' must be an integer in 0..{SEED_MAX}, got {seed!r}", file)
    for name, entry in obj["metrics"].items():
        validate_metric(name, entry, file, full=full)
    for row, metrics in (obj.get("reference_rows") or {}).items():
        if not isinstance(metrics, dict):
            raise _fail("a reference row must map metric names to entries", file, f"reference_rows[{row!r}]")
        for name, entry in metrics.items():
            validate_metric(name, entry, file, where=f"reference_rows[{row!r}]")
    for name, reason in (obj.get("unavailable") or {}).items():
        if not isinstance(reason, str):
            raise _fail("the reason must be a string", file, f"unavailable[{name!r}]")
    for key, value in (obj.get("timings") or {}).items():
        if not _finite(value):
            raise _fail(f"must be a finite number, got {value!r}", file, f"timings[{key!r}]")
    return obj


def _check_fields(obj: Dict[str, Any], file: Optional[str]) -> None:
    for section, key, typ, required in _RECORD_FIELDS:
        if key not in obj[section]:
            if required:
                raise _fail(f"{section}: missing field {key!r}", file)
            continue
        value = obj[section][key]
        if not isinstance(value, typ) or (typ is str and required and not value):
            raise _fail(f"{section}.{key} must be a {'non-empty ' if required else ''}{typ.__name__}, got "
                        f"{type(value).__name__}", file)
    step = obj["model"].get("checkpoint_step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise _fail("model.checkpoint_step must be an integer or null", file)
    for key, typ in _OPTIONAL_TOP:
        if obj.get(key) is not None and not isinstance(obj[key], typ):
            raise _fail(f"field {key!r} must be {typ.__name__}, got {type(obj[key]).__name__}", file)


def validate_result(obj: Any, file: Optional[str] = None) -> Dict[str, Any]:
    """Check ``obj`` against the full result schema (what :func:`write_result` writes): :func:`validate_record`
    with complete metric entries, plus every field of :data:`REQUIRED`, a reason for every unavailable
    metric and ``timings.total_s``. Raises :class:`DataError` naming the first problem."""
    validate_record(obj, file, full=True)
    for key, typ in REQUIRED.items():
        if key not in obj:
            raise _fail(f"missing field {key!r}", file)
        if not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
            raise _fail(f"field {key!r} must be {typ.__name__}", file)
    for key in ("spec", "checkpoint_sha256", "source"):
        if key not in obj["model"]:
            raise _fail(f"model: missing field {key!r}", file)
    for key in ("dataset", "spec"):
        if key not in obj["task"]:
            raise _fail(f"task: missing field {key!r}", file)
    for name, reason in obj["unavailable"].items():
        if not reason:
            raise _fail(f"unavailable metric {name!r} needs a reason", file)
        if name in obj["metrics"]:
            raise _fail(f"metric {name!r} is both reported and unavailable", file)
    if "total_s" not in obj["timings"]:
        raise _fail("timings: missing total_s", file)
    return obj


def write_result(out_dir: Union[str, Path], result: Dict[str, Any]) -> Path:
    """Validate and atomically write one result; returns its path."""
    validate_result(result)
    path = result_path(out_dir, result)
    atomic_write_json(path, result)
    return path


def read_result_files(directory: Union[str, Path]) -> List[Tuple[Path, Dict[str, Any]]]:
    """``(path, object)`` of every result JSON under ``directory`` (a folder, searched recursively with hidden
    folders skipped, or one file), sorted by path. Which JSON files are results: :func:`is_result`. A file that is
    not a regular file, is over the ``result`` size limit or is not JSON is refused
    (:mod:`~loupe_bench.utils.bounded`), so nothing under a results folder is silently left out.

    Raises:
        DataError: naming the folder or the file.
    """
    root = Path(directory)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = [p for p in sorted(root.rglob("*.json"))
                 if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    else:
        raise DataError("results folder not found", file=str(root))
    out = []
    for p in files:
        obj = read_json(p, kind="result")
        if is_result(obj, file=str(p)):
            out.append((p, obj))
    return out


def is_result(obj: Any, file: Optional[str] = None) -> bool:
    """Whether a JSON document found under a results folder is one of our results.

    Rule: ``schema`` equal to :data:`SCHEMA` is a result; a ``schema`` of :data:`SCHEMA_FAMILY` with another version
    is refused; a document shaped like a result (``model`` and ``task`` objects and a ``metrics`` entry) under any
    other or no ``schema`` is refused; anything else — a ``reproduce.json`` manifest, a reference, a run's
    ``run.json``, an export in CLIP_benchmark layout, another tool's JSON — is not a result and is skipped.

    Raises:
        DataError: naming the file, for the two refused kinds.
    """
    if not isinstance(obj, dict):
        return False
    schema = obj.get("schema")
    if schema == SCHEMA:
        return True
    if isinstance(schema, str) and schema.startswith(SCHEMA_FAMILY):
        raise _fail(f"result schema {schema!r} is not one this version reads (expected {SCHEMA})", file)
    if isinstance(obj.get("model"), dict) and isinstance(obj.get("task"), dict) and "metrics" in obj:
        raise _fail(f"a result (model, task, metrics) with schema {schema!r}, not {SCHEMA}: neither read nor "
                    "skipped", file)
    return False


def read_results(directory: Union[str, Path], full: bool = False) -> List[Tuple[Path, Dict[str, Any]]]:
    """The one reader of result files: ``(path, object)`` of every result under ``directory``
    (:func:`read_result_files`), each file read once and validated once — :func:`validate_result` with ``full``
    (every field :func:`write_result` writes), else :func:`validate_record` (the fields gathering commands read).
    Values against their own intervals are checked apart (:func:`validate_intervals`), after a caller has refused
    duplicated files.

    Raises:
        DataError: naming the folder, or the file and the entry of the first problem.
    """
    check = validate_result if full else validate_record
    pairs = read_result_files(directory)
    for p, obj in pairs:
        check(obj, file=str(p))
    return pairs


def load_results(directory: Union[str, Path], validate: bool = True) -> List[Dict[str, Any]]:
    """Every result JSON under ``directory``, validated (:func:`read_results` with the full schema, then
    :func:`validate_intervals`; read unchecked with ``validate=False``) and sorted by (model, task, split). Each
    record gets ``_path``."""
    pairs = read_results(directory, full=True) if validate else read_result_files(directory)
    out = []
    for p, obj in pairs:
        if validate:
            validate_intervals(obj, file=str(p))
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

    Results are grouped by (model name, model identity (:func:`model_identity`), task name, split, fingerprint);
    groups mixing fingerprints or models that share a name are never formed. Returns one row per (group, metric):
    ``{model, identity, task, split, fingerprint, metric, mean, std, n, seeds, units}``.
    """
    from .metrics.bootstrap import seed_summary

    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in results:
        key = (r["model"]["name"], model_identity(r["model"]), r["task"]["name"], r["task"]["split"],
               r["task"]["fingerprint"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (model, ident, task, split, fp), rs in sorted(groups.items()):
        names = sorted({m for r in rs for m in r["metrics"]})
        for name in names:
            vals = [r["metrics"][name]["value"] for r in rs if name in r["metrics"]]
            s = seed_summary(vals)
            rows.append({"model": model, "identity": ident, "task": task, "split": split, "fingerprint": fp,
                         "metric": name, "mean": s["mean"], "std": s["std"], "n": s["n"],
                         "seeds": sorted(r["seed"] for r in rs if name in r["metrics"]),
                         "units": metric_info(name).unit})
    return rows
