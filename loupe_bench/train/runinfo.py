"""What a run records about itself (``run.json``, written and read through :mod:`loupe_bench.utils.run_files`) and
the check a resume makes against it before writing anything.

``run.json`` holds its ``schema`` (:data:`RUN_SCHEMA`, the marker of a run of ours), the full recipe (seed
included), the model spec name and digest (:func:`spec_digest` of the resolved spec) and the data source (its name,
resolved path and a content fingerprint). A resume compares the recipe and data it is given with the recorded ones and
refuses any difference outside :data:`SAFE_CHANGES` unless the user names it with ``--allow-changed KEY``; a
different model spec is always refused (:func:`check_model_spec`).
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from ..errors import DataError, LoupeBenchError
from ..utils import run_files
from ..utils.bounded import regular_file
from ..utils.io import sha256_file, stable_hash
from ..utils.run_files import CONFIG_FILE, RUN_FILE, RUN_SCHEMA

#: Dotted recipe fields (a field or a whole section) a resume may change without ``--allow-changed``: they do not
#: change what the remaining steps compute. ``steps``/``epochs``: train further (the cosine schedule is laid over
#: the new total); the rest only touch logging, checkpoint cadence, CPU threads, loader workers (data order and
#: augmentation depend on (seed, epoch, image) only) and free-form labels.
SAFE_CHANGES = ("steps", "epochs", "name", "description", "notes", "threads", "data.workers", "log", "checkpoint")

#: files at most this large are hashed by content in a folder fingerprint; larger ones by name and size
_HASH_LIMIT = 8 << 20
#: bytes read from each end of an image file for its sampled content hash (:func:`images_fingerprint`)
_IMAGE_SAMPLE = 8 << 10


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
        rows.extend(_file_row(Path(root) / name, p) for name in sorted(files))
    return stable_hash(rows, 32)


def _file_row(f: Path, top: Path) -> List[Any]:
    """``[relative name, size, sha256 or None]`` of a regular file (hashed up to :data:`_HASH_LIMIT`); anything
    else (a FIFO, a device, a dangling link) is named with its kind and never opened."""
    try:
        st = os.stat(f)
    except OSError:
        return [str(f.relative_to(top)), "missing", None]
    if not stat.S_ISREG(st.st_mode):
        return [str(f.relative_to(top)), "not a regular file", None]
    return [str(f.relative_to(top)), st.st_size, sha256_file(f) if st.st_size <= _HASH_LIMIT else None]


def sampled_sha256(path: Path, size: int) -> str:
    """sha256 of a file's first and last :data:`_IMAGE_SAMPLE` bytes (the whole file when it is that small)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(_IMAGE_SAMPLE))
        if size > 2 * _IMAGE_SAMPLE:
            fh.seek(size - _IMAGE_SAMPLE)
        h.update(fh.read(_IMAGE_SAMPLE))
    return h.hexdigest()


def images_fingerprint(records: Iterable[Any]) -> str:
    """Fingerprint of the image files a data set's records name.

    Rule: per distinct image (its ``file_name``, relative to the data set's image root, so a copied data set keeps
    its fingerprint) the file size and the sha256 of its first and last 8 KiB (:func:`sampled_sha256`; the whole
    file up to 16 KiB). Replacing, re-encoding, resizing or truncating an image changes it; an edit confined to
    the middle of a file that keeps its size does not. Cost: one ``stat`` and at most 16 KiB read per image. Only
    regular files are read (:func:`~loupe_bench.utils.bounded.regular_file`); a missing or special file enters as
    its name and ``None``."""
    rows: Dict[str, Any] = {}
    for rec in records:
        name = str(rec.file_name)
        if name in rows:
            continue
        try:
            f = regular_file(rec.path, what="image")
        except DataError:
            rows[name] = None
            continue
        size = f.stat().st_size
        rows[name] = [size, sampled_sha256(f, size)]
    return stable_hash(sorted(rows.items()), 32)


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


def spec_digest(spec: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Digest of a resolved model spec (its canonical JSON); ``None`` for a model without a spec."""
    return None if spec is None else stable_hash(dict(spec), 16)


def record_run(run_dir: Path, recipe: Any, data: Dict[str, Any], model_name: Optional[str],
               changes: Sequence[Dict[str, Any]] = (), model_spec: Optional[Mapping[str, Any]] = None) -> Path:
    """Write the run's record at the start of training (:func:`~loupe_bench.utils.run_files.write_run_record`):
    the full recipe, the data record, the model name, ``model_spec_digest`` (:func:`spec_digest` of the resolved
    spec, null for a model without one) and the changes of every resume so far."""
    return run_files.write_run_record(run_dir, {
        "recipe": recipe.to_dict(), "data": data, "model": model_name, "model_spec_digest": spec_digest(model_spec),
        "changes": list(changes)})


def read_run_record(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The run's record (:func:`~loupe_bench.utils.run_files.run_record`); ``None`` when the folder has no
    ``run.json``, a :class:`RunMismatchError` when it has one that is not a run record of ours."""
    run_dir = Path(run_dir)
    rec = run_files.run_record(run_dir)
    if rec is None and (run_dir / RUN_FILE).exists():
        raise RunMismatchError(f"{run_dir / RUN_FILE}: not a loupe-bench run record (schema {RUN_SCHEMA})")
    return rec


def check_model_spec(recorded: Mapping[str, Any], spec: Optional[Mapping[str, Any]], run_dir: Path) -> None:
    """Refuse a resume whose resolved model spec differs from the run's.

    Rule: the run's spec digest is the one ``run.json`` records, else that of the spec the run saved
    (``config.json``); a resume given a spec of another digest is refused (no ``--allow-changed``: the run's
    architecture and weights belong to its own spec), naming both digests and the first fields that differ."""
    new = spec_digest(spec)
    saved = _saved_spec(run_dir)
    old = recorded.get("model_spec_digest") or spec_digest(saved)
    if old is None or new is None or old == new:
        return
    fields = ""
    if saved is not None and spec_digest(saved) == old:
        a, b = flatten(saved), flatten(dict(spec or {}))
        keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        fields = f" (differs in {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''})"
    raise RunMismatchError(f"{run_dir}: resume refused: the run was trained with model spec {old}, this resume "
                           f"gives spec {new}{fields}; resume with the run's own spec (its {CONFIG_FILE})")


def _saved_spec(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The spec the run saved (``config.json``; ``None`` without one or when it is not a mapping)."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        return None
    spec = run_files.read_config(run_dir, error=RunMismatchError)
    return spec if isinstance(spec, dict) else None


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
