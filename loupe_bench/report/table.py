"""The models × task-metrics table behind every report format.

Columns are keyed by (task, split, metric) **and the protocol fingerprint**: when one (task, split, metric) appears
with two fingerprints, each gets its own column labelled ``task@<fp8>`` and a note says why — results of different
protocols are never merged. Several seeds of one cell are averaged (mean, sample std, n); a single seed keeps its
95 % bootstrap interval; with several seeds the interval shown is the mean of the per-seed interval bounds.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .gate import higher_is_better
from .results_io import REFERENCE_ROWS, MetricRow, mean_std, to_percent


class Column(NamedTuple):
    task: str
    split: str
    metric: str
    fingerprint: str
    label: str
    units: str


class Cell(NamedTuple):
    value: float            # display units (percent for fractions)
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

    def cell(self, model: str, col: int) -> Optional[Cell]:
        return self.cells.get((model, col))


def display_units(units: str) -> str:
    return "%" if units == "fraction" else units


def build_table(rows: Sequence[MetricRow], *, metrics: Optional[Sequence[str]] = None,
                protocols: Optional[Dict[str, str]] = None) -> ResultTable:
    """Group metric rows into a models × columns table (best per column marked among the models).

    Reference rows (:data:`~loupe_bench.report.results_io.REFERENCE_ROWS`: chance, the attribute oracle) are listed
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
    for r in sorted(rows, key=lambda r: (r.task, r.split, r.fingerprint, r.metric)):
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
    models = sorted(names - set(REFERENCE_ROWS)) + [m for m in REFERENCE_ROWS if m in names]
    best: Dict[int, List[str]] = {}
    for ci, col in enumerate(columns):
        present = [(m, cells[(m, ci)].value) for m in models if (m, ci) in cells and m not in REFERENCE_ROWS]
        if len(present) < 2:
            continue
        sign = 1.0 if higher_is_better(col.metric) else -1.0
        top = max(sign * v for _, v in present)
        best[ci] = [m for m, v in present if abs(sign * v - top) <= 1e-9]
    return ResultTable(models, columns, cells, best, notes, dict(protocols or {}))


def format_cell(cell: Optional[Cell], with_ci: bool = True) -> str:
    if cell is None:
        return "–"
    text = f"{cell.value:.1f}"
    if cell.n > 1:
        text += f" ±{cell.std:.1f} (n={cell.n})"
    if with_ci and cell.ci_low is not None:
        text += f" [{cell.ci_low:.1f}, {cell.ci_high:.1f}]"
    return text
