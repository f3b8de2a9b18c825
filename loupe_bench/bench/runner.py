"""Run registered benchmarks, print their figures beside their targets, write JSON under ``results/benchmarks/``."""
from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..errors import SpecError
from ..registry import Registry
from ..utils.io import atomic_write_json
from ..utils.provenance import environment_info
from . import load_all


def check_options(registry: Registry, selected: Sequence[str], options: Mapping[str, Mapping[str, Any]]) -> None:
    """Fail before anything runs when ``options`` names a benchmark that is not selected, or an option its function
    does not take (``repeat`` and ``device`` are the runner's own)."""
    for name, opts in options.items():
        if name not in selected:
            raise SpecError(f"options for benchmark {name!r}, which is not run (running: {', '.join(selected)})")
        params = inspect.signature(registry.get(name)).parameters
        unknown = sorted(k for k in opts if k not in params or k in ("repeat", "device"))
        if unknown:
            known = ", ".join(k for k in params if k not in ("repeat", "device"))
            raise SpecError(f"benchmark {name!r} has no option {', '.join(map(repr, unknown))}; options: {known}")


def run_benchmarks(
    names: Sequence[str] = (), repeat: int = 3, out_dir: Optional[Path] = None, device: str = "cpu", **options: Any
) -> List[Dict[str, Any]]:
    """Run the named benchmarks (all when empty); return their JSON records (also written to ``out_dir``).

    ``options``: per benchmark name, keyword arguments of its function (checked by :func:`check_options`)."""
    from rich.console import Console
    from rich.table import Table

    registry = load_all()
    selected = list(names) or registry.names()
    for name in selected:
        registry.get(name)  # unknown names fail before anything runs
    check_options(registry, selected, options)
    out_dir = Path(out_dir) if out_dir is not None else Path("results") / "benchmarks"
    console = Console()
    records: List[Dict[str, Any]] = []
    t_all = time.perf_counter()
    for name in selected:
        console.print(f"[bold]bench[/bold] {name} …")
        t0 = time.perf_counter()
        record = registry.get(name)(repeat=repeat, device=device, **options.get(name, {}))
        if isinstance(record, dict) and record.get("skipped"):  # an optional dependency is missing: one line, no JSON
            console.print(f"{name}: skipped: {record['skipped']}", markup=False, highlight=False, soft_wrap=True)
            continue
        if not isinstance(record, dict) or "figures" not in record:
            raise SpecError(f"benchmark {name!r} returned no figures")
        record.setdefault("name", name)
        record.setdefault("environment", environment_info(device))
        record["wall_s"] = time.perf_counter() - t0
        record["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(out_dir / f"{name.replace('-', '_')}.json", record)
        records.append(record)
        table = Table(title=f"{name} ({record['wall_s']:.1f} s)")
        for col in ("figure", "value", "unit", "target", "met"):
            table.add_column(col)
        for fig in record["figures"]:
            met = fig.get("met")
            table.add_row(
                str(fig["label"]),
                f"{fig['value']:.4g}" if isinstance(fig["value"], (int, float)) else str(fig["value"]),
                str(fig.get("unit", "")),
                str(fig.get("target", "")),
                "" if met is None else ("[green]yes[/green]" if met else "[red]no[/red]"),
            )
        console.print(table)
    total = time.perf_counter() - t_all
    summary = {"benchmarks": {r["name"]: round(r["wall_s"], 3) for r in records}, "total_wall_s": round(total, 3),
               "device": device, "repeat": repeat, "environment": environment_info(device),
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if len(records) > 1:  # a full run: keep its total beside the per-benchmark records
        atomic_write_json(out_dir / "summary.json", summary)
    console.print(f"[bold]{len(records)} benchmark(s) in {total:.1f} s[/bold]")
    return records
