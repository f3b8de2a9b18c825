"""PASCAL VOC XML: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/<split>.txt``.

VOC boxes are 1-based inclusive pixel corners; they map to COCO xywh as ``x = xmin - 1``, ``y = ymin - 1``,
``w = xmax - xmin + 1``, ``h = ymax - ymin + 1``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ...errors import DataError
from ..records import BoxAnnotation, DatasetRecords, ImageRecord
from .base import DATASETS, Loader, check_bbox, image_size, read_xml, user_text

VOC_CLASSES: Tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def voc_to_xywh(xmin: float, ymin: float, xmax: float, ymax: float) -> Tuple[float, float, float, float]:
    """1-based inclusive corners -> 0-based xywh: ``(xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1)``."""
    return (xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0)


def xywh_to_voc(x: float, y: float, w: float, h: float) -> Tuple[float, float, float, float]:
    """Inverse of :func:`voc_to_xywh`."""
    return (x + 1.0, y + 1.0, x + w, y + h)


def _num(el: Optional[ET.Element], tag: str, file: Path, rec: str) -> float:
    node = None if el is None else el.find(tag)
    try:
        return float(node.text)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"missing or non-numeric <{tag}>", file=str(file), record=rec) from None


@DATASETS.register("voc")
class VocLoader(Loader):
    """PASCAL VOC XML folders (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt).

    Options:
        classes: class names in category order (category id = index + 1). Default: ``classnames.txt`` in the
            root when present, else the 20 VOC classes.
    Image ids are the integer file stems when numeric, else 1-based positions in sorted order.
    """

    name = "voc"
    description = "PASCAL VOC XML (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt)"

    def _classes(self) -> List[str]:
        opt = self.options.get("classes")
        if opt:
            return list(opt)
        txt = self.path / "classnames.txt"
        if txt.is_file():
            return [ln.strip() for ln in user_text(txt).splitlines() if ln.strip()]
        return list(VOC_CLASSES)

    def _split_ids(self) -> Dict[str, str]:
        out: Dict[str, str] = {}
        sets = self.path / "ImageSets" / "Main"
        for f in sorted(sets.glob("*.txt")) if sets.is_dir() else []:
            if "_" in f.stem:  # per-class lists such as cat_train.txt
                continue
            for ln in user_text(f).splitlines():
                if ln.strip():
                    out.setdefault(ln.split()[0], f.stem)
        return out

    def _load(self) -> DatasetRecords:
        ann_dir = self.path / "Annotations"
        if not ann_dir.is_dir():
            raise DataError("no Annotations/ folder (PASCAL VOC layout)", file=str(self.path))
        classes = self._classes()
        cat_ids = {c: i + 1 for i, c in enumerate(classes)}
        splits = self._split_ids()
        if self.split is not None:  # membership of the requested set (sets overlap: train, val, trainval)
            wanted = self.path / "ImageSets" / "Main" / f"{self.split}.txt"
            if not wanted.is_file():
                raise DataError(f"no image set for split {self.split!r}", file=str(wanted))
            lines = user_text(wanted).splitlines()
            splits = {ln.split()[0]: self.split for ln in lines if ln.strip()}
        files = sorted(ann_dir.glob("*.xml"))
        out = DatasetRecords(name=self.name, source=str(self.path), categories={i: c for c, i in cat_ids.items()})
        ann_id = 0
        for pos, xml in enumerate(files, start=1):
            stem = xml.stem
            split = splits.get(stem)
            if self.split is not None and split != self.split:
                continue
            image_id = int(stem) if stem.isdigit() else pos
            ok, got = self.guard(lambda: self._one(xml, image_id, split, cat_ids, ann_id))
            if ok:
                out.images.append(got)
                ann_id += len(got.boxes)
        return out

    def _one(self, xml: Path, image_id: int, split: Optional[str], cat_ids: Dict[str, int], ann_base: int) -> ImageRecord:
        root = read_xml(xml)
        fname = (root.findtext("filename") or f"{xml.stem}.jpg").strip()
        ipath = self.path / "JPEGImages" / fname
        size = root.find("size")
        width = int(_num(size, "width", xml, xml.stem)) if size is not None else None
        height = int(_num(size, "height", xml, xml.stem)) if size is not None else None
        if self.verify_images:
            rw, rh = image_size(ipath, record=xml.stem)
            if (width is not None and width != rw) or (height is not None and height != rh):
                raise DataError(f"recorded size {width}x{height} differs from the file's {rw}x{rh}", file=str(xml))
            width, height = rw, rh
        boxes = []
        for k, obj in enumerate(root.findall("object")):
            rec = f"{xml.stem} object {k}"
            name = (obj.findtext("name") or "").strip()
            if name not in cat_ids:
                raise DataError(f"unknown class {name!r}", file=str(xml), record=rec)
            bb = obj.find("bndbox")
            corners = [_num(bb, t, xml, rec) for t in ("xmin", "ymin", "xmax", "ymax")]
            box = check_bbox(voc_to_xywh(*corners), width, height, xml, rec)
            boxes.append(
                BoxAnnotation(
                    ann_id=ann_base + k + 1,
                    image_id=image_id,
                    category_id=cat_ids[name],
                    bbox=box,
                    area=box[2] * box[3],
                    iscrowd=int(obj.findtext("difficult") or 0),
                )
            )
        return ImageRecord(
            image_id=image_id, file_name=fname, path=ipath, split=split, width=width, height=height, boxes=tuple(boxes)
        )
