"""Flickr30K Entities: ``flickr30k_entities/`` (``Sentences/``, ``Annotations/``, ``<split>.txt``, ``types.txt``;
the images stay in the world's ``images/``)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ....utils.io import atomic_write_dir, atomic_write_text
from ..sampling import SHAPES, Scene, SceneObject
from ..scenes import SPLITS, file_name

#: the world's Flickr30K Entities folder (Sentences/, Annotations/, <split>.txt, types.txt; images stay in images/)
F30K_DIR = "flickr30k_entities"


def entity_sentence(text: str, spans: Sequence[Tuple[int, int, int]], objects: Sequence[SceneObject]) -> str:
    """One caption in Flickr30K Entities markup: each gold span becomes ``[/EN#<ann_id>/<shape> phrase]``.

    ``spans`` are ``(start, end, object index)`` in increasing order and do not overlap (the caption templates);
    the entity id is the object's COCO ``ann_id`` and the phrase type its shape name. Loading the line with
    :func:`~loupe_bench.data.formats.flickr30k_entities.parse_entity_sentence` gives back ``text`` and the spans.
    """
    parts, pos = [], 0
    for start, end, k in spans:
        obj = objects[k]
        parts += [text[pos:start], f"[/EN#{obj.ann_id}/{obj.shape} ", text[start:end], "]"]
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def entity_xml(fname: str, image_size: int, objects: Sequence[SceneObject]) -> str:
    """``Annotations/<id>.xml`` of one scene: ``<size>``, then one ``<object>`` per scene object with
    ``<name>`` = its ann_id and its COCO box as 1-based inclusive VOC corners (``xmin = x + 1``, ``xmax = x + w``;
    the inverse of the loader's conversion, so the loaded xywh equals the COCO box exactly)."""
    objs = []
    for o in objects:
        x, y, w, h = o.box
        objs.append(
            f"  <object>\n    <name>{o.ann_id}</name>\n"
            f"    <bndbox><xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax></bndbox>\n"
            "  </object>\n"
        )
    return (
        f"<annotation>\n  <filename>{fname}</filename>\n"
        f"  <size><width>{image_size}</width><height>{image_size}</height><depth>3</depth></size>\n"
        + "".join(objs) + "</annotation>\n"
    )


def write_flickr30k_entities(root: Path, scenes: Sequence[Scene], image_size: int) -> Path:
    """Write the scenes (ids and ann_ids assigned) in the Flickr30K Entities layout under ``root``.

    ``Sentences/<stem>.txt`` (:func:`entity_sentence`, one line per caption), ``Annotations/<stem>.xml``
    (:func:`entity_xml`), ``<split>.txt`` for every split of :data:`~.scenes.SPLITS` (image stems in scene order)
    and ``types.txt`` (the shapes in COCO category order, so a loaded box's category id is its COCO category id).
    Uses no random numbers. The folder is written atomically as a whole
    (:func:`~loupe_bench.utils.io.atomic_write_dir`): everything goes into a hidden folder beside ``root`` (the
    thousands of per-image files as plain writes, the split and type lists with
    :func:`~loupe_bench.utils.io.atomic_write_text`), which then replaces ``root``; readers see no folder or the
    complete one.
    """
    return atomic_write_dir(root, lambda stage: _write_entities(stage, scenes, image_size))


def _write_entities(stage: Path, scenes: Sequence[Scene], image_size: int) -> None:
    """The files of :func:`write_flickr30k_entities`, written into the empty folder ``stage``."""
    sentences, annotations = stage / "Sentences", stage / "Annotations"
    sentences.mkdir()
    annotations.mkdir()
    ids: Dict[str, List[str]] = {s: [] for s in SPLITS}
    for scene in scenes:
        fname = file_name(scene.image_id)
        stem = fname.rsplit(".", 1)[0]
        ids[scene.split].append(stem)
        lines = "".join(entity_sentence(text, spans, scene.objects) + "\n" for text, spans in scene.captions)
        with open(sentences / f"{stem}.txt", "w", encoding="utf-8", newline="\n") as fh:
            fh.write(lines)
        with open(annotations / f"{stem}.xml", "w", encoding="utf-8", newline="\n") as fh:
            fh.write(entity_xml(fname, image_size, scene.objects))
    for split in SPLITS:
        atomic_write_text(stage / f"{split}.txt", "".join(s + "\n" for s in ids[split]))
    atomic_write_text(stage / "types.txt", "\n".join(SHAPES) + "\n")
