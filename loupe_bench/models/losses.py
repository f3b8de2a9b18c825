"""Contrastive objectives and scorers shared by the dual encoders: CLIP InfoNCE, SigLIP's sigmoid loss and FILIP late
interaction.

All inputs are L2-normalised. Loss functions gather across ranks with :func:`~loupe_bench.models.gather.gather_batch`
(identity on one process), so training on several GPUs sees the negatives of the global batch.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .gather import gather_batch, local_targets, ring_pass, world

#: Added to padded text tokens by the chunked evaluation scorer. Token features are L2-normalised, so every real
#: similarity lies in [-1, 1] and a padded entry (<= -MASK_VALUE + 1) can never win a max over a caption with at least
#: one real token: the max is bit-identical to masking with -inf. Representable in fp16 and bf16.
MASK_VALUE = 3.0e4


class FilipScores(NamedTuple):
    """Both FILIP directions, each ``[N_images, N_texts]``.

    Attributes:
        i2t: ``s^I`` (mean over patches of the max over real text tokens), ranks texts for an image.
        t2i: ``s^T`` (mean over real text tokens of the max over patches), ranks images for a text.
    """

    i2t: Tensor
    t2i: Tensor


def contrastive_targets(n_rows: int, device: torch.device, local: bool) -> Tensor:
    """Column index of each row's positive: ``arange`` for a global matrix, offset by rank for local rows."""
    return local_targets(n_rows, device) if local else torch.arange(n_rows, device=device)


def clip_infonce(image: Tensor, text: Tensor, logit_scale: Tensor, gather: bool = True, with_grad: bool = True,
                 local_loss: bool = False) -> Tensor:
    """Symmetric InfoNCE over a batch of paired global embeddings (CLIP).

    With L2-normalised image embeddings ``v_i``, text embeddings ``t_j`` and logit scale ``s = 1/τ``:

        ``ℓ_i2t = -1/N Σ_i log( exp(s⟨v_i,t_i⟩) / Σ_j exp(s⟨v_i,t_j⟩) )``

        ``ℓ_t2i = -1/N Σ_j log( exp(s⟨v_j,t_j⟩) / Σ_i exp(s⟨v_i,t_j⟩) )``

        ``L_CLIP = (ℓ_i2t + ℓ_t2i) / 2``

    Args:
        image: ``[B, D]`` local image embeddings.
        text: ``[B, D]`` local text embeddings (row ``b`` pairs with image row ``b``).
        logit_scale: scalar ``s`` (already exponentiated and clamped).
        gather: all-gather across ranks (identity on one process).
        with_grad: gradients flow through the gathered rows of other ranks.
        local_loss: logits are local rows × global columns (memory ``B × B·world``) instead of global × global.
    """
    if gather:
        image_all, text_all = gather_batch(image, with_grad), gather_batch(text, with_grad)
    else:
        image_all, text_all = image, text
    if local_loss:
        logits_i2t = logit_scale * image @ text_all.T
        logits_t2i = logit_scale * text @ image_all.T
        targets = contrastive_targets(image.shape[0], image.device, local=image_all.shape[0] != image.shape[0])
    else:
        logits_i2t = logit_scale * image_all @ text_all.T
        logits_t2i = logits_i2t.T
        targets = torch.arange(image_all.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits_i2t, targets) + F.cross_entropy(logits_t2i, targets))


def sigmoid_pair_loss(image: Tensor, text: Tensor, logit_scale: Tensor, logit_bias: Tensor,
                      positives: bool = True) -> Tensor:
    """One block of SigLIP's pairwise sigmoid loss: ``−(1/n) Σ_i Σ_j log σ(z_ij · (t·⟨x_i, y_j⟩ + b))``.

    ``n`` = the block's images; ``z_ij = +1`` on the diagonal when ``positives`` (image ``i`` pairs with text ``i``),
    ``−1`` everywhere else (every pair of a block without positives: texts of another rank). Computed in float32 at
    least (bf16 / fp16 embeddings under autocast are promoted; float64 stays float64).

    Args:
        image: ``[n, D]`` L2-normalised image embeddings ``x``.
        text: ``[m, D]`` L2-normalised text embeddings ``y`` (``m = n`` when ``positives``).
        logit_scale: scalar ``t`` (already exponentiated and clamped).
        logit_bias: scalar ``b``.
        positives: whether the diagonal holds the matching pairs.
    """
    sim = image @ text.T
    acc = torch.promote_types(sim.dtype, torch.float32)
    logits = logit_scale.to(acc) * sim.to(acc) + logit_bias.to(acc)
    signs = torch.full_like(logits, -1.0)
    if positives:
        signs.diagonal().fill_(1.0)
    return -F.logsigmoid(signs * logits).sum() / image.shape[0]


def siglip_loss(image: Tensor, text: Tensor, logit_scale: Tensor, logit_bias: Tensor, chunked: bool = True,
                with_grad: bool = True) -> Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al., ICCV 2023, arXiv 2303.15343, eq. 1 and §3.3), chunked across ranks.

    With L2-normalised ``x_i`` (images), ``y_j`` (texts), ``t = exp(t')`` and bias ``b`` (both learnable):

        ``logits_ij = t·⟨x_i, y_j⟩ + b``,   ``z_ij = +1 if i = j else −1``

        ``L = −(1/|B|) Σ_{i∈B} Σ_{j∈B} log σ(z_ij · logits_ij)``

    Under DDP (W ranks, ``n = |B|/W`` pairs each) no rank builds the global matrix (the paper's chunked form): rank
    ``r`` scores its images against its own texts (the positives and ``n − 1`` negatives), then passes texts around
    the ring (:func:`~loupe_bench.models.gather.ring_pass`) ``W − 1`` times and scores its images against each
    visiting block, negatives only:

        ``L_r = −(1/n) Σ_{i∈r} Σ_{j∈B} log σ(z_ij · logits_ij)``,   ``L = (1/W) Σ_r L_r``

    so the engine's averaging of gradients over ranks gives the gradient of ``L`` (the gradients of the texts a rank
    lent go back along the ring). On one process ``L_r = L``. Memory per rank: the ``W`` blocks of ``n × n`` kept for
    backward (``n × |B|``, as a local-loss CLIP), never the ``|B| × |B|`` matrix nor the gathered batch.

    Args:
        image: ``[n, D]`` local image embeddings.
        text: ``[n, D]`` local text embeddings (row ``k`` pairs with image row ``k``).
        logit_scale: scalar ``t`` (exponentiated, clamped).
        logit_bias: scalar ``b``.
        chunked: pass texts around the ring (False: local pairs only, no cross-rank negatives).
        with_grad: gradients flow back to the ranks that lent their texts.
    """
    loss = sigmoid_pair_loss(image, text, logit_scale, logit_bias, positives=True)
    _, size = world()
    block = text
    for _ in range(size - 1 if chunked else 0):
        block = ring_pass(block, with_grad)
        loss = loss + sigmoid_pair_loss(image, block, logit_scale, logit_bias, positives=False)
    return loss


def max_mask_value(dtype: torch.dtype) -> float:
    """The value masked entries take before a max: ``-inf``, or the dtype's lowest finite value in fp16 / bf16."""
    return torch.finfo(dtype).min if dtype in (torch.float16, torch.bfloat16) else float("-inf")


class _LateInteraction(torch.autograd.Function):
    """Both FILIP directions with a sparse backward (the formulas are in :func:`filip_scores`).

    Forward keeps, besides the two score matrices, only the index of each max (``[ni, n1, nt]`` text tokens and
    ``[ni, nt, n2]`` patches). Backward builds the gradient of the similarity tensor from those indices — each
    ``s^I_{i,j}`` depends on one entry per patch, each ``s^T_{i,j}`` on one entry per text token — and multiplies it
    back onto the tokens: ``∂/∂x^I = G · X^T``, ``∂/∂x^T = Gᵀ · X^I``. The dense autograd route (masked copies,
    ``amax`` backward comparing every entry with the max) took most of a tiny FILIP training step. At an exact tie
    the whole gradient goes to one of the tied entries (``amax`` splits it); the scores are identical.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor,
                image_mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        ni, n1, d = image_tokens.shape
        nt, n2, _ = text_tokens.shape
        tmask = text_mask.bool()
        sim = (image_tokens.reshape(ni * n1, d) @ text_tokens.reshape(nt * n2, d).T).view(ni, n1, nt, n2)
        neg_inf = max_mask_value(sim.dtype)
        sim.masked_fill_(~tmask[None, None], neg_inf)
        per_patch, arg_text = sim.max(dim=3)  # [ni, n1, nt]
        n_txt = tmask.sum(dim=1).clamp(min=1)
        if image_mask is None:
            s_i = per_patch.mean(dim=1)
            w_img = torch.full((ni, n1), 1.0 / n1, dtype=sim.dtype, device=sim.device)
        else:
            imask = image_mask.bool()
            n_img = imask.sum(dim=1).clamp(min=1)
            s_i = per_patch.masked_fill(~imask[:, :, None], 0).sum(dim=1) / n_img[:, None]
            w_img = imask.to(sim.dtype) / n_img[:, None].to(sim.dtype)
            sim.masked_fill_(~imask[:, :, None, None], neg_inf)
        per_token, arg_img = sim.max(dim=1)  # [ni, nt, n2]
        s_t = per_token.masked_fill(~tmask[None], 0).sum(dim=2) / n_txt[None]
        w_txt = tmask.to(sim.dtype) / n_txt[:, None].to(sim.dtype)
        ctx.save_for_backward(image_tokens, text_tokens, arg_text, arg_img, w_img, w_txt)
        return s_i, s_t

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g_i: Tensor, g_t: Tensor):
        image_tokens, text_tokens, arg_text, arg_img, w_img, w_txt = ctx.saved_tensors
        ni, n1, d = image_tokens.shape
        nt, n2, _ = text_tokens.shape
        dtype = w_img.dtype
        grad = torch.zeros(ni, n1, nt, n2, dtype=dtype, device=w_img.device)
        if g_i is not None:  # ∂s^I_{i,j} / ∂sim[i, k, j, argmax_r] = w_img[i, k]
            grad.scatter_add_(3, arg_text[..., None], (g_i.to(dtype)[:, None, :] * w_img[:, :, None])[..., None])
        if g_t is not None:  # ∂s^T_{i,j} / ∂sim[i, argmax_k, j, r] = w_txt[j, r]
            grad.scatter_add_(1, arg_img[:, None], (g_t.to(dtype)[:, :, None] * w_txt[None])[:, None])
        flat = grad.view(ni * n1, nt * n2)
        grad_img = grad_txt = None
        if ctx.needs_input_grad[0]:
            grad_img = (flat @ text_tokens.reshape(nt * n2, d).to(dtype)).view(ni, n1, d).to(image_tokens.dtype)
        if ctx.needs_input_grad[1]:
            grad_txt = (flat.T @ image_tokens.reshape(ni * n1, d).to(dtype)).view(nt, n2, d).to(text_tokens.dtype)
        return grad_img, grad_txt, None, None


def filip_scores(image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor,
                 image_mask: Optional[Tensor] = None) -> FilipScores:
    """FILIP token-wise late interaction for every image–text pair (differentiable, dense).

    Image ``i`` has patch embeddings ``x^I_{i,k}`` (k over the ``n1`` real patches), text ``j`` token embeddings
    ``x^T_{j,r}`` (r over the ``n2`` real tokens). Padding is set to ``-inf`` before every max and left out of every
    mean:

        ``s^I_{i,j} = (1/n1) Σ_k max_r ⟨x^I_{i,k}, x^T_{j,r}⟩``   (image→text)

        ``s^T_{i,j} = (1/n2) Σ_r max_k ⟨x^I_{i,k}, x^T_{j,r}⟩``   (text→image)

    Memory is ``N_img × N_txt × n1 × n2``: use it for training batches; evaluation uses :func:`filip_similarity`.
    The gradient is the max's (sub)gradient, computed sparsely by :class:`_LateInteraction`.

    Args:
        image_tokens: ``[Ni, n1, d]``.
        text_tokens: ``[Nt, n2, d]``.
        text_mask: ``[Nt, n2]`` bool, True at real tokens (each row needs at least one).
        image_mask: optional ``[Ni, n1]`` bool restricting the patches (region scoring); None = all patches.
    """
    s_i, s_t = _LateInteraction.apply(image_tokens, text_tokens, text_mask, image_mask)
    return FilipScores(s_i, s_t)


def filip_infonce(image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor, logit_scale: Tensor,
                  gather: bool = True, with_grad: bool = True, local_loss: bool = False) -> Tensor:
    """Symmetric InfoNCE with FILIP scores: ``s^I`` logits for image→text, ``s^T`` logits for text→image.

        ``ℓ_i2t = -1/N Σ_i log( exp(s·s^I_{i,i}) / Σ_j exp(s·s^I_{i,j}) )``

        ``ℓ_t2i = -1/N Σ_j log( exp(s·s^T_{j,j}) / Σ_i exp(s·s^T_{i,j}) )``

        ``L_FILIP = (ℓ_i2t + ℓ_t2i) / 2``, with ``s^I``, ``s^T`` from :func:`filip_scores`.

    Args:
        image_tokens: ``[B, n1, d]`` local patch embeddings.
        text_tokens: ``[B, n2, d]`` local token embeddings.
        text_mask: ``[B, n2]`` bool.
        logit_scale: FILIP's own scalar scale ``s`` (exponentiated, clamped).
        gather, with_grad, local_loss: as in :func:`clip_infonce`.
    """
    if gather:
        img_all = gather_batch(image_tokens, with_grad)
        txt_all = gather_batch(text_tokens, with_grad)
        mask_all = gather_batch(text_mask, with_grad=False)
    else:
        img_all, txt_all, mask_all = image_tokens, text_tokens, text_mask
    if local_loss:
        logits_i2t = logit_scale * filip_scores(image_tokens, txt_all, mask_all).i2t  # [B, Bg]
        logits_t2i = logit_scale * filip_scores(img_all, text_tokens, text_mask).t2i.T  # [B, Bg]
        targets = contrastive_targets(image_tokens.shape[0], image_tokens.device,
                                      local=img_all.shape[0] != image_tokens.shape[0])
    else:
        scores = filip_scores(img_all, txt_all, mask_all)
        logits_i2t = logit_scale * scores.i2t
        logits_t2i = logit_scale * scores.t2i.T
        targets = torch.arange(img_all.shape[0], device=image_tokens.device)
    return 0.5 * (F.cross_entropy(logits_i2t, targets) + F.cross_entropy(logits_t2i, targets))


def _augment(x: Tensor, extra: Tensor) -> Tensor:
    """Append the mask coordinate to every token, zero-padded to a multiple of 8 (aligned GEMM): ``[..., d]`` ->
    ``[..., 8·ceil((d + 1) / 8)]``. The zero coordinates add exact zeros to every dot product."""
    d = x.shape[-1]
    width = 8 * math.ceil((d + 1) / 8)
    out = x.new_zeros(*x.shape[:-1], width)
    out[..., :d] = x
    out[..., d] = extra.to(x.dtype)
    return out


def default_chunk_elements(device: torch.device | str) -> int:
    """Similarity values per block: 8M (32 MiB fp32) on CPU, 128M on a GPU (fewer, larger kernels)."""
    return 1 << 27 if torch.device(device).type == "cuda" else 1 << 23


def filip_chunk_shape(n_images: int, n_texts: int, n1: int, n2: int, image_chunk: int,
                      max_chunk_elements: int) -> Tuple[int, int]:
    """Images and texts per block so a block's similarity tensor holds at most ``max_chunk_elements`` values."""
    ci = max(1, min(n_images, image_chunk, max_chunk_elements // max(1, n1 * n2)))
    ct = max(1, min(n_texts, max_chunk_elements // max(1, ci * n1 * n2)))
    return ci, ct


#: largest text-token tensor (``N_texts · n2 · d`` values) :func:`filip_similarity` deduplicates (its key is a copy)
DEDUPE_MAX_ELEMENTS = 1 << 26
#: similarity values per block of the unpadded CPU scorer: ``2**19`` float32 (2 MiB) stay in cache between the
#: product and the two max reductions (a GPU uses the larger :func:`default_chunk_elements` blocks)
CPU_TILE_ELEMENTS = 1 << 19


def unpadded_tile_shape(n_images: int, n_texts: int, n1: int, n2: int, image_chunk: int,
                        tile_elements: int) -> Tuple[int, int]:
    """Images and texts per block of :func:`_filip_similarity_unpadded`: about square in products
    (``ci·n1 ≈ ct·n2``), ``ci·n1·ct·n2 <= tile_elements``, at most ``image_chunk`` images."""
    side = max(1.0, math.sqrt(tile_elements))
    ci = max(1, min(n_images, image_chunk, int(side // max(1, n1)) or 1))
    ct = max(1, min(n_texts, tile_elements // max(1, ci * n1 * n2)))
    return ci, ct


def _filip_similarity_unpadded(image_tokens: Tensor, text_tokens: Tensor, image_chunk: int,
                               max_chunk_elements: int, out_device: str) -> FilipScores:
    """:func:`filip_similarity` when every text token is real (one length bucket): no mask, no extra coordinate.

    A block of ``ct`` texts × ``ci`` images is one product ``P = [ct·n2, d] @ [d, ci·n1]`` viewed as
    ``P[j, r, i, k] = ⟨x^T_{j,r}, x^I_{i,k}⟩`` (texts outer, patches innermost), so that

        ``s^I_{i,j} = mean_k max_r P[j, r, i, k]``  (max over the outer ``r`` axis: elementwise maxima of
        contiguous ``[ci·n1]`` rows, then a mean over the contiguous ``k``)

        ``s^T_{i,j} = mean_r max_k P[j, r, i, k]``  (max over the contiguous ``k``, mean over ``r``)

    and the block stays in cache (:data:`CPU_TILE_ELEMENTS`) between the product and the reductions. Results are
    accumulated text-major (``[N_texts, N_images]``) and transposed once.
    """
    ni, n1, d = image_tokens.shape
    nt, n2, _ = text_tokens.shape
    dev = image_tokens.device
    tile = min(max_chunk_elements, CPU_TILE_ELEMENTS) if dev.type == "cpu" else max_chunk_elements
    ci, ct = unpadded_tile_shape(ni, nt, n1, n2, image_chunk, tile)
    flat_i = image_tokens.reshape(ni * n1, d)
    flat_t = text_tokens.reshape(nt * n2, d)
    s_i = torch.empty(nt, ni, dtype=torch.float32, device=dev)
    s_t = torch.empty(nt, ni, dtype=torch.float32, device=dev)

    def image_block(i0: int) -> None:
        bi = min(ci, ni - i0)
        img_t = flat_i[i0 * n1 : (i0 + bi) * n1].T
        for j0 in range(0, nt, ct):
            bt = min(ct, nt - j0)
            prod = (flat_t[j0 * n2 : (j0 + bt) * n2] @ img_t).view(bt, n2, bi, n1)
            s_i[j0 : j0 + bt, i0 : i0 + bi] = prod.amax(dim=1).float().mean(dim=2)
            s_t[j0 : j0 + bt, i0 : i0 + bi] = prod.amax(dim=3).float().mean(dim=1)

    starts = list(range(0, ni, ci))
    workers = torch.get_num_threads() if dev.type == "cpu" else 1
    if workers > 1 and len(starts) > 1:
        # cache-sized blocks are too small for torch's intra-op threads (a barrier per op, costly on a busy machine):
        # blocks run single-threaded, several at a time in a thread pool (disjoint outputs, the same values)
        from concurrent.futures import ThreadPoolExecutor

        def single_threaded_block(i0: int) -> None:
            torch.set_num_threads(1)  # OpenMP's thread count is per thread: set it in every worker too
            image_block(i0)

        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(min(workers, len(starts))) as pool:
                list(pool.map(single_threaded_block, starts))
        finally:
            torch.set_num_threads(workers)
    else:
        for i0 in starts:
            image_block(i0)
    return FilipScores(s_i.T.contiguous().to(out_device), s_t.T.contiguous().to(out_device))


@torch.no_grad()
def filip_similarity(image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor, image_chunk: int = 256,
                     max_chunk_elements: Optional[int] = None, out_device: str = "cpu",
                     length_buckets: bool = True, dedupe: bool = True) -> FilipScores:
    """Chunked FILIP scores for evaluation: the values of :func:`filip_scores` with bounded memory.

    The ``[N_img, N_txt, n1, n2]`` tensor is never built: blocks of ``ci`` images × ``ct`` texts are scored with one
    matrix product ``[ci·n1, d'] @ [d', ct·n2]`` each (``d' = d + 1`` rounded up to 8), so a block needs ``ci·n1·ct·n2 <= max_chunk_elements``
    values. The extra coordinate is 1 for patches and ``0`` / ``-MASK_VALUE`` for real / padded text tokens, so the
    padding mask is applied inside the product, before every max (see :data:`MASK_VALUE`); the mean over text tokens
    excludes padding.

        ``s^I_{i,j} = (1/n1) Σ_k max_r ⟨x^I_{i,k}, x^T_{j,r}⟩``,  ``s^T_{i,j} = (1/n2) Σ_r max_k ⟨x^I_{i,k}, x^T_{j,r}⟩``

    Args:
        image_tokens: ``[Ni, n1, d]`` L2-normalised.
        text_tokens: ``[Nt, n2, d]`` L2-normalised.
        text_mask: ``[Nt, n2]`` bool; every text needs at least one real token.
        image_chunk: at most this many images per block.
        max_chunk_elements: bound on the similarity values of one block (default
            :func:`default_chunk_elements` of the features' device).
        out_device: where the two ``[Ni, Nt]`` float32 results live.
        length_buckets: score texts grouped by real length, packed (no padded column is scored).
        dedupe: score each distinct text once (texts with equal masks and equal real-token features, e.g. a caption
            repeated for several images, have equal scores by definition) and copy its columns to the repeats
            (when the text tokens hold at most :data:`DEDUPE_MAX_ELEMENTS` values).
    """
    ni = image_tokens.shape[0]
    nt, n2, d = text_tokens.shape
    if max_chunk_elements is None:
        max_chunk_elements = default_chunk_elements(image_tokens.device)
    tmask = text_mask.bool().to(text_tokens.device)
    if dedupe and 1 < nt and nt * n2 * d <= DEDUPE_MAX_ELEMENTS:
        deduped = _filip_similarity_deduped(image_tokens, text_tokens, tmask, image_chunk, max_chunk_elements,
                                            out_device, length_buckets)
        if deduped is not None:
            return deduped
    lengths = tmask.sum(dim=1)
    if length_buckets and nt > 1 and bool((lengths < n2).any()):
        return _filip_similarity_bucketed(image_tokens, text_tokens, tmask, lengths, image_chunk, max_chunk_elements,
                                          out_device)
    if nt and ni and bool(tmask.all()):
        return _filip_similarity_unpadded(image_tokens, text_tokens, image_chunk, max_chunk_elements, out_device)
    return _filip_similarity_masked(image_tokens, text_tokens, tmask, image_chunk, max_chunk_elements, out_device)


def _filip_similarity_deduped(image_tokens: Tensor, text_tokens: Tensor, tmask: Tensor, image_chunk: int,
                              max_chunk_elements: int, out_device: str,
                              length_buckets: bool) -> Optional[FilipScores]:
    """:func:`filip_similarity` scoring each distinct text once; ``None`` when every text is distinct.

    Two texts are equal when their masks and their real-token features are (padded positions are zeroed in the
    key), so they have equal scores by definition: text ``j`` takes the columns of the first text ``first[u]`` of
    its class ``u = inverse[j]``, ``s[:, j] = s_unique[:, inverse[j]]``.
    """
    nt, n2, d = text_tokens.shape
    real = torch.where(tmask[..., None], text_tokens, torch.zeros((), dtype=text_tokens.dtype,
                                                                  device=text_tokens.device))
    key = torch.cat([real.reshape(nt, n2 * d).float(), tmask.float()], dim=1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    if uniq.shape[0] >= nt:
        return None
    first = torch.full((uniq.shape[0],), nt, dtype=torch.long, device=inverse.device).scatter_reduce_(
        0, inverse, torch.arange(nt, device=inverse.device), reduce="amin")
    part = filip_similarity(image_tokens, text_tokens[first], tmask[first], image_chunk, max_chunk_elements,
                            out_device, length_buckets=length_buckets, dedupe=False)
    cols = inverse.to(part.i2t.device)
    return FilipScores(part.i2t[:, cols], part.t2i[:, cols])


def _filip_similarity_bucketed(image_tokens: Tensor, text_tokens: Tensor, tmask: Tensor, lengths: Tensor,
                               image_chunk: int, max_chunk_elements: int, out_device: str) -> FilipScores:
    """:func:`filip_similarity` with the texts grouped by real length ``L`` and packed (real tokens first, in
    order, to ``[n_L, L, d]`` with an all-true mask): no padded column is scored, and each group's columns are
    written back to their places in the ``[Ni, Nt]`` results."""
    ni = image_tokens.shape[0]
    nt, _, d = text_tokens.shape
    s_i = torch.empty(ni, nt, dtype=torch.float32, device=out_device)
    s_t = torch.empty(ni, nt, dtype=torch.float32, device=out_device)
    for length in torch.unique(lengths).tolist():
        cols = (lengths == length).nonzero().squeeze(1)
        sub_tok, sub_mask = text_tokens[cols], tmask[cols]
        if length > 0:
            order = torch.argsort((~sub_mask).to(torch.int8), dim=1, stable=True)[:, :length]
            sub_tok = torch.gather(sub_tok, 1, order[..., None].expand(-1, -1, d))
            sub_mask = torch.ones(len(cols), length, dtype=torch.bool, device=tmask.device)
        part = filip_similarity(image_tokens, sub_tok, sub_mask, image_chunk, max_chunk_elements, out_device,
                                length_buckets=False, dedupe=False)
        cols_out = cols.to(out_device)
        s_i[:, cols_out] = part.i2t
        s_t[:, cols_out] = part.t2i
    return FilipScores(s_i, s_t)


def _filip_similarity_masked(image_tokens: Tensor, text_tokens: Tensor, tmask: Tensor, image_chunk: int,
                             max_chunk_elements: int, out_device: str) -> FilipScores:
    """:func:`filip_similarity` on padded texts: the mask is applied inside the product.

    Blocks of ``ci`` images × ``ct`` texts (:func:`filip_chunk_shape`) are one product
    ``[ci·n1, d'] @ [d', ct·n2]`` of :func:`_augment`-ed tokens whose extra coordinate is 1 for patches and
    ``0`` / ``-MASK_VALUE`` for real / padded text tokens, so a padded token never wins a max; then

        ``s^I_{i,j} = (1/n1) Σ_k max_r sim[i, k, j, r]``

        ``s^T_{i,j} = (Σ_{r real} max_k sim[i, k, j, r]) / #real_j``
    """
    ni, n1, _ = image_tokens.shape
    nt, n2, _ = text_tokens.shape
    counts = tmask.sum(dim=1).clamp(min=1).to(torch.float32)
    s_i = torch.empty(ni, nt, dtype=torch.float32, device=out_device)
    s_t = torch.empty(ni, nt, dtype=torch.float32, device=out_device)
    ci, ct = filip_chunk_shape(ni, nt, n1, n2, image_chunk, max_chunk_elements)
    ones = torch.ones(1, 1, device=image_tokens.device)
    for i0 in range(0, ni, ci):
        img = image_tokens[i0:i0 + ci]
        bi = img.shape[0]
        img_aug = _augment(img, ones.expand(bi, n1)).reshape(bi * n1, -1)
        for j0 in range(0, nt, ct):
            m = tmask[j0:j0 + ct]
            bt = m.shape[0]
            bias = torch.zeros(m.shape, dtype=text_tokens.dtype, device=text_tokens.device).masked_fill_(~m, -MASK_VALUE)
            txt_aug = _augment(text_tokens[j0:j0 + ct], bias).reshape(bt * n2, -1)
            sim = (img_aug @ txt_aug.T).view(bi, n1, bt, n2)
            block_i = sim.amax(dim=3).float().mean(dim=1)
            per_token = sim.amax(dim=1).float().masked_fill_(~m[None], 0.0)
            block_t = per_token.sum(dim=2) / counts[j0:j0 + ct][None]
            s_i[i0:i0 + bi, j0:j0 + bt] = block_i.to(out_device)
            s_t[i0:i0 + bi, j0:j0 + bt] = block_t.to(out_device)
            del sim, per_token  # free the block before the next product is allocated
    return FilipScores(s_i, s_t)
