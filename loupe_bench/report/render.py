"""Reports from result JSONs: rich console table, pandas CSV, Markdown and a self-contained HTML page.

``report(results_dir)`` renders the models × task-metrics table (95 % intervals, best per column marked) and, for
HTML, embeds (base64 PNG) metric bar charts with interval error bars, training curves from the run directories'
``log.jsonl`` and LOUPE's explanations on sample images when a LOUPE run and the synthetic world are present.
"""
from __future__ import annotations

import base64
import html as _html
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import LoupeBenchError
from ..utils.io import atomic_write_text
from . import escape
from .metadata import run_metadata, scope_statement
from .results_io import MetricRow, load_rows, protocol_label, read_manifest
from .table import BEST_RULE, ResultTable, build_table, display_units, format_cell, metric_sort_key

MANIFEST = "reproduce.json"


class ReportPaths(NamedTuple):
    csv: Optional[Path]
    markdown: Optional[Path]
    html: Optional[Path]
    table: ResultTable


# ------------------------------------------------------------------------------------------------ console
# Headline metrics shown in the console (the files hold every metric); a tuple looked up, not a chain of ifs.
# Listed in the metric order (table.METRIC_ORDER) that every format uses.
HEADLINE_METRICS = ("i2t_R@1", "t2i_R@1", "rsum", "top1", "AP", "AP50", "acc@0.5", "BLEU-4", "CIDEr-D")


# Short metric names for the console (the files keep the full names); a mapping looked up, not a chain of ifs.
SHORT_METRIC_NAMES = {"i2t_R@1": "i2t R@1", "t2i_R@1": "t2i R@1", "rsum": "RSUM", "acc@0.5": "acc@.5",
                      "CIDEr-D": "CIDEr"}
CONSOLE_WIDTH = 80


def compact_cell(cell: Optional["Cell"]) -> str:
    """``8.7 [5.7,12.0]`` for one seed, ``8.7±1.2 [5.7,12.0]`` over several (no spaces inside the interval)."""
    if cell is None:
        return "–"
    text = f"{cell.value:.1f}"
    if cell.n > 1:
        text += f"±{cell.std:.1f}"
    if cell.ci_low is not None:
        text += f" [{cell.ci_low:.1f},{cell.ci_high:.1f}]"
    return text


def console_tables(table: ResultTable, width: int = CONSOLE_WIDTH) -> List:
    """Rich renderables for a terminal: per (task, split, protocol) a title line and a table with the models as rows
    and short metric names as columns (in :data:`HEADLINE_METRICS` order), plus a units line where needed.

    No cell ever wraps (columns are ``no_wrap``): when a group's metrics do not fit in ``width`` columns they are
    split over consecutive tables under the same title. Best per column is marked ★ (:data:`BEST_RULE`). Columns
    follow :func:`~loupe_bench.report.table.metric_sort_key`, the order of every report format. The full matrix is
    in the Markdown, CSV and HTML files.
    """
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    out = []
    for title, cols in column_groups(table):
        task_title = title.split(" (protocol ")[0].replace("/", " · ", 1)
        cols = sorted(cols, key=lambda c: (metric_sort_key(table.columns[c].metric), table.columns[c].metric))
        models = [m for m in table.models if any((m, c) in table.cells for c in cols)]
        texts = {c: {m: ("★ " if m in table.best.get(c, []) else "") + compact_cell(table.cell(m, c))
                     for m in models} for c in cols}
        heads = {c: SHORT_METRIC_NAMES.get(table.columns[c].metric, table.columns[c].metric) for c in cols}
        units = sorted({f"{heads[c]}: {display_units(table.columns[c].units)}" for c in cols
                        if display_units(table.columns[c].units) != "%"})
        col_w = {c: max([len(heads[c])] + [len(t) for t in texts[c].values()]) + 2 for c in cols}
        model_w = max([len("model")] + [len(m) for m in models]) + 2
        chunks: List[List[int]] = [[]]
        used = model_w
        for c in cols:
            if chunks[-1] and used + col_w[c] > width:
                chunks.append([])
                used = model_w
            chunks[-1].append(c)
            used += col_w[c]
        parts: List = [Text(""), Text(task_title, style="bold", no_wrap=True, overflow="ellipsis")]
        for chunk in chunks:
            t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
            t.add_column("model", no_wrap=True, style="bold")
            for c in chunk:
                t.add_column(escape.console(heads[c]), justify="right", no_wrap=True)
            for m in models:
                t.add_row(escape.console(m), *[f"[bold green]{texts[c][m]}[/bold green]"
                                               if texts[c][m].startswith("★") else texts[c][m] for c in chunk])
            parts.append(t)
        if units:
            parts.append(Text("units: " + "; ".join(units), style="dim", no_wrap=True, overflow="ellipsis"))
        out.append(Group(*parts))
    return out


CONSOLE_LEGEND = ("headline metrics (all of them in the Markdown, CSV and HTML files)",
                  "values in % for fractions; [95% CI]; ±std over seeds",
                  "★ best: 95% CI clear of the runner-up's (no CI: strictly better; no ties)")

#: the legend of the Markdown and HTML tables
TABLE_LEGEND = ("Values in % for fractions; [95 % bootstrap interval]; ±std over n seeds. One table per task, split "
                "and protocol fingerprint; metrics in a fixed order (R@1, R@5, R@10 then RSUM, i2t before t2i). "
                "Bold = best: " + BEST_RULE + ".")


# ------------------------------------------------------------------------------------------------ CSV / MD
def to_dataframe(rows: Sequence[MetricRow]):
    """Tidy pandas frame: one row per (model, task, split, metric, fingerprint, seed).

    Rows are ordered by task, split, metric (in :func:`~loupe_bench.report.table.metric_sort_key` order, as the
    tables' columns: R@1, R@5, R@10, RSUM), model and seed.
    """
    import pandas as pd

    df = pd.DataFrame([r._asdict() for r in rows])
    ranks = {m: i for i, m in enumerate(sorted(set(df["metric"]), key=lambda m: (metric_sort_key(m), m)))}
    df["_metric_rank"] = df["metric"].map(ranks)
    df = df.sort_values(["task", "split", "_metric_rank", "model", "seed"], na_position="first", kind="stable")
    return df.drop(columns="_metric_rank").reset_index(drop=True)


def column_groups(table: ResultTable) -> List[Tuple[str, List[int]]]:
    """Columns grouped per (task, split, protocol fingerprint): one sub-table each, titled ``task / split``."""
    groups: Dict[Tuple[str, str, str], List[int]] = {}
    for ci, col in enumerate(table.columns):
        groups.setdefault((col.task, col.split, col.fingerprint), []).append(ci)
    out = []
    for (task, split, fp), cols in groups.items():
        label = table.columns[cols[0]].label.rsplit("/", 1)[0]
        what = table.protocols.get(fp)
        out.append((f"{label} (protocol {fp[:8]}{': ' + what if what else ''})", cols))
    return out


def markdown_header(title: str, metadata: Sequence[Tuple[str, str]], statement: Optional[str]) -> str:
    """Title, the scope statement (synthetic results) as a quote, the run metadata as a list, the legend; every
    user-derived string escaped (:func:`~loupe_bench.report.escape.md`)."""
    parts = [f"# {escape.md(title)}", ""]
    if statement:
        parts += [f"> **{escape.md(statement)}**", ""]
    if metadata:
        parts += [f"- **{escape.md(label)}**: {escape.md(text)}" for label, text in metadata] + [""]
    parts += [TABLE_LEGEND, "", ""]
    return "\n".join(parts)


def markdown_table(table: ResultTable) -> str:
    """Markdown: one table (models × metrics) per task and split; best per column in bold (:data:`BEST_RULE`).
    Names, titles and notes are escaped (:func:`~loupe_bench.report.escape.md`): markup in a name renders as text."""
    if not table.columns:
        return "_no results_\n"
    parts = []
    for title, cols in column_groups(table):
        models = [m for m in table.models if any((m, c) in table.cells for c in cols)]
        head = "| model | " + " | ".join(
            f"{escape.md(table.columns[c].metric)} ({escape.md(display_units(table.columns[c].units))})"
            for c in cols) + " |"
        lines = [f"### {escape.md(title)}", "", head, "|---|" + "---:|" * len(cols)]
        for m in models:
            cells = []
            for c in cols:
                text = format_cell(table.cell(m, c))
                cells.append(f"**{text}**" if m in table.best.get(c, []) else text)
            lines.append(f"| {escape.md(m)} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    out = "\n".join(parts)
    if table.notes:
        out += "\n" + "\n".join(f"- note: {escape.md(n)}" for n in table.notes) + "\n"
    return out


# ------------------------------------------------------------------------------------------------ discovery
def discover_context(results_dir: Path) -> Dict[str, object]:
    """Find the run directories and the synthetic world that belong to a results folder.

    A ``reproduce.json`` manifest (written by ``reproduce synthetic``) in the results folder or its parent names
    them; otherwise ``../runs/*`` with a ``log.jsonl`` and ``../world`` with a ``world.json`` are used when present.
    """
    ctx: Dict[str, object] = {"runs": {}, "world": None, "manifest": None}
    for base in (results_dir, results_dir.parent):
        man = base / MANIFEST
        if man.is_file():
            data = read_manifest(man)
            ctx["manifest"] = data
            root = man.parent
            ctx["runs"] = {k: root / v for k, v in data.get("runs", {}).items() if (root / v).is_dir()}
            w = data.get("world")
            if w and (root / w / "world.json").is_file():
                ctx["world"] = root / w
            return ctx
    runs_root = results_dir.parent / "runs"
    if runs_root.is_dir():
        ctx["runs"] = {p.name: p for p in sorted(runs_root.iterdir()) if (p / "log.jsonl").is_file()}
    world = results_dir.parent / "world"
    if (world / "world.json").is_file():
        ctx["world"] = world
    return ctx


# ------------------------------------------------------------------------------------------------ HTML
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
.best{font-weight:bold;background:#e7f7e7}.note{color:#a15c00}img{max-width:100%;margin:6px 0}figure{margin:0 0 1em 0}
figcaption{font-size:12px;color:#444}.scope{border-left:4px solid #a15c00;background:#fff6e5;padding:.5em 1em}
table.meta td{text-align:left}"""


def _img(png: bytes, alt: str) -> str:
    return (f'<figure><img alt="{_html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}"/><figcaption>{_html.escape(alt)}</figcaption></figure>')


def html_report(table: ResultTable, *, title: str, bars, curves: Optional[bytes], explanations, notes: List[str],
                unavailable: Dict[str, str], metadata: Sequence[Tuple[str, str]] = (),
                statement: Optional[str] = None) -> str:
    """The self-contained page: title, scope statement (synthetic results), run metadata, tables with the legend
    (:data:`TABLE_LEGEND`), notes, plots and explanations (PNG embedded as base64)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_html.escape(title)}</h1>"]
    if statement:
        parts.append(f'<p class="scope"><strong>{_html.escape(statement)}</strong></p>')
    if metadata:
        parts.append('<h2>Run</h2><table class="meta">')
        parts += [f"<tr><th>{_html.escape(label)}</th><td>{_html.escape(text)}</td></tr>" for label, text in metadata]
        parts.append("</table>")
    parts.append(f"<h2>Results</h2><p>{_html.escape(TABLE_LEGEND)}</p>")
    for title_g, cols in column_groups(table):
        models = [m for m in table.models if any((m, c) in table.cells for c in cols)]
        parts.append(f"<h3>{_html.escape(title_g)}</h3><table><tr><th>model</th>")
        parts += [f"<th>{_html.escape(table.columns[c].metric)}</th>" for c in cols]
        parts.append("</tr>")
        for m in models:
            parts.append(f"<tr><td>{_html.escape(m)}</td>")
            for c in cols:
                cls = ' class="best"' if m in table.best.get(c, []) else ""
                parts.append(f"<td{cls}>{_html.escape(format_cell(table.cell(m, c)))}</td>")
            parts.append("</tr>")
        parts.append("</table>")
    for n in table.notes + notes:
        parts.append(f'<p class="note">{_html.escape(n)}</p>')
    if unavailable:
        parts.append("<h3>Unavailable metrics</h3><ul>")
        parts += [f"<li>{_html.escape(k)}: {_html.escape(v)}</li>" for k, v in sorted(unavailable.items())]
        parts.append("</ul>")
    if bars:
        parts.append("<h2>Metrics with 95 % intervals</h2>")
        parts += [_img(png, name) for name, png in bars]
    if curves:
        parts.append("<h2>Training curves</h2>" + _img(curves, "loss terms against step (log.jsonl)"))
    if explanations:
        parts.append("<h2>LOUPE explanations</h2><p>Generated regions (boxes, confidence), each phrase's best "
                     "region, and the region–phrase interaction matrix.</p>")
        parts += [_img(png, name) for name, png in explanations]
    parts.append("</body></html>\n")
    return "".join(parts)


def unfinished_notes(results) -> List[str]:
    """One note per model evaluated from an unfinished training run (result ``model.finished`` false)."""
    seen = {}
    for obj in results:
        model = obj.get("model") or {}
        if model.get("finished") is False:
            seen[model.get("name")] = model.get("checkpoint_step")
    return [f"{name}: evaluated at checkpoint step {step} of an unfinished training run"
            for name, step in sorted(seen.items(), key=lambda kv: str(kv[0]))]


# ------------------------------------------------------------------------------------------------ entry point
#: the LOUPE run the report explains when it is present: the main LOUPE model of the reproduction plans (the LOUPE
#: entry of ``loupe_bench.pipeline.plan.MAIN_MODELS``; a test keeps the two equal — the report does not import the
#: pipeline, which is the layer above it)
MAIN_LOUPE_MODEL = "loupe-tiny"


def main_loupe_model() -> str:
    """The main LOUPE model of the reproduction plans (:data:`MAIN_LOUPE_MODEL`), the run the report explains."""
    return MAIN_LOUPE_MODEL


def explained_run(run_names: Sequence[str], main: Optional[str] = None) -> Optional[str]:
    """Which LOUPE run the report explains: the run named as the plan's main LOUPE model (``main``, default
    :func:`main_loupe_model`, i.e. ``loupe-tiny``) when present, else the LOUPE run (name containing ``loupe``)
    with the shortest name, ties alphabetically; ``None`` when there is no LOUPE run."""
    main = main_loupe_model() if main is None else main
    loupe = [n for n in run_names if "loupe" in n.lower()]
    if not loupe:
        return None
    return main if main in loupe else min(loupe, key=lambda n: (len(n), n))


def report(results_dir, html: bool = True, markdown: bool = True, csv: bool = True, *, out_dir=None,
           runs: Optional[Dict[str, Path]] = None, world_dir=None, explain_images: int = 3,
           console=None, title: Optional[str] = None, quiet: bool = False) -> ReportPaths:
    """Render the results under ``results_dir``.

    Args:
        results_dir: folder of result JSONs.
        html, markdown, csv: which files to write (``report.html``, ``report.md``, ``results.csv``).
        out_dir: where to write them (default: ``results_dir/../report`` when inside a reproduction, else
            ``results_dir/report``).
        runs: run name → run directory (training curves, LOUPE explanations); discovered when None.
        world_dir: the synthetic world (explanations); discovered when None.
        explain_images: number of sample images for LOUPE's explanations.
        console: a rich Console to print the table to (default: a new one unless ``quiet``).

    Returns:
        :class:`ReportPaths` with the written files and the table.
    """
    from .results_io import load_results_raw

    results_dir = Path(results_dir)
    rows = load_rows(results_dir)
    raw = load_results_raw(results_dir)
    protocols = {obj["task"]["fingerprint"]: protocol_label(obj.get("extra") or {}) for obj in raw}
    table = build_table(rows, protocols=protocols)
    headline = build_table(rows, metrics=HEADLINE_METRICS, protocols=protocols)
    ctx = discover_context(results_dir)
    runs = dict(ctx["runs"]) if runs is None else runs  # type: ignore[arg-type]
    table.notes.extend(unfinished_notes(raw))
    world_dir = ctx["world"] if world_dir is None else Path(world_dir)
    if out_dir is None:
        out_dir = results_dir.parent / "report" if ctx["manifest"] else results_dir / "report"
    out_dir = Path(out_dir)
    title = title or f"loupe-bench report: {results_dir.name}"
    if not quiet:
        _print_console(console, title, headline if headline.columns else table, table.notes)
    csv_path = md_path = html_path = None
    metadata = run_metadata(raw, ctx["manifest"], runs, world_dir)      # type: ignore[arg-type]
    statement = scope_statement([r.dataset for r in rows])
    if csv:
        csv_path = out_dir / "results.csv"
        atomic_write_text(csv_path, to_dataframe(rows).map(escape.csv_cell).to_csv(index=False))
    if markdown:
        md_path = out_dir / "report.md"
        atomic_write_text(md_path, markdown_header(title, metadata, statement) + markdown_table(table))
    if html:
        html_path = out_dir / "report.html"
        atomic_write_text(html_path, _html_page(table, raw, runs, world_dir, explain_images, title=title,
                                                metadata=metadata, statement=statement))
    return ReportPaths(csv_path, md_path, html_path, table)


def _print_console(console, title: str, shown: ResultTable, notes: Sequence[str]) -> None:
    """Print the title, :data:`CONSOLE_LEGEND`, the console tables of ``shown`` and the notes to ``console`` (a new
    rich Console when None)."""
    from rich.console import Console

    console = console or Console()
    console.print(f"[bold]{escape.console(title)}[/bold]")
    for line in CONSOLE_LEGEND:
        console.print(line)
    for t in console_tables(shown, width=max(40, console.width)):
        console.print(t)
    for n in notes:
        console.print(f"[yellow]note:[/yellow] {escape.console(n)}")


def _unavailable_metrics(raw) -> Dict[str, str]:
    """``{"MODEL / TASK / METRIC": reason}`` for every metric a result JSON lists as unavailable."""
    unavailable: Dict[str, str] = {}
    for obj in raw:
        for k, v in (obj.get("unavailable") or {}).items():
            unavailable[f"{obj['model']['name']} / {obj['task']['name']} / {k}"] = str(v)
    return unavailable


def _explanations(runs: Dict[str, Path], world_dir, explain_images: int, notes: List[str]) -> List:
    """LOUPE's explanation figures for the run :func:`explained_run` picks; when there are none, why goes to
    ``notes``."""
    name = explained_run(list(runs))
    if name is not None and world_dir is not None:
        from .explain import explanation_figures

        try:
            return explanation_figures(runs[name], world_dir, n_images=explain_images, label=name)
        except LoupeBenchError as exc:
            notes.append(f"LOUPE explanations unavailable: {exc}")
    elif name is None:
        notes.append("LOUPE explanations: no LOUPE run directory found beside the results")
    else:
        notes.append("LOUPE explanations: the synthetic world was not found beside the results")
    return []


def _html_page(table: ResultTable, raw, runs: Dict[str, Path], world_dir, explain_images: int, *, title: str,
               metadata: Sequence[Tuple[str, str]], statement: Optional[str]) -> str:
    """The HTML report of :func:`report`: :func:`html_report` with the metric bars, the training curves of the
    runs' ``log.jsonl`` and LOUPE's explanations (one colour per model in every figure)."""
    from .plots import metric_bars, model_colours, training_curves

    colours = model_colours(list(table.models) + list(runs))     # one colour per model for every figure
    unavailable = _unavailable_metrics(raw)
    notes: List[str] = []
    logs = {name: Path(p) / "log.jsonl" for name, p in runs.items() if (Path(p) / "log.jsonl").is_file()}
    curves = training_curves(logs, colours)
    explanations = _explanations(runs, world_dir, explain_images, notes)
    return html_report(table, title=title, bars=metric_bars(table, colours=colours), curves=curves,
                       explanations=explanations, notes=notes, unavailable=unavailable, metadata=metadata,
                       statement=statement)
