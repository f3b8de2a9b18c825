"""The tower-evaluated token-level game: the model's matching score of a **masked image** (ℒ_TSA's value).

``v(S) = cos( f(x_S), t )`` — keep only the patches in ``S``, run the image tower on them (all of it, or its last
``last_blocks`` blocks over cached states of the earlier ones), pool and project exactly as for ℒ_CMC, and take
the cosine with the paired caption's pooled embedding ``t``. ``v(∅) = 0`` (an empty image carries no evidence).

Why the tower and not cached tokens (docs/loupe.md, ``[I]``): a cached-token pooling ``cos(Σ_S x_i, t)`` is a
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
import weakref
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError

DROPS = ("tokens", "pixels")
#: the contrastive value: ``log`` = log-probability of the paired text + log K; ``prob`` = its probability − 1/K
CONTRASTS = ("log", "prob")


def pack_segments(lengths: Sequence[int], capacity: int) -> Tuple[List[int], List[int]]:
    """Best-fit-decreasing packing of segments of ``lengths`` into rows of ``capacity``: ``(row, offset)`` per segment.

    Segments are placed longest first, each into the row whose free space is the smallest that still holds it (a new
    row when none does); within a row segments are contiguous and never overlap. Deterministic (ties by index)."""
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    free: List[List[int]] = [[] for _ in range(capacity + 1)]  # free[c]: rows with exactly c free tokens
    have = 0  # bit c set <=> free[c] is not empty
    fill: List[int] = []
    row = [0] * len(lengths)
    off = [0] * len(lengths)
    for i in order:
        ln = int(lengths[i])
        if ln < 1 or ln > capacity:
            raise ValueError(f"segment length {ln} outside 1..{capacity}")
        m = have >> ln
        if m:
            c = ln + ((m & -m).bit_length() - 1)
            b = free[c].pop()
            if not free[c]:
                have &= ~(1 << c)
        else:
            b, c = len(fill), capacity
            fill.append(0)
        row[i], off[i] = b, fill[b]
        fill[b] += ln
        rest = c - ln
        if rest > 0:
            free[rest].append(b)
            have |= 1 << rest
    return row, off


_FLAT: "weakref.WeakKeyDictionary[nn.Module, List[nn.Module]]" = weakref.WeakKeyDictionary()


def _flat_modules(module: nn.Module) -> Optional[List[nn.Module]]:
    """Every submodule of ``module`` (itself included), cached, when none overrides ``train()`` (else None)."""
    mods = _FLAT.get(module)
    if mods is None:
        mods = list(module.modules())
        if any(type(m).train is not nn.Module.train for m in mods):
            return None
        _FLAT[module] = mods
    return mods


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode inside the block, each submodule's own mode restored after it.

    Sets the ``training`` flags directly on a cached flat list of the submodules (what ``module.eval()`` does, less
    its recursive traversal, which was ~1 ms per switch of a tiny ViT: three switches a training step); falls back
    to ``eval()`` / ``train()`` when a submodule overrides ``train()``."""
    mods = _flat_modules(module)
    if mods is None:
        was = module.training
        module.eval()
        try:
            yield
        finally:
            module.train(was)
        return
    modes = [m.training for m in mods]
    for m in mods:  # the instance dict directly: nn.Module.__setattr__'s checks cost ~3 µs a module
        m.__dict__["training"] = False
    try:
        yield
    finally:
        for m, t in zip(mods, modes):
            m.__dict__["training"] = t


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
        target: ``[G]`` index into ``bank`` of each game's paired text (with ``bank``), or ``[G, J]`` several
            paired texts per game (``-1`` pads): ``p_S`` is then the largest of their probabilities (a masked image
            is scored by the phrase it matches best).
        scale: logit scale ``s`` of the contrastive value (the model's ℒ_CMC scale is the natural choice).
        pack: pack several masked images into each row of ``P + N`` tokens with a block-diagonal attention mask
            (:func:`pack_segments`), so one tower call evaluates every mask of a call (``drop: tokens`` only;
            ``bucket`` is then unused).
    """

    def __init__(self, model: nn.Module, pixels: Tensor, text: Tensor, last_blocks: Optional[int] = None,
                 drop: str = "tokens", chunk: int = 65536, bucket: int = 1, bank: Optional[Tensor] = None,
                 target: Optional[Tensor] = None, scale: float = 1.0, contrast: str = "log", pack: bool = False):
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
        self.pack = bool(pack)
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
        logp_all = torch.log_softmax(self.scale * emb @ self.bank.T, dim=-1)
        tgt = self.target[games]
        if tgt.dim() == 1:
            logp = logp_all.gather(1, tgt[:, None])[:, 0]
        else:  # several paired texts per game (-1: padding): the best one's probability
            logp = logp_all.gather(1, tgt.clamp_min(0)).masked_fill(tgt < 0, float("-inf")).amax(-1)
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

    def _packed(self, masks: Tensor) -> Tensor:
        """``v`` of every mask in as few tower calls as the ``chunk`` allows: each masked image is a **segment** of
        ``P + |S|`` tokens (its prefix tokens, then its kept patches in patch order); segments are packed into rows of
        ``L = P + N`` tokens (:func:`pack_segments`) and attend only within themselves (block-diagonal mask), so
        every segment gets what its own unpadded row gives, up to float round-off. Padding tokens attend to
        themselves only and are never pooled."""
        g, q, n = masks.shape
        dev = masks.device
        flat = masks.reshape(g * q, n)
        size = flat.sum(-1)
        out = torch.zeros(g * q, dtype=torch.float32, device=dev)
        live = torch.nonzero(size > 0).flatten()
        if live.numel() == 0:
            return out.reshape(g, q)
        p = self.prefix
        cap = p + n
        game_of = live // q
        lens = size[live] + p
        bin_of, offset = pack_segments(lens.tolist(), cap)
        bin_of = torch.tensor(bin_of, dtype=torch.long, device=dev)
        offset = torch.tensor(offset, dtype=torch.long, device=dev)
        seg_p, patch = torch.nonzero(flat[live], as_tuple=True)  # kept patches, grouped by segment, ascending
        start = torch.cumsum(size[live], 0) - size[live]
        local = p + torch.arange(seg_p.numel(), device=dev) - start[seg_p]
        src = [game_of[seg_p] * cap + p + patch]
        seg = [seg_p]
        pos = [local]
        if p:
            seg_x = torch.arange(live.numel(), device=dev).repeat_interleave(p)
            src.append(game_of[seg_x] * cap + torch.arange(p, device=dev).repeat(live.numel()))
            seg.append(seg_x)
            pos.append(torch.arange(p, device=dev).repeat(live.numel()))
        src_t, seg_t, pos_t = torch.cat(src), torch.cat(seg), torch.cat(pos)
        row_t = bin_of[seg_t]
        states = self.states.reshape(-1, self.states.shape[-1])
        tower = self.model.image_tower
        rows_per_call = max(1, self.chunk // cap)
        n_rows = int(bin_of.max()) + 1
        for r0 in range(0, n_rows, rows_per_call):
            r1 = min(n_rows, r0 + rows_per_call)
            pick = (row_t >= r0) & (row_t < r1)
            dst = (row_t[pick] - r0) * cap + offset[seg_t[pick]] + pos_t[pick]
            nr = r1 - r0
            x = states.new_zeros(nr * cap, states.shape[-1])
            x[dst] = states[src_t[pick]]
            ids = -1 - torch.arange(nr * cap, device=dev)  # padding: a segment of its own
            ids[dst] = seg_t[pick]
            ids = ids.reshape(nr, cap)
            mask = (ids[:, :, None] == ids[:, None, :])[:, None]  # [R, 1, L, L]
            y = tower.run_blocks(x.reshape(nr, cap, -1), self.last_blocks, mask).reshape(nr * cap, -1)
            segs = torch.nonzero((bin_of >= r0) & (bin_of < r1)).flatten()
            if p:  # the segment's first prefix token ([CLS])
                pooled = y[(bin_of[segs] - r0) * cap + offset[segs]]
            else:  # no prefix tokens: every placed token is a patch; the mean of the segment's patch tokens
                acc = y.new_zeros(live.numel(), y.shape[-1])
                acc.index_add_(0, seg_t[pick], y[dst])
                pooled = acc[segs] / size[live][segs, None].to(y.dtype)
            out[live[segs]] = self._score(self._embed(pooled), game_of[segs])
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
            if self.drop == "pixels":
                return self._pixels(masks)
            return self._packed(masks) if self.pack else self._tokens(masks)
