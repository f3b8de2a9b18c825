"""Per-job progress of ``reproduce``'s worker processes: rows per running job in a terminal, nothing when redirected."""
from __future__ import annotations

import io
import queue
import re
from pathlib import Path

from rich.console import Console

from loupe_bench.pipeline import Context, StageLog, SyntheticPlan, run_jobs, train_job
from loupe_bench.pipeline import progress as wp


class _Ctx:
    """A multiprocessing context stand-in whose Queue is a thread queue (for the in-process unit tests)."""

    class _Q(queue.Queue):
        def close(self):
            pass

        def cancel_join_thread(self):
            pass

    Queue = _Q


def test_step_reporter_throttles_and_always_sends_the_last_step(monkeypatch):
    q = queue.Queue()
    wp.init_worker(q)
    try:
        seen = []

        def job(n):
            cb = wp.step_reporter(min_interval=3600.0)  # only the first step and the final one pass the throttle
            for step in range(1, n + 1):
                cb(step, n, 1.0 / step)
            return "ok"

        result, cpu = wp.run_reported("train/s0/m", "train s0 m", job, (5,))
        assert result == "ok" and cpu >= 0
        while not q.empty():
            seen.append(q.get_nowait())
        assert seen[0] == ("train/s0/m", "train s0 m", 0, None, "starting")  # the announcement
        assert [m[2] for m in seen[1:]] == [1, 5]
        assert seen[-1] == ("train/s0/m", "train s0 m", 5, 5, "loss 0.2000")
        assert wp.step_reporter() is None  # no current job any more
    finally:
        wp.init_worker(None)
    assert wp.step_reporter() is None  # nothing reported without a queue


def test_live_rows_follow_running_jobs_only():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with wp.LiveJobs(console, _Ctx(), enabled=True) as live:
        live.handle(("train/s0/a", "train s0 a", 0, None, ""))
        live.handle(("train/s0/b", "train s0 b", 3, 10, "loss 1.5000"))
        rows = live.rows()
        assert set(rows) == {"train/s0/a", "train/s0/b"}
        assert rows["train/s0/b"]["completed"] == 3 and rows["train/s0/b"]["total"] == 10
        assert rows["train/s0/b"]["info"] == "loss 1.5000"
        live.done("train/s0/a")
        live.handle(("train/s0/a", "train s0 a", 7, 10, "loss 0.1"))  # late message of a finished job: no row
        assert set(live.rows()) == {"train/s0/b"}
        assert live.last["train/s0/a"][2] == 7
    inert = wp.LiveJobs(console, _Ctx(), enabled=False)
    with inert:
        assert inert.queue is None and inert.rows() == {}


def _ctx(tmp_path, console, enabled=True) -> Context:
    plan = SyntheticPlan(models=["clip-tiny", "filip-tiny"], workers=2, worker_threads=1)
    log = StageLog(console, total=2, enabled=enabled)
    log.planned = {"train": 2}
    return Context(out=tmp_path, seeds=[0], plan=plan, log=log, console=console)


def _jobs(tmp_path, world, steps):
    over = {"steps": steps, "optim.warmup_steps": 1, "checkpoint.every": 0, "threads": 1, "log.progress": False,
            "data.batch_size": 8}
    return [(f"train/s0/{m}", f"train: {m}", train_job, (m, str(world), "tiny-cpu", str(tmp_path / m), 0, over))
            for m in ("clip-tiny", "filip-tiny")]


def test_reproduce_workers_report_training_steps_in_a_terminal(tmp_path, tiny_world, monkeypatch):
    """The real training jobs in two spawned workers: each job's final step, total and loss reach the display,
    rows are drawn on the terminal, and every row is gone at the end."""
    seen = {}
    orig_exit = wp.LiveJobs.__exit__

    def spy_exit(self, *exc):
        orig_exit(self, *exc)
        seen.update(self.last)
        seen["__rows__"] = self.rows()

    monkeypatch.setattr(wp.LiveJobs, "__exit__", spy_exit)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140)
    ctx = _ctx(tmp_path, console)
    run_jobs(ctx, "train", _jobs(tmp_path, tiny_world, steps=6))
    pool = ctx._pool
    run_jobs(ctx, "train", _jobs(tmp_path / "again", tiny_world, steps=2))  # a second stage: the same workers
    assert ctx._pool is pool and ctx.worker_cpu > 0
    ctx.close()
    assert ctx._pool is None
    for m in ("clip-tiny", "filip-tiny"):
        key, label, step, total, info = seen[f"train/s0/{m}"]
        assert (label, total) == (f"train s0 {m}", 2)  # the second stage's runs (same keys) are the last seen
        assert info.startswith("loss ") and float(info.split()[1]) > 0
        assert (tmp_path / m / "log.jsonl").is_file()
    assert seen["__rows__"] == {}
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "train s0 clip-tiny" in text or "train s0 filip-tiny" in text  # live rows were drawn
    assert "[2/2]" in text  # the stage log's per-job lines still come


def test_training_runs_longest_first(monkeypatch):
    """The train stage starts LOUPE (5 loss terms) and its ablations before CLIP / FILIP (1 term), in plan order
    within a rank — so the longest run never starts last on a free worker."""
    from loupe_bench import pipeline as rp
    from loupe_bench.pipeline import stages

    submitted = []
    ctx = _ctx(Path("/tmp/unused"), Console(file=io.StringIO()), enabled=False)
    ctx.plan = SyntheticPlan(models=["clip-tiny", "filip-tiny", "loupe-tiny", "loupe-no-tsa"], workers=2)
    monkeypatch.setattr(stages, "run_jobs", lambda c, kind, jobs, **kw: submitted.extend(j[0] for j in jobs))
    rp.stage_train(ctx)
    assert submitted == ["train/s0/loupe-tiny", "train/s0/loupe-no-tsa", "train/s0/clip-tiny", "train/s0/filip-tiny"]
    assert [rp.training_cost(rp.model_spec_mapping(m)) for m in ctx.plan.models] == [1, 1, 5, 4]


class _Live:
    def done(self, key):
        pass


def _thread_pool_ctx(console, models=("clip-tiny", "filip-tiny")):
    """A Context whose worker pool is a thread pool (the scheduling logic without spawned processes)."""
    from concurrent.futures import ThreadPoolExecutor

    plan = SyntheticPlan(models=list(models), workers=2, worker_threads=1)
    log = StageLog(console, total=10, enabled=False)
    ctx = Context(out=Path("."), seeds=[0], plan=plan, log=log, console=console)
    ctx._pool, ctx._live = ThreadPoolExecutor(max_workers=2), _Live()
    return ctx


def test_run_jobs_waits_for_started_jobs_without_running_them_again():
    ctx = _thread_pool_ctx(Console(file=io.StringIO()))
    calls = []

    def job(name):
        calls.append(name)
        return 0.5

    early = ctx._pool.submit(wp.run_reported, "eval/a", "eval a", job, ("a",))
    done = []
    run_jobs(ctx, "eval", [("eval/a", "a", job, ("a",)), ("eval/b", "b", job, ("b",))], started={"eval/a": early},
             on_done=lambda key, left: done.append((key, left)))
    ctx._pool.shutdown()
    assert sorted(calls) == ["a", "b"]  # a ran once, as the early job
    assert ctx.timings["eval/a"] == ctx.timings["eval/b"] == 0.5
    assert sorted(k for k, _ in done) == ["eval/a", "eval/b"] and sorted(left for _, left in done) == [0, 1]


def test_eval_jobs_of_a_trained_model_start_before_the_train_stage_ends(monkeypatch):
    """The train stage hands each finished model's eval jobs to the pool (idle workers run them while the last
    training jobs go on); the eval stage waits for them and runs every other job once."""
    from loupe_bench.pipeline import stages

    ctx = _thread_pool_ctx(Console(file=io.StringIO()))
    ctx.runs = {"s0/clip-tiny": "runs/s0/clip-tiny", "s0/filip-tiny": "runs/s0/filip-tiny"}
    calls = []

    def job(key):
        calls.append(key)
        return 0.25

    def fake_eval_jobs(c, which=None):
        pairs = which if which is not None else [(0, m) for m in c.plan.models]
        return [(f"eval/s{s}/{m}/{g}", f"eval {m} {g}", job, (f"eval/s{s}/{m}/{g}",)) for s, m in pairs for g in (0, 1)]

    monkeypatch.setattr(stages, "eval_jobs", fake_eval_jobs)
    stages._start_eval(ctx, "train/s0/clip-tiny")  # clip-tiny's training has finished; filip-tiny's goes on
    assert sorted(ctx.early_eval) == ["eval/s0/clip-tiny/0", "eval/s0/clip-tiny/1"]
    stages.stage_eval(ctx)
    ctx._pool.shutdown()
    assert sorted(calls) == sorted(k for k, *_ in fake_eval_jobs(ctx))  # each exactly once
    assert ctx.early_eval == {} and ctx.timings["eval/s0/clip-tiny"] == 0.5
    one = _thread_pool_ctx(Console(file=io.StringIO()))
    one.plan.workers = 1
    stages._start_eval(one, "train/s0/clip-tiny")  # one worker: nothing starts early
    assert one.early_eval == {}
    one._pool.shutdown()
