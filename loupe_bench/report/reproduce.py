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
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import SpecError
from ..registry import Registry
from ..utils.io import atomic_write_json, read_json

STAGES = Registry("reproduce stage")

MAIN_MODELS = ("clip-tiny", "filip-tiny", "loupe-tiny")
ABLATIONS = ("loupe-no-tsa", "loupe-no-fsa", "loupe-sampling")


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
        tasks: task spec names evaluated (default: every shipped task on the synthetic world).
        eval_overrides: options for the task protocols (e.g. fewer bootstrap resamples in quick mode).
    """

    world_size: str = "small"
    image_size: int = 64
    world_seed: int = 0
    models: List[str] = field(default_factory=lambda: list(MAIN_MODELS + ABLATIONS))
    recipe: str = "tiny-cpu"
    recipe_overrides: Dict[str, Any] = field(default_factory=dict)
    tasks: Optional[List[str]] = None
    eval_overrides: Dict[str, Any] = field(default_factory=dict)


def default_plan(quick: bool = False) -> SyntheticPlan:
    """The default plan (all models incl. LOUPE ablations) or the quick CI plan (main models, fewer steps)."""
    if quick:
        return SyntheticPlan(models=list(MAIN_MODELS), recipe_overrides=dict(QUICK_OVERRIDES),
                             eval_overrides=dict(QUICK_EVAL))
    return SyntheticPlan()


# quick variant of the recipe: the same for every model (tuned so --quick fits in 2 minutes on 2 cores)
QUICK_OVERRIDES: Dict[str, Any] = {"steps": 150}
QUICK_EVAL: Dict[str, Any] = {"bootstrap.n_resamples": 200}


def synthetic_tasks() -> List[str]:
    """Every shipped task spec whose dataset is the synthetic world."""
    from ..specs import load_yaml, spec_files

    out = []
    for f in spec_files("tasks"):
        data = load_yaml(f)
        ds = data.get("dataset") or {}
        name = ds.get("name") if isinstance(ds, dict) else ds
        if str(name).startswith("synthetic"):
            out.append(str(data.get("name", f.stem)))
    if not out:
        raise SpecError("no synthetic task specs found (tasks/*.yaml with dataset.name: synthetic)")
    return sorted(out)


@dataclass
class Context:
    out: Path
    seeds: List[int]
    plan: SyntheticPlan
    progress: Any
    overall: Any
    console: Any
    timings: Dict[str, float] = field(default_factory=dict)
    runs: Dict[str, str] = field(default_factory=dict)      # "s<seed>/<model>" -> relative run dir
    tasks: List[str] = field(default_factory=list)

    @property
    def world(self) -> Path:
        return self.out / "world"

    def rel(self, p: Path) -> str:
        return str(Path(p).relative_to(self.out))

    def step(self, description: str) -> None:
        self.progress.update(self.overall, description=description)

    def advance(self, n: float = 1) -> None:
        self.progress.advance(self.overall, n)


def _world_matches(world: Path, plan: SyntheticPlan) -> bool:
    meta = world / "world.json"
    if not meta.is_file():
        return False
    data = read_json(meta)
    opts = data.get("options", data)
    return (opts.get("seed") == plan.world_seed and opts.get("size") == plan.world_size
            and opts.get("image_size") == plan.image_size)


@STAGES.register("world")
def stage_world(ctx: Context) -> None:
    """Generate the synthetic world (reused when ``world/world.json`` records the same options)."""
    from ..data.synth import generate_world

    ctx.step(f"world: generate ({ctx.plan.world_size}, {ctx.plan.image_size}px)")
    if not _world_matches(ctx.world, ctx.plan):
        generate_world(ctx.world, seed=ctx.plan.world_seed, size=ctx.plan.world_size, image_size=ctx.plan.image_size)
    ctx.advance()


@STAGES.register("train")
def stage_train(ctx: Context) -> None:
    """Train every model with the one recipe, for every seed."""
    from ..train.engine import train

    for seed in ctx.seeds:
        for model in ctx.plan.models:
            ctx.step(f"train: {model} (seed {seed})")
            run = ctx.out / "runs" / f"s{seed}" / model
            t0 = time.perf_counter()
            train(model, ctx.world, ctx.plan.recipe, run, seed=seed, overrides=ctx.plan.recipe_overrides or None)
            ctx.timings[f"train/s{seed}/{model}"] = round(time.perf_counter() - t0, 3)
            ctx.runs[f"s{seed}/{model}"] = ctx.rel(run)
            ctx.advance()


@STAGES.register("eval")
def stage_eval(ctx: Context) -> None:
    """Evaluate every trained model on every synthetic task (one result JSON per model × task × split)."""
    from ..tasks.evaluate import evaluate

    for seed in ctx.seeds:
        for model in ctx.plan.models:
            ctx.step(f"eval: {model} (seed {seed}) on {len(ctx.tasks)} tasks")
            run = ctx.out / ctx.runs[f"s{seed}/{model}"]
            t0 = time.perf_counter()
            evaluate([str(run)], ctx.tasks, data_root=ctx.world, out_dir=ctx.out / "results" / f"s{seed}", seed=seed,
                     **_eval_kwargs(ctx.plan))
            ctx.timings[f"eval/s{seed}/{model}"] = round(time.perf_counter() - t0, 3)
            ctx.advance()


def _eval_kwargs(plan: SyntheticPlan) -> Dict[str, Any]:
    import inspect

    from ..tasks.evaluate import evaluate

    params = inspect.signature(evaluate).parameters
    out: Dict[str, Any] = {}
    if plan.eval_overrides and "overrides" in params:
        out["overrides"] = dict(plan.eval_overrides)
    if "progress" in params:
        out["progress"] = False
    return out


@STAGES.register("report")
def stage_report(ctx: Context) -> None:
    """Write the manifest, then the report (console table, CSV, Markdown, HTML with plots and explanations)."""
    from .render import report

    ctx.step("report: render")
    write_manifest(ctx)
    runs = {k.split("/", 1)[1]: ctx.out / v for k, v in ctx.runs.items() if k.startswith(f"s{ctx.seeds[0]}/")}
    report(ctx.out / "results", out_dir=ctx.out / "report", runs=runs, world_dir=ctx.world, console=ctx.console,
           title="loupe-bench synthetic reproduction")
    ctx.advance()


STAGE_ORDER = ("world", "train", "eval", "report")


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
        "environment": environment_info("cpu"),
    }
    man.update(extra or {})
    return atomic_write_json(ctx.out / "reproduce.json", man)


@contextlib.contextmanager
def _progress(console, total: int, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not enabled, transient=False)
    with prog:
        overall = prog.add_task("starting", total=total)
        yield prog, overall


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
    """
    from rich.console import Console

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan or default_plan(quick)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise SpecError("at least one seed is needed")
    tasks = list(plan.tasks) if plan.tasks else synthetic_tasks()
    n_units = 1 + 2 * len(seeds) * len(plan.models) + 1
    t_all = time.perf_counter()
    with _progress(console, n_units, progress and console.is_terminal) as (prog, overall):
        ctx = Context(out=out, seeds=seeds, plan=plan, progress=prog, overall=overall, console=console, tasks=tasks)
        for name in STAGE_ORDER:
            t0 = time.perf_counter()
            STAGES.get(name)(ctx)
            ctx.timings[f"stage/{name}"] = round(time.perf_counter() - t0, 3)
            console.log(f"stage {name} done in {ctx.timings[f'stage/{name}']:.1f}s")
    ctx.timings["total"] = round(time.perf_counter() - t_all, 3)
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
    published numbers (``OUT/results``, ``OUT/report``, ``OUT/paper_comparison.md``).

    Raises:
        SpecError: when no paper task spec has its data under ``data_root``.
    """
    from rich.console import Console

    from ..tasks.evaluate import evaluate
    from ..utils.io import atomic_write_text
    from .paper import compare_paper, comparison_markdown, comparison_table
    from .render import report

    console = console or Console()
    out = Path(out)
    chosen = list(tasks) if tasks else paper_task_specs(Path(data_root))
    if not chosen:
        raise SpecError(f"no paper task spec has its data under {data_root}; known paper tasks: "
                        f"{', '.join(paper_task_specs()) or '(none)'}")
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
