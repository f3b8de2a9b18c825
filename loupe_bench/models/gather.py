"""Cross-rank gathering of embeddings for contrastive losses.

With a process group initialised (``torchrun`` DDP), :func:`gather_batch` concatenates every rank's rows so each
rank sees the negatives of the global batch; without one it is the identity. Loss functions call it, so the training
engine gets cross-rank negatives without knowing about them.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> Tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_batch(t: Tensor, with_grad: bool = True) -> Tensor:
    """All-gather ``t`` along dim 0 across ranks (rank order); identity without a process group.

    Args:
        t: ``[B, ...]`` tensor, the same shape on every rank.
        with_grad: gradients flow to every rank's rows (``torch.distributed.nn.functional.all_gather``). When
            False, other ranks' rows are constants and only the local slice carries gradients (open_clip's default).
    """
    rank, size = world()
    if size == 1:
        return t
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(list(all_gather(t)), dim=0)
    parts = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(parts, t.detach().contiguous())
    parts[rank] = t
    return torch.cat(parts, dim=0)


def local_targets(n_local: int, device: torch.device) -> Tensor:
    """Indices of this rank's rows in the gathered batch (the positives of local-loss logits)."""
    rank, _ = world()
    return torch.arange(n_local, device=device) + rank * n_local
