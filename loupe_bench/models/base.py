"""The one interface every model implements (CLIP, FILIP, LOUPE, pretrained checkpoints).

Training and every task adapter use only what is defined here. Typed outputs are NamedTuples.

Conventions (all models):

* pixels: float tensor ``[B, 3, H, W]``, already normalised with the model's ``image_mean``/``image_std``.
* boxes: normalised ``(x0, y0, x1, y1)`` in ``[0, 1]`` relative to the image (the task adapters convert from and to
  pixel ``xywh``).
* every embedding is L2-normalised along its last dimension.
* text token masks are bool, True at tokens that take part in token-level scoring.
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


class ImageFeatures(NamedTuple):
    """Output of :meth:`VLModel.encode_image`.

    Attributes:
        pooled: ``[B, D]`` global embedding (projected ``[CLS]`` / pooled), L2-normalised.
        tokens: ``[B, N, D]`` projected patch-token embeddings (image ``[CLS]`` dropped), L2-normalised.
        grid: ``(H, W)`` of the patch grid, ``H * W == N``; token ``n`` sits at row ``n // W``, column ``n % W``.
    """

    pooled: Tensor
    tokens: Tensor
    grid: Tuple[int, int]


class TextFeatures(NamedTuple):
    """Output of :meth:`VLModel.encode_text`.

    Attributes:
        pooled: ``[B, D]`` global embedding, L2-normalised.
        tokens: ``[B, L, D]`` projected token embeddings, L2-normalised.
        mask: ``[B, L]`` bool, True at the tokens used by token-level scoring (never padding).
    """

    pooled: Tensor
    tokens: Tensor
    mask: Tensor


class TokenBatch(NamedTuple):
    """Output of a model's tokenizer.

    Attributes:
        input_ids: ``[B, L]`` long.
        attention_mask: ``[B, L]`` long (1 = real token, 0 = padding).
        offsets: ``[B, L, 2]`` long character offsets ``(start, end)`` of each token in its text, ``(0, 0)`` for
            special and padding tokens. Used to map phrase character spans to tokens.
    """

    input_ids: Tensor
    attention_mask: Tensor
    offsets: Tensor


class LossOutput(NamedTuple):
    """Output of :meth:`VLModel.loss`.

    Attributes:
        total: scalar tensor, the weighted sum that is back-propagated.
        terms: every named (unweighted) loss term, e.g. ``{"cmc": ..., "tsa": ..., "fsa": ..., "nsi": ...}``.
        logs: extra scalars to log (floats), e.g. ``{"routed_fraction": 0.4, "nsi_spearman": 0.8}``.
    """

    total: Tensor
    terms: Dict[str, Tensor]
    logs: Dict[str, float]


class Regions(NamedTuple):
    """Candidate regions of one image (native proposals of a model with a region head).

    Attributes:
        boxes: ``[K, 4]`` normalised xyxy.
        scores: ``[K]`` confidences in ``[0, 1]``.
    """

    boxes: Tensor
    scores: Tensor


def boxes_to_patch_mask(boxes: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Which patches belong to each box: ``[K, 4]`` normalised xyxy -> ``[K, H*W]`` bool.

    A patch belongs to a box when the patch centre lies inside it (closed interval). A box that contains no patch
    centre gets the single patch nearest to its centre, so every region has at least one member.
    """
    h, w = grid
    ys = (torch.arange(h, dtype=boxes.dtype, device=boxes.device) + 0.5) / h
    xs = (torch.arange(w, dtype=boxes.dtype, device=boxes.device) + 0.5) / w
    cy = ys[:, None].expand(h, w).reshape(-1)
    cx = xs[None, :].expand(h, w).reshape(-1)
    x0, y0, x1, y1 = (boxes[:, i : i + 1] for i in range(4))
    inside = (cx[None] >= x0) & (cx[None] <= x1) & (cy[None] >= y0) & (cy[None] <= y1)
    empty = ~inside.any(dim=1)
    if empty.any():
        bx = ((boxes[:, 0] + boxes[:, 2]) / 2).clamp(0, 1 - 1e-6)
        by = ((boxes[:, 1] + boxes[:, 3]) / 2).clamp(0, 1 - 1e-6)
        idx = (by * h).long() * w + (bx * w).long()
        inside[empty, idx[empty]] = True
    return inside


class VLModel(nn.Module):
    """Base class of every model. Subclasses implement the encoders and :meth:`loss`.

    Attributes set by subclasses / the factory:
        spec: the model spec (a plain dict, saved as ``config.json``).
        tokenizer: callable ``tokenizer(texts: list[str]) -> TokenBatch`` (padded to the model's max length).
        image_size: input resolution in pixels.
        image_mean, image_std: normalisation constants (3-tuples).
        has_native_regions: True when :meth:`propose_regions` works (LOUPE's region head).
    """

    spec: Dict[str, Any]
    tokenizer: Any
    image_size: int = 64
    image_mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    has_native_regions: bool = False

    @property
    def preprocess(self):
        """The eval image transform: PIL image -> normalised ``[3, image_size, image_size]`` tensor (resize the short
        side with bicubic interpolation, centre crop, normalise with :attr:`image_mean` / :attr:`image_std`; the
        CLIP eval transform, as open_clip's ``preprocess``; task protocols build theirs from the task spec)."""
        from ..data.transforms import build_transform

        return build_transform(self.image_size, self.image_mean, self.image_std, train=False)

    # -- encoders -------------------------------------------------------------------------------------------------
    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        raise NotImplementedError(f"{type(self).__name__} must implement encode_image")

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        raise NotImplementedError(f"{type(self).__name__} must implement encode_text")

    # -- scoring --------------------------------------------------------------------------------------------------
    def similarity(
        self,
        image_features: ImageFeatures,
        text_features: TextFeatures,
        direction: str = "mean",
        chunk_size: int = 1024,
    ) -> Tensor:
        """``[N_images, N_texts]`` score matrix, computed in chunks with bounded memory.

        Global models: cosine ``s_ij = <v_i, t_j>``. Token-level models override this. ``direction`` is
        ``"i2t"`` (scores used to rank texts for an image query), ``"t2i"`` (rank images for a text query) or
        ``"mean"``; global models ignore it.
        """
        out = torch.empty(image_features.pooled.shape[0], text_features.pooled.shape[0])
        for s in range(0, image_features.pooled.shape[0], chunk_size):
            out[s : s + chunk_size] = (image_features.pooled[s : s + chunk_size] @ text_features.pooled.T).float().cpu()
        return out

    def similarity_pair(self, image_features: ImageFeatures, text_features: TextFeatures,
                        chunk_size: int = 1024) -> Tuple[Tensor, Tensor]:
        """Both retrieval score matrices at once: ``(similarity(direction="i2t"), similarity(direction="t2i"))``.

        A model whose :meth:`similarity` is this class's (global cosine, direction ignored) returns the same matrix
        twice (one product, and the retrieval metric scans a shared matrix for NaN once); token-level models compute
        both directions in one pass (FILIP).
        """
        i2t = self.similarity(image_features, text_features, direction="i2t", chunk_size=chunk_size)
        if type(self).similarity is VLModel.similarity:
            return i2t, i2t
        return i2t, self.similarity(image_features, text_features, direction="t2i", chunk_size=chunk_size)

    def fine_grained_scores(self, image_features: ImageFeatures, text_features: TextFeatures,
                            chunk_size: int = 1024) -> Tensor:
        """``[N_images, N_texts]`` scores by the model's own fine-grained image–text scorer (the ``native`` pair
        scorer of the matching tasks: caption selection, two-by-two matching).

        Default: :meth:`similarity` with ``direction="mean"`` — the pooled cosine for global models, the token-wise
        late interaction for FILIP-style models. Models with a finer scorer of their own (LOUPE's region–phrase
        alignment) override this.
        """
        return self.similarity(image_features, text_features, direction="mean", chunk_size=chunk_size)

    def region_features(self, image_features: ImageFeatures, boxes: Sequence[Tensor]) -> List[Tensor]:
        """Embedding of each box: L2-normalised mean of the projected patch tokens inside it (``[K_b, D]`` per image)."""
        out = []
        for b, bx in enumerate(boxes):
            member = boxes_to_patch_mask(bx.to(image_features.tokens.dtype), image_features.grid).to(
                image_features.tokens.dtype
            )
            feats = member @ image_features.tokens[b] / member.sum(dim=1, keepdim=True).clamp(min=1)
            out.append(nn.functional.normalize(feats, dim=-1))
        return out

    def score_regions(
        self, image_features: ImageFeatures, boxes: Sequence[Tensor], text_features: TextFeatures
    ) -> List[Tensor]:
        """Scores of given boxes against texts: one ``[K_b, N_texts]`` tensor per image.

        Default: cosine between :meth:`region_features` and the texts' pooled embeddings.
        """
        return [r @ text_features.pooled.T for r in self.region_features(image_features, boxes)]

    def patch_similarity(self, image_features: ImageFeatures, text_features: TextFeatures) -> Tensor:
        """Dense patch–text similarity map ``[N_images, N_texts, H, W]`` (cosine of each patch with each text)."""
        h, w = image_features.grid
        sim = torch.einsum("bnd,td->btn", image_features.tokens, text_features.pooled)
        return sim.reshape(sim.shape[0], sim.shape[1], h, w)

    def propose_regions(self, image_features: ImageFeatures, top_k: int = 10) -> List[Regions]:
        """Native region proposals (only models with a region head)."""
        raise NotImplementedError(f"{type(self).__name__} has no native region head")

    # -- training -------------------------------------------------------------------------------------------------
    def embed(self, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        """Forward the towers on a training batch; every returned tensor has the batch on dim 0.

        Split from :meth:`loss_from_embeddings` so the training engine can (a) all-gather embeddings across ranks
        and (b) do gradient accumulation with feature caching (open_clip's ``--accum-freq``): embeddings of all
        micro-batches are concatenated, only one micro-batch carries gradients at a time.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement embed")

    def loss_from_embeddings(self, emb: Dict[str, Tensor], batch: Dict[str, Any]) -> LossOutput:
        """Named loss terms and their weighted total from (possibly concatenated / gathered) embeddings."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss_from_embeddings")

    def loss(self, batch: Dict[str, Any]) -> LossOutput:
        """Named loss terms and their weighted total for a training batch.

        ``batch`` keys (built by ``loupe_bench.data.training.TrainCollator``):
            pixels ``[B,3,H,W]``; input_ids, attention_mask ``[B,L]``; phrase_token_mask ``[B,P,L]`` bool;
            phrase_mask ``[B,P]`` bool; image_ids ``[B]`` long.
        """
        return self.loss_from_embeddings(self.embed(batch), batch)

    def forward(self, batch: Dict[str, Any]) -> LossOutput:
        """``model(batch)`` is :meth:`loss` (so DDP wrappers see a forward call)."""
        return self.loss(batch)
