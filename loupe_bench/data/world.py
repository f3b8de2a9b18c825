"""The synthetic world's metadata: :class:`World` (read from a world folder's ``world.json``) and :func:`load_world`.

Its own module so that the world generator (``data/synth/``) and the exporters read it without importing the package
``loupe_bench.data`` (whose :func:`~loupe_bench.data.generate_world` imports the generator).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class World:
    """Metadata of a synthetic world folder (from its ``world.json``).

    Attributes:
        root: the folder.
        seed, size, image_size: generator options.
        splits: split -> number of images.
        classnames: class names by label (shape of the large object).
        categories: COCO category id -> name (shapes).
        heldout_combos: (colour, shape) pairs only present in ``comptest`` (a two-part object's top colour).
        files: the world's file map (relative paths).
        meta: the whole ``world.json``.
    """

    root: Path
    seed: int
    size: str
    image_size: int
    splits: Dict[str, int]
    classnames: Tuple[str, ...]
    categories: Dict[int, str]
    heldout_combos: Tuple[Tuple[str, str], ...]
    files: Dict[str, Any] = field(repr=False)
    meta: Dict[str, Any] = field(repr=False)

    def path(self, key: str, split: Optional[str] = None) -> Path:
        """Absolute path of a file-map entry, e.g. ``path("karpathy")``, ``path("coco", "test")``."""
        entry = self.files[key]
        if isinstance(entry, dict):
            if split is None:
                raise KeyError(f"{key!r} needs a split")
            entry = entry[split]
        if isinstance(entry, list):
            raise KeyError(f"{key!r} is a list; use shards()")
        return self.root / entry

    def shards(self, split: str) -> List[Path]:
        return [self.root / p for p in self.files["shards"][split]]


def load_world(path: PathLike) -> World:
    """Read a synthetic world's ``world.json`` (a :class:`~loupe_bench.errors.DataError` if it is not one)."""
    from ..errors import DataError
    from ..utils.io import read_json

    root = Path(path)
    meta = read_json(root / "world.json")
    try:
        return World(
            root=root,
            seed=int(meta["seed"]),
            size=str(meta["size"]),
            image_size=int(meta["image_size"]),
            splits=dict(meta["splits"]),
            classnames=tuple(meta["classnames"]),
            categories={int(c["id"]): str(c["name"]) for c in meta["categories"]},
            heldout_combos=tuple((str(c), str(s)) for c, s in meta["heldout_combos"]),
            files=dict(meta["files"]),
            meta=meta,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"not a synthetic world description ({type(exc).__name__}: {exc})", file=str(root / "world.json")) from None
