"""``loupe-bench list datasets|tasks|models|towers|recipes|benchmarks|references|pretrained [ARCH]``.

Each kind maps to a lister function ``() -> list[(name, description)]`` living in the module that owns the
registry, imported on use; a kind in :data:`COLUMNS` has a lister ``(arch) -> list[row]`` with those columns.
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
    "pretrained": "loupe_bench.models.pretrained_names:list_pretrained",
}

#: kinds whose rows have their own columns (the first one is the name ``--pattern`` matches); their lister takes ARCH
COLUMNS: Dict[str, Tuple[str, ...]] = {"pretrained": ("arch", "tag", "converts", "in cache", "weights")}


def _lister(kind: str) -> Callable[[], List[Tuple[str, str]]]:
    module, attr = LISTERS[kind].split(":")
    return getattr(importlib.import_module(module), attr)


@click.command("list")
@click.argument("kind", type=click.Choice(sorted(LISTERS)))
@click.argument("arch", required=False)
@click.option("--pattern", default="*", show_default=True, help="fnmatch pattern on names.")
def list_cmd(kind: str, arch, pattern: str) -> None:
    """List what the registries hold: datasets, tasks, models, towers (shared tower presets), recipes, benchmarks,
    references, or pretrained (open_clip's pretrained tags, of architecture ARCH when given: whether each converts
    and is in the local cache)."""
    import fnmatch

    from rich.console import Console
    from rich.table import Table

    from ..report.escape import console as text

    if arch is not None and kind not in COLUMNS:
        raise click.UsageError(f"ARCH applies to `list {'|'.join(COLUMNS)}` only")
    found = _lister(kind)(arch) if kind in COLUMNS else _lister(kind)()
    rows = [row for row in found if fnmatch.fnmatch(row[0], pattern)]
    table = Table(title=f"{kind} ({len(rows)})")
    for i, column in enumerate(COLUMNS.get(kind, ("name", "description"))):
        table.add_column(column, style="bold" if i == 0 else None, no_wrap=kind in COLUMNS and i < 2,
                         overflow="fold")
    for row in rows:
        table.add_row(*map(text, row))
    Console().print(table)
