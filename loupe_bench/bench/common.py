"""What every benchmark shares: timing (medians of repeated runs, interleaved rounds measured side by side), figures,
the synthetic world and its batches, tiny models, device moves and synchronisation, CPU threads, one engine step."""
from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch


# -- timing and figures ---------------------------------------------------------------------------------------------
def time_call(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> Dict[str, float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; return median/min/max seconds."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeat": len(times)}


def interleaved_times(fns: Dict[str, Callable[[], Any]], rounds: int, warmup_rounds: int = 1,
                      block: int = 1) -> Dict[str, List[float]]:
    """Seconds of each call of each function, in ``fns`` order, for ``rounds`` timed rounds after ``warmup_rounds``
    untimed ones (round-robin: load changes on a shared machine hit every function alike).

    With ``block > 1`` each function runs ``block`` times in a row per round, the first call untimed: the timed
    calls find the caches as a run of that function alone leaves them (a training loop steps one model), not as the
    previous function left them; ``rounds × (block − 1)`` samples per function."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    block = max(1, int(block))
    for r in range(rounds + warmup_rounds):
        for key, fn in fns.items():
            if block > 1:
                fn()
            for _ in range(max(1, block - 1)):
                t = time_call(fn, repeat=1, warmup=0)["median_s"]
                if r >= warmup_rounds:
                    times[key].append(t)
    return times


def figure(label: str, value: float, unit: str, target: str = "", met: Any = None) -> Dict[str, Any]:
    """One printed figure of a benchmark: its value, unit, target (text) and whether the target is met."""
    return {"label": label, "value": value, "unit": unit, "target": target, "met": met}


# -- devices and threads --------------------------------------------------------------------------------------------
def sync(device: Any) -> None:
    """Wait for the device's queued kernels (a no-op off CUDA)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def synced(fn: Callable[[], Any], device: Any) -> Callable[[], Any]:
    """``fn`` followed by a device synchronisation (so CUDA timings include the kernels)."""

    def run():
        out = fn()
        sync(device)
        return out

    return run


def to_device(batch: Dict[str, Any], device: Any) -> Dict[str, Any]:
    """The batch with every tensor moved to ``device`` (other values as they are)."""
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@contextlib.contextmanager
def torch_threads(threads: Optional[int], device: Any) -> Iterator[int]:
    """``torch.set_num_threads(threads)`` on CPU for the block (None/0, or a CUDA device: left as it is), restored
    afterwards; yields the thread count in force. On a shared machine oversubscribed threads make small kernels
    10-50x slower and the timings meaningless."""
    old = torch.get_num_threads()
    if threads and not str(device).startswith("cuda"):
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


# -- the synthetic world, its batches, tiny models ------------------------------------------------------------------
def bench_world(world: Optional[Any] = None, seed: int = 0, image_size: int = 64) -> Path:
    """The synthetic world a benchmark runs on: ``world`` when given, else a ``tiny`` world generated into a fresh
    temporary folder."""
    if world is not None:
        return Path(world)
    from ..data.synth import generate_world

    return generate_world(Path(tempfile.mkdtemp(prefix="loupe-bench-world-")) / "tiny", seed=seed, size="tiny",
                          image_size=image_size)


def world_captions(world: Path, split: str = "train") -> List[str]:
    """Every caption text of the world's ``split``, in record order (the corpus of from-scratch tokenizers)."""
    from ..data.training import load_caption_records

    return [c.text for r in load_caption_records(str(world), split=split) for c in r.captions]


def world_batches(model, n_batches: int, batch_size: int, seed: int = 0, world: Optional[Path] = None,
                  split: str = "train") -> List[Dict[str, torch.Tensor]]:
    """``n_batches`` training batches of the synthetic world (generated into a temporary folder when not given)."""
    from ..data.training import PairDataset, TrainCollator, load_caption_records
    from ..data.transforms import build_transform

    world = bench_world(world, seed, image_size=model.image_size)
    records = load_caption_records(str(world), split=split)
    ds = PairDataset(records, build_transform(model.image_size, model.image_mean, model.image_std, train=False),
                     caption_policy="cycle", seed=seed)
    collate = TrainCollator(model.tokenizer)
    out = []
    i = 0
    for bi in range(n_batches):
        ds.set_epoch(bi)
        samples = [ds[(i + j) % len(ds)] for j in range(batch_size)]
        i += batch_size
        out.append(collate(samples))
    return out


def build_tiny(spec_name: str, seed: int, world: Path, **loupe_overrides: Any):
    """The model of ``spec_name`` with a tokenizer trained on the world's captions; ``loupe`` keys overridden
    (``a__b=v`` sets ``loupe.a.b = v``)."""
    from ..models import create_model, get_spec

    spec = get_spec(spec_name)
    for k, v in loupe_overrides.items():
        node = spec.setdefault("loupe", {})
        parts = k.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = v
    return create_model(spec, tokenizer_corpus=world_captions(world), seed=seed)


# -- one training step ----------------------------------------------------------------------------------------------
def engine_step(model, batch: Dict[str, Any], autocast: Callable[[], Any], opt, scaler=None,
                clip_norm: Optional[float] = None, logs: Optional[Dict[str, Any]] = None) -> Callable[[], Any]:
    """One optimiser step as the training engine runs it, as a no-argument callable returning the step's
    :class:`~loupe_bench.train.step.LossOutput`: zero the gradients,
    :func:`~loupe_bench.train.step.forward_backward` under ``autocast`` (the loss scaled by ``scaler`` when given),
    unscale and clip the gradient norm to ``clip_norm`` (when given), the optimiser step (through ``scaler``), then the
    model's logit-scale clamp (when it has one); the step's loss logs land in ``logs`` when given."""
    from ..train.step import forward_backward

    params = [p for p in model.parameters() if p.requires_grad]
    post = getattr(model, "clamp_logit_scale_", None)
    scale = scaler.scale if scaler is not None else (lambda t: t)

    def step():
        opt.zero_grad(set_to_none=True)
        out = forward_backward(model, batch, 1, autocast, scale)
        if scaler is not None:
            scaler.unscale_(opt)
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if post is not None:
            post()
        if logs is not None:
            logs.clear()
            logs.update(out.logs)
        return out

    return step
