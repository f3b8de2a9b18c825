"""The main job: ``loupe-bench reproduce synthetic`` and ``loupe-bench reproduce paper``.

``reproduce_synthetic`` runs, in one folder::

    OUT/
      reproduce.json        manifest: options, seeds, models, tasks, stage timings, paths (relative)
      world/                the synthetic world (generate_world)
      runs/s<seed>/<model>/ one run directory per model and seed (train, the one shared recipe)
      results/s<seed>/      one result JSON per (model, task, split) (evaluate)
      report/               report.html, report.md, results.csv (render.report)

Stages are data in :data:`STAGES` (a registry), each a function ``(ctx) -> None``; a rich progress bar shows the
stage, model, overall progress and ETA. Every stage is deterministic for a given seed: re-running with the same
seed gives the same numbers.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import SpecError
from ..registry import Registry
from ..utils.io import atomic_write_json, read_json

STAGES = Registry("reproduce stage")

MAIN_MODELS = ("clip-tiny", "filip-tiny", "loupe-tiny")
ABLATIONS = ("loupe-no-tsa", "loupe-no-fsa", "loupe-sampling")
#: upper bounds trained with the same recipe that are NOT LOUPE (they use box labels), evaluated like the ablations
BOUNDS = ("loupe-oracle-regions",)


@dataclass
class SyntheticPlan:
    """What ``reproduce synthetic`` runs. ``quick`` plans differ only in size/steps, never in protocol per model.

    Attributes:
        world_size: synthetic world size (``tiny``/``small``/``medium``).
        image_size: world image side in pixels.
        world_seed: seed of the world generator (the world is shared by every training seed).
        models: model specs trained and evaluated (same recipe, same seed).
        recipe: the one training recipe.
        recipe_overrides: dotted overrides applied to the recipe for every model alike.
        tasks: task spec names evaluated (default: every shipped task on the synthetic world). The task specs are
            evaluated unchanged except for ``task_overrides``.
        task_overrides: dotted overrides applied to every task spec where the key exists (e.g. fewer bootstrap
            replicates: ``{"bootstrap.n_resamples": 200, "options.bootstrap_resamples": 20}``). They enter the
            protocol fingerprint, so results of plans with different overrides are never merged or gated together.
        model_task_types: per model, the task types it is evaluated on (models not listed: every task). The
            default plan evaluates the LOUPE ablations on the region and alignment tasks (what the ablated terms
            act on: retrieval, classification, detection, grounding), not on captioning and the linear probe.
        workers: processes that train / evaluate different models at once (``1``: one after the other in this
            process). Tiny models use two cores far better as two single-threaded jobs than as one two-threaded
            job (measured on 2 cores: training 1.5x, evaluation 1.7x the throughput).
        worker_threads: torch threads of each job when ``workers > 1`` (recorded in each run's recipe, so a plan
            gives the same numbers on any machine).
        quick: the plan leaves out the task types in :data:`NOT_IN_QUICK`.
        seeds: number of training seeds the CLI runs when ``--seeds`` is not given (seeds ``0 .. seeds-1``).
        model_overrides: dotted overrides applied to every model spec where the key exists, e.g.
            ``{"image_tower.kwargs.depth": 1}``; ``"MODEL:dotted.key"`` applies to that model only and creates the
            key (as ``task_overrides``; see :func:`model_spec_mapping`). Empty: the shipped specs are trained by name.
            The runs keep the spec's name: a plan with overrides is a different protocol (the manifest records them).
        eval_device: device of the evaluation jobs (``cpu``, ``cuda``, ``auto``); training uses the recipe's.
        world_workers: processes rendering the world (``None``: :func:`~loupe_bench.data.synth.generate_world`'s
            default, up to 4); the world does not depend on it.
    """

    world_size: str = "small"
    image_size: int = 64
    world_seed: int = 0
    models: List[str] = field(default_factory=lambda: list(MAIN_MODELS + ABLATIONS + BOUNDS))
    recipe: str = "tiny-cpu"
    recipe_overrides: Dict[str, Any] = field(default_factory=dict)
    tasks: Optional[List[str]] = None
    task_overrides: Dict[str, Any] = field(default_factory=dict)
    model_task_types: Dict[str, List[str]] = field(default_factory=dict)
    workers: int = 2
    worker_threads: int = 1
    quick: bool = False
    seeds: int = 1
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    eval_device: str = "cpu"
    world_workers: Optional[int] = None


#: task types the LOUPE ablations are evaluated on in the default plan
ABLATION_TASK_TYPES = ["retrieval", "classification", "detection", "grounding", "phrase-grounding", "token-interaction"]


def default_plan(quick: bool = False) -> SyntheticPlan:
    """The default plan (all models incl. LOUPE ablations) or the quick CI plan (main models, fewer steps)."""
    if quick:
        return SyntheticPlan(models=list(MAIN_MODELS), recipe_overrides=dict(QUICK_OVERRIDES), quick=True,
                             task_overrides=dict(QUICK_TASK_OVERRIDES))
    return SyntheticPlan(task_overrides=dict(DEFAULT_TASK_OVERRIDES),
                         model_task_types={m: list(ABLATION_TASK_TYPES) for m in ABLATIONS + BOUNDS})


# quick variant of the recipe: the same for every model (sized so --quick stays near 2 minutes on 2 cores)
QUICK_OVERRIDES: Dict[str, Any] = {"steps": 100, "optim.warmup_steps": 10, "checkpoint.every": 0}
_CAPTION_QUICK_METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"]
# Task overrides are recorded in the task spec, hence in the protocol fingerprint: quick and default results are
# never merged or gated against each other. Detection re-accumulates one COCOeval matching per replicate (cheap);
# corpus BLEU / CIDEr-D are recomputed by pycocoevalcap per replicate (~0.7 s each on the small world), so the
# reproduction leaves their intervals out (ROUGE-L keeps its per-image bootstrap). --quick also shortens the
# caption head's training and leaves out METEOR, whose JVM spends ~11 s loading its paraphrase tables.
DEFAULT_TASK_OVERRIDES: Dict[str, Any] = {"synthetic-captioning:options.bootstrap_resamples": 0}
QUICK_TASK_OVERRIDES: Dict[str, Any] = {
    "bootstrap.n_resamples": 200,
    "options.bootstrap_resamples": 50,
    "options.head.steps": 100,
    "synthetic-captioning:options.bootstrap_resamples": 0,
    "synthetic-captioning:metrics": _CAPTION_QUICK_METRICS,
    "synthetic-captioning:options.decoding": "greedy",
    "synthetic-captioning:options.use_java": False,
    # grounding skips the val split (the model-selection split); test and the compositional split stay
    **{f"synthetic-{p}:splits": ["test", "comptest"] for p in (
        "grounding-grid", "grounding-gt-boxes", "grounding-native", "grounding-head-phrase", "grounding-native-scorer",
        "phrase-grounding-gt-boxes", "phrase-grounding-grid", "phrase-grounding-native")},
}


#: the named plans of ``reproduce synthetic --plan NAME``: each entry is a function ``() -> SyntheticPlan``
PLANS = Registry("reproduce plan")

PLANS.register("default", help="CLIP, FILIP, LOUPE, its ablations and the oracle-regions bound, tiny towers, "
               "small world, tiny-cpu (2 CPU cores, minutes)")(lambda: default_plan(False))
PLANS.register("quick", help="CI variant: CLIP, FILIP, LOUPE, 100 steps, lighter task options "
               "(~2 min on 2 cores)")(lambda: default_plan(True))

#: models of the GPU plan: one tower size (ViT-S/16 at 128 px + BERT 4 x 384) for every compared model
GPU_MAIN_MODELS = ("clip-small", "filip-small", "loupe-small")
GPU_ABLATIONS = ("loupe-small-no-tsa", "loupe-small-no-fsa", "loupe-small-sampling", "loupe-small-oracle-regions")
#: task options of the GPU plan: fewer bootstrap replicates per result (the tables' intervals are over the three
#: seeds), grounding without the val split (the model-selection split; test and comptest stay), captions without
#: the JVM metrics (METEOR/SPICE: a JVM per model, absent on most GPU hosts). The medium world's evaluation is
#: CPU-bound (annotation parsing, matching, bootstrap): see :func:`gpu_plan`.
GPU_TASK_OVERRIDES: Dict[str, Any] = {
    "bootstrap.n_resamples": 200,
    "options.bootstrap_resamples": 50,
    "synthetic-captioning:options.bootstrap_resamples": 0,
    "synthetic-captioning:metrics": _CAPTION_QUICK_METRICS,
    "synthetic-captioning:options.use_java": False,
    **{k: v for k, v in QUICK_TASK_OVERRIDES.items() if k.endswith(":splits")},
}


@PLANS.register("gpu", help="CLIP, FILIP, LOUPE, its ablations and the oracle-regions bound with ViT-S/16 towers "
                "at 128 px on the medium world, bf16, 3 seeds (one H200, <= 10 min estimated; not yet run)")
def gpu_plan() -> SyntheticPlan:
    """The GPU plan: the question at a scale where it can show, sized for <= 10 minutes of one H200-class GPU.

    What: the ``medium`` world (20 000 train / 1 000 val / 1 000 test / 1 000 comptest images) at 128 px; the
    ``*-small`` specs (:data:`GPU_MAIN_MODELS`, :data:`GPU_ABLATIONS`: ViT-S/16 image tower, 12 blocks x 384, 6 heads,
    mean-pooled, no class token; BERT 4 x 384 text tower; 256-d; otherwise the tiny specs unchanged, ``tsa.
    target_images`` 4 instead of 2) with the ``gpu-bf16`` recipe (bf16 autocast, batch 256, 300 steps, AdamW 1e-3),
    three seeds, every task of the default plan (ablations and the oracle bound on the region and alignment task
    types, as the default plan's ablations), evaluation on CUDA.

    Why 128 px: ViT-S/16 at 128 px has an 8 x 8 patch grid, the grid of the tiny specs: the token-level game keeps its
    64 players and every patch-unit setting (box size, jitter, top-k, NMS) means the same as in the tuned tiny
    specs. 224 px would give 196 players (3x the tokens, ~3.3x the FLOPs per image, noisier Monte-Carlo contexts).
    Why 300 steps: the LOUPE specs' schedules are in steps (box_start 60, FSA start 60 + ramp 60, neural warm-up
    20); at tiny-cpu's 300 steps they mean the same. 300 x 256 = 76.8k pairs, ~3.8 epochs of the medium world.

    Time estimate (arithmetic; NOT measured on a GPU yet):

    * FLOPs per image, forward: per ViT block ``24 T W^2 + 4 T^2 W`` with T = 64 tokens, W = 384:
      226.5 M + 6.3 M = 232.8 M; x 12 blocks + patch embedding (37.7 M) = 2.83 GFLOP. Text, per BERT layer with L =
      32 tokens: ``24 L W^2 + 4 L^2 W`` = 114.8 M; x 4 = 0.46 GFLOP. Training ~3x forward: 9.9 GFLOP per pair,
      2.53 TFLOP per step at batch 256, 0.76 PFLOP per 300-step CLIP run: 3 s at 250 TFLOP/s (25 % of the H200's
      ~990 TFLOP/s dense bf16). Compute is not the limit; kernel dispatch is.
    * Dispatch: ``clip-tiny`` steps take 14 ms on an H200 with 2 + 2 blocks (measured, ``bench train-step``), i.e.
      launch-bound; scaled by blocks (16 vs 4) a ``clip-small`` step is ~50 ms, FILIP ~55 ms.
    * ℒ_TSA's tower game (``models/masked_game.py``): the masks of one step are grouped by kept-patch count
      (1..64), one tower call per group: <= 64 calls x 12 blocks ~ 0.1 ms dispatch each = ~77 ms per step,
      independent of the number of masks. Masks: 4 images x 24 coalitions x 8 contexts x 2 (coalition value) =
      1 536 per warm-up step (~half the tokens each: 2.2 TFLOP, ~9 ms), ~400 after warm-up (routing <= 25 %).
      Hence ``tsa.target_images`` 4: twice the tiny specs' coalitions for ~5 ms more; ``tsa.last_blocks`` stays
      null (the whole tower re-encodes the masked image, the tiny specs' game). LOUPE step ~50 + 77 + 10 (ℒ_FSA,
      ℒ_NSI, region head) = ~135 ms; ``-no-tsa`` ~60, ``-no-fsa`` ~125, ``-sampling`` ~140, oracle ~135.
    * Training: per seed 50 + 55 + 135 + 60 + 125 + 140 + 135 = 700 ms per step, x 300 steps x 3 seeds = 630 s
      one run after another, with the GPU busy ~15 % of it (~80 s of kernels). ``workers`` 4: four runs at once
      (processes on the one GPU) interleave their kernels; bound by host dispatch on 4 cores: ~630 / 4 = ~160 s
      (~3 min; ~10 min with ``--workers 1``). Data: 256 JPEG decodes + crops per step (~0.1 CPU s) on 3 loader
      workers per run; 4 x (1 + 3) processes on the 16-core host.
    * World: 23 000 images; measured on the 2-core box: ~16 ms per image rendered in a worker, ~5 ms per image in
      the writing process (files, JSON): ~2 min with 8 workers (bound by the writer), once (reused when
      ``world/world.json`` matches).
    * Evaluation (CPU-bound): measured on the 2-core box, one thread, small world, all 16 tasks of one tiny model:
      222 s (captioning 97 s, grounding/phrase grounding 82 s). On the medium world the grounding tasks re-parse
      the whole world's refer annotations per task and split (~1.7 s on the small world, x 9.2 on the medium one)
      and match 3-5x more queries: ~25 CPU s per grounding task-split, x 12 task-splits (val dropped) x 21
      model-seeds = ~6 300 CPU s: ~7 min on 16 cores (``workers`` 4 jobs at a time: ~26 min) if every task parsed
      its data afresh. The tasks of one evaluation process now share one parse per data set and split, and the
      query-text features (tasks/common.py ``load_records``, ``encode_texts``: on the small world's eight grounding
      protocols 21 s -> 7 s of parsing, 17 s -> 10 s of text encoding, identical results), which should bring it
      to ~2-3 min; **this stage is the risk to the budget**. A GPU host's cores are likely faster than the 2-core
      box's.
    * Total: world ~2 + train ~3 + eval ~3-7 + report ~0.5 min: 9-13 min on a first run; the GPU run itself
      will say (``reproduce.json`` timings per stage and run).
    """
    return SyntheticPlan(
        world_size="medium", image_size=128, models=list(GPU_MAIN_MODELS + GPU_ABLATIONS), recipe="gpu-bf16",
        task_overrides=dict(GPU_TASK_OVERRIDES),
        model_task_types={m: list(ABLATION_TASK_TYPES) for m in GPU_ABLATIONS},
        workers=4, worker_threads=2, seeds=3, eval_device="cuda", world_workers=8)


def get_plan(name: str) -> SyntheticPlan:
    """A fresh :class:`SyntheticPlan` of the registered plan ``name`` (:data:`PLANS`); unknown: SpecError."""
    return PLANS.get(name)()


def apply_overrides(data: Dict[str, Any], name: str, overrides: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Apply dotted ``overrides`` to the spec mapping ``data`` (named ``name``) in place and return it.

    ``"dotted.key": value`` replaces an existing key only; ``"NAME:dotted.key": value`` applies to the spec named
    ``NAME`` only, creating the key (and missing parent mappings) when needed.
    """
    for key, value in (overrides or {}).items():
        create = ":" in key  # "name:dotted.key" applies to that spec only, creating the key if needed
        if create:
            only, key = key.split(":", 1)
            if only != name:
                continue
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if create and isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and (create or parts[-1] in node):
            node[parts[-1]] = value
    return data


def model_spec_mapping(name: str, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The shipped model spec ``name`` as a mapping with the plan's dotted ``model_overrides`` applied (rules of
    :func:`apply_overrides`), e.g. ``{"image_tower.kwargs.depth": 1, "text_tower.config.num_hidden_layers": 1}``."""
    from ..models.factory import get_spec

    return apply_overrides(get_spec(name), name, overrides)


def plan_model(plan: SyntheticPlan, name: str):
    """What the train stage passes for model ``name``: the spec name (no ``model_overrides``), else the spec
    mapping with the overrides applied."""
    return model_spec_mapping(name, plan.model_overrides) if plan.model_overrides else name


def task_spec_mapping(name: str, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The shipped task spec ``name`` as a mapping, with dotted ``overrides`` applied where the key exists.

    A key ``"TASK:dotted.key"`` applies to the task named ``TASK`` only, and is created when missing (e.g.
    ``"synthetic-captioning:options.use_java"``).
    """
    import copy

    from ..specs import load_yaml, spec_files

    for f in spec_files("tasks"):
        data = load_yaml(f)
        if str(data.get("name", f.stem)) != name:
            continue
        data = copy.deepcopy(data)
        data.setdefault("name", f.stem)
        return apply_overrides(data, name, overrides)
    raise SpecError(f"unknown task {name!r}")


#: synthetic task types the reproduction plans leave out until they are chosen for them (the token-interaction
#: probe costs ~20 s of game evaluations per model on one thread; see tasks/README.md)
#: task types only the default plan runs (the token-level probe re-encodes ~10^4 masked images per model)
NOT_IN_QUICK: Tuple[str, ...] = ("token-interaction",)


def synthetic_tasks(quick: bool = False) -> List[str]:
    """Every shipped task spec whose dataset is the synthetic world (with ``quick``, types in
    :data:`NOT_IN_QUICK` left out)."""
    from ..specs import load_yaml, spec_files

    out = []
    for f in spec_files("tasks"):
        data = load_yaml(f)
        if quick and str(data.get("type", "")) in NOT_IN_QUICK:
            continue
        ds = data.get("dataset") or {}
        name = ds.get("name") if isinstance(ds, dict) else ds
        if str(name).startswith("synthetic"):
            out.append(str(data.get("name", f.stem)))
    if not out:
        raise SpecError("no synthetic task specs found (tasks/*.yaml with dataset.name: synthetic)")
    return sorted(out)


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

    def worker_pool(self):
        """``(pool, live)``: ``plan.workers`` spawned processes kept for the whole reproduction (each imports torch
        and the model zoo once, not once per stage) and the terminal's live rows (inert when not a terminal)."""
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            from .worker_progress import LiveJobs, init_worker

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


def _world_matches(world: Path, plan: SyntheticPlan) -> bool:
    """A world on disk is reused when it was written by this world version with the plan's options."""
    from ..data.synth import WORLD_VERSION

    meta = world / "world.json"
    if not meta.is_file():
        return False
    data = read_json(meta)
    opts = data.get("options", data)
    return (data.get("version") == WORLD_VERSION and opts.get("seed") == plan.world_seed
            and opts.get("size") == plan.world_size and opts.get("image_size") == plan.image_size)


@STAGES.register("world")
def stage_world(ctx: Context) -> None:
    """Generate the synthetic world (reused when ``world/world.json`` records the same options)."""
    from ..data.synth import generate_world

    with ctx.unit("world", f"world: generate ({ctx.plan.world_size}, {ctx.plan.image_size}px)"):
        if not _world_matches(ctx.world, ctx.plan):
            generate_world(ctx.world, seed=ctx.plan.world_seed, size=ctx.plan.world_size,
                           image_size=ctx.plan.image_size, workers=ctx.plan.world_workers)


def _train_job(model: str, world: str, recipe: str, run: str, seed: int, overrides: Dict[str, Any]) -> float:
    """One training run (in a worker process when the plan has ``workers > 1``); returns its wall seconds."""
    from ..train.engine import train
    from .worker_progress import step_reporter

    t0 = time.perf_counter()
    train(model, world, recipe, run, seed=seed, overrides=overrides or None, on_step=step_reporter())
    return time.perf_counter() - t0


def _eval_job(run: str, specs: List[Dict[str, Any]], world: str, out_dir: str, seed: int,
              threads: Optional[int] = None, device: str = "cpu") -> float:
    """Evaluate one trained model on ``specs`` (in a worker process when ``workers > 1``); returns wall seconds."""
    import torch

    from ..tasks.evaluate import evaluate

    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    evaluate([run], specs, data_root=world, out_dir=out_dir, seed=seed, device=device)
    return time.perf_counter() - t0


def _run_jobs(ctx: "Context", kind: str, jobs: List[Tuple[str, str, Any, tuple]], on_idle=None) -> None:
    """Run ``(key, description, fn, args)`` jobs: in this process one after the other (``workers == 1``), else on
    the reproduction's pool of ``workers`` spawned processes (:meth:`Context.worker_pool`, kept from the train stage
    to the end of the eval stage). Each job's wall seconds land in ``ctx.timings[key]``, the CPU seconds its worker
    measured in ``ctx.worker_cpu``. ``on_idle`` is called once, in this process, as soon as fewer jobs are left than
    workers (a core is free)."""
    workers = max(1, int(ctx.plan.workers))
    if workers == 1 or len(jobs) == 1:
        for key, desc, fn, args in jobs:
            with ctx.unit(kind, desc):
                ctx.timings[key] = round(fn(*args), 3)
        return
    from concurrent.futures import as_completed

    from .worker_progress import run_reported

    if ctx.log.enabled:
        ctx.console.log(f"{kind}: {len(jobs)} jobs on {workers} worker processes "
                        f"({ctx.plan.worker_threads} torch thread(s) each)")
    # a live row per running job (training: step, loss, ETA) in a terminal; one line per finished job otherwise
    pool, live = ctx.worker_pool()
    futures = {pool.submit(run_reported, key, key.replace("/", " "), fn, args): (key, desc)
               for key, desc, fn, args in jobs}
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


def _prewarm_report_imports() -> None:
    """Import what the report stage needs (torch, the model zoo, timm / transformers, matplotlib) in a background
    thread once the training jobs left are fewer than the workers (a core is free then, and this process only
    waits). Saves ~8 s of the report stage's wall time; a failure here is left to the report stage to raise."""
    import threading

    def work() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401

            from .. import models  # noqa: F401
            from ..models import dual_encoder, loupe  # noqa: F401
            from . import explain, plots, render  # noqa: F401
            import timm  # noqa: F401
            import transformers  # noqa: F401
            from transformers import BertModel  # noqa: F401
        except Exception:  # pragma: no cover - the report stage imports the same modules and raises there
            return

    threading.Thread(target=work, name="loupe-prewarm", daemon=True).start()


def _worker_overrides(ctx: "Context") -> Dict[str, Any]:
    over = dict(ctx.plan.recipe_overrides or {})
    if ctx.plan.workers > 1:
        # no per-step progress bars from concurrent processes; fixed threads per job (deterministic per plan)
        over.update({"threads": int(ctx.plan.worker_threads), "log.progress": False})
    return over


@STAGES.register("train")
def stage_train(ctx: Context) -> None:
    """Train every model with the one recipe, for every seed (``plan.workers`` models at once)."""
    jobs = []
    for seed in ctx.seeds:
        for model in ctx.plan.models:
            run = ctx.out / "runs" / f"s{seed}" / model
            jobs.append((f"train/s{seed}/{model}", f"train: {model} (seed {seed}, recipe {ctx.plan.recipe})",
                         _train_job, (plan_model(ctx.plan, model), str(ctx.world), ctx.plan.recipe, str(run), seed,
                                      _worker_overrides(ctx))))
            ctx.runs[f"s{seed}/{model}"] = ctx.rel(run)
    if ctx.plan.workers > 1:  # longest first, so that no long run starts last on a free worker (stable: plan order)
        cost = {m: training_cost(model_spec_mapping(m, ctx.plan.model_overrides)) for m in ctx.plan.models}
        jobs.sort(key=lambda j: -cost[j[0].rsplit("/", 1)[1]])
    _run_jobs(ctx, "train", jobs, on_idle=_prewarm_report_imports)


def training_cost(spec: Dict[str, Any]) -> int:
    """A rank of a model's training cost from its spec: the number of loss terms with a non-zero weight (CLIP and
    FILIP 1, LOUPE 5, an ablation 4). Used only to start the longest runs first (longest-processing-time-first on
    the worker pool); it never changes what a run computes."""
    weights = (spec.get("loss") or {}).get("weights") or {}
    return sum(1 for w in weights.values() if isinstance(w, (int, float)) and w != 0) or 1


#: with worker processes, each model's tasks are evaluated in these groups (tasks of a group share encoded
#: images), longest first, so that the workers stay busy to the end
EVAL_GROUPS: Tuple[Tuple[str, ...], ...] = (("captioning", "linear-probe"), ("grounding", "phrase-grounding"), ("detection",),
                                            ("retrieval", "classification"))


@STAGES.register("eval")
def stage_eval(ctx: Context) -> None:
    """Evaluate every trained model on every synthetic task (one result JSON per model × task × split)."""
    jobs = []
    parallel = ctx.plan.workers > 1
    threads = int(ctx.plan.worker_threads) if parallel else None
    for seed in ctx.seeds:
        for model in ctx.plan.models:
            run = ctx.out / ctx.runs[f"s{seed}/{model}"]
            specs = [task_spec_mapping(t, ctx.plan.task_overrides) for t in ctx.tasks]
            types = ctx.plan.model_task_types.get(model)
            if types is not None:
                specs = [sp for sp in specs if sp.get("type") in types]
            out_dir = str(ctx.out / "results" / f"s{seed}")
            if not parallel:
                jobs.append((f"eval/s{seed}/{model}", f"eval: {model} (seed {seed}) on {len(specs)} tasks",
                             _eval_job, (str(run), specs, str(ctx.world), out_dir, seed, threads,
                                         ctx.plan.eval_device)))
                continue
            grouped = [[sp for sp in specs if sp.get("type") in g] for g in EVAL_GROUPS]
            grouped.append([sp for sp in specs if not any(sp.get("type") in g for g in EVAL_GROUPS)])
            for gi, group in enumerate(grouped):
                if group:
                    names = ", ".join(sorted({str(sp.get("type")) for sp in group}))
                    jobs.append((f"eval/s{seed}/{model}/{gi}", f"eval: {model} (seed {seed}): {names}",
                                 _eval_job, (str(run), group, str(ctx.world), out_dir, seed, threads,
                                             ctx.plan.eval_device)))
    if parallel:  # longest groups first (group index), across models and seeds
        jobs.sort(key=lambda j: int(j[0].rsplit("/", 1)[1]))
    ctx.log.total += len(jobs) - ctx.log.planned.get("eval", 0)
    ctx.log.planned["eval"] = len(jobs)
    _run_jobs(ctx, "eval", jobs)
    if parallel:  # per-model totals, as in a sequential run
        for seed in ctx.seeds:
            for model in ctx.plan.models:
                parts = [v for k, v in ctx.timings.items() if k.startswith(f"eval/s{seed}/{model}/")]
                ctx.timings[f"eval/s{seed}/{model}"] = round(sum(parts), 3)


@STAGES.register("report")
def stage_report(ctx: Context) -> None:
    """Write the manifest, then the report (console table, CSV, Markdown, HTML with plots and explanations)."""
    from .render import report

    with ctx.unit("report", "report: console table, CSV, Markdown, HTML"):
        write_manifest(ctx)
        runs = {k.split("/", 1)[1]: ctx.out / v for k, v in ctx.runs.items() if k.startswith(f"s{ctx.seeds[0]}/")}
        report(ctx.out / "results", out_dir=ctx.out / "report", runs=runs, world_dir=ctx.world, console=ctx.console,
               title="loupe-bench synthetic reproduction")


STAGE_ORDER = ("world", "train", "eval", "report")


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


def _cpu_seconds() -> float:
    """CPU seconds of this process (all its threads); the worker processes report their jobs' own CPU seconds."""
    return time.process_time()


def reproduce_synthetic(out, seeds: Sequence[int] = (0,), quick: bool = False, *, plan: Optional[SyntheticPlan] = None,
                        console=None, progress: bool = True) -> Path:
    """Run the whole synthetic reproduction into ``out`` and return the manifest path.

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


# ------------------------------------------------------------------------------------------------ paper
def paper_task_specs(data_root: Optional[Path] = None) -> List[str]:
    """Shipped task specs whose (type, dataset, split) the paper tables hold numbers for.

    With ``data_root``, only the specs whose dataset file exists under it are returned.
    """
    from ..specs import load_yaml, spec_files
    from .paper import TASK_ALIASES, canonical_dataset, load_paper_tables

    keys = {(e.task, e.setting, e.dataset, e.split) for e in load_paper_tables()}
    out = []
    for f in spec_files("tasks"):
        data = load_yaml(f)
        ds = data.get("dataset") or {}
        if not isinstance(ds, dict):
            continue
        task, setting = TASK_ALIASES.get(str(data.get("type", "")).lower(), (str(data.get("type")), "zero-shot"))
        dname = canonical_dataset(str(ds.get("name", "")))
        splits = data.get("splits") or []
        if not any((task, setting, dname, str(s)) in keys for s in splits):
            continue
        if data_root is not None and ds.get("path") and not (Path(data_root) / ds["path"]).exists():
            continue
        out.append(str(data.get("name", f.stem)))
    return sorted(out)


def reproduce_paper(data_root, models: Sequence[str], out, *, tasks: Optional[Sequence[str]] = None, seed: int = 0,
                    console=None) -> Path:
    """Evaluate ``models`` on the real-benchmark task specs the paper tables use and render them beside the
    published numbers (``OUT/results``, ``OUT/report``, ``OUT/paper_comparison.md``). A number is set beside a
    published one with a delta only when the evaluated split has the canonical size (``results/paper/splits``;
    :func:`~loupe_bench.report.paper.split_check`); otherwise it is labelled "not the paper's split".

    Raises:
        SpecError: when no paper task spec has its data under ``data_root``.
    """
    from rich.console import Console

    from ..tasks.evaluate import evaluate
    from ..utils.io import atomic_write_text
    from .paper import compare_paper, comparison_markdown, comparison_table
    from .render import report

    console = console or Console(log_path=False)
    out = Path(out)
    chosen = list(tasks) if tasks else paper_task_specs(Path(data_root))
    if not chosen:
        raise SpecError(f"no paper task spec has its data under {data_root}; known paper tasks: "
                        f"{', '.join(paper_task_specs()) or '(none)'}")
    announce_missing(console, missing_metrics(chosen))
    t0 = time.perf_counter()
    evaluate(list(models), chosen, data_root=Path(data_root), out_dir=out / "results", seed=seed)
    report(out / "results", out_dir=out / "report", console=console, title="loupe-bench paper benchmarks")
    rows = compare_paper(out / "results")
    console.print(comparison_table(rows))
    atomic_write_text(out / "paper_comparison.md", comparison_markdown(rows))
    atomic_write_json(out / "reproduce.json", {
        "schema": "loupe-bench/reproduce/v1", "kind": "paper", "data_root": str(data_root), "models": list(models),
        "tasks": chosen, "seed": seed, "results": "results", "report": "report",
        "timings": {"total": round(time.perf_counter() - t0, 3)},
    })
    return out / "paper_comparison.md"
