"""Region classification: every ground-truth box classified zero-shot against class prompts — the dense-alignment
protocol of CLIPSelf (Wu et al. 2024) and FG-CLIP (Xie et al. 2025) — top-1 / top-5 accuracy over boxes.

Protocol, per split:

1. **Boxes.** Every annotated box of the split, except (each counted in ``extra.excluded``): crowd boxes
   (``iscrowd: 1``); boxes with a side below ``min_box_side`` pixels; boxes failing ``where`` (attribute → value
   equality, ``category`` naming the category); boxes lacking an attribute their label needs; and, in the
   descriptions variant, boxes without a description entry or with fewer than ``n_negatives`` negatives. A pixel
   box ``(x, y, w, h)`` of a ``W × H`` image goes to the scorer as ``(x/W, y/H, (x+w)/W, (y+h)/H)`` clamped to
   ``[0, 1]``; images are resized whole to the model's square input (``image.crop: none``), so the normalised box
   covers the same content.
2. **Classes.** A box's label is ``options.label`` formatted with its category name (``{category}``) and its
   annotation attributes (``{colour}``, ``{size}``, ...): ``"{category}"`` by default, ``"{colour} {category}"``
   for the synthetic world's colour + shape classes. The vocabulary is ``options.classnames`` when given (a box
   whose label is not in it is an error), else the data set's category names in id order when the label is
   ``"{category}"``, else the sorted distinct labels of the split's kept boxes.
3. **Scores.** With templates ``t = 1..T`` and the spec's region scorer ``s`` (``options.region_scoring``,
   :mod:`.region_scoring`: ``shared`` or ``native``), box ``b`` scores class ``c`` by the template mean
   ``S(b, c) = (1/T) Σ_t s(b, template_t(c))`` (the detection task's ensemble: for ``shared`` the mean of the
   cosines, not the cosine of the mean prompt embedding).
4. **Top-k.** The rank of the true class ``y`` is ``#{c : S(b,c) > S(b,y)} + #{c < y : S(b,c) = S(b,y)}`` (ties:
   the lower class index first, as in classification); ``top{k}`` is the mean over boxes of ``1[rank < k]``, with
   its 95 % percentile bootstrap over boxes.
5. **Breakdowns** ``top{k}:<tag>`` (sorted after their base metric in reports). Size: the annotation's ``area``
   (COCO: the segment area, what COCOeval bins by; ``size_area: box`` takes ``w·h``; an area of 0 falls back to
   ``w·h``) against ``size_thresholds = [t_s, t_m]``: ``small`` below ``t_s``, ``medium`` from ``t_s`` to below
   ``t_m``, ``large`` from ``t_m`` (default COCO's 32² and 96² px²; COCOeval's ranges are closed at both ends, so
   an area of exactly 32² is small *and* medium there, here each box has one bin). ``size_units: image-fraction``
   compares ``area / (W·H)`` instead (for small images: the synthetic world is 64 px). Thing / stuff: when the
   annotation file's categories record ``isthing`` (COCO-panoptic categories, e.g. panopticapi's detection-format
   conversion of ``panoptic_val2017.json``, CLIPSelf's thing/stuff split), read again from that file
   (``thing_stuff: false`` skips the read).

**Descriptions variant** (``options.descriptions``; FG-OVD, Bianchi et al. 2024, as FG-CLIP evaluates it). The
file is in FG-OVD's layout: LVIS-like COCO JSON whose ``categories`` are descriptions ``{"id", "name"}`` and whose
``annotations`` carry ``id``, ``category_id`` (the box's true description) and ``neg_category_ids`` (its hard
negatives, in order; ``image_id`` when present must match the box's). FG-OVD's benchmark files are at once the data
set (``format: coco``; their ``file_name`` is ``val2017/…`` or ``train2017/…`` under the COCO root) and the
descriptions file — ``1_attributes.json`` (hard), ``2_attributes.json`` (medium), ``3_attributes.json`` (easy),
``shuffle_negatives.json`` (trivial), ``color``/``material``/``pattern``/``transparency.json`` — so with
``path: "fg-ovd/{split}.json"`` and ``descriptions: "fg-ovd/{split}.json"`` every difficulty level is one split,
hence one result. Boxes are joined to entries by annotation id. A box's candidates are its positive and its first
``n_negatives`` negatives (default: all; a box with fewer is excluded, as FG-OVD's ranking evaluation does), scored
as in 3 with ``description_templates`` (default ``"{}"``: the description itself). Rank
``= #{negatives n : S(b, n) ≥ S(b, pos)}`` (FG-OVD's rule: ties count against the positive); ``top{k} =
mean 1[rank < k]``.

**LVIS** (``lvis_v1_val.json``) is COCO-like, but its images carry ``coco_url`` and no ``file_name``, which the
``coco`` loader requires: add ``file_name`` = the URL's last two parts (``val2017/000000xxxxxx.jpg``; LVIS val
images come from COCO train2017 and val2017) and point ``image_root`` at the COCO root. Labels are used verbatim in
the prompts (LVIS names carry underscores: ``aerosol_can``).
"""
from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.formats.base import as_int
from ..errors import DataError, SpecError
from ..utils.io import read_json
from . import TASK_TYPES
from .base import BoxTaskAdapter
from .common import (
    SplitOutput, build_prompts, encode_images, encode_texts, load_records, mean_metric, progress_bar,
    select_features, template_mean, to_device,
)
from .metric_catalog import TOP_K
from .metrics.classification import true_class_ranks
from .region_scoring import REGION_SCORERS, check_region_scoring


SIZE_TAGS = ("small", "medium", "large")
GROUP_TAGS = ("thing", "stuff")
#: ``options.size_units``: the box area compared with the thresholds, from (area px², image area px²)
SIZE_UNITS = {"pixels": lambda area, image_area: area, "image-fraction": lambda area, image_area: area / image_area}
#: ``options.size_area``: which area of a box is binned (``annotation``: COCO's ``area``, ``w·h`` when it is 0)
SIZE_AREAS = {"annotation": lambda box: float(box.area) if box.area > 0 else box.bbox[2] * box.bbox[3],
              "box": lambda box: box.bbox[2] * box.bbox[3]}
#: the field of ``options.label`` and ``options.where`` that names the box's category
CATEGORY = "category"
#: ``scheme:`` prefix of a URL or ``pipe:`` command: never a data path
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


# ------------------------------------------------------------------------------------------------- labels
def label_fields(fmt: str) -> List[str]:
    """The field names of a label format such as ``"{colour} {category}"``; only plain ``{name}`` fields are
    allowed (no attribute or index access, conversion or format spec), and at least one."""
    try:
        parts = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise ValueError(f"label {fmt!r} is not a format string ({exc})") from None
    names = []
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ValueError(f"label {fmt!r}: field {{{name}}} must be a plain name such as {{category}} or {{colour}}")
        names.append(name)
    if not names:
        raise ValueError(f"label {fmt!r} names no field (use e.g. '{{category}}' or '{{colour}} {{category}}')")
    return names


def box_value(box, key: str, categories: Dict[int, str]) -> Optional[str]:
    """The value of ``key`` for a box: its category name for :data:`CATEGORY`, else the annotation attribute."""
    return categories.get(box.category_id) if key == CATEGORY else box.attribute(key)


def box_label(box, fmt: str, fields: Sequence[str], categories: Dict[int, str]) -> Optional[str]:
    """``fmt`` formatted with the box's values; ``None`` when the box lacks one of ``fields``."""
    values = {k: box_value(box, k, categories) for k in fields}
    if any(v is None for v in values.values()):
        return None
    return fmt.format(**values)


def size_tag(area: float, image_area: float, thresholds: Sequence[float], units: str) -> str:
    """``small`` / ``medium`` / ``large``: ``a < t_s``, ``t_s ≤ a < t_m``, ``a ≥ t_m`` with ``a`` the area in pixels²
    (``units: pixels``) or as a fraction of the image's area (``image-fraction``)."""
    a = SIZE_UNITS[units](area, image_area)
    return SIZE_TAGS[int(a >= thresholds[0]) + int(a >= thresholds[1])]


def normalised_box(bbox: Sequence[float], width: float, height: float) -> Tuple[float, float, float, float]:
    """Pixel ``(x, y, w, h)`` -> normalised ``(x0, y0, x1, y1)`` clamped to ``[0, 1]``."""
    x, y, w, h = (float(v) for v in bbox)
    return tuple(min(1.0, max(0.0, v)) for v in (x / width, y / height, (x + w) / width, (y + h) / height))


_FLAG_CACHE: Dict[Tuple[str, int, int], Dict[int, bool]] = {}


def thing_flags(source: str) -> Dict[int, bool]:
    """Category id -> ``isthing`` from the categories of the annotation file ``source`` (bounded read); empty when
    no category records it or ``source`` is not a file (a folder of instances files). Kept per (file, size, mtime)."""
    path = Path(source)
    if not path.is_file():
        return {}
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FLAG_CACHE:
        data = read_json(path)
        cats = data.get("categories") if isinstance(data, dict) else None
        flags: Dict[int, bool] = {}
        for c in cats if isinstance(cats, list) else []:
            if not isinstance(c, dict) or "isthing" not in c:
                continue
            cid = as_int(c.get("id"), "category id", path, "category")
            if c["isthing"] not in (0, 1):
                raise DataError(f"isthing {c['isthing']!r} is not 0 or 1", file=str(path), record=f"category {cid}")
            flags[cid] = bool(c["isthing"])
        _FLAG_CACHE.clear()
        _FLAG_CACHE[key] = flags
    return _FLAG_CACHE[key]


# ------------------------------------------------------------------------------------------------- descriptions
class Descriptions(NamedTuple):
    """A descriptions file (``source``): description id -> text, and annotation id -> (positive id, negative ids,
    image id or ``None``)."""

    names: Dict[int, str]
    boxes: Dict[int, Tuple[int, Tuple[int, ...], Optional[int]]]
    source: str = ""


def load_descriptions(path: Path) -> Descriptions:
    """Read an FG-OVD-layout file (see the module docstring); every id must be a known description."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DataError("expected an FG-OVD object with 'categories' and 'annotations' lists", file=str(path))
    names: Dict[int, str] = {}
    for i, c in enumerate(data["categories"]):
        rec = f"category #{i}"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise DataError("a description needs an 'id' and a non-empty 'name'", file=str(path), record=rec)
        names[as_int(c.get("id"), "description id", path, rec)] = c["name"]
    boxes: Dict[int, Tuple[int, Tuple[int, ...], Optional[int]]] = {}
    for i, a in enumerate(data["annotations"]):
        rec = f"annotation {a.get('id', '#' + str(i)) if isinstance(a, dict) else '#' + str(i)}"
        if not isinstance(a, dict) or not isinstance(a.get("neg_category_ids"), list):
            raise DataError("an annotation needs 'id', 'category_id' and a 'neg_category_ids' list", file=str(path),
                            record=rec)
        pos = as_int(a.get("category_id"), "category_id", path, rec)
        negs = tuple(as_int(n, "negative id", path, rec) for n in a["neg_category_ids"])
        unknown = [n for n in (pos, *negs) if n not in names]
        if unknown:
            raise DataError(f"unknown description id {unknown[0]}", file=str(path), record=rec)
        if pos in negs:
            raise DataError(f"the positive {pos} is among its own negatives", file=str(path), record=rec)
        image_id = a.get("image_id")
        boxes[as_int(a.get("id"), "annotation id", path, rec)] = (
            pos, negs, None if image_id is None else as_int(image_id, "image_id", path, rec))
    return Descriptions(names, boxes, str(path))


# ------------------------------------------------------------------------------------------------- items
class RegionItem(NamedTuple):
    """One box to classify.

    Attributes:
        image: index of its image among the encoded images.
        box: normalised ``(x0, y0, x1, y1)``.
        target: the true class index (category mode) or the positive's text index (descriptions).
        negatives: descriptions mode: the text indices of its negatives (empty in category mode).
        tags: its breakdown tags (size bin, thing/stuff).
    """

    image: int
    box: Tuple[float, float, float, float]
    target: int
    negatives: Tuple[int, ...]
    tags: Tuple[str, ...]


class Targets(NamedTuple):
    """The boxes of a split, prepared: the texts to prompt (each with every template), the items, the exclusion
    counts and whether every image is scored against all texts (category mode) or only its boxes' (descriptions)."""

    texts: List[str]
    templates: List[str]
    items: List[RegionItem]
    excluded: Dict[str, int]
    all_texts: bool


@TASK_TYPES.register("region-classification")
class RegionClassificationTask(BoxTaskAdapter):
    """Zero-shot classification of ground-truth boxes (CLIPSelf / FG-CLIP; FG-OVD with ``descriptions``)."""

    @dataclass
    class Options:
        templates: List[str] = field(default_factory=lambda: ["a photo of a {}."])
        classnames: Optional[List[str]] = None  # the vocabulary (default: categories, or the split's labels)
        label: str = "{category}"  # a box's class: formatted from its category name and attributes
        where: Dict[str, str] = field(default_factory=dict)  # keep only boxes with these attribute values
        ks: Tuple[int, ...] = (1, 5)
        region_scoring: str = "shared"  # shared (one rule for every model) | native (the model's own scorer)
        size_thresholds: Tuple[float, ...] = (1024.0, 9216.0)  # small < t_s <= medium < t_m <= large
        size_units: str = "pixels"  # pixels (area in px²) | image-fraction (area / image area)
        size_area: str = "annotation"  # annotation (COCO's area field) | box (w * h)
        min_box_side: float = 0.0  # boxes with a side below this many pixels are excluded (and counted)
        thing_stuff: bool = True  # thing/stuff breakdown when the categories record isthing
        descriptions: Optional[str] = None  # FG-OVD-layout file under --data-root ({split} substituted)
        description_templates: List[str] = field(default_factory=lambda: ["{}"])
        n_negatives: Optional[int] = None  # descriptions: the first N negatives per box (default: all)

        def __post_init__(self):
            self.ks = tuple(int(k) for k in self.ks)
            self.size_thresholds = tuple(float(t) for t in self.size_thresholds)
            check_region_scoring(self.region_scoring)
            label_fields(self.label)
            self.where = {str(k): str(v) for k, v in dict(self.where).items()}
            for name, allowed in (("size_units", SIZE_UNITS), ("size_area", SIZE_AREAS)):
                if getattr(self, name) not in allowed:
                    raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
            t = self.size_thresholds
            if len(t) != 2 or not 0 < t[0] < t[1]:
                raise ValueError(f"size_thresholds must be two increasing positive numbers, got {list(t)!r}")
            if not self.templates or not self.description_templates:
                raise ValueError("templates and description_templates must be non-empty lists")
            for tmpl in (*self.templates, *self.description_templates):
                if "{}" not in tmpl:
                    raise ValueError(f"prompt template {tmpl!r} has no '{{}}' slot for the class name")
            if self.min_box_side < 0 or (self.n_negatives is not None and int(self.n_negatives) < 1):
                raise ValueError("min_box_side must be >= 0 and n_negatives >= 1")
            if self.classnames is not None and len(set(self.classnames)) != len(self.classnames):
                raise ValueError("classnames must be distinct")
            self._check_descriptions()

        def _check_descriptions(self) -> None:
            if self.descriptions is None:
                if self.n_negatives is not None:
                    raise ValueError("n_negatives needs descriptions (the FG-OVD variant)")
                return
            if self.classnames is not None or self.label != "{category}":
                raise ValueError("descriptions (the FG-OVD variant) take neither classnames nor label")
            p = PurePosixPath(self.descriptions)
            if _SCHEME.match(self.descriptions) or p.is_absolute() or ".." in p.parts:
                raise ValueError(f"descriptions {self.descriptions!r} must be a relative path under --data-root")

    @classmethod
    def known_metrics(cls, options) -> List[str]:
        bases = [f"top{int(k)}" for k in options.get("ks", (1, 5))]
        return bases + [f"{b}:{t}" for b in bases for t in (*SIZE_TAGS, *GROUP_TAGS)]

    # -- boxes ------------------------------------------------------------------------------------------------------
    def _excluded(self, box, categories: Dict[int, str]) -> Optional[str]:
        """Why a box is left out before labelling (``None``: kept)."""
        if box.iscrowd:
            return "crowd"
        if min(box.bbox[2], box.bbox[3]) < self.opts.min_box_side:
            return "below_min_box_side"
        if any(box_value(box, k, categories) != v for k, v in self.opts.where.items()):
            return "where"
        return None

    def _tags(self, box, im, flags: Dict[int, bool]) -> Tuple[str, ...]:
        """The box's size bin and, when recorded for its category, thing / stuff."""
        area = SIZE_AREAS[self.opts.size_area](box)
        tags = [size_tag(area, float(im.width * im.height), self.opts.size_thresholds, self.opts.size_units)]
        if box.category_id in flags:
            tags.append(GROUP_TAGS[0] if flags[box.category_id] else GROUP_TAGS[1])
        return tuple(tags)

    def kept_boxes(self, recs, images, excluded: Counter):
        """``(image index, image, box, tags)`` of every box that passes :meth:`_excluded`, counting the others."""
        flags = thing_flags(recs.source) if self.opts.thing_stuff else {}
        out = []
        for i, im in enumerate(images):
            for box in im.boxes:
                why = self._excluded(box, recs.categories)
                if why is not None:
                    excluded[why] += 1
                    continue
                out.append((i, im, box, self._tags(box, im, flags)))
        return out

    def category_targets(self, recs, images) -> Targets:
        """Category mode: labels from ``options.label``, vocabulary from ``classnames`` / categories / labels."""
        fields = label_fields(self.opts.label)
        excluded: Counter = Counter()
        labelled = []
        for i, im, box, tags in self.kept_boxes(recs, images, excluded):
            lab = box_label(box, self.opts.label, fields, recs.categories)
            if lab is None:
                excluded["missing_attribute"] += 1
                continue
            labelled.append((i, im, box, tags, lab))
        if self.opts.classnames is not None:
            vocab = list(self.opts.classnames)
        elif self.opts.label == "{" + CATEGORY + "}":
            vocab = list(dict.fromkeys(recs.categories[c] for c in sorted(recs.categories)))
        else:
            vocab = sorted({x[4] for x in labelled})
        index = {name: c for c, name in enumerate(vocab)}
        items = []
        for i, im, box, tags, lab in labelled:
            if lab not in index:
                raise DataError(f"box label {lab!r} is not among the {len(vocab)} class names", file=recs.source,
                                record=f"annotation {box.ann_id}")
            items.append(RegionItem(i, normalised_box(box.bbox, im.width, im.height), index[lab], (), tags))
        return Targets(vocab, list(self.opts.templates), items, dict(excluded), True)

    def description_targets(self, recs, images, desc: Descriptions) -> Targets:
        """Descriptions mode: per box its positive and first ``n_negatives`` negatives (FG-OVD)."""
        excluded: Counter = Counter()
        text_index: Dict[int, int] = {}
        items = []
        for i, im, box, tags in self.kept_boxes(recs, images, excluded):
            entry = desc.boxes.get(box.ann_id)
            if entry is None:
                excluded["no_description"] += 1
                continue
            pos, negs, image_id = entry
            if image_id is not None and image_id != im.image_id:
                raise DataError(f"image_id {image_id} differs from the data set's image {im.image_id}",
                                file=desc.source, record=f"annotation {box.ann_id}")
            n = self.opts.n_negatives
            if len(negs) < (n or 1):
                excluded["too_few_negatives"] += 1
                continue
            ids = [text_index.setdefault(d, len(text_index)) for d in (pos, *(negs if n is None else negs[:n]))]
            items.append(RegionItem(i, normalised_box(box.bbox, im.width, im.height), ids[0], tuple(ids[1:]), tags))
        texts = [desc.names[d] for d in text_index]
        return Targets(texts, list(self.opts.description_templates), items, dict(excluded), False)

    def targets(self, recs, images, data_root: Optional[Path], split: str) -> Targets:
        if self.opts.descriptions is None:
            return self.category_targets(recs, images)
        path = self.spec.resolve_path(data_root, self.opts.descriptions, split)
        if not path.exists():
            raise self.spec.missing_data(path, data_root, "descriptions file not found")
        return self.description_targets(recs, images, load_descriptions(path))

    # -- run --------------------------------------------------------------------------------------------------------
    def run(self, model, data_root: Optional[Path], split: str, seed: int = 0, device: str = "cpu") -> SplitOutput:
        recs = load_records(self.spec, data_root, split)
        images = [im for im in recs.images if im.boxes]
        for im in images:
            if not (im.width and im.height):
                raise DataError("image size unknown (the region tasks need width and height)", file=recs.source,
                                record=f"image {im.image_id}")
        tg = self.targets(recs, images, data_root, split)
        if not tg.items:
            raise DataError(f"no boxes to classify in split {split!r} (excluded: {tg.excluded or 'none'})",
                            file=recs.source)
        used = sorted({it.image for it in tg.items})
        model.eval()
        img = encode_images(model, [images[i].path for i in used], self.spec, device, desc=f"{split} images")
        txt = encode_texts(model, build_prompts(tg.texts, tg.templates), self.spec, device, desc="prompts")
        ranks, preds = region_ranks(model, img, txt, used, tg, REGION_SCORERS.get(self.opts.region_scoring), device,
                                    max(1, self.spec.batch_size) if tg.all_texts else 1, split)
        return self.output(split, tg, ranks, preds, n_images=len(used))

    def output(self, split: str, tg: Targets, ranks: np.ndarray, preds: Optional[List[int]], **counts) -> SplitOutput:
        """``top{k}`` and its breakdowns over boxes; counts, exclusions and the protocol in ``extra``."""
        res = SplitOutput(split)
        tags = [it.tags for it in tg.items]
        present = sorted({t for ts in tags for t in ts}, key=lambda t: (SIZE_TAGS + GROUP_TAGS).index(t))
        for k in self.opts.ks:
            hits = (ranks < k).astype(np.float64)
            res.metrics[f"top{k}"] = mean_metric(hits, self.spec)
            res.per_item[f"top{k}"] = hits.astype(int).tolist()
            for tag in present:
                sel = np.asarray([tag in ts for ts in tags])
                res.metrics[f"top{k}:{tag}"] = mean_metric(hits[sel], self.spec)
        for name in self.spec.metrics:
            if name not in res.metrics:
                res.unavailable[name] = "no box of this split falls in that group (thing/stuff needs isthing)"
        res.extra.update(
            n_boxes=len(tg.items), n_texts=len(tg.texts), n_templates=len(tg.templates), excluded=tg.excluded,
            region_scoring=self.opts.region_scoring,
            breakdown_counts={t: sum(t in ts for ts in tags) for t in present},
            size_rule=f"{self.opts.size_area} area, {self.opts.size_units}: small < {self.opts.size_thresholds[0]:g} "
                      f"<= medium < {self.opts.size_thresholds[1]:g} <= large",
            **counts,
        )
        if tg.all_texts:
            res.extra.update(mode="categories", label=self.opts.label, n_classes=len(tg.texts),
                             tie_rule="stable: lower class index wins", predictions=preds)
        else:
            res.extra.update(mode="descriptions", n_negatives=self.opts.n_negatives,
                             tie_rule="a negative scoring equal to the positive ranks above it (FG-OVD)")
        return res


def region_ranks(model, img, txt, used: Sequence[int], tg: Targets, score, device, chunk: int, split: str
                 ) -> Tuple[np.ndarray, Optional[List[int]]]:
    """Rank of each item's target among its candidates (module docstring: 4, and the descriptions variant), in item
    order, and in category mode each item's predicted class (the first maximum). ``img`` holds the images ``used``
    in order, ``txt`` the class-major prompts of ``tg.texts``; ``chunk`` images are scored together, against every
    text (category mode) or the texts of their boxes only (descriptions)."""
    row = {image: r for r, image in enumerate(used)}
    by_image: Dict[int, List[int]] = defaultdict(list)
    for n, it in enumerate(tg.items):
        by_image[it.image].append(n)
    n_t = len(tg.templates)
    every = to_device(txt, device) if tg.all_texts else None
    ranks = np.zeros(len(tg.items), dtype=np.int64)
    preds = np.zeros(len(tg.items), dtype=np.int64) if tg.all_texts else None
    with progress_bar(f"classify regions {split}", len(used)) as advance, torch.no_grad():
        for s in range(0, len(used), chunk):
            part = list(used[s : s + chunk])
            cols = list(range(len(tg.texts))) if tg.all_texts else sorted(
                {c for i in part for n in by_image[i] for c in (tg.items[n].target, *tg.items[n].negatives)})
            t = every if every is not None else to_device(
                select_features(txt, [c * n_t + j for c in cols for j in range(n_t)]), device)
            feats = to_device(select_features(img, [row[i] for i in part]), device)
            boxes = [torch.tensor([tg.items[n].box for n in by_image[i]], dtype=torch.float32, device=device)
                     for i in part]
            for i, sc in zip(part, score(model, feats, boxes, t)):
                _rank_image(template_mean(sc.float().cpu(), len(cols), n_t), cols, by_image[i], tg, ranks, preds)
            advance(len(part))
    return ranks, None if preds is None else preds.tolist()


def _rank_image(scores: torch.Tensor, cols: List[int], items: List[int], tg: Targets, ranks: np.ndarray,
                preds: Optional[np.ndarray]) -> None:
    """Fill ``ranks`` (and ``preds``) for the items of one image from its ``[K, len(cols)]`` template-mean scores."""
    if tg.all_texts:  # cols are every class, in order
        labels = [tg.items[n].target for n in items]
        ranks[items] = true_class_ranks(scores, labels)
        preds[items] = scores.argmax(1).numpy()
        return
    pos_of = {c: j for j, c in enumerate(cols)}
    for r, n in enumerate(items):
        it = tg.items[n]
        pos = scores[r, pos_of[it.target]]
        neg = scores[r, [pos_of[c] for c in it.negatives]]
        ranks[n] = int((neg >= pos).sum())
