"""Optimisers (a registry: AdamW from torch, LAMB from ``timm.optim``), weight-decay groups and the schedule."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
from torch import nn

from ..registry import Registry
from .recipe import OptimConfig

OPTIMIZERS = Registry("optimizer")


def param_groups(model: nn.Module, weight_decay: float, no_decay: Sequence[str]) -> List[Dict]:
    """Split trainable parameters into a decayed and a non-decayed group.

    No decay on every tensor with fewer than two dimensions (biases, norm gains, the temperature / logit scale) and
    on every parameter whose name contains one of ``no_decay`` (token, position and class embeddings).
    """
    decay, keep = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or any(s in name for s in no_decay):
            keep.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    return groups


@OPTIMIZERS.register("adamw")
def _adamw(groups: List[Dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay), torch's implementation."""
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("lamb")
def _lamb(groups: List[Dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """LAMB (layer-wise adaptive moments) from ``timm.optim`` (FILIP's optimiser)."""
    from timm.optim import Lamb

    return Lamb(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser over :func:`param_groups`."""
    return OPTIMIZERS.get(cfg.name)(param_groups(model, cfg.weight_decay, cfg.no_decay), cfg)


def cosine_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    Linear warm-up ``f = (step + 1) / warmup`` for ``step < warmup``, then cosine decay
    ``f = r + (1 - r) * (1 + cos(pi * p)) / 2`` with progress ``p = (step - warmup) / max(1, total - warmup)`` and
    floor ``r = min_ratio``.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """A ``LambdaLR`` applying :func:`cosine_factor` (stepped once per optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_factor(s, total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
    )
