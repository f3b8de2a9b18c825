"""Plain records shared by every loader: images with captions and phrases, boxes, referring expressions,
classification samples, and the container a loader returns.

Boxes are pixel ``(x, y, w, h)`` tuples of floats (COCO convention) everywhere in this module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import DataError

BBox = Tuple[float, float, float, float]


def tokenize(text: str) -> List[str]:
    """Karpathy-style tokens: lower-case alphanumeric words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", text.lower())


@dataclass(frozen=True)
class Phrase:
    """A noun phrase inside a caption.

    Attributes:
        start: character offset of the first character in the caption text.
        end: character offset one past the last character (``text == caption[start:end]``).
        text: the phrase text.
        ann_id: the annotation (object) the phrase refers to, when known.
        bbox: pixel xywh of the referred object, when known.
    """

    start: int
    end: int
    text: str
    ann_id: Optional[int] = None
    bbox: Optional[BBox] = None


@dataclass(frozen=True)
class Caption:
    """One caption of an image.

    Attributes:
        sent_id: sentence id (unique within the data set).
        text: the raw caption.
        tokens: lower-case word tokens (Karpathy style).
        phrases: gold phrase spans (may be empty).
    """

    sent_id: int
    text: str
    tokens: Tuple[str, ...] = ()
    phrases: Tuple[Phrase, ...] = ()


@dataclass(frozen=True)
class BoxAnnotation:
    """One object box (COCO ``annotations`` entry).

    ``attributes``: extra string-valued keys of the annotation beyond COCO's own (the synthetic world records
    ``colour``, ``size``, ``kind`` (``flat`` / ``two-part``) and, for a two-part object, ``colour2``; a null
    ``colour2`` is not a string and so not kept), as sorted ``(key, value)`` pairs; empty for plain COCO.
    """

    ann_id: int
    image_id: int
    category_id: int
    bbox: BBox
    area: float = 0.0
    iscrowd: int = 0
    attributes: Tuple[Tuple[str, str], ...] = ()

    def attribute(self, key: str) -> Optional[str]:
        return dict(self.attributes).get(key)


@dataclass(frozen=True)
class ImageRecord:
    """One image with whatever annotations its format carries.

    Attributes:
        image_id: integer id (COCO ``id`` / Karpathy ``cocoid``).
        file_name: file name relative to ``path``'s image root.
        path: absolute path of the image file.
        split: ``train``, ``val``, ``test``, ``comptest``, ``restval`` … (None when the format has no split).
        width, height: pixel size when the format records it.
        captions: the image's captions.
        boxes: object boxes.
        label: class index (classification formats).
    """

    image_id: int
    file_name: str
    path: Path
    split: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    captions: Tuple[Caption, ...] = ()
    boxes: Tuple[BoxAnnotation, ...] = ()
    label: Optional[int] = None


@dataclass(frozen=True)
class RefRecord:
    """One referring expression group (refer ``refs(<splitBy>).p`` entry)."""

    ref_id: int
    ann_id: int
    image_id: int
    split: str
    sentences: Tuple[str, ...]
    category_id: int
    bbox: Optional[BBox] = None
    file_name: Optional[str] = None
    sent_ids: Tuple[int, ...] = ()
    heads: Tuple[Optional[str], ...] = ()   # per sentence: its head noun phrase, when the data records it


@dataclass(frozen=True)
class ClassificationSample:
    """One image of an ImageFolder-style classification set."""

    path: Path
    label: int
    image_id: Optional[int] = None
    split: Optional[str] = None


@dataclass(frozen=True)
class MatchGroup:
    """One item of a matching benchmark: images and texts whose correct pairing is known.

    Two conventions, told apart by the number of images:

    * one image, ``K >= 2`` texts (caption selection: SugarCrepe, ARO): ``texts[0]`` is the true caption, the rest
      are its negatives;
    * ``n`` images and ``n`` texts (two-by-two matching: Winoground, MMVP-VLM): ``texts[i]`` describes
      ``images[i]``.

    Attributes:
        group_id: the item's id in its file.
        images: image files.
        texts: the texts (see above).
        kind: subset / pattern / relation the item belongs to (SugarCrepe subset, ARO relation, MMVP pattern).
        crops: per image, a box ``(x, y, w, h)`` to crop to before encoding (ARO's VG items), or ``None``.
        split: split name, when the format has splits.
        tags: further per-item labels (e.g. Winoground's ``tag`` / ``secondary_tag``).
    """

    group_id: str
    images: Tuple[Path, ...]
    texts: Tuple[str, ...]
    kind: str = ""
    crops: Tuple[Optional[BBox], ...] = ()
    split: Optional[str] = None
    tags: Tuple[Tuple[str, str], ...] = ()


@dataclass
class DatasetRecords:
    """What a loader returns. Only the fields its format carries are filled.

    Attributes:
        name: the loader / data set name.
        source: the file or folder that was read.
        images: image records (caption, detection and VOC formats).
        refs: referring expressions (refer format).
        samples: classification samples (ImageFolder).
        categories: category id -> name (detection / refer formats).
        classnames: class names by label index (classification formats).
        groups: matching items (caption-selection and two-by-two formats), see :class:`MatchGroup`.
        skipped: records skipped with ``on_bad_sample="skip"``, one :class:`DataError` each.
        notes: counts a loader reports about records it kept but could not fully annotate (e.g. the
            ``flickr30k-entities`` loader's phrases without a box); empty for most formats.
    """

    name: str
    source: str
    images: List[ImageRecord] = field(default_factory=list)
    refs: List[RefRecord] = field(default_factory=list)
    samples: List[ClassificationSample] = field(default_factory=list)
    categories: Dict[int, str] = field(default_factory=dict)
    classnames: List[str] = field(default_factory=list)
    groups: List[MatchGroup] = field(default_factory=list)
    skipped: List[DataError] = field(default_factory=list)
    notes: Dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> "DatasetRecords":
        """A copy holding only the records of split ``name``."""
        return DatasetRecords(
            name=self.name,
            source=self.source,
            images=[r for r in self.images if r.split == name],
            refs=[r for r in self.refs if r.split == name],
            samples=[s for s in self.samples if s.split == name],
            categories=dict(self.categories),
            classnames=list(self.classnames),
            groups=[g for g in self.groups if g.split == name],
            skipped=list(self.skipped),
            notes=dict(self.notes),
        )

    @property
    def num_captions(self) -> int:
        return sum(len(r.captions) for r in self.images)
