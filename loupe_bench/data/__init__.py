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
from pathlib import Path
from typing import Any, List, Tuple, Union

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
from .world import World, load_world

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
