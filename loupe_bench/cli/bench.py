"""``loupe-bench bench [NAME ...] [--repeat N]``."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.argument("names", nargs=-1)
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 100), help="Timed repetitions.")
@click.option("--out", "out_dir", default="results/benchmarks", show_default=True, type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True,
              help="cpu, cuda, cuda:N, or auto (cuda when available); cuda without a GPU is an error.")
@click.option("--readme", "readme", default=None, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Afterwards, rewrite this README's performance block from the JSON files in --out.")
@click.option("--render-only", is_flag=True, help="Run nothing; with --readme, only re-render the block.")
def bench_cmd(names, repeat: int, out_dir: Path, device: str, readme, render_only: bool) -> None:
    """Run benchmarks (all when no NAME is given): shapley, train-step, train-throughput,
    late-interaction, retrieval-metric, eval-throughput, demo. Each prints its figures beside their targets and writes
    JSON to --out."""
    if not render_only:
        from ..bench.runner import run_benchmarks
        from ..utils.device import resolve_device

        run_benchmarks(names, repeat=repeat, out_dir=out_dir, device=str(resolve_device(device)))
    if readme is not None:
        from ..bench.readme import update_readme

        changed = update_readme(readme, out_dir)
        click.echo(f"{readme}: performance block {'rewritten' if changed else 'already current'}")
