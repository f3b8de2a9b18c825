"""What every shipped task type's metrics mean, declared in one torch-free module.

The report, the regression gate and the exports look metrics up (:func:`~loupe_bench.tasks.metric_registry.metric_info`)
without running a model, so the meanings must load without the task adapters (which need torch): ``loupe-bench check``
and ``loupe-bench report`` import this module only. The adapters import the :class:`Metric` entries they emit from
here, so a name is spelt once.

Adding a metric to a shipped task type: one entry in that type's ``_declare`` call below, and the code in the
adapter that computes the number and stores it under that name. A task type outside this package declares its
metrics in its own module (the registry loads the adapters when a name is not found here).
"""
from __future__ import annotations

from typing import Dict, Tuple

from .metric_types import Metric

#: task type -> the metrics it emits, in report order (declared by the registry on its first lookup)
DECLARATIONS: Dict[str, Tuple[Metric, ...]] = {}


def _declare(task_type: str, *metrics: Metric) -> None:
    """List ``metrics`` as emitted by ``task_type`` (appended to :data:`DECLARATIONS`)."""
    DECLARATIONS[task_type] = DECLARATIONS.get(task_type, ()) + tuple(metrics)


# ---------------------------------------------------------------------------------------------------- retrieval
#: R@K of image queries (captions retrieved) and of caption queries (images retrieved), and their sum
I2T_RECALL = Metric("i2t_R@<k>", display="i2t R@<k>", order=10,
                    description="fraction of image queries with a ground-truth caption among the first K texts")
T2I_RECALL = Metric("t2i_R@<k>", display="t2i R@<k>", order=11,
                    description="fraction of caption queries whose image is among the first K images")
RSUM = Metric("rsum", unit="sum of fractions", display="RSUM", order=12,
              description="the sum of the recalls R@K both ways (0-6 for K in 1, 5, 10; shown as 0-600)")
_declare("retrieval", I2T_RECALL, T2I_RECALL, RSUM)

# ------------------------------------------------------------------ classification, linear probe, region classes
TOP_K = Metric("top<k>", order=20, description="fraction of samples whose true class is among the K best-scored")
for _task_type in ("classification", "linear-probe", "region-classification"):
    _declare(_task_type, TOP_K)

# ---------------------------------------------------------------------------------------- detection, grounding
#: COCOeval's average precisions, in COCOeval's order (over IoU 0.50:0.95, at 0.50, at 0.75)
AP_NAMES = ("AP", "AP50", "AP75")
#: COCOeval average precision of :data:`AP_NAMES`; its interval resamples images and re-accumulates the matches
AP_METRICS = tuple(Metric(name, interval="corpus", order=30 + i, description=f"COCOeval AP {iou}")
                   for i, (name, iou) in enumerate(zip(AP_NAMES, ("over IoU 0.50:0.95", "at IoU 0.50", "at IoU 0.75"))))
#: the proposal-recall metric (:func:`~loupe_bench.tasks.proposals.proposal_recall_items`)
PROPOSAL_RECALL = Metric("proposal_recall@<k>", description="fraction of ground-truth objects matched at IoU >= 0.5 "
                         "by one of the first K proposals")
#: grounding accuracy at an IoU threshold (``acc@0.5``)
ACC_AT_IOU = Metric("acc@<x>", display="acc@<x>", order=40,
                    description="fraction of queries whose chosen box overlaps a ground-truth box with IoU >= x")
_declare("detection", *AP_METRICS, PROPOSAL_RECALL)
for _task_type in ("grounding", "phrase-grounding"):
    _declare(_task_type, ACC_AT_IOU, PROPOSAL_RECALL)

# ------------------------------------------------------------------------------------------------- captioning
#: the caption metrics, in report order
CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")
#: corpus BLEU-n and CIDEr-D (interval: images resampled, the corpus statistic recomputed), ROUGE-L (a mean of
#: per-image scores), METEOR and SPICE (corpus values, no interval); CIDEr-D is a score (not bounded by 1), the others
#: fractions
_declare(
    "captioning",
    *(Metric(f"BLEU-{n}", interval="corpus", order=49 + n, description=f"corpus BLEU of n-grams up to {n}")
      for n in range(1, 5)),
    Metric("METEOR", interval="none", order=54, description="corpus METEOR (Java)"),
    Metric("ROUGE-L", order=55, description="mean per-image ROUGE-L F-measure"),
    Metric("CIDEr-D", unit="score", display="CIDEr", interval="corpus", order=56, description="corpus CIDEr-D"),
    Metric("SPICE", interval="none", order=57, description="corpus SPICE F-score (Java)"),
)

# ------------------------------------------------------------------------------------------ token interaction
#: metric stems: the rate of objects whose box beats its shifted copy, and the means
RATE_STEMS = ("box_beats_shifted@I", "box_beats_shifted@phi")
#: the box's two parts (top / bottom rows) as players: rate of positive part interaction, and its means
PART_RATE_STEMS = ("part_interaction_positive",)
PART_MEAN_STEMS = ("mean_part_interaction", "mean_part_interaction_shifted")
PART_STEMS = PART_RATE_STEMS + PART_MEAN_STEMS
MEAN_STEMS = ("mean_I", "mean_I_shifted", "mean_phi", "mean_phi_shifted")
PER_PATCH_STEMS = tuple(f"{s}_per_patch" for s in MEAN_STEMS)
#: every stem is reported per object kind (``<stem>:<kind>``): the rates are fractions of objects, the means scores
#: in the game's value units
_declare("token-interaction",
                *(Metric(s, description="fraction of objects (module docstring)") for s in RATE_STEMS + PART_RATE_STEMS),
                *(Metric(s, unit="score", description="mean over objects (module docstring)")
                  for s in MEAN_STEMS + PER_PATCH_STEMS + PART_MEAN_STEMS))

# ------------------------------------------------------------------------- caption selection, two-by-two tests
_declare(
    "caption-selection",
    Metric("acc", description="fraction of items whose true caption scores above every negative"),
    Metric("macro_acc", description="mean over the kept kinds of the per-kind accuracy"),
)
#: the three scores of an item of a two-by-two test (Winoground's)
ITEM_SCORES = ("text_score", "image_score", "group_score")
_declare(
    "two-by-two",
    Metric("text_score", description="fraction of items whose each image scores its own text above the other"),
    Metric("image_score", description="fraction of items whose each text scores its own image above the other"),
    Metric("group_score", display="group", description="fraction of items with both text and image score"),
    Metric("pair_acc", description="mean over kinds of the fraction of pairs where each text picks its own image"),
)
