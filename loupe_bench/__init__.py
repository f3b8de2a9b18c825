"""loupe-bench: the LOUPE model and a benchmark running it beside CLIP and FILIP under identical protocols.

The Python API (usable from a notebook) is what the CLI calls:

* :func:`load_model` — build a model from a spec name / YAML file, or load a trained run / model directory.
* :func:`train` — train a model with a recipe.
* :func:`evaluate` — run task protocols on models, returning result records.
* :func:`report` — render results (console, CSV, Markdown, HTML).

Heavy libraries (torch, transformers, timm) are imported lazily.
"""
from __future__ import annotations

from ._version import __version__

__all__ = ["__version__", "load_model", "train", "evaluate", "report"]


def load_model(*args, **kwargs):
    """Build or load a model; see :func:`loupe_bench.models.factory.load_model`."""
    from .models.factory import load_model as _load_model

    return _load_model(*args, **kwargs)


def train(*args, **kwargs):
    """Train a model with a recipe; see :func:`loupe_bench.train.engine.train`."""
    from .train.engine import train as _train

    return _train(*args, **kwargs)


def evaluate(*args, **kwargs):
    """Evaluate models on tasks; see :func:`loupe_bench.tasks.evaluate.evaluate`."""
    from .tasks.evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def report(*args, **kwargs):
    """Render a results folder; see :func:`loupe_bench.report.render.report`."""
    from .report.render import report as _report

    return _report(*args, **kwargs)
