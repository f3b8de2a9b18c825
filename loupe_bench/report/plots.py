"""Matplotlib figures for the HTML report, returned as PNG bytes (Agg backend, no display needed)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .table import ResultTable


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def fig_to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def metric_bars(table: ResultTable, max_metrics_per_task: int = 8) -> List[Tuple[str, bytes]]:
    """One bar chart per (task, split, fingerprint): bars per model and metric, 95 % intervals as error bars.

    Reference rows (chance, the attribute oracle) are drawn as dashed levels across each metric's bars, not as bars.
    """
    plt = _plt()
    import numpy as np

    from .results_io import REFERENCE_ROWS

    groups: Dict[Tuple[str, str, str], List[int]] = {}
    for ci, col in enumerate(table.columns):
        groups.setdefault((col.task, col.split, col.fingerprint), []).append(ci)
    out = []
    for (task, split, fp), cols in groups.items():
        cols = cols[:max_metrics_per_task]
        models = [m for m in table.models if any((m, c) in table.cells for c in cols) and m not in REFERENCE_ROWS]
        levels = [m for m in REFERENCE_ROWS if any((m, c) in table.cells for c in cols)]
        if not models:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(cols) * max(1, len(models)) / 2 + 2), 3.2))
        width = 0.8 / len(models)
        x = np.arange(len(cols))
        for i, m in enumerate(models):
            vals, err_lo, err_hi = [], [], []
            for c in cols:
                cell = table.cells.get((m, c))
                v = cell.value if cell else np.nan
                vals.append(v)
                if cell and cell.ci_low is not None:
                    err_lo.append(max(0.0, v - cell.ci_low))
                    err_hi.append(max(0.0, cell.ci_high - v))
                else:
                    err_lo.append(0.0)
                    err_hi.append(0.0)
            ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, yerr=[err_lo, err_hi], capsize=2, label=m)
        for j, ref in enumerate(levels):
            style = ("--", ":")[j % 2]
            for k, c in enumerate(cols):
                cell = table.cells.get((ref, c))
                if cell is not None:
                    ax.hlines(cell.value, x[k] - 0.45, x[k] + 0.45, colors="black", linestyles=style, linewidth=1.2,
                              label=ref if k == 0 or all((ref, cc) not in table.cells for cc in cols[:k]) else None)
        ax.set_xticks(x)
        ax.set_xticklabels([table.columns[c].metric for c in cols], rotation=30, ha="right", fontsize=8)
        units = {table.columns[c].units for c in cols}
        ax.set_ylabel("percent" if units == {"fraction"} else "/".join(sorted(units)))
        ax.set_title(f"{task} ({split}, protocol {fp[:8]})", fontsize=9)
        ax.legend(fontsize=7)
        out.append((f"{task} / {split}", fig_to_png(fig)))
    return out


def _flatten(obj, prefix: str = "") -> Dict[str, float]:
    out: Dict[str, float] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = float(v)
    return out


def read_log(path) -> List[Dict[str, float]]:
    """Numeric fields of each JSONL record (nested dicts flattened with ``/``); unreadable lines are skipped."""
    recs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            recs.append(_flatten(obj))
    return recs


def training_curves(run_logs: Dict[str, Path]) -> Optional[bytes]:
    """Loss curves (total loss, and every loss term) against step, one panel per run."""
    plt = _plt()
    runs = {}
    for name, path in sorted(run_logs.items()):
        recs = [r for r in read_log(path) if "step" in r]
        if recs:
            runs[name] = recs
    if not runs:
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 3.0), squeeze=False)
    for ax, (name, recs) in zip(axes[0], runs.items()):
        keys = sorted({k for r in recs for k in r if "loss" in k.lower() and "scale" not in k.lower()})
        for k in keys[:8]:
            pts = [(r["step"], r[k]) for r in recs if k in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        if keys:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig_to_png(fig)
