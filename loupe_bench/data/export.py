"""Write a synthetic world (or any loaded caption/detection records) in further real formats: PASCAL VOC, CSV and a
Hugging Face ``datasets`` folder. Used by the round-trip tests and to hand the world to tools that expect those
formats."""
from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Optional, Union
from xml.sax.saxutils import escape

from ..utils.io import atomic_write_text
from .formats.karpathy import KarpathyLoader
from .formats.coco import CocoLoader
from .formats.base import user_bytes, user_file
from .formats.voc import xywh_to_voc
from .world import load_world

PathLike = Union[str, os.PathLike]


def write_voc(world_dir: PathLike, out: PathLike) -> Path:
    """Write the world's detection boxes in PASCAL VOC layout.

    ``out/Annotations/<stem>.xml``, ``out/JPEGImages/<file>``, ``out/ImageSets/Main/<split>.txt`` and
    ``out/classnames.txt`` (category order). Boxes become 1-based inclusive corners (:func:`xywh_to_voc`).
    """
    world = load_world(world_dir)
    out = Path(out)
    names = [world.categories[k] for k in sorted(world.categories)]
    atomic_write_text(out / "classnames.txt", "\n".join(names) + "\n")
    for split in sorted(world.splits):
        det = CocoLoader(world.path("coco", split), verify_images=False).load()
        stems = []
        for im in det.images:
            stem = Path(im.file_name).stem
            stems.append(stem)
            (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(user_file(im.path, "image", "image file", stem), out / "JPEGImages" / im.file_name)
            objs = []
            for b in im.boxes:
                x0, y0, x1, y1 = xywh_to_voc(*b.bbox)
                objs.append(
                    "  <object>\n"
                    f"    <name>{escape(det.categories[b.category_id])}</name>\n"
                    "    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n    <difficult>0</difficult>\n"
                    f"    <bndbox><xmin>{x0:g}</xmin><ymin>{y0:g}</ymin><xmax>{x1:g}</xmax><ymax>{y1:g}</ymax></bndbox>\n"
                    "  </object>\n"
                )
            xml = (
                "<annotation>\n"
                "  <folder>JPEGImages</folder>\n"
                f"  <filename>{escape(im.file_name)}</filename>\n"
                "  <source><database>loupe-bench synthetic</database></source>\n"
                f"  <size><width>{im.width}</width><height>{im.height}</height><depth>3</depth></size>\n"
                "  <segmented>0</segmented>\n" + "".join(objs) + "</annotation>\n"
            )
            atomic_write_text(out / "Annotations" / f"{stem}.xml", xml)
        atomic_write_text(out / "ImageSets" / "Main" / f"{split}.txt", "".join(s + "\n" for s in stems))
    return out


def write_csv(world_dir: PathLike, out: PathLike, split: Optional[str] = None) -> Path:
    """Write the world's captions as CSV ``filepath,caption,image_id,split,sent_id`` (one caption per row);
    ``filepath`` is relative to the CSV's folder."""
    world = load_world(world_dir)
    out = Path(out)
    recs = KarpathyLoader(world.path("karpathy"), split=split, verify_images=False, phrases=False).load()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["filepath", "caption", "image_id", "split", "sent_id"])
    for im in recs.images:
        rel = os.path.relpath(im.path, out.parent)
        for c in im.captions:
            writer.writerow([rel, c.text, im.image_id, im.split, c.sent_id])
    atomic_write_text(out, buf.getvalue())
    return out


def write_hf(world_dir: PathLike, out: PathLike) -> Path:
    """Save the world's captions as a Hugging Face ``DatasetDict`` (one Dataset per split; columns ``image``
    (embedded JPEG bytes), ``image_id``, ``file_name``, ``captions``, ``sent_ids``) with ``save_to_disk``."""
    import datasets

    world = load_world(world_dir)
    recs = KarpathyLoader(world.path("karpathy"), verify_images=False, phrases=False).load()
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("int64"),
            "file_name": datasets.Value("string"),
            "captions": datasets.Sequence(datasets.Value("string")),
            "sent_ids": datasets.Sequence(datasets.Value("int64")),
        }
    )
    parts = {}
    for split in sorted(world.splits):
        rows = [im for im in recs.images if im.split == split]
        parts[split] = datasets.Dataset.from_dict(
            {
                "image": [{"bytes": user_bytes(im.path, "image", "image file", im.image_id), "path": im.file_name}
                          for im in rows],
                "image_id": [im.image_id for im in rows],
                "file_name": [im.file_name for im in rows],
                "captions": [[c.text for c in im.captions] for im in rows],
                "sent_ids": [[c.sent_id for c in im.captions] for im in rows],
            },
            features=features,
        )
    datasets.DatasetDict(parts).save_to_disk(str(out))
    return Path(out)
