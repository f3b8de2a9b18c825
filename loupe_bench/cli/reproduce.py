"""``loupe-bench reproduce synthetic`` (the offline main job) and ``loupe-bench reproduce paper``."""
from __future__ import annotations

from pathlib import Path

import click


@click.group("reproduce")
def reproduce() -> None:
    """Run a whole reproduction: the synthetic world offline, or the paper's benchmarks on real data."""


def _plan_names():
    from ..pipeline import PLANS

    return PLANS.names()


@reproduce.command("synthetic")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("runs/synthetic"), show_default=True,
              help="Folder for the world, runs, results and report.")
@click.option("--plan", "plan_name", type=click.Choice(_plan_names()), default=None,
              help="Named plan (default: default): default = tiny towers on 2 CPU cores; quick = the CI variant; "
                   "gpu = ViT-S/16 towers on the medium world, bf16, one GPU (docs/loupe.md, GPU plan).")
@click.option("--seeds", "n_seeds", type=click.IntRange(1, 10), default=None,
              help="Number of training seeds (0..N-1); tables show mean ± std. Default: the plan's (1 for default "
                   "and quick, 3 for gpu).")
@click.option("--seed", "first_seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="First seed.")
@click.option("--quick", is_flag=True, help="Alias of --plan quick: CLIP, FILIP, LOUPE with the quick recipe variant "
                                            "(under a minute on 2 quiet cores).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes training/evaluating models at once (default: the plan's; default plan 2, one torch "
                   "thread each; 1 = sequential in this process with the recipe's threads). Part of the plan: "
                   "numbers depend on it.")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="Change a field of the plan (VALUE is YAML); FIELD+=VALUE appends to a list, e.g. "
                   "--set models+=siglip-tiny. Part of the plan: the manifest records it.")
def synthetic_cmd(out, plan_name, n_seeds, first_seed, quick, workers, sets):
    """Generate the synthetic world, train CLIP, FILIP and LOUPE (and LOUPE's ablations and the oracle-regions
    bound unless --quick) with the plan's recipe, evaluate every synthetic task and write the report."""
    from dataclasses import replace

    from .. import reproduce_synthetic
    from ..pipeline import get_plan

    if quick and plan_name not in (None, "quick"):
        raise click.UsageError(f"--quick is --plan quick; it cannot be combined with --plan {plan_name}")
    plan = get_plan("quick" if quick else (plan_name or "default"))
    if workers is not None:
        plan = replace(plan, workers=workers)
    if sets:
        from ..pipeline.plan import plan_with
        from ..specs import parse_assignments

        plan = plan_with(plan, parse_assignments(sets, "--set", "models+=siglip-tiny"))
    n = int(n_seeds) if n_seeds is not None else int(plan.seeds)
    manifest = reproduce_synthetic(out, seeds=range(first_seed, first_seed + n), quick=plan.quick, plan=plan)
    click.echo(f"manifest: {manifest}")
    click.echo(f"report:   {Path(out) / 'report' / 'report.html'}")


@reproduce.command("paper")
@click.option("--data-root", "data_root", required=True, type=click.Path(path_type=Path, exists=True),
              help="Folder holding the benchmark data in the layouts the task specs name.")
@click.option("--model", "models", multiple=True, required=True,
              help="Model spec, run or model directory, Hugging Face CLIPModel directory, or open_clip:ARCH:FILE "
                   "(repeat).")
@click.option("--task", "tasks", multiple=True, help="Restrict to these task specs (default: every paper task whose "
                                                     "data is under --data-root).")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("runs/paper"), show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N; cuda without a GPU is an error.")
def paper_cmd(data_root, models, tasks, out, seed, device):
    """Evaluate models on the real-benchmark specs the paper tables use, beside the published numbers."""
    from .. import reproduce_paper

    md = reproduce_paper(data_root, models, out, tasks=tasks or None, seed=seed, device=device)
    click.echo(f"comparison: {md}")
