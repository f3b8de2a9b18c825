"""``loupe-bench data synth|check|phrases``. Heavy libraries are imported inside the commands."""
from __future__ import annotations

import sys

import click

CHECK_CHOICES = ["auto", "synthetic", "karpathy", "coco", "refer", "voc", "flickr30k-entities", "webdataset", "csv", "hf",
                 "imagefolder"]


@click.group("data")
def data() -> None:
    """Generate the synthetic world, validate data sets, extract phrases."""


@data.command("synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed: identical files).")
@click.option("--size", default="small", show_default=True, type=click.Choice(["tiny", "small", "medium"]))
@click.option("--image-size", default=64, show_default=True, type=click.IntRange(min=32),
              help="Image side in pixels (32 to 1024).")
def synth_cmd(out: str, seed: int, size: str, image_size: int) -> None:
    """Write the synthetic fine-grained world (images, captions, phrases, boxes, refs, shards) to OUT."""
    import time

    from ..data.synth import generate_world

    t0 = time.perf_counter()
    path = generate_world(out, seed=seed, size=size, image_size=image_size, progress=sys.stderr.isatty())
    from ..data import load_world

    world = load_world(path)
    counts = ", ".join(f"{k} {v}" for k, v in world.splits.items())
    click.echo(
        f"wrote synthetic world to {path} ({counts}; {world.meta['num_captions']} captions, "
        f"{world.meta['num_refs']} referring expressions) in {time.perf_counter() - t0:.1f} s"
    )


@data.command("check")
@click.argument("path", required=False)
@click.option("--format", "fmt", default="auto", show_default=True, type=click.Choice(CHECK_CHOICES))
@click.option("--image-root", default=None, type=click.Path(file_okay=False),
              help="Image folder, for formats that keep images apart (karpathy, coco, refer, csv, flickr30k-entities).")
@click.option("--task", "task", default=None,
              help="Check the data set this task spec describes (name or YAML), read with the spec's loader options "
                   "(its image folder); needs --data-root, replaces PATH.")
@click.option("--data-root", "data_root", default=None, type=click.Path(file_okay=False),
              help="With --task: the folder the task's paths are relative to (as for `eval --data-root`).")
def check_cmd(path: str, fmt: str, image_root: str, task: str, data_root: str) -> None:
    """Validate a data set and list every problem (file, record, what is wrong).

    `data check PATH` checks one file or folder; `data check --task TASK --data-root DIR` checks what the task
    reads. Exit code 0 when clean, 1 when problems were found, 2 when the input is unusable.
    """
    from rich.console import Console
    from rich.table import Table

    from ..data.check import check_dataset
    from ..errors import SpecError
    from ..tasks.check import check_task_data

    if task is not None:
        if path is not None or image_root is not None or fmt != "auto":
            raise SpecError("--task takes the path, format and image folder from the task spec; drop PATH, --format "
                            "and --image-root")
        if data_root is None:
            from ..tasks import load_task

            spec = load_task(task)
            raise SpecError(f"--task {task} needs --data-root DIR, laid out as DIR/ {spec.layout_text()}")
        errors = check_task_data(task, data_root)
        path = f"{task} under {data_root}"
    elif path is None:
        raise SpecError("give a PATH to check, or --task TASK --data-root DIR")
    elif data_root is not None:
        raise SpecError("--data-root goes with --task; for a PATH use --image-root")
    else:
        errors = check_dataset(path, fmt=fmt, **({"image_root": image_root} if image_root else {}))
    console = Console(soft_wrap=True)
    if not errors:
        console.print(f"{path}: no problems found")
        return
    if not console.is_terminal:  # plain lines for logs and pipes: <file>: record <id>: <what is wrong>
        click.echo(f"{len(errors)} problem(s) in {path}:")
        for e in errors:
            click.echo(f"  {e}")
        sys.exit(1)
    table = Table(title=f"{len(errors)} problem(s) in {path}", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("file", overflow="fold")
    table.add_column("record", overflow="fold")
    table.add_column("problem", overflow="fold")
    for k, e in enumerate(errors, start=1):
        table.add_row(str(k), e.file or "", e.record or "", e.message)
    console.print(table)
    sys.exit(1)


@data.command("phrases")
@click.argument("karpathy_json", type=click.Path(dir_okay=False))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Sidecar path (default: phrases.json beside the JSON).")
@click.option("--model", default="en_core_web_sm", show_default=True, help="spaCy English pipeline.")
def phrases_cmd(karpathy_json: str, out: str, model: str) -> None:
    """Extract noun-phrase spans of real captions into a phrases.json sidecar (spaCy noun chunks)."""
    from ..data.phrases import extract_phrases

    path = extract_phrases(karpathy_json, out=out, model=model)
    click.echo(f"wrote {path}")
