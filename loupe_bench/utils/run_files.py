"""The run folder, in one place: the name of every file in it, its record's schema, and reading and writing every
file of it that is plain text (no torch here: readers such as the report and ``eval`` use it cheaply).

A model folder (:func:`~loupe_bench.models.checkpoint.save_model`) and a training run (``loupe-bench train``)::

    config.json           CONFIG_FILE      the model spec (:func:`write_config` / :func:`read_config`)
    model.safetensors     WEIGHTS_FILE     the weights (a run: when training finishes)
    tokenizer/            TOKENIZER_DIR    the tokenizer and the tower configs the family saves
    run.json              RUN_FILE         a run's identity, written first (schema RUN_SCHEMA; :func:`run_record`)
    recipe.yaml           RECIPE_FILE      the resolved recipe (:func:`write_recipe` / :func:`read_recipe`)
    log.jsonl             LOG_FILE         one JSON object per logged step (:func:`append_log_row`, :func:`read_log`)
    tensorboard/          TENSORBOARD_DIR  TensorBoard events (``log.tensorboard``)
    checkpoints/          CHECKPOINT_DIR   step_<n>/{model.safetensors, state.pt} and ``latest`` (a folder name)

The bytes of the weights and of the training state are other modules' business — safetensors in
:mod:`loupe_bench.models.checkpoint`, ``torch.save`` in :mod:`loupe_bench.train.resume` — but where they lie, which
checkpoint is the newest and whether a folder is a run (and finished) are answered here.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

from ..errors import CheckpointError, DataError, LoupeBenchError
from .bounded import json_load, load_json_file, read_text, regular_file, yaml_load
from .io import atomic_write_json, atomic_write_text, clean_stale_temps, read_json

PathLike = Union[str, Path]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
RECIPE_FILE = "recipe.yaml"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
STEP_PREFIX = "step_"
STATE_FILE = "state.pt"
#: the files of a complete checkpoint folder
CHECKPOINT_FILES = (STATE_FILE, WEIGHTS_FILE)
#: the ``schema`` of ``run.json``: the one mark of a run of ours (its version)
RUN_SCHEMA = "loupe-bench/run/v1"


# -- config.json ------------------------------------------------------------------------------------------------------
def write_config(directory: PathLike, spec: Mapping[str, Any]) -> Path:
    """Write the model spec as ``config.json`` (sorted keys: byte-stable)."""
    return atomic_write_json(Path(directory) / CONFIG_FILE, spec)


def read_config(directory: PathLike, error: type = DataError) -> Any:
    """The ``config.json`` of a model or run folder, read within the ``config`` size limit; a missing, non-regular
    or malformed file is an ``error`` naming it."""
    return load_json_file(Path(directory) / CONFIG_FILE, kind="config", error=error)


# -- run.json ---------------------------------------------------------------------------------------------------------
def _opt(kind: type, what: str):
    """A field check: absent or null, or a value of ``kind`` (never a bool standing for an integer)."""
    return (lambda v: v is None or (isinstance(v, kind) and not isinstance(v, bool)), f"null or {what}")


def _step_count(low: int):
    """A field check: absent or null, or an integer (not a bool) of at least ``low``."""
    return (lambda v: v is None or (type(v) is int and v >= low), f"null or an integer >= {low}")


#: the fields of a run record that are read back, each ``(check, what it must be)``; ``recipe`` is required
RUN_FIELDS = {
    "recipe": (lambda v: isinstance(v, dict), "an object (the recipe)"),
    "finished_step": _step_count(0),
    "model": _opt(str, "a model name"),
    "model_spec_digest": _opt(str, "a digest string"),
    "data": _opt(dict, "an object (the data source)"),
    "changes": (lambda v: v is None or (isinstance(v, list) and all(isinstance(c, dict) for c in v)),
                "null or a list of objects"),
}
#: fields of the recorded recipe that are read back (``recipe.<key>``)
RUN_RECIPE_FIELDS = {"steps": _step_count(1), "epochs": _step_count(1)}


def check_run_record(record: Mapping[str, Any], path: PathLike) -> Dict[str, Any]:
    """``record`` when every field a run record holds has its type (:data:`RUN_FIELDS`,
    :data:`RUN_RECIPE_FIELDS`); else a :class:`CheckpointError` naming the file and the first bad field."""
    recipe = record.get("recipe")
    fields = [(k, record.get(k), rule) for k, rule in RUN_FIELDS.items()]
    if isinstance(recipe, dict):
        fields += [(f"recipe.{k}", recipe.get(k), rule) for k, rule in RUN_RECIPE_FIELDS.items()]
    for key, value, (ok, what) in fields:
        if not ok(value):
            raise CheckpointError(f"{path}: malformed run record: field {key!r} must be {what}, got {value!r:.80}; "
                                  "refusing to read or write this run")
    return dict(record)


def write_run_record(run_dir: PathLike, fields: Mapping[str, Any]) -> Path:
    """Write ``run.json``: ``fields`` (:data:`RUN_FIELDS`) under the schema :data:`RUN_SCHEMA`, ``finished_step``
    null until :func:`mark_finished`."""
    return atomic_write_json(Path(run_dir) / RUN_FILE, {**fields, "schema": RUN_SCHEMA, "finished_step": None})


def mark_finished(run_dir: PathLike, step: int) -> None:
    """Record in ``run.json`` that training ended at ``step`` with its final weights written."""
    path = Path(run_dir) / RUN_FILE
    if path.is_file():
        rec = read_json(path)
        rec["finished_step"] = int(step)
        atomic_write_json(path, rec)


def run_record(run_dir: PathLike) -> Optional[Dict[str, Any]]:
    """The folder's ``run.json`` when it is a run record of ours, else ``None``.

    Rule: a folder is a training run of loupe-bench only when its ``run.json`` is a regular file within the
    ``result`` size limit holding a JSON object whose ``schema`` is :data:`RUN_SCHEMA` (every ``run.json``
    loupe-bench ever wrote has it). Folder and file names (``checkpoints/``, ``config.json``) prove nothing: another
    tool's log folder may hold them too. A record that states our schema is then checked field by field
    (:func:`check_run_record`): a wrong type is a :class:`CheckpointError`, so a malformed run is neither trained
    into nor evaluated."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path, kind="result")
    except LoupeBenchError:
        return None
    if not (isinstance(record, dict) and record.get("schema") == RUN_SCHEMA):
        return None
    return check_run_record(record, path)


# -- recipe.yaml ------------------------------------------------------------------------------------------------------
def write_recipe(run_dir: PathLike, text: str) -> Path:
    """Write the resolved recipe (its YAML text) as ``recipe.yaml``."""
    return atomic_write_text(Path(run_dir) / RECIPE_FILE, text)


def read_recipe(run_dir: PathLike) -> Optional[Dict[str, Any]]:
    """The run's ``recipe.yaml`` as a mapping (bounded read); ``None`` when it is missing, unreadable or not a
    mapping."""
    path = Path(run_dir) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        data = yaml_load(read_text(path, kind="spec", what="recipe"), str(path))
    except (OSError, LoupeBenchError):
        return None
    return data if isinstance(data, dict) else None


# -- log.jsonl --------------------------------------------------------------------------------------------------------
class LogRows(NamedTuple):
    """The rows of a ``log.jsonl`` that are JSON objects, and how many non-empty lines are not."""

    rows: List[Dict[str, Any]]
    skipped: int


def append_log_row(run_dir: PathLike, row: Mapping[str, Any]) -> None:
    """Append one row to ``log.jsonl``: the JSON object with sorted keys, one line."""
    with open(Path(run_dir) / LOG_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")


def read_log(run_dir: PathLike) -> Optional[LogRows]:
    """The rows of the run's ``log.jsonl`` (``None`` without one), read through :mod:`~loupe_bench.utils.bounded`;
    a line that is not a JSON object of finite numbers (a row cut by a kill, a NaN) is left out and counted."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return None
    rows, skipped = [], 0
    for i, line in enumerate(read_text(path, kind="annotation", what="training log").splitlines()):
        try:
            row = json_load(line, f"{path}:{i + 1}")
        except DataError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif line.strip():
            skipped += 1
    return LogRows(rows, skipped)


def truncate_log(run_dir: PathLike, step: int) -> None:
    """Drop the rows of ``log.jsonl`` of steps after ``step`` (written after the checkpoint a run resumes from) and
    rows cut by a kill; the kept lines stay byte for byte."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a row cut by a kill
    atomic_write_text(path, "".join(l + "\n" for l in keep))


def remove_log(run_dir: PathLike) -> None:
    """Delete ``log.jsonl`` when present (the rows of an earlier attempt killed before its first checkpoint)."""
    path = Path(run_dir) / LOG_FILE
    if path.is_file():
        path.unlink()


def clean_temps(run_dir: PathLike) -> int:
    """Remove temp files of killed writers in the run folder, its checkpoints folder and each step folder."""
    root = checkpoint_root(run_dir)
    dirs = [Path(run_dir), root] + (sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else [])
    return sum(clean_stale_temps(d) for d in dirs)


# -- checkpoints ------------------------------------------------------------------------------------------------------
def checkpoint_root(run_dir: PathLike) -> Path:
    """``<run>/checkpoints``."""
    return Path(run_dir) / CHECKPOINT_DIR


def step_dir(run_dir: PathLike, step: int) -> Path:
    """``<run>/checkpoints/step_<step>``, the checkpoint folder after optimiser step ``step``."""
    return checkpoint_root(run_dir) / f"{STEP_PREFIX}{step}"


def checkpoint_step(path: PathLike) -> Optional[int]:
    """The step a ``step_<n>`` folder name states (``None`` for any other name)."""
    suffix = Path(path).name[len(STEP_PREFIX):]
    return int(suffix) if Path(path).name.startswith(STEP_PREFIX) and suffix.isdigit() else None


def list_step_dirs(run_dir: PathLike, required: Sequence[str] = (WEIGHTS_FILE,)) -> List[Path]:
    """The ``checkpoints/step_<n>`` folders holding every file in ``required``, oldest (smallest ``n``) first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for d in root.glob(f"{STEP_PREFIX}*"):
        step = checkpoint_step(d)
        if step is not None and d.is_dir() and all((d / name).is_file() for name in required):
            found.append((step, d))
    return [d for _, d in sorted(found)]


def list_checkpoints(run_dir: PathLike) -> List[Path]:
    """Complete checkpoints (every file of :data:`CHECKPOINT_FILES` present), oldest first."""
    return list_step_dirs(run_dir, CHECKPOINT_FILES)


def prune_checkpoints(run_dir: PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints (and half-written step folders)."""
    keep = set(list_checkpoints(run_dir)[-keep_last:])
    for d in checkpoint_root(run_dir).glob(f"{STEP_PREFIX}*"):
        if d.is_dir() and d not in keep:
            shutil.rmtree(d, ignore_errors=True)


def write_latest(run_dir: PathLike, checkpoint: Path) -> None:
    """Point ``checkpoints/latest`` at the checkpoint folder ``checkpoint`` (its name, one line)."""
    atomic_write_text(checkpoint_root(run_dir) / LATEST, checkpoint.name + "\n")


def latest_pointer_target(run_dir: PathLike) -> Optional[Path]:
    """The checkpoint folder named by ``<run>/checkpoints/latest``, resolved inside the run folder only.

    Rule: the pointer, when present, must be a small regular UTF-8 text file (a FIFO, a device, a folder or a
    dangling link is refused without being opened) holding one plain folder name (``step_<n>``: no path
    separator, not absolute, not ``..``), and the folder it names, symlinks resolved, must lie inside
    ``<run>/checkpoints``. Anything else is a :class:`CheckpointError`; a missing pointer is ``None``.
    """
    root = checkpoint_root(run_dir)
    pointer = root / LATEST
    if not os.path.lexists(pointer):
        return None
    name = read_text(pointer, kind="spec", what="checkpoint pointer", error=CheckpointError).strip()
    cand = root / name
    plain = (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
             and not Path(name).is_absolute())
    if not plain or root.resolve() not in cand.resolve().parents:
        raise CheckpointError(f"{pointer}: points outside the run's checkpoints folder ({name!r}); refusing to "
                              "follow it")
    return cand


def _present(path: Path, what: str) -> bool:
    """Whether ``path`` is there: ``False`` when nothing is (not even a dangling link), ``True`` for a regular file;
    a present file that is not regular (a FIFO, a device, a folder, a dangling link) is a :class:`CheckpointError`
    naming it, never read and never skipped for another file."""
    if not os.path.lexists(path):
        return False
    regular_file(path, what=what, error=CheckpointError)
    return True


def latest_checkpoint(run_dir: PathLike, required: Sequence[str] = (WEIGHTS_FILE,)) -> Optional[Path]:
    """The newest checkpoint of a run holding every file in ``required``: the one ``checkpoints/latest`` names
    (:func:`latest_pointer_target`) when it holds them, else the highest-numbered such ``step_<n>``, else ``None``.

    Rule: a required file of the named checkpoint that is present but not a regular file is a
    :class:`CheckpointError`; only a checkpoint missing a file is passed over for an older one."""
    cand = latest_pointer_target(run_dir)
    if cand is not None and all([_present(cand / name, f"checkpoint file {name}") for name in required]):
        return cand
    complete = list_step_dirs(run_dir, required)
    return complete[-1] if complete else None


def run_state(run_dir: PathLike) -> Dict[str, Any]:
    """Whether a directory is a training run, whether it finished, and which weights stand for it.

    Rule: a run is a folder with a run record of ours (:func:`run_record`). It has *finished* when its final
    ``model.safetensors`` exists and ``run.json`` records ``finished_step`` — a run resumed to train further clears
    it, so an older final file is not taken for the newer state. A finished run stands for its final weights at
    ``finished_step``; an unfinished one for its :func:`latest_checkpoint` (the one ``checkpoints/latest`` names),
    at that checkpoint's step. A folder that is not a run stands for its own ``model.safetensors``. A final
    ``model.safetensors`` that is present but not a regular file (a FIFO, a device, a folder, a dangling link) is a
    :class:`CheckpointError` naming it: it never makes a finished run pass for an unfinished one.

    Returns:
        ``{"is_run", "finished", "weights" (Path or None), "checkpoint_step" (int or None), "total_steps"}``.
    """
    run_dir = Path(run_dir)
    record = run_record(run_dir)
    is_run = record is not None
    final = run_dir / WEIGHTS_FILE
    has_final = _present(final, "final weights file")
    finished_step = record.get("finished_step") if is_run else None
    finished = has_final and (not is_run or finished_step is not None)
    recipe = (record or {}).get("recipe") or {}
    out: Dict[str, Any] = {"is_run": is_run, "finished": finished, "weights": final if has_final else None,
                           "checkpoint_step": finished_step if finished else None,
                           "total_steps": recipe.get("steps")}
    if not finished and is_run:
        cand = latest_checkpoint(run_dir)
        if cand is not None:
            out["weights"] = cand / WEIGHTS_FILE
            out["checkpoint_step"] = checkpoint_step(cand)
    return out
