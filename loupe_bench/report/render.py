"""Reports from result JSONs: rich console table, pandas CSV, Markdown and a self-contained HTML page.

``render_report(results_dir)`` renders the models × task-metrics table (95 % intervals, best per column marked)
and, for HTML, embeds (base64 PNG) metric bar charts with interval error bars, training curves from the run
directories' ``log.jsonl`` and LOUPE's explanations on sample images when a LOUPE run and the synthetic world are
present.
"""
from __future__ import annotations

import base64
import html as _html
import re
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import LoupeBenchError
from ..utils.run_files import LOG_FILE
from ..utils.io import atomic_write_text
from . import escape
from .metadata import run_metadata, scope_statement
from ..tasks.metric_registry import metric_info
from .results_io import REFERENCE_ROWS, MetricRow, load, protocol_label, read_manifest
from .table import BEST_RULE, Cell, ResultTable, build_table, format_cell, heading, leaderboard_csv, metric_sort_key

MANIFEST = "reproduce.json"


class ReportPaths(NamedTuple):
    csv: Optional[Path]
    markdown: Optional[Path]
    html: Optional[Path]
    table: ResultTable
    leaderboard: Optional[Path] = None      # leaderboard.csv (wide: one row per model), written with the CSV


# ------------------------------------------------------------------------------------------------ row kinds
#: how an oracle model's spec description starts (``baselines/loupe-oracle-regions.yaml``: an upper bound that
#: uses box labels); its rows are marked "oracle" in every table and never best
ORACLE_DESCRIPTION = "NOT LOUPE"


def oracle_models(raw) -> List[str]:
    """The models of the result JSONs ``raw`` that are oracles: spec description starting with
    :data:`ORACLE_DESCRIPTION`, or (results without a spec) a name ending in ``oracle-regions``."""
    out = set()
    for obj in raw:
        model = obj.get("model") or {}
        spec = model.get("spec") if isinstance(model.get("spec"), dict) else {}
        name = str(model.get("name", ""))
        if str(spec.get("description") or "").startswith(ORACLE_DESCRIPTION) or name.endswith("oracle-regions"):
            out.add(name)
    return sorted(out)


def row_kind(table: ResultTable, model: str) -> str:
    """``"oracle"`` (an upper bound that uses labels), ``"reference"`` (chance, attribute oracle) or ``""``."""
    if model in REFERENCE_ROWS:
        return "reference"
    return "oracle" if model in table.oracles else ""


# ------------------------------------------------------------------------------------------------ console
#: the metrics the console summary shows (the files hold every metric), in the order every format uses
#: (:func:`~loupe_bench.report.table.metric_sort_key`); each is a registered metric, shown under its short name
HEADLINE_METRICS = ("i2t_R@1", "t2i_R@1", "rsum", "top1", "AP", "AP50", "acc@0.5", "BLEU-4", "CIDEr-D", "acc",
                    "group_score")
CONSOLE_WIDTH = 80


def compact_cell(cell: Optional["Cell"], decimals: int = 1) -> str:
    """``8.7 [5.7,12.0]`` for one seed, ``8.7±1.2 [5.7,12.0]`` over several (no spaces inside the interval), at
    ``decimals`` decimals (a column's metric precision)."""
    if cell is None:
        return "–"
    text = f"{cell.value:.{decimals}f}"
    if cell.n > 1:
        text += f"±{cell.std:.{decimals}f}"
    if cell.ci_low is not None:
        text += f" [{cell.ci_low:.{decimals}f},{cell.ci_high:.{decimals}f}]"
    return text


def console_tables(table: ResultTable, width: int = CONSOLE_WIDTH) -> List:
    """Rich renderables for a terminal: per (task, split, protocol) a title line and a table with the models as rows
    and short metric names (the registered ``display``) as columns, plus a units line where needed.

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
        texts = {c: {m: ("★ " if m in table.best.get(c, []) else "")
                     + compact_cell(table.cell(m, c), table.columns[c].info.precision) for m in models} for c in cols}
        heads = {c: heading(table.columns[c], short=True) for c in cols}
        units = sorted({f"{heads[c]}: {table.columns[c].info.unit_label}" for c in cols
                        if table.columns[c].info.unit_label != "%"})
        col_w = {c: max([len(heads[c])] + [len(t) for t in texts[c].values()]) + 2 for c in cols}
        model_w = max([len("model")] + [len(m) + (len(row_kind(table, m)) + 3 if row_kind(table, m) else 0)
                                        for m in models]) + 2
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
                t.add_column(Text(heads[c]), justify="right", no_wrap=True)
            for m in models:
                kind = row_kind(table, m)
                name = Text(m, style="bold") + Text(f" ({kind})" if kind else "", style="dim italic")
                t.add_row(name, *[f"[bold green]{texts[c][m]}[/bold green]"
                                  if texts[c][m].startswith("★") else texts[c][m] for c in chunk])
            parts.append(t)
        if units:
            parts.append(Text("units: " + "; ".join(units), style="dim", no_wrap=True, overflow="ellipsis"))
        kinds = sorted({row_kind(table, m) for m in models} - {""})
        if kinds:
            parts.append(Text(" / ".join(kinds) + " rows: not methods under test, never ★ best", style="dim",
                              no_wrap=True, overflow="ellipsis"))
        out.append(Group(*parts))
    return out


CONSOLE_LEGEND = ("headline metrics (all of them in the Markdown, CSV and HTML files)",
                  "values in % for fractions, RSUM as the sum of the recalls in % (0–600); [95% CI]; "
                  "±std over seeds",
                  "★ best: 95% CI clear of the runner-up's (no CI: strictly better at the shown precision)",
                  "(oracle) rows: upper bounds using labels; (reference) rows: chance levels; never ★ best")

#: the legend of the Markdown and HTML tables
TABLE_LEGEND = ("Values in % for fractions, RSUM as the sum of the six recalls in % (0–600, as CLIP_benchmark and "
                "the papers write it); [95 % bootstrap interval]; ±std over n seeds. One table per task, split "
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
    info = {m: metric_info(m) for m in ranks}
    df["display_value"] = [info[m].shown(v) for v, m in zip(df["value"], df["metric"])]
    df["display_units"] = [info[m].unit_label for m in df["metric"]]
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
    parts += [TABLE_LEGEND, "", ROW_KINDS_NOTE, "", ""]
    return "\n".join(parts)


#: widest Markdown table row in characters (about 1,000 px of a rendered page): wider groups are split by columns
MARKDOWN_BUDGET_CHARS = 140


def markdown_table(table: ResultTable) -> str:
    """Markdown: one table (models × metrics) per task and split, its columns split over consecutive tables
    ("part k of n") when a row would pass :data:`MARKDOWN_BUDGET_CHARS`; best per column in bold
    (:data:`BEST_RULE`).
    Names, titles and notes are escaped (:func:`~loupe_bench.report.escape.md`): markup in a name renders as text."""
    if not table.columns:
        return "_no results_\n"
    parts = []
    for title, cols in column_groups(table):
        models = [m for m in table.models if any((m, c) in table.cells for c in cols)]
        heads = [f"{escape.md(heading(table.columns[c]))} ({escape.md(table.columns[c].info.unit_label)})"
                 for c in cols]
        names = [f"{escape.md(m)}{f' _({row_kind(table, m)})_' if row_kind(table, m) else ''}" for m in models]
        body = {(m, c): (f"**{t}**" if m in table.best.get(c, []) else t) for m in models for c in cols
                for t in [format_cell(table.cell(m, c), decimals=table.columns[c].info.precision)]}
        widths = [max([len(h)] + [len(body[(m, c)]) for m in models]) + 3 for h, c in zip(heads, cols)]
        chunks = _chunks(widths, max(len(n) for n in names) + 4, MARKDOWN_BUDGET_CHARS)
        lines = [f"### {escape.md(title)}"]
        for k, chunk in enumerate(chunks):
            lines += ["", f"_part {k + 1} of {len(chunks)}_", ""] if len(chunks) > 1 else [""]
            lines += ["| model | " + " | ".join(heads[i] for i in chunk) + " |", "|---|" + "---:|" * len(chunk)]
            lines += [f"| {n} | " + " | ".join(body[(m, cols[i])] for i in chunk) + " |" for m, n in zip(models, names)]
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
        ctx["runs"] = _runs_below(runs_root)
    world = results_dir.parent / "world"
    if (world / "world.json").is_file():
        ctx["world"] = world
    return ctx


def _runs_below(runs_root: Path) -> Dict[str, Path]:
    """Run folders (with a ``log.jsonl``) under ``runs_root`` by model name: ``runs/<model>/`` or a reproduction's
    ``runs/s<seed>/<model>/`` (the lowest seed of each model, as the manifest names them)."""
    runs: Dict[str, Path] = {}
    for p in sorted(runs_root.iterdir()):
        if (p / LOG_FILE).is_file():
            runs.setdefault(p.name, p)
    seeds = sorted((p for p in runs_root.iterdir() if p.is_dir() and re.fullmatch(r"s\d+", p.name)),
                   key=lambda p: int(p.name[1:]))
    for seed in seeds:
        for p in sorted(seed.iterdir()):
            if (p / LOG_FILE).is_file():
                runs.setdefault(p.name, p)
    return runs


# ------------------------------------------------------------------------------------------------ HTML
_CSS = """body{font-family:system-ui,sans-serif;margin:1em;max-width:1400px;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th.m,th.row{text-align:left}
.tw,.fw{overflow-x:auto;max-width:100%;margin:0 0 1em 0}table.rt td,table.rt th{white-space:nowrap}
.best{font-weight:bold;background:#e7f7e7}.note{color:#a15c00}
tr.oracle td,tr.reference td,th.oracle,th.reference{background:#f4f4f4;color:#555;font-style:italic}
.tag{font-size:11px;font-style:normal;border:1px solid #999;border-radius:3px;padding:0 3px;margin-left:4px;color:#333}
img{max-width:none;margin:6px 0;display:block}figure{margin:0 0 1em 0}
figcaption{font-size:12px;color:#444}.scope{border-left:4px solid #a15c00;background:#fff6e5;padding:.5em 1em}
table.meta td{text-align:left;white-space:normal}nav.toc ul{margin:.2em 0;padding-left:1.4em}nav.toc{font-size:14px}"""

#: what the oracle and reference rows are, said under every results table (console, Markdown and HTML)
ROW_KINDS_NOTE = ("Oracle rows (marked “oracle”) are upper bounds that are not a method under test: they use "
                  "labels a model never sees at test time (loupe-oracle-regions: LOUPE's regions replaced by the "
                  "ground-truth boxes of the caption's phrases, i.e. box labels). Reference rows (marked "
                  "“reference”) are levels for scale: chance and the attribute oracle (the box whose attributes "
                  "match the phrase). Neither kind is ever marked best.")

#: the width (CSS px) a results table may take before it is transposed or split: fits a 1,000 px window
TABLE_BUDGET_PX = 940
#: rough width of one character of the 12 px table font, and a cell's padding and border (estimates for layout)
CHAR_PX, CELL_PAD_PX = 7.0, 16


def _img(png: bytes, alt: str) -> str:
    return (f'<figure class="fw"><img alt="{_html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}"/><figcaption>{_html.escape(alt)}</figcaption></figure>')


def _row_head(table: ResultTable, m: str, tag: str = "td") -> str:
    """The model's cell: its name, and for oracle/reference rows a visible tag."""
    kind = row_kind(table, m)
    badge = f'<span class="tag">{kind}</span>' if kind else ""
    cls = f' class="row {kind}"' if tag == "th" and kind else (' class="row"' if tag == "th" else "")
    return f"<{tag}{cls}>{_html.escape(m)}{badge}</{tag}>"


def _text_w(text: str) -> float:
    return len(text) * CHAR_PX + CELL_PAD_PX


def _chunks(widths: Sequence[float], first: float, budget: float = TABLE_BUDGET_PX) -> List[List[int]]:
    """Split consecutive items of ``widths`` into runs that fit ``budget`` after a ``first`` column."""
    out: List[List[int]] = [[]]
    used = first
    for i, w in enumerate(widths):
        if out[-1] and used + w > budget:
            out.append([])
            used = first
        out[-1].append(i)
        used += w
    return out


def html_group_tables(table: ResultTable, cols: Sequence[int]) -> List[str]:
    """The HTML table(s) of one column group, each fitting :data:`TABLE_BUDGET_PX` (estimated from the text).

    Models as rows when it fits; else, when metrics outnumber models, metrics as rows and models as columns; the
    columns are then split over consecutive tables until each fits. Each table sits in an ``overflow-x: auto``
    container and its cells never wrap, so only a table scrolls sideways, never the page. Metric names are
    ``<th class="m">``; best cells ``class="best"``; oracle/reference rows (or columns) carry a tag.
    """
    models = [m for m in table.models if any((m, c) in table.cells for c in cols)]
    text = {(m, c): format_cell(table.cell(m, c), decimals=table.columns[c].info.precision) for m in models
            for c in cols}
    head = {c: heading(table.columns[c]) for c in cols}
    col_w = [max([_text_w(head[c])] + [_text_w(text[(m, c)]) for m in models]) for c in cols]
    model_w = max(_text_w(m) + (60 if row_kind(table, m) else 0) for m in models)
    transpose = model_w + sum(col_w) > TABLE_BUDGET_PX and len(cols) > len(models)

    def td(m: str, c: int) -> str:
        cls = ' class="best"' if m in table.best.get(c, []) else ""
        return f"<td{cls}>{_html.escape(text[(m, c)])}</td>"

    out = []
    if not transpose:
        for chunk in _chunks(col_w, model_w):
            rows = ["<tr><th>model</th>" + "".join(f'<th class="m">{_html.escape(head[cols[i]])}'
                                                   f"</th>" for i in chunk) + "</tr>"]
            rows += [f'<tr class="{row_kind(table, m)}">' + _row_head(table, m)
                     + "".join(td(m, cols[i]) for i in chunk) + "</tr>" for m in models]
            out.append('<div class="tw"><table class="rt">' + "".join(rows) + "</table></div>")
        return out
    metric_w = max(_text_w(head[c]) for c in cols)
    model_col_w = [max([_text_w(m) + (60 if row_kind(table, m) else 0)] + [_text_w(text[(m, c)]) for c in cols])
                   for m in models]
    for chunk in _chunks(model_col_w, metric_w):
        rows = ["<tr><th>metric</th>" + "".join(_row_head(table, models[i], "th") for i in chunk) + "</tr>"]
        rows += [f'<tr><th class="m">{_html.escape(head[c])}</th>'
                 + "".join(td(models[i], c) for i in chunk) + "</tr>" for c in cols]
        out.append('<div class="tw"><table class="rt">' + "".join(rows) + "</table></div>")
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def html_results(table: ResultTable) -> Tuple[str, str]:
    """``(table of contents, results sections)``: one ``<section id="task-…">`` per task holding a table group per
    split and protocol (``<h4 id="g<i>">``); the contents link every task and each of its tables."""
    tasks: Dict[str, List[Tuple[int, str, List[int]]]] = {}
    for i, (title_g, cols) in enumerate(column_groups(table)):
        tasks.setdefault(table.columns[cols[0]].task, []).append((i, title_g, cols))
    toc, body = [], []
    for task, groups in tasks.items():
        anchor = f"task-{_slug(task)}"
        links = " · ".join(f'<a href="#g{i}">{_html.escape(table.columns[cols[0]].split)}</a>'
                           for i, _, cols in groups)
        toc.append(f'<li><a href="#{anchor}">{_html.escape(task)}</a>: {links}</li>')
        body.append(f'<section id="{anchor}"><h3>{_html.escape(task)}</h3>')
        for i, title_g, cols in groups:
            body.append(f'<h4 id="g{i}">{_html.escape(title_g)}</h4>')
            body += html_group_tables(table, cols)
        body.append("</section>")
    return "".join(toc), "".join(body)


def html_report(table: ResultTable, *, title: str, bars, curves: Optional[bytes], explanations, notes: List[str],
                unavailable: Dict[str, str], metadata: Sequence[Tuple[str, str]] = (),
                statement: Optional[str] = None) -> str:
    """The self-contained page: title, scope statement (synthetic results), contents, run metadata, tables with the
    legend (:data:`TABLE_LEGEND`, :data:`ROW_KINDS_NOTE`), notes, plots and explanations (PNG embedded as base64)."""
    toc, results = html_results(table)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_html.escape(title)}</title>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<style>{_CSS}</style></head><body><h1>{_html.escape(title)}</h1>"]
    if statement:
        parts.append(f'<p class="scope"><strong>{_html.escape(statement)}</strong></p>')
    sections = [("run", "Run")] if metadata else []
    sections += [("results", "Results")]
    sections += [(k, v) for k, v, on in (("plots", "Metrics with 95 % intervals", bars),
                                         ("curves", "Training curves", curves),
                                         ("explanations", "LOUPE explanations", explanations)) if on]
    parts.append('<nav class="toc"><h2>Contents</h2><ul>' + "".join(
        f'<li><a href="#{k}">{_html.escape(v)}</a>' + (f"<ul>{toc}</ul>" if k == "results" else "") + "</li>"
        for k, v in sections) + "</ul></nav>")
    if metadata:
        parts.append('<h2 id="run">Run</h2><div class="tw"><table class="meta">')
        parts += [f"<tr><th>{_html.escape(label)}</th><td>{_html.escape(text)}</td></tr>" for label, text in metadata]
        parts.append("</table></div>")
    parts.append(f'<h2 id="results">Results</h2><p>{_html.escape(TABLE_LEGEND)}</p>'
                 f"<p>{_html.escape(ROW_KINDS_NOTE)}</p>{results}")
    for n in table.notes + notes:
        parts.append(f'<p class="note">{_html.escape(n)}</p>')
    if unavailable:
        parts.append("<h3>Unavailable metrics</h3><ul>")
        parts += [f"<li>{_html.escape(k)}: {_html.escape(v)}</li>" for k, v in sorted(unavailable.items())]
        parts.append("</ul>")
    if bars:
        parts.append('<h2 id="plots">Metrics with 95 % intervals</h2>')
        parts += [_img(png, name) for name, png in bars]
    if curves:
        parts.append('<h2 id="curves">Training curves</h2>' + _img(curves, "loss terms against step (log.jsonl)"))
    if explanations:
        parts.append('<h2 id="explanations">LOUPE explanations</h2><p>Generated regions (coloured boxes, '
                     "confidence), each phrase's best region (dashed black-on-white outline, one dash pattern per "
                     "phrase) with the ground-truth box of the phrase's object (solid white-on-black outline), and "
                     "the region–phrase interaction matrix.</p>")
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


#: the title of a reproduction's report, by the manifest's ``kind`` (the pipeline writes it with these titles)
REPRODUCTION_TITLES = {"synthetic": "loupe-bench synthetic reproduction", "paper": "loupe-bench paper benchmarks"}


def default_title(results_dir: Path, manifest) -> str:
    """The report's title when none is given: the reproduction's own title when a manifest names the results'
    kind (re-rendering a reproduction keeps its title), else ``loupe-bench report: <folder name>``."""
    kind = manifest.get("kind") if isinstance(manifest, dict) else None
    return REPRODUCTION_TITLES.get(kind) if kind in REPRODUCTION_TITLES else f"loupe-bench report: {results_dir.name}"


def render_report(results_dir, html: bool = True, markdown: bool = True, csv: bool = True, *, out_dir=None,
                  runs: Optional[Dict[str, Path]] = None, world_dir=None, explain_images: int = 3,
                  console=None, title: Optional[str] = None, quiet: bool = False) -> ReportPaths:
    """Render the results under ``results_dir`` (``loupe-bench report`` calls this function).

    Args:
        results_dir: folder of result JSONs.
        html, markdown, csv: which files to write (``report.html``, ``report.md``, ``results.csv``).
        out_dir: where to write them (default: ``results_dir/../report`` when inside a reproduction, else
            ``results_dir/report``).
        runs: run name → run directory (training curves, LOUPE explanations); discovered when None.
        world_dir: the synthetic world (explanations); discovered when None.
        explain_images: number of sample images for LOUPE's explanations.
        console: a rich Console to print the table to (default: a new one unless ``quiet``).
        title: the report's title (default: the reproduction's own, else ``loupe-bench report: <folder>``).
        quiet: print nothing.

    Returns:
        :class:`ReportPaths` with the written files and the table.
    """
    results_dir = Path(results_dir)
    loaded = load(results_dir)          # every result file read and validated once
    rows, raw = loaded.rows, loaded.objects()
    protocols = {obj["task"]["fingerprint"]: protocol_label(obj.get("extra") or {}) for obj in raw}
    oracles = oracle_models(raw)
    table = build_table(rows, protocols=protocols, oracles=oracles)
    headline = build_table(rows, metrics=HEADLINE_METRICS, protocols=protocols, oracles=oracles)
    ctx = discover_context(results_dir)
    runs = dict(ctx["runs"]) if runs is None else runs  # type: ignore[arg-type]
    table.notes.extend(unfinished_notes(raw))
    world_dir = ctx["world"] if world_dir is None else Path(world_dir)
    out_dir = default_out_dir(results_dir) if out_dir is None else Path(out_dir)
    title = title or default_title(results_dir, ctx.get("manifest"))
    if not quiet:
        _print_console(console, title, headline if headline.columns else table, table.notes)
    csv_path = md_path = html_path = board_path = None
    metadata = run_metadata(raw, ctx["manifest"], runs, world_dir)      # type: ignore[arg-type]
    statement = scope_statement([r.dataset for r in rows])
    if csv:
        csv_path = out_dir / "results.csv"
        atomic_write_text(csv_path, to_dataframe(rows).map(escape.csv_cell).to_csv(index=False))
        board_path = atomic_write_text(out_dir / "leaderboard.csv", leaderboard_csv(table))
    if markdown:
        md_path = out_dir / "report.md"
        atomic_write_text(md_path, markdown_header(title, metadata, statement) + markdown_table(table))
    if html:
        html_path = out_dir / "report.html"
        atomic_write_text(html_path, _html_page(table, raw, runs, world_dir, explain_images, title=title,
                                                metadata=metadata, statement=statement))
    return ReportPaths(csv_path, md_path, html_path, table, board_path)


#: the files :func:`render_report` writes, by option (the CSV option writes both CSVs)
REPORT_FILES = {"csv": ("results.csv", "leaderboard.csv"), "markdown": ("report.md",), "html": ("report.html",)}


def default_out_dir(results_dir) -> Path:
    """Where :func:`render_report` writes without ``out_dir``: ``results_dir/../report`` inside a reproduction (a
    ``reproduce.json`` beside the results), else ``results_dir/report``."""
    results_dir = Path(results_dir)
    return results_dir.parent / "report" if discover_context(results_dir)["manifest"] else results_dir / "report"


def _print_console(console, title: str, shown: ResultTable, notes: Sequence[str]) -> None:
    """Print the title, :data:`CONSOLE_LEGEND`, the console tables of ``shown`` and the notes to ``console`` (a new
    rich Console when None)."""
    from rich.console import Console

    console = console or Console(emoji=False)
    console.print(f"[bold]{escape.console(title)}[/bold]", emoji=False)
    for line in CONSOLE_LEGEND:
        console.print(line)
    for t in console_tables(shown, width=max(40, console.width)):
        console.print(t)
    for n in notes:
        console.print(f"[yellow]note:[/yellow] {escape.console(n)}", emoji=False)


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
    """The HTML report of :func:`render_report`: :func:`html_report` with the metric bars, the training curves of the
    runs' ``log.jsonl`` and LOUPE's explanations (one colour per model in every figure)."""
    from .plots import metric_bars, model_colours, training_curves

    colours = model_colours(list(table.models) + list(runs))     # one colour per model for every figure
    unavailable = _unavailable_metrics(raw)
    notes: List[str] = []
    logs = {name: Path(p) / LOG_FILE for name, p in runs.items() if (Path(p) / LOG_FILE).is_file()}
    curves = training_curves(logs, colours)
    explanations = _explanations(runs, world_dir, explain_images, notes)
    return html_report(table, title=title, bars=metric_bars(table, colours=colours), curves=curves,
                       explanations=explanations, notes=notes, unavailable=unavailable, metadata=metadata,
                       statement=statement)
