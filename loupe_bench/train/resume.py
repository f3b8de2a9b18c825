"""Training state of a run, saved beside each checkpoint's weights and read back to resume it bit-identically.

A checkpoint is ``checkpoints/step_<n>/{model.safetensors, state.pt}`` plus ``checkpoints/latest``; where these lie,
which checkpoint is complete or the newest, and the pointer belong to the run folder
(:mod:`loupe_bench.utils.run_files`), the weights' bytes to :mod:`loupe_bench.models.checkpoint`, ``state.pt``'s
bytes to this module. ``state.pt`` holds everything needed to continue bit-identically: optimizer, scheduler and
GradScaler state, the RNG states of python, numpy, torch (CPU and every CUDA device) of every rank, and the data
position (epoch, batch within the epoch, optimiser step). It is written with ``torch.save`` and read with
``weights_only=True``; every value is a tensor or a plain Python container. Each file is written atomically (temp +
rename), the ``latest`` pointer last, so a run killed at any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import numpy as np
import torch

from ..errors import CheckpointError
from ..models.checkpoint import read_weights, write_weights
from ..utils import run_files
from ..utils.io import atomic_write_bytes
from ..utils.run_files import CHECKPOINT_DIR, CHECKPOINT_FILES, STATE_FILE, WEIGHTS_FILE, checkpoint_root


# -- RNG --------------------------------------------------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    """RNG states of python ``random``, numpy's global generator, torch CPU and every CUDA device (weights-only safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: Dict[str, Any] = {
        "python": [py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(int(x) for x in py_state.tolist()), py_gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- files ------------------------------------------------------------------------------------------------------------
def save_state(path: Union[str, Path], state: Dict[str, Any]) -> Path:
    """``torch.save`` to memory, then an atomic write."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_state(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a ``state.pt`` with ``weights_only=True``; a missing or unreadable file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training-state file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad checkpoint
        raise CheckpointError(f"{path}: unreadable training state ({type(exc).__name__}: {exc})") from None


def write_checkpoint(run_dir: Union[str, Path], step: int, weights: Mapping[str, torch.Tensor],
                     state: Dict[str, Any], keep_last: int) -> Path:
    """Write ``checkpoints/step_<step>/{model.safetensors, state.pt}`` (weights header metadata ``{"step": step}``),
    then point ``checkpoints/latest`` at it and prune to the newest ``keep_last``; returns the checkpoint folder."""
    d = run_files.step_dir(run_dir, step)
    d.mkdir(parents=True, exist_ok=True)
    write_weights(d / WEIGHTS_FILE, weights, metadata={"step": str(step)})
    save_state(d / STATE_FILE, state)
    run_files.write_latest(run_dir, d)
    run_files.prune_checkpoints(run_dir, keep_last)
    return d


def resolve_resume(resume: Union[str, Path], run_dir: Union[str, Path]) -> Path:
    """``latest`` (the checkpoint the ``latest`` pointer names, resolved inside the run folder only — see
    :func:`~loupe_bench.utils.run_files.latest_pointer_target` — else the newest complete checkpoint of
    ``run_dir``) or a path to a ``step_<n>`` folder / a run dir.

    Rule: the checkpoint must belong to the run being resumed — its folder, symlinks resolved, lies directly in
    ``run_dir/checkpoints``; another run's checkpoint is refused (its schedule and state are not this run's)."""
    if str(resume) == "latest":
        found = run_files.latest_checkpoint(run_dir, CHECKPOINT_FILES)
        if found is None:
            raise CheckpointError(f"{checkpoint_root(run_dir)}: no checkpoint to resume from")
        return found
    p = Path(resume)
    if (p / CHECKPOINT_DIR).is_dir():
        found = run_files.latest_checkpoint(p, CHECKPOINT_FILES)
        if found is None:
            raise CheckpointError(f"{checkpoint_root(p)}: no checkpoint to resume from")
        p = found
    elif not all((p / name).is_file() for name in CHECKPOINT_FILES):
        raise CheckpointError(f"{p}: not a checkpoint folder (needs {WEIGHTS_FILE} and {STATE_FILE})")
    _check_belongs(p, run_dir)
    return p


def _check_belongs(where: Path, run_dir: Union[str, Path]) -> None:
    """Refuse a checkpoint folder that is not directly inside ``run_dir/checkpoints`` (symlinks resolved)."""
    own = checkpoint_root(run_dir).resolve()
    if where.resolve().parent != own:
        raise CheckpointError(f"--resume {where}: this checkpoint does not belong to the run being resumed "
                              f"({run_dir}); a run resumes only from its own checkpoints (--resume latest or a "
                              f"folder in {checkpoint_root(run_dir)})")


def load_checkpoint(where: Path, run_dir: Union[str, Path]) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """``(state, weights)`` of the checkpoint folder ``where``, both read (and so checked) before a resume writes
    anything. A truncated or corrupt file is a :class:`CheckpointError` naming the broken checkpoint and, when the
    run holds an older complete one, offering it (``--resume <that folder>``)."""
    try:
        return load_state(where / STATE_FILE), read_weights(where / WEIGHTS_FILE)
    except CheckpointError as exc:
        here = run_files.checkpoint_step(where)
        older = [d for d in run_files.list_checkpoints(run_dir)
                 if run_files.checkpoint_step(d) < (-1 if here is None else here)]
        offer = (f"; resume from the previous checkpoint with --resume {older[-1]}" if older
                 else "; no earlier checkpoint in this run")
        raise CheckpointError(f"checkpoint {where} is broken ({exc}){offer}") from None
