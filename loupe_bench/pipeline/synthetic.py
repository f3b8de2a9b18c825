"""The main job, ``loupe-bench reproduce synthetic``: :func:`reproduce_synthetic` runs, in one folder::

    OUT/
      reproduce.json        manifest: options, seeds, models, tasks, stage timings, paths (relative)
      world/                the synthetic world (generate_world)
      runs/s<seed>/<model>/ one run directory per model and seed (train, the one shared recipe)
      results/s<seed>/      one result JSON per (model, task, split) (evaluate)
      report/               report.html, report.md, results.csv (render.render_report)

Stages are data in :data:`~loupe_bench.pipeline.stages.STAGES` (a registry), each a function ``(ctx) -> None``; a
rich progress bar shows the stage, model, overall progress and ETA. Every stage is deterministic for a given seed:
re-running with the same seed gives the same numbers.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import SpecError
from .context import Context, StageLog, announce_missing, missing_metrics, write_manifest
from .plan import SyntheticPlan, default_plan, synthetic_tasks
from .stages import STAGE_ORDER, STAGES


def _cpu_seconds() -> float:
    """CPU seconds of this process (all its threads); the worker processes report their jobs' own CPU seconds."""
    return time.process_time()


def reproduce_synthetic(out, seeds: Sequence[int] = (0,), quick: bool = False, *, plan: Optional[SyntheticPlan] = None,
                        console=None, progress: bool = True) -> Path:
    """Run the whole synthetic reproduction into ``out`` and return the manifest path (``loupe-bench reproduce
    synthetic`` calls this function).

    Args:
        out: output folder (world, runs, results, report and ``reproduce.json``).
        seeds: training seeds; every model is trained with each (the world is shared).
        quick: the CI variant (main models only, the quick recipe variant, fewer bootstrap resamples).
        plan: a custom :class:`SyntheticPlan` (overrides ``quick``).
        console: rich Console for the table and progress.
        progress: show the rich progress bar.

    With ``plan.workers > 1`` the models train and evaluate in spawned worker processes: a script calling this
    function needs the usual ``if __name__ == "__main__":`` guard (notebooks and the CLI need nothing).
    """
    from rich.console import Console

    console = console or Console(log_path=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan or default_plan(quick)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise SpecError("at least one seed is needed")
    tasks = list(plan.tasks) if plan.tasks else synthetic_tasks(quick=plan.quick)
    n_train = len(seeds) * len(plan.models)
    log = StageLog(console, total=2 + 2 * n_train, enabled=progress)
    log.planned = {"world": 1, "train": n_train, "eval": n_train, "report": 1}  # eval: set by its stage
    t_all = time.perf_counter()
    ctx = Context(out=out, seeds=seeds, plan=plan, log=log, console=console, tasks=tasks)
    ctx.missing = missing_metrics(tasks)
    announce_missing(console, ctx.missing)
    c_all = _cpu_seconds()
    try:
        for name in STAGE_ORDER:
            t0, c0 = time.perf_counter(), _cpu_seconds() + ctx.worker_cpu
            STAGES.get(name)(ctx)
            if name == STAGE_ORDER[-2]:
                ctx.close()  # the workers' last jobs are done: free their memory before the report
            ctx.timings[f"stage/{name}"] = round(time.perf_counter() - t0, 3)
            # CPU seconds of this process (all threads) and of the jobs its workers ran in the stage (as the workers
            # measured them): the cost independent of other load
            ctx.timings[f"cpu/stage/{name}"] = round(_cpu_seconds() + ctx.worker_cpu - c0, 3)
            if progress:
                console.log(f"stage {name} done in {ctx.timings[f'stage/{name}']:.1f}s "
                            f"({ctx.timings[f'cpu/stage/{name}']:.1f} CPU s)")
    finally:
        ctx.close()
    ctx.timings["total"] = round(time.perf_counter() - t_all, 3)
    ctx.timings["cpu/total"] = round(_cpu_seconds() + ctx.worker_cpu - c_all, 3)
    return write_manifest(ctx, {"quick": bool(quick)})
