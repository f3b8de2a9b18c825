"""The tower-evaluated token-level game: the model's matching score of a **masked image** (ℒ_TSA's value).

``v(S) = cos( f(x_S), t )`` — keep only the patches in ``S``, run the image tower on them (all of it, or its last
``last_blocks`` blocks over cached states of the earlier ones), pool and project exactly as for ℒ_CMC, and take
the cosine with the paired caption's pooled embedding ``t``. ``v(∅) = 0`` (an empty image carries no evidence).

Why the tower and not cached tokens (loupe-method.md §6.2, ``[I]``): a cached-token pooling ``cos(Σ_S x_i, t)`` is a
normalised *linear* pooling in which similar patches substitute for each other, so every semantic unit is
sub-additive (negative interaction) by construction. Re-encoding the masked image lets attention combine parts:
a two-colour object's caption matches only when both halves are present, which is the cooperation the paper's
token-level interaction is meant to find.

Hidden patches are **dropped** from the sequence (no attention mask): the masks of one call are grouped by their
number of kept patches and each group runs as one batch ``[Q_k, P + k, W]`` (``P`` prefix tokens, e.g. ``[CLS]``,
always kept). With ``bucket > 1`` the kept counts are rounded up to a multiple of ``bucket`` and the shorter rows of
a group are padded with key-masked tokens (:meth:`~loupe_bench.models.towers.TimmImageTower.finish_states`'s
``valid``): the values are those of the unpadded rows up to float round-off, in far fewer tower calls (a
Monte-Carlo batch has nearly every kept count from 1 to ``N``; on tiny towers the per-call cost dominates). Towers
that cannot drop tokens (Swin) use ``drop: pixels``: hidden patches are set to 0 in the
normalised image (the dataset mean) and the whole tower runs per mask.

**Contrastive values** (``bank``/``target`` given), over a bank of ``K`` texts with ``p_S = softmax_k(s · cos(f(x_S),
t_k))[target]``: ``contrast: prob`` gives ``v(S) = p_S − 1/K`` (the matching probability), ``contrast: log`` gives
``v(S) = log p_S + log K`` (the information, in nats, the kept patches give about which text is the paired one);
``v(∅) = 0`` is the uniform guess for both. Unlike the cosine they do not saturate on partial evidence: half of a
red-and-blue square matches "red square" as well as "red-and-blue square", so with both in the bank its value stays
low until both halves are kept. Measured on a trained ``loupe-tiny``: the two halves of two-part objects interact
positively under ``prob`` (the log's concavity keeps its part interaction negative: ``log p_A − log p_T − log p_B``
with ``p_T ≈ p_B ≈ 1/15`` is positive only when ``K < 225`` or so).

The game is a constant target: it runs under ``torch.no_grad()`` with the tower in eval mode (no dropout / drop
path), restored afterwards.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError

DROPS = ("tokens", "pixels")
#: the contrastive value: ``log`` = log-probability of the paired text + log K; ``prob`` = its probability − 1/K
CONTRASTS = ("log", "prob")


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


class MaskedTowerGame:
    """``v(masks [G, Q, N] bool) -> [G, Q]``: cosine of the re-encoded masked image with the caption.

    Args:
        model: a :class:`~loupe_bench.models.dual_encoder.DualEncoder` (its ``image_tower`` and ``image_proj``).
        pixels: ``[G, 3, H, W]`` normalised images, one game per image.
        text: ``[G, D]`` caption embeddings (normalised here).
        last_blocks: blocks re-run on the kept tokens (``None``: the whole tower; ``drop: tokens`` only).
        drop: ``tokens`` (drop hidden patch tokens; ViT towers) or ``pixels`` (zero hidden patches; any tower).
        chunk: most token rows ``Q_k · (P + k)`` of one tower call (memory bound).
        bucket: kept counts are padded up to a multiple of this (``1``: exact groups, no attention mask).
        bank: ``[K, D]`` text embeddings of the contrastive value (normalised here); ``None``: the cosine value.
        target: ``[G]`` index into ``bank`` of each game's paired text (with ``bank``).
        scale: logit scale ``s`` of the contrastive value (the model's ℒ_CMC scale is the natural choice).
    """

    def __init__(self, model: nn.Module, pixels: Tensor, text: Tensor, last_blocks: Optional[int] = None,
                 drop: str = "tokens", chunk: int = 65536, bucket: int = 1, bank: Optional[Tensor] = None,
                 target: Optional[Tensor] = None, scale: float = 1.0, contrast: str = "log"):
        if drop not in DROPS:
            raise SpecError(f"tsa.drop: unknown {drop!r}; known: {list(DROPS)}")
        tower = model.image_tower
        if drop == "tokens" and not getattr(tower, "supports_token_drop", False):
            raise SpecError(f"tsa.drop: 'tokens' needs a ViT-like image tower ({type(tower).__name__} cannot drop "
                            "tokens); use drop: pixels")
        self.model = model
        self.drop = drop
        self.last_blocks = last_blocks
        self.chunk = int(chunk)
        if int(bucket) < 1:
            raise SpecError(f"tsa.bucket must be >= 1, got {bucket!r}")
        self.bucket = int(bucket)
        self.text = F.normalize(text.detach().float(), dim=-1)
        self.bank = None if bank is None else F.normalize(bank.detach().float(), dim=-1)
        if (bank is None) != (target is None):
            raise ValueError("a contrastive game needs both bank and target")
        self.target = None if target is None else target.long()
        self.scale = float(scale)
        if contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
        self.contrast = contrast
        self.grid = tuple(model.grid)
        self.n = self.grid[0] * self.grid[1]
        self.pixels = pixels.detach()
        self.states: Optional[Tensor] = None
        if drop == "tokens":
            with torch.no_grad(), _eval_mode(tower):
                self.states = tower.token_states(self.pixels, last_blocks)
            self.prefix = int(tower.num_prefix_tokens)
            if self.states.shape[1] != self.prefix + self.n:
                raise SpecError(f"image tower gives {self.states.shape[1] - self.prefix} patch tokens, grid {self.grid}")

    def select(self, idx: Tensor) -> "MaskedTowerGame":
        """The games ``idx`` only (cached states sliced, not recomputed)."""
        out = MaskedTowerGame.__new__(MaskedTowerGame)
        out.__dict__.update(self.__dict__)
        out.text = self.text[idx]
        out.target = None if self.target is None else self.target[idx]
        out.pixels = self.pixels[idx]
        out.states = None if self.states is None else self.states[idx]
        return out

    def _embed(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.model.image_proj(pooled).float(), dim=-1)

    def _score(self, emb: Tensor, games: Tensor) -> Tensor:
        """``v`` of masked-image embeddings ``emb [R, D]`` of games ``games [R]`` (cosine or contrastive)."""
        if self.bank is None:
            return (emb * self.text[games]).sum(-1)
        logp = torch.log_softmax(self.scale * emb @ self.bank.T, dim=-1).gather(1, self.target[games][:, None])[:, 0]
        k = self.bank.shape[0]
        return logp + math.log(k) if self.contrast == "log" else logp.exp() - 1.0 / k

    def _tokens(self, masks: Tensor) -> Tensor:
        g, q, n = masks.shape
        flat = masks.reshape(g * q, n)
        size = flat.sum(-1)
        out = torch.zeros(g * q, dtype=torch.float32, device=masks.device)
        game_of = torch.arange(g, device=masks.device).repeat_interleave(q)
        tower = self.model.image_tower
        p = self.prefix
        b = self.bucket
        length = torch.clamp((size + b - 1) // b * b, max=n)  # padded kept count of each row
        length = torch.where(size > 0, length, torch.zeros_like(length))
        for k in torch.unique(length).tolist():
            if k == 0:
                continue
            rows = torch.nonzero(length == k).flatten()
            step = max(1, self.chunk // (p + k))
            for s in range(0, rows.numel(), step):
                r = rows[s : s + step]
                # kept patches first (ascending), then hidden ones as padding
                kept = (~flat[r]).to(torch.int8).argsort(dim=-1, stable=True)[:, :k]
                st = self.states[game_of[r]]  # [R, P + N, W]
                idx = torch.cat([torch.arange(p, device=masks.device).expand(r.numel(), p), p + kept], dim=1)
                x = torch.gather(st, 1, idx[..., None].expand(-1, -1, st.shape[-1]))
                valid = None
                if b > 1 and bool((size[r] < k).any()):
                    pos = torch.arange(p + k, device=masks.device)
                    valid = pos[None, :] < (p + size[r])[:, None]
                emb = self._embed(tower.finish_states(x, self.last_blocks, valid))
                out[r] = self._score(emb, game_of[r])
        return out.reshape(g, q)

    def _pixels(self, masks: Tensor) -> Tensor:
        g, q, n = masks.shape
        gh, gw = self.grid
        h, w = self.pixels.shape[-2:]
        out = torch.zeros(g, q, dtype=torch.float32, device=masks.device)
        step = max(1, self.chunk // max(1, n))
        flat = masks.reshape(g * q, n)
        game_of = torch.arange(g, device=masks.device).repeat_interleave(q)
        nonempty = torch.nonzero(flat.any(-1)).flatten()
        for s in range(0, nonempty.numel(), step):
            r = nonempty[s : s + step]
            keep = flat[r].reshape(-1, 1, gh, gw).to(self.pixels.dtype)
            keep = F.interpolate(keep, size=(h, w), mode="nearest")
            img = self.pixels[game_of[r]] * keep
            emb = self._embed(self.model.image_tower(img).pooled)
            out.view(-1)[r] = self._score(emb, game_of[r])
        return out

    def __call__(self, masks: Tensor) -> Tensor:
        if masks.dim() != 3 or masks.shape[-1] != self.n:
            raise ValueError(f"masks must be [G, Q, {self.n}], got {tuple(masks.shape)}")
        tower = self.model.image_tower
        with torch.no_grad(), _eval_mode(tower):
            return self._tokens(masks) if self.drop == "tokens" else self._pixels(masks)
