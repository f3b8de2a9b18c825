"""Data: the synthetic fine-grained world, real-format loaders (one registry), validation and training plumbing.

Public entry points:

* :data:`DATASETS` — format name -> loader class (``karpathy``, ``coco``, ``refer``, ``voc``, ``flickr30k-entities``, ``webdataset``,
  ``csv``, ``hf``, ``imagefolder``, ``synthetic``); :func:`load_dataset` builds and runs one.
* :func:`generate_world` — write the synthetic world; :func:`load_world` — its metadata.
* :func:`check_dataset` — every problem of a data set in one pass.
* :mod:`loupe_bench.data.training` — ``PairDataset``, ``TrainCollator``, shard iterables.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .formats import DATASETS, Loader
from .records import (
    BoxAnnotation,
    Caption,
    ClassificationSample,
    DatasetRecords,
    ImageRecord,
    Phrase,
    RefRecord,
)

PathLike = Union[str, os.PathLike]


def load_dataset(fmt: str, path: PathLike, **options: Any) -> DatasetRecords:
    """Load ``path`` with the loader registered as ``fmt`` (options as the loader's constructor)."""
    return DATASETS.get(fmt)(path, **options).load()


def generate_world(out: PathLike, seed: int = 0, size: str = "tiny", image_size: int = 64, progress: bool = False) -> Path:
    """Write the synthetic world (see :func:`loupe_bench.data.synth.generate_world`)."""
    from .synth import generate_world as _gen

    return _gen(out, seed=seed, size=size, image_size=image_size, progress=progress)


def check_dataset(path: PathLike, fmt: str = "auto", **options: Any):
    """Every problem of a data set, in one pass (see :func:`loupe_bench.data.check.check_dataset`)."""
    from .check import check_dataset as _check

    return _check(path, fmt=fmt, **options)


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


def list_datasets() -> List[Tuple[str, str]]:
    """``(name, description)`` of every registered data set format, for ``loupe-bench list datasets``."""
    return [(name, DATASETS.get(name).description or DATASETS.help(name)) for name in DATASETS.names()]


__all__ = [
    "DATASETS",
    "Loader",
    "load_dataset",
    "generate_world",
    "check_dataset",
    "load_world",
    "World",
    "list_datasets",
    "BoxAnnotation",
    "Caption",
    "ClassificationSample",
    "DatasetRecords",
    "ImageRecord",
    "Phrase",
    "RefRecord",
]
