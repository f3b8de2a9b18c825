"""Model directories: ``model.safetensors`` + ``config.json`` (the spec) + tokenizer (and tower config) files.

Weights are only ever read with safetensors (or ``torch.load(weights_only=True)`` for foreign ``.pth`` files in
:func:`~loupe_bench.models.towers.load_state_file`); a checkpoint that does not match the model is a
:class:`~loupe_bench.errors.CheckpointError` naming the missing / unexpected keys.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..utils.io import atomic_write_bytes, atomic_write_json, read_json
from .towers import load_strict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def state_for_saving(model: nn.Module) -> Dict[str, Tensor]:
    """The state dict as independent contiguous CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_model(model: nn.Module, directory: Union[str, Path]) -> Path:
    """Write a model directory: weights, spec and whatever the model needs to rebuild itself (tokenizer ...)."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_extra"):
        model.save_extra(directory)
    atomic_write_bytes(directory / WEIGHTS_FILE, save(state_for_saving(model), metadata={"format": "pt"}))
    atomic_write_json(directory / CONFIG_FILE, model.spec)
    return directory


def load_weights(model: nn.Module, path: Union[str, Path]) -> None:
    """Load a ``.safetensors`` state dict into ``model``; every key must match."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors ({exc})") from None
    load_strict(model, state, str(path))


def latest_pointer_target(run_dir: Union[str, Path]) -> Optional[Path]:
    """The checkpoint folder named by ``<run>/checkpoints/latest``, resolved inside the run folder only.

    Rule: the pointer must hold one plain folder name (``step_<n>``: no path separator, not absolute, not ``..``)
    and the folder it names, symlinks resolved, must lie inside ``<run>/checkpoints``. Anything else is a
    :class:`CheckpointError`; a missing pointer is ``None``.
    """
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{pointer}: unreadable checkpoint pointer ({exc})") from None
    cand = root / name
    plain = (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
             and not Path(name).is_absolute())
    if not plain or root.resolve() not in cand.resolve().parents:
        raise CheckpointError(f"{pointer}: points outside the run's checkpoints folder ({name!r}); refusing to "
                              "follow it")
    return cand


def run_state(run_dir: Union[str, Path]) -> Dict[str, Any]:
    """Whether a directory is a training run, whether it finished, and which weights stand for it.

    Rule: a run has ``checkpoints/`` or ``run.json``. It has *finished* when its final ``model.safetensors`` exists
    and (when ``run.json`` is there) ``run.json`` records ``finished_step`` — a run resumed to train further clears
    it, so an older final file is not taken for the newer state. A finished run stands for its final weights at
    ``finished_step``; an unfinished one for the checkpoint ``checkpoints/latest`` names (see
    :func:`latest_pointer_target`), at that checkpoint's step.

    Returns:
        ``{"is_run", "finished", "weights" (Path or None), "checkpoint_step" (int or None), "total_steps"}``.
    """
    run_dir = Path(run_dir)
    record = None
    if (run_dir / "run.json").is_file():
        try:
            record = read_json(run_dir / "run.json")
        except CheckpointError:
            record = None
        record = record if isinstance(record, dict) else {}
    is_run = record is not None or (run_dir / "checkpoints").is_dir()
    final = run_dir / WEIGHTS_FILE
    finished_step = record.get("finished_step") if record is not None else None
    finished = final.is_file() and (record is None or finished_step is not None)
    recipe = (record or {}).get("recipe") or {}
    out: Dict[str, Any] = {"is_run": is_run, "finished": finished, "weights": final if final.is_file() else None,
                           "checkpoint_step": finished_step if finished else None,
                           "total_steps": recipe.get("steps") if isinstance(recipe, dict) else None}
    if not finished and is_run:
        cand = latest_pointer_target(run_dir)
        if cand is None or not (cand / WEIGHTS_FILE).is_file():
            steps = sorted((int(d.name[5:]), d) for d in (run_dir / "checkpoints").glob("step_*")
                           if d.name[5:].isdigit() and (d / WEIGHTS_FILE).is_file()) \
                if (run_dir / "checkpoints").is_dir() else []
            cand = steps[-1][1] if steps else None
        if cand is not None:
            out["weights"] = cand / WEIGHTS_FILE
            suffix = cand.name[len("step_"):]
            out["checkpoint_step"] = int(suffix) if suffix.isdigit() else None
    return out


def is_model_dir(path: Union[str, Path]) -> bool:
    path = Path(path)
    return (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file()


def load_model_dir(directory: Union[str, Path], weights: Union[str, Path, None] = None) -> nn.Module:
    """Rebuild the model saved in ``directory`` (its spec names the family) and load its weights, in eval mode.

    Args:
        directory: holds ``config.json`` and the tokenizer / tower configs.
        weights: a different ``model.safetensors`` (e.g. a run's ``checkpoints/step_<n>/``); default the one in
            ``directory``.
    """
    from .factory import model_class

    directory = Path(directory)
    spec = read_json(directory / CONFIG_FILE)
    model = model_class(spec).from_spec(spec, model_dir=directory)
    load_weights(model, Path(weights) if weights is not None else directory / WEIGHTS_FILE)
    return model.eval()
