"""The model-directory format, in one place: writing a model directory, rebuilding a model from one (with or without
its weights) and finding the checkpoints of a training run.

A model directory::

    config.json          the model spec (its ``family`` names the class that rebuilds it)
    model.safetensors    the weights
    tokenizer/           the tokenizer (and per family the tower configs its ``save_extra`` writes)

A training run is a model directory in the making: it also holds ``run.json`` (what the run records about itself,
:mod:`loupe_bench.train.runinfo`; its ``schema`` :data:`RUN_SCHEMA` alone makes a folder a run of ours),
``checkpoints/step_<n>/model.safetensors`` (beside the training state that :mod:`loupe_bench.train.resume` writes)
and ``checkpoints/latest``, a text file naming the newest ``step_<n>``; its top-level ``model.safetensors``
appears when training finishes.

Weights are only ever read with safetensors (or ``torch.load(weights_only=True)`` for foreign ``.pth`` files in
:func:`~loupe_bench.models.towers.load_state_file`); a checkpoint that does not match the model is a
:class:`~loupe_bench.errors.CheckpointError` naming the missing / unexpected keys.

This module imports no model family and not the factory: a family class is found through the registry
(:func:`~loupe_bench.models._registry.model_class`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from torch import Tensor, nn

from ..errors import CheckpointError, LoupeBenchError
from ..utils.bounded import read_text, regular_file
from ..utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ._registry import model_class
from .towers import load_strict

PathLike = Union[str, Path]

from ..utils.run_files import (  # noqa: E402,F401  (the run folder's names, defined once)
    CHECKPOINT_DIR, CONFIG_FILE, LATEST, LOG_FILE, RECIPE_FILE, RUN_FILE, RUN_SCHEMA, STEP_PREFIX, TOKENIZER_DIR,
    WEIGHTS_FILE,
)

#: safetensors header metadata of the weights :func:`save_model` writes
MODEL_METADATA = {"format": "pt"}


# -- weights ----------------------------------------------------------------------------------------------------------
def _cpu_copies(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Independent contiguous CPU copies (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def state_for_saving(model: nn.Module) -> Dict[str, Tensor]:
    """The state dict as independent contiguous CPU tensors (safetensors refuses shared storage)."""
    return _cpu_copies(model.state_dict())


def write_weights(path: PathLike, state_dict: Mapping[str, Tensor], metadata: Optional[Dict[str, str]] = None) -> Path:
    """Atomically write a safetensors file (shared tensors are cloned so every name is stored); ``metadata`` is the
    header's ``__metadata__`` (none: empty)."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(_cpu_copies(state_dict), metadata=metadata or {}))


def read_weights(path: PathLike) -> Dict[str, Tensor]:
    """Read a safetensors file; a missing, non-regular, truncated or corrupt one (its header checked against the file
    size before anything is allocated: :func:`~loupe_bench.models.untrusted.load_safetensors`) is a
    :class:`CheckpointError`."""
    from .untrusted import load_safetensors

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    return load_safetensors(path)


def load_weights(model: nn.Module, path: PathLike, state_dict: Optional[Mapping[str, Tensor]] = None) -> None:
    """Load the safetensors weights at ``path`` (``state_dict`` when already read from it) into ``model``; every key
    and shape must match (:func:`~loupe_bench.models.towers.load_strict`)."""
    state = read_weights(path) if state_dict is None else state_dict
    load_strict(model, state, str(path))


# -- the model directory ----------------------------------------------------------------------------------------------
def write_spec(directory: PathLike, spec: Mapping[str, Any]) -> Path:
    """Write the spec as ``config.json``."""
    return atomic_write_json(Path(directory) / CONFIG_FILE, spec)


def read_spec(directory: PathLike) -> Dict[str, Any]:
    """The spec a model directory holds (``config.json``)."""
    return read_json(Path(directory) / CONFIG_FILE)


def write_model_files(model: nn.Module, directory: PathLike) -> Path:
    """Everything of a model directory but the weights: ``config.json`` (when the model has a spec) and the files
    rebuilding it needs — the model's ``save_extra`` (tokenizer, tower configs), else its tokenizer's ``save`` into
    ``tokenizer/``. A training run writes these at its start, so ``load_model(run_dir)`` works mid-run."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = getattr(model, "spec", None)
    if spec is not None:
        write_spec(directory, spec)
    if callable(getattr(model, "save_extra", None)):
        model.save_extra(directory)
    else:
        tok = getattr(model, "tokenizer", None)
        if tok is not None and callable(getattr(tok, "save", None)):
            tok.save(directory / TOKENIZER_DIR)
    return directory


def save_model(model: nn.Module, directory: PathLike) -> Path:
    """Write a model directory: spec, whatever the model needs to rebuild itself (tokenizer ...) and its weights
    (``model.safetensors``, header metadata :data:`MODEL_METADATA`, written last)."""
    directory = write_model_files(model, directory)
    write_weights(directory / WEIGHTS_FILE, model.state_dict(), metadata=MODEL_METADATA)
    return directory


def is_model_dir(path: PathLike) -> bool:
    """Whether ``path`` holds both ``model.safetensors`` and ``config.json``."""
    path = Path(path)
    return (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file()


def rebuild_model(directory: PathLike, spec: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """The architecture saved in ``directory``, without weights: the class its spec's ``family`` names, built from the
    spec with the saved tokenizer and tower configs (no tokenizer training, no pretrained download).

    Args:
        directory: a model or run directory.
        spec: its spec when already read (:func:`read_spec`); default read from ``directory``.
    """
    directory = Path(directory)
    spec = read_spec(directory) if spec is None else spec
    return model_class(spec).from_spec(spec, model_dir=directory)


def load_model_dir(directory: PathLike, weights: Optional[PathLike] = None) -> nn.Module:
    """Rebuild the model saved in ``directory`` (:func:`rebuild_model`) and load its weights, in eval mode.

    Args:
        directory: holds ``config.json`` and the tokenizer / tower configs.
        weights: a different ``model.safetensors`` (e.g. a run's ``checkpoints/step_<n>/``); default the one in
            ``directory``.
    """
    directory = Path(directory)
    model = rebuild_model(directory)
    load_weights(model, Path(weights) if weights is not None else directory / WEIGHTS_FILE)
    return model.eval()


# -- checkpoints of a training run ------------------------------------------------------------------------------------
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
