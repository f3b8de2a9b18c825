"""Generating the synthetic world: the options checked, the output folder prepared, every image sampled
(:func:`~.scenes.sample_world`), then one writer per format (:mod:`.writers`), the matching benchmarks
(:mod:`.matching`), ``world.json`` and ``README.md``."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Union

from ...errors import DataError, SpecError
from ...utils.io import atomic_write_json, atomic_write_text
from . import matching
from .scenes import MAX_IMAGE_SIZE, SIZES, sample_world
from .writers import (
    F30K_DIR, coco_instances, readme_text, world_record, write_coco, write_flickr30k_entities, write_imagefolder,
    write_images, write_karpathy, write_refer, write_shards,
)

WORLD_ENTRIES = ("images", "classification", "shards", "annotations", "refsynth", "flickr30k_entities",
                 "captionsel", "winoground", "dataset_synthetic.json", "phrases.json", "README.md", "world.json")


def _prepare_out(out: Path) -> None:
    """Create ``out``; an earlier world there is removed first (so no stale file survives a smaller rerun); a
    non-empty folder that is not a world is refused."""
    if out.exists() and not out.is_dir():
        raise DataError("output path exists and is not a folder", file=str(out))
    if out.is_dir() and any(out.iterdir()):
        if not (out / "world.json").is_file():
            raise DataError("output folder is not empty and holds no synthetic world (world.json); refusing to "
                            "write into it", file=str(out))
        for name in WORLD_ENTRIES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate_world(
    out: Union[str, os.PathLike],
    seed: int = 0,
    size: str = "tiny",
    image_size: int = 64,
    progress: bool = False,
    workers: Optional[int] = None,
) -> Path:
    """Generate the synthetic world into ``out`` (layout in ``docs/architecture.md``) and return its path.

    :func:`sample_world` draws every scene; then one writer per format: :func:`write_images`,
    :func:`write_imagefolder`, :func:`write_shards`, :func:`write_coco`, :func:`write_refer`,
    :func:`write_flickr30k_entities`, :func:`write_karpathy`,
    :func:`~loupe_bench.data.synth.matching.write_matching`; last ``world.json`` (:func:`world_record`) and
    ``README.md``.

    Args:
        out: output folder (created; existing files of the same names are replaced).
        seed: random seed; same seed and options give byte-identical files.
        size: ``tiny``, ``small`` or ``medium`` (images per split in :data:`SIZES`).
        image_size: square image side in pixels (32 to :data:`MAX_IMAGE_SIZE`).
        progress: show a rich progress bar.
        workers: processes that render images (default: up to 4 CPUs for ``small``/``medium``, 1 for ``tiny``).
            The output does not depend on it.
    """
    if size not in SIZES:
        raise SpecError(f"unknown world size {size!r}; known: {', '.join(SIZES)}")
    if int(seed) < 0:
        raise SpecError(f"seed must be a non-negative integer, got {seed}")
    if not 32 <= int(image_size) <= MAX_IMAGE_SIZE:
        raise SpecError(f"image size must be 32 to {MAX_IMAGE_SIZE} pixels, got {image_size}")
    image_size = int(image_size)
    out = Path(out)
    _prepare_out(out)
    if workers is None:
        workers = 1 if size == "tiny" else max(1, min(4, os.cpu_count() or 1))

    rendered = sample_world(seed, SIZES[size], image_size, workers, progress)
    write_images(out, rendered)
    write_imagefolder(out, rendered)
    shard_files = write_shards(out, rendered)
    coco = coco_instances(rendered, image_size)
    write_coco(out, coco)
    num_refs = write_refer(out, rendered, coco, image_size)
    write_flickr30k_entities(out / F30K_DIR, [r.scene for r in rendered], image_size)
    write_karpathy(out, rendered)
    benchmarks = matching.write_matching(out, rendered, seed, image_size)
    world = world_record(seed, size, image_size, rendered, num_refs, shard_files, benchmarks)
    atomic_write_json(out / "world.json", world)
    atomic_write_text(out / "README.md", readme_text(world))
    return out
