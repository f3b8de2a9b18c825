"""One rule for ``--device`` everywhere (train, eval, reproduce paper, bench): ``auto``, ``cpu``, ``cuda`` or
``cuda:N``.

``auto`` (the default of ``eval``, ``reproduce paper``, ``bench`` and :func:`loupe_bench.evaluate`) picks CUDA when a
GPU is visible, else the CPU; results record the device it resolved to. Asking for CUDA on a machine without one, or naming a device
this build of torch does not know, is a user error (:class:`~loupe_bench.errors.SpecError`: one line, CLI exit 2),
never a traceback from deep inside a model's ``.to()``.
"""
from __future__ import annotations

import torch

from ..errors import SpecError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(name="auto", local_rank: int = 0) -> torch.device:
    """Map a device name to a ``torch.device`` that exists on this machine.

    Args:
        name: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (or a ``torch.device``).
        local_rank: the GPU a plain ``cuda`` means (the process's local rank under torchrun).
    """
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise SpecError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise SpecError(f"device {name!r} is not supported; use one of {', '.join(DEVICE_CHOICES)}")
    if not torch.cuda.is_available():
        raise SpecError(f"device {name!r} requested but CUDA is not available on this machine "
                        "(use --device cpu, or --device auto to pick a GPU only when one is present)")
    index = local_rank if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise SpecError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
