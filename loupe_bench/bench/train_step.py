"""Benchmark: one training step (loss, backward, optimiser step) of LOUPE vs CLIP, FILIP and SigLIP, same towers.

Same tiny towers (``clip-tiny`` / ``filip-tiny`` / ``siglip-tiny`` / ``loupe-tiny``), same synthetic-world batch, same
optimiser. LOUPE is timed in both regimes: during warm-up (every interaction target by Monte-Carlo sampling) and after
``settle_steps`` training steps on the batch stream, when the neural module answers most coalitions. Target:
LOUPE ≤ 1.3× a CLIP step.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, Optional

import torch

from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import (bench_world, build_tiny, figure, interleaved_times, synced, to_device,
                     torch_threads, world_batches)


#: the baselines stepped beside LOUPE, in this order (each also gets a ``NAME / clip-tiny`` ratio row)
BASELINES = ("clip-tiny", "filip-tiny", "siglip-tiny", "sparc-tiny")

#: the settled LOUPE with its sampling budget set to 0 after warm-up (no Monte-Carlo pass, no holdout): a lower bound
#: of the neural phase's step time under any routing budget
FLOOR = "loupe-tiny (neural, no sampling: floor)"


def no_sampling_copy(model):
    """A deep copy of a settled LOUPE whose estimators route nothing to Monte-Carlo sampling any more
    (``neural.max_routed_fraction = 0``, ``neural.holdout = 0``): every target is ``g_θ``'s ``μ``, ``g_θ`` still
    trains on its replay buffer. What is left of the step is LOUPE's work besides sampling (region head, the token
    game's ``u(A)``, ``u(N)`` for ``g_θ``'s features, ℒ_FSA, ℒ_NSI and their backward)."""
    import copy

    floor = copy.deepcopy(model)
    for est in (getattr(floor, "tsa_estimator", None), getattr(floor, "fsa_estimator", None)):
        module = getattr(est, "module", None)
        if module is not None:  # NeuralEstimator: its config object is shared with its NeuralInteraction
            module.cfg.max_routed_fraction = 0.0
            module.cfg.holdout = 0
    return floor


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


@BENCHMARKS.register("train-step",
                     help="one LOUPE training step vs one CLIP / FILIP / SigLIP step (same towers and batch)")
def train_step(repeat: int = 3, device: str = "cpu", batch_size: int = 32, settle_steps: int = 60, seed: int = 0,
               world: Optional[str] = None, threads: Optional[int] = 1, warmup_steps: int = 10,
               large_batch: int = 128, block: int = 4, floor: bool = True) -> Dict[str, Any]:
    """Median step time of CLIP, FILIP, SigLIP and LOUPE (sampling phase and neural phase) and the ratios to CLIP.

    With ``large_batch`` (0: off), CLIP and the settled LOUPE also step on one batch of that size in the same rounds:
    LOUPE's extra work per step (the token game on ``tsa.target_images`` images, ℒ_FSA on ``fsa.target_images``)
    does not grow with the batch, so its ratio to CLIP falls as the batch grows; the figure says by how much.
    ``block``: consecutive steps of one model per round (:func:`~.common.interleaved_times`; 1 = strict
    round-robin, which times each step just after another model's and measured LOUPE / CLIP 1.35–1.94× on the
    same machine depending on the neighbours).
    ``floor``: also time :data:`FLOOR`, the settled model with no Monte-Carlo sampling left
    (:func:`no_sampling_copy`): no sampling budget can bring LOUPE's step below it."""
    with torch_threads(threads, device) as n_threads:
        world_path = bench_world(world, seed)
        reps = max(repeat, 5)
        steps: Dict[str, Any] = {}
        lasts: Dict[str, Dict[str, Any]] = {}
        built = {}
        for name in BASELINES:
            model = built[name] = build_tiny(name, seed, world_path).to(device)
            batch = to_device(world_batches(model, 1, batch_size, seed, world_path)[0], device)
            steps[name], lasts[name] = _stepper(model, batch)
        # LOUPE with the neural module: train on the batch stream until past warm-up, then time on the fixed batch
        fsa_now = {"fsa__start_step": 0, "fsa__ramp_steps": 0}  # time every LOUPE term (the specs start ℒ_FSA at 60)
        model = build_tiny("loupe-tiny", seed, world_path, neural__warmup_steps=warmup_steps, **fsa_now).to(device)
        batches = [to_device(b, device) for b in world_batches(model, settle_steps + 1, batch_size, seed, world_path)]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        from rich.progress import track

        for b in track(batches[:-1], description="settling g", transient=True):
            out = model.loss(b)
            opt.zero_grad(set_to_none=True)
            out.total.backward()
            opt.step()
        steps["loupe-tiny (neural)"], lasts["loupe-tiny (neural)"] = _stepper(model, batches[-1], opt)
        if floor:
            steps[FLOOR], lasts[FLOOR] = _stepper(no_sampling_copy(model), batches[-1])
        big = f"batch {large_batch}"
        if large_batch:
            clip = built["clip-tiny"]  # the same model as the batch-32 row, its own optimiser
            clip_big = to_device(world_batches(clip, 1, large_batch, seed + 1, world_path)[0], device)
            steps[f"clip-tiny step, {big}"], _ = _stepper(clip, clip_big)
            loupe_big = to_device(world_batches(model, 1, large_batch, seed + 1, world_path)[0], device)
            steps[f"loupe-tiny (neural) step, {big}"], _ = _stepper(model, loupe_big, opt)
        # LOUPE inside its warm-up window (every target sampled): a copy whose warm-up never ends
        warm = build_tiny("loupe-tiny", seed, world_path, neural__warmup_steps=10**9, **fsa_now).to(device)
        steps["loupe-tiny (warm-up: sampling)"], lasts["loupe-tiny (warm-up: sampling)"] = _stepper(warm, batches[-1])
        sampling = build_tiny("loupe-sampling", seed, world_path, **fsa_now).to(device)
        steps["loupe-sampling"], lasts["loupe-sampling"] = _stepper(sampling, batches[-1])
        # round-robin over models, `block` consecutive steps of each per round (the first untimed): load changes on
        # a shared machine hit all alike, and each timed step finds the caches as its own previous step left them
        samples = interleaved_times({k: synced(fn, device) for k, fn in steps.items()}, reps, warmup_rounds=1,
                                    block=block)
        times = {k: statistics.median(v) for k, v in samples.items()}
        logs = {k: dict(v.get("logs", {})) for k, v in lasts.items() if k.startswith("loupe")}
        base = times["clip-tiny"]
        figures = [figure(k if "step" in k else f"{k} step", v * 1e3, "ms") for k, v in times.items()]
        for k, v in times.items():
            if k != "clip-tiny" and not k.endswith(big):
                target = "<= 1.3" if k.startswith("loupe-tiny (neural)") else ""
                figures.append(figure(f"{k} / clip-tiny", v / base, "x", target,
                                      (v / base <= 1.3) if target else None))
        if large_batch:
            ratio = times[f"loupe-tiny (neural) step, {big}"] / times[f"clip-tiny step, {big}"]
            figures.append(figure(f"loupe-tiny (neural) / clip-tiny, {big}", ratio, "x"))
        return {"name": "train-step", "batch_size": batch_size, "large_batch": large_batch, "block": block,
                "times_s": times, "settle_steps": settle_steps,
                "loupe_logs": logs, "threads": n_threads, "figures": figures,
                "environment": environment_info(device)}
