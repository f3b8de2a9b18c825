"""``loupe-bench bench [NAME ...] [--repeat N] [--set NAME.OPTION=VALUE ...]``."""
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
def bench_cmd(names, repeat: int, out_dir: Path, device: str, sets, readme, render_only: bool) -> None:
    """Run benchmarks (all when no NAME is given; `loupe-bench list benchmarks` names them). Each prints its figures
    beside their targets and writes JSON to --out; one that cannot run here (a missing optional dependency, gpu-check
    without a GPU) says so in one line and writes nothing."""
    if not render_only:
        from ..bench.runner import run_benchmarks
        from ..utils.device import resolve_device

        options = parse_options(sets)
        run_benchmarks(names, repeat=repeat, out_dir=out_dir, device=str(resolve_device(device)), **options)
    if readme is not None:
        from ..bench.readme import update_readme

        changed = update_readme(readme, out_dir)
        click.echo(f"{readme}: performance block {'rewritten' if changed else 'already current'}")
