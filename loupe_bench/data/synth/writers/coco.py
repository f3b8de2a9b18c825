"""COCO detection: ``annotations/instances_<split>.json`` (category = shape of the object)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from ....utils.io import atomic_write_json
from ..sampling import SHAPES
from ..scenes import SPLITS, WORLD_VERSION, RenderedScene, file_name


def categories() -> List[Dict[str, Any]]:
    """COCO categories: one per shape, ids ``1 … len(SHAPES)`` in :data:`SHAPES` order, supercategory ``shape``."""
    return [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]


def coco_instances(rendered: Sequence[RenderedScene], image_size: int) -> Dict[str, Dict[str, Any]]:
    """The COCO instances document of each split: ``info``, ``licenses`` (empty), ``categories`` (:func:`categories`),
    ``images`` (``id``, ``file_name``, ``width``, ``height``) and ``annotations`` (``id`` = ann_id, ``image_id``,
    ``category_id``, ``bbox`` xywh pixels, ``area`` = coverage sum, ``iscrowd`` 0, and the extra keys ``colour``,
    ``colour2``, ``kind``, ``size``)."""
    info = {"description": "loupe-bench synthetic fine-grained world", "version": str(WORLD_VERSION), "year": 2026}
    cats = categories()
    cat_id = {c["name"]: c["id"] for c in cats}
    docs = {s: {"info": info, "licenses": [], "categories": cats, "images": [], "annotations": []} for s in SPLITS}
    for r in rendered:
        scene = r.scene
        doc = docs[scene.split]
        doc["images"].append({"id": scene.image_id, "file_name": file_name(scene.image_id), "width": image_size,
                              "height": image_size})
        for obj, area in zip(scene.objects, r.areas):
            doc["annotations"].append({
                "id": obj.ann_id, "image_id": scene.image_id, "category_id": cat_id[obj.shape],
                "bbox": [float(v) for v in obj.box], "area": area, "iscrowd": 0, "colour": obj.colour,
                "colour2": obj.colour2, "kind": obj.kind, "size": obj.size,
            })
    return docs


def all_splits(coco: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """One COCO document holding the images and annotations of every split (in :data:`SPLITS` order)."""
    first = coco[SPLITS[0]]
    return {
        "info": first["info"],
        "licenses": [],
        "categories": first["categories"],
        "images": [im for s in SPLITS for im in coco[s]["images"]],
        "annotations": [a for s in SPLITS for a in coco[s]["annotations"]],
    }


def write_coco(out: Path, coco: Mapping[str, Mapping[str, Any]]) -> None:
    """COCO detection (:mod:`~loupe_bench.data.formats.coco`): ``annotations/instances_<split>.json`` per split, the
    documents of :func:`coco_instances` (sorted keys, no indent)."""
    for split in SPLITS:
        atomic_write_json(out / "annotations" / f"instances_{split}.json", coco[split], indent=None)
