"""Benchmark: one training step (loss, backward, optimiser step) of LOUPE vs CLIP and FILIP with the same towers.

Same tiny towers (``clip-tiny`` / ``filip-tiny`` / ``loupe-tiny``), same synthetic-world batch, same optimiser. LOUPE
is timed in both regimes: during warm-up (every interaction target by Monte-Carlo sampling) and after
``settle_steps`` training steps on the batch stream, when the neural module answers most coalitions. Target
(issue 4): LOUPE ≤ 1.3× a CLIP step.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..utils.provenance import environment_info
from . import BENCHMARKS
from .shapley import build_tiny, synced, to_device, world_batches
from .timing import figure, time_call


def _stepper(model, batch, opt=None):
    opt = opt or torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    last: Dict[str, Any] = {}

    def step():
        out = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
        last["logs"] = out.logs

    return step, last


@BENCHMARKS.register("train-step", help="one LOUPE training step vs one CLIP / FILIP step (same towers and batch)")
def train_step(repeat: int = 3, device: str = "cpu", batch_size: int = 32, settle_steps: int = 60, seed: int = 0,
               world: Optional[str] = None, threads: Optional[int] = 1, warmup_steps: int = 10) -> Dict[str, Any]:
    """Median step time of CLIP, FILIP and LOUPE (sampling phase and neural phase) and the ratios to CLIP."""
    old = torch.get_num_threads()
    if threads and not str(device).startswith("cuda"):
        torch.set_num_threads(int(threads))
    try:
        if world is None:
            from ..data.synth import generate_world

            world_path = generate_world(Path(tempfile.mkdtemp(prefix="loupe-bench-world-")) / "tiny", seed=seed,
                                        size="tiny", image_size=64)
        else:
            world_path = Path(world)
        times: Dict[str, float] = {}
        logs: Dict[str, Dict[str, float]] = {}
        reps = max(repeat, 5)
        for name in ("clip-tiny", "filip-tiny"):
            model = build_tiny(name, seed, world_path).to(device)
            batch = to_device(world_batches(model, 1, batch_size, seed, world_path)[0], device)
            step, _ = _stepper(model, batch)
            times[name] = time_call(synced(step, device), repeat=reps, warmup=2)["median_s"]
        model = build_tiny("loupe-tiny", seed, world_path, neural__warmup_steps=warmup_steps).to(device)
        batches = [to_device(b, device) for b in world_batches(model, settle_steps + 1, batch_size, seed, world_path)]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        # sampling phase: time steps inside the warm-up window on the fixed batch (state advances; all are sampled)
        step, last = _stepper(model, batches[-1], opt)
        times["loupe-tiny (warm-up: sampling)"] = time_call(synced(step, device), repeat=min(reps, max(1, warmup_steps - 2)),
                                                            warmup=1)["median_s"]
        logs["loupe-tiny (warm-up: sampling)"] = dict(last["logs"])
        from rich.progress import track

        for b in track(batches[:-1], description="settling g", transient=True):
            out = model.loss(b)
            opt.zero_grad(set_to_none=True)
            out.total.backward()
            opt.step()
        step, last = _stepper(model, batches[-1], opt)
        times["loupe-tiny (neural)"] = time_call(synced(step, device), repeat=reps, warmup=1)["median_s"]
        logs["loupe-tiny (neural)"] = dict(last["logs"])
        sampling = build_tiny("loupe-sampling", seed, world_path).to(device)
        step, last = _stepper(sampling, batches[-1])
        times["loupe-sampling"] = time_call(synced(step, device), repeat=reps, warmup=1)["median_s"]
        base = times["clip-tiny"]
        figures = [figure(f"{k} step", v * 1e3, "ms") for k, v in times.items()]
        for k, v in times.items():
            if k != "clip-tiny":
                target = "<= 1.3" if k.startswith("loupe-tiny (neural)") else ""
                figures.append(figure(f"{k} / clip-tiny", v / base, "x", target,
                                      (v / base <= 1.3) if target else None))
        return {"name": "train-step", "batch_size": batch_size, "times_s": times, "settle_steps": settle_steps,
                "loupe_logs": logs, "threads": torch.get_num_threads(), "figures": figures,
                "environment": environment_info(device)}
    finally:
        torch.set_num_threads(old)
