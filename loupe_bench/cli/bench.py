"""``loupe-bench bench [NAME ...] [--repeat N] [--set NAME.OPTION=VALUE ...]``; the shapley benchmark's own
``--run RUN_DIR``, ``--world DATA``, ``--matched-draws N`` (its ``run``, ``world``, ``matched_draws`` options)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import click


def parse_options(items: Tuple[str, ...]) -> Dict[str, Dict[str, Any]]:
    """``NAME.OPTION=VALUE`` items (VALUE read as YAML, :func:`~loupe_bench.specs.parse_assignments`) ->
    ``{NAME: {OPTION: value}}``."""
    from ..errors import SpecError
    from ..specs import parse_assignments

    out: Dict[str, Dict[str, Any]] = {}
    example = "gpu-check.steps=100"
    for key, value in parse_assignments(items, "--set", example).items():
        name, dot, option = key.rpartition(".")
        if not dot or not name or not option:
            raise SpecError(f"--set {key!r}: expected NAME.OPTION=VALUE, e.g. {example}")
        out.setdefault(name, {})[option] = value
    return out


def shapley_options(options: Dict[str, Dict[str, Any]], **flags: Any) -> None:
    """Add the shapley benchmark's own flags (``--run``, ``--world``, ``--matched-draws``) that are given to
    ``options["shapley"]``; the same option also given with ``--set shapley.OPTION`` is a :class:`SpecError`."""
    from ..errors import SpecError

    given = {k: v for k, v in flags.items() if v is not None}
    mine = options.setdefault("shapley", {}) if given else options.get("shapley", {})
    for key, value in given.items():
        if key in mine:
            raise SpecError(f"shapley option {key!r} given twice (--{key.replace('_', '-')} and --set shapley.{key})")
        mine[key] = value


@click.command("bench")
@click.argument("names", nargs=-1)
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 100), help="Timed repetitions.")
@click.option("--out", "out_dir", default="results/benchmarks", show_default=True, type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True,
              help="cpu, cuda, cuda:N, or auto (cuda when available); cuda without a GPU is an error.")
@click.option("--set", "sets", multiple=True, metavar="NAME.OPTION=VALUE",
              help="An option of benchmark NAME (a keyword argument of its function; VALUE is YAML), e.g. "
                   "gpu-check.steps=100; repeatable.")
@click.option("--readme", "readme", default=None, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Afterwards, rewrite this README's performance block from the JSON files in --out.")
@click.option("--render-only", is_flag=True, help="Run nothing; with --readme, only re-render the block.")
@click.option("--run", "shapley_run", default=None, metavar="RUN_DIR",
              help="shapley: measure this trained LOUPE run (`loupe-bench train` output) and its trained neural "
                   "module, on the run's own training data (else --world); without it the model is untrained.")
@click.option("--world", "shapley_world", default=None, metavar="DATA",
              help="shapley: the data of the batches (a synthetic world folder); default a tiny world generated "
                   "for the run, or the --run's recorded training data.")
@click.option("--matched-draws", "shapley_draws", default=None, type=click.IntRange(1, 1000),
              help="shapley: independent Monte-Carlo draws per M of the matched-accuracy ladder (default 5).")
def bench_cmd(names, repeat: int, out_dir: Path, device: str, sets, readme, render_only: bool, shapley_run,
              shapley_world, shapley_draws) -> None:
    """Run benchmarks (all when no NAME is given; `loupe-bench list benchmarks` names them). Each prints its figures
    beside their targets and writes JSON to --out; one that cannot run here (a missing optional dependency, gpu-check
    without a GPU) says so in one line and writes nothing."""
    if not render_only:
        from ..bench.runner import run_benchmarks
        from ..utils.device import resolve_device

        options = parse_options(sets)
        shapley_options(options, run=shapley_run, world=shapley_world, matched_draws=shapley_draws)
        run_benchmarks(names, repeat=repeat, out_dir=out_dir, device=str(resolve_device(device)), **options)
    if readme is not None:
        from ..bench.readme import update_readme

        changed = update_readme(readme, out_dir)
        click.echo(f"{readme}: performance block {'rewritten' if changed else 'already current'}")
