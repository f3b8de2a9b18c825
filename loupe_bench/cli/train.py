"""``loupe-bench train``: one recipe, one loop, for CLIP, FILIP and LOUPE (also under ``torchrun``)."""
from __future__ import annotations

from typing import Optional, Tuple

import click

from ..train.recipe import MAX_SEED, MAX_STEPS  # the recipe's bounds (no torch import)


def _parse_overrides(items: Tuple[str, ...]) -> dict:
    from ..specs import parse_assignments

    return parse_assignments(items, "--set", "optim.lr=1e-3")


@click.command("train")
@click.option("--model", "model", required=True, help="Model spec: a name from `loupe-bench list models` or a YAML file.")
@click.option("--data", "data", required=True, help="Synthetic world folder or a data set path (Karpathy JSON, CSV, "
              "webdataset shards, HF folder).")
@click.option("--recipe", "recipe", default="tiny-cpu", show_default=True,
              help="Recipe name (`loupe-bench list recipes`) or a YAML file.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory, e.g. runs/NAME.")
@click.option("--resume", "resume", default=None, help="`latest` (newest checkpoint of --out) or a checkpoint folder.")
@click.option("--seed", "seed", default=None, type=click.IntRange(0, MAX_SEED),
              help=f"Override the recipe's seed (0 to {MAX_SEED}).")
@click.option("--steps", "steps", default=None, type=click.IntRange(1, MAX_STEPS),
              help=f"Override the recipe's steps (1 to {MAX_STEPS}).")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="Override any recipe field (dotted, YAML value), e.g. --set optim.lr=1e-3. Repeatable.")
@click.option("--allow-remote-shards", is_flag=True, default=False,
              help="Let webdataset open shard names that are URLs or pipe: commands (off: refused; local shards are "
              "always read by path, never through a shell).")
@click.option("--allow-changed", "allow_changed", multiple=True, metavar="KEY",
              help="On --resume, accept a change of this recipe field or section (e.g. optim.lr, optim, seed) or of "
              "the data (`data`) against what the run recorded. Repeatable. More steps, logging and checkpoint "
              "settings may always change.")
@click.option("--on-bad-sample", "on_bad_sample", type=click.Choice(["error", "skip"]), default="error",
              show_default=True, help="Every training image is checked once before step 1: stop at the first bad one "
              "(error) or leave bad ones out and count them (skip).")
def train_cmd(model: str, data: str, recipe: str, out: str, resume: Optional[str], seed: Optional[int],
              steps: Optional[int], sets: Tuple[str, ...], allow_remote_shards: bool,
              allow_changed: Tuple[str, ...], on_bad_sample: str) -> None:
    """Train MODEL on DATA with RECIPE into OUT (a model directory when done).

    Under `torchrun --nproc_per_node N -m loupe_bench.train ...` every rank runs this command; DDP uses NCCL on GPU
    and gloo on CPU, and only rank 0 writes logs and checkpoints.
    """
    import os

    from .. import train_model

    overrides = _parse_overrides(sets)
    if steps is not None:
        overrides["steps"] = steps
    run = train_model(model, data, recipe, out, resume=resume, seed=seed, overrides=overrides,
                      allow_remote_shards=allow_remote_shards, allow_changed=allow_changed,
                      on_bad_sample=on_bad_sample)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"trained {model} -> {run}")
