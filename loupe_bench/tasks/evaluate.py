"""``evaluate(models, tasks, data_root, out_dir)``: run task protocols on models and write one result JSON per
(model, task, split)."""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import SpecError
from ..utils.io import sha256_file
from ..utils.provenance import code_version, package_versions
from . import load_adapters, load_task
from .results import SCHEMA, compute_identity, compute_model_id, utc_timestamp, write_result
from .common import EncodeOptions, autocast_dtype, check_encode_options, current_encode_options, encode_options, \
    feature_cache
from .spec import TaskSpec

ModelLike = Union[str, Path, torch.nn.Module]
TaskLike = Union[str, Path, TaskSpec, Dict[str, Any]]


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's tensors (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def resolve_model(model: ModelLike, seed: int = 0) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """A model object and its record (name, spec, checkpoint_sha256, source, id, identity; for a training run also
    ``finished`` and ``checkpoint_step``). ``identity`` follows :func:`~loupe_bench.tasks.results.model_identity`:
    the spec's digest for a freshly initialised spec model, spec + step + recipe for a training run, the weights'
    digest otherwise.

    A spec name or spec file builds a freshly initialised model seeded with ``seed``; a checkpoint (our model or run
    directory, a Hugging Face CLIP directory, ``open_clip:ARCH:FILE``; see :mod:`loupe_bench.models.sources`) is
    loaded with its weights (checkpoint hash = sha256 of the weights file used). An unfinished run is evaluated at
    its latest checkpoint, recorded as ``finished: false`` with that checkpoint's step, and warned about on stderr.
    """
    from ..models.sources import load_source

    if isinstance(model, torch.nn.Module):
        spec = dict(getattr(model, "spec", {}) or {})
        name = str(spec.get("name", type(model).__name__))
        sha = state_dict_sha256(model)
        return model, {"name": name, "spec": spec, "checkpoint_sha256": sha, "source": "object",
                       "id": compute_model_id("object", sha), "identity": compute_identity("weights", sha=sha)}
    loaded = load_source(model, seed=seed)
    m = loaded.model
    sha = sha256_file(loaded.weights) if loaded.weights is not None and loaded.weights.is_file() \
        else state_dict_sha256(m)
    spec = loaded.spec if loaded.spec is not None else dict(getattr(m, "spec", {}) or {})
    folder = loaded.directory
    record = {"name": loaded.name, "spec": spec, "checkpoint_sha256": sha, "source": loaded.source,
              "id": compute_model_id(loaded.source if folder is None else str(folder.resolve()), sha,
                                     is_dir=folder is not None)}
    state = loaded.run
    record["identity"] = compute_identity("spec", spec=spec) if loaded.spec is not None else \
        compute_identity("weights", sha=sha)
    if state is not None and state["is_run"]:
        record.update(finished=bool(state["finished"]), checkpoint_step=state["checkpoint_step"])
        record["identity"] = compute_identity("trained", spec=spec, step=state["checkpoint_step"],
                                              recipe=_run_recipe(folder))
        if not state["finished"]:
            total = state["total_steps"]
            of = f" of {total}" if total else ""
            sys.stderr.write(f"warning: {folder}: training has not finished; evaluating its latest checkpoint "
                             f"(step {state['checkpoint_step']}{of})\n")
    return m, record


def _run_recipe(folder: Optional[Path]) -> Optional[Dict[str, Any]]:
    """The recipe a training run's ``run.json`` records (``None``: not a run of ours)."""
    from ..utils.run_files import run_record

    record = run_record(folder) if folder is not None else None
    return None if record is None else record["recipe"]


def _task(task: TaskLike) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else load_task(task)


def protocol_fingerprint(spec: TaskSpec, data_root: Optional[Path], device="cpu",
                         options: Optional[EncodeOptions] = None) -> str:
    """The result's ``task.fingerprint``: :meth:`TaskSpec.fingerprint`, and for a reduced precision (which changes
    numbers) that digest combined with the autocast dtype. Batch size and loader threads are left out: they do not
    change numbers. fp32 results keep the spec's own fingerprint."""
    base = spec.fingerprint(data_root)
    dtype = autocast_dtype((options or current_encode_options()).precision, device)
    if dtype is None:
        return base
    return hashlib.sha256(f"{base}|autocast:{str(dtype).replace('torch.', '')}".encode()).hexdigest()[:16]


def encoding_record(spec: TaskSpec, device="cpu", options: Optional[EncodeOptions] = None) -> Dict[str, Any]:
    """The result's ``encoding`` block: the batch size the encoders used, loader threads, precision and the
    autocast dtype (``None`` for fp32)."""
    opts = options or current_encode_options()
    dtype = autocast_dtype(opts.precision, device)
    return {"batch_size": opts.image_batch(spec), "num_workers": opts.num_workers, "precision": opts.precision,
            "autocast": None if dtype is None else str(dtype).replace("torch.", "")}


def run_task(model, model_record: Dict[str, Any], spec: TaskSpec, data_root: Optional[Path], seed: int = 0,
             device: str = "cpu", splits: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Run one task on one model for each split under the current :func:`~loupe_bench.tasks.common.encode_options`;
    returns result dicts (not written)."""
    adapter = load_adapters().get(spec.type)(spec)
    fingerprint = protocol_fingerprint(spec, data_root, device)
    results = []
    for split in splits or spec.splits:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        out = adapter.run(model, data_root, split, seed=seed, device=device)
        total = time.perf_counter() - t0
        unavailable = dict(out.unavailable)
        for name in spec.metrics:
            if name not in out.metrics and name not in unavailable:
                unavailable[name] = "not produced by this protocol for this model/split"
        results.append({
            "schema": SCHEMA,
            "model": model_record,
            "task": {"name": spec.name, "type": spec.type, "dataset": spec.dataset.name, "split": split,
                     "spec": spec.normalised(), "fingerprint": fingerprint},
            "metrics": {k: v.to_dict() for k, v in out.metrics.items()},
            "unavailable": unavailable,
            "extra": out.extra,
            "reference_rows": {row: {k: v.to_dict() for k, v in ms.items()} for row, ms in out.reference_rows.items()},
            "per_item": out.per_item,
            "seed": int(seed),
            "code_version": code_version(),
            "packages": package_versions(),
            "device": str(device),
            "encoding": encoding_record(spec, device),
            "timings": {"total_s": round(total, 4)},
            "timestamp": utc_timestamp(),
        })
    return results


def evaluate(
    models: Union[ModelLike, Sequence[ModelLike]],
    tasks: Union[TaskLike, Sequence[TaskLike]],
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
    """Evaluate every model on every task; write ``<model>__<task>__<split>.json`` into ``out_dir`` (suffixed with
    ``__<id8>`` when another model's result holds that name: see :func:`~loupe_bench.tasks.results.result_path`).
    ``loupe-bench eval`` calls this function.

    Args:
        models: any reference :func:`~loupe_bench.models.sources.load_model` accepts (spec names / files, model or
            run directories, Hugging Face CLIP directories, ``open_clip:ARCH:FILE``, ``open_clip:ARCH:TAG``,
            ``hf-hub:ORG/NAME``) or ``VLModel`` objects.
        tasks: shipped task names, task YAML paths, spec mappings or :class:`TaskSpec` objects.
        data_root: folder the task's data paths are relative to (the synthetic world, or e.g. a COCO root).
        out_dir: where result JSON goes (``None``: do not write).
        seed: seeds model initialisation (spec names), the caption head and torch before each split.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; CUDA without a GPU is a
            :class:`~loupe_bench.errors.SpecError`.
        skip_unsupported: a model that cannot run a protocol (``native`` proposals without a region head) is
            recorded with ``extra.skipped`` and every metric unavailable, instead of aborting the whole run.
        names: display names, one per model (``None`` entries keep the model's own), recorded as ``model.name``
            and used in the result file names (:func:`check_model_name`).
        batch_size: images per encoder batch (texts: four times as many), 1..65536; ``None`` keeps each task spec's
            ``batch_size``. Recorded in the result's ``encoding``; not part of the protocol fingerprint.
        num_workers: threads loading and preprocessing images ahead of the encoder, 0..64 (0: none). Recorded;
            not part of the fingerprint.
        precision: ``fp32`` (default), ``amp`` (autocast float16 on CUDA, bfloat16 on the CPU) or ``bf16``
            (bfloat16 autocast) for the encoders. Recorded, and part of the fingerprint when not fp32.

    Returns:
        The result dicts (also written when ``out_dir`` is given).
    """
    from ..utils.device import resolve_device

    options = check_encode_options(batch_size, num_workers, precision)
    device = resolve_device(device)
    autocast_dtype(options.precision, device)  # an unsupported precision is one line before any work
    if out_dir is not None:
        from ..utils.io import clean_stale_temps

        clean_stale_temps(out_dir)  # temp files of a killed earlier eval
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    tasks = list(tasks) if isinstance(tasks, (list, tuple)) else [tasks]
    specs = [_task(t) for t in tasks]
    root = Path(data_root) if data_root is not None else None
    for spec in specs:  # a missing data file is reported (with the layout it expects) before any model is built
        spec.require_data(root)
    results: List[Dict[str, Any]] = []
    labels = list(names) if names is not None else [None] * len(models)
    if len(labels) != len(models):
        raise SpecError(f"{len(labels)} model names for {len(models)} models: give one name per model")
    labels = [None if n is None else check_model_name(n) for n in labels]  # all checked before any model loads
    for m, label in zip(models, labels):
        model, record = resolve_model(m, seed)
        if label is not None:
            record["name"] = label
        model.to(device)
        # tasks that share images (test split: detection, grounding) encode them once
        with feature_cache(), encode_options(options):
            for spec in specs:
                try:
                    res = run_task(model, record, spec, root, seed, device)
                except SpecError as exc:
                    if not skip_unsupported or "region head" not in str(exc):
                        raise
                    res = _skipped(record, spec, root, seed, device, str(exc))
                for r in res:
                    if out_dir is not None:
                        r["_path"] = str(write_result(out_dir, r))
                    results.append(r)
    return results


#: the longest display name a result accepts (``--name``)
MAX_MODEL_NAME = 120


def check_model_name(name: Any) -> str:
    """A display name for ``model.name``: one line of 1 to :data:`MAX_MODEL_NAME` printable characters (no control,
    format or line-separator characters), not blank; else one :class:`SpecError` line."""
    text = str(name)
    bad = next((i for i, ch in enumerate(text) if not ch.isprintable()), None)
    if not text.strip() or len(text) > MAX_MODEL_NAME or bad is not None or text != text.strip():
        why = f"a non-printable character at position {bad}" if bad is not None else \
            f"{len(text)} characters" if len(text) > MAX_MODEL_NAME else "blank or padded with spaces"
        raise SpecError(f"model name {text[:MAX_MODEL_NAME]!r}: {why}; a name is one line of 1 to {MAX_MODEL_NAME} "
                        "printable characters")
    return text


def _skipped(record, spec: TaskSpec, root, seed, device, reason: str) -> List[Dict[str, Any]]:
    return [{
        "schema": SCHEMA, "model": record,
        "task": {"name": spec.name, "type": spec.type, "dataset": spec.dataset.name, "split": split,
                 "spec": spec.normalised(), "fingerprint": protocol_fingerprint(spec, root, device)},
        "metrics": {}, "unavailable": {m: reason for m in spec.metrics}, "extra": {"skipped": reason},
        "per_item": {}, "seed": int(seed), "code_version": code_version(), "packages": package_versions(),
        "device": str(device), "encoding": encoding_record(spec, device), "timings": {"total_s": 0.0},
        "timestamp": utc_timestamp(),
    } for split in spec.splits]
