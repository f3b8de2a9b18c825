"""ARO's Visual Genome Relation and Attribution sets (Yuksekgonul et al., 2023;
``mertyg/vision-language-models-are-bows``, ``dataset_zoo/aro_datasets.py``): caption selection on a cropped image
region.

Layout read (the release: ``visual_genome_relation.json`` / ``visual_genome_attribution.json`` beside an ``images/``
folder, the GQA/VG subset of ``vgr_vga_images.zip``): a JSON list of test cases

    {"image_path": "2315375.jpg", "bbox_x": 0, "bbox_y": 12, "bbox_w": 500, "bbox_h": 320,
     "true_caption": "the man is on the horse", "false_caption": "the horse is on the man",
     "relation_name": "on"}                                     # VG-Relation
     ... "attributes": ["white", "black"]}                      # VG-Attribution (instead of relation_name)

with ``image_path`` relative to the image folder (loader option ``image_root``, default ``images/`` beside the JSON
when it exists). Each test case becomes one :class:`~loupe_bench.data.records.MatchGroup` with one image, its box
as the crop (``crops``), texts ``(true_caption, false_caption)`` (the true caption first) and ``kind`` the relation
name, or the attribute pair joined with ``_`` (ARO's ``f"{a}_{b}"``). Its ``group_id`` is the list position (the
release has no ids). The files have no splits: every case gets the split asked for.

The crop is ARO's: ``PIL.Image.crop((x, y, x + w, y + h))`` of the RGB image, so a box reaching past the border is
kept and the part outside is black, as in ARO. Boxes must be finite with positive size; with image verification
(``data check``) a box that does not overlap its image at all is refused.

COCO-Order and Flickr30K-Order are not read: ARO makes their negatives at run time with spaCy perturbations of the
Karpathy captions; no file of test cases is released.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

from ...errors import DataError
from ...utils.io import read_json
from ..records import BBox, DatasetRecords, MatchGroup
from .base import DATASETS, Loader, as_str, check_bbox, check_caption, require
from .sugarcrepe import image_under_root

BOX_FIELDS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")


def aro_kind(entry: dict, file: Path, record: str) -> str:
    """The test case's kind: ``relation_name`` (VG-Relation), else the ``attributes`` pair joined with ``_``."""
    if "relation_name" in entry:
        return as_str(entry["relation_name"], "relation_name", file, record)
    attrs = entry.get("attributes")
    if attrs is None:
        raise DataError("missing field 'relation_name' (VG-Relation) or 'attributes' (VG-Attribution)",
                        file=str(file), record=record)
    if not isinstance(attrs, list) or len(attrs) != 2:
        raise DataError(f"attributes {attrs!r} is not a list of two strings", file=str(file), record=record)
    return "_".join(as_str(a, "attribute", file, record) for a in attrs)


def aro_box(entry: dict, file: Path, record: str, size: Optional[Tuple[int, int]]) -> BBox:
    """The crop box ``(x, y, w, h)``: finite, positive size; overlapping the image when its ``size`` is known."""
    box = check_bbox([require(entry, k, file, record) for k in BOX_FIELDS], None, None, file, record)
    if size is not None:
        x, y, w, h = box
        if x >= size[0] or y >= size[1] or x + w <= 0 or y + h <= 0:
            raise DataError(f"box {list(box)} does not overlap the {size[0]}x{size[1]} image", file=str(file),
                            record=record)
    return box


@DATASETS.register("aro")
class AroLoader(Loader):
    """ARO VG-Relation / VG-Attribution JSON list (see the module docstring).

    Options:
        image_root: the folder ``image_path`` is relative to (default: ``images/`` beside the JSON when it exists,
            else the JSON's folder).
    """

    name = "aro"
    description = "ARO VG-Relation / VG-Attribution JSON (image_path, bbox_*, true/false caption) + images/"

    def _load(self) -> DatasetRecords:
        path = self.path
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError("expected a list of test cases (ARO VG-Relation / VG-Attribution layout)", file=str(path))
        default = path.parent / "images"
        root = Path(self.options.get("image_root") or (default if default.is_dir() else path.parent))
        out = DatasetRecords(name=self.name, source=str(path))
        for i, entry in enumerate(data):
            ok, group = self.guard(lambda i=i, entry=entry: self._item(i, entry, path, root))
            if ok:
                out.groups.append(group)
        return out

    def _item(self, i: int, entry: Any, path: Path, root: Path) -> MatchGroup:
        rec = f"#{i}"
        if not isinstance(entry, dict):
            raise DataError("test case is not an object", file=str(path), record=rec)
        texts = tuple(check_caption(as_str(require(entry, k, path, rec), k, path, rec), path, rec)
                      for k in ("true_caption", "false_caption"))
        kind = aro_kind(entry, path, rec)
        image, size = image_under_root(root, require(entry, "image_path", path, rec), "image_path", path, rec,
                                       self.verify_images)
        box = aro_box(entry, path, rec, size)
        return MatchGroup(group_id=str(i), images=(image,), texts=texts, kind=kind, crops=(box,), split=self.split)
