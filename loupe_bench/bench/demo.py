"""``demo`` benchmark: wall time of ``reproduce synthetic --quick`` and of the default run, stages broken down.

Wall time depends on other load on the machine; the CPU seconds of each stage (all threads of the process) are
recorded beside it. The default run trains seven models and takes minutes; ``full=False`` (``loupe-bench bench demo`` with option
``{"demo": {"full": False}}``) times only the quick run. ``repeat`` is not used: one run of each is timed (a
reproduction is minutes long and deterministic; the figure is its wall time on this machine).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ..utils.io import read_json
from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import figure

#: the wall-time targets on 2 cores: `reproduce synthetic --quick` <= 60 s, the default plan <= 5 min
TARGETS = {"quick": 60.0, "default": 300.0}


def _time_run(out: Path, quick: bool, plan_changes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    from dataclasses import replace

    from rich.console import Console

    from ..pipeline import default_plan, reproduce_synthetic

    plan = default_plan(quick)
    if plan_changes:
        changes = dict(plan_changes)
        changes["recipe_overrides"] = {**plan.recipe_overrides, **changes.get("recipe_overrides", {})}
        plan = replace(plan, **changes)
    t0 = time.perf_counter()
    manifest = reproduce_synthetic(out, seeds=[0], quick=quick, plan=plan, console=Console(quiet=True),
                                   progress=False)
    wall = time.perf_counter() - t0
    man = read_json(manifest)
    return {"wall_s": wall, "timings": man["timings"], "models": man["plan"]["models"],
            "world_size": man["plan"]["world_size"], "recipe_overrides": man["plan"]["recipe_overrides"]}


@BENCHMARKS.register("demo", help="Wall time of `reproduce synthetic --quick` and of the default run, by stage.")
def demo(repeat: int = 1, device: str = "cpu", full: bool = True, out_dir: str = "",
         plan_changes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Time the quick and (when ``full``) the default synthetic reproduction; targets :data:`TARGETS` (60 s, 300 s).

    ``plan_changes``: :class:`~loupe_bench.pipeline.SyntheticPlan` fields replaced in both plans (the
    smoke test shrinks world, steps and tasks); the targets only mean something without it."""
    runs: Dict[str, Dict[str, Any]] = {}
    figures = []
    with tempfile.TemporaryDirectory(prefix="loupe-demo-") as tmp:
        base = Path(out_dir) if out_dir else Path(tmp)
        for kind in (("quick", "default") if full else ("quick",)):
            runs[kind] = _time_run(base / kind, quick=kind == "quick", plan_changes=plan_changes)
            wall = runs[kind]["wall_s"]
            figures.append(figure(f"{kind} run wall time", wall, "s", f"<= {TARGETS[kind]:.0f} s",
                                  wall <= TARGETS[kind]))
            for stage in ("world", "train", "eval", "report"):
                t = runs[kind]["timings"]
                figures.append(figure(f"{kind}: stage {stage} wall", t.get(f"stage/{stage}", 0.0), "s"))
                figures.append(figure(f"{kind}: stage {stage} CPU", t.get(f"cpu/stage/{stage}", 0.0), "CPU s"))
            figures.append(figure(f"{kind}: total CPU time", runs[kind]["timings"].get("cpu/total", 0.0), "CPU s"))
    if "default" in runs:
        figures.append(figure("default / quick wall-time ratio", runs["default"]["wall_s"] / runs["quick"]["wall_s"],
                              "x"))
    return {"name": "demo", "figures": figures, "runs": runs, "environment": environment_info(device)}
