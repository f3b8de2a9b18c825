"""``loupe-bench eval --model SPEC|RUN_DIR|HF_CLIP_DIR|open_clip:ARCH:FILE|open_clip:ARCH:TAG|hf-hub:ORG/NAME
[--name LABEL] --task TASK [--data-root DIR] [--out DIR] [--seed N] [--device auto|cpu|cuda[:N]] [--batch-size N]
[--num-workers N] [--precision fp32|amp|bf16]``."""
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
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N; cuda without a GPU is an error. "
                   "Recorded in each result.")
@click.option("--batch-size", type=click.IntRange(1, 65536), default=None,
              help="Images per encoder batch (texts: 4x as many); default: each task's batch_size. Recorded in each "
                   "result; does not change the protocol fingerprint.")
@click.option("--num-workers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Threads loading and preprocessing images ahead of the encoder. Recorded; does not change the "
                   "fingerprint.")
@click.option("--precision", type=click.Choice(["fp32", "amp", "bf16"]), default="fp32", show_default=True,
              help="Encoder precision: amp = float16 autocast on CUDA (bfloat16 on the CPU), bf16 = bfloat16 "
                   "autocast. Recorded, and part of the protocol fingerprint when not fp32.")
def eval_cmd(models: Tuple[str, ...], names: Tuple[str, ...], tasks: Tuple[str, ...], data_root, out_dir: str,
             seed: int, device: str, batch_size, num_workers: int, precision: str) -> None:
    """Evaluate models on task protocols; one result JSON per (model, task, split)."""
    from .. import evaluate
    from ..report.escape import new_console
    from ..report.table import eval_summary

    if names and len(names) != len(models):
        raise click.UsageError(f"{len(names)} --name for {len(models)} --model: give one --name per --model")
    results = evaluate(list(models), list(tasks), data_root=data_root, out_dir=out_dir, seed=seed, device=device,
                       names=list(names) or None, batch_size=batch_size, num_workers=num_workers,
                       precision=precision)
    console = new_console()
    for part in eval_summary(results, f"results ({len(results)} files in {out_dir})", width=console.width):
        console.print(part)
