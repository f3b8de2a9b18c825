"""loupe-bench: the LOUPE model and a benchmark running it beside CLIP and FILIP under identical protocols.

The Python API (usable from a notebook) is the functions the CLI commands call, each defined once in the module
that implements it and re-exported here:

* :func:`load_model` — a model from a spec name / file, our model or run directory, a Hugging Face ``CLIPModel``
  directory or an open_clip checkpoint (``open_clip:ARCH:FILE``); :func:`load_model_and_transforms` also returns the
  image transform and the tokenizer (:mod:`loupe_bench.models.sources`).
* :func:`train_model` — train a model with a recipe (``loupe-bench train``; :mod:`loupe_bench.train.engine`).
* :func:`evaluate` — run task protocols on models, returning result records (``loupe-bench eval``;
  :mod:`loupe_bench.tasks.evaluate`).
* :func:`render_report` — render results: console, CSV, Markdown, HTML (``loupe-bench report``;
  :mod:`loupe_bench.report.render`).
* :func:`reproduce_synthetic` / :func:`reproduce_paper` — the whole reproductions (``loupe-bench reproduce``;
  :mod:`loupe_bench.pipeline`).

``import loupe_bench`` is light: each function's module (and torch with it) is imported on first access.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, List

from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; at run time the names load on first access
    from .models.sources import load_model, load_model_and_transforms
    from .pipeline.paper import reproduce_paper
    from .pipeline.synthetic import reproduce_synthetic
    from .report.render import render_report
    from .tasks.evaluate import evaluate
    from .train.engine import train_model

#: public name -> the module that defines it
_API = {
    "load_model": "loupe_bench.models.sources",
    "load_model_and_transforms": "loupe_bench.models.sources",
    "train_model": "loupe_bench.train.engine",
    "evaluate": "loupe_bench.tasks.evaluate",
    "render_report": "loupe_bench.report.render",
    "reproduce_synthetic": "loupe_bench.pipeline.synthetic",
    "reproduce_paper": "loupe_bench.pipeline.paper",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_API))
