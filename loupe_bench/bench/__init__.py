"""Benchmarks: speed measured as ratios side by side in one run, JSON written to ``results/benchmarks/``.

Each benchmark is a function registered in :data:`BENCHMARKS`; it takes ``repeat`` (and keyword options) and returns
a JSON-able dict with at least ``name``, ``figures`` (list of {label, value, unit, target, met}) and
``environment`` (or ``skipped``: why it cannot run here). What benchmarks share (timing, figures, the synthetic world
and its batches, tiny models, device and thread handling, one engine step) lives in :mod:`loupe_bench.bench.common`.
A new benchmark is one module here that registers its function, plus its line in ``_BENCH_MODULES``.
"""
from __future__ import annotations

from typing import List, Tuple

from ..registry import Registry, import_registering_modules, registering_modules

BENCHMARKS = Registry("benchmark")

# modules that register benchmarks when imported (imported on first use)
_BENCH_MODULES = registering_modules(
    "loupe_bench.bench.shapley_bench",
    "loupe_bench.bench.train_step",
    "loupe_bench.bench.gpu_check",
    "loupe_bench.bench.train_throughput",
    "loupe_bench.bench.late_interaction",
    "loupe_bench.bench.retrieval_metric",
    "loupe_bench.bench.eval_throughput",
    "loupe_bench.bench.demo",
    "loupe_bench.bench.scale",
    "loupe_bench.bench.region_teacher",
)


def load_all() -> Registry:
    import_registering_modules(_BENCH_MODULES)
    return BENCHMARKS


def list_benchmarks() -> List[Tuple[str, str]]:
    reg = load_all()
    return [(n, reg.help(n)) for n in reg.names()]
