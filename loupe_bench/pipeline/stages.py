"""The stages of ``reproduce synthetic``: data in the registry :data:`STAGES`, each a function ``(ctx) -> None``,
run in :data:`STAGE_ORDER` (``world`` -> ``train`` -> ``eval`` -> ``report``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

from ..registry import Registry
from ..utils.io import read_json
from .context import Context, write_manifest
from .jobs import eval_job, run_jobs, submit_job, train_job
from .overrides import model_spec_mapping, plan_model, task_spec_mapping
from .plan import SyntheticPlan

STAGES = Registry("reproduce stage")


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


def _prewarm_report_imports(ctx: Context) -> None:
    """Import what the report stage needs (torch, the model zoo, timm / transformers, matplotlib) in a background
    thread once a core is free (the last jobs of the eval stage, with worker processes) while this process only
    waits. Saves several seconds of the report stage's wall time. The report stage joins the thread
    first (``ctx.prewarm``): importing a package while another thread is half-way through importing it can fail. A
    failure here is left to the report stage to raise."""
    import threading

    def work() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401

            from .. import models  # noqa: F401
            from ..models import dual_encoder, loupe  # noqa: F401
            from ..report import explain, plots, render  # noqa: F401
            import timm  # noqa: F401
            import transformers  # noqa: F401
            from transformers import AutoTokenizer, BertModel  # noqa: F401
        except Exception:  # pragma: no cover - the report stage imports the same modules and raises there
            return

    ctx.prewarm = threading.Thread(target=work, name="loupe-prewarm", daemon=True)
    ctx.prewarm.start()


def _worker_overrides(ctx: Context) -> Dict[str, Any]:
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
                         train_job, (plan_model(ctx.plan, model), str(ctx.world), ctx.plan.recipe, str(run), seed,
                                      _worker_overrides(ctx))))
            ctx.runs[f"s{seed}/{model}"] = ctx.rel(run)
    if ctx.plan.workers > 1:  # longest first, so that no long run starts last on a free worker (stable: plan order)
        cost = {m: training_cost(model_spec_mapping(m, ctx.plan.model_overrides)) for m in ctx.plan.models}
        jobs.sort(key=lambda j: -cost[j[0].rsplit("/", 1)[1]])
    # with workers, a core the last training jobs leave free goes to early eval jobs (_start_eval); the report's
    # imports are prewarmed at the end of the eval stage instead
    run_jobs(ctx, "train", jobs, on_done=lambda key, left: _start_eval(ctx, key))


def _start_eval(ctx: Context, train_key: str) -> None:
    """With worker processes, submit the eval jobs of the model whose training job ``train_key`` just finished
    (``train/s<seed>/<model>``), so that they run on the workers the last training jobs leave idle instead of
    after them. The pool runs jobs in submission order, so no training job waits for them. The eval stage waits for
    them and records them like its own (:func:`run_jobs`'s ``started``)."""
    if ctx.plan.workers <= 1:
        return
    _, seed, model = train_key.split("/", 2)
    for key, _desc, fn, args in eval_jobs(ctx, [(int(seed[1:]), model)]):
        ctx.early_eval[key] = submit_job(ctx, key, fn, args)


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


def eval_jobs(ctx: Context, which=None) -> list:
    """The eval jobs ``(key, description, eval_job, args)`` of the trained models ``which`` (``(seed, model)``
    pairs; every seed and model of the plan when None): one per model with one worker, else one per task group
    (:data:`EVAL_GROUPS`, longest group first)."""
    jobs = []
    parallel = ctx.plan.workers > 1
    threads = int(ctx.plan.worker_threads) if parallel else None
    pairs = [(seed, model) for seed in ctx.seeds for model in ctx.plan.models] if which is None else list(which)
    for seed, model in pairs:
        run = ctx.out / ctx.runs[f"s{seed}/{model}"]
        specs = [task_spec_mapping(t, ctx.plan.task_overrides) for t in ctx.tasks]
        types = ctx.plan.model_task_types.get(model)
        if types is not None:
            specs = [sp for sp in specs if sp.get("type") in types]
        out_dir = str(ctx.out / "results" / f"s{seed}")
        if not parallel:
            jobs.append((f"eval/s{seed}/{model}", f"eval: {model} (seed {seed}) on {len(specs)} tasks",
                         eval_job, (str(run), specs, str(ctx.world), out_dir, seed, threads,
                                    ctx.plan.eval_device)))
            continue
        grouped = [[sp for sp in specs if sp.get("type") in g] for g in EVAL_GROUPS]
        grouped.append([sp for sp in specs if not any(sp.get("type") in g for g in EVAL_GROUPS)])
        for gi, group in enumerate(grouped):
            if group:
                names = ", ".join(sorted({str(sp.get("type")) for sp in group}))
                jobs.append((f"eval/s{seed}/{model}/{gi}", f"eval: {model} (seed {seed}): {names}",
                             eval_job, (str(run), group, str(ctx.world), out_dir, seed, threads,
                                        ctx.plan.eval_device)))
    if parallel:  # longest groups first (group index), across models and seeds
        jobs.sort(key=lambda j: int(j[0].rsplit("/", 1)[1]))
    return jobs


@STAGES.register("eval")
def stage_eval(ctx: Context) -> None:
    """Evaluate every trained model on every synthetic task (one result JSON per model × task × split); jobs the
    train stage already started on idle workers (:func:`_start_eval`) are waited for, not run again."""
    jobs = eval_jobs(ctx)
    parallel = ctx.plan.workers > 1
    ctx.log.total += len(jobs) - ctx.log.planned.get("eval", 0)
    ctx.log.planned["eval"] = len(jobs)
    started, ctx.early_eval = ctx.early_eval, {}
    run_jobs(ctx, "eval", jobs, started=started, on_idle=(lambda: _prewarm_report_imports(ctx)) if parallel else None)
    if parallel:  # per-model totals, as in a sequential run
        for seed in ctx.seeds:
            for model in ctx.plan.models:
                parts = [v for k, v in ctx.timings.items() if k.startswith(f"eval/s{seed}/{model}/")]
                ctx.timings[f"eval/s{seed}/{model}"] = round(sum(parts), 3)


@STAGES.register("report")
def stage_report(ctx: Context) -> None:
    """Write the manifest, then the report (console table, CSV, Markdown, HTML with plots and explanations)."""
    from ..report.render import REPRODUCTION_TITLES, render_report

    with ctx.unit("report", "report: console table, CSV, Markdown, HTML"):
        if ctx.prewarm is not None:  # the imports a background thread may still be running
            ctx.prewarm.join()
            ctx.prewarm = None
        write_manifest(ctx)
        runs = {k.split("/", 1)[1]: ctx.out / v for k, v in ctx.runs.items() if k.startswith(f"s{ctx.seeds[0]}/")}
        render_report(ctx.out / "results", out_dir=ctx.out / "report", runs=runs, world_dir=ctx.world,
                      console=ctx.console, title=REPRODUCTION_TITLES["synthetic"])


STAGE_ORDER = ("world", "train", "eval", "report")
