"""``gpu-check`` benchmark: CLIP, FILIP and LOUPE training steps side by side at base size on one GPU.

``loupe-bench bench gpu-check [--set gpu-check.steps=150] [--set gpu-check.batch=96] ...`` (options: the keyword
arguments of :func:`gpu_check`).

Builds the three models at base size (default: Swin-T + BERT-base specs ``clip-swin-t``, ``filip-swin-t``,
``loupe-swin-t``, all forced to the same 224 px / 256-d so only the objective differs), takes one training batch of a
224-px synthetic world generated in a temporary folder (the real data path: ``PairDataset`` with the training
transform + ``TrainCollator``), and times ``steps`` optimiser steps of the training engine's step
(:func:`~loupe_bench.bench.common.engine_step`: bf16 autocast, AdamW, gradient clipping at norm 1) after ``warmup``
untimed ones. The batch is reused every step, so the figures are model step time, not data loading. Figures:
the LOUPE/CLIP (target ≤ 1.3×) and FILIP/CLIP median step-time ratios and each model's images/s; the record also
holds median step time, peak GPU memory and the first and last losses of each model.

Budget: start-up (imports, world, model builds) is about a minute; each model's timed loop stops early after
``max_seconds`` (default 75 s), so the whole check stays well under 8 minutes on an H100/H200. Off CUDA the check is
skipped (one line, no JSON) unless ``tiny`` is set: the same logic with the tiny specs at 64 px, a CPU smoke test.
"""
from __future__ import annotations

import contextlib
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Union

import torch

from ..errors import SpecError
from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import engine_step, figure, sync, world_captions

#: the compared specs (CLIP, FILIP, LOUPE) at base size, and the tiny ones of the CPU smoke test
BASE_SPECS = ("clip-swin-t", "filip-swin-t", "loupe-swin-t")
TINY_SPECS = ("clip-tiny", "filip-tiny", "loupe-tiny")
#: the keys of the three models in the record, in the order of the specs
MODEL_KEYS = ("clip", "filip", "loupe")
PRECISIONS = ("bf16", "fp16", "fp32")
#: the LOUPE / CLIP step-time target
TARGET = 1.3
NO_CUDA = ("gpu-check needs a CUDA device (--device cuda); `--set gpu-check.tiny=true` runs it on the CPU as a smoke "
           "test with the tiny specs")


class GpuCheckConfig(NamedTuple):
    """The options of one :func:`gpu_check` run (its keyword arguments, checked)."""

    steps: int
    warmup: int
    batch: int
    precision: str
    image_size: int
    embed_dim: int
    loupe_warmup: int
    max_seconds: float
    tiny: bool


@BENCHMARKS.register("gpu-check", help="CLIP, FILIP and LOUPE training steps at base size on one GPU (LOUPE/CLIP "
                                       "step time, target 1.3x)")
def gpu_check(repeat: int = 1, device: str = "cuda", steps: int = 150, warmup: int = 10, batch: int = 96,
              specs: Optional[Union[str, Sequence[str]]] = None, image_size: int = 224, embed_dim: int = 256,
              loupe_warmup: int = 5, precision: str = "bf16", max_seconds: float = 75.0,
              tiny: bool = False) -> Dict[str, Any]:
    """Step time of CLIP, FILIP and LOUPE on one GPU (see the module docstring); the JSON record.

    Args:
        repeat: not used (each model runs one timed loop of ``steps`` steps; the figures are medians over them).
        device: a CUDA device (anything else without ``tiny``: skipped).
        steps: timed optimiser steps per model.
        warmup: untimed steps per model before timing.
        batch: batch size.
        specs: three specs CLIP, FILIP, LOUPE (a list, or one comma-separated string); default: Swin-T + BERT-base
            (``tiny``: the tiny specs).
        image_size, embed_dim: input resolution and embedding dim forced on every spec (not with ``tiny``).
        loupe_warmup: LOUPE neural-Shapley warm-up steps (all-sampling phase) forced on its spec, so the timed steps
            measure the steady state (the all-sampling phase is timed separately, in the warm-up steps).
        precision: ``bf16``, ``fp16`` or ``fp32``.
        max_seconds: stop a model's timed loop after this many seconds.
        tiny: the tiny specs at 64 px (a CPU smoke test of this benchmark).
    """
    t_all = time.perf_counter()
    if not str(device).startswith("cuda") and not tiny:
        return {"name": "gpu-check", "skipped": NO_CUDA, "figures": [], "environment": environment_info(device)}
    cfg = GpuCheckConfig(int(steps), int(warmup), int(batch), str(precision), int(image_size), int(embed_dim),
                         int(loupe_warmup), float(max_seconds), bool(tiny))
    if cfg.steps < 1 or cfg.batch < 2 or cfg.warmup < 1:
        raise SpecError("gpu-check: steps and warmup must be >= 1 and batch >= 2")
    if cfg.precision not in PRECISIONS:
        raise SpecError(f"gpu-check: precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    names = list(specs.split(",") if isinstance(specs, str) else specs or (TINY_SPECS if cfg.tiny else BASE_SPECS))
    if len(names) != 3:
        raise SpecError(f"gpu-check: specs takes three names, CLIP, FILIP and LOUPE; got {names}")
    model_specs = [_spec(n, cfg) for n in names]
    dev = torch.device(device)
    with _tf32(dev):
        results, world_s = _time_models(model_specs, cfg, dev)
    return _record(results, names, cfg, world_s, dev, time.perf_counter() - t_all)


@contextlib.contextmanager
def _tf32(device: torch.device) -> Iterator[None]:
    """TF32 matmuls and convolutions on CUDA for the block (as training runs them), the settings restored afterwards
    (later benchmarks of the same run are not affected)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _spec(name: str, cfg: GpuCheckConfig) -> Dict[str, Any]:
    """The spec ``name`` with the forced image size and embedding dim (not ``tiny``), LOUPE's neural warm-up and every
    LOUPE term on from the first step."""
    from ..models import get_spec

    spec = get_spec(name)
    if not cfg.tiny:
        spec["image_size"] = cfg.image_size
        spec["embed_dim"] = cfg.embed_dim
        spec.setdefault("image_tower", {}).setdefault("kwargs", {})
    if spec.get("family") == "loupe" and isinstance(spec.get("loupe", {}).get("neural"), dict):
        spec["loupe"]["neural"]["warmup_steps"] = cfg.loupe_warmup
    if spec.get("family") == "loupe" and isinstance(spec.get("loupe", {}).get("fsa"), dict):
        spec["loupe"]["fsa"].update(start_step=0, ramp_steps=0)  # time every term from the first step
    return spec


def _time_models(specs: List[Dict[str, Any]], cfg: GpuCheckConfig, device: torch.device):
    """Each model timed in turn on a tiny synthetic world (``cfg.image_size`` px; 64 px with ``tiny``) generated into
    a temporary folder: ``({clip, filip, loupe}: result, seconds to generate the world)``."""
    from ..data import generate_world

    with tempfile.TemporaryDirectory(prefix="loupe_gpu_check_") as tmp:
        t0 = time.perf_counter()
        world = generate_world(Path(tmp) / "world", seed=0, size="tiny", image_size=64 if cfg.tiny else cfg.image_size)
        captions = world_captions(world)
        world_s = time.perf_counter() - t0
        results = {}
        for key, spec in zip(MODEL_KEYS, specs):
            print(f"[gpu-check] {spec['name']}: {cfg.warmup} warm-up + up to {cfg.steps} timed steps, batch "
                  f"{cfg.batch}, {cfg.precision}", flush=True)
            results[key] = r = _time_model(spec, captions, world, cfg, device)
            print(f"[gpu-check]   {r['images_per_s']:.1f} images/s, median step {r['median_step_s'] * 1e3:.1f} ms, "
                  f"peak {r.get('peak_memory_gib', float('nan')):.2f} GiB, loss {r['loss_first']:.4f} -> "
                  f"{r['loss_last']:.4f}", flush=True)
    return results, world_s


def _batch(model: Any, world: Path, n: int, device: torch.device) -> Dict[str, Any]:
    """``n`` samples of the world's train split through the training data path (the training transform: random
    resized crop at scale 0.8-1, no flip; images repeat when n > split)."""
    from ..data.training import PairDataset, TrainCollator, load_caption_records
    from ..data.transforms import build_transform

    records = load_caption_records(str(world), split="train")
    transform = build_transform(int(model.image_size), model.image_mean, model.image_std, train=True, hflip=False,
                                scale=(0.8, 1.0))
    ds = PairDataset(records, transform, caption_policy="random", seed=0)
    batch = TrainCollator(model.tokenizer, 8)([ds[i % len(ds)] for i in range(n)])
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _time_model(spec: Dict[str, Any], captions: List[str], world: Path, cfg: GpuCheckConfig,
                device: torch.device) -> Dict[str, Any]:
    """Build one model, time its steps (:func:`_timed_steps`) and report them with its peak GPU memory; the model is
    freed afterwards."""
    from ..models import create_model
    from ..train.engine import autocast_factory, make_scaler
    from ..train.optim import create_optimizer
    from ..train.recipe import OptimConfig

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t_build = time.perf_counter()
    model = create_model(spec, tokenizer_corpus=captions, seed=0).to(device).train()
    build_s = time.perf_counter() - t_build
    batch = _batch(model, world, cfg.batch, device)
    opt = create_optimizer(model, OptimConfig(lr=1e-4, weight_decay=0.05))
    step = engine_step(model, batch, autocast_factory(cfg.precision, device), opt,
                       scaler=make_scaler(cfg.precision, device), clip_norm=1.0)
    run = _timed_steps(step, device, cfg)
    times, out = run["times"], run["out"]
    total = sum(times)
    last = float(out.total)
    result = {
        "spec": spec["name"], "family": spec.get("family"), "build_s": build_s,
        "timed_steps": len(times), "median_step_s": statistics.median(times), "mean_step_s": total / len(times),
        "images_per_s": cfg.batch * len(times) / total,
        "warmup_steps": cfg.warmup, "warmup_step_s": run["warm_times"],
        "loss_first": run["first_loss"], "loss_last": last, "loss_finite": last == last and abs(last) != float("inf"),
        "loss_terms_last": {k: float(v) for k, v in out.terms.items()},
        "logs_last": {k: float(v) for k, v in out.logs.items()},
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model, opt, batch, out, run, step
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def _timed_steps(step: Callable[[], Any], device: torch.device, cfg: GpuCheckConfig) -> Dict[str, Any]:
    """``cfg.warmup`` untimed steps (their seconds kept), then up to ``cfg.steps`` timed ones, stopping once the loop
    has run ``cfg.max_seconds``; each step synchronised. Returns ``warm_times``, ``first_loss`` (the loss of the last
    warm-up step), ``times`` and ``out`` (the last step's loss output)."""
    warm_times = []
    for _ in range(cfg.warmup):
        t0 = time.perf_counter()
        out = step()
        sync(device)
        warm_times.append(time.perf_counter() - t0)
    first_loss = float(out.total)
    times: List[float] = []
    t_start = time.perf_counter()
    for _ in range(cfg.steps):
        t0 = time.perf_counter()
        out = step()
        sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_start > cfg.max_seconds:
            break
    return {"warm_times": warm_times, "first_loss": first_loss, "times": times, "out": out}


def _record(results: Dict[str, Dict[str, Any]], names: List[str], cfg: GpuCheckConfig, world_s: float,
            device: torch.device, wall_s: float) -> Dict[str, Any]:
    """The JSON record: configuration, per-model results, the LOUPE/CLIP and FILIP/CLIP median step-time ratios,
    the figures."""
    ratios = {
        "loupe_over_clip_step_time": results["loupe"]["median_step_s"] / results["clip"]["median_step_s"],
        "filip_over_clip_step_time": results["filip"]["median_step_s"] / results["clip"]["median_step_s"],
    }
    figures = [
        figure("LOUPE / CLIP step time", ratios["loupe_over_clip_step_time"], "x", f"<= {TARGET}",
               ratios["loupe_over_clip_step_time"] <= TARGET),
        figure("FILIP / CLIP step time", ratios["filip_over_clip_step_time"], "x"),
    ] + [figure(f"{k} images/s", v["images_per_s"], "images/s") for k, v in results.items()]
    return {
        "schema": "loupe-bench/benchmark/v1", "name": "gpu-check",
        "environment": environment_info(str(device)),
        "config": {"steps": cfg.steps, "warmup": cfg.warmup, "batch": cfg.batch, "precision": cfg.precision,
                   "image_size": 64 if cfg.tiny else cfg.image_size, "embed_dim": None if cfg.tiny else cfg.embed_dim,
                   "loupe_neural_warmup_steps": cfg.loupe_warmup, "max_seconds": cfg.max_seconds,
                   "specs": names, "data": "one batch of a generated synthetic world (size tiny), reused every step"},
        "models": results, "ratios": ratios, "figures": figures,
        "world_s": world_s, "wall_s": wall_s,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
