"""LOUPE's proxy heads and objectives as standalone modules/functions (testable on random tensors).

* :class:`RegionHead` — semantic region generation: a box and a confidence per anchor patch.
* :func:`nms_topk` — top-K with NMS.
* :func:`pool_members` (aliases :func:`pool_regions`, :func:`pool_phrases`) — region / phrase embeddings.
* :func:`tsa_features`, :func:`fsa_features` — coalition features for the neural Shapley module.
* :func:`tsa_loss`, :func:`fsa_targets`, :func:`fsa_loss` — ℒ_TSA and ℒ_FSA.

Provenance tags (``[V]`` verified against the paper, ``[R-*]`` recalled, ``[I]`` our design) are those of
``docs/loupe.md``, which explains each choice.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import boxes_to_patch_mask


def anchor_centres(grid: Tuple[int, int], device=None, dtype=torch.float32) -> Tensor:
    """``[H*W, 2]`` normalised ``(x, y)`` centre of each patch (row-major, token ``n`` at row ``n // W``)."""
    h, w = grid
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    return torch.stack([xs[None, :].expand(h, w).reshape(-1), ys[:, None].expand(h, w).reshape(-1)], dim=-1)


class RegionHead(nn.Module):
    """Per-anchor-patch box and confidence (docs/loupe.md, ``[R-med/low]`` structure, ``[I]`` details).

    A 2-layer MLP on each patch token ``x_n`` outputs ``(dx, dy, log w, log h)`` in patch units relative to the
    anchor (patch) centre and a confidence logit:

    ``cx = a_x + dx / W``, ``cy = a_y + dy / H``, ``w = e^{log w} / W``, ``h = e^{log h} / H``,
    ``box = clamp([cx − w/2, cy − h/2, cx + w/2, cy + h/2], 0, 1)``, ``c_n = σ(logit_n)``.

    Args:
        dim: token width.
        hidden: MLP width.
        init_size: initial box side in patches (bias of ``log w``, ``log h``).
    """

    def __init__(self, dim: int, hidden: int = 128, init_size: float = 2.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 5))
        with torch.no_grad():
            self.mlp[2].bias.zero_()
            self.mlp[2].bias[2:4].fill_(math.log(init_size))

    def forward(self, tokens: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """``tokens [B, N, D]`` → ``(boxes [B, N, 4] normalised xyxy, logits [B, N])``."""
        h, w = grid
        out = self.mlp(tokens)
        a = anchor_centres(grid, tokens.device, out.dtype)
        scale = out.new_tensor([w, h])
        c = a[None] + out[..., 0:2] / scale
        size = out[..., 2:4].clamp(-4.0, 4.0).exp() / scale
        boxes = torch.cat([c - size / 2, c + size / 2], dim=-1).clamp(0.0, 1.0)
        return boxes, out[..., 4]


def nms_topk(boxes: Tensor, scores: Tensor, k: int, iou: float, fill: bool = True) -> Tensor:
    """Indices of the top-``k`` boxes of one image after NMS at ``iou`` (``[K']``, best first).

    With ``fill`` the selection is padded with the best suppressed boxes so exactly ``min(k, N)`` come back.
    """
    from torchvision.ops import nms

    keep = nms(boxes.float(), scores.float(), iou)[:k]
    if fill and keep.numel() < min(k, boxes.shape[0]):
        rest = scores.argsort(descending=True)
        rest = rest[~torch.isin(rest, keep)]
        keep = torch.cat([keep, rest[: min(k, boxes.shape[0]) - keep.numel()]])
    return keep


def member_masks(boxes: Tensor, grid: Tuple[int, int]) -> Tensor:
    """``[B, K, 4]`` boxes → ``[B, K, H*W]`` bool patch membership (:func:`boxes_to_patch_mask` per image)."""
    b, k, _ = boxes.shape
    return boxes_to_patch_mask(boxes.reshape(b * k, 4), grid).reshape(b, k, -1)


def pool_members(tokens: Tensor, members: Tensor, proj: Optional[nn.Module] = None) -> Tensor:
    """Member pooling ``h_k = normalize(proj(mean_{n ∈ members_k} x_n))``: ``tokens [B,N,D]``, ``members [B,K,N]``
    (0/1 or weights) → ``[B,K,D]``; an empty member set gives the normalised ``proj(0)``.

    Regions are the patches of a box (``h^I_b``, ``members`` the box's patch mask) and phrases the tokens of a span
    (``h^T_j``, ``members`` the phrase-token mask): the same operation, so one function.
    """
    m = members.to(tokens.dtype)
    mean = m @ tokens / m.sum(-1, keepdim=True).clamp_min(1.0)
    if proj is not None:
        mean = proj(mean)
    return F.normalize(mean, dim=-1)


#: region embeddings ``h^I_b``: :func:`pool_members` over a box's patch tokens (``tokens [B,N,D]``, ``members [B,K,N]``)
pool_regions = pool_members
#: phrase embeddings ``h^T_j``: :func:`pool_members` over a span's tokens (``[B,L,D]``, ``[B,P,L]``)
pool_phrases = pool_members


TSA_STATS = 12
"""Scalar statistics per token-level coalition in :func:`tsa_features` (besides ``3D`` vector entries and the box)."""


def tsa_features(tokens: Tensor, text: Tensor, members: Tensor, boxes: Tensor,
                 game_stats: Optional[Tensor] = None) -> Tensor:
    """Features of each token-level coalition (a box) for ``g_θ``: ``[B, C, 3D + TSA_STATS + 4]`` (all detached).

    ``[p ⊙ t, p, t, v(A), mean/max/min_{i∈A} v({i}), v(N), |A|/N, v(N∖A), I_∅, I_N, u(A), u(N), u(N∖A),
    x0, y0, x1, y1]`` with ``v`` the pooled-cosine game on the cached tokens, ``u`` the training game
    (``game_stats [B, C, 3]``, e.g. the tower-evaluated game; ``v`` itself when not given), ``p`` the normalised mean of the member tokens, and the two extreme context terms
    of the Shapley sum (each has weight ``1/n'``):

    ``I_∅ = v(A) − Σ_{i∈A} v({i})``  (empty context),
    ``I_N = [v(N) − v(N∖A)] − Σ_{i∈A} [v(N) − v(N∖{i})]``  (full context).
    """
    tokens, text, boxes = tokens.detach(), F.normalize(text.detach(), dim=-1), boxes.detach()
    m = members.to(tokens.dtype)
    p = F.normalize(m @ tokens, dim=-1)  # [B, C, D]
    t = text[:, None].expand_as(p)
    single = torch.einsum("bnd,bd->bn", F.normalize(tokens, dim=-1), text)  # v({i})  [B, N]
    per = single[:, None].expand_as(m)
    big = torch.finfo(per.dtype).max
    cnt = m.sum(-1).clamp_min(1.0)
    total = tokens.sum(1)  # [B, D]
    v_all = torch.einsum("bd,bd->b", F.normalize(total, dim=-1), text)  # v(N)
    rest = total[:, None] - m @ tokens  # Σ_{N∖A} x  [B, C, D]
    v_rest = torch.where(rest.norm(dim=-1) > 1e-6, torch.einsum("bcd,bd->bc", F.normalize(rest, dim=-1), text),
                         torch.zeros_like(cnt))
    loo = total[:, None, :] - tokens  # Σ_{N∖{i}} x  [B, N, D]
    v_loo = torch.einsum("bnd,bd->bn", F.normalize(loo, dim=-1), text)
    v_a = (p * t).sum(-1)
    i_empty = v_a - (per * m).sum(-1)
    i_full = (v_all[:, None] - v_rest) - ((v_all[:, None] - v_loo)[:, None, :] * m).sum(-1)
    stats = torch.stack([
        v_a,
        (per * m).sum(-1) / cnt,
        per.masked_fill(~members, -big).amax(-1),
        per.masked_fill(~members, big).amin(-1),
        v_all[:, None].expand_as(cnt),
        cnt / members.shape[-1],
        v_rest,
        i_empty,
        i_full,
    ], dim=-1)
    if game_stats is None:
        game_stats = torch.stack([v_a, v_all[:, None].expand_as(cnt), v_rest], dim=-1)
    stats = torch.cat([stats, game_stats.detach().to(stats.dtype)], dim=-1)
    return torch.cat([p * t, p, t, stats, boxes], dim=-1)


def fsa_features(sim: Tensor, region: Tensor, phrase: Tensor, phrase_valid: Tensor) -> Tensor:
    """Features of each region–phrase pair for ``g_θ``: ``[B, K, P, D + 10]`` (all inputs detached).

    ``[h_i ⊙ h_j, s_ij, max_j' s_ij', max_i' s_i'j, s_ij − max_j', s_ij − max_i', mean_j' s_ij', mean_i' s_i'j,
    rank of s_ij in its row / P, in its column / K, P_valid / P]``.
    """
    sim, region, phrase = sim.detach(), region.detach(), phrase.detach()
    b, k, p = sim.shape
    big = torch.finfo(sim.dtype).max
    pv = phrase_valid[:, None, :].expand(b, k, p)
    s_row = sim.masked_fill(~pv, -big)
    row_max = s_row.amax(-1, keepdim=True).expand(b, k, p)
    col_max = sim.amax(-2, keepdim=True).expand(b, k, p)
    nvalid = phrase_valid.sum(-1).clamp_min(1)[:, None, None].to(sim.dtype)
    row_mean = (sim * pv).sum(-1, keepdim=True).expand(b, k, p) / nvalid
    col_mean = sim.mean(-2, keepdim=True).expand(b, k, p)
    row_rank = (s_row[..., None, :] > sim[..., :, None]).sum(-1).to(sim.dtype) / p
    col_rank = (sim[:, None, :, :] > sim[:, :, None, :]).sum(2).to(sim.dtype) / k
    stats = torch.stack([sim, row_max, col_max, sim - row_max, sim - col_max, row_mean, col_mean, row_rank,
                         col_rank, (nvalid / p).expand(b, k, p)], dim=-1)
    return torch.cat([region[:, :, None, :] * phrase[:, None, :, :], stats], dim=-1)


def normalise_interactions(values: Tensor, valid: Tensor, temperature: float) -> Tensor:
    """TSA soft labels ``y_k = σ( Î_k / (T_I · rms(Î)) )`` with ``rms`` over the valid coalitions of the batch."""
    v = values.detach()
    rms = (v[valid] ** 2).mean().sqrt().clamp_min(1e-6) if bool(valid.any()) else v.new_tensor(1.0)
    return torch.sigmoid(v / (temperature * rms))


def tsa_loss(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """``ℒ_TSA = mean_{valid k} BCE( σ(logit_k), y_k )`` with constant targets ``y_k`` (stop-gradient)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets.detach(), reduction="none")
    return (bce * valid).sum() / valid.sum().clamp_min(1)


FSA_EPS = 1e-6
"""``ε`` of the per-phrase z-score in :func:`fsa_targets`."""


def fsa_targets(interactions: Tensor, phrase_valid: Tensor, temperature: float, eps: float = FSA_EPS) -> Tensor:
    """ℒ_FSA soft labels: per phrase, the z-scored interactions over its own image's regions, then a softmax.

    For image ``b``, phrase ``j`` and its image's ``K`` regions ``i``:

    ``μ_bj = (1/K) Σ_i Î_bij``, ``σ_bj = sqrt( (1/K) Σ_i (Î_bij − μ_bj)² )``, ``z_bij = (Î_bij − μ_bj) / (σ_bj + ε)``,
    ``q_bij = softmax_i( z_bij / T )``, and ``q_b·j = 0`` for a padding phrase.

    ``z`` is invariant to any affine rescale ``Î → a Î + c`` (``a > 0``) up to the ``ε`` term, so ``T`` is in units
    of the phrase's own spread of interactions, whatever the game's scale (docs/loupe.md, ℒ_FSA).

    Args:
        interactions: ``[B, K, P]`` ``Î_bij`` (constants).
        phrase_valid: ``[B, P]`` bool.
        temperature: ``T``.

    Returns:
        ``[B, K, P]`` (each valid phrase's column sums to 1 over ``i``), detached.
    """
    v = interactions.detach().float()
    mu = v.mean(1, keepdim=True)
    sd = (v - mu).pow(2).mean(1, keepdim=True).sqrt()
    z = (v - mu) / (sd + eps)
    q = (z / temperature).softmax(1)
    return q * phrase_valid[:, None, :].to(q.dtype)


def fsa_logits(region: Tensor, phrase: Tensor, sim_temperature: float) -> Tensor:
    """``A[b, j, (c, i)] = ⟨h^I_ci, h^T_bj⟩ / τ_f``: every phrase of image ``b`` against every region ``i`` of every
    FSA image ``c``: ``region [B, K, D]``, ``phrase [B, P, D]`` → ``[B, P, B·K]`` (column ``c·K + i``)."""
    b, k, _ = region.shape
    return torch.einsum("bpd,ckd->bpck", phrase, region).reshape(b, phrase.shape[1], b * k) / sim_temperature


def fsa_loss(region: Tensor, phrase: Tensor, targets: Tensor, phrase_valid: Tensor, sim_temperature: float) -> Tensor:
    """ℒ_FSA: soft-label cross-entropy of each phrase's region distribution, with cross-image negatives (``[I]``).

    With ``A[b, j, (c, i)] = ⟨h^I_ci, h^T_bj⟩ / τ_f`` (:func:`fsa_logits`) over the ``B·K`` regions of all ``B`` FSA
    images, the target ``q̃[b, j, (c, i)] = q_bij`` if ``c = b`` else 0 (:func:`fsa_targets`: all mass on the
    phrase's own image) and ``V`` the valid phrases:

    ``ℒ_FSA = (1/|V|) Σ_{(b,j)∈V} − Σ_{c,i} q̃[b, j, (c, i)] · log softmax_{(c,i)} A[b, j, (c, i)]``

    (0 when ``V = ∅``). For fixed logits values its minimum over the assignment of values to regions puts the
    largest logit on the largest target (rearrangement inequality), and every region of another image is a
    negative: a cross-image region more similar to the phrase raises the loss. There is no phrase-given-region
    term: a proposal that shows no phrase's object (background) has no correct phrase, and a caption with one
    phrase gives a one-way softmax (docs/loupe.md).

    Args:
        region: ``[B, K, D]`` region embeddings ``h^I`` (with gradient).
        phrase: ``[B, P, D]`` phrase embeddings ``h^T`` (with gradient).
        targets: ``[B, K, P]`` ``q_bij`` (constants; columns of valid phrases sum to 1).
        phrase_valid: ``[B, P]`` bool.
        sim_temperature: ``τ_f``.
    """
    b, k, _ = region.shape
    logp = fsa_logits(region.float(), phrase.float(), sim_temperature).log_softmax(-1)  # [B, P, B*K]
    own = logp.reshape(b, -1, b, k)[torch.arange(b), :, torch.arange(b)]  # [B, P, K]: c = b
    ce = -(targets.detach().transpose(1, 2) * own).sum(-1)  # [B, P]
    pv = phrase_valid.to(ce.dtype)
    return (ce * pv).sum() / pv.sum().clamp_min(1.0)


def jitter_boxes(boxes: Tensor, num: int, scale: float = 0.3, generator: Optional[torch.Generator] = None) -> Tensor:
    """``num`` random variants of each box (``[..., 4]`` → ``[..., num, 4]``): centre shifted by up to ``scale`` of
    the box size, sides scaled by ``e^{U(−scale, scale)}``; clamped to the image."""
    c = (boxes[..., :2] + boxes[..., 2:]) / 2
    s = (boxes[..., 2:] - boxes[..., :2]).clamp_min(1e-3)
    shape = boxes.shape[:-1] + (num, 2)
    u1 = torch.rand(shape, generator=generator, device=boxes.device) * 2 - 1
    u2 = torch.rand(shape, generator=generator, device=boxes.device) * 2 - 1
    c2 = c[..., None, :] + u1 * scale * s[..., None, :]
    s2 = s[..., None, :] * torch.exp(u2 * scale)
    return torch.cat([c2 - s2 / 2, c2 + s2 / 2], dim=-1).clamp(0.0, 1.0)


def text_hard_negatives(input_ids: Tensor, phrase_tokens: Tensor, phrase_valid: Tensor, per_text: int,
                        generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Text-only hard negatives of each caption, built from the batch's own words in token space (``[I]``).

    For caption ``b`` with valid phrases ``j`` (token spans ``P_bj``; the last token of a span is its head, the
    others its modifiers), each negative changes exactly one thing:

    * **head swap** (attribute binding): two phrases exchange their head tokens — "a red circle and a blue square"
      → "a red square and a blue circle";
    * **modifier replaced**: one modifier token of one phrase is replaced by a different modifier token seen in
      the batch's phrases — "a red circle" → "a green circle", "red-and-blue" → "red-and-green".

    Lengths never change, so a negative differs from its caption in one or two tokens only. Head swaps are taken
    first (the binding is what a bag of words cannot tell); the rest are replacements, drawn with ``generator``.

    Args:
        input_ids: ``[T, L]`` token ids of the captions.
        phrase_tokens: ``[T, P, L]`` bool phrase-token masks.
        phrase_valid: ``[T, P]`` bool.
        per_text: negatives per caption (at most; a caption without phrases gets none).

    Returns:
        ``(ids [R, L], owner [R])``: the negatives' token ids and the caption each one is built from.
    """
    spans = [[torch.nonzero(phrase_tokens[b, j]).flatten() for j in range(phrase_tokens.shape[1])
              if bool(phrase_valid[b, j]) and bool(phrase_tokens[b, j].any())] for b in range(input_ids.shape[0])]
    mod_ids = [ids[s[:-1]] for sp, ids in zip(spans, input_ids) for s in sp if s.numel() > 1]
    pool = torch.unique(torch.cat(mod_ids)) if mod_ids else input_ids.new_zeros(0)
    out, owner = [], []
    for b, sp in enumerate(spans):
        made = []
        heads = [s[-1] for s in sp]
        for a in range(len(heads)):
            for c in range(a + 1, len(heads)):
                if len(made) < per_text and input_ids[b, heads[a]] != input_ids[b, heads[c]]:
                    neg = input_ids[b].clone()
                    neg[heads[a]], neg[heads[c]] = input_ids[b, heads[c]], input_ids[b, heads[a]]
                    made.append(neg)
        mods = [int(i) for s in sp for i in s[:-1]]
        tries = 0
        while mods and pool.numel() > 1 and len(made) < per_text and tries < 4 * per_text:
            tries += 1
            pos = mods[int(torch.randint(len(mods), (1,), generator=generator))]
            new = pool[int(torch.randint(pool.numel(), (1,), generator=generator))]
            if new != input_ids[b, pos]:
                neg = input_ids[b].clone()
                neg[pos] = new
                if not any(bool((m == neg).all()) for m in made):
                    made.append(neg)
        out += made
        owner += [b] * len(made)
    if not out:
        return input_ids.new_zeros(0, input_ids.shape[1]), input_ids.new_zeros(0)
    return torch.stack(out), torch.tensor(owner, dtype=torch.long, device=input_ids.device)


def phrase_sequences(input_ids: Tensor, attention_mask: Tensor, phrase_tokens: Tensor, phrase_valid: Tensor
                     ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each valid phrase of each caption as a text of its own: ``[first token] + span tokens + [last token]``
    (the caption's start and end markers, e.g. ``[CLS] … [SEP]``), right-padded.

    Returns:
        ``(ids [R, L'], mask [R, L'], owner [R], span_mask [R, L'])``: token ids, attention mask, the caption each
        phrase comes from (phrases in caption order) and which positions hold the span's tokens.
    """
    rows, owner = [], []
    for b in range(input_ids.shape[0]):
        last = int(attention_mask[b].sum()) - 1
        for j in range(phrase_tokens.shape[1]):
            if bool(phrase_valid[b, j]) and bool(phrase_tokens[b, j].any()):
                span = input_ids[b][phrase_tokens[b, j]]
                rows.append(torch.cat([input_ids[b, :1], span, input_ids[b, last:last + 1]]))
                owner.append(b)
    if not rows:
        z = input_ids.new_zeros(0, 1)
        return z, z, input_ids.new_zeros(0), z.bool()
    width = max(r.numel() for r in rows)
    ids = input_ids.new_zeros(len(rows), width)
    mask = torch.zeros(len(rows), width, dtype=attention_mask.dtype, device=input_ids.device)
    span_mask = torch.zeros(len(rows), width, dtype=torch.bool, device=input_ids.device)
    for r, row in enumerate(rows):
        ids[r, : row.numel()] = row
        mask[r, : row.numel()] = 1
        span_mask[r, 1 : row.numel() - 1] = True
    return ids, mask, torch.tensor(owner, dtype=torch.long, device=input_ids.device), span_mask
