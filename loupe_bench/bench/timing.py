"""Timing helpers for benchmarks: medians of repeated runs, measured side by side."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


def time_call(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> Dict[str, float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; return median/min/max seconds."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeat": len(times)}


def figure(label: str, value: float, unit: str, target: str = "", met: Any = None) -> Dict[str, Any]:
    """One printed figure of a benchmark: its value, unit, target (text) and whether the target is met."""
    return {"label": label, "value": value, "unit": unit, "target": target, "met": met}


def bench_world(world: Optional[Any] = None, seed: int = 0, image_size: int = 64) -> Path:
    """The synthetic world a benchmark runs on: ``world`` when given, else a ``tiny`` world generated into a fresh
    temporary folder."""
    if world is not None:
        return Path(world)
    from ..data.synth import generate_world

    return generate_world(Path(tempfile.mkdtemp(prefix="loupe-bench-world-")) / "tiny", seed=seed, size="tiny",
                          image_size=image_size)
