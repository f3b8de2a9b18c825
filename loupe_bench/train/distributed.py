"""Process-group set-up under ``torchrun`` and data-parallel gradient synchronisation.

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them and initialises NCCL on CUDA or gloo on CPU. Without them the run is a single process.

Data parallelism (strategy ``ddp``) keeps one replica per rank: parameters and buffers are broadcast from rank 0
at the start, each rank back-propagates its share of the global batch (the models' loss all-gathers embeddings with
gradients, so negatives span every rank), and :func:`average_gradients` averages the gradients with one bucketed
all-reduce per step — DDP's synchronisation done once per optimiser step, which keeps it exact with feature-caching
accumulation (several backward passes per step) and with parameters a loss does not reach. Strategy ``fsdp2``
shards the towers with ``torch.distributed.fsdp.fully_shard`` instead (gradients are reduce-scattered by FSDP).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, List

import torch
import torch.distributed as dist
from torch import nn

from ..utils.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", backend: str = "auto") -> DistInfo:
    """Initialise the default process group from torchrun's environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, False)
    here = False
    if not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
        here = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, here)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Make every rank's parameters and buffers equal to rank ``src``'s."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def average_gradients(params: Iterable[nn.Parameter], bucket_bytes: int = 25 << 20) -> None:
    """Average ``.grad`` over ranks: flatten into buckets of ≈``bucket_bytes``, one ``all_reduce`` (sum) each, / W.

    A parameter without a gradient on this rank takes part with zeros (so every rank runs the same collectives); a
    parameter without a gradient on **every** rank keeps ``grad = None``, as in one process (the optimiser skips it:
    e.g. the region head on a step where ℒ_TSA does not run, ``loupe.tsa.every``).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    params = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets: List[List[nn.Parameter]] = []
    current: List[nn.Parameter] = []
    size = 0
    for p in params:
        if current and (size + p.numel() * p.element_size() > bucket_bytes or p.grad.dtype != current[0].grad.dtype):
            buckets.append(current)
            current, size = [], 0
        current.append(p)
        size += p.numel() * p.element_size()
    if current:
        buckets.append(current)
    for bucket in buckets:
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        offset = 0
        for p in bucket:
            n = p.numel()
            p.grad.copy_(flat[offset: offset + n].view_as(p.grad))
            offset += n


def apply_fsdp2(model: nn.Module, device: torch.device) -> List[nn.Parameter]:
    """Shard ``model`` with FSDP2: every direct child holding parameters becomes one FSDP unit, then the root.

    Scalar parameters (temperatures) cannot be sharded; they stay replicated (``ignored_params``) and are returned so
    the caller averages their gradients with :func:`average_gradients`.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    scalars = [p for p in model.parameters() if p.ndim == 0]
    ignored = set(scalars)
    for child in model.children():
        if any(p not in ignored for p in child.parameters()):
            fully_shard(child, mesh=mesh, ignored_params=ignored)
    fully_shard(model, mesh=mesh, ignored_params=ignored)
    return scalars


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, …]`` (a one-element list for a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
