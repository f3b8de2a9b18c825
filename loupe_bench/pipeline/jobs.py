"""The worker jobs of the train and eval stages and the runner that executes them (in this process, or on the
reproduction's pool of spawned workers). The job functions are module-level, so spawned workers unpickle them by
their qualified name (``loupe_bench.pipeline.jobs.train_job``)."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

from .context import Context


def train_job(model: str, world: str, recipe: str, run: str, seed: int, overrides: Dict[str, Any]) -> float:
    """One training run (in a worker process when the plan has ``workers > 1``); returns its wall seconds."""
    from ..train.engine import train_model
    from .progress import step_reporter

    t0 = time.perf_counter()
    train_model(model, world, recipe, run, seed=seed, overrides=overrides or None, on_step=step_reporter())
    return time.perf_counter() - t0


def eval_job(run: str, specs: List[Dict[str, Any]], world: str, out_dir: str, seed: int,
             threads: Optional[int] = None, device: str = "cpu") -> float:
    """Evaluate one trained model on ``specs`` (in a worker process when ``workers > 1``); returns wall seconds."""
    import torch

    from ..tasks.evaluate import evaluate

    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    evaluate([run], specs, data_root=world, out_dir=out_dir, seed=seed, device=device)
    return time.perf_counter() - t0


def submit_job(ctx: Context, key: str, fn: Any, args: tuple):
    """Submit one job to the reproduction's worker pool (:meth:`Context.worker_pool`); its future."""
    from .progress import run_reported

    pool, _ = ctx.worker_pool()
    return pool.submit(run_reported, key, key.replace("/", " "), fn, args)


def run_jobs(ctx: Context, kind: str, jobs: List[Tuple[str, str, Any, tuple]], on_idle=None, on_done=None,
             started: Optional[Dict[str, Any]] = None) -> None:
    """Run ``(key, description, fn, args)`` jobs: in this process one after the other (``workers == 1``), else on
    the reproduction's pool of ``workers`` spawned processes (:meth:`Context.worker_pool`, kept from the train stage
    to the end of the eval stage). Each job's wall seconds land in ``ctx.timings[key]``, the CPU seconds its worker
    measured in ``ctx.worker_cpu``. ``on_idle`` is called once, in this process, as soon as fewer jobs are left than
    workers (a core is free); ``on_done(key, left)`` after each finished job (``left``: jobs of this call not yet
    finished). ``started``: key -> future of jobs already submitted to the pool (by an earlier stage's
    ``on_done``): they are not submitted again, only waited for and recorded like the others."""
    workers = max(1, int(ctx.plan.workers))
    started = dict(started or {})
    if (workers == 1 or len(jobs) == 1) and not started:
        for i, (key, desc, fn, args) in enumerate(jobs):
            with ctx.unit(kind, desc):
                ctx.timings[key] = round(fn(*args), 3)
            if on_done is not None:
                on_done(key, len(jobs) - i - 1)
        return
    from concurrent.futures import as_completed

    if ctx.log.enabled:
        ctx.console.log(f"{kind}: {len(jobs)} jobs on {workers} worker processes "
                        f"({ctx.plan.worker_threads} torch thread(s) each)"
                        + (f", {len(started)} started during the previous stage" if started else ""))
    # a live row per running job (training: step, loss, ETA) in a terminal; one line per finished job otherwise
    pool, live = ctx.worker_pool()
    futures = {}
    for key, desc, fn, args in jobs:
        fut = started.get(key)
        futures[fut if fut is not None else submit_job(ctx, key, fn, args)] = (key, desc)
    left = len(futures)
    for fut in as_completed(futures):
        left -= 1
        if on_idle is not None and left < workers:
            on_idle()
            on_idle = None
        key, desc = futures[fut]
        live.done(key)
        seconds, cpu = fut.result()  # a failed job raises here, naming nothing half-written (results are atomic)
        ctx.timings[key] = round(seconds, 3)
        ctx.worker_cpu += cpu
        ctx.log.finished(kind, desc, seconds, parallel=workers)
        if on_done is not None:
            on_done(key, left)

