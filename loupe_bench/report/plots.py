"""Matplotlib figures for the HTML report, returned as PNG bytes (Agg backend, no display needed)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .escape import plot as plot_text
from .table import ResultTable, heading


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


#: the resolution every report figure is saved at; the page shows images at their native size (CSS
#: ``max-width: none`` in a scrolling container), so one point of text is ``PLOT_DPI / 72`` screen pixels
PLOT_DPI = 90
#: the smallest font (points) any report figure uses: ``MIN_FONT_PT * PLOT_DPI / 72`` = 10 px on screen (≥ 9 px)
MIN_FONT_PT = 8
#: the widest a bar chart's axes grow (inches): with its legend the image stays near 1,000 px
MAX_BAR_WIDTH_IN = 8.5


def fig_to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


#: the palette model colours are drawn from (matplotlib's tab10, then tab20's light tones); black is left to the
#: reference rows (dashed levels), so no model is drawn in it
MODEL_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                 "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
                 "#dbdb8d", "#9edae5")


def model_colours(models) -> Dict[str, str]:
    """One fixed colour per model for every figure of a report: the sorted, de-duplicated model names (reference
    rows left out: they are drawn as black dashed levels) take :data:`MODEL_PALETTE` in order, cycling after 20.

    Built once per report from every model that appears in it (results and run directories), so a model has the
    same colour in the bar charts and the training curves whatever subset a figure shows.
    """
    from .results_io import REFERENCE_ROWS

    names = sorted(set(models) - set(REFERENCE_ROWS))
    return {m: MODEL_PALETTE[i % len(MODEL_PALETTE)] for i, m in enumerate(names)}


def _legend_outside(ax, fontsize: int = 8):
    """A legend right of the axes (never over the bars)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=fontsize,
                     frameon=False)


def bar_figure(table: ResultTable, cols: List[int], title: str, colours: Optional[Dict[str, str]] = None):
    """The matplotlib figure of one metric bar chart (see :func:`metric_bars`); ``None`` when no model has a value.

    Bars: one per model and metric in the model's colour (:func:`model_colours`), 95 % intervals as error bars;
    oracle models (the table's ``oracles``: upper bounds that use labels) hatched, outlined and labelled "(oracle)".
    Reference rows: black dashed/dotted levels across each metric's bars. The legend sits right of the axes. Tick
    labels are the metric names, marked ``↓`` where lower is better; the y label is the metrics' displayed unit.
    """
    plt = _plt()
    import numpy as np

    from .results_io import REFERENCE_ROWS

    models = [m for m in table.models if any((m, c) in table.cells for c in cols) and m not in REFERENCE_ROWS]
    levels = [m for m in REFERENCE_ROWS if any((m, c) in table.cells for c in cols)]
    if not models:
        return None
    colours = colours or model_colours(table.models)
    fig, ax = plt.subplots(figsize=(min(MAX_BAR_WIDTH_IN, max(4.0, 0.55 * len(cols) * max(1, len(models)) + 1.5)),
                                    3.4))
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
        oracle = m in getattr(table, "oracles", ())
        ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, yerr=[err_lo, err_hi], capsize=2,
               label=plot_text(f"{m} (oracle)" if oracle else m), hatch="//" if oracle else None,
               edgecolor="black" if oracle else None, linewidth=0.6 if oracle else 0,
               color=colours.get(m, "#7f7f7f"), error_kw={"elinewidth": 0.8})
    for j, ref in enumerate(levels):
        style = ("--", ":")[j % 2]
        for k, c in enumerate(cols):
            cell = table.cells.get((ref, c))
            if cell is not None:
                ax.hlines(cell.value, x[k] - 0.45, x[k] + 0.45, colors="black", linestyles=style, linewidth=1.2,
                          label=plot_text(ref) if k == 0 or all((ref, cc) not in table.cells for cc in cols[:k])
                          else None)
    ax.set_xticks(x)
    ax.set_xticklabels([plot_text(heading(table.columns[c])) for c in cols], rotation=30, ha="right", fontsize=8)
    shown = sorted({table.columns[c].info.unit_label for c in cols})
    ax.set_ylabel("percent" if shown == ["%"] else plot_text("/".join(shown)))
    ax.set_title(plot_text(title), fontsize=9)
    _legend_outside(ax)
    return fig


def metric_bars(table: ResultTable, max_metrics_per_task: int = 8,
                colours: Optional[Dict[str, str]] = None) -> List[Tuple[str, bytes]]:
    """One bar chart per (task, split, fingerprint): bars per model and metric, 95 % intervals as error bars.

    Metrics follow the table's column order (:func:`~loupe_bench.report.table.metric_sort_key`: R@1, R@5, R@10,
    RSUM, ...); the first ``max_metrics_per_task`` are drawn. Each model keeps its colour from ``colours`` (one map
    per report, :func:`model_colours`). Reference rows (chance, the attribute oracle) are drawn as dashed levels
    across each metric's bars, not as bars. Legends sit outside the axes.
    """
    groups: Dict[Tuple[str, str, str], List[int]] = {}
    for ci, col in enumerate(table.columns):
        groups.setdefault((col.task, col.split, col.fingerprint), []).append(ci)
    colours = colours or model_colours(table.models)
    out = []
    for (task, split, fp), cols in groups.items():
        fig = bar_figure(table, cols[:max_metrics_per_task], f"{task} ({split}, protocol {fp[:8]})", colours)
        if fig is not None:
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


def loss_keys(recs: List[Dict[str, float]]) -> List[str]:
    """The loss fields of a log (``loss`` first, then the terms alphabetically; scales left out)."""
    keys = {k for r in recs for k in r if "loss" in k.lower() and "scale" not in k.lower()}
    return sorted(keys, key=lambda k: (k != "loss", k))


#: the training log's accuracy figures of LOUPE's ``g_θ`` drawn beside the losses (per level; a run without the
#: neural module has none): the window's Pearson r corrected for the Monte-Carlo targets' noise
ACCURACY_KEYS = ("tsa_nsi_r_corrected", "fsa_nsi_r_corrected")


def panel_grid(plt, n: int, panel_width: float, ncols_max: int = 4):
    """A figure of ``n`` panels, at most ``ncols_max`` a row (``panel_width`` × 2.4 inches each), the unused axes
    hidden: ``(fig, axes [rows, cols])``."""
    ncols = min(ncols_max, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_width * ncols, 2.4 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def curves_figure(run_logs: Dict[str, Path], colours: Optional[Dict[str, str]] = None, max_panels: int = 10):
    """The training-curve figure (see :func:`training_curves`), or ``None`` when no log has a step."""
    plt = _plt()
    runs = {}
    for name, path in sorted(run_logs.items()):
        recs = [r for r in read_log(path) if "step" in r]
        if recs:
            runs[name] = recs
    if not runs:
        return None
    colours = colours or model_colours(runs)
    keys: List[str] = []
    for recs in runs.values():
        keys += [k for k in loss_keys(recs) if k not in keys]
    keys = sorted(keys, key=lambda k: (k != "loss", k))
    keys = (keys + [k for k in ACCURACY_KEYS if any(k in r for recs in runs.values() for r in recs)])[:max_panels]
    keys = keys or ["loss"]
    fig, axes = panel_grid(plt, len(keys), 2.5)
    for ax, k in zip(axes.flat, keys):
        for name, recs in runs.items():
            pts = [(r["step"], r[k]) for r in recs if k in r]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=plot_text(name), linewidth=1.3,
                        color=colours.get(name, "#7f7f7f"))
        ax.set_title(plot_text(k), fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
    handles = [plt.Line2D([], [], color=colours.get(n, "#7f7f7f"), linewidth=2) for n in runs]
    fig.tight_layout()
    fig.legend(handles, [plot_text(n) for n in runs], loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=10,
               frameon=False,
               title="model", title_fontsize=10)
    return fig


def training_curves(run_logs: Dict[str, Path], colours: Optional[Dict[str, str]] = None) -> Optional[bytes]:
    """Training curves from the runs' ``log.jsonl``: one panel per loss field (the total ``loss``, then each term;
    then ``g_θ``'s accuracy in training, :data:`ACCURACY_KEYS`, where a run logs it),
    one line per run in the run's fixed colour (``colours``, one map per report: :func:`model_colours`), and one
    legend of the runs right of the panels (10 pt, outside the axes)."""
    fig = curves_figure(run_logs, colours)
    return None if fig is None else fig_to_png(fig)


#: the panels of :func:`scale_figure` (columns of a ``bench scale`` record), in order
SCALE_PANELS = ("p(phrase|image) × K", "retrieval RSUM", "teacher hit rate (φ)", "native recall@10",
                "native phrase grounding", "gt-box phrase grounding", "gt-box grounding (shared)",
                "gt-box grounding (own scorer)")


def scale_figure(record: Dict, panels: Sequence[str] = SCALE_PANELS):
    """The scale curve of a ``bench scale`` record: one panel per quantity, training steps on a log axis, one line
    per model in its report colour; at points with several seeds the marker's bar spans their min–max. ``None``
    when the record has no point."""
    points = sorted(record.get("points", []), key=lambda p: p["steps"])
    if not points:
        return None
    plt = _plt()
    models = list(record.get("models") or sorted({m for p in points for m in p["values"]}))
    colours = model_colours(models)
    panels = [c for c in panels if any(c in p["values"].get(m, {}) for p in points for m in models)]
    fig, axes = panel_grid(plt, len(panels), 2.6)
    for ax, col in zip(axes.flat, panels):
        for m in models:
            pts = [(p["steps"], p["values"].get(m, {}).get(col)) for p in points]
            pts = [(s, v) for s, v in pts if v]
            if not pts:
                continue
            xs, ys = [s for s, _ in pts], [v["mean"] for _, v in pts]
            lo = [v["mean"] - v.get("min", v["mean"]) for _, v in pts]
            hi = [v.get("max", v["mean"]) - v["mean"] for _, v in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", markersize=3, linewidth=1.3, capsize=2,
                        color=colours.get(m, "#7f7f7f"), label=plot_text(m))
        ax.set_xscale("log")
        steps = [p["steps"] for p in points]
        ax.set_xticks(steps)
        ax.set_xticklabels([f"{s:,}" for s in steps])
        ax.minorticks_off()
        ax.set_title(plot_text(col), fontsize=10)
        ax.set_xlabel("training steps", fontsize=9)
        ax.tick_params(labelsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
