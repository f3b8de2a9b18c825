"""The one training loop of loupe-bench: CLIP, FILIP and LOUPE differ only in ``embed`` / ``loss_from_embeddings``.

``train_model(model, data, recipe, out)`` runs a recipe and returns the run directory, whose layout
(:mod:`loupe_bench.utils.run_files`) is ``config.json``, ``run.json``, ``recipe.yaml``, ``tokenizer/``, final
``model.safetensors`` (the run dir is a model directory), ``checkpoints/step_<n>/{model.safetensors, state.pt}``,
``checkpoints/latest``, ``log.jsonl``.

Per optimiser step: per-rank batch → :func:`~loupe_bench.train.step.forward_backward` (feature-caching accumulation
when ``accum_freq > 1``) → gradient averaging across ranks → unscale (fp16) → clip → optimiser step → schedule step.
A non-finite loss stops the run with a :class:`NonFiniteLossError` naming the step and the term, a non-finite
gradient norm (without fp16 loss scaling) with a :class:`NonFiniteGradError`, a non-finite parameter after a step
with a :class:`NonFiniteParamError`; checkpoints are written only from finite steps, so the last good one stays and
is named.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import CheckpointError, LoupeBenchError, SpecError
from ..models.base import LossOutput
from ..models.checkpoint import load_weights, rebuild_model, save_model, write_model_files, write_weights
from ..utils import run_files
from ..utils.run_files import CONFIG_FILE, RUN_FILE, RUN_SCHEMA, TENSORBOARD_DIR, WEIGHTS_FILE
from . import runinfo
from .data import BuiltData, TrainSource, make_loader
from .distributed import (DistInfo, all_gather_objects, apply_fsdp2, average_gradients, barrier, broadcast_module,
                          init_distributed)
from .optim import create_optimizer, create_scheduler
from .recipe import Recipe, load_recipe
from .resume import load_checkpoint, resolve_resume, rng_state, set_rng_state, write_checkpoint
from .step import batch_size_of, forward_backward


class NonFiniteLossError(LoupeBenchError):
    """The loss became NaN or infinite; the message names the step and the term."""


class NonFiniteGradError(NonFiniteLossError):
    """The global gradient norm became NaN or infinite (with a finite loss); the message names the step."""


class NonFiniteParamError(NonFiniteGradError):
    """An optimiser step left a NaN or infinite parameter; the message names the step and the parameter."""


def _last_good(run_dir: Path) -> str:
    last = run_files.list_checkpoints(run_dir)
    return f"last good checkpoint: {last[-1]}" if last else "no checkpoint was written yet"


def check_grad_norm(grad_norm: float, step: int, run_dir: Path, scaled: bool) -> None:
    """Stop on a non-finite global gradient norm, before the optimiser step (the weights stay those of the last
    finite step; checkpoints only ever hold finite steps).

    Rule: ``not isfinite(||g||_2)`` stops the run, except under fp16 dynamic loss scaling (``scaled``), where an
    overflowing step is the GradScaler's signal to skip that step and lower the scale.
    """
    if scaled or math.isfinite(grad_norm):
        return
    raise NonFiniteGradError(f"step {step}: gradient norm is {grad_norm} (the loss was finite) — training stopped; "
                             f"{_last_good(run_dir)}")


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly FSDP2-sharded) tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


def check_params_finite(model: torch.nn.Module, params: Sequence[torch.Tensor], step: int, run_dir: Path,
                        distributed: bool) -> None:
    """Stop when optimiser step ``step`` left a NaN or infinite parameter, before any checkpoint of it is written,
    so saved weights are never non-finite.

    This catches what the loss and gradient-norm checks cannot see: an update scaled by NaN while the measured norm
    was finite (``clip_grad_norm_`` with a NaN ``max_norm`` multiplies every gradient by NaN and returns the finite
    norm it measured). One reduction per step; under DDP/FSDP2 a collective, so all ranks stop together."""
    with torch.no_grad():
        flags = [torch.isfinite(_local(p)).all() for p in params]
        ok = (torch.stack(flags).all() if flags else torch.tensor(True)).float().reshape(1)
        if distributed:
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    if ok.item() == 1:
        return
    name = next((n for n, p in model.named_parameters() if not bool(torch.isfinite(_local(p)).all())),
                "(on another rank)")
    raise NonFiniteParamError(f"step {step}: parameter {name} is not finite after the optimiser step (loss and "
                              f"gradient norm were finite) — training stopped, nothing of this step saved; "
                              f"{_last_good(run_dir)}")


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# -- precision --------------------------------------------------------------------------------------------------------
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_factory(precision: str, device: torch.device):
    """``fp32``: no autocast; ``bf16`` / ``fp16``: ``torch.autocast`` on the device type."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = _DTYPES[precision]
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(precision: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """A GradScaler for fp16 (dynamic loss scaling); None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


# -- model ------------------------------------------------------------------------------------------------------------
def build_model(spec: Union[str, Mapping[str, Any]], source: TrainSource, seed: int):
    """Create a model from a spec; from-scratch tokenizers are trained on the source's training captions."""
    from ..models import create_model

    return create_model(spec, tokenizer_corpus=source.captions(), seed=seed)


def rebuild_from_run(spec: Mapping[str, Any], run_dir: Path):
    """The architecture of a run being resumed, from its saved spec, tokenizer and tower configs (no re-training of
    the tokenizer; :func:`~loupe_bench.models.checkpoint.rebuild_model`); the spec given now must name the same
    model."""
    saved = run_files.read_config(run_dir)
    if saved.get("name") != spec.get("name"):
        raise SpecError(f"{run_dir}: the run trains {saved.get('name')!r}, not {spec.get('name')!r}")
    return rebuild_model(run_dir, saved)


def enable_grad_checkpointing(model: torch.nn.Module) -> int:
    """Turn on activation checkpointing in the towers; returns how many modules took it.

    The model's own ``set_grad_checkpointing`` wins; otherwise every timm model (``set_grad_checkpointing``) and
    every transformers model (``activation_checkpointing_enable`` / ``gradient_checkpointing_enable``) inside it is
    switched on.
    """
    own = getattr(model, "set_grad_checkpointing", None)
    if callable(own):
        own(True)
        return 1
    n = 0
    for module in model.modules():
        if module is model:
            continue
        if callable(getattr(module, "activation_checkpointing_enable", None)):  # transformers >= 5 name
            module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            n += 1
        elif callable(getattr(module, "gradient_checkpointing_enable", None)):
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            n += 1
        elif callable(getattr(module, "set_grad_checkpointing", None)):
            module.set_grad_checkpointing(True)
            n += 1
    if n == 0:
        raise SpecError(f"recipe asks for grad_checkpointing but {type(model).__name__} has no tower that "
                        "supports it")
    return n


def _source_for(data: Any, recipe: Recipe, allow_remote_shards: bool = False,
                on_bad_sample: str = "error") -> TrainSource:
    if hasattr(data, "build") and hasattr(data, "captions"):
        return data
    from .sources import DatasetSource

    return DatasetSource(data, recipe, allow_remote_shards=allow_remote_shards, on_bad_sample=on_bad_sample)


# -- logging ----------------------------------------------------------------------------------------------------------
class RunLogger:
    """``log.jsonl`` rows (rank 0), optional TensorBoard, rich progress bar with ETA."""

    def __init__(self, run_dir: Path, recipe: Recipe, total: int, start: int, enabled: bool,
                 on_step: Optional[Callable[[int, int, float], None]] = None):
        self.enabled = enabled
        self.run_dir = run_dir
        self.tb = None
        self.progress = None
        self.total = total
        self.on_step = on_step if enabled else None
        if not enabled:
            return
        if recipe.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - optional dependency
                raise SpecError("recipe asks for log.tensorboard but the tensorboard package is not installed") from None
            self.tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
        if recipe.log.progress and sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), transient=False)
            self.task = self.progress.add_task("train", total=total, completed=start, info="")
            self.progress.start()

    def truncate_after(self, step: int) -> None:
        """Drop rows of steps after ``step`` (rows written after the checkpoint a run resumes from)."""
        if self.enabled:
            run_files.truncate_log(self.run_dir, step)

    def row(self, row: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        run_files.append_log_row(self.run_dir, row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, row["step"])

    def advance(self, step: int, loss: float) -> None:
        if self.on_step is not None:
            self.on_step(step, self.total, loss)
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=f"loss {loss:.4f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tb is not None:
            self.tb.close()


# -- the training state -----------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """What the optimiser steps change and a checkpoint saves.

    ``step`` optimiser steps are done; ``batch_in_epoch`` batches of epoch ``epoch`` are consumed (the exact place a
    resume continues from). ``loader_it`` / ``per_epoch`` are the open loader of the current epoch and its number of
    batches (None: open one before the next step); ``last_checkpoint`` is the step of the newest checkpoint written
    or resumed from (-1: none).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[torch.amp.GradScaler]
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    loader_it: Optional[Iterator[Dict[str, Any]]] = None
    per_epoch: Optional[int] = None
    last_checkpoint: int = -1

    def end_epoch(self) -> None:
        """Move to the start of the next epoch (a new loader is opened before the next step)."""
        self.epoch, self.batch_in_epoch, self.loader_it = self.epoch + 1, 0, None


@dataclass
class RunSetup:
    """The fixed settings the loop reads, resolved once before step 1 (nothing here changes during the run)."""

    recipe: Recipe
    info: DistInfo
    run_dir: Path
    fsdp: bool
    built: BuiltData
    per_rank: int  # per-rank batch size
    total: int  # optimiser steps of the whole run
    autocast: Callable[[], Any]
    embed_fn: Optional[Callable]  # the compiled ``model.embed`` (recipe.compile) or None
    params: List[torch.nn.Parameter]  # trainable parameters: gradient clipping (and DDP averaging)
    replicated: Optional[List[torch.nn.Parameter]]  # FSDP2: the parameters whose gradients the loop averages
    post_step: Optional[Callable[[], None]]  # e.g. the logit scale kept in [0, ln 100]


# -- the loop ---------------------------------------------------------------------------------------------------------
def _finite_guard(ts: TrainState, info: DistInfo, run_dir: Path):
    """The NaN/inf check run on every loss before backward (collective under DDP: all ranks stop together); the
    error names step ``ts.step + 1``, the step being computed."""

    def check(out: LossOutput) -> None:
        values = {"total": out.total.detach().float()}
        values.update({k: v.detach().float() for k, v in out.terms.items()})
        bad = [k for k, v in values.items() if not bool(torch.isfinite(v).all())]
        flag = torch.tensor([1.0 if bad else 0.0], device=out.total.device)
        if info.distributed:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() == 0:
            return
        term = next((k for k in bad if k != "total"), bad[0] if bad else "total (on another rank)")
        value = values.get(term, torch.tensor(float("nan")))
        raise NonFiniteLossError(f"step {ts.step + 1}: loss term {term!r} is {value.item()} — training "
                                 f"stopped; {_last_good(run_dir)}")

    return check


def _save_checkpoint(ts: TrainState, run: RunSetup) -> None:
    """``checkpoints/step_<n>/{model.safetensors, state.pt}`` (rank 0; every rank's RNG state gathered), then
    ``checkpoints/latest`` and pruning to ``recipe.checkpoint.keep_last``; all ranks meet at a barrier."""
    info, recipe, model = run.info, run.recipe, ts.model
    rngs = all_gather_objects(rng_state())
    if run.fsdp:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(model, options=opts)
        optim_sd = get_optimizer_state_dict(model, ts.optimizer, options=opts)
    else:
        model_sd = model.state_dict()
        optim_sd = ts.optimizer.state_dict()
    if info.is_main:
        write_checkpoint(run.run_dir, ts.step, model_sd, {
            "step": ts.step, "epoch": ts.epoch, "batch_in_epoch": ts.batch_in_epoch,
            "optimizer": optim_sd, "scheduler": ts.scheduler.state_dict(),
            "scaler": ts.scaler.state_dict() if ts.scaler is not None else None,
            "rng": rngs, "world_size": info.world_size, "seed": recipe.seed,
            "extra_buffers": _non_persistent_buffers(model),
            "global_batch": recipe.data.batch_size,
        }, recipe.checkpoint.keep_last)
    barrier()
    ts.last_checkpoint = ts.step


def _non_persistent_buffers(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Buffers left out of the weights file (``persistent=False``) that still evolve in training, e.g. LOUPE's
    neural-Shapley replay buffer; saved in the training state so a resume continues bit-identically."""
    persistent = set(model.state_dict().keys())
    return {name: buf.detach().to("cpu").clone() for name, buf in model.named_buffers()
            if name not in persistent and isinstance(buf, torch.Tensor)}


def _load_non_persistent_buffers(model: torch.nn.Module, saved: Mapping[str, torch.Tensor], where: Path) -> None:
    own = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in saved.items():
            if name not in own or own[name].shape != value.shape:
                raise CheckpointError(f"{where}: training-state buffer {name!r} does not match the model")
            own[name].copy_(value)


def _save_final(model, run_dir: Path, fsdp: bool, info: DistInfo) -> None:
    """Write the final weights so the run dir is a model directory (``load_model(run_dir)`` works); all ranks meet at
    a barrier.

    A model with a spec is saved with :func:`~loupe_bench.models.checkpoint.save_model` (spec, tokenizer, weights).
    Under FSDP2 the full state dict is gathered from the shards on every rank and rank 0 writes it as given (no
    header metadata) beside the spec; the tokenizer and tower configs were written at the start
    (:func:`_write_run_files`). A model without a spec leaves only its weights."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = None
    if info.is_main:
        spec = getattr(model, "spec", None)
        if sd is None and spec is not None:
            save_model(model, run_dir)
        else:
            write_weights(run_dir / WEIGHTS_FILE, model.state_dict() if sd is None else sd)
            if spec is not None:
                run_files.write_config(run_dir, spec)
    barrier()


def _write_run_files(run_dir: Path, model, recipe: Recipe) -> None:
    """``recipe.yaml`` and the model-directory files but the weights (spec, tokenizer, tower configs:
    :func:`~loupe_bench.models.checkpoint.write_model_files`), so ``load_model(run_dir)`` works mid-run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run_files.clean_temps(run_dir)
    run_files.write_recipe(run_dir, recipe.to_yaml())
    write_model_files(model, run_dir)


def train_model(
    model: Union[str, Mapping[str, Any], torch.nn.Module],
    data: Any,
    recipe: Union[str, Path, Recipe],
    out: Union[str, Path],
    resume: Optional[Union[str, Path]] = None,
    seed: Optional[int] = None,
    *,
    overrides: Optional[Mapping[str, Any]] = None,
    stop_after: Optional[int] = None,
    allow_remote_shards: bool = False,
    allow_changed: Sequence[str] = (),
    on_bad_sample: str = "error",
    on_step: Optional[Callable[[int, int, float], None]] = None,
) -> Path:
    """Train ``model`` on ``data`` with ``recipe``; returns the run directory ``out`` (a model directory when done:
    ``load_model(out)`` and ``evaluate`` take it). ``loupe-bench train`` calls this function.

    Args:
        model: a built :class:`~loupe_bench.models.base.VLModel`, or a model spec (name / mapping) to create — a
            from-scratch tokenizer is then trained on the training captions.
        data: a data path (synthetic-world folder, Karpathy JSON, CSV, shards, HF folder) or a :class:`TrainSource`.
        recipe: shipped recipe name, YAML path or :class:`Recipe`.
        out: run directory.
        resume: ``"latest"`` (newest checkpoint of ``out``) or a checkpoint folder.
        seed: overrides the recipe's seed.
        overrides: dotted recipe overrides, e.g. ``{"steps": 10, "optim.lr": 1e-3}``.
        stop_after: stop (without the final save) after this optimiser step — for tests of interrupted runs.
        allow_remote_shards: open webdataset shard names that are URLs / ``pipe:`` commands (off: refused).
        allow_changed: dotted recipe fields (or sections, or ``data``) a resume may change beyond
            :data:`~loupe_bench.train.runinfo.SAFE_CHANGES`; any other difference from the run's ``run.json``
            is refused before anything is written.
        on_bad_sample: every training image is checked once before step 1; ``error`` stops at the first bad one
            (one line naming it), ``skip`` leaves bad ones out and counts them.
        on_step: called on rank 0 after every optimiser step as ``on_step(step, total_steps, loss)`` — e.g. to
            forward progress from a worker process (``reproduce`` does); it must be cheap and must not raise.
    """
    recipe = load_recipe(recipe)
    changes = dict(overrides or {})
    if seed is not None:
        changes["seed"] = int(seed)
    if changes:
        recipe = recipe.replace(**changes)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    run_dir = Path(out)
    info = init_distributed(recipe.device, recipe.distributed.backend)
    try:
        return _train(model, data, recipe, run_dir, resume, info, stop_after, allow_remote_shards,
                      tuple(allow_changed), on_bad_sample, on_step)
    finally:
        if info.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def check_out_dir(run_dir: Path) -> None:
    """Refuse to train into an existing, non-empty folder that is not a run of ours.

    Rule: a run of ours is proven by its own record only — a ``run.json`` with our schema
    (:func:`~loupe_bench.utils.run_files.run_record`; the first file a run writes). Names prove nothing: any
    other non-empty folder (another tool's run with ``checkpoints/``, ``config.json``, ``log.jsonl``,
    ``model.safetensors``) is refused before anything is read, built or written."""
    if not os.path.lexists(run_dir):
        return
    if not run_dir.is_dir():
        raise SpecError(f"{run_dir}: --out exists and is not a folder")
    if run_files.run_record(run_dir) is not None or not any(run_dir.iterdir()):
        return
    raise SpecError(f"{run_dir}: --out is a non-empty folder that is not a loupe-bench run (no {RUN_FILE} "
                    f"with schema {RUN_SCHEMA}); refusing to write into it — choose a new or empty folder")


def _check_start(run_dir: Path, resume, recipe: Recipe, info: DistInfo) -> Tuple[int, bool]:
    """Checks before anything is read: the output folder, an unasked-for resume, the per-rank batch and FSDP2's
    limits. Returns ``(per-rank batch, fsdp)``."""
    check_out_dir(run_dir)
    if resume is None and run_files.list_checkpoints(run_dir):
        raise SpecError(f"{run_dir}: this run directory already holds checkpoints; pass --resume latest to continue "
                        "it, or choose another --out")
    per_rank = recipe.per_rank_batch(info.world_size, source=f"recipe {recipe.name!r}")
    fsdp = recipe.distributed.strategy == "fsdp2" and info.distributed
    if fsdp and recipe.accum_freq > 1:
        raise SpecError(f"recipe {recipe.name!r}: field 'accum_freq': feature-caching accumulation is not supported "
                        "with distributed.strategy fsdp2")
    return per_rank, fsdp


@dataclass
class ResumePoint:
    """A checked checkpoint to resume from, and what the run record says about the run being resumed."""

    where: Path  # the checkpoint folder
    state: Dict[str, Any]  # its training state (state.pt)
    weights: Any  # its model weights
    changes: Dict[str, Any]  # recipe / data fields changed against run.json (allowed ones only)
    history: List[Dict[str, Any]]  # the changes recorded by earlier resumes
    data_rec: Dict[str, Any]  # the data record to keep in run.json


def _check_resume(resume, run_dir: Path, recipe: Recipe, info: DistInfo, data_rec: Dict[str, Any],
                  allow_changed: Sequence[str], spec: Optional[Mapping[str, Any]] = None) -> ResumePoint:
    """Every check of a resume, before anything is written: a checkpoint of this run
    (:func:`~loupe_bench.train.resume.resolve_resume`), same world size and global batch as the checkpoint, the
    same model spec (:func:`~loupe_bench.train.runinfo.check_model_spec`), only allowed differences from
    ``run.json`` (:func:`~loupe_bench.train.runinfo.resume_changes`), same seed."""
    where = resolve_resume(resume, run_dir)
    state, saved_weights = load_checkpoint(where, run_dir)
    if state.get("world_size") != info.world_size or state.get("global_batch") != recipe.data.batch_size:
        raise CheckpointError(
            f"{where}: saved with world size {state.get('world_size')} and global batch "
            f"{state.get('global_batch')}; this run has {info.world_size} and {recipe.data.batch_size} — an "
            "exact resume needs the same layout")
    changes: Dict[str, Any] = {}
    history: List[Dict[str, Any]] = []
    recorded = runinfo.read_run_record(run_dir)
    if recorded is not None:
        runinfo.check_model_spec(recorded, spec, run_dir)
        changes = runinfo.resume_changes(recorded, recipe, data_rec, allow_changed)
        history = list(recorded.get("changes") or [])
        if recorded.get("data") and "data" not in changes:
            data_rec = dict(recorded["data"])  # same content: keep the recorded source
    if state.get("seed") is not None and state.get("seed") != recipe.seed and "seed" not in allow_changed:
        raise runinfo.RunMismatchError(
            f"{where}: resume refused: the checkpoint was trained with seed {state.get('seed')}, not "
            f"{recipe.seed}; resume with the recorded seed, or pass --allow-changed seed")
    return ResumePoint(where, state, saved_weights, changes, history, data_rec)


def _prepare_model(model, resuming: bool, run_dir: Path, source: TrainSource, recipe: Recipe, device) -> torch.nn.Module:
    """The model on ``device`` in train mode, activation checkpointing on if asked, rank 0's weights on every rank.

    A spec becomes a model: a resumed run rebuilds its own architecture and tokenizer (:func:`rebuild_from_run`;
    weights come from the checkpoint), a new one is built with a tokenizer trained on the source's captions."""
    if not isinstance(model, torch.nn.Module):
        if resuming and (run_dir / CONFIG_FILE).is_file():
            model = rebuild_from_run(model, run_dir)
        else:
            model = build_model(model, source, recipe.seed)
    if not resuming:
        check_init_finite(model)
    model.to(device)
    model.train()
    if recipe.grad_checkpointing:
        enable_grad_checkpointing(model)
    broadcast_module(model)
    return model


def check_init_finite(model: torch.nn.Module) -> None:
    """Refuse a freshly built model holding a NaN or infinite parameter or buffer (e.g. the logit scale of a NaN,
    infinite or negative ``temperature_init``), so a bad spec stops before anything is written to the run folder
    rather than at the first loss."""
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                spec = getattr(model, "spec", None)
                label = f"model {spec.get('name')!r}" if isinstance(spec, Mapping) else type(model).__name__
                raise SpecError(f"{label}: {name} is not finite after initialisation (a spec value such as "
                                "temperature_init is out of range); nothing was trained or written")


def _total_steps(recipe: Recipe, built: BuiltData) -> int:
    """``recipe.steps``, else ``epochs · ⌊size / batch⌋``; a streamed data set needs steps, and the global batch may
    not exceed the training samples."""
    if recipe.steps is not None:
        total = recipe.steps
    else:
        if built.size is None:
            raise SpecError(f"recipe {recipe.name!r}: field 'steps': a streamed (unsized) data set needs steps, "
                            "not epochs")
        total = recipe.epochs * (built.size // recipe.data.batch_size)
    if built.size is not None and built.size < recipe.data.batch_size:
        raise SpecError(f"recipe {recipe.name!r}: field 'data.batch_size': {recipe.data.batch_size} exceeds the "
                        f"{built.size} training samples")
    return total


def _write_run_start(run_dir: Path, model, recipe: Recipe, info: DistInfo, point: Optional[ResumePoint],
                     data_rec: Dict[str, Any]) -> None:
    """Rank 0: write ``run.json`` first (the marker of a run of ours, a resume's changes appended to its history),
    drop the log of a new run's earlier killed attempt, then the run files (:func:`_write_run_files`); all ranks
    meet at a barrier."""
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        history = list(point.history) if point is not None else []
        if point is not None and point.changes:
            history.append({"at_step": int(point.state["step"]), "fields": point.changes})
        spec = _model_spec(model)
        runinfo.record_run(run_dir, recipe, data_rec, spec.get("name") if spec else None, history, spec)
        if point is None:
            run_files.remove_log(run_dir)  # rows of an earlier attempt killed before its first checkpoint
        _write_run_files(run_dir, model, recipe)
    barrier()


def _model_spec(model) -> Optional[Dict[str, Any]]:
    """The resolved spec of a model or spec dict (None for a model built without one)."""
    spec = model if isinstance(model, Mapping) else getattr(model, "spec", None)
    return dict(spec) if isinstance(spec, Mapping) else None


def _restore(ts: TrainState, point: ResumePoint, fsdp: bool, info: DistInfo) -> None:
    """Load a checkpoint into the state: weights, optimiser, schedule, non-persistent buffers, loss scaler, the data
    position and this rank's RNG state."""
    state, model = point.state, ts.model
    if fsdp:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, point.weights, options=opts)
        set_optimizer_state_dict(model, ts.optimizer, state["optimizer"], options=opts)
    else:
        load_weights(model, point.where / WEIGHTS_FILE, point.weights)
        ts.optimizer.load_state_dict(state["optimizer"])
    ts.scheduler.load_state_dict(state["scheduler"])
    _load_non_persistent_buffers(model, state.get("extra_buffers") or {}, point.where)
    if ts.scaler is not None and state.get("scaler"):
        ts.scaler.load_state_dict(state["scaler"])
    ts.step, ts.epoch, ts.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
    ts.last_checkpoint = ts.step
    set_rng_state(state["rng"][info.rank])


def _next_batch(ts: TrainState, run: RunSetup) -> Optional[Tuple[Dict[str, Any], float, float]]:
    """The next batch on the device, with the step's start time and the data-loading seconds; None at the end of an
    epoch (the state moves to the next one). An epoch without a single complete batch is an error."""
    if ts.loader_it is None:
        recipe, info = run.recipe, run.info
        _, ts.loader_it, ts.per_epoch = make_loader(run.built, run.per_rank, recipe.data.batch_size, info.rank,
                                                    info.world_size, recipe.seed, ts.epoch, ts.batch_in_epoch,
                                                    recipe.data.workers, pin_memory=info.device.type == "cuda")
    t0 = time.perf_counter()
    try:
        batch = next(ts.loader_it)
    except StopIteration:
        if ts.batch_in_epoch == 0:
            raise SpecError(f"recipe {run.recipe.name!r}: the data yields no complete batch of "
                            f"{run.per_rank} per rank") from None
        ts.end_epoch()
        return None
    data_s = time.perf_counter() - t0
    device = run.info.device
    batch = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    return batch, t0, data_s


def _optimizer_step(ts: TrainState, run: RunSetup, batch: Dict[str, Any], check) -> Tuple[LossOutput, float, float]:
    """One optimiser step on ``batch``: forward/backward (the finite ``check`` on every loss), gradient averaging
    across ranks, unscale (fp16), clip at ``optim.grad_clip`` (∞: none; the norm is measured either way), the
    non-finite-gradient stop, optimiser and schedule step, ``post_step``, the non-finite-parameter stop
    (:func:`check_params_finite`); then the data position advances.

    Returns ``(loss output, global grad norm, learning rate used)``."""
    model, optimizer, scaler, recipe = ts.model, ts.optimizer, ts.scaler, run.recipe
    optimizer.zero_grad(set_to_none=True)
    if run.fsdp:
        with run.autocast():
            out = model(batch)
        check(out)
        (scaler.scale(out.total) if scaler else out.total).backward()
    else:
        out = forward_backward(model, batch, recipe.accum_freq, run.autocast,
                               scaler.scale if scaler is not None else (lambda t: t), run.embed_fn, check)
    if run.info.distributed:
        average_gradients(run.params if run.replicated is None else run.replicated)
    if scaler is not None:
        scaler.unscale_(optimizer)
    clip_at = recipe.optim.grad_clip if recipe.optim.grad_clip is not None else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.params, clip_at))  # logged even when not clipping
    check_grad_norm(grad_norm, ts.step + 1, run.run_dir, scaled=scaler is not None)
    lr = optimizer.param_groups[0]["lr"]
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    ts.scheduler.step()
    if run.post_step is not None:
        run.post_step()
    check_params_finite(model, run.params, ts.step + 1, run.run_dir, run.info.distributed)
    ts.step += 1
    ts.batch_in_epoch += 1
    if ts.per_epoch is not None and ts.batch_in_epoch >= ts.per_epoch:
        ts.end_epoch()
    return out, grad_norm, lr


def _log_row(ts: TrainState, run: RunSetup, out: LossOutput, batch: Dict[str, Any], lr: float, grad_norm: float,
             dt: float, data_s: float) -> Dict[str, Any]:
    """One ``log.jsonl`` row: step, epoch, lr, loss, images/s over all ranks, step and data seconds, every loss term
    (``loss/<term>``), the model's logs, the grad norm (a string when not finite) and the fp16 loss scale."""
    row: Dict[str, Any] = {"step": ts.step, "epoch": ts.epoch, "lr": lr, "loss": float(out.total.detach()),
                           "images_per_s": batch_size_of(batch) * run.info.world_size / max(dt, 1e-9),
                           "step_time_s": dt, "data_time_s": data_s}
    row.update({f"loss/{k}": float(v) for k, v in out.terms.items()})
    row.update({k: float(v) for k, v in out.logs.items()})
    row["grad_norm"] = grad_norm if math.isfinite(grad_norm) else str(grad_norm)
    if ts.scaler is not None:
        row["loss_scale"] = float(ts.scaler.get_scale())
    return row


def _run_loop(ts: TrainState, run: RunSetup, logger: RunLogger, stop_after: Optional[int]) -> bool:
    """Steps until ``run.total``: a log row every ``log.every`` steps and at the last, a checkpoint every
    ``checkpoint.every`` steps and at the last. Returns False when stopped early at ``stop_after``."""
    recipe = run.recipe
    check = _finite_guard(ts, run.info, run.run_dir)
    while ts.step < run.total:
        got = _next_batch(ts, run)
        if got is None:
            continue
        batch, t0, data_s = got
        out, grad_norm, lr = _optimizer_step(ts, run, batch, check)
        dt = time.perf_counter() - t0
        if ts.step % recipe.log.every == 0 or ts.step == run.total:
            logger.row(_log_row(ts, run, out, batch, lr, grad_norm, dt, data_s))
        logger.advance(ts.step, float(out.total.detach()))
        if (recipe.checkpoint.every and ts.step % recipe.checkpoint.every == 0) or ts.step == run.total:
            _save_checkpoint(ts, run)
        if stop_after is not None and ts.step >= stop_after:
            return False
    return True


def _train(model, data, recipe: Recipe, run_dir: Path, resume, info: DistInfo, stop_after: Optional[int],
           allow_remote_shards: bool = False, allow_changed: Sequence[str] = (), on_bad_sample: str = "error",
           on_step: Optional[Callable[[int, int, float], None]] = None) -> Path:
    """Checks, build, optional resume, the loop, the final checkpoint and model (see :func:`train_model`)."""
    per_rank, fsdp = _check_start(run_dir, resume, recipe, info)
    if not isinstance(model, torch.nn.Module):
        from ..models import get_spec

        model = get_spec(model)  # an unknown spec fails here, before any data is read
    seed_everything(recipe.seed)
    source = _source_for(data, recipe, allow_remote_shards, on_bad_sample)
    data_rec = runinfo.data_record(source)
    point = None
    if resume is not None:
        point = _check_resume(resume, run_dir, recipe, info, data_rec, allow_changed, _model_spec(model))
        data_rec = point.data_rec
    model = _prepare_model(model, point is not None, run_dir, source, recipe, info.device)
    built: BuiltData = source.build(model, recipe, info.rank, info.world_size)
    total = _total_steps(recipe, built)

    replicated = apply_fsdp2(model, info.device) if fsdp else None
    optimizer = create_optimizer(model, recipe.optim)
    ts = TrainState(model, optimizer, create_scheduler(optimizer, recipe.optim, total),
                    make_scaler(recipe.precision, info.device))
    autocast = autocast_factory(recipe.precision, info.device)
    embed_fn = torch.compile(model.embed) if recipe.compile else None
    _write_run_start(run_dir, model, recipe, info, point, data_rec)
    if point is not None:
        _restore(ts, point, fsdp, info)
    elif info.rank:  # ranks differ in their stochastic choices (dropout, sampled coalitions); rank 0 keeps the seed
        seed_everything(recipe.seed + 1000 * info.rank)
    run = RunSetup(recipe, info, run_dir, fsdp, built, per_rank, total, autocast, embed_fn,
                   [p for p in model.parameters() if p.requires_grad], replicated,
                   getattr(model, "clamp_logit_scale_", None))

    logger = RunLogger(run_dir, recipe, total, ts.step, info.is_main, on_step=on_step)
    if point is not None:
        logger.truncate_after(ts.step)
    try:
        if not _run_loop(ts, run, logger, stop_after):
            return run_dir
    finally:
        logger.close()
    if ts.last_checkpoint != ts.step:
        _save_checkpoint(ts, run)
    _save_final(model, run_dir, fsdp, info)
    if info.is_main:
        run_files.mark_finished(run_dir, ts.step)
    return run_dir
