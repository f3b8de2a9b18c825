"""ImageFolder classification: ``classification/<split>/<class>/<file>`` and ``classification/classnames.txt``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ....utils.io import atomic_write_bytes, atomic_write_text
from ..sampling import SHAPES
from ..scenes import RenderedScene, file_name


def write_imagefolder(out: Path, rendered: Sequence[RenderedScene]) -> None:
    """ImageFolder classification (:mod:`~loupe_bench.data.formats.folders`): a copy of each image in
    ``classification/<split>/<shape of the large object>/<file>`` and ``classification/classnames.txt`` (the shapes
    in :data:`SHAPES` order, one a line)."""
    for r in rendered:
        path = out / "classification" / r.scene.split / SHAPES[r.label] / file_name(r.scene.image_id)
        atomic_write_bytes(path, r.jpg, fsync=False)
    atomic_write_text(out / "classification" / "classnames.txt", "\n".join(SHAPES) + "\n")
