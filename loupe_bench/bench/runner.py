"""Run registered benchmarks, print their figures beside their targets, write JSON under ``results/benchmarks/``."""
from __future__ import annotations

import inspect
import math
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
        for key, value in opts.items():
            err = option_error(params[key], value)
            if err:
                raise SpecError(f"--set {name}.{key}={value!r}: {err}")


#: Largest count a benchmark option takes (steps, images, batch sizes); seeds take what every RNG accepts.
MAX_COUNT = 10_000_000
MAX_SEED = 2**32 - 1


def option_error(param: inspect.Parameter, value: Any) -> Optional[str]:
    """Why ``value`` does not fit the benchmark option ``param`` (its annotation, else its default's type), or
    ``None``. Numbers are finite and non-negative, counts at most :data:`MAX_COUNT`, seeds at most
    :data:`MAX_SEED`; a sequence option takes a list of strings."""
    kind = str(param.annotation if param.annotation is not inspect.Parameter.empty else type(param.default).__name__)
    if value is None:
        return None if "Optional" in kind or param.default is None else "a value is required"
    if "Dict" in kind or "Mapping" in kind:
        return None if isinstance(value, dict) else "must be a mapping"
    if "Sequence[int]" in kind or "Sequence[float]" in kind:
        integer = "Sequence[int]" in kind
        if not isinstance(value, (list, tuple)) or not value:
            return f"must be a non-empty list of {'integers' if integer else 'numbers'}"
        return next((e for e in (_number_error(v, integer, False) for v in value) if e), None)
    if "Sequence[str]" in kind:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        ok = ok or ("Union[str" in kind and isinstance(value, str))
        return None if ok else "must be a list of names"
    if "bool" in kind:
        return None if isinstance(value, bool) else "must be true or false"
    if "int" in kind or "float" in kind:
        return _number_error(value, integer="float" not in kind, seed="seed" in param.name)
    if "str" in kind:
        return None if isinstance(value, str) and len(value) <= 4096 else "must be a text value"
    return None


def _number_error(value: Any, integer: bool, seed: bool) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        return f"must be {'an integer' if integer else 'a number'}"
    if not math.isfinite(value) or value < 0:
        return "must be a finite number >= 0"
    top = MAX_SEED if seed else MAX_COUNT
    return f"must be at most {top}" if value > top else None


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
