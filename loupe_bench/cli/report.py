"""``loupe-bench report``, ``loupe-bench compare --paper`` and ``loupe-bench check`` (the regression gate)."""
from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("report")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--html/--no-html", "html", default=None, help="Write report.html (self-contained, plots embedded).")
@click.option("--markdown/--no-markdown", "markdown", default=None, help="Write report.md.")
@click.option("--csv/--no-csv", "csv", default=None,
              help="Write results.csv (tidy, one row per metric and seed) and leaderboard.csv (wide, one row per model).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the files (default: RESULTS_DIR/report, or ../report inside a reproduction; an "
                   "existing report there is kept unless --force).")
@click.option("--force", is_flag=True, help="Overwrite an existing report in the default folder.")
@click.option("--runs", "runs", multiple=True, type=click.Path(path_type=Path),
              help="Run directories (training curves, LOUPE explanations); discovered when omitted.")
@click.option("--world", "world", type=click.Path(path_type=Path), default=None,
              help="Synthetic world folder (for LOUPE's explanations); discovered when omitted.")
def report_cmd(results_dir, html, markdown, csv, out_dir, runs, world, force):
    """Render RESULTS_DIR as a console table and, as asked, CSV, Markdown and HTML.

    With none of --html/--markdown/--csv given, all three are written. Every result JSON under RESULTS_DIR is read;
    other JSON files (manifests, references, exports) are skipped, a result-shaped file with another schema is
    refused.
    """
    from .. import render_report
    from ..errors import LoupeBenchError
    from ..report.render import REPORT_FILES, default_out_dir

    chosen = [html, markdown, csv]
    if all(c is None for c in chosen):
        html = markdown = csv = True
    if out_dir is None and not force:
        folder = default_out_dir(results_dir)
        wanted = [n for opt, on in (("html", html), ("markdown", markdown), ("csv", csv)) if on
                  for n in REPORT_FILES[opt]]
        existing = [folder / n for n in wanted if (folder / n).exists()]
        if existing:
            raise LoupeBenchError(f"{existing[0]} exists (an earlier report); pass --force to overwrite it, or --out "
                                  f"DIR to write elsewhere")
    run_map = {Path(r).name: Path(r) for r in runs} if runs else None
    paths = render_report(results_dir, html=bool(html), markdown=bool(markdown), csv=bool(csv), out_dir=out_dir,
                          runs=run_map, world_dir=world)
    for label, p in (("csv", paths.csv), ("leaderboard", paths.leaderboard), ("markdown", paths.markdown),
                     ("html", paths.html)):
        if p is not None:
            click.echo(f"{label}: {p}")


@click.command("compare")
@click.option("--paper", "results_dir", required=True, type=click.Path(path_type=Path),
              help="Results folder to set beside the published numbers.")
@click.option("--tables", "tables", type=click.Path(path_type=Path), default=None,
              help="Folder of paper tables (default: the shipped results/paper).")
@click.option("--all", "include_unmatched", is_flag=True,
              help="Also list the published numbers nothing reproduces (about 70), grouped per task · dataset · split "
                   "like the matches, each group a short table that fits 80 columns with its sources as numbered "
                   "notes below it (so a terminal or CI log reads it; --markdown writes the same rows as one wide "
                   "table).")
@click.option("--markdown", "markdown", type=click.Path(path_type=Path), default=None,
              help="Also write the comparison as Markdown to this file.")
def compare_cmd(results_dir, tables, include_unmatched, markdown):
    """Reproduced vs published numbers side by side, with deltas (percentage points) and provenance, one block per
    task · dataset · split. Results on synthetic data are never matched against published numbers."""
    from ..report.escape import new_console
    from ..report.metadata import SYNTHETIC_PREFIX
    from ..report.paper import compare_paper, comparison_console, comparison_markdown
    from ..report.results_io import load
    from ..utils.io import atomic_write_text

    loaded = load(results_dir)
    rows = compare_paper(loaded, paper_dir=tables, include_unmatched=include_unmatched)
    console = new_console()
    if not any(r.model is not None for r in rows):
        if loaded.rows and all(r.dataset.startswith(SYNTHETIC_PREFIX) for r in loaded.rows):
            click.echo(f"{results_dir} holds results on synthetic data only: they are never matched against "
                       "published numbers (no paper reports on the synthetic world); run `loupe-bench check "
                       f"{results_dir} --reference synthetic-default` (or synthetic-quick for a --quick run) to "
                       "gate them, or `loupe-bench reproduce paper --data-root DIR` for numbers comparable with the "
                       "papers")
        else:
            click.echo("no result matches a published (task, dataset, split, metric); `--all` lists the published "
                       "numbers")
    for part in comparison_console(rows):
        console.print(part)
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
    from ..report.escape import new_console
    from ..report.gate import check, print_gate, update_reference
    from ..specs import reference_path

    console = new_console()
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
