"""Cross-rank gathering of embeddings for contrastive losses.

With a process group initialised (``torchrun`` DDP), :func:`gather_batch` concatenates every rank's rows so each
rank sees the negatives of the global batch; without one it is the identity. Loss functions call it, so the training
engine gets cross-rank negatives without knowing about them. :func:`ring_pass` moves a tensor one rank along the ring
instead (SigLIP's chunked loss: no rank ever holds the global batch).
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


def _neighbour_exchange(t: Tensor, to_rank: int, from_rank: int) -> Tensor:
    """Send ``t`` to ``to_rank`` and receive a tensor of the same shape from ``from_rank`` (one batched p2p call)."""
    received = torch.empty_like(t)
    ops = [dist.P2POp(dist.isend, t.contiguous(), to_rank), dist.P2POp(dist.irecv, received, from_rank)]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return received


class _RingPass(torch.autograd.Function):
    """One step around the ring: rank ``r`` sends its tensor to ``r+1`` and receives ``r−1``'s (mod world size).

    Backward is the reverse step: the gradient of the received tensor goes back to the rank that sent it, so each rank
    accumulates the gradient that every other rank's loss puts on its rows."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        rank, size = world()
        return _neighbour_exchange(t, (rank + 1) % size, (rank - 1) % size)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        rank, size = world()
        return _neighbour_exchange(grad, (rank - 1) % size, (rank + 1) % size)


def ring_pass(t: Tensor, with_grad: bool = True) -> Tensor:
    """The tensor of the previous rank on the ring (rank ``r`` gets rank ``r−1 mod W``'s ``t``; identity on one
    process). Every rank must call it the same number of times with tensors of one shape and dtype.

    Args:
        t: the local tensor (same shape on every rank).
        with_grad: the gradient of the received tensor is sent back to its owner (SigLIP's chunked loss needs it for
            the owner's rows to see the negatives they are on other ranks); False: the received tensor is a constant.
    """
    rank, size = world()
    if size == 1:
        return t
    if with_grad:
        return _RingPass.apply(t)
    return _neighbour_exchange(t.detach(), (rank + 1) % size, (rank - 1) % size)
