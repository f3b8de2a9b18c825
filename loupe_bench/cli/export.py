"""``loupe-bench export --format FORMAT RESULTS_DIR --out DIR``: results in the layout another tool reads."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True, help="Export format (registry `EXPORT_FORMATS`: clip_benchmark).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder the exported files are written to.")
@click.option("--split", "split", default=None,
              help="Export only the results on this split (e.g. test or comptest; default: every split — a split "
                   "other than test is a dataset-name suffix, `{dataset}_{split}`).")
def export_cmd(results_dir: Path, fmt: str, out_dir: Path, split) -> None:
    """Write the result JSONs of RESULTS_DIR in another tool's layout (clip_benchmark: CLIP_benchmark 1.6.2's
    per-run JSONs and the CSV its `build` command makes)."""
    from ..report.export import export_results

    paths = export_results(results_dir, fmt, out_dir, split=split)
    n_json = sum(1 for p in paths if p.suffix == ".json")
    click.echo(f"wrote {n_json} {fmt} result file(s), {len(paths) - n_json} other file(s) to {out_dir}")
