"""GPU check: CLIP, FILIP and LOUPE training steps side by side on one GPU.

``python -m loupe_bench.train.gpu_check --out results/benchmarks/gpu_check.json [--steps 150] [--batch 96]``

Builds the three models at base size (default: Swin-T + BERT-base specs ``clip-swin-t``, ``filip-swin-t``,
``loupe-swin-t``, all forced to the same 224 px / 256-d so only the objective differs), takes one training batch of a
224-px synthetic world generated in a temporary folder (the real data path: ``PairDataset`` + ``TrainCollator``),
and times ``--steps`` optimiser steps of the engine's own step function (bf16 autocast, AdamW) after ``--warmup``
untimed ones. The batch is reused every step, so the figures are model step time, not data loading. Prints
images/s, median step time, peak GPU memory, the LOUPE/CLIP and FILIP/CLIP step-time ratios, and writes JSON.

Budget: start-up (imports, world, model builds) is about a minute; each model's timed loop stops early after
``--max-seconds`` (default 75 s), so the whole check stays well under 8 minutes on an H100/H200. ``--tiny --device
cpu`` runs the same logic with the tiny specs for a CPU smoke test.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

BASE_SPECS = ("clip-swin-t", "filip-swin-t", "loupe-swin-t")
TINY_SPECS = ("clip-tiny", "filip-tiny", "loupe-tiny")


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loupe_bench.train.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/benchmarks/gpu_check.json", help="JSON output file.")
    p.add_argument("--steps", type=int, default=150, help="timed optimiser steps per model (default 150).")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per model before timing (default 10).")
    p.add_argument("--batch", type=int, default=96, help="batch size (default 96).")
    p.add_argument("--specs", default=None, help="comma-separated CLIP,FILIP,LOUPE specs (default: Swin-T + BERT-base).")
    p.add_argument("--image-size", type=int, default=224, help="input resolution forced on every spec (default 224).")
    p.add_argument("--embed-dim", type=int, default=256, help="embedding dim forced on every spec (default 256).")
    p.add_argument("--loupe-warmup", type=int, default=5,
                   help="LOUPE neural-Shapley warm-up steps (all-sampling phase) forced on its spec (default 5, so the "
                        "timed steps measure the steady state; the all-sampling phase is timed separately).")
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--max-seconds", type=float, default=75.0, help="stop a model's timed loop after this many seconds.")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test only).")
    p.add_argument("--tiny", action="store_true", help="tiny specs at 64 px (CPU smoke test of this script).")
    return p.parse_args(argv)


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def _spec(name: str, args: argparse.Namespace) -> Dict[str, Any]:
    from ..models import get_spec

    spec = get_spec(name)
    if not args.tiny:
        spec["image_size"] = args.image_size
        spec["embed_dim"] = args.embed_dim
        spec.setdefault("image_tower", {}).setdefault("kwargs", {})
    if spec.get("family") == "loupe" and isinstance(spec.get("loupe", {}).get("neural"), dict):
        spec["loupe"]["neural"]["warmup_steps"] = int(args.loupe_warmup)
    if spec.get("family") == "loupe" and isinstance(spec.get("loupe", {}).get("fsa"), dict):
        spec["loupe"]["fsa"].update(start_step=0, ramp_steps=0)  # time every term from the first step
    return spec


def _batch(model: Any, world: Path, n: int, device) -> Dict[str, Any]:
    """``n`` samples of the world's train split through the training data path (images repeat when n > split)."""
    from ..data.training import PairDataset, TrainCollator, load_caption_records
    from .sources import _train_transform

    records = load_caption_records(str(world), split="train")
    ds = PairDataset(records, _train_transform(model, (0.8, 1.0), False), caption_policy="random", seed=0)
    batch = TrainCollator(model.tokenizer, 8)([ds[i % len(ds)] for i in range(n)])
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _time_model(spec: Dict[str, Any], captions: List[str], world: Path, args: argparse.Namespace, device) -> Dict[str, Any]:
    import torch

    from ..models import create_model
    from .engine import autocast_factory, make_scaler
    from .optim import create_optimizer
    from .recipe import OptimConfig
    from .step import forward_backward

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t_build = time.perf_counter()
    model = create_model(spec, tokenizer_corpus=captions, seed=0).to(device).train()
    build_s = time.perf_counter() - t_build
    batch = _batch(model, world, args.batch, device)
    opt = create_optimizer(model, OptimConfig(lr=1e-4, weight_decay=0.05))
    autocast = autocast_factory(args.precision, device)
    scaler = make_scaler(args.precision, device)
    params = [p for p in model.parameters() if p.requires_grad]
    post = getattr(model, "clamp_logit_scale_", None)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        out = forward_backward(model, batch, 1, autocast, scaler.scale if scaler else (lambda t: t))
        if scaler is not None:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if post is not None:
            post()
        return out

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    warm_times = []
    for _ in range(args.warmup):
        t0 = time.perf_counter()
        out = step()
        sync()
        warm_times.append(time.perf_counter() - t0)
    first_loss = float(out.total)
    times: List[float] = []
    t_start = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        out = step()
        sync()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_start > args.max_seconds:
            break
    total = sum(times)
    last = float(out.total)
    result = {
        "spec": spec["name"], "family": spec.get("family"), "build_s": build_s,
        "timed_steps": len(times), "median_step_s": statistics.median(times), "mean_step_s": total / len(times),
        "images_per_s": args.batch * len(times) / total,
        "warmup_steps": args.warmup, "warmup_step_s": warm_times,
        "loss_first": first_loss, "loss_last": last, "loss_finite": last == last and abs(last) != float("inf"),
        "loss_terms_last": {k: float(v) for k, v in out.terms.items()},
        "logs_last": {k: float(v) for k, v in out.logs.items()},
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model, opt, batch, out
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = _parse(argv)
    t_all = time.perf_counter()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        _fail("no CUDA device is available; this check needs one GPU (use --device cpu --tiny for a smoke test)")
    if args.steps < 1 or args.batch < 2 or args.warmup < 1:
        _fail("--steps and --warmup must be >= 1 and --batch >= 2")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    names = args.specs.split(",") if args.specs else list(TINY_SPECS if args.tiny else BASE_SPECS)
    if len(names) != 3:
        _fail("--specs takes three names: CLIP,FILIP,LOUPE")
    from ..errors import LoupeBenchError

    try:
        specs = [_spec(n, args) for n in names]
    except LoupeBenchError as exc:
        _fail(str(exc))
    from ..data import generate_world
    from ..data.training import load_caption_records
    from ..utils.io import atomic_write_json
    from ..utils.provenance import environment_info

    with tempfile.TemporaryDirectory(prefix="loupe_gpu_check_") as tmp:
        t0 = time.perf_counter()
        image_size = 64 if args.tiny else args.image_size
        world = generate_world(Path(tmp) / "world", seed=0, size="tiny", image_size=image_size)
        captions = [c.text for r in load_caption_records(str(world), split="train") for c in r.captions]
        world_s = time.perf_counter() - t0
        results = {}
        for key, spec in zip(("clip", "filip", "loupe"), specs):
            print(f"[gpu_check] {spec['name']}: {args.warmup} warm-up + up to {args.steps} timed steps, batch "
                  f"{args.batch}, {args.precision}", flush=True)
            results[key] = _time_model(spec, captions, world, args, device)
            r = results[key]
            print(f"[gpu_check]   {r['images_per_s']:.1f} images/s, median step {r['median_step_s'] * 1e3:.1f} ms, "
                  f"peak {r.get('peak_memory_gib', float('nan')):.2f} GiB, loss {r['loss_first']:.4f} -> "
                  f"{r['loss_last']:.4f}", flush=True)
    ratios = {
        "loupe_over_clip_step_time": results["loupe"]["median_step_s"] / results["clip"]["median_step_s"],
        "filip_over_clip_step_time": results["filip"]["median_step_s"] / results["clip"]["median_step_s"],
    }
    record = {
        "schema": "loupe-bench/benchmark/v1", "name": "gpu-check",
        "environment": environment_info(str(device)),
        "config": {"steps": args.steps, "warmup": args.warmup, "batch": args.batch, "precision": args.precision,
                   "image_size": image_size, "embed_dim": None if args.tiny else args.embed_dim,
                   "loupe_neural_warmup_steps": args.loupe_warmup, "max_seconds": args.max_seconds,
                   "specs": names, "data": "one batch of a generated synthetic world (size tiny), reused every step"},
        "models": results, "ratios": ratios,
        "figures": [
            {"label": "LOUPE / CLIP step time", "value": ratios["loupe_over_clip_step_time"], "unit": "x",
             "target": "<= 1.3", "met": ratios["loupe_over_clip_step_time"] <= 1.3},
            {"label": "FILIP / CLIP step time", "value": ratios["filip_over_clip_step_time"], "unit": "x",
             "target": "", "met": None},
        ] + [{"label": f"{k} images/s", "value": v["images_per_s"], "unit": "images/s", "target": "", "met": None}
             for k, v in results.items()],
        "world_s": world_s, "wall_s": time.perf_counter() - t_all,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(args.out, record)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gpu check ({record['environment'].get('device_name', device)}, {record['wall_s']:.0f} s)")
    for col in ("model", "images/s", "median step ms", "peak GiB", "loss first -> last"):
        table.add_column(col)
    for k, r in results.items():
        table.add_row(f"{k} ({r['spec']})", f"{r['images_per_s']:.1f}", f"{r['median_step_s'] * 1e3:.1f}",
                      f"{r.get('peak_memory_gib', float('nan')):.2f}", f"{r['loss_first']:.4f} -> {r['loss_last']:.4f}")
    Console().print(table)
    print(f"LOUPE/CLIP step-time ratio {ratios['loupe_over_clip_step_time']:.3f} (target <= 1.3); "
          f"FILIP/CLIP {ratios['filip_over_clip_step_time']:.3f}; wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
