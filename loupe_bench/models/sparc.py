"""SPARC: sparse fine-grained contrastive alignment (Bica et al., ICML 2024, arXiv 2401.09865; no official code).

A dual encoder trained with CLIP's global InfoNCE plus a fine-grained loss that, for every caption token, groups the
image's patches by a sparse similarity and contrasts the grouped embedding with the token **within its own caption**
(no batch negatives at this level). Equations, defaults and their provenance: ``docs/peers.md`` (SPARC) and the
docstrings of :func:`sparc_alignment_weights`, :func:`sparc_grouped_embeddings`, :func:`sparc_fine_loss` and
:func:`sparc_region_scores`.

Conventions (as FILIP): patch tokens ``v_j`` and text tokens ``t_l`` are the model's projected, L2-normalised token
features (:class:`~loupe_bench.models.base.ImageFeatures` / :class:`~loupe_bench.models.base.TextFeatures`); a
caption's tokens are those of its token mask (padding never; ``[CLS]``/``[SEP]`` only with ``text_special_tokens``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..specs import from_mapping
from ._registry import MODEL_CLASSES
from .base import ImageFeatures, LossOutput, TextFeatures, boxes_to_patch_mask
from .dual_encoder import DualEncoder, spec_get
from .losses import clip_infonce, default_chunk_elements
from .spec_fields import TEMPERATURE_RANGE, range_check, type_check
from .tokenizer import Tokenizer

#: ``loss.weights`` defaults: ``clip`` = λ_g (the paper's 0.5), ``fine`` = λ_f (0.5: see docs/peers.md)
DEFAULT_WEIGHTS = {"clip": 0.5, "fine": 0.5}


def _threshold_check(value: Any) -> Optional[str]:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1):
        return None
    return f"must be null (1/P) or a number in (0, 1], got {value!r}"


@dataclass
class SparcCfg:
    """The ``sparc`` block of a SPARC spec.

    Attributes:
        temperature_init: initial temperature of the fine-grained loss's own learnable scale ``sparc_logit_scale``.
        shared_temperature: use the global ``logit_scale`` for the fine-grained loss too (the paper's Listing 1: one
            learned temperature) instead of its own.
        threshold: sparsity threshold σ on the min-max normalised similarities; ``null`` = ``1/P`` (the paper's
            choice, ``P`` = the number of patches the weights run over).
    """

    temperature_init: float = field(default=0.07, metadata={"check": range_check(*TEMPERATURE_RANGE, low_open=True)})
    shared_temperature: bool = field(default=False, metadata={"check": type_check(bool)})
    threshold: Optional[float] = field(default=None, metadata={"check": _threshold_check})


# -- the grouping ------------------------------------------------------------------------------------------------------
def sparc_alignment_weights(sim: Tensor, patch_mask: Optional[Tensor] = None,
                            threshold: Optional[float] = None) -> Tensor:
    """SPARC's alignment weights over the last dimension (patches), eqs. (2)–(4) of the paper.

    For a token ``l`` with similarities ``s_lj`` to the patches ``j`` of a set ``J`` (all ``P`` patches, or those of
    ``patch_mask``):

        ``ŝ_lj = (s_lj − min_{k∈J} s_lk) / (max_{k∈J} s_lk − min_{k∈J} s_lk)``   (min-max over the patches)

        ``s̃_lj = ŝ_lj if ŝ_lj ≥ σ else 0``,   ``σ = 1/|J|`` (or ``threshold``)   (sparsify)

        ``a_lj = s̃_lj / Σ_{k∈J} s̃_lk``   (renormalise; ``a_lj = 0`` off ``J``)

    A row whose patches are all equally similar (max = min: the paper's formula is 0/0) gets uniform weights
    ``1/|J|``, the limit the threshold ``1/P`` is motivated by; every other row keeps its maximum (``ŝ = 1 ≥ σ``),
    so no row sums to zero.

    Args:
        sim: ``[..., P]`` similarities.
        patch_mask: optional bool, broadcastable to ``sim``: the patches ``J`` of each row (each row needs one).
        threshold: σ; None = ``1/|J|``.
    """
    if patch_mask is None:
        lo, hi = sim.amin(dim=-1, keepdim=True), sim.amax(dim=-1, keepdim=True)
        count = torch.full_like(lo, sim.shape[-1])
    else:
        sim, mask = torch.broadcast_tensors(sim, patch_mask)
        lo = sim.masked_fill(~mask, float("inf")).amin(dim=-1, keepdim=True)
        hi = sim.masked_fill(~mask, float("-inf")).amax(dim=-1, keepdim=True)
        count = mask.sum(dim=-1, keepdim=True).to(sim.dtype)
    spread = hi - lo
    flat = spread <= 0
    scaled = (sim - lo) / torch.where(flat, torch.ones_like(spread), spread)
    scaled = torch.where(flat, torch.ones_like(scaled), scaled)
    sigma = (1.0 / count) if threshold is None else torch.full_like(count, float(threshold))
    kept = torch.where(scaled >= sigma, scaled, torch.zeros_like(scaled))
    if patch_mask is not None:
        kept = kept.masked_fill(~mask, 0.0)
    return kept / kept.sum(dim=-1, keepdim=True)


def sparc_grouped_embeddings(image_tokens: Tensor, text_tokens: Tensor,
                             threshold: Optional[float] = None) -> Tensor:
    """Language-grouped vision embeddings, eq. (5): ``c_l = normalize(Σ_j a_lj v_j)`` per token of each pair.

    ``s_lj = ⟨t_l, v_j⟩`` (the projected, L2-normalised tokens: a cosine), ``a_lj`` from
    :func:`sparc_alignment_weights` over the image's ``P`` patches. ``c_l`` is L2-normalised, as the paper's Listing 1
    does before the fine-grained loss.

    Args:
        image_tokens: ``[B, P, D]`` patch embeddings ``v``.
        text_tokens: ``[B, L, D]`` token embeddings ``t`` of the paired captions (row ``b`` with image ``b``).
        threshold: σ (None = ``1/P``).

    Returns:
        ``[B, L, D]`` (rows of padded tokens are computed too and left to the caller's mask).
    """
    sim = text_tokens @ image_tokens.transpose(1, 2)  # [B, L, P]
    weights = sparc_alignment_weights(sim, threshold=threshold)
    return F.normalize(weights @ image_tokens, dim=-1)


def sparc_fine_loss(image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor, logit_scale: Tensor,
                    threshold: Optional[float] = None) -> Tensor:
    """SPARC's fine-grained sequence-wise loss, eq. (6): per caption, its tokens against their grouped embeddings.

    For caption ``i`` with real tokens ``t_1..t_{L_i}`` (its mask), grouped embeddings ``c_1..c_{L_i}``
    (:func:`sparc_grouped_embeddings` with its own image) and scale ``s = 1/τ``:

        ``ℓ_i = −1/(2 L_i) Σ_j [ log( exp(s⟨c_j,t_j⟩) / Σ_k exp(s⟨c_j,t_k⟩) )
                              + log( exp(s⟨t_j,c_j⟩) / Σ_k exp(s⟨t_j,c_k⟩) ) ]``

        ``L_fine = (1/B') Σ_i ℓ_i``

    with ``k`` over the caption's own real tokens only (padding is ``−∞`` in every softmax and left out of every
    mean; no other caption of the batch takes part) and ``B'`` the captions with at least one real token. This is the
    paper's eq. (6) (a mean per caption, then over captions); its Listing 1 instead averages over all real tokens of
    the batch at once, which weighs long captions more.

    Args:
        image_tokens: ``[B, P, D]`` L2-normalised patch embeddings.
        text_tokens: ``[B, L, D]`` L2-normalised token embeddings.
        text_mask: ``[B, L]`` bool, True at the caption's real tokens.
        logit_scale: scalar ``s`` (exponentiated and clamped).
        threshold: σ (None = ``1/P``).
    """
    mask = text_mask.bool()
    grouped = sparc_grouped_embeddings(image_tokens, text_tokens, threshold)
    logits = (logit_scale * grouped @ text_tokens.transpose(1, 2)).float()  # [B, j, k] = s⟨c_j, t_k⟩
    low = torch.finfo(logits.dtype).min
    keys = ~mask[:, None, :]
    c2t = logits.masked_fill(keys, low).log_softmax(dim=-1).diagonal(dim1=1, dim2=2)  # [B, L]
    t2c = logits.transpose(1, 2).masked_fill(keys, low).log_softmax(dim=-1).diagonal(dim1=1, dim2=2)
    per_token = -0.5 * (c2t.masked_fill(~mask, 0.0) + t2c.masked_fill(~mask, 0.0))
    counts = mask.sum(dim=1)
    per_caption = per_token.sum(dim=1) / counts.clamp(min=1)
    return per_caption.sum() / (counts > 0).sum().clamp(min=1)


def sparc_region_scores(patch_tokens: Tensor, member: Tensor, text_tokens: Tensor, text_mask: Tensor,
                        threshold: Optional[float] = None, max_elements: Optional[int] = None) -> Tensor:
    """SPARC's region score: each box read as the whole image, ``[K, N_texts]`` for one image.

    The box's patches ``J_b`` (``member``) take the place of the image's ``P`` patches in the training-time
    grouping: weights ``a^b_lj`` by :func:`sparc_alignment_weights` over ``J_b`` (min-max over the box's patches,
    σ = ``1/|J_b|``), ``c^b_l = normalize(Σ_{j∈J_b} a^b_lj v_j)``, and the box's score for a text is the mean over
    the text's real tokens of the positive logit of eq. (6), without its temperature:

        ``score(b, t) = (1/L_t) Σ_l ⟨c^b_l, t_l⟩``

    Boxes are processed in chunks of at most ``max_elements`` weight values (default
    :func:`~loupe_bench.models.losses.default_chunk_elements`).

    Args:
        patch_tokens: ``[P, D]`` L2-normalised patch embeddings of the image.
        member: ``[K, P]`` bool, the patches of each box (each row needs one).
        text_tokens: ``[N, L, D]`` L2-normalised token embeddings.
        text_mask: ``[N, L]`` bool.
        threshold: σ (None = ``1/|J_b|``).
    """
    k, p = member.shape
    n, length, d = text_tokens.shape
    flat = text_tokens.reshape(n * length, d)
    sim = (flat @ patch_tokens.T)[None]  # [1, N·L, P]
    mask = text_mask.bool()
    counts = mask.sum(dim=1).clamp(min=1).to(patch_tokens.dtype)
    bound = max_elements or default_chunk_elements(patch_tokens.device)
    step = max(1, bound // max(1, n * length * max(p, d)))
    out = []
    for k0 in range(0, k, step):
        box = member[k0:k0 + step, None, :]  # [k', 1, P]
        weights = sparc_alignment_weights(sim, box, threshold)  # [k', N·L, P]
        grouped = F.normalize(weights @ patch_tokens, dim=-1)  # [k', N·L, D]
        cos = (grouped * flat[None]).sum(dim=-1).view(-1, n, length)
        out.append(cos.masked_fill(~mask[None], 0.0).sum(dim=2) / counts[None])
    return torch.cat(out, 0) if out else patch_tokens.new_zeros(0, n)


@MODEL_CLASSES.register("sparc", help="SPARC dual encoder, global InfoNCE + sparse token-grouped fine-grained loss")
class SPARC(DualEncoder):
    """Dual encoder with SPARC's objective; retrieval and classification score with the global cosine (as CLIP).

        ``L_SPARC = λ_g · L_CLIP + λ_f · L_fine``

    ``L_CLIP``: :func:`~loupe_bench.models.losses.clip_infonce` on the pooled embeddings with the global
    ``logit_scale``; ``L_fine``: :func:`sparc_fine_loss` on the token features with ``sparc_logit_scale`` (its own
    learnable temperature; the global one with ``sparc.shared_temperature``).

    Loss terms: ``clip`` and ``fine``. Spec keys: ``loss.weights.{clip,fine}`` (λ_g, λ_f; defaults
    :data:`DEFAULT_WEIGHTS`), ``sparc.temperature_init`` (0.07), ``sparc.shared_temperature`` (false),
    ``sparc.threshold`` (null = ``1/P``). Native region scorer: :meth:`score_regions`.
    """

    SPEC_KEYS = DualEncoder.SPEC_KEYS + ("sparc",)
    #: bound on the weight values held at once while scoring regions (None: 8M on CPU, 128M on a GPU)
    max_chunk_elements: Optional[int] = None

    def __init__(self, spec: Dict[str, Any], tokenizer: Tokenizer, load_pretrained: bool = True,
                 model_dir: Optional[Path] = None):
        super().__init__(spec, tokenizer, load_pretrained=load_pretrained, model_dir=model_dir)
        self.cfg = from_mapping(SparcCfg, self.spec.get("sparc"), "model spec", "sparc")
        if not self.cfg.shared_temperature:
            self.sparc_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.cfg.temperature_init)))

    @classmethod
    def check_family_spec(cls, spec: Dict[str, Any]) -> None:
        """``sparc:`` holds ``temperature_init`` (a positive number), ``shared_temperature`` (a bool) and
        ``threshold`` (null or a number in (0, 1]); ``loss.weights`` names only ``clip`` and ``fine``."""
        from_mapping(SparcCfg, spec.get("sparc"), "model spec", "sparc")
        weights = spec_get(spec, "loss.weights", {}) or {}
        unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS)) if isinstance(weights, dict) else []
        if unknown:
            raise SpecError(f"field 'loss.weights': unknown loss terms {unknown}; known: {sorted(DEFAULT_WEIGHTS)}")

    def fine_scale(self) -> Tensor:
        """The scale ``s = 1/τ`` of the fine-grained loss (its own, or the global one when shared)."""
        return self.scale() if self.cfg.shared_temperature else self.scale(self.sparc_logit_scale)

    # -- training -------------------------------------------------------------------------------------------------
    def loss_from_embeddings(self, emb: Dict[str, Tensor], batch: Dict[str, Any]) -> LossOutput:
        weights = self.loss_weights(DEFAULT_WEIGHTS)
        scale, fine_scale = self.scale(), self.fine_scale()
        terms = {
            "clip": clip_infonce(emb["image_pooled"], emb["text_pooled"], scale, with_grad=self.gather_with_grad,
                                 local_loss=self.local_loss),
            "fine": sparc_fine_loss(emb["image_tokens"], emb["text_tokens"], emb["text_mask"], fine_scale,
                                    self.cfg.threshold),
        }
        logs = {"logit_scale": float(scale.detach()), "sparc_logit_scale": float(fine_scale.detach())}
        total = weights["clip"] * terms["clip"] + weights["fine"] * terms["fine"]
        return LossOutput(total, terms, logs)

    # -- scoring --------------------------------------------------------------------------------------------------
    def score_regions(self, image_features: ImageFeatures, boxes: Sequence[Tensor],
                      text_features: TextFeatures) -> List[Tensor]:
        """SPARC's own box scores (``region_scoring: native``): one ``[K_b, N_texts]`` per image.

        Each box is read as the whole image (:func:`sparc_region_scores`): the text's tokens are grouped over the
        patches whose centres the box contains (:func:`~loupe_bench.models.base.boxes_to_patch_mask`) with the
        training-time weights, and the grouped embeddings are compared with the tokens, averaged over the text's
        real tokens.
        """
        out = []
        for b, bx in enumerate(boxes):
            tokens = image_features.tokens[b]
            member = boxes_to_patch_mask(bx.to(tokens.dtype), image_features.grid).bool()
            out.append(sparc_region_scores(tokens, member, text_features.tokens.to(tokens.dtype),
                                           text_features.mask, self.cfg.threshold, self.max_chunk_elements))
        return out
