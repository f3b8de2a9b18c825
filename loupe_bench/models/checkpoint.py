"""The model-directory format: writing a model directory (its weights with safetensors) and rebuilding a model from
one, with or without its weights.

A model directory::

    config.json          the model spec (its ``family`` names the class that rebuilds it)
    model.safetensors    the weights
    tokenizer/           the tokenizer (and per family the tower configs its ``save_extra`` writes)

A training run is a model directory in the making (its checkpoints hold ``model.safetensors`` too). The names of
every file, ``config.json``, the run record and the checkpoint folders belong to the run-folder module,
:mod:`loupe_bench.utils.run_files`; this module owns the bytes of the weights.

Weights are only ever read with safetensors (or ``torch.load(weights_only=True)`` for foreign ``.pth`` files in
:func:`~loupe_bench.models.towers.load_state_file`); a checkpoint that does not match the model is a
:class:`~loupe_bench.errors.CheckpointError` naming the missing / unexpected keys.

This module imports no model family and not the factory: a family class is found through the registry
(:func:`~loupe_bench.models._registry.model_class`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from torch import Tensor, nn

from ..errors import CheckpointError
from ..utils.io import atomic_write_bytes
from ..utils.run_files import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, read_config, write_config
from ._registry import model_class
from .towers import load_strict

PathLike = Union[str, Path]

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
def write_model_files(model: nn.Module, directory: PathLike) -> Path:
    """Everything of a model directory but the weights: ``config.json`` (when the model has a spec) and the files
    rebuilding it needs — the model's ``save_extra`` (tokenizer, tower configs), else its tokenizer's ``save`` into
    ``tokenizer/``. A training run writes these at its start, so ``load_model(run_dir)`` works mid-run."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = getattr(model, "spec", None)
    if spec is not None:
        write_config(directory, spec)
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
        spec: its spec when already read (:func:`~loupe_bench.utils.run_files.read_config`); default read from
            ``directory``.
    """
    directory = Path(directory)
    spec = read_config(directory) if spec is None else spec
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
