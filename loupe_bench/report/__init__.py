"""Reports, paper tables, exports and the regression gate.

* :func:`render_report` (``render.py``): console table, CSV, Markdown, self-contained HTML with plots and explanations.
* :func:`compare_paper` (``paper.py``): reproduced vs published numbers with deltas and provenance.
* :func:`check` / :func:`build_reference` (``gate.py``): the regression gate against ``results/reference/*.json``.
* ``export.py`` (:data:`~loupe_bench.report.export.EXPORT_FORMATS`): result JSONs in the layouts other tools read (CLIP_benchmark).

The reproduction pipeline that produces the results (``reproduce_synthetic``, ``reproduce_paper``) is the layer above:
:mod:`loupe_bench.pipeline`; nothing here imports it.

Imports are lazy so that ``import loupe_bench.report`` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "render_report": "render", "compare_paper": "paper", "load_paper_tables": "paper", "check": "gate",
    "build_reference": "gate", "update_reference": "gate", "load_rows": "results_io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
