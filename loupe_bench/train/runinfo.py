"""What a run records about itself (``run.json``) and the check a resume makes against it before writing anything.

``run.json`` holds the full recipe (seed included), the model spec name and the data source (its name, resolved
path and a content fingerprint). A resume compares the recipe and data it is given with the recorded ones and
refuses any difference outside :data:`SAFE_CHANGES` unless the user names it with ``--allow-changed KEY``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from ..errors import LoupeBenchError
from ..models.checkpoint import RUN_FILE
from ..utils.io import atomic_write_json, read_json, sha256_file, stable_hash

RUN_SCHEMA = "loupe-bench/run/v1"

#: Dotted recipe fields (a field or a whole section) a resume may change without ``--allow-changed``: they do not
#: change what the remaining steps compute. ``steps``/``epochs``: train further (the cosine schedule is laid over
#: the new total); the rest only touch logging, checkpoint cadence, CPU threads, loader workers (data order and
#: augmentation depend on (seed, epoch, image) only) and free-form labels.
SAFE_CHANGES = ("steps", "epochs", "name", "description", "notes", "threads", "data.workers", "log", "checkpoint")

#: files at most this large are hashed by content in a folder fingerprint; larger ones by name and size
_HASH_LIMIT = 8 << 20


class RunMismatchError(LoupeBenchError):
    """A resume was given a recipe or data that differ from what the run recorded."""


def flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}`` (lists are values)."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _covered(key: str, allowed: Iterable[str]) -> bool:
    """``key`` equals an allowed entry or lies inside an allowed section (``optim`` covers ``optim.lr``)."""
    return any(key == a or key.startswith(a + ".") for a in allowed)


def path_fingerprint(path: Any) -> Optional[str]:
    """Content fingerprint of a data path: sha256 of a file; for a folder a hash over every file's relative path and
    size, plus the content hash of each file of at most 8 MiB; a brace pattern hashes each file it expands to.
    ``None`` when the path does not exist (a URL)."""
    text = str(path)
    if "{" in text:
        from ..data.formats.shards import expand_shards

        parts = [path_fingerprint(p) for p in expand_shards(text)]
        return None if any(p is None for p in parts) else stable_hash(parts, 32)
    p = Path(text)
    if p.is_file():
        return sha256_file(p)
    if not p.is_dir():
        return None
    rows = []
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            size = f.stat().st_size
            rows.append([str(f.relative_to(p)), size, sha256_file(f) if size <= _HASH_LIMIT else None])
    return stable_hash(rows, 32)


def data_record(source: Any) -> Dict[str, Any]:
    """What identifies the training data: ``{"source", "path", "fingerprint"}`` (a source may give its own
    ``fingerprint()``; a data-layer source is fingerprinted by :func:`path_fingerprint` of its path)."""
    name = str(getattr(source, "name", type(source).__name__))
    fp_fn = getattr(source, "fingerprint", None)
    path = getattr(source, "path", None)
    if callable(fp_fn):
        fp = fp_fn()
    elif path is not None:
        fp = path_fingerprint(path)
    else:
        fp = None
    resolved = None
    if path is not None and Path(str(path)).exists():
        resolved = str(Path(str(path)).resolve())
    return {"source": name, "path": resolved, "fingerprint": fp}


def write_run_record(run_dir: Path, recipe: Any, data: Dict[str, Any], model_name: Optional[str],
                     changes: Sequence[Dict[str, Any]] = ()) -> Path:
    """Write ``run.json`` at the start of training (``finished_step`` null until :func:`mark_finished`)."""
    return atomic_write_json(Path(run_dir) / RUN_FILE, {
        "schema": RUN_SCHEMA, "recipe": recipe.to_dict(), "data": data, "model": model_name,
        "changes": list(changes), "finished_step": None})


def mark_finished(run_dir: Path, step: int) -> None:
    """Record in ``run.json`` that training ended at ``step`` with its final weights written."""
    path = Path(run_dir) / RUN_FILE
    if path.is_file():
        rec = read_json(path)
        rec["finished_step"] = int(step)
        atomic_write_json(path, rec)


def read_run_record(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The run's record; a run made before ``run.json`` existed gives its ``recipe.yaml`` (data unknown)."""
    run_dir = Path(run_dir)
    if (run_dir / RUN_FILE).is_file():
        rec = read_json(run_dir / RUN_FILE)
        if isinstance(rec, dict) and isinstance(rec.get("recipe"), dict):
            return rec
        raise RunMismatchError(f"{run_dir / RUN_FILE}: not a run record")
    if (run_dir / "recipe.yaml").is_file():
        import yaml

        try:
            recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return None
        if isinstance(recipe, dict):
            return {"schema": RUN_SCHEMA, "recipe": recipe, "data": None, "model": None, "changes": []}
    return None


def resume_changes(recorded: Mapping[str, Any], recipe: Any, data: Dict[str, Any],
                   allow_changed: Iterable[str] = ()) -> Dict[str, List[Any]]:
    """Compare a resume's recipe and data with the run's record; returns the (allowed) changes
    ``{field: [old, new]}`` or raises :class:`RunMismatchError` naming every refused field.

    Rule: a recipe field (dotted, flattened) differs when its recorded and new values differ; ``data`` differs
    when both fingerprints are known and differ (or, without fingerprints, when the source names differ). A
    difference is allowed when the field is in :data:`SAFE_CHANGES` or named (or inside a section named) by
    ``allow_changed``; the data counts as the field ``data``.
    """
    allowed = tuple(SAFE_CHANGES) + tuple(allow_changed)
    old, new = flatten(recorded.get("recipe") or {}), flatten(recipe.to_dict())
    diffs: Dict[str, List[Any]] = {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new))
                                   if old.get(k) != new.get(k)}
    rec_data = recorded.get("data")
    if rec_data:
        fa, fb = rec_data.get("fingerprint"), data.get("fingerprint")
        differs = (fa != fb) if (fa is not None and fb is not None) else rec_data.get("source") != data.get("source")
        if differs:
            diffs["data"] = [rec_data.get("path") or rec_data.get("source"), data.get("path") or data.get("source")]
    refused = {k: v for k, v in diffs.items() if not _covered(k, allowed)}
    if refused:
        shown = "; ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in refused.items())
        raise RunMismatchError(
            f"resume refused: this run was recorded with other settings ({shown}); resume with the recorded ones, "
            f"or pass --allow-changed {' --allow-changed '.join(refused)} to accept the change")
    return diffs
