"""``loupe-bench eval --model SPEC|RUN_DIR|HF_CLIP_DIR|open_clip:ARCH:FILE|open_clip:ARCH:TAG|hf-hub:ORG/NAME
[--name LABEL] --task TASK [--data-root DIR] [--out DIR] [--seed N]``."""
from __future__ import annotations

from typing import Tuple

import click


@click.command("eval")
@click.option("--model", "models", multiple=True, required=True,
              help="Model spec name, spec YAML, model or training-run directory, Hugging Face CLIPModel directory, "
                   "open_clip:ARCH:FILE (a local open_clip checkpoint), open_clip:ARCH:TAG (a pretrained tag: "
                   "`loupe-bench list pretrained`) or hf-hub:ORG/NAME (a Hugging Face CLIPModel repository); "
                   "repeatable.")
@click.option("--name", "names", multiple=True,
              help="Display name recorded as the result's model name instead of the file or repository name (one "
                   "per --model, in order; one line, at most 120 printable characters).")
@click.option("--task", "tasks", multiple=True, required=True,
              help="Task name (see `loupe-bench list tasks`) or task YAML (repeatable).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder the task's data paths are relative to (e.g. the synthetic world).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results/eval", show_default=True,
              help="Where result JSON files go (one per model × task × split).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True,
              help="cpu, cuda, cuda:N, or auto (cuda when available); cuda without a GPU is an error.")
def eval_cmd(models: Tuple[str, ...], names: Tuple[str, ...], tasks: Tuple[str, ...], data_root, out_dir: str,
             seed: int, device: str) -> None:
    """Evaluate models on task protocols; one result JSON per (model, task, split)."""
    from rich.console import Console
    from rich.table import Table

    from ..report.escape import console as text
    from ..tasks.evaluate import evaluate

    if names and len(names) != len(models):
        raise click.UsageError(f"{len(names)} --name for {len(models)} --model: give one --name per --model")
    results = evaluate(list(models), list(tasks), data_root=data_root, out_dir=out_dir, seed=seed, device=device,
                       names=list(names) or None)
    table = Table(title=f"results ({len(results)} files in {text(out_dir)})")
    for col in ("model", "task", "split", "metric", "value", "95% CI"):
        table.add_column(col)
    for r in results:
        for name, m in r["metrics"].items():
            pct = m["units"] == "fraction"
            fmt = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
            ci = "" if m["ci95"] is None else f"[{fmt(m['ci95'][0])}, {fmt(m['ci95'][1])}]"
            table.add_row(*map(text, (r["model"]["name"], r["task"]["name"], r["task"]["split"], name)),
                          fmt(m["value"]) + ("%" if pct else ""), ci)
        for name, reason in r["unavailable"].items():
            table.add_row(*map(text, (r["model"]["name"], r["task"]["name"], r["task"]["split"], name)), "n/a",
                          text(reason))
    Console().print(table)
