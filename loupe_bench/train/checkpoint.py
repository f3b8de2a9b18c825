"""Checkpoints of a run: ``checkpoints/step_<n>/{model.safetensors, state.pt}`` and ``checkpoints/latest``.

``state.pt`` holds everything needed to continue bit-identically: optimizer, scheduler and GradScaler state, the RNG
states of python, numpy, torch (CPU and every CUDA device) of every rank, and the data position (epoch, batch within
the epoch, optimiser step). It is written with ``torch.save`` and read with ``weights_only=True``; every value is a
tensor or a plain Python container. Each file is written atomically (temp + rename), the ``latest`` pointer last, so a
run killed at any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import io
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from ..errors import CheckpointError
from ..utils.io import atomic_write_bytes, atomic_write_text

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.pt"
WEIGHTS_FILE = "model.safetensors"


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
def checkpoint_root(run_dir: Union[str, Path]) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


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


def write_latest(run_dir: Union[str, Path], step_dir: Path) -> None:
    atomic_write_text(checkpoint_root(run_dir) / LATEST, step_dir.name + "\n")


def list_checkpoints(run_dir: Union[str, Path]) -> List[Path]:
    """Complete checkpoints (both files present), oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    out = []
    for d in root.glob("step_*"):
        suffix = d.name[len("step_"):]
        if d.is_dir() and suffix.isdigit() and (d / STATE_FILE).is_file() and (d / WEIGHTS_FILE).is_file():
            out.append((int(suffix), d))
    return [d for _, d in sorted(out)]


def prune_checkpoints(run_dir: Union[str, Path], keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (and half-written step folders)."""
    root = checkpoint_root(run_dir)
    complete = list_checkpoints(run_dir)
    keep = set(complete[-keep_last:])
    for d in root.glob("step_*"):
        if d.is_dir() and d not in keep:
            shutil.rmtree(d, ignore_errors=True)


def resolve_resume(resume: Union[str, Path], run_dir: Union[str, Path]) -> Path:
    """``latest`` (the checkpoint the ``latest`` pointer names, resolved inside the run folder only — see
    :func:`~loupe_bench.models.checkpoint.latest_pointer_target` — else the newest complete checkpoint of
    ``run_dir``) or a path to a ``step_<n>`` folder / a run dir."""
    if str(resume) == "latest":
        from ..models.checkpoint import latest_pointer_target

        cand = latest_pointer_target(run_dir)
        if cand is not None and (cand / STATE_FILE).is_file() and (cand / WEIGHTS_FILE).is_file():
            return cand
        complete = list_checkpoints(run_dir)
        if not complete:
            raise CheckpointError(f"{checkpoint_root(run_dir)}: no checkpoint to resume from")
        return complete[-1]
    p = Path(resume)
    if (p / CHECKPOINT_DIR).is_dir():
        return resolve_resume("latest", p)
    if not ((p / STATE_FILE).is_file() and (p / WEIGHTS_FILE).is_file()):
        raise CheckpointError(f"{p}: not a checkpoint folder (needs {WEIGHTS_FILE} and {STATE_FILE})")
    return p


def save_weights(path: Union[str, Path], state_dict: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> Path:
    """Atomically write a safetensors file (shared tensors are cloned so every name is stored)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata or {}))


def load_weights(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt one is a :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: unreadable weights ({type(exc).__name__}: {exc})") from None


def load_checkpoint(where: Path, run_dir: Union[str, Path]):
    """``(state, weights)`` of the checkpoint folder ``where``, both read (and so checked) before a resume writes
    anything. A truncated or corrupt file is a :class:`CheckpointError` naming the broken checkpoint and, when the
    run holds an older complete one, offering it (``--resume <that folder>``)."""
    try:
        return load_state(where / STATE_FILE), load_weights(where / WEIGHTS_FILE)
    except CheckpointError as exc:
        older = [d for d in list_checkpoints(run_dir) if _step_of(d) < _step_of(where)]
        offer = (f"; resume from the previous checkpoint with --resume {older[-1]}" if older
                 else "; no earlier checkpoint in this run")
        raise CheckpointError(f"checkpoint {where} is broken ({exc}){offer}") from None


def _step_of(d: Path) -> int:
    suffix = d.name[len("step_"):]
    return int(suffix) if suffix.isdigit() else -1


def load_model_weights(model: torch.nn.Module, path: Union[str, Path],
                       state_dict: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """Load safetensors weights (``state_dict`` when already read from ``path``) into ``model`` strictly;
    mismatches name the missing / unexpected keys."""
    sd = load_weights(path) if state_dict is None else state_dict
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the model (missing: {missing[:5]}{'…' if len(missing) > 5 else ''}; "
            f"unexpected: {unexpected[:5]}{'…' if len(unexpected) > 5 else ''})"
        )
    with torch.no_grad():
        for k, v in own.items():
            if v.shape != sd[k].shape:
                raise CheckpointError(f"{path}: {k}: shape {tuple(sd[k].shape)} != model {tuple(v.shape)}")
            v.copy_(sd[k])
