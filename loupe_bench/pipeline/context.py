"""What one reproduction run carries: its stage log (:class:`StageLog`), its :class:`Context` (plan, seeds, paths,
timings, the worker pool), the manifest ``reproduce.json`` and the metrics this machine cannot compute."""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..utils.io import atomic_write_json
from .plan import SyntheticPlan


class StageLog:
    """Progress of the whole reproduction as log lines: unit i/N, stage, model, elapsed and ETA.

    Lines, not a live bar, so that the training engine's own rich progress bar (step, loss, ETA) can show inside a
    stage. The ETA sums, over stages, the mean time of the stage's finished units × its units left.
    """

    def __init__(self, console, total: int, enabled: bool = True):
        self.console, self.total, self.enabled = console, total, enabled
        self.done = 0
        self.t0 = time.perf_counter()
        self.unit_t0 = self.t0
        self.kind_times: Dict[str, List[float]] = {}
        self.current = ("", "")
        self.planned: Dict[str, int] = {}

    def start(self, kind: str, description: str) -> None:
        self.current = (kind, description)
        self.unit_t0 = time.perf_counter()
        if self.enabled:
            self.console.log(f"[bold cyan][{self.done + 1}/{self.total}][/] {description}  "
                             f"(elapsed {self._fmt(time.perf_counter() - self.t0)}, ETA {self.eta()})")

    def finish(self) -> None:
        kind = self.current[0]
        self.kind_times.setdefault(kind, []).append(time.perf_counter() - self.unit_t0)
        self.done += 1

    def finished(self, kind: str, description: str, seconds: float, parallel: int = 1) -> None:
        """Record a unit run in a worker process (started elsewhere) and log it with the ETA."""
        self.kind_times.setdefault(kind, []).append(seconds)
        self.done += 1
        if self.enabled:
            self.console.log(f"[bold cyan][{self.done}/{self.total}][/] {description} done in {seconds:.1f}s  "
                             f"(elapsed {self._fmt(time.perf_counter() - self.t0)}, ETA {self.eta(parallel)})")

    def eta(self, parallel: int = 1) -> str:
        """Remaining time from the mean unit time of each stage (divided by the jobs running at once); ``>= t``
        while a stage has no finished unit yet."""
        left, unknown = 0.0, False
        for kind, n in self.planned.items():
            times = self.kind_times.get(kind, [])
            remaining = n - len(times) - (1 if kind == self.current[0] else 0)
            if remaining <= 0:
                continue
            if times:
                left += remaining * sum(times) / len(times) / max(1, parallel)
            else:
                unknown = True
        if unknown and left == 0.0:
            return "?"
        return (">= " if unknown else "") + self._fmt(left)

    @staticmethod
    def _fmt(s: float) -> str:
        return f"{int(s // 60)}:{int(s % 60):02d}"


@dataclass
class Context:
    out: Path
    seeds: List[int]
    plan: SyntheticPlan
    log: StageLog
    console: Any
    timings: Dict[str, float] = field(default_factory=dict)
    runs: Dict[str, str] = field(default_factory=dict)      # "s<seed>/<model>" -> relative run dir
    tasks: List[str] = field(default_factory=list)
    missing: Dict[str, Dict[str, str]] = field(default_factory=dict)  # task -> metric -> why it cannot be computed

    @property
    def world(self) -> Path:
        return self.out / "world"

    def rel(self, p: Path) -> str:
        return str(Path(p).relative_to(self.out))

    @contextlib.contextmanager
    def unit(self, kind: str, description: str):
        self.log.start(kind, description)
        yield
        self.log.finish()

    #: the worker pool and its live display, shared by the train and eval stages (started on first use)
    _pool: Any = None
    _live: Any = None
    #: CPU seconds the worker processes reported for their jobs so far
    worker_cpu: float = 0.0
    #: eval jobs the train stage submitted to idle workers (key -> future); the eval stage waits for them
    early_eval: Dict[str, Any] = field(default_factory=dict)
    #: the thread importing the report's modules ahead of the report stage (joined there)
    prewarm: Any = None

    def worker_pool(self):
        """``(pool, live)``: ``plan.workers`` spawned processes kept for the whole reproduction (each imports torch
        and the model zoo once, not once per stage) and the terminal's live rows (inert when not a terminal)."""
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            from .progress import LiveJobs, init_worker

            spawn = mp.get_context("spawn")
            live = LiveJobs(self.console, spawn, enabled=self.log.enabled and self.console.is_terminal)
            self._live = live.__enter__()
            self._pool = ProcessPoolExecutor(max_workers=max(1, int(self.plan.workers)), mp_context=spawn,
                                             initializer=init_worker, initargs=(live.queue,))
        return self._pool, self._live

    def close(self) -> None:
        """Stop the worker pool (waiting for its processes) and the live display."""
        pool, live, self._pool, self._live = self._pool, self._live, None, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if live is not None:
            live.__exit__(None, None, None)


def missing_metrics(task_names: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """``task -> metric -> reason`` for every metric this machine cannot compute (asked of each task's adapter)."""
    from ..tasks import TASK_TYPES, load_adapters, load_task

    load_adapters()
    out: Dict[str, Dict[str, str]] = {}
    for name in task_names:
        spec = load_task(name)
        gone = TASK_TYPES.get(spec.type).missing_metrics(spec)
        if gone:
            out[spec.name] = dict(gone)
    return out


def announce_missing(console, missing: Dict[str, Dict[str, str]]) -> None:
    """Say at the start, loudly, which metrics the report will lack and how to get them."""
    if not missing:
        return
    console.print("[bold yellow]warning: some metrics cannot be computed on this machine and will be missing "
                  "from the report:[/bold yellow]")
    for task, metrics in sorted(missing.items()):
        by_reason: Dict[str, List[str]] = {}
        for metric, reason in metrics.items():
            by_reason.setdefault(reason, []).append(metric)
        for reason, names in by_reason.items():
            console.print(f"[yellow]  {task}: {', '.join(names)} — {reason}[/yellow]")


def write_manifest(ctx: Context, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``reproduce.json`` (options, seeds, plan, tasks, relative paths, timings, missing metrics, environment;
    ``extra`` keys on top) into ``ctx.out`` atomically and return its path."""
    from ..utils.provenance import environment_info

    man = {
        "schema": "loupe-bench/reproduce/v1",
        "kind": "synthetic",
        "seeds": ctx.seeds,
        "plan": asdict(ctx.plan),
        "tasks": ctx.tasks,
        "world": "world",
        "runs": {k.split("/", 1)[1]: v for k, v in ctx.runs.items() if k.startswith(f"s{ctx.seeds[0]}/")},
        "runs_all": ctx.runs,
        "results": "results",
        "report": "report",
        "timings": ctx.timings,
        "missing_metrics": ctx.missing,
        "environment": environment_info(ctx.plan.eval_device),
    }
    man.update(extra or {})
    return atomic_write_json(ctx.out / "reproduce.json", man)
