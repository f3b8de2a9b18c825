"""Metrics: pure functions over scores, boxes and captions (no model, no data loading)."""
from .bootstrap import Interval, bootstrap_ci, bootstrap_ci_fn, paired_bootstrap_delta, seed_summary
from .classification import linear_probe, topk_accuracy, true_class_ranks
from .detection import coco_ap, per_class_nms
from .grounding import accuracy_at_iou, box_iou, grounding_hits, xywh_to_xyxy, xyxy_to_xywh
from .retrieval import best_positive_rank, image_to_text_ranks, retrieval_metrics, text_to_image_ranks

__all__ = [
    "Interval", "bootstrap_ci", "bootstrap_ci_fn", "paired_bootstrap_delta", "seed_summary",
    "linear_probe", "topk_accuracy", "true_class_ranks", "coco_ap", "per_class_nms",
    "accuracy_at_iou", "box_iou", "grounding_hits", "xywh_to_xyxy", "xyxy_to_xywh",
    "best_positive_rank", "image_to_text_ranks", "retrieval_metrics", "text_to_image_ranks",
]
