"""``train-throughput`` benchmark: training images/s of our CLIP beside open_clip on the same backbone, and of LOUPE.

Three training loops run side by side in one process, on the same batch, precision and optimiser:

* **ours** — the ``clip`` family model (:class:`~loupe_bench.models.clip.CLIP`), one step as the training engine runs
  it: :func:`~loupe_bench.train.step.forward_backward` under the recipe's autocast, AdamW
  (:func:`~loupe_bench.train.optim.create_optimizer`), then the logit-scale clamp;
* **open_clip** — ``open_clip.CustomTextCLIP`` (open_clip_torch, optional extra ``openclip``) holding *the same
  backbone*: its timm vision tower (``TimmModel``) builds our timm ViT (same ``timm.create_model`` name and kwargs,
  registered as a timm entrypoint so open_clip constructs it itself) with a bias-free linear projection, its HF text
  tower (``HFTextEncoder``; ``mean_pooler`` for our ``pool: mean``, ``cls_last_hidden_state_pooler`` for ``[CLS]``;
  linear projection) builds our BERT from our tower's saved
  ``BertConfig``; one step as open_clip's training loop runs it: ``model(images, texts)`` and ``ClipLoss`` under
  autocast, backward, AdamW over the same weight-decay groups, ``logit_scale.clamp_(0, ln 100)``. The twin starts
  from our weights (copied name by name: ``visual.trunk.* ← image_tower.model.*``, ``visual.head.proj ←
  image_proj``, ``text.transformer.* ← text_tower.model.*``, ``text.proj ← text_proj``, ``logit_scale``), so both
  compute the same function (recorded: the largest difference of the pooled embeddings in eval mode);
* **LOUPE** — the ``loupe`` family on the same towers (``loupe-tiny``'s heads and losses, every term on), trained on
  a stream of batches for ``settle_steps`` steps past its neural-Shapley warm-up (``warmup_steps``) and then timed,
  so the neural module routes the coalitions it is confident about (``neural routing, after warm-up``).

Each round times one step of every model in turn (after two untimed steps each), so load changes on a shared machine
hit all alike; a model's step time is the median over rounds and its throughput ``batch / median`` (also recorded:
the median over rounds of the within-round ratio ``t_open_clip / t_ours``). Figures: images/s
of each, ``ours / open_clip`` (target ≥ 0.9 on a GPU) and ``LOUPE / ours`` (target ≥ 0.75 on a GPU). Precision:
bf16 autocast on CUDA, fp32 on CPU. Sizes: ``tiny`` (``clip-tiny`` towers: ViT 64 px/8, 2 × 64; BERT 2 × 64; the CPU
default) and ``base`` (``clip-vit-b16`` towers: ViT-B/16 224 px, BERT-base; the CUDA default). On CPU the targets
are recorded as GPU targets (``met`` is left empty).
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from ..errors import SpecError
from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import (bench_world, engine_step, figure, interleaved_times, synced, to_device, torch_threads,
                     world_batches, world_captions)

#: size -> the ``clip`` spec whose towers (and embed dim, image size, tokenizer) all three models share
SIZES = {"tiny": "clip-tiny", "base": "clip-vit-b16"}
#: the LOUPE spec whose heads and losses run on those towers
LOUPE_SPEC = "loupe-tiny"
#: spec fields that define the backbone (copied from the CLIP spec into the LOUPE spec)
BACKBONE_KEYS = ("image_size", "embed_dim", "image_tower", "text_tower", "tokenizer", "projection", "temperature_init",
                 "max_logit_scale")
OPEN_CLIP_MISSING = "open_clip is not installed: pip install 'loupe-bench[openclip]' (train-throughput compares with it)"
#: the optimiser of all three loops (AdamW as in the tiny-cpu recipe)
OPTIM = {"name": "adamw", "lr": 2.0e-3, "weight_decay": 0.05, "betas": [0.9, 0.98], "eps": 1.0e-6}


class OpenClipMissing(SpecError):
    """open_clip_torch is not importable."""


def import_open_clip():
    try:
        import open_clip
    except ImportError:
        raise OpenClipMissing(OPEN_CLIP_MISSING) from None
    return open_clip


# -- the open_clip twin ---------------------------------------------------------------------------------------------
def _timm_entrypoint(name: str, kwargs: Dict[str, Any]) -> str:
    """Register ``timm.create_model(name, **kwargs)`` as a timm entrypoint (idempotent); return the registered name.

    open_clip's ``TimmModel`` calls ``timm.create_model(timm_model_name, pretrained=...)`` without architecture
    kwargs, so a tower with custom sizes (ours: ``img_size``, ``patch_size``, ``depth`` ...) is reached by a name."""
    import timm
    from timm.models import register_model

    key = hashlib.sha1(json.dumps([name, kwargs], sort_keys=True).encode()).hexdigest()[:12]
    reg = f"loupe_bench_{name}_{key}".replace("-", "_").replace(".", "_")
    if not timm.is_model(reg):
        def entry(pretrained: bool = False, **extra: Any):
            extra = {k: v for k, v in extra.items() if v is not None and k not in ("pretrained_cfg",
                                                                                  "pretrained_cfg_overlay")}
            return timm.create_model(name, pretrained=False, **{**kwargs, **extra})

        entry.__name__ = reg
        entry.__qualname__ = reg
        register_model(entry)
    return reg


def open_clip_twin(model) -> torch.nn.Module:
    """An ``open_clip.CustomTextCLIP`` with our CLIP's backbone and weights (see the module docstring)."""
    open_clip = import_open_clip()
    icfg = model.image_tower.cfg
    if getattr(model.image_tower, "cfg", None) is None or type(model.image_tower).__name__ != "TimmImageTower" or \
            type(model.text_tower).__name__ != "BertTextTower":
        raise SpecError("train-throughput: the open_clip twin needs a timm image tower and a BERT text tower")
    pooler = {"mean": "mean_pooler", "cls": "cls_last_hidden_state_pooler"}.get(getattr(model.text_tower.cfg, "pool",
                                                                                      "cls"))
    if pooler is None:
        raise SpecError(f"train-throughput: text pooling {model.text_tower.cfg.pool!r} has no open_clip pooler")
    if model.image_proj.bias is not None or model.text_proj.bias is not None:
        raise SpecError("train-throughput: the open_clip twin needs bias-free projections")
    timm_name = _timm_entrypoint(icfg.name, dict(icfg.kwargs))
    with tempfile.TemporaryDirectory(prefix="loupe-bench-bert-") as d:
        model.text_tower.model.config.save_pretrained(d)
        twin = open_clip.CustomTextCLIP(
            embed_dim=int(model.image_proj.out_features),
            vision_cfg={"timm_model_name": timm_name, "timm_model_pretrained": False, "timm_pool": "",
                        "timm_proj": "linear", "timm_proj_bias": False, "image_size": int(model.image_size)},
            text_cfg={"hf_model_name": d, "hf_model_pretrained": False, "hf_pooler_type": pooler,
                      "hf_proj_type": "linear"},
            init_logit_scale=float(model.logit_scale.detach()), output_dict=True)
    ours = {}
    ours.update({f"visual.trunk.{k}": v for k, v in model.image_tower.model.state_dict().items()})
    ours["visual.head.proj.weight"] = model.image_proj.weight
    ours.update({f"text.transformer.{k}": v for k, v in model.text_tower.model.state_dict().items()})
    ours["text.proj.weight"] = model.text_proj.weight
    ours["logit_scale"] = model.logit_scale
    twin.load_state_dict({k: v.detach().clone() for k, v in ours.items()}, strict=True)
    return twin


def open_clip_text(model, batch: Dict[str, Any]) -> torch.Tensor:
    """Token ids as open_clip's HF text tower reads them: its attention mask is ``ids != pad_token_id``."""
    pad = int(model.text_tower.model.config.pad_token_id)
    ids = batch["input_ids"].clone()
    ids[~batch["attention_mask"].bool()] = pad
    return ids


# -- the timed steps ------------------------------------------------------------------------------------------------
def _optimizer(model: torch.nn.Module):
    from ..train.optim import create_optimizer
    from ..train.recipe import OptimConfig

    return create_optimizer(model, OptimConfig(**OPTIM))


def ours_step(model, batch, autocast, opt=None, logs: Optional[Dict[str, Any]] = None) -> Callable[[], Any]:
    """One training-engine step of a loupe-bench model (:func:`~loupe_bench.bench.common.engine_step`:
    ``forward_backward`` + AdamW + the logit-scale clamp), returning the loss (the step's loss logs land in ``logs``
    when given)."""
    opt = opt if opt is not None else _optimizer(model)
    model.train()
    step = engine_step(model, batch, autocast, opt, logs=logs)
    return lambda: step().total


def open_clip_step(twin, images, texts, autocast) -> Callable[[], float]:
    """One step of open_clip's training loop: forward + ``ClipLoss`` under autocast, backward, AdamW, clamp."""
    open_clip = import_open_clip()
    loss_fn = open_clip.ClipLoss()
    opt = _optimizer(twin)
    twin.train()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = twin(images, texts)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        opt.step()
        with torch.no_grad():
            twin.logit_scale.clamp_(0, math.log(100))
        return loss.detach()

    return step


@torch.no_grad()
def twin_difference(model, twin, batch, texts) -> float:
    """Largest |ours − open_clip| over the L2-normalised pooled image and text embeddings, eval mode (no dropout)."""
    model.eval(), twin.eval()
    try:
        emb = model.embed(batch)
        out = twin(batch["pixels"], texts)
        return max(float((emb["image_pooled"] - out["image_features"]).abs().max()),
                   float((emb["text_pooled"] - out["text_features"]).abs().max()))
    finally:
        model.train(), twin.train()


def loupe_spec(clip_spec: Dict[str, Any], warmup_steps: int) -> Dict[str, Any]:
    """``loupe-tiny``'s heads and losses on the backbone of ``clip_spec``, every term on from step 0."""
    from ..models import get_spec

    spec = get_spec(LOUPE_SPEC)
    for key in BACKBONE_KEYS:
        if key in clip_spec:
            spec[key] = json.loads(json.dumps(clip_spec[key]))
    spec["name"] = f"loupe-on-{clip_spec['name']}"
    spec["loupe"]["neural"]["warmup_steps"] = int(warmup_steps)
    spec["loupe"]["fsa"].update(start_step=0, ramp_steps=0)
    return spec


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@BENCHMARKS.register("train-throughput",
                     help="training images/s: our CLIP vs open_clip on the same backbone (target 0.9x on GPU), "
                          "LOUPE vs our CLIP (0.75x)")
def train_throughput(repeat: int = 3, device: str = "cpu", size: Optional[str] = None,
                     batch_size: Optional[int] = None, rounds: Optional[int] = None, settle_steps: int = 40,
                     warmup_steps: int = 10, seed: int = 0, threads: Optional[int] = 1,
                     world: Optional[str] = None) -> Dict[str, Any]:
    """Images/s of our CLIP, open_clip (same backbone) and LOUPE, measured side by side (see the module docstring).

    Args:
        size: ``tiny`` or ``base`` (default: ``base`` on CUDA, ``tiny`` on CPU).
        batch_size: per-step batch (default 32 tiny, 128 base).
        rounds: timed rounds (default ``max(15, 5 * repeat)``).
        settle_steps: LOUPE steps on the batch stream before its timing (past ``warmup_steps``).
        threads: torch CPU threads (CPU only; None leaves the setting).
        world: a synthetic world folder (default: the tiny world generated into a temporary folder).
    """
    try:
        import_open_clip()
    except OpenClipMissing as exc:
        return {"name": "train-throughput", "skipped": str(exc), "figures": [], "environment": environment_info(device)}
    from ..train.engine import autocast_factory

    cuda = str(device).startswith("cuda")
    size = size or ("base" if cuda else "tiny")
    if size not in SIZES:
        raise SpecError(f"train-throughput: size must be one of {', '.join(SIZES)}, got {size!r}")
    batch_size = int(batch_size or (128 if size == "base" else 32))
    rounds = int(rounds or max(15, 5 * repeat))
    precision = "bf16" if cuda else "fp32"
    autocast = autocast_factory(precision, torch.device(device))
    with torch_threads(threads, device) as n_threads:
        world_path = bench_world(world, seed)
        ours, twin, loupe = _models(SIZES[size], world_path, warmup_steps, seed, device)
        stream = [to_device(b, device) for b in world_batches(loupe, settle_steps + 1, batch_size, seed, world_path)]
        run = _timed_loops(ours, twin, loupe, stream, autocast, rounds, device)
        times = {k: statistics.median(v) for k, v in run["samples"].items()}
        ips = {k: batch_size / t for k, t in times.items()}
        return {
            "name": "train-throughput", "figures": _throughput_figures(ips, run["samples"], cuda), "size": size,
            "clip_spec": SIZES[size], "loupe_spec": f"{LOUPE_SPEC} heads on {SIZES[size]} towers",
            "batch_size": batch_size, "precision": precision, "optimizer": dict(OPTIM), "rounds": rounds,
            "threads": n_threads, "step_time_s": times, "images_per_s": ips, "step_time_samples_s": run["samples"],
            "params": {"ours": n_params(ours), "open_clip": n_params(twin), "loupe": n_params(loupe)},
            "same_function_max_abs_diff": run["same_function"], "first_loss": run["first_loss"],
            "loupe_settle_steps": settle_steps, "loupe_warmup_steps": warmup_steps, "loupe_settle_s": run["settle_s"],
            "loupe_logs": {k: float(v) for k, v in run["loupe_logs"].items() if isinstance(v, (int, float))},
            "targets_apply_to": "cuda", "environment": environment_info(device),
        }


def _models(clip_name: str, world_path, warmup_steps: int, seed: int, device: str):
    """Our CLIP of spec ``clip_name`` (tokenizer trained on the world's captions), its open_clip twin and LOUPE on the
    same towers (:func:`loupe_spec`), on ``device``."""
    from ..models import create_model, get_spec

    captions = world_captions(world_path)
    clip_spec = get_spec(clip_name)
    ours = create_model(clip_spec, tokenizer_corpus=captions, seed=seed).to(device)
    twin = open_clip_twin(ours).to(device)
    loupe = create_model(loupe_spec(clip_spec, warmup_steps), tokenizer_corpus=captions, seed=seed).to(device)
    return ours, twin, loupe


def _timed_loops(ours, twin, loupe, stream: List[Dict[str, Any]], autocast, rounds: int, device: str) -> Dict[str, Any]:
    """The three training loops on the stream's last batch: LOUPE first trained on the rest of the stream (past its
    neural-Shapley warm-up), two untimed steps of each (allocator, autotuning, lazy init; the first one's loss kept),
    then ``rounds`` interleaved timed rounds. Returns ``samples`` (seconds per round of each loop), ``first_loss``,
    ``same_function`` (:func:`twin_difference`), ``settle_s`` and ``loupe_logs`` (LOUPE's last loss logs)."""
    batch = stream[-1]  # the same tokenizer (same captions): one batch serves all three models
    texts = open_clip_text(ours, batch)
    same_function = twin_difference(ours, twin, batch, texts)
    steps = {"ours": ours_step(ours, batch, autocast),
             "open_clip": open_clip_step(twin, batch["pixels"], texts, autocast)}
    # LOUPE: past its neural-Shapley warm-up on the batch stream, then timed on the shared batch
    opt = _optimizer(loupe)
    t0 = time.perf_counter()
    for b in stream[:-1]:
        ours_step(loupe, b, autocast, opt)()
    settle_s = time.perf_counter() - t0
    loupe_logs: Dict[str, Any] = {}
    steps["loupe"] = ours_step(loupe, batch, autocast, opt, loupe_logs)
    first_loss = {}
    for k, fn in steps.items():  # two untimed steps each (allocator, autotuning, lazy init)
        first_loss[k] = float(fn())
        fn()
    samples = interleaved_times({k: synced(fn, device) for k, fn in steps.items()}, rounds, warmup_rounds=0)
    return {"samples": samples, "first_loss": first_loss, "same_function": same_function, "settle_s": settle_s,
            "loupe_logs": loupe_logs}


def _throughput_figures(ips: Dict[str, float], samples: Dict[str, List[float]], cuda: bool) -> List[Dict[str, Any]]:
    """Images/s of each loop, ``ours / open_clip`` (target ≥ 0.9) and ``LOUPE / ours`` (≥ 0.75), GPU targets
    (``met`` left empty off CUDA); beside them the median over rounds of the within-round ratio
    ``t_open_clip / t_ours`` (both steps timed back to back: robust to load drift)."""
    ratio_oc = ips["ours"] / ips["open_clip"]
    ratio_loupe = ips["loupe"] / ips["ours"]
    paired_oc = statistics.median(o / u for o, u in zip(samples["open_clip"], samples["ours"]))
    where = "" if cuda else " (GPU target)"
    return [
        figure("ours (loupe-bench CLIP) images/s", ips["ours"], "img/s"),
        figure("open_clip (same backbone) images/s", ips["open_clip"], "img/s"),
        figure("LOUPE (neural routing, after warm-up) images/s", ips["loupe"], "img/s"),
        figure("ours / open_clip", ratio_oc, "x", ">= 0.9" + where, (ratio_oc >= 0.9) if cuda else None),
        figure("ours / open_clip, per-round pairs (median)", paired_oc, "x"),
        figure("LOUPE / ours", ratio_loupe, "x", ">= 0.75" + where, (ratio_loupe >= 0.75) if cuda else None),
    ]
