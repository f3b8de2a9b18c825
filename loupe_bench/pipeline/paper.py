"""``loupe-bench reproduce paper``: evaluate models on the real-benchmark task specs the paper tables use and set
the numbers beside the published ones."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import SpecError
from ..utils.io import atomic_write_json
from .context import announce_missing, missing_metrics


def paper_task_specs(data_root: Optional[Path] = None) -> List[str]:
    """Shipped task specs whose (type, dataset, split) the paper tables hold numbers for.

    With ``data_root``, only the specs whose dataset file exists under it are returned.
    """
    from ..report.paper import TASK_ALIASES, canonical_dataset, load_paper_tables
    from ..specs import load_yaml, spec_index

    keys = {(e.task, e.setting, e.dataset, e.split) for e in load_paper_tables()}
    out = []
    for name, f in spec_index("tasks").items():
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
        out.append(name)
    return sorted(out)


def reproduce_paper(data_root, models: Sequence[str], out, *, tasks: Optional[Sequence[str]] = None, seed: int = 0,
                    console=None, device: str = "auto") -> Path:
    """Evaluate ``models`` on the real-benchmark task specs the paper tables use and render them beside the
    published numbers (``OUT/results``, ``OUT/report``, ``OUT/paper_comparison.md``); ``loupe-bench reproduce
    paper`` calls this function. A number is set beside a published one with a delta only when the evaluated split
    has the canonical size (``results/paper/splits``; :func:`~loupe_bench.report.paper.split_check`); otherwise it
    is labelled "not the paper's split".

    Args:
        data_root: folder holding the benchmark data in the layouts the task specs name.
        models: any references :func:`~loupe_bench.tasks.evaluate.evaluate` accepts.
        out: output folder.
        tasks: the paper task specs to run (default: every one whose data is under ``data_root``).
        seed: as for :func:`~loupe_bench.tasks.evaluate.evaluate`.
        console: a rich Console for the tables (default: a new one).
        device: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The path of ``paper_comparison.md``.

    Raises:
        SpecError: when no paper task spec has its data under ``data_root``.
    """
    from rich.console import Console

    from ..report.paper import compare_paper, comparison_markdown, comparison_table
    from ..report.render import REPRODUCTION_TITLES, render_report
    from ..tasks.evaluate import evaluate
    from ..utils.io import atomic_write_text

    console = console or Console(log_path=False)
    out = Path(out)
    chosen = list(tasks) if tasks else paper_task_specs(Path(data_root))
    if not chosen:
        raise SpecError(f"no paper task spec has its data under {data_root}; known paper tasks: "
                        f"{', '.join(paper_task_specs()) or '(none)'}")
    announce_missing(console, missing_metrics(chosen))
    t0 = time.perf_counter()
    evaluate(list(models), chosen, data_root=Path(data_root), out_dir=out / "results", seed=seed,
             device=device)
    render_report(out / "results", out_dir=out / "report", console=console, title=REPRODUCTION_TITLES["paper"])
    rows = compare_paper(out / "results")
    console.print(comparison_table(rows))
    atomic_write_text(out / "paper_comparison.md", comparison_markdown(rows))
    atomic_write_json(out / "reproduce.json", {
        "schema": "loupe-bench/reproduce/v1", "kind": "paper", "data_root": str(data_root), "models": list(models),
        "tasks": chosen, "seed": seed, "results": "results", "report": "report",
        "timings": {"total": round(time.perf_counter() - t0, 3)},
    })
    return out / "paper_comparison.md"
