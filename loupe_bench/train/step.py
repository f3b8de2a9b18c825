"""One optimiser step's forward/backward, with gradient accumulation by feature caching.

With ``accum_freq = K > 1`` the per-rank batch is cut into K micro-batches and (GradCache-style, exact):

1. every micro-batch is embedded without gradients; its embeddings ``e_k`` are cached (and the RNG state before
   each forward is remembered);
2. the cached embeddings are concatenated into leaf tensors ``E = [e_1; …; e_K]`` (so negatives span the whole
   accumulated batch), the loss ``L = loss_from_embeddings(E, batch)`` is computed once and back-propagated, which
   gives ``∂L/∂E`` and the gradients of the parameters used only by the loss (temperature, heads);
3. each micro-batch is embedded again with gradients (same RNG state, so dropout masks match) and
   ``backward(e_k, grad=∂L/∂E[k])`` adds ``∂L/∂e_k · ∂e_k/∂θ``.

By the chain rule the summed gradient equals that of the large batch, ``∂L/∂θ = Σ_k ∂L/∂e_k · ∂e_k/∂θ`` — with
K+1 tower forwards and one loss evaluation. Unlike re-computing the loss per micro-batch (open_clip), the
parameters of the loss get their gradient once, not K times.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict, List, Optional

import torch
from torch import Tensor

from ..models.base import LossOutput


def batch_size_of(batch: Dict[str, Any]) -> int:
    for v in batch.values():
        if isinstance(v, Tensor) and v.ndim > 0:
            return int(v.shape[0])
    raise ValueError("batch holds no batched tensor")


def split_batch(batch: Dict[str, Any], parts: int) -> List[Dict[str, Any]]:
    """Cut every batched tensor (dim 0) into ``parts`` equal micro-batches; other values are shared."""
    n = batch_size_of(batch)
    if n % parts:
        raise ValueError(f"batch of {n} cannot be cut into {parts} equal micro-batches")
    m = n // parts
    out = []
    for k in range(parts):
        sl = slice(k * m, (k + 1) * m)
        out.append({key: (v[sl] if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == n else v)
                    for key, v in batch.items()})
    return out


def _rng_snapshot(device: torch.device):
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return cpu, cuda


def _rng_restore(snap, device: torch.device) -> None:
    torch.set_rng_state(snap[0])
    if snap[1] is not None:
        torch.cuda.set_rng_state(snap[1], device)


def _concat(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    out = {}
    for key, first in parts[0].items():
        if isinstance(first, Tensor) and first.ndim > 0:
            out[key] = torch.cat([p[key] for p in parts], dim=0)
        else:
            out[key] = first
    return out


def forward_backward(
    model: torch.nn.Module,
    batch: Dict[str, Any],
    accum_freq: int = 1,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    scale: Callable[[Tensor], Tensor] = lambda t: t,
    embed_fn: Optional[Callable[[Dict[str, Any]], Dict[str, Tensor]]] = None,
    check: Optional[Callable[[LossOutput], None]] = None,
) -> LossOutput:
    """Compute the loss of one (per-rank) batch and accumulate its gradient into ``.grad``.

    Args:
        model: the :class:`~loupe_bench.models.base.VLModel` (unwrapped).
        batch: the per-rank batch.
        accum_freq: number of micro-batches (feature caching when > 1).
        autocast: factory of the mixed-precision context.
        scale: applied to the loss before backward (GradScaler's ``scale``; identity otherwise).
        embed_fn: replaces ``model.embed`` (e.g. a ``torch.compile``-d version).
        check: called with the loss before any backward (the NaN/inf guard raises from here).

    Returns:
        the :class:`LossOutput` of the whole batch (with graph-free tensors).
    """
    embed = embed_fn or model.embed
    if accum_freq == 1:
        with autocast():
            out = model.loss_from_embeddings(embed(batch), batch)
        if check is not None:
            check(out)
        scale(out.total).backward()
        return _detached(out)

    device = next((v.device for v in batch.values() if isinstance(v, Tensor)), torch.device("cpu"))
    micro = split_batch(batch, accum_freq)
    cached, snaps = [], []
    with torch.no_grad():
        for mb in micro:
            snaps.append(_rng_snapshot(device))
            with autocast():
                cached.append(embed(mb))
    cat = _concat(cached)
    leaves = {k: (v.detach().requires_grad_(True) if isinstance(v, Tensor) and v.is_floating_point() else v)
              for k, v in cat.items()}
    with autocast():
        out = model.loss_from_embeddings(leaves, batch)
    if check is not None:
        check(out)
    scale(out.total).backward()
    after_loss = _rng_snapshot(device)
    offsets = [0]
    for c in cached:
        offsets.append(offsets[-1] + batch_size_of(c))
    for k, mb in enumerate(micro):
        _rng_restore(snaps[k], device)
        with autocast():
            emb = embed(mb)
        outs, grads = [], []
        for key, leaf in leaves.items():
            if isinstance(leaf, Tensor) and leaf.grad is not None and isinstance(emb[key], Tensor) \
                    and emb[key].requires_grad:
                outs.append(emb[key])
                grads.append(leaf.grad[offsets[k]: offsets[k + 1]].to(emb[key].dtype))
        if outs:
            torch.autograd.backward(outs, grads)
    _rng_restore(after_loss, device)
    return _detached(out)


def _detached(out: LossOutput) -> LossOutput:
    return LossOutput(out.total.detach(), {k: v.detach() for k, v in out.terms.items()}, dict(out.logs))
