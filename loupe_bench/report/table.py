"""The models × task-metrics table behind every report format.

Columns are keyed by (task, split, metric) **and the protocol fingerprint**: when one (task, split, metric) appears
with two fingerprints, each gets its own column labelled ``task@<fp8>`` and a note says why — results of different
protocols are never merged. Several seeds of one cell are averaged (mean, sample std, n); a single seed keeps its
95 % bootstrap interval; with several seeds the interval shown is the mean of the per-seed interval bounds.
"""
from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .gate import higher_is_better
from .results_io import REFERENCE_ROWS, MetricRow, display_units, mean_std, to_percent


class Column(NamedTuple):
    task: str
    split: str
    metric: str
    fingerprint: str
    label: str
    units: str


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


#: the order metrics are shown in (columns of the Markdown/HTML tables, rows of the CSV, bars of the plots, the
#: console summary): retrieval R@1, R@5, R@10 (i2t before t2i) then RSUM, classification, detection, grounding,
#: captioning. A tuple looked up by :func:`metric_sort_key`; metrics not listed come after, alphabetically.
METRIC_ORDER = (
    "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum",
    "top1", "top5", "mean_per_class_recall",
    "AP", "AP50", "AP75", "acc@0.5",
    "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE",
)
_METRIC_RANK = {m: i for i, m in enumerate(METRIC_ORDER)}


def _natural(text: str) -> Tuple:
    """``proposal_recall@5`` before ``proposal_recall@10``: digit runs compare as numbers, the rest as text."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.findall(r"\d+|\D+", text))


def metric_sort_key(metric: str) -> Tuple:
    """Sort key of a metric name: its rank in :data:`METRIC_ORDER`, unknown metrics after every known one in
    alphabetical (natural: digits by value) order. A breakdown ``base:tag`` (``acc@0.5:anchor``) sorts right after
    its base metric, its tags alphabetically."""
    base, _, tag = metric.partition(":")
    rank = _METRIC_RANK.get(base, len(METRIC_ORDER))
    return (rank, _natural(base) if rank == len(METRIC_ORDER) else (), 1 if tag else 0, _natural(tag))


#: the rule behind the "best" mark, said in the legend of every report format
BEST_RULE = ("a model is marked best in a column only when its 95 % interval is clear of the runner-up's (its lower "
             "bound above the runner-up's upper bound; the reverse for lower-is-better metrics); for cells without "
             "an interval, only when its value is strictly better at the displayed precision (equal displayed "
             "values are a tie); otherwise nothing is marked; oracle rows (upper bounds that use labels) and "
             "reference rows "
             "(chance, attribute-oracle) are never best")


#: decimals every report format shows (``format_cell``): values equal at this precision are a tie
DISPLAY_DECIMALS = 1


def best_models(cells: Sequence[Tuple[str, Cell]], higher_better: bool = True) -> List[str]:
    """The best of one column's cells (models only, reference rows already left out): ``[model]`` or ``[]``.

    The top cell (by value in the metric's direction) is best only when it is clear of the runner-up: with both
    95 % intervals, the top's lower bound is above the runner-up's upper bound (higher-is-better) or the top's upper
    bound is below the runner-up's lower bound (lower-is-better); when either cell has no interval, the top value is
    strictly better at :data:`DISPLAY_DECIMALS` decimals (values that display equal are a tie). Fewer than two
    cells: no best (nothing to compare with).
    """
    if len(cells) < 2:
        return []
    sign = 1.0 if higher_better else -1.0
    ranked = sorted(cells, key=lambda mc: -sign * mc[1].value)
    (top_m, top), (_, run) = ranked[0], ranked[1]
    if top.ci_low is not None and top.ci_high is not None and run.ci_low is not None and run.ci_high is not None:
        clear = top.ci_low > run.ci_high if higher_better else top.ci_high < run.ci_low
    else:
        clear = sign * (round(top.value, DISPLAY_DECIMALS) - round(run.value, DISPLAY_DECIMALS)) > 1e-9
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
        columns.append(Column(r.task, r.split, r.metric, r.fingerprint, label, r.units))
    for (task, split, metric), fpset in sorted(fps.items()):
        if len(fpset) > 1:
            notes.append(f"{task}/{split}/{metric}: {len(fpset)} protocol fingerprints "
                         f"({', '.join(sorted(f[:8] for f in fpset))}) shown as separate columns, never merged")
    grouped: Dict[Tuple[str, int], List[MetricRow]] = {}
    for r in rows:
        grouped.setdefault((r.model, col_index[(r.task, r.split, r.metric, r.fingerprint)]), []).append(r)
    cells: Dict[Tuple[str, int], Cell] = {}
    for key, grp in grouped.items():
        vals = [to_percent(r.value, r.units) for r in grp]
        m, s = mean_std(vals)
        lows = [to_percent(r.ci_low, r.units) for r in grp if r.ci_low is not None]
        highs = [to_percent(r.ci_high, r.units) for r in grp if r.ci_high is not None]
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
        winner = best_models(present, higher_is_better(col.metric))
        if winner:
            best[ci] = winner
    return ResultTable(models, columns, cells, best, notes, dict(protocols or {}), oracles)


def format_cell(cell: Optional[Cell], with_ci: bool = True) -> str:
    if cell is None:
        return "–"
    text = f"{cell.value:.1f}"
    if cell.n > 1:
        text += f" ±{cell.std:.1f} (n={cell.n})"
    if with_ci and cell.ci_low is not None:
        text += f" [{cell.ci_low:.1f}, {cell.ci_high:.1f}]"
    return text


def leaderboard_rows(table: ResultTable) -> Tuple[List[str], List[List[object]]]:
    """The wide leaderboard (``leaderboard.csv``): one row per model (reference rows last), one column per
    ``task/split/metric [units]`` in the tables' column order, each cell the displayed value (percent for fractions,
    sum of percents for RSUM; the mean over seeds), empty where the model has no result."""
    head = ["model"] + [f"{c.label} [{display_units(c.units)}]" for c in table.columns]
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
            units = str(m.get("units", "fraction"))
            shown = display_units(units)
            fmt = (lambda v: f"{to_percent(v, units):.1f}") if shown != units else (lambda v: f"{v:.3f}")
            ci = "" if m.get("ci95") is None else f"[{fmt(m['ci95'][0])}, {fmt(m['ci95'][1])}]"
            t.add_row(Text(str(name)), fmt(m["value"]) + ("%" if shown == "%" else ""), ci)
        for name, reason in r.get("unavailable", {}).items():
            t.add_row(Text(str(name)), "n/a", Text(str(reason), overflow="fold"))
        out.append(t)
    if any(m.get("units") == "sum of fractions" for r in results for m in r["metrics"].values()):
        out.append(Text("rsum: the sum of the recalls in % (0–600 for R@1/5/10 both ways)", style="dim"))
    return out
