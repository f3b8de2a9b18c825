"""Reading a generated world back: each object's box and kind per image (the world's COCO file)."""
from __future__ import annotations

import os
from typing import Dict, List, Tuple, Union

from ...errors import SpecError


def load_object_kinds(world_dir: Union[str, os.PathLike], split: str
                      ) -> Dict[int, List[Tuple[Tuple[float, float, float, float], str, int]]]:
    """Each object's normalised box, kind and annotation id per image of ``split``, from the world's COCO file.

    Reads ``annotations/instances_<split>.json`` (path from ``world.json``) with the COCO loader; every annotation
    carries ``kind`` (``flat`` / ``two-part``; worlds before version 3 have no such key and only flat objects, read
    as ``flat``). A pixel box ``(x, y, w, h)`` on a ``W × H`` image becomes ``(x/W, y/H, (x+w)/W, (y+h)/H)``; a
    two-part object's colours split at the box's middle row ``y + h//2`` (:attr:`~.sampling.SceneObject.split_row`),
    i.e. at normalised height ``(y + h//2)/H``.

    Returns:
        ``{image_id: [(box_xyxy_norm, kind, ann_id), ...]}`` with objects in drawing order (later ones on top);
        every image of the split is a key, also one without objects.
    """
    from ..formats.coco import CocoLoader
    from ..world import load_world

    world = load_world(world_dir)
    if split not in world.splits:
        raise SpecError(f"unknown split {split!r}; the world has {', '.join(world.splits)}")
    recs = CocoLoader(world.path("coco", split), verify_images=False).load()
    out: Dict[int, List[Tuple[Tuple[float, float, float, float], str, int]]] = {}
    for im in recs.images:
        W = float(im.width or world.image_size)
        H = float(im.height or world.image_size)
        rows = []
        for b in im.boxes:
            x, y, w, h = b.bbox
            rows.append(((x / W, y / H, (x + w) / W, (y + h) / H), b.attribute("kind") or "flat", b.ann_id))
        out[im.image_id] = rows
    return out
