"""Visual grounding: rank candidate boxes of the image for each query with the spec's region scorer and take the
best (ties: the lower candidate index); Acc@IoU≥0.5 per split, never averaged across splits.

Two task types share one protocol (:func:`ground_queries`), differing only in where the queries come from:

* ``grounding`` (referring expressions, RefCOCO-style): every sentence of every ref is one query; its answer is
  the ref's box. ``options.query``: ``sentence`` (the whole expression, the RefCOCO default) or ``head-phrase``
  (only the head noun phrase, "the red circle" of "the red circle left of the blue square": the anchor's words no
  longer pull toward the anchor). Head phrases come from the data when it records them (the synthetic world does),
  else from spaCy's first noun chunk (:mod:`loupe_bench.data.phrases`).
* ``phrase-grounding`` (Flickr30K Entities-style): every gold noun phrase of every caption that refers to a boxed
  entity is one query; it is correct when the chosen box has IoU ≥ t with **any** box of its entity (the
  ANY-box protocol).

Region scoring (``options.region_scoring``, :mod:`loupe_bench.tasks.region_scoring`): ``shared`` for every
model, or each model's ``native`` scorer. Candidates (``options.proposals``): ``gt-boxes`` (all ground-truth boxes of
the image, ReCLIP's zero-shot setting), ``grid`` (the fixed multi-scale grid), ``native`` (the model's region head).

Also reported per split:

* **breakdowns** ``acc@t:<tag>``: per distractor type of referring expressions — the other objects of the image
  that share an attribute with the target among ``options.distractor_attributes`` (the category always counts as
  the attribute ``category_name``): ``<a>+<b>`` when some distractor shares all of them, else ``<a>-only`` for the
  one attribute shared, ``mixed`` when distractors of several single-attribute kinds are present — and
  ``anchor`` / ``no-anchor`` (the sentence names a second object beyond its head phrase);
* **proposal recall** ``proposal_recall@K`` (grid and native candidates): the fraction of the images'
  ground-truth objects matched at IoU ≥ t by any of the source's first ``K = options.recall_k`` proposals (native:
  by objectness; grid: the K coarsest windows) — equal K for every source;
* **reference rows** (not models): ``chance`` — a uniform pick among the candidates, exactly
  ``E[hit] = |{c : IoU(c, gt) ≥ t}| / K_candidates`` per query — and, for ``gt-boxes`` with attributes,
  ``attribute-oracle`` — the candidate whose attribute values (category name and every recorded attribute) occur
  most often among the query's words (ties: lower index). The oracle bounds what a bag-of-attributes reading of the
  query can reach; it differs between ``sentence`` and ``head-phrase`` queries.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.records import tokenize
from ..errors import DataError, SpecError
from . import TASK_TYPES
from .base import BoxTaskAdapter
from .common import (
    MetricValue, SplitOutput, encode_images, encode_texts, load_records, mean_metric, progress_bar, select_features,
    to_device,
)
from .metrics.grounding import box_iou, xywh_to_xyxy
from .metric_catalog import ACC_AT_IOU, PROPOSAL_RECALL
from .proposals import GT_BOXES, PROPOSAL_SOURCES, proposal_recall_items
from .region_scoring import REGION_SCORERS, check_region_scoring


QUERY_KINDS = ("sentence", "head-phrase")
CHANCE, ORACLE = "chance", "attribute-oracle"


class Query(NamedTuple):
    """One grounding query: its text, the acceptable ground-truth boxes (pixel xywh) and breakdown tags."""

    text: str
    gt: Tuple[Tuple[float, float, float, float], ...]
    tags: Tuple[str, ...] = ()


def _attribute_values(box, categories: Dict[int, str]) -> List[str]:
    """The words an attribute oracle may match for a box: its category name and every recorded attribute value."""
    vals = [categories.get(box.category_id, "")] + [v for _, v in box.attributes]
    return [v.lower() for v in vals if v]


def oracle_pick(query: str, candidates, categories: Dict[int, str]) -> int:
    """Index of the candidate whose attribute values occur most among the query's words (ties: lower index)."""
    words = set(tokenize(query))
    counts = [sum(v in words for v in _attribute_values(b, categories)) for b in candidates]
    return int(np.argmax(counts)) if counts else -1


def distractor_kind(target, others, attributes: Dict[str, str], categories: Dict[int, str]) -> Optional[str]:
    """The distractor type of a referring expression's target among the image's other objects.

    ``attributes`` maps a label to its source: ``category`` (the category name) or an annotation attribute key
    (``{colour: colour, shape: category}`` for the synthetic world). With ``S(o)`` the labels on which another
    object ``o`` agrees with the target: ``"+".join(labels)`` when some ``S(o)`` holds every label, else
    ``<label>-only`` when every distractor shares exactly that one label, else ``mixed``; ``None`` when no other
    object shares any label.
    """
    def value(box, source):
        return categories.get(box.category_id) if source == "category" else box.attribute(source)

    t = {label: value(target, src) for label, src in attributes.items()}
    shared = [frozenset(l for l, src in attributes.items() if t[l] is not None and value(o, src) == t[l])
              for o in others]
    shared = [x for x in shared if x]
    if not shared:
        return None
    if any(len(x) == len(attributes) for x in shared):
        return "+".join(attributes)
    singles = {next(iter(x)) for x in shared if len(x) == 1}
    if len(singles) == 1 and all(len(x) == 1 for x in shared):
        return f"{next(iter(singles))}-only"
    return "mixed"


def acceptable(candidates_xyxy: torch.Tensor, queries: Sequence[Query], thr: float) -> torch.Tensor:
    """``[K, Q]`` bool: candidate ``k`` answers query ``q`` when ``max_{g ∈ gt(q)} IoU(k, g) ≥ thr`` (ANY box)."""
    ok = torch.zeros(len(candidates_xyxy), len(queries), dtype=torch.bool)
    if len(candidates_xyxy) and len(queries):
        # one IoU matrix against every query's gt boxes, then "any" per query (a scatter over the gt columns)
        gts = [xywh_to_xyxy(q.gt) for q in queries]
        owner = torch.repeat_interleave(torch.arange(len(queries)), torch.tensor([len(g) for g in gts]))
        hit = (box_iou(candidates_xyxy, torch.cat(gts)) >= thr).to(torch.int32)
        counts = torch.zeros(len(candidates_xyxy), len(queries), dtype=torch.int32)
        counts.index_add_(1, owner, hit)
        ok = counts > 0
    return ok


class Grounded(NamedTuple):
    hits: np.ndarray            # [Q] 0/1
    chance: np.ndarray          # [Q] expected hit of a uniform pick
    oracle: Optional[np.ndarray]  # [Q] 0/1, gt-boxes with attributes only
    n_candidates: float         # mean candidates per image
    recall_items: Optional[np.ndarray]  # [objects] 0/1: found by the first K proposals (grid and native only)


def ground_queries(adapter: "GroundingTask", model, images, queries: Dict[int, List[Query]], categories, split: str,
                   device) -> Grounded:
    """The shared protocol: encode images and query texts, score candidates, pick the best per query."""
    opts = adapter.opts
    image_ids = sorted(queries)
    by_id = {im.image_id: im for im in images}
    ims = [by_id[i] for i in image_ids]
    for im in ims:
        if not (im.width and im.height):
            raise DataError("image size unknown", record=im.image_id)
    img = encode_images(model, [im.path for im in ims], adapter.spec, device, desc=f"{split} images")
    props = PROPOSAL_SOURCES.get(opts.proposals)(
        model, img, ims, top_k=opts.top_k_proposals, scales=opts.grid_scales, device=device)
    texts = [q.text for i in image_ids for q in queries[i]]
    txt = encode_texts(model, texts, adapter.spec, device, desc="queries")
    score = REGION_SCORERS.get(opts.region_scoring)
    thr = opts.iou_threshold
    hits, chance, oracle = [], [], []
    use_oracle = opts.proposals == GT_BOXES and any(b.attributes for im in ims for b in im.boxes)
    offset = 0
    with progress_bar(f"ground {split}", len(ims)) as advance, torch.no_grad():
        for n, (iid, im) in enumerate(zip(image_ids, ims)):
            q = queries[iid]
            t = to_device(select_features(txt, range(offset, offset + len(q))), device)
            offset += len(q)
            boxes = props[n][0]
            scale = torch.tensor([im.width, im.height, im.width, im.height], dtype=torch.float64)
            px = boxes.double() * scale
            ok = acceptable(px, q, thr)
            if len(boxes) == 0:
                hits.extend([0.0] * len(q))
                chance.extend([0.0] * len(q))
            else:
                sc = score(model, to_device(select_features(img, [n]), device), [boxes.to(device)], t)[0]
                best = sc.float().cpu().argmax(0)  # first maximum = lower candidate index on ties
                hits.extend(ok[best, torch.arange(len(q))].double().tolist())
                chance.extend((ok.double().mean(0)).tolist())
            if use_oracle:
                for j, query in enumerate(q):
                    k = oracle_pick(query.text, im.boxes, categories)
                    oracle.append(float(k >= 0 and bool(ok[k, j])))
            advance(1)
    recall_items = proposal_recall_items(props, ims, opts.recall_k, thr) if opts.proposals != GT_BOXES else None
    return Grounded(np.asarray(hits), np.asarray(chance), np.asarray(oracle) if use_oracle else None,
                    float(np.mean([len(p[0]) for p in props])), recall_items)


@TASK_TYPES.register("grounding")
class GroundingTask(BoxTaskAdapter):
    """Referring-expression grounding: box ranking, Acc@0.5 (IoU >= 0.5) per split, breakdowns, reference rows."""

    @dataclass
    class Options:
        proposals: str = GT_BOXES  # gt-boxes | grid | native (:data:`~.proposals.PROPOSAL_SOURCES`)
        iou_threshold: float = 0.5
        top_k_proposals: int = 100
        grid_scales: Tuple[int, ...] = (1, 2, 3, 4)
        region_scoring: str = "shared"  # shared (one rule for every model) | native (the model's own scorer)
        query: str = "sentence"  # sentence | head-phrase (referring expressions only)
        # label -> source (``category`` or an annotation attribute key): breakdown by distractor type
        distractor_attributes: Dict[str, str] = field(default_factory=dict)
        recall_k: int = 10  # proposal recall@K (grid and native candidates)
        reference_rows: bool = True  # chance and attribute-oracle rows

        def __post_init__(self):
            if self.proposals not in PROPOSAL_SOURCES:
                known = ", ".join(PROPOSAL_SOURCES.names())
                raise ValueError(f"proposals must be one of {known}, got {self.proposals!r}")
            self.grid_scales = tuple(int(s) for s in self.grid_scales)
            check_region_scoring(self.region_scoring)
            if self.query not in QUERY_KINDS:
                raise ValueError(f"query must be one of {', '.join(QUERY_KINDS)}, got {self.query!r}")
            if int(self.recall_k) < 1:
                raise ValueError("recall_k must be >= 1")
            self.distractor_attributes = {str(k): str(v) for k, v in dict(self.distractor_attributes).items()}

    @classmethod
    def known_metrics(cls, options) -> List[str]:
        return [f"acc@{float(options.get('iou_threshold', 0.5)):g}", f"proposal_recall@{options.get('recall_k', 10)}"]

    # -- queries ----------------------------------------------------------------------------------------------------
    def queries(self, recs) -> Dict[int, List[Query]]:
        """Every sentence of every ref (or its head phrase), tagged with distractor type and anchor."""
        by_id = {im.image_id: im for im in recs.images}
        parse = None
        out: Dict[int, List[Query]] = defaultdict(list)
        for r in recs.refs:
            if r.image_id not in by_id:
                raise DataError(f"ref {r.ref_id} points at an image missing from the data set", file=recs.source)
            im = by_id[r.image_id]
            target = next((b for b in im.boxes if b.ann_id == r.ann_id), None)
            kind = None
            if self.opts.distractor_attributes and target is not None:
                kind = distractor_kind(target, [b for b in im.boxes if b.ann_id != r.ann_id],
                                       self.opts.distractor_attributes, recs.categories)
            for k, s in enumerate(r.sentences):
                head = r.heads[k] if r.heads else None
                tags = [] if kind is None else [kind]
                if r.heads:
                    tags.append("anchor" if head is not None and head != s else "no-anchor")
                text = s
                if self.opts.query == "head-phrase":
                    if head is None:
                        if parse is None:
                            from ..data.phrases import load_parser

                            parse = load_parser()
                        spans = parse(s)
                        head = s[spans[0][0]:spans[0][1]] if spans else s
                    text = head
                out[r.image_id].append(Query(text, (tuple(r.bbox),), tuple(tags)))
        return out

    query_name = "referring expressions"

    def counts(self, recs, g: "Grounded") -> Dict[str, int]:
        return {"n_refs": len(recs.refs)}

    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        if self.opts.proposals == "native" and not getattr(model, "has_native_regions", False):
            raise SpecError(f"{type(model).__name__} has no native region head (proposal source 'native' needs one)")
        recs = load_records(self.spec, data_root, split)
        queries = self.queries(recs)
        if not queries:
            raise DataError(f"no {self.query_name} in split {split!r}", file=recs.source)
        model.eval()
        g = ground_queries(self, model, recs.images, queries, recs.categories, split, device)
        return self.output(split, g, queries, n_images=len(queries), **self.counts(recs, g))

    # -- metrics ----------------------------------------------------------------------------------------------------
    def output(self, split: str, g: Grounded, queries: Dict[int, List[Query]], **counts) -> SplitOutput:
        """Acc@t (+ breakdowns), proposal recall and the reference rows of one split."""
        res = SplitOutput(split)
        name = f"acc@{self.opts.iou_threshold:g}"
        tags = [q.tags for i in sorted(queries) for q in queries[i]]
        res.metrics.update(self._accuracies(name, g.hits, tags))
        res.per_item[name] = g.hits.astype(int).tolist()
        if g.recall_items is not None:
            rname = f"proposal_recall@{self.opts.recall_k}"
            res.metrics[rname] = mean_metric(g.recall_items, self.spec) if g.recall_items.size else MetricValue(
                float("nan"))
            res.per_item[rname] = g.recall_items.astype(int).tolist()
        if self.opts.reference_rows and self.opts.proposals != "native":  # native candidates differ per model
            rows = {CHANCE: self._accuracies(name, g.chance, tags)}
            if g.oracle is not None:
                rows[ORACLE] = self._accuracies(name, g.oracle, tags)
            res.reference_rows.update(rows)
        res.extra.update(
            proposal_source=self.opts.proposals, region_scoring=self.opts.region_scoring, query=self.opts.query,
            n_queries=len(g.hits), iou_rule=f"IoU >= {self.opts.iou_threshold:g}", mean_candidates=g.n_candidates,
            breakdown_counts=_tag_counts(tags), **counts,
        )
        if g.recall_items is not None:
            res.extra.update(recall_k=self.opts.recall_k)
        return res

    def _accuracies(self, name: str, values: np.ndarray, tags: Sequence[Tuple[str, ...]]) -> Dict[str, MetricValue]:
        out = {name: mean_metric(values, self.spec)}
        for tag in sorted({t for ts in tags for t in ts}):
            sel = np.asarray([tag in ts for ts in tags])
            out[f"{name}:{tag}"] = mean_metric(values[sel], self.spec)
        return out


def _tag_counts(tags: Sequence[Tuple[str, ...]]) -> Dict[str, int]:
    counts: Dict[str, int] = defaultdict(int)
    for ts in tags:
        for t in ts:
            counts[t] += 1
    return dict(sorted(counts.items()))


@TASK_TYPES.register("phrase-grounding")
class PhraseGroundingTask(GroundingTask):
    """Phrase grounding (Flickr30K Entities-style): each gold noun phrase of a caption to its entity's box(es)."""

    query_name = "boxed caption phrases"

    def queries(self, recs) -> Dict[int, List[Query]]:
        if self.opts.query != "sentence":
            raise SpecError(f"{self.spec.name}: phrase grounding queries are phrases already (query: sentence)")
        out: Dict[int, List[Query]] = defaultdict(list)
        for im in recs.images:
            boxes: Dict[int, List] = defaultdict(list)
            for b in im.boxes:
                boxes[b.ann_id].append(tuple(b.bbox))
            for cap in im.captions:
                for ph in cap.phrases:
                    gt = boxes.get(ph.ann_id) if ph.ann_id is not None else None
                    if not gt and ph.bbox is not None:
                        gt = [tuple(ph.bbox)]
                    if gt:
                        out[im.image_id].append(Query(ph.text, tuple(gt)))
        return out

    def counts(self, recs, g: "Grounded") -> Dict[str, int]:
        n_phr = sum(len(c.phrases) for im in recs.images for c in im.captions)
        return {"n_phrases": n_phr, "n_phrases_without_box": n_phr - len(g.hits)}
