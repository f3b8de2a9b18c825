"""``loupe-bench list datasets|tasks|models|towers|recipes|benchmarks|references``.

Each kind maps to a lister function ``() -> list[(name, description)]`` living in the module that owns the
registry, imported on use.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Tuple

import click

LISTERS: Dict[str, str] = {
    "datasets": "loupe_bench.data:list_datasets",
    "tasks": "loupe_bench.tasks:list_tasks",
    "models": "loupe_bench.models:list_models",
    "towers": "loupe_bench.models.factory:list_towers",
    "recipes": "loupe_bench.train:list_recipes",
    "benchmarks": "loupe_bench.bench:list_benchmarks",
    "references": "loupe_bench.specs:list_references",
}


def _lister(kind: str) -> Callable[[], List[Tuple[str, str]]]:
    module, attr = LISTERS[kind].split(":")
    return getattr(importlib.import_module(module), attr)


@click.command("list")
@click.argument("kind", type=click.Choice(sorted(LISTERS)))
@click.option("--pattern", default="*", show_default=True, help="fnmatch pattern on names.")
def list_cmd(kind: str, pattern: str) -> None:
    """List what the registries hold: datasets, tasks, models, towers (shared tower presets), recipes, benchmarks or
    references."""
    import fnmatch

    from rich.console import Console
    from rich.table import Table

    rows = [(n, d) for n, d in _lister(kind)() if fnmatch.fnmatch(n, pattern)]
    table = Table(title=f"{kind} ({len(rows)})")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, desc in rows:
        table.add_row(name, desc)
    Console().print(table)
