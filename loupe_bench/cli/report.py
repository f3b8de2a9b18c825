"""``loupe-bench report``, ``loupe-bench compare --paper`` and ``loupe-bench check`` (the regression gate)."""
from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("report")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--html/--no-html", "html", default=None, help="Write report.html (self-contained, plots embedded).")
@click.option("--markdown/--no-markdown", "markdown", default=None, help="Write report.md.")
@click.option("--csv/--no-csv", "csv", default=None, help="Write results.csv (tidy, one row per metric and seed).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the files (default: RESULTS_DIR/report, or ../report inside a reproduction).")
@click.option("--runs", "runs", multiple=True, type=click.Path(path_type=Path),
              help="Run directories (training curves, LOUPE explanations); discovered when omitted.")
@click.option("--world", "world", type=click.Path(path_type=Path), default=None,
              help="Synthetic world folder (for LOUPE's explanations); discovered when omitted.")
def report_cmd(results_dir, html, markdown, csv, out_dir, runs, world):
    """Render RESULTS_DIR as a console table and, as asked, CSV, Markdown and HTML.

    With none of --html/--markdown/--csv given, all three are written. Every result JSON under RESULTS_DIR is read;
    other JSON files (manifests, references, exports) are skipped, a result-shaped file with another schema is
    refused.
    """
    from ..report.render import report

    chosen = [html, markdown, csv]
    if all(c is None for c in chosen):
        html = markdown = csv = True
    run_map = {Path(r).name: Path(r) for r in runs} if runs else None
    paths = report(results_dir, html=bool(html), markdown=bool(markdown), csv=bool(csv), out_dir=out_dir,
                   runs=run_map, world_dir=world)
    for label, p in (("csv", paths.csv), ("markdown", paths.markdown), ("html", paths.html)):
        if p is not None:
            click.echo(f"{label}: {p}")


@click.command("compare")
@click.option("--paper", "results_dir", required=True, type=click.Path(path_type=Path),
              help="Results folder to set beside the published numbers.")
@click.option("--tables", "tables", type=click.Path(path_type=Path), default=None,
              help="Folder of paper tables (default: the shipped results/paper).")
@click.option("--all", "include_unmatched", is_flag=True, help="Also list published numbers nothing reproduces.")
@click.option("--markdown", "markdown", type=click.Path(path_type=Path), default=None,
              help="Also write the comparison as Markdown to this file.")
def compare_cmd(results_dir, tables, include_unmatched, markdown):
    """Reproduced vs published numbers side by side, with deltas (percentage points) and provenance."""
    from rich.console import Console

    from ..report.paper import compare_paper, comparison_markdown, comparison_table
    from ..utils.io import atomic_write_text

    rows = compare_paper(results_dir, paper_dir=tables, include_unmatched=include_unmatched)
    console = Console()
    if not rows:
        console.print("no result matches a published (task, dataset, split, metric); use --all to list the tables")
    else:
        console.print(comparison_table(rows))
    if markdown is not None:
        atomic_write_text(markdown, comparison_markdown(rows))
        click.echo(f"markdown: {markdown}")


@click.command("check")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--reference", "reference", required=True,
              help="A committed reference by name (`loupe-bench list references`, e.g. synthetic-quick; shipped "
                   "with the package) or the path of a reference JSON.")
@click.option("--update", is_flag=True,
              help="Deliberately rewrite the reference from RESULTS_DIR (atomically) instead of checking.")
@click.option("--seeds-from", "extra", multiple=True, type=click.Path(path_type=Path),
              help="With --update: further result folders (other seeds) whose spread sets the tolerances.")
@click.option("--all", "show_all", is_flag=True,
              help="List every gated row (default: the per-task counts and the rows that did not pass).")
def check_cmd(results_dir, reference, update, extra, show_all):
    """Regression gate: exit 1 when any metric regressed beyond its tolerance band or is missing."""
    from rich.console import Console

    from ..report.gate import check, print_gate, update_reference
    from ..specs import reference_path

    console = Console()
    name = str(reference)
    reference = reference_path(reference)
    if update:
        ref = update_reference([results_dir, *extra], reference, created_from=str(results_dir))
        console.print(f"reference {reference} rewritten: {len(ref['rows'])} rows, seeds {ref['seeds']}")
        return 0
    rep = check(results_dir, reference)
    print_gate(console, rep, name=name, show_all=show_all)
    if rep.extra_rows:
        console.print(f"{len(rep.extra_rows)} result rows are not in the reference (not gated)")
    if rep.failed:
        console.print("[bold red]regression gate FAILED[/bold red]")
        sys.exit(1)
    console.print("[green]regression gate passed[/green]")
    return 0
