"""LOUPE (Li et al., NeurIPS 2022, arXiv 2208.02515): a dual encoder with game-theoretic proxy objectives.

``ℒ = ℒ_CMC + λ_TSA ℒ_TSA + λ_FSA ℒ_FSA + λ_NSI ℒ_NSI`` (names ``[V: framework figure]``, form ``[I]``):

* ℒ_CMC — global symmetric InfoNCE on the pooled (``[CLS]``) embeddings (:func:`clip_infonce`).
* ℒ_TSA — token-level Shapley interaction → semantic region generation: each candidate box's patches are one
  coalition of the token game ``v(S)`` = the model's matching score of the **masked image** (only the patches in
  ``S``, re-encoded by the image tower; :class:`~loupe_bench.models.masked_game.MaskedTowerGame`); the box's score
  (``loupe.tsa.score``: coalition value φ([A]) or interaction I([A])) trains the region head's confidences and,
  through jittered copies, its box geometry (:meth:`LOUPE._tsa`).
* ℒ_FSA — semantics-level Shapley interaction → region–phrase alignment: soft labels from the pairwise interactions
  ``I_ij`` of a game among regions and phrases — by default the pooled matching game in the ℒ_CMC space
  (:class:`~loupe_bench.shapley.PooledRegionPhraseGame`, ``fsa.value: pooled``; the late-interaction game on the
  prediction, :class:`~loupe_bench.shapley.LateInteractionGame`, is ``fsa.value: late``), z-scored per phrase over
  its image's regions; the prediction's softmax runs over the regions of every FSA image (cross-image negatives);
  switched on at ``fsa.start_step`` and ramped in over ``fsa.ramp_steps``.
* ℒ_NSI — Gaussian NLL of the uncertainty-aware neural interaction predictor (``shapley: neural``).

Shapley targets are constants (computed on detached features). At inference the proxy heads are removed for
retrieval and classification (global cosine, as the paper says ``[V: Figure-1 caption]``); detection and grounding
use the region head (:meth:`LOUPE.propose_regions`) and region features (:meth:`LOUPE.score_regions`).
Every choice is documented in ``docs/loupe.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError, SpecError
from ..shapley import (ESTIMATORS, EstimatorConfig, LateInteractionGame, NeuralConfig, PooledCosineGame,
                       PooledRegionPhraseGame)
from ..shapley.permutation import sample_player_values
from ..specs import from_mapping
from ._registry import MODEL_CLASSES
from .base import ImageFeatures, LossOutput, Regions, TextFeatures
from .dual_encoder import DualEncoder
from .losses import clip_infonce
from .loupe_heads import (
    TSA_STATS,
    RegionHead,
    fsa_features,
    fsa_loss,
    fsa_targets,
    jitter_boxes,
    member_masks,
    nms_topk,
    normalise_interactions,
    pool_phrases,
    pool_regions,
    tsa_features,
    tsa_loss,
    text_hard_negatives,
    phrase_sequences,
)
from .region_geometry import excess_map, map_targets
from .tokenizer import Tokenizer

class TsaProblem(NamedTuple):
    """Token-level interaction problem (see :meth:`LOUPE.tsa_problem`); ``C'`` = boxes × (1 + jitter)."""

    game: Any  # the token game (MaskedTowerGame or PooledCosineGame)
    coalitions: Tensor  # [T, C', N] bool
    valid: Tensor  # [T, C'] bool
    feats: Tensor  # [T, C', F] detached features for g_θ
    sel_boxes: Tensor  # [T, C, 4] predicted boxes (with gradient)
    sel_logits: Tensor  # [T, C] confidence logits (with gradient)
    cand: Tensor  # [T, C', 4] detached candidate boxes
    stats: Tensor  # [T, C', 3] [v(A), v(N), v(N∖A)] under the game


class FsaProblem(NamedTuple):
    """Semantics-level interaction problem (see :meth:`LOUPE.fsa_problem`)."""

    game: Any  # PooledRegionPhraseGame (fsa.value: pooled) or LateInteractionGame (late)
    coalitions: Tensor  # [T, K*P, K+P] bool
    valid: Tensor  # [T, K*P] bool
    feats: Tensor  # [T, K*P, F]
    sim: Tensor  # [T, K, P] own-image region–phrase cosine of the prediction (with gradient)
    phrase_valid: Tensor  # [T, P] bool
    boxes: Tensor  # [T, K, 4]
    region: Tensor  # [T, K, D] region embeddings of the prediction (with gradient)
    phrase: Tensor  # [T, P, D] phrase embeddings of the prediction (with gradient)
    feat_region: Tensor  # [T, K, D] detached region embeddings g_θ's features are built from
    feat_phrase: Tensor  # [T, P, D] detached phrase embeddings g_θ's features are built from


def fsa_schedule(step: int, start: int, ramp: int) -> float:
    """Weight factor of ℒ_FSA at training step ``t`` (0-based count of earlier training-mode loss calls):

    ``f(t) = 0`` for ``t < s``; ``f(t) = min(1, (t − s + 1) / r)`` for ``t ≥ s`` (``r = 0``: ``f = 1``), with
    ``s = fsa.start_step``, ``r = fsa.ramp_steps``. ℒ = … + f(t) · λ_FSA · ℒ_FSA; at ``f = 0`` nothing is computed.
    """
    if step < start:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / ramp)


def pair_coalitions(g: int, k: int, p: int, device=None) -> Tuple[Tensor, Tensor]:
    """Coalitions ``{i, K + j}`` of every region–phrase pair (pair ``i·P + j``): ``([G, K·P, K+P] bool, j [K·P])``."""
    ii = torch.arange(k, device=device).repeat_interleave(p)
    jj = torch.arange(p, device=device).repeat(k)
    coal = torch.zeros(g, k * p, k + p, dtype=torch.bool, device=device)
    coal[:, torch.arange(k * p, device=device), ii] = True
    coal[:, torch.arange(k * p, device=device), k + jj] = True
    return coal, jj


#: how ℒ_TSA's confidence targets are read (``loupe.tsa.confidence``; :meth:`LOUPE._confidence_targets`)
TSA_CONFIDENCES = ("centred", "excess", "map")
#: how the region head's box targets are found (``loupe.region.geometry``)
REGION_GEOMETRIES = ("jitter", "patch_map")
TSA_VALUES = ("tower", "cached", "probability", "phrase_probability")
TSA_SCORES = ("coalition_value", "interaction")
#: what of the training game enters ``g_θ``'s features (:meth:`LOUPE.game_stats`)
TSA_FEATURES = ("tower", "coalition", "image")

LOSS_TERMS = {"cmc": 1.0, "tsa": 1.0, "fsa": 1.0, "nsi": 1.0, "tsa_box": 1.0}


@dataclass
class RegionCfg:
    """Region head (``loupe.region``).

    Attributes:
        hidden: MLP width.
        init_size: initial box side in patches.
        top_k: regions proposed at inference.
        nms_iou: NMS IoU threshold.
        train_boxes: top (NMS) boxes per image whose interaction trains the confidences (ℒ_TSA).
        random_boxes: extra random anchors per image in ℒ_TSA (exploration of low-confidence anchors).
        box_jitter: jittered variants per box for the geometry self-training (0 = off).
        jitter_scale: relative shift/scale of the jitter.
        box_start: training step (``train_step``) at which the geometry self-training starts (the token game only
            says where objects are once ℒ_CMC has learned to match images and captions; before that its scores
            are noise, and any size bias in them would shrink or grow every box). ``[I]``
        move_margin: a box moves to its best jittered copy only when the copy's excess beats its own by more than
            ``move_margin`` × the running RMS of the excess (``tsa_scale``; 0: any gain moves it). Estimates of
            ``e`` are noisy (M = 8 contexts, or ``g_θ``'s means): without a margin the argmax over ``1 + J`` noisy
            values moves the box ``J/(1+J)`` of the time whatever the truth, a random walk. ``[I]``
    """

    hidden: int = 128
    init_size: float = 2.0
    top_k: int = 10
    nms_iou: float = 0.6
    train_boxes: int = 6
    random_boxes: int = 2
    box_jitter: int = 0
    jitter_scale: float = 0.3
    box_start: int = 0
    move_margin: float = 0.0
    geometry: str = "jitter"
    map_pairs: int = 1
    map_iou: float = 0.3
    map_boxes: str = "all"
    map_threshold: float = 1.0


@dataclass
class TsaCfg:
    """ℒ_TSA (``loupe.tsa``).

    Attributes:
        target_images: images of the batch that get targets (first rows).
        temperature: ``T_I`` of the soft labels ``σ(z / (T_I · rms z))``.
        value: the token-level game: ``tower`` (the masked image re-encoded by the image tower,
            :class:`~loupe_bench.models.masked_game.MaskedTowerGame`, cosine with the caption), ``probability`` (the
            same masked image, ``v(S) = p(caption | x_S) − 1/K``: the matching probability of the paired caption
            among the batch's captions and its text-only hard negatives, ``K`` texts) or ``cached`` (pooled cosine of the cached
            final tokens, :class:`~loupe_bench.shapley.PooledCosineGame`; kept for comparison). ``[I]``
        score: what scores a candidate box: ``coalition_value`` (φ([A]), the merged patches' Shapley value; ``[I]``,
            not the paper's quantity) or ``interaction`` (I([A]) = φ([A]) − Σ_{i∈A} φ(i), the paper's).
        last_blocks: image-tower blocks re-run on the kept tokens (``null``: the whole tower; large towers: the last
            few over cached states of the earlier ones).
        drop: ``tokens`` (hidden patches dropped; ViT towers) or ``pixels`` (hidden patches zeroed; any tower).
        num_samples: Monte-Carlo contexts ``M`` of the token level (``null``: ``loupe.num_samples``); each costs two
            tower passes per coalition for the coalition value, ``|A| + 2`` for the interaction.
        bucket: masked images whose kept counts round up to the same multiple of ``bucket`` share one tower call
            (padding key-masked; same values up to round-off; ``1``: one call per kept count).
        pack: pack the masked images of one game call into rows of ``P + N`` tokens with block-diagonal attention
            (one tower call per game call; same values up to round-off; ``bucket`` unused). ``[I]``
        every: the token game runs on every ``every``-th training step only (ℒ_TSA, its box term and its
            ℒ_NSI share are absent on the others; ``1``: every step). ``[I]``: the paper is silent on the cost; the
            boxes and confidences move slowly, so their targets need not be refreshed on every step.
        features: the training game's values among ``g_θ``'s features (:meth:`LOUPE.game_stats`): ``tower``
            (``u(A)``, ``u(N)``, ``u(N∖A)``, three game evaluations per coalition), ``coalition`` (``u(A)`` and
            ``u(N)``: the complements ``N∖A``, nearly full images, were ~95 % of the feature passes) or ``image``
            (``u(N)`` only, one evaluation per image: every other feature comes from the cached tokens). ``[I]``
        confidence: how the confidence targets are read from the boxes' excess: ``centred`` (per image) or
            ``excess`` (against the fair share, with a running scale: targets rank across images); see
            :meth:`LOUPE._confidence_targets`; ``map``: every anchor of the target images from the additive
            per-patch excess of its box (:meth:`LOUPE._map_confidence`).
        hard_negatives: text-only hard negatives per target caption in the bank of ``value: probability``
            (:func:`~loupe_bench.models.loupe_heads.text_hard_negatives`; 0: the batch's captions only).
    """

    target_images: int = 4
    temperature: float = 1.0
    value: str = "tower"
    score: str = "coalition_value"
    last_blocks: Optional[int] = None
    drop: str = "tokens"
    num_samples: Optional[int] = None
    bucket: int = 1
    pack: bool = False
    every: int = 1
    features: str = "tower"
    hard_negatives: int = 4
    confidence: str = "centred"


FSA_VALUES = ("pooled", "late")
FSA_REGION_SOURCES = ("proposals", "oracle")
FSA_REGION_PROJECTIONS = ("none", "linear")


@dataclass
class FsaCfg:
    """ℒ_FSA (``loupe.fsa``); docs/loupe.md explains each choice.

    Attributes:
        target_images: ``T_img``, images of the batch (first rows) that get ℒ_FSA; each one's regions are the
            other images' cross-image negatives.
        num_regions: ``K`` regions per image (top boxes after NMS; ``oracle``: at least the phrase boxes).
        regions: region source: ``proposals`` (the region head's) or ``oracle`` (the ground-truth boxes of the
            caption's phrases, then proposals up to ``K``; needs ``phrase_boxes`` in the batch; NOT LOUPE — the
            ``loupe-oracle-regions`` upper bound).
        value: semantics-level game: ``pooled`` (:class:`~loupe_bench.shapley.PooledRegionPhraseGame` in the
            ℒ_CMC space) or ``late`` (:class:`~loupe_bench.shapley.LateInteractionGame` on the prediction).
        region_projection: ``none`` (regions scored in the shared ℒ_CMC token space) or ``linear`` (``W_r``, no
            bias, identity init).
        phrase_projection: a learnable phrase projection (``D → D``, identity init).
        sim_temperature: ``τ_f`` of ``A = s / τ_f``.
        target_temperature: ``T`` of ``q = softmax_i(z / T)`` (``z``: per-phrase z-scored interactions).
        start_step: training step at which ℒ_FSA switches on (:func:`fsa_schedule`).
        ramp_steps: steps of the linear ramp of its weight from ``1/r`` to 1.
    """

    target_images: int = 4
    num_regions: int = 6
    regions: str = "proposals"
    value: str = "pooled"
    region_projection: str = "none"
    phrase_projection: bool = False
    sim_temperature: float = 0.1
    target_temperature: float = 0.5
    start_step: int = 0
    ramp_steps: int = 0

    def check(self) -> None:
        if not isinstance(self.regions, str):
            raise SpecError(f"loupe.fsa.regions is the region source ({' | '.join(FSA_REGION_SOURCES)}), got "
                            f"{self.regions!r}; the number of regions per image is loupe.fsa.num_regions")
        for key, allowed in (("regions", FSA_REGION_SOURCES), ("value", FSA_VALUES),
                             ("region_projection", FSA_REGION_PROJECTIONS)):
            if getattr(self, key) not in allowed:
                raise SpecError(f"loupe.fsa.{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if int(self.num_regions) < 1 or int(self.start_step) < 0 or int(self.ramp_steps) < 0:
            raise SpecError("loupe.fsa: num_regions must be >= 1, start_step and ramp_steps >= 0")


@dataclass
class LoupeCfg:
    """The ``loupe`` block of a LOUPE spec.

    Attributes:
        shapley: estimator name in :data:`loupe_bench.shapley.ESTIMATORS` (``exact | sampling | neural``).
        num_samples: Monte-Carlo contexts ``M`` per coalition.
        neural: :class:`~loupe_bench.shapley.NeuralConfig` (γ, warm-up, buffer ...).
        region_text: text side of :meth:`LOUPE.score_regions`: ``phrase`` (mean of the text's token embeddings, as
            phrases are embedded in ℒ_FSA) or ``pooled`` (the global text embedding).
        explain_samples: ``M`` used by :meth:`LOUPE.explain`.
    """

    shapley: str = "neural"
    num_samples: int = 32
    neural: NeuralConfig = field(default_factory=NeuralConfig)
    region: RegionCfg = field(default_factory=RegionCfg)
    tsa: TsaCfg = field(default_factory=TsaCfg)
    fsa: FsaCfg = field(default_factory=FsaCfg)
    region_text: str = "phrase"
    explain_samples: int = 128

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "LoupeCfg":
        cfg = from_mapping(cls, data, "model spec", "loupe")
        if cfg.shapley not in ESTIMATORS:
            raise SpecError(f"loupe.shapley: unknown estimator {cfg.shapley!r}; known: {ESTIMATORS.names()}")
        if cfg.region_text not in ("phrase", "pooled"):
            raise SpecError("loupe.region_text must be 'phrase' or 'pooled'")
        if cfg.tsa.value not in TSA_VALUES:
            raise SpecError(f"loupe.tsa.value: unknown {cfg.tsa.value!r}; known: {list(TSA_VALUES)}")
        if cfg.tsa.score not in TSA_SCORES:
            raise SpecError(f"loupe.tsa.score: unknown {cfg.tsa.score!r}; known: {list(TSA_SCORES)}")
        if cfg.tsa.confidence not in TSA_CONFIDENCES:
            raise SpecError(f"loupe.tsa.confidence: unknown {cfg.tsa.confidence!r}; known: {list(TSA_CONFIDENCES)}")
        if cfg.tsa.features not in TSA_FEATURES:
            raise SpecError(f"loupe.tsa.features: unknown {cfg.tsa.features!r}; known: {list(TSA_FEATURES)}")
        if cfg.region.geometry not in REGION_GEOMETRIES or cfg.region.map_boxes not in ("all", "selected"):
            raise SpecError(f"loupe.region.geometry must be one of {list(REGION_GEOMETRIES)} and map_boxes 'all' or "
                            f"'selected', got {cfg.region.geometry!r}, {cfg.region.map_boxes!r}")
        if int(cfg.region.map_pairs) < 1 or not 0.0 <= float(cfg.region.map_iou) <= 1.0:
            raise SpecError("loupe.region.map_pairs must be >= 1 and map_iou in [0, 1]")
        for key in ("bucket", "every"):
            if not isinstance(getattr(cfg.tsa, key), int) or getattr(cfg.tsa, key) < 1:
                raise SpecError(f"loupe.tsa.{key} must be an integer >= 1, got {getattr(cfg.tsa, key)!r}")
        cfg.fsa.check()
        return cfg


@MODEL_CLASSES.register("loupe", help="LOUPE: dual encoder + Shapley-interaction proxy heads (TSA, FSA, NSI)")
class LOUPE(DualEncoder):
    SPEC_KEYS = DualEncoder.SPEC_KEYS + ("loupe",)
    """LOUPE on top of :class:`DualEncoder` (towers, projections, temperature).

    Extra modules: ``region_head`` (:class:`RegionHead`), optional ``region_proj`` (``W_r``, ``D → D`` without
    bias, identity init; ``fsa.region_projection: linear``), optional ``phrase_proj``, and two interaction
    estimators ``tsa_estimator`` / ``fsa_estimator`` (with the neural predictor ``g_θ`` when
    ``loupe.shapley: neural``). Buffer ``train_step``: training-mode loss calls so far (ℒ_FSA's schedule; saved in
    checkpoints, so a resumed run continues the schedule).
    """

    has_native_regions = True

    @classmethod
    def check_family_spec(cls, spec: Dict[str, Any]) -> None:
        """The ``loupe:`` block (:meth:`LoupeCfg.from_dict`), checked before anything is built."""
        LoupeCfg.from_dict(spec.get("loupe"))

    def __init__(self, spec: Dict[str, Any], tokenizer: Tokenizer, load_pretrained: bool = True,
                 model_dir: Optional[Path] = None):
        super().__init__(spec, tokenizer, load_pretrained=load_pretrained, model_dir=model_dir)
        self.cfg = LoupeCfg.from_dict(self.spec.get("loupe"))
        self.weights = self.loss_weights(LOSS_TERMS)
        d = self.embed_dim
        self.region_head = RegionHead(d, self.cfg.region.hidden, self.cfg.region.init_size)
        self.region_proj: Optional[nn.Linear] = None
        if self.cfg.fsa.region_projection == "linear":
            self.region_proj = nn.Linear(d, d, bias=False)
            with torch.no_grad():
                self.region_proj.weight.copy_(torch.eye(d))
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        # running RMS of ℒ_TSA's excess: saved (a buffer) where a spec's targets or geometry read it
        if self.cfg.tsa.confidence in ("excess", "map") or self.cfg.region.move_margin > 0:
            self.register_buffer("tsa_scale", torch.zeros(()))
        else:
            self.tsa_scale = torch.zeros(())
        self.phrase_proj: Optional[nn.Linear] = None
        if self.cfg.fsa.phrase_projection:
            self.phrase_proj = nn.Linear(d, d)
            with torch.no_grad():
                self.phrase_proj.weight.copy_(torch.eye(d))
                self.phrase_proj.bias.zero_()
        est_cfg = EstimatorConfig(num_samples=self.cfg.num_samples, neural=self.cfg.neural)
        est = ESTIMATORS.get(self.cfg.shapley)
        self.tsa_estimator = est(3 * d + TSA_STATS + 4, EstimatorConfig(
            num_samples=self.cfg.tsa.num_samples or self.cfg.num_samples, neural=self.cfg.neural, target=self.cfg.tsa.score))
        self.fsa_estimator = est(d + 10, est_cfg)

    # -- region head --------------------------------------------------------------------------------------------
    def regions_all(self, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        """Every anchor's box and confidence logit: ``([B, N, 4], [B, N])``."""
        return self.region_head(tokens, self.grid_of(tokens))

    def grid_of(self, tokens: Tensor) -> Tuple[int, int]:
        n = tokens.shape[1]
        h, w = self.grid
        if h * w != n:
            raise SpecError(f"patch grid {self.grid} does not match {n} tokens")
        return self.grid

    @torch.no_grad()
    def propose_regions(self, image_features: ImageFeatures, top_k: int = 10) -> List[Regions]:
        """Top-``k`` boxes after NMS per image (normalised xyxy) with confidences ``σ(logit)``."""
        boxes, logits = self.region_head(image_features.tokens, tuple(image_features.grid))
        scores = logits.sigmoid()
        out = []
        for b in range(boxes.shape[0]):
            keep = nms_topk(boxes[b], scores[b], top_k, self.cfg.region.nms_iou, fill=False)
            out.append(Regions(boxes[b, keep], scores[b, keep]))
        return out

    def region_features(self, image_features: ImageFeatures, boxes: Sequence[Tensor]) -> List[Tensor]:
        """Region embeddings per box, as ℒ_FSA's prediction: ``h^I = normalize(mean_{n ∈ box} x_n)`` in the shared
        ℒ_CMC token space (``fsa.region_projection: none``) or ``h^I = normalize(W_r · mean_{n ∈ box} x_n)``
        (``linear``); members = patches whose centres lie in the box."""
        out = []
        for b, bx in enumerate(boxes):
            members = member_masks(bx.to(image_features.tokens.dtype)[None], tuple(image_features.grid))
            out.append(pool_regions(image_features.tokens[b : b + 1], members, self.region_proj)[0])
        return out

    def text_region_embedding(self, text_features: TextFeatures) -> Tensor:
        """Text side of region scoring: the whole text embedded as one phrase (``phrase``) or the pooled embedding."""
        if self.cfg.region_text == "pooled":
            return text_features.pooled
        return pool_phrases(text_features.tokens, text_features.mask[:, None, :], self.phrase_proj)[:, 0]

    def score_regions(self, image_features: ImageFeatures, boxes: Sequence[Tensor],
                      text_features: TextFeatures) -> List[Tensor]:
        """Cosine of region features with the texts (``[K_b, N_texts]`` per image)."""
        t = self.text_region_embedding(text_features)
        return [r @ t.T for r in self.region_features(image_features, boxes)]

    @torch.no_grad()
    def fine_grained_scores(self, image_features: ImageFeatures, text_features: TextFeatures,
                            chunk_size: int = 1024) -> Tensor:
        """LOUPE's own fine-grained image–text score: region–word alignment in ℒ_FSA's space (``[I]``).

        With ``R(I)`` the image's top ``region.top_k`` native regions (:meth:`propose_regions`), ``h_r`` their
        embeddings (:meth:`region_features`, ℒ_FSA's prediction) and ``u_w`` each real token of the text embedded as
        a one-word phrase (:func:`~.loupe_heads.pool_phrases`: normalised, through ``phrase_proj`` when present):

        ``s(I, T) = (1/|T|) Σ_{w ∈ T} max_{r ∈ R(I)} ⟨h_r, u_w⟩``

        — every word must find its region; the late interaction of FILIP with LOUPE's regions in place of patches.
        Phrases are not parsed at scoring time, so words stand in for them. ``[N_images, N_texts]``, float32.
        """
        regions = self.propose_regions(image_features, top_k=self.cfg.region.top_k)
        feats = self.region_features(image_features, [r.boxes for r in regions])
        k = max(f.shape[0] for f in feats)
        d = feats[0].shape[-1]
        reg = image_features.tokens.new_zeros(len(feats), k, d)
        rmask = torch.zeros(len(feats), k, dtype=torch.bool, device=reg.device)
        for b, f in enumerate(feats):
            reg[b, : f.shape[0]] = f
            rmask[b, : f.shape[0]] = True
        mask = text_features.mask.bool()
        words = pool_phrases(text_features.tokens, torch.eye(mask.shape[1], dtype=torch.bool,
                                                             device=mask.device)[None].expand(mask.shape[0], -1, -1),
                             self.phrase_proj)  # [T, L, D]
        out = torch.empty(reg.shape[0], words.shape[0])
        step = max(1, min(chunk_size, 2 ** 24 // max(1, k * words.shape[0] * words.shape[1])))
        for s in range(0, reg.shape[0], step):
            sim = torch.einsum("ikd,tld->itlk", reg[s : s + step], words)
            sim = sim.masked_fill(~rmask[s : s + step, None, None, :], float("-inf")).amax(-1)  # [i, T, L]
            sim = (sim * mask[None]).sum(-1) / mask.sum(-1).clamp_min(1)[None]
            out[s : s + step] = sim.float().cpu()
        return out

    # -- training -----------------------------------------------------------------------------------------------
    def _select_train_boxes(self, boxes: Tensor, logits: Tensor) -> Tensor:
        """Anchor indices ``[T, C]``: top ``train_boxes`` after NMS plus ``random_boxes`` random other anchors."""
        rc = self.cfg.region
        out = []
        n = boxes.shape[1]
        for b in range(boxes.shape[0]):
            top = nms_topk(boxes[b].detach(), logits[b].detach(), rc.train_boxes, rc.nms_iou)
            if rc.random_boxes > 0:
                rest = torch.ones(n, dtype=torch.bool, device=boxes.device)
                rest[top] = False
                cand = torch.nonzero(rest).flatten()
                pick = cand[torch.randperm(cand.numel(), device=boxes.device)[: rc.random_boxes]]
                top = torch.cat([top, pick])
            out.append(top)
        return torch.stack(out)

    def token_game(self, pixels: Optional[Tensor], tokens: Tensor, text: Tensor,
                   bank: Optional[Tuple[Tensor, Tensor]] = None):
        """The token-level game ``loupe.tsa.value`` names, one game per image (constants, no gradient).

        ``tower``: :class:`~loupe_bench.models.masked_game.MaskedTowerGame` on ``pixels`` (the masked image
        re-encoded); ``cached``: :class:`~loupe_bench.shapley.PooledCosineGame` on the cached ``tokens``."""
        if self.cfg.tsa.value == "cached":
            return PooledCosineGame(tokens.detach().float(), text.detach().float())
        if pixels is None:
            raise SpecError(f"loupe.tsa.value {self.cfg.tsa.value!r} needs the batch pixels")
        from .masked_game import MaskedTowerGame

        contrast = {}
        if bank is not None:
            contrast = dict(bank=bank[0].detach(), target=bank[1], scale=float(self.scale().detach()), contrast="prob")
        return MaskedTowerGame(self, pixels.detach(), text.detach(), last_blocks=self.cfg.tsa.last_blocks,
                               drop=self.cfg.tsa.drop, bucket=self.cfg.tsa.bucket, pack=self.cfg.tsa.pack,
                               **contrast)

    def _tsa_bank(self, emb: Mapping[str, Tensor], batch: Optional[Mapping[str, Any]], t_img: int
                  ) -> Optional[Tuple[Tensor, Tensor]]:
        """``(bank [K, D], target)`` of the contrastive token games, or ``None`` for the cosine ones (constants).

        * ``probability``: the batch's captions (caption ``b`` is row ``b``, ``target [T]``) and
          ``tsa.hard_negatives`` text-only hard negatives of each target caption
          (:func:`~.loupe_heads.text_hard_negatives`);
        * ``phrase_probability``: every phrase of the batch encoded as a text of its own
          (:func:`~.loupe_heads.phrase_sequences`) and the hard negatives of each target image's phrases;
          ``target [T, J]`` = the rows of the image's own phrases (``-1`` pads), so a masked image is scored by the
          phrase it matches best: one object, not the whole caption.

        Texts are encoded by the text tower without gradient; the negatives are drawn with a generator seeded by
        ``train_step`` (deterministic for a seed)."""
        value = self.cfg.tsa.value
        if value not in ("probability", "phrase_probability"):
            return None
        if batch is None or "phrase_token_mask" not in batch:
            if value == "phrase_probability":
                raise DataError("loupe.tsa.value 'phrase_probability' needs the captions' phrase spans in the batch")
            return emb["text_pooled"].detach(), torch.arange(t_img, device=emb["text_pooled"].device)
        ids, am = batch["input_ids"], batch["attention_mask"]
        ptm, pm = batch["phrase_token_mask"], batch["phrase_mask"]
        gen = torch.Generator().manual_seed(int(self.train_step))
        k = self.cfg.tsa.hard_negatives
        with torch.no_grad():
            if value == "probability":
                bank = [emb["text_pooled"].detach()]
                target = torch.arange(t_img, device=ids.device)
                neg, owner = text_hard_negatives(ids[:t_img], ptm[:t_img], pm[:t_img], k, gen)
                if neg.shape[0]:
                    bank.append(self.encode_text(neg, am[:t_img][owner]).pooled.to(bank[0].dtype))
                return torch.cat(bank), target
            pids, pmask, owner, span = phrase_sequences(ids, am, ptm, pm)
            bank = [self.encode_text(pids, pmask).pooled] if pids.shape[0] else []
            rows = [torch.nonzero(owner == b).flatten() for b in range(t_img)]
            width = max([1] + [r.numel() for r in rows])
            target = torch.full((t_img, width), -1, dtype=torch.long, device=ids.device)
            for b, r in enumerate(rows):
                target[b, : r.numel()] = r
            sel = owner < t_img
            if k > 0 and bool(sel.any()):
                one = torch.ones(int(sel.sum()), 1, dtype=torch.bool, device=ids.device)
                neg, src = text_hard_negatives(pids[sel], span[sel][:, None], one, k, gen)
                if neg.shape[0]:
                    bank.append(self.encode_text(neg, pmask[sel][src]).pooled)
            if not bank:
                return None
            return torch.cat(bank).to(emb["text_pooled"].dtype), target

    @staticmethod
    def game_stats(game, members: Tensor, features: str = "tower") -> Tensor:
        """``[T, C, 3]`` = ``[u(A), u(N), u(N∖A)]`` of each coalition under ``game`` (features for ``g_θ``).

        ``features`` (``loupe.tsa.features``) says which are evaluated: ``tower`` all three; ``coalition`` ``u(A)``
        and ``u(N)``, with ``u(N) − u(A)`` in the third column (the additive guess of ``u(N∖A)``); ``image``
        ``u(N)`` only, the other two columns 0. One game evaluation per image plus ``C`` (``coalition``) or ``2C``
        (``tower``) per image."""
        t, c, n = members.shape
        full = torch.ones(t, 1, n, dtype=torch.bool, device=members.device)
        parts = {"tower": [members, ~members, full], "coalition": [members, full], "image": [full]}[features]
        vals = game(torch.cat(parts, dim=1)).float()
        v_n = vals[:, -1:].expand(t, c)
        if features == "image":
            zero = torch.zeros_like(v_n)
            return torch.stack([zero, v_n, zero], dim=-1)
        v_a = vals[:, :c]
        v_rest = vals[:, c : 2 * c] if features == "tower" else v_n - v_a
        return torch.stack([v_a, v_n, v_rest], dim=-1)

    def tsa_problem(self, emb: Mapping[str, Tensor], boxes: Tensor, logits: Tensor,
                    batch: Optional[Mapping[str, Any]] = None) -> "TsaProblem":
        """The token-level problem of the first ``tsa.target_images`` images of a batch.

        Players: the ``N`` patches; coalitions: the member patches of each candidate box (top ``train_boxes`` after
        NMS plus ``random_boxes`` random anchors, and ``box_jitter`` jittered copies of each); game:
        :meth:`token_game` (the masked image re-encoded by the tower, scored against the paired caption).
        """
        t_img = min(self.cfg.tsa.target_images, boxes.shape[0])
        tokens = emb["image_tokens"][:t_img].detach()
        text = emb["text_pooled"][:t_img].detach()
        grid = self.grid_of(tokens)
        idx = self._select_train_boxes(boxes[:t_img], logits[:t_img])  # [T, C]
        sel_boxes = torch.gather(boxes[:t_img], 1, idx[..., None].expand(-1, -1, 4))  # with grad
        sel_logits = torch.gather(logits[:t_img], 1, idx)
        cand = sel_boxes.detach()
        j = self.cfg.region.box_jitter
        if j > 0:
            jit = jitter_boxes(cand, j, self.cfg.region.jitter_scale)  # [T, C, J, 4]
            cand = torch.cat([cand[:, :, None], jit], dim=2).reshape(t_img, -1, 4)
        members = member_masks(cand, grid)  # [T, C', N]
        pixels = None if batch is None or "pixels" not in batch else batch["pixels"][:t_img]
        game = self.token_game(pixels, tokens, text, self._tsa_bank(emb, batch, t_img))
        stats = self.game_stats(game, members, self.cfg.tsa.features)
        feats = tsa_features(tokens, text, members, cand, stats)
        valid = members.sum(-1) >= 1
        return TsaProblem(game, members, valid, feats, sel_boxes, sel_logits, cand, stats)

    def _tsa(self, emb: Mapping[str, Tensor], batch: Mapping[str, Any], boxes: Tensor, logits: Tensor,
             terms: Dict[str, Tensor], logs: Dict[str, float], nsi: List[Tensor]) -> None:
        """ℒ_TSA and the box self-training term (``tsa_box``) from the scores of the candidate boxes.

        With ``s(A)`` the estimated ``tsa.score`` of box ``A`` (φ([A]) or I([A])), ``|A|`` its patches and ``v(N)``
        the whole image's value, the **excess** of a box is ``e(A) = φ([A]) − |A| · v(N) / N`` for the coalition
        value (what the box earns above its patches' fair share, by efficiency Σ_i φ_i = v(N)) and ``e(A) = I([A])``
        for the interaction (already an excess over its members alone). ``[I]``

        * geometry: among each box and its ``box_jitter`` copies, the one with the largest ``e`` is the box's target
          (L1 toward it when a copy beats the box itself) — a box can move, grow and shrink onto what its value
          rewards;
        * confidence: ``z(A) = e(A)`` centred over the image's boxes, target ``y = σ(z / (T_I · rms z))``,
          ``ℒ_TSA = BCE(σ(logit), y)`` (:func:`tsa_loss`). The size normalisation is the fair-share term of ``e``:
          ``e`` peaks where a box matches an object's extent (a background patch adds ~0 value but costs
          ``v(N)/N``; a missing object patch loses more than that). Dividing ``e`` by ``|A|`` as well was measured to
          favour one-patch boxes (mean box area fell to 1.3 patches, proposal recall@10 0.21 vs grid 0.20).
        """
        pr = self.tsa_problem(emb, boxes, logits, batch)
        t_img = pr.sel_logits.shape[0]
        est = self.tsa_estimator(pr.game, pr.coalitions, pr.valid, pr.feats)
        score = est.targets.to(pr.sel_logits.dtype)  # [T, C']
        size = pr.coalitions.sum(-1).to(score.dtype).clamp_min(1.0)
        n = pr.coalitions.shape[-1]
        if self.cfg.tsa.score == "coalition_value":
            excess = score - size / n * pr.stats[..., 1].to(score.dtype)
        else:
            excess = score
        excess = excess.masked_fill(~pr.valid, float("-inf"))
        j = self.cfg.region.box_jitter
        ex = excess.reshape(t_img, -1, j + 1)
        started = getattr(self, "_loss_step", 0) >= self.cfg.region.box_start
        use_map = self.cfg.region.geometry == "patch_map"
        pmap = self._patch_map(pr, logs) if (use_map and started) or self.cfg.tsa.confidence == "map" else None
        if use_map:
            if started:
                self._map_geometry(pmap, pr, boxes[:t_img], terms, logs)
        elif j > 0 and started:
            best = ex.argmax(-1)  # [T, C]
            margin = self.cfg.region.move_margin * max(float(self.tsa_scale), 0.0)
            if margin > 0:  # move only when a copy beats the box by more than the margin
                gain = ex.gather(-1, best[..., None])[..., 0] - ex[..., 0]
                best = torch.where(gain > margin, best, torch.zeros_like(best))
            target_box = torch.gather(pr.cand.reshape(t_img, -1, j + 1, 4), 2,
                                      best[..., None, None].expand(-1, -1, 1, 4))[:, :, 0]
            improve = (best > 0).to(pr.sel_boxes.dtype)[..., None]
            terms["tsa_box"] = (F.l1_loss(pr.sel_boxes, target_box, reduction="none") * improve).sum() / (
                improve.sum() * 4).clamp_min(1.0)
            logs["tsa_box_moved"] = float(improve.mean())
        ok = pr.valid.reshape(t_img, -1, j + 1)[..., 0]
        if pmap is not None and self.cfg.tsa.confidence == "map":
            conf_logits = logits[:t_img]
            target = self._map_confidence(pmap, boxes[:t_img])
            conf_ok = torch.ones_like(target, dtype=torch.bool)
        else:
            conf_logits, conf_ok = pr.sel_logits, ok
            target = self._confidence_targets(ex[..., 0], ok)
        terms["tsa"] = tsa_loss(conf_logits, target, conf_ok)
        logs["tsa_kl"] = float(tsa_loss(conf_logits.detach(), target, conf_ok) - tsa_loss(torch.logit(
            target.clamp(1e-6, 1 - 1e-6)), target, conf_ok))
        logs["tsa_score_mean"] = float(score.reshape(t_img, -1, j + 1)[..., 0][ok].mean()) if bool(ok.any()) else 0.0
        logs["tsa_box_area"] = float(size.reshape(t_img, -1, j + 1)[..., 0].mean() / n)
        self._collect(est, "tsa", logs, nsi)

    def _patch_map(self, pr: "TsaProblem", logs: Dict[str, float]) -> Tensor:
        """The excess map ``m_i = φ̂_i − λ (v(N) − v(∅))/N`` ``[T, N]`` of the token game of the target images:
        ``φ̂_i`` from ``region.map_pairs`` antithetic pairs of patch orders
        (:func:`~loupe_bench.shapley.permutation.sample_player_values`, ``2 · (N + 1)`` masked images a pair),
        ``λ`` = ``region.map_threshold``."""
        t_img, n = pr.coalitions.shape[0], pr.coalitions.shape[-1]
        with torch.no_grad():
            phi = sample_player_values(pr.game, t_img, n, self.cfg.region.map_pairs, device=pr.coalitions.device)
        logs["tsa_map_evals"] = float(phi.num_evals)
        return excess_map(phi.mean, self.cfg.region.map_threshold).float()

    def _map_geometry(self, pmap: Tensor, pr: "TsaProblem", boxes: Tensor, terms: Dict[str, Tensor],
                      logs: Dict[str, float]) -> None:
        """``tsa_box`` from the excess map (``region.geometry: patch_map``): ``ℒ = mean |b − b*|₁`` over the trained
        boxes (``region.map_boxes``), ``b*`` their best grid rectangles by the additive excess ``Σ_{i∈R} m_i``
        among those with IoU ≥ ``region.map_iou`` (:func:`~.region_geometry.map_targets`)."""
        trained = boxes if self.cfg.region.map_boxes == "all" else pr.sel_boxes
        target, gain = map_targets(trained.detach(), pmap.to(boxes.dtype), self.grid, self.cfg.region.map_iou)
        # a box moves only toward a rectangle holding more than its share: around a box on background every
        # rectangle is negative, and the best of them (one patch) would only shrink it
        move = (gain > 0).to(boxes.dtype)[..., None]
        terms["tsa_box"] = (F.l1_loss(trained, target, reduction="none") * move).sum() / (move.sum() * 4).clamp_min(1.0)
        logs["tsa_box_moved"] = float(move.mean())
        logs["tsa_map_area"] = float(((target[..., 2:] - target[..., :2]).prod(-1)).mean())

    def _map_confidence(self, pmap: Tensor, boxes: Tensor) -> Tensor:
        """Confidence targets of every anchor from the excess map (``tsa.confidence: map``): ``S(b) = Σ_{i∈b} m_i``
        of the box's patches, ``y = σ(S / (T_I · r))``, ``r`` a running RMS of ``S`` (as ``excess``): a box
        holding more than its fair share of the image's value is above ½, one on background below, and targets
        rank across images."""
        members = member_masks(boxes.detach(), self.grid).to(pmap.dtype)  # [T, K, N]
        score = (members @ pmap[..., None])[..., 0]
        rms = float((score ** 2).mean().sqrt())
        if self.training and rms > 0:
            prev = float(self.tsa_scale)
            self.tsa_scale.fill_(rms if prev <= 0 else 0.9 * prev + 0.1 * rms)
        return torch.sigmoid(score / (self.cfg.tsa.temperature * max(float(self.tsa_scale), 1e-6))).to(boxes.dtype)

    def _confidence_targets(self, excess: Tensor, ok: Tensor) -> Tensor:
        """ℒ_TSA's confidence targets ``y`` from the boxes' excess ``e`` (``tsa.confidence``):

        * ``centred``: ``z = e − mean_image e``, ``y = σ(z / (T_I · rms_batch z))`` — half of every image's boxes
          above ½, whatever the image holds;
        * ``excess``: ``y = σ(e / (T_I · r))`` with ``r`` a running RMS of ``e`` over training (``r ← 0.9 r + 0.1
          rms_batch e``; the first batch sets it): ``e = 0`` is the fair share, so a box earning more than its
          patches' share is above ½ and one on background below, and targets rank across images. ``[I]``
        """
        z = torch.where(ok, excess, torch.zeros_like(excess))
        rms = float((z[ok] ** 2).mean().sqrt()) if bool(ok.any()) else 0.0
        if self.training and rms > 0:
            prev = float(self.tsa_scale)
            self.tsa_scale.fill_(rms if prev <= 0 else 0.9 * prev + 0.1 * rms)
        if self.cfg.tsa.confidence == "centred":
            mean = (z * ok).sum(-1, keepdim=True) / ok.sum(-1, keepdim=True).clamp_min(1)
            return normalise_interactions((z - mean) * ok, ok, self.cfg.tsa.temperature)
        scale = max(float(self.tsa_scale), 1e-6)
        return torch.sigmoid(z.detach() / (self.cfg.tsa.temperature * scale))

    def _fsa_boxes(self, batch: Mapping[str, Any], boxes: Tensor, logits: Tensor, t_img: int,
                   pvalid: Tensor) -> Tensor:
        """ℒ_FSA's regions ``[T, K', 4]`` (detached): the top ``fsa.num_regions`` boxes after NMS (``proposals``),
        or (``oracle``) the ground-truth boxes of each image's valid phrases first, in phrase order, then its top
        proposals, ``K' = max(K, most phrase boxes of an image)``."""
        k = min(self.cfg.fsa.num_regions, boxes.shape[1])
        nms = self.cfg.region.nms_iou
        with torch.no_grad():
            bx, lg = boxes[:t_img].detach(), logits[:t_img].detach()
            if self.cfg.fsa.regions == "proposals":
                idx = torch.stack([nms_topk(bx[b], lg[b], k, nms) for b in range(t_img)])
                return torch.gather(bx, 1, idx[..., None].expand(-1, -1, 4))
            pb = batch.get("phrase_boxes")
            if pb is None:
                raise DataError("loupe.fsa.regions: oracle needs the ground-truth box of each caption phrase, but the "
                                "training batch has no 'phrase_boxes' (the data carries no phrase boxes; the "
                                "synthetic world and Flickr30K Entities do)")
            gt = pb[:t_img].to(device=bx.device, dtype=bx.dtype)
            ok = torch.isfinite(gt).all(-1) & pvalid
            k2 = max(k, int(ok.sum(-1).max()) if ok.numel() else k)
            out = []
            for b in range(t_img):
                own = gt[b][ok[b]]
                top = nms_topk(bx[b], lg[b], k2, nms)[: k2 - own.shape[0]]
                out.append(torch.cat([own, bx[b, top]], dim=0))
            return torch.stack(out)

    def _fsa_game(self, tokens: Tensor, members: Tensor, text_tokens: Tensor, span: Tensor, pvalid: Tensor,
                  region: Tensor, phrase: Tensor):
        """The semantics-level game and the detached embeddings of ``g_θ``'s features: ``(game, f_region,
        f_phrase)``.

        ``pooled``: :class:`~loupe_bench.shapley.PooledRegionPhraseGame` with ``r_i = Σ_{n∈box_i} x_n`` (detached
        ℒ_CMC-space patch tokens) and ``p_j = mean_{l∈span_j} w_l`` (detached ℒ_CMC-space text tokens, no phrase
        projection); features from ``normalize(r_i)``, ``normalize(p_j)``. ``late``:
        :class:`~loupe_bench.shapley.LateInteractionGame` on the prediction's detached cosines
        ``s_ij = ⟨h^I_i, h^T_j⟩``; features from ``h^I``, ``h^T``. Padding phrases are null players.
        """
        t_img, k = members.shape[:2]
        player_mask = torch.cat([torch.ones(t_img, k, dtype=torch.bool, device=pvalid.device), pvalid], dim=1)
        if self.cfg.fsa.value == "late":
            f_region, f_phrase = region.detach(), phrase.detach()
            game = LateInteractionGame((f_region @ f_phrase.transpose(1, 2)).float(), player_mask)
            return game, f_region, f_phrase
        tok = tokens.detach().float()
        r_sum = members.to(tok.dtype) @ tok  # [T, K, D]
        m = span.to(tok.dtype)
        p_mean = m @ text_tokens.detach().float() / m.sum(-1, keepdim=True).clamp_min(1.0)  # [T, P, D]
        game = PooledRegionPhraseGame(r_sum, p_mean, player_mask)
        return game, F.normalize(r_sum, dim=-1).to(region.dtype), F.normalize(p_mean, dim=-1).to(phrase.dtype)

    def fsa_problem(self, emb: Mapping[str, Tensor], batch: Mapping[str, Any], boxes: Tensor,
                    logits: Tensor) -> Optional["FsaProblem"]:
        """The semantics-level interaction problem of the first ``fsa.target_images`` pairs (None without phrases).

        Players: the ``K`` regions (:meth:`_fsa_boxes`) and the ``P`` phrase slots (padding phrases are null
        players); coalitions: every region–phrase pair ``{i, K + j}``; game: :meth:`_fsa_game` (``fsa.value``).
        Prediction (with gradient): ``h^I_i = normalize(mean_{n∈box_i} x_n)`` (``W_r`` first with
        ``fsa.region_projection: linear``), ``h^T_j = normalize(mean_{l∈span_j} w_l)`` (optional phrase projection).
        """
        ptm = batch.get("phrase_token_mask")
        pmask = batch.get("phrase_mask")
        if ptm is None or pmask is None or ptm.shape[1] == 0:
            return None
        t_img = min(self.cfg.fsa.target_images, boxes.shape[0], ptm.shape[0])
        tokens = emb["image_tokens"][:t_img]
        grid = self.grid_of(tokens)
        ptm = ptm[:t_img].to(emb["text_tokens"].device).bool()
        span = ptm & emb["text_mask"][:t_img, None, :].bool()
        span = span | (ptm & ~span.any(-1, keepdim=True))  # a span of special tokens only: keep it
        pvalid = pmask[:t_img].to(span.device).bool() & span.any(-1)
        rboxes = self._fsa_boxes(batch, boxes, logits, t_img, pvalid)
        members = member_masks(rboxes, grid)
        region = pool_regions(tokens, members, self.region_proj)  # [T, K, D] (grad)
        phrase = pool_phrases(emb["text_tokens"][:t_img], span, self.phrase_proj)  # [T, P, D] (grad)
        sim = region @ phrase.transpose(1, 2)  # [T, K, P]
        k, p = sim.shape[1], sim.shape[2]
        game, f_region, f_phrase = self._fsa_game(tokens, members, emb["text_tokens"][:t_img], span, pvalid, region,
                                                  phrase)
        coal, jj = pair_coalitions(t_img, k, p, sim.device)
        valid = pvalid[:, jj]  # [T, K*P]
        feats = fsa_features(f_region @ f_phrase.transpose(1, 2), f_region, f_phrase, pvalid).reshape(t_img, k * p, -1)
        return FsaProblem(game, coal, valid, feats, sim, pvalid, rboxes, region, phrase, f_region, f_phrase)

    def _fsa(self, emb: Mapping[str, Tensor], batch: Mapping[str, Any], boxes: Tensor, logits: Tensor,
             terms: Dict[str, Tensor], logs: Dict[str, float], nsi: List[Tensor]) -> None:
        pr = self.fsa_problem(emb, batch, boxes, logits)
        if pr is None:
            return
        est = self.fsa_estimator(pr.game, pr.coalitions, pr.valid, pr.feats)
        inter = est.targets.reshape(pr.sim.shape).float()
        target = fsa_targets(inter, pr.phrase_valid, self.cfg.fsa.target_temperature)
        terms["fsa"] = fsa_loss(pr.region, pr.phrase, target, pr.phrase_valid, self.cfg.fsa.sim_temperature)
        pv = pr.phrase_valid
        if bool(pv.any()):
            logs["fsa_interaction_mean"] = float(inter.transpose(1, 2)[pv].mean())
            # does the target pick the region the prediction already prefers? (1.0 = self-referential targets)
            agree = target.argmax(1) == pr.sim.detach().argmax(1)  # [T, P]
            logs["fsa_target_agreement"] = float(agree[pv].float().mean())
        self._collect(est, "fsa", logs, nsi)

    @staticmethod
    def _collect(est, level: str, logs: Dict[str, float], nsi: List[Tensor]) -> None:
        for key, val in est.logs.items():
            logs[f"{level}_{key}"] = val
        if est.nsi is not None:
            nsi.append(est.nsi)

    def loss_from_embeddings(self, emb: Dict[str, Tensor], batch: Dict[str, Any]) -> LossOutput:
        """All LOUPE terms; a term whose weight is 0 is not computed (ablation specs).

        ``ℒ = ℒ_CMC + λ_TSA ℒ_TSA + f(t) λ_FSA ℒ_FSA + λ_NSI ℒ_NSI (+ λ_box ℒ_TSA-box)`` with ``f`` the ℒ_FSA
        schedule (:func:`fsa_schedule`) at ``t = train_step``; each training-mode call advances ``train_step`` by one
        (once per optimiser step: feature-caching accumulation calls the loss once). ``terms["fsa"]`` is the
        unweighted ℒ_FSA; ``logs["fsa_factor"]`` is ``f(t)``.
        """
        w = self.weights
        step = int(self.train_step)
        self._loss_step = step  # the schedules of this call (ℒ_FSA's factor, the box geometry's start)
        if self.training:
            self.train_step += 1
        fc = self.cfg.fsa
        f_fsa = fsa_schedule(step, fc.start_step, fc.ramp_steps) if w["fsa"] > 0 else 0.0
        scale = self.scale()
        terms: Dict[str, Tensor] = {
            "cmc": clip_infonce(emb["image_pooled"], emb["text_pooled"], scale, with_grad=self.gather_with_grad,
                                local_loss=self.local_loss)
        }
        logs: Dict[str, float] = {"logit_scale": float(scale.detach())}
        if w["fsa"] > 0:
            logs["fsa_factor"] = f_fsa
        nsi: List[Tensor] = []
        run_tsa = w["tsa"] > 0 and (not self.training or step % self.cfg.tsa.every == 0)
        if run_tsa or f_fsa > 0:
            # the region head on the images that get a target only (the first rows; the others' boxes are unused)
            t_need = max(self.cfg.tsa.target_images if run_tsa else 0, self.cfg.fsa.target_images if f_fsa > 0 else 0)
            boxes, logits = self.regions_all(emb["image_tokens"][:t_need])
            if run_tsa:
                self._tsa(emb, batch, boxes, logits, terms, logs, nsi)
            if f_fsa > 0:
                self._fsa(emb, batch, boxes, logits, terms, logs, nsi)
        if nsi and w["nsi"] > 0:
            terms["nsi"] = torch.stack(nsi).mean()
        fr = [logs[k] for k in ("tsa_routed_fraction", "fsa_routed_fraction") if k in logs]
        if fr:
            logs["routed_fraction"] = sum(fr) / len(fr)
        rho = [logs[k] for k in ("tsa_nsi_spearman", "fsa_nsi_spearman") if k in logs]
        if rho:
            logs["nsi_spearman"] = sum(rho) / len(rho)
        factor = {"fsa": f_fsa}
        total = sum(w[k] * factor.get(k, 1.0) * v for k, v in terms.items())
        return LossOutput(total, terms, logs)

    # -- explanation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def explain(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor, phrase_token_mask: Tensor,
                phrase_mask: Tensor, top_k: Optional[int] = None) -> Dict[str, Tensor]:
        """Regions, their confidences and the region–phrase interaction matrix of a batch (for report plots).

        Returns ``boxes [B, K, 4]`` (normalised xyxy), ``box_scores [B, K]``, ``tsa_interaction [B, K]`` (token-level
        score of each box, ``loupe.tsa.score``), ``interaction_matrix [B, K, P]`` (``Î_ij`` of the ``fsa.value`` game, Monte-Carlo
        with ``loupe.explain_samples``), ``similarity [B, K, P]`` (the prediction's ``⟨h^I_i, h^T_j⟩``) and
        ``phrase_best_region [B, P]`` (argmax over regions of the interaction; −1 for padding phrases).
        """
        from ..shapley import sample_coalition_value, sample_interaction

        k = top_k or self.cfg.region.top_k
        img = self.encode_image(pixels)
        txt = self.encode_text(input_ids, attention_mask)
        boxes, logits = self.region_head(img.tokens, tuple(img.grid))
        k = min(k, boxes.shape[1])
        idx = torch.stack([nms_topk(boxes[b], logits[b], k, self.cfg.region.nms_iou) for b in range(boxes.shape[0])])
        rboxes = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
        scores = torch.gather(logits, 1, idx).sigmoid()
        members = member_masks(rboxes, tuple(img.grid))
        m = self.cfg.explain_samples
        game = self.token_game(pixels, img.tokens, txt.pooled)
        if self.cfg.tsa.score == "coalition_value":  # 2 masks per context, not |A| + 2: the same contexts and φ
            tsa = sample_coalition_value(game, members, m).mean
        else:
            tsa = sample_interaction(game, members, m).mean
        region = pool_regions(img.tokens, members, self.region_proj)
        span = phrase_token_mask.bool() & txt.mask[:, None, :]
        pvalid = phrase_mask.bool() & span.any(-1)
        phrase = pool_phrases(txt.tokens, span, self.phrase_proj)
        sim = region @ phrase.transpose(1, 2)
        b, _, p = sim.shape
        game, _, _ = self._fsa_game(img.tokens, members, txt.tokens, span, pvalid, region, phrase)
        coal, _ = pair_coalitions(b, k, p, sim.device)
        inter = sample_interaction(game, coal, m).mean.reshape(b, k, p).float() if p > 0 else sim.new_zeros(b, k, 0)
        inter = inter * pvalid[:, None, :]
        best = inter.argmax(1).masked_fill(~pvalid, -1)
        return {"boxes": rboxes, "box_scores": scores, "tsa_interaction": tsa.float(), "interaction_matrix": inter,
                "similarity": sim, "phrase_best_region": best}

