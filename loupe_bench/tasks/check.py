"""``check_task_data``: every problem of the data set a task spec describes (``loupe-bench data check --task``).

The data checks themselves are the data layer's (:mod:`loupe_bench.data.check`); this module reads the task spec
and hands each split the task reads to them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Union

from ..data.check import check_loader, unique_errors
from ..errors import DataError

PathLike = Union[str, os.PathLike]


def check_task_data(task: Any, data_root: PathLike) -> List[DataError]:
    """Every problem of the data set a task spec describes, read as the task reads it: the spec's format, its
    dataset path and loader options resolved against ``data_root`` (its ``image_root`` and the like), for every
    split the task reads (:meth:`~loupe_bench.tasks.spec.TaskSpec.data_splits`); images are verified.

    Args:
        task: a task name, task YAML path or :class:`~loupe_bench.tasks.spec.TaskSpec`.
        data_root: the folder the task's paths are relative to (what ``eval --data-root`` gets).

    Raises:
        DataError: a file or folder the spec names is missing (with the layout the task expects).
    """
    from . import load_task
    from .spec import TaskSpec

    spec = task if isinstance(task, TaskSpec) else load_task(task)
    root = Path(data_root)
    splits = spec.data_splits()
    spec.require_data(root, splits)
    errors: List[DataError] = []
    for split in splits:
        path = spec.resolve_path(root, spec.dataset.path, split)
        errors += check_loader(spec.dataset.format, path, split=split, **spec.loader_options(root, split))
    return unique_errors(errors)
