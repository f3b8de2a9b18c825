"""The world's images: ``images/<image_id:06d>.jpg``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ....utils.io import atomic_write_bytes
from ..scenes import RenderedScene, file_name


def write_images(out: Path, rendered: Sequence[RenderedScene]) -> None:
    """``images/<image_id:06d>.jpg``: every image's JPEG bytes (the files all other formats point to)."""
    for r in rendered:
        atomic_write_bytes(out / "images" / file_name(r.scene.image_id), r.jpg, fsync=False)
