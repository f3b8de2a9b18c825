"""loupe-bench: the LOUPE model and a benchmark running it beside CLIP and FILIP under identical protocols.

The Python API (usable from a notebook) is what the CLI calls:

* :func:`load_model` — a model from a spec name / file, our model or run directory, a Hugging Face ``CLIPModel``
  directory or an open_clip checkpoint (``open_clip:ARCH:FILE``); :func:`load_model_and_transforms` also returns the
  image transform and the tokenizer.
* :func:`train` — train a model with a recipe.
* :func:`evaluate` — run task protocols on models, returning result records.
* :func:`report` — render results (console, CSV, Markdown, HTML).

Heavy libraries (torch, transformers, timm) are imported lazily, on the first call.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._version import __version__

# The subpackages ``train`` and ``report`` share their names with the API functions below. Python binds a subpackage
# as an attribute of ``loupe_bench`` when it is first imported, which would replace the function; importing both here
# (they are light: no torch) makes that first import happen before the functions are defined, so the functions stay.
from . import report as _report_package, train as _train_package  # noqa: E402,F401

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import torch

    from .report.render import ReportPaths

__all__ = ["__version__", "load_model", "load_model_and_transforms", "train", "evaluate", "report"]


def load_model(name_or_path: Union[str, Path], seed: Optional[int] = None) -> "torch.nn.Module":
    """Build or load a model.

    Args:
        name_or_path: a shipped spec name (``loupe-bench list models``) or spec file (``.yaml`` / ``.json``): a
            freshly initialised model; our model directory or training-run directory: rebuilt with its weights; a
            Hugging Face ``CLIPModel`` directory (``config.json`` with ``model_type: clip`` + ``model.safetensors`` /
            ``pytorch_model.bin``); ``open_clip:<ARCH>:<checkpoint .pt / .safetensors>``: a local open_clip
            checkpoint, converted.
        seed: seeds the initialisation of spec models (ignored for checkpoints).

    Returns:
        The model; ``model.preprocess`` is its eval image transform, ``model.tokenizer`` its tokenizer.
    """
    from .models.sources import load_model as _load_model

    return _load_model(name_or_path, seed=seed)


def load_model_and_transforms(name_or_path: Union[str, Path], seed: Optional[int] = None
                              ) -> Tuple["torch.nn.Module", Any, Any]:
    """``(model, preprocess, tokenizer)`` for any reference :func:`load_model` accepts (open_clip's
    ``create_model_and_transforms`` + ``get_tokenizer`` in one call).

    ``preprocess(pil_image)`` gives the normalised ``[3, S, S]`` tensor for ``model.encode_image``;
    ``tokenizer(texts)`` gives ``TokenBatch(input_ids, attention_mask, offsets)`` for ``model.encode_text``.
    """
    from .models.sources import load_model_and_transforms as _load

    return _load(name_or_path, seed=seed)


#: :func:`loupe_bench.train.train` — one lazy wrapper of the training engine (its docstring lists the arguments)
train = _train_package.train


def evaluate(
    models: Union[str, Path, "torch.nn.Module", Sequence[Union[str, Path, "torch.nn.Module"]]],
    tasks: Union[str, Path, Mapping[str, Any], Sequence[Union[str, Path, Mapping[str, Any]]]],
    data_root: Union[str, Path, None] = None,
    out_dir: Union[str, Path, None] = "results/eval",
    seed: int = 0,
    device: str = "auto",
    skip_unsupported: bool = True,
    names: Optional[Sequence[Optional[str]]] = None,
    batch_size: Optional[int] = None,
    num_workers: int = 0,
    precision: str = "fp32",
) -> List[Dict[str, Any]]:
    """Evaluate every model on every task; write ``<model>__<task>__<split>.json`` into ``out_dir``.

    Args:
        models: any reference :func:`load_model` accepts (spec names / files, model or run directories, Hugging
            Face CLIP directories, ``open_clip:ARCH:FILE``, ``open_clip:ARCH:TAG``, ``hf-hub:ORG/NAME``) or model
            objects.
        tasks: shipped task names, task YAML paths, spec mappings or ``TaskSpec`` objects.
        data_root: folder the task's data paths are relative to (the synthetic world, or e.g. a COCO root).
        out_dir: where result JSON goes (``None``: do not write).
        seed: seeds model initialisation (spec names), the caption head and torch before each split.
        device: ``auto`` (default: CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        skip_unsupported: record a model that cannot run a protocol (``native`` proposals without a region head) as
            skipped instead of aborting the run.
        names: display names, one per model (``None`` keeps the model's own), recorded as the results'
            ``model.name`` (one line, at most 120 printable characters).
        batch_size: images per encoder batch, 1..65536 (``None``: each task spec's ``batch_size``); does not change
            the protocol fingerprint.
        num_workers: threads loading images ahead of the encoder, 0..64; does not change the fingerprint.
        precision: ``fp32`` (default), ``amp`` or ``bf16`` autocast for the encoders; part of the fingerprint when
            not fp32. All three are recorded in each result's ``encoding``.

    Returns:
        The result dicts (also written when ``out_dir`` is given).
    """
    from .tasks.evaluate import evaluate as _evaluate

    return _evaluate(models, tasks, data_root=data_root, out_dir=out_dir, seed=seed, device=device,
                     skip_unsupported=skip_unsupported, names=names, batch_size=batch_size,
                     num_workers=num_workers, precision=precision)


def report(
    results_dir: Union[str, Path],
    html: bool = True,
    markdown: bool = True,
    csv: bool = True,
    *,
    out_dir: Union[str, Path, None] = None,
    runs: Optional[Dict[str, Path]] = None,
    world_dir: Union[str, Path, None] = None,
    explain_images: int = 3,
    console: Any = None,
    title: Optional[str] = None,
    quiet: bool = False,
) -> "ReportPaths":
    """Render the results under ``results_dir`` (console table, ``report.html``, ``report.md``, ``results.csv``).

    Args:
        results_dir: folder of result JSONs.
        html, markdown, csv: which files to write.
        out_dir: where to write them (default: ``results_dir/../report`` inside a reproduction, else
            ``results_dir/report``).
        runs: run name → run directory (training curves, LOUPE explanations); discovered when None.
        world_dir: the synthetic world (explanations); discovered when None.
        explain_images: number of sample images for LOUPE's explanations.
        console: a rich Console to print the table to (default: a new one unless ``quiet``).
        title: the report's title.
        quiet: print nothing.

    Returns:
        ``ReportPaths`` with the written files and the table.
    """
    from .report.render import report as _report

    return _report(results_dir, html, markdown, csv, out_dir=out_dir, runs=runs, world_dir=world_dir,
                   explain_images=explain_images, console=console, title=title, quiet=quiet)
