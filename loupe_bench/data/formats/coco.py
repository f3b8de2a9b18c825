"""COCO instances JSON (``instances_<split>.json``): images, categories and xywh boxes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...errors import DataError
from ...utils.io import read_json
from ..records import BoxAnnotation, DatasetRecords, ImageRecord
from .base import DATASETS, Loader, as_float, as_int, as_str, check_bbox, image_size, require

#: keys of a COCO annotation that are COCO's own; any other string-valued key is kept as an attribute
COCO_ANNOTATION_KEYS = frozenset({"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation",
                                  "keypoints", "num_keypoints"})


def default_image_root(json_path: Path) -> Path:
    """``<root>/annotations/instances_x.json`` -> ``<root>/images`` when it exists, else the JSON's folder."""
    for cand in (json_path.parent.parent / "images", json_path.parent / "images"):
        if cand.is_dir():
            return cand
    return json_path.parent


def parse_instances(loader: Loader, path: Path, image_root: Path, split: Optional[str]) -> DatasetRecords:
    """Read a COCO-style instances file with ``loader``'s bad-sample policy (shared by coco and refer).

    Categories are read first, then images, then annotations (each checked against the images and categories kept
    so far); ``loader.dropped_image_ids`` is left holding the ids of images skipped as bad."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError("expected a COCO object with an 'images' list", file=str(path))
    cats = data.get("categories", [])
    anns = data.get("annotations", [])
    if not isinstance(cats, list) or not isinstance(anns, list):
        raise DataError("'categories' and 'annotations' must be lists", file=str(path))
    out = DatasetRecords(name=loader.name, source=str(path))
    _parse_categories(loader, cats, path, out.categories)
    # images skipped as bad: their annotations go with them silently (the image's error is already reported)
    dropped = loader.dropped_image_ids = set()
    images, order = _parse_images(loader, data["images"], path, image_root, dropped)
    _parse_annotations(loader, anns, path, images, out.categories, dropped)
    out.images.extend(_image_record(iid, images[iid], split) for iid in order)
    return out


def _parse_categories(loader: Loader, cats: List[Any], path: Path, categories: Dict[int, str]) -> None:
    """Fill ``categories`` (id -> name) from the COCO ``categories`` list; a bad entry is reported and skipped."""
    for idx, c in enumerate(cats):

        def parse_category(c=c, rec=f"category #{idx}"):
            cid = as_int(require(c, "id", path, rec), "category id", path, rec)
            categories[cid] = str(require(c, "name", path, f"category {cid}"))

        loader.guard(parse_category)


def _parse_images(loader: Loader, entries: List[Any], path: Path, image_root: Path,
                  dropped: set) -> Tuple[Dict[int, Dict[str, Any]], List[int]]:
    """The COCO ``images`` list as ``({id: fields}, ids in file order)``; the ids of bad images go to ``dropped``.

    With ``loader.verify_images`` each file is decoded and its size must match the recorded one (when given)."""
    images: Dict[int, Dict[str, Any]] = {}
    order: List[int] = []
    for idx, im in enumerate(entries):
        rec = im.get("id", f"#{idx}") if isinstance(im, dict) else f"#{idx}"

        def parse_image(im=im, rec=rec):
            iid = as_int(require(im, "id", path, rec), "image id", path, rec)
            if iid in images:
                raise DataError("duplicate image id", file=str(path), record=f"image {iid}")
            fname = as_str(require(im, "file_name", path, f"image {iid}"), "file_name", path, f"image {iid}")
            w, h = im.get("width"), im.get("height")
            w = None if w is None else as_int(w, "width", path, f"image {iid}")
            h = None if h is None else as_int(h, "height", path, f"image {iid}")
            ipath = image_root / fname
            if loader.verify_images:
                rw, rh = image_size(ipath, record=f"image {iid}")
                if (w is not None and int(w) != rw) or (h is not None and int(h) != rh):
                    raise DataError(
                        f"recorded size {w}x{h} differs from the file's {rw}x{rh}", file=str(path), record=f"image {iid}"
                    )
                w, h = rw, rh
            return iid, {"file_name": fname, "width": w, "height": h, "path": ipath, "boxes": []}

        ok, got = loader.guard(parse_image)
        if ok:
            images[got[0]] = got[1]
            order.append(got[0])
        elif isinstance(im, dict) and isinstance(im.get("id"), int):
            dropped.add(im["id"])
    return images, order


def _parse_annotations(loader: Loader, anns: List[Any], path: Path, images: Dict[int, Dict[str, Any]],
                       categories: Dict[int, str], dropped: set) -> None:
    """Append each COCO annotation as a :class:`BoxAnnotation` to its image's ``boxes``.

    Annotations of a ``dropped`` image are skipped silently; an unknown image or category id, a duplicate
    annotation id, a bad box or an ``iscrowd`` other than 0/1 is reported and skipped. Any string-valued key that
    is not one of :data:`COCO_ANNOTATION_KEYS` is kept as an attribute."""
    seen_anns = set()
    for idx, a in enumerate(anns):
        rec = f"annotation {a.get('id', '#' + str(idx)) if isinstance(a, dict) else '#' + str(idx)}"

        def parse_ann(a=a, rec=rec):
            aid = as_int(require(a, "id", path, rec), "annotation id", path, rec)
            if aid in seen_anns:
                raise DataError("duplicate annotation id", file=str(path), record=rec)
            iid = as_int(require(a, "image_id", path, rec), "image_id", path, rec)
            if iid in dropped:
                return
            if iid not in images:
                raise DataError(f"points at unknown image id {iid}", file=str(path), record=rec)
            cid = as_int(require(a, "category_id", path, rec), "category_id", path, rec)
            if categories and cid not in categories:
                raise DataError(f"unknown category id {cid}", file=str(path), record=rec)
            im = images[iid]
            box = check_bbox(require(a, "bbox", path, rec), im["width"], im["height"], path, rec)
            area = as_float(a.get("area", box[2] * box[3]), "area", path, rec)
            iscrowd = as_int(a.get("iscrowd", 0), "iscrowd", path, rec)
            if iscrowd not in (0, 1):
                raise DataError(f"iscrowd {iscrowd!r} is not 0 or 1", file=str(path), record=rec)
            seen_anns.add(aid)
            attrs = tuple(sorted((str(k), v) for k, v in a.items() if k not in COCO_ANNOTATION_KEYS and isinstance(v, str)))
            im["boxes"].append(
                BoxAnnotation(ann_id=aid, image_id=iid, category_id=cid, bbox=box, area=area, iscrowd=iscrowd,
                              attributes=attrs)
            )

        loader.guard(parse_ann)


def _image_record(iid: int, im: Dict[str, Any], split: Optional[str]) -> ImageRecord:
    """One parsed image (with its boxes) as an :class:`ImageRecord`."""
    return ImageRecord(
        image_id=iid,
        file_name=im["file_name"],
        path=im["path"],
        split=split,
        width=None if im["width"] is None else int(im["width"]),
        height=None if im["height"] is None else int(im["height"]),
        boxes=tuple(im["boxes"]),
    )


@DATASETS.register("coco")
class CocoLoader(Loader):
    """COCO instances JSON (boxes xywh; categories); the split comes from ``instances_<split>.json``.

    Options:
        image_root: folder ``file_name`` is relative to (default: ``../images`` beside ``annotations/`` when it
            exists, else the JSON's folder).
    """

    name = "coco"
    description = "COCO instances JSON (detection boxes, categories; loadable by pycocotools)"

    def _load(self) -> DatasetRecords:
        path = self.path
        if path.is_dir():
            found = sorted(path.glob("instances_*.json")) or sorted((path / "annotations").glob("instances_*.json"))
            if not found:
                raise DataError("no instances_*.json in folder", file=str(path))
            if self.split is not None:
                found = [p for p in found if p.stem == f"instances_{self.split}"] or found[:0]
                if not found:
                    raise DataError(f"no instances_{self.split}.json", file=str(path))
            recs = [self._one(p) for p in found]
            out = recs[0]
            for r in recs[1:]:
                out.images.extend(r.images)
                out.categories.update(r.categories)
            out.source = str(path)
            return out
        return self._one(path)

    def _one(self, path: Path) -> DatasetRecords:
        m = re.fullmatch(r"instances_(.+)", path.stem)
        split = m.group(1) if m else self.split
        root = Path(self.options.get("image_root") or default_image_root(path))
        return parse_instances(self, path, root, split)
