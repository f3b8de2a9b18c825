"""The models × task-metrics table behind every report format.

Columns are keyed by (task, split, metric) **and the protocol fingerprint**: when one (task, split, metric) appears
with two fingerprints, each gets its own column labelled ``task@<fp8>`` and a note says why — results of different
protocols are never merged. Several seeds of one cell are averaged (mean, sample std, n); a single seed keeps its
95 % bootstrap interval; with several seeds the interval shown is the mean of the per-seed interval bounds.

What a column's metric means — its display scale and unit label, better up or down, decimals, short name, place in
the column order — is the metric registry's (:func:`~loupe_bench.tasks.metric_registry.metric_info`).
"""
from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..tasks.metric_registry import Metric, metric_info
from .results_io import REFERENCE_ROWS, MetricRow, mean_std


class Column(NamedTuple):
    task: str
    split: str
    metric: str
    fingerprint: str
    label: str
    units: str
    info: Metric                              # what the metric means (metric_info)


class Cell(NamedTuple):
    value: float            # display units (percent for fractions, sum of percents for RSUM)
    ci_low: Optional[float]
    ci_high: Optional[float]
    std: float
    n: int


class ResultTable(NamedTuple):
    models: List[str]
    columns: List[Column]
    cells: Dict[Tuple[str, int], Cell]        # (model, column index) -> cell
    best: Dict[int, List[str]]                # column index -> best model(s)
    notes: List[str]
    protocols: Dict[str, str] = {}            # fingerprint -> what the protocol is ("shared region scoring · ...")
    oracles: Tuple[str, ...] = ()             # oracle models (upper bounds using labels): marked, never best

    def cell(self, model: str, col: int) -> Optional[Cell]:
        return self.cells.get((model, col))


def _natural(text: str) -> Tuple:
    """``proposal_recall@5`` before ``proposal_recall@10``: digit runs compare as numbers, the rest as text."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.findall(r"\d+|\D+", text))


def metric_sort_key(metric: str) -> Tuple:
    """Sort key of a metric name, the order of every report format (columns of the Markdown/HTML tables, rows of
    the CSV, bars of the plots, the console summary): the metric's registered ``order`` (retrieval R@K both ways
    then RSUM, classification, detection, grounding, captioning), metrics without one after every ordered one;
    within one order alphabetical (natural: digits by value, ``R@5`` before ``R@10``). A breakdown ``base:tag``
    (``acc@0.5:anchor``) sorts right after its base metric, its tags alphabetically."""
    base, _, tag = metric.partition(":")
    order = metric_info(metric).order
    return (0 if order is not None else 1, order or 0, _natural(base), 1 if tag else 0, _natural(tag))


def metric_label(metric: str, short: bool = False) -> str:
    """A metric as every report format heads it: its name (``short``: its registered short name), with ``↓`` when
    lower values are better."""
    info = metric_info(metric)
    name = info.display if short else metric
    return name if info.higher_is_better else f"{name} ↓"


def heading(col: Column, short: bool = False) -> str:
    """A column's :func:`metric_label`."""
    return metric_label(col.metric, short)


#: the rule behind the "best" mark, said in the legend of every report format
BEST_RULE = ("a model is marked best in a column only when its 95 % interval is clear of the runner-up's (its lower "
             "bound above the runner-up's upper bound; the reverse for lower-is-better metrics); for cells without "
             "an interval, only when its value is strictly better at the displayed precision (equal displayed "
             "values are a tie); otherwise nothing is marked; oracle rows (upper bounds that use labels) and "
             "reference rows "
             "(chance, attribute-oracle) are never best")


#: decimals a cell shows when no metric says otherwise (a metric's registered ``precision``): values equal at the
#: shown precision are a tie
DISPLAY_DECIMALS = 1


def best_models(cells: Sequence[Tuple[str, Cell]], higher_better: bool = True,
                decimals: int = DISPLAY_DECIMALS) -> List[str]:
    """The best of one column's cells (models only, reference rows already left out): ``[model]`` or ``[]``.

    The top cell (by value in the metric's direction) is best only when it is clear of the runner-up: with both
    95 % intervals, the top's lower bound is above the runner-up's upper bound (higher-is-better) or the top's upper
    bound is below the runner-up's lower bound (lower-is-better); when either cell has no interval, the top value is
    strictly better at ``decimals`` decimals, the metric's displayed precision (values that display equal are a
    tie). Fewer than two cells: no best (nothing to compare with).
    """
    if len(cells) < 2:
        return []
    sign = 1.0 if higher_better else -1.0
    ranked = sorted(cells, key=lambda mc: -sign * mc[1].value)
    (top_m, top), (_, run) = ranked[0], ranked[1]
    if top.ci_low is not None and top.ci_high is not None and run.ci_low is not None and run.ci_high is not None:
        clear = top.ci_low > run.ci_high if higher_better else top.ci_high < run.ci_low
    else:
        clear = sign * (round(top.value, decimals) - round(run.value, decimals)) > 1e-9
    return [top_m] if clear else []


def build_table(rows: Sequence[MetricRow], *, metrics: Optional[Sequence[str]] = None,
                protocols: Optional[Dict[str, str]] = None, oracles: Sequence[str] = ()) -> ResultTable:
    """Group metric rows into a models × columns table (best per column marked among the models).

    Columns follow (task, split, fingerprint) and then :func:`metric_sort_key` (R@1, R@5, R@10, RSUM, ...). The best
    of a column is chosen by :func:`best_models` (:data:`BEST_RULE`: interval clear of the runner-up's). Reference
    rows (:data:`~loupe_bench.report.results_io.REFERENCE_ROWS`: chance, the attribute oracle) are listed
    after the models and never marked best.
    """
    if metrics:
        keep = set(metrics)
        rows = [r for r in rows if r.metric in keep]
    # which (task, split, metric) carry more than one fingerprint?
    fps: Dict[Tuple[str, str, str], set] = {}
    for r in rows:
        fps.setdefault((r.task, r.split, r.metric), set()).add(r.fingerprint)
    col_index: Dict[Tuple[str, str, str, str], int] = {}
    columns: List[Column] = []
    notes: List[str] = []
    for r in sorted(rows, key=lambda r: (r.task, r.split, r.fingerprint, metric_sort_key(r.metric), r.metric)):
        ck = (r.task, r.split, r.metric, r.fingerprint)
        if ck in col_index:
            continue
        split_fp = len(fps[(r.task, r.split, r.metric)]) > 1
        task_label = f"{r.task}@{r.fingerprint[:8]}" if split_fp else r.task
        label = f"{task_label}/{r.split}/{r.metric}"
        col_index[ck] = len(columns)
        columns.append(Column(r.task, r.split, r.metric, r.fingerprint, label, r.units, metric_info(r.metric)))
    for (task, split, metric), fpset in sorted(fps.items()):
        if len(fpset) > 1:
            notes.append(f"{task}/{split}/{metric}: {len(fpset)} protocol fingerprints "
                         f"({', '.join(sorted(f[:8] for f in fpset))}) shown as separate columns, never merged")
    lower = sorted({c.metric for c in columns if not c.info.higher_is_better}, key=metric_sort_key)
    if lower:
        notes.append(f"↓ lower is better ({', '.join(lower)}): the best is the lowest")
    grouped: Dict[Tuple[str, int], List[MetricRow]] = {}
    for r in rows:
        grouped.setdefault((r.model, col_index[(r.task, r.split, r.metric, r.fingerprint)]), []).append(r)
    cells: Dict[Tuple[str, int], Cell] = {}
    for key, grp in grouped.items():
        info = columns[key[1]].info
        vals = [info.shown(r.value) for r in grp]
        m, s = mean_std(vals)
        lows = [info.shown(r.ci_low) for r in grp if r.ci_low is not None]
        highs = [info.shown(r.ci_high) for r in grp if r.ci_high is not None]
        lo = sum(lows) / len(lows) if len(lows) == len(grp) else None
        hi = sum(highs) / len(highs) if len(highs) == len(grp) else None
        cells[key] = Cell(m, lo, hi, s, len(grp))
    names = {r.model for r in rows}
    oracles = tuple(sorted(set(oracles) & names))
    models = (sorted(names - set(REFERENCE_ROWS) - set(oracles)) + list(oracles)
              + [m for m in REFERENCE_ROWS if m in names])
    best: Dict[int, List[str]] = {}
    for ci, col in enumerate(columns):
        present = [(m, cells[(m, ci)]) for m in models
                   if (m, ci) in cells and m not in REFERENCE_ROWS and m not in oracles]
        winner = best_models(present, col.info.higher_is_better, col.info.precision)
        if winner:
            best[ci] = winner
    return ResultTable(models, columns, cells, best, notes, dict(protocols or {}), oracles)


def format_cell(cell: Optional[Cell], with_ci: bool = True, decimals: int = DISPLAY_DECIMALS) -> str:
    """``value ±std (n=N) [low, high]`` at ``decimals`` decimals (a column's metric precision); ``–`` for no cell."""
    if cell is None:
        return "–"
    text = f"{cell.value:.{decimals}f}"
    if cell.n > 1:
        text += f" ±{cell.std:.{decimals}f} (n={cell.n})"
    if with_ci and cell.ci_low is not None:
        text += f" [{cell.ci_low:.{decimals}f}, {cell.ci_high:.{decimals}f}]"
    return text


def leaderboard_rows(table: ResultTable) -> Tuple[List[str], List[List[object]]]:
    """The wide leaderboard (``leaderboard.csv``): one row per model (reference rows last), one column per
    ``task/split/metric [units]`` in the tables' column order, each cell the displayed value (percent for fractions,
    sum of percents for RSUM; the mean over seeds), empty where the model has no result."""
    head = ["model"] + [f"{c.label} [{c.info.unit_label}]" for c in table.columns]
    body: List[List[object]] = []
    for m in table.models:
        cells = [table.cell(m, i) for i in range(len(table.columns))]
        body.append([m] + ["" if c is None else round(c.value, 4) for c in cells])
    return head, body


def leaderboard_csv(table: ResultTable) -> str:
    """:func:`leaderboard_rows` as CSV text (cells that a spreadsheet would read as a formula made text)."""
    import csv
    import io

    from .escape import csv_cell

    head, body = leaderboard_rows(table)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(h) for h in head])
    for row in body:
        w.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


def eval_summary(results: Sequence[dict], title: str, width: int = 80) -> List:
    """Rich renderables summarising ``eval``'s results: a title line, then per (model, task, split) a heading and a
    three-column table (metric, value, 95 % CI). Names are never cut: a metric name wider than its column folds onto
    a second line, so ``acc@0.5:colour`` and ``acc@0.5:colour-shape`` stay distinguishable at 80 columns. Every name
    is literal text (no rich markup or ``:emoji:`` codes)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out: List = [Text(title, style="bold")]
    for r in results:
        out.append(Text(f"{r['model']['name']} · {r['task']['name']} · {r['task']['split']}", style="bold",
                        overflow="fold"))
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        t.add_column("metric", overflow="fold", max_width=max(20, width - 36))
        t.add_column("value", justify="right", no_wrap=True)
        t.add_column("95% CI", no_wrap=True)
        for name, m in r["metrics"].items():
            info = metric_info(str(name))
            scaled = info.unit_label != info.unit          # shown on the display scale (%, sum of %)
            fmt = (lambda v: f"{info.shown(v):.1f}") if scaled else (lambda v: f"{v:.3f}")
            ci = "" if m.get("ci95") is None else f"[{fmt(m['ci95'][0])}, {fmt(m['ci95'][1])}]"
            t.add_row(Text(str(name)), fmt(m["value"]) + ("%" if info.unit_label == "%" else ""), ci)
        for name, reason in r.get("unavailable", {}).items():
            t.add_row(Text(str(name)), "n/a", Text(str(reason), overflow="fold"))
        out.append(t)
    if any(metric_info(str(name)).unit == "sum of fractions" for r in results for name in r["metrics"]):
        out.append(Text("rsum: the sum of the recalls in % (0–600 for R@1/5/10 both ways)", style="dim"))
    return out
