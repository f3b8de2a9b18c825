"""The plans of ``loupe-bench reproduce synthetic``: :class:`SyntheticPlan`, the registry :data:`PLANS` of named
plans (``default``, ``quick``, ``gpu``: each a function ``() -> SyntheticPlan``) and the task list a plan evaluates.

Add a plan: one function returning a :class:`SyntheticPlan`, registered with ``@PLANS.register("NAME", help=...)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import SpecError
from ..registry import Registry

MAIN_MODELS = ("clip-tiny", "filip-tiny", "loupe-tiny")
#: box-free fine-grained peers trained with the same recipe: in the default plan's every table beside the main models
PEERS = ("sparc-tiny",)
#: further peers a user adds with ``reproduce synthetic --set models+=NAME`` (the GPU plan trains them)
OPTIONAL_PEERS = ("siglip-tiny",)
ABLATIONS = ("loupe-no-tsa", "loupe-no-fsa", "loupe-sampling")
#: upper bounds trained with the same recipe that are NOT LOUPE (they use box labels), evaluated like the ablations
BOUNDS = ("loupe-oracle-regions",)


@dataclass
class SyntheticPlan:
    """What ``reproduce synthetic`` runs. ``quick`` plans differ only in size/steps, never in protocol per model.

    Attributes:
        world_size: synthetic world size (``tiny``/``small``/``medium``).
        image_size: world image side in pixels.
        world_seed: seed of the world generator (the world is shared by every training seed).
        models: model specs trained and evaluated (same recipe, same seed).
        recipe: the one training recipe.
        recipe_overrides: dotted overrides applied to the recipe for every model alike.
        tasks: task spec names evaluated (default: every shipped task on the synthetic world). The task specs are
            evaluated unchanged except for ``task_overrides``.
        task_overrides: dotted overrides applied to every task spec where the key exists (e.g. fewer bootstrap
            replicates: ``{"bootstrap.n_resamples": 200, "options.bootstrap_resamples": 20}``). They enter the
            protocol fingerprint, so results of plans with different overrides are never merged or gated together.
        model_task_types: per model, the task types it is evaluated on (models not listed: every task). The
            default plan evaluates the LOUPE ablations on the region and alignment tasks (what the ablated terms
            act on: retrieval, classification, detection, grounding), not on captioning and the linear probe.
        workers: processes that train / evaluate different models at once (``1``: one after the other in this
            process). Tiny models use two cores far better as two single-threaded jobs than as one two-threaded
            job (measured on 2 cores: training 1.5x, evaluation 1.7x the throughput).
        worker_threads: torch threads of each job when ``workers > 1`` (recorded in each run's recipe, so a plan
            gives the same numbers on any machine).
        quick: the plan leaves out the task types in :data:`NOT_IN_QUICK`.
        seeds: number of training seeds the CLI runs when ``--seeds`` is not given (seeds ``0 .. seeds-1``).
        model_overrides: dotted overrides applied to every model spec where the key exists, e.g.
            ``{"image_tower.kwargs.depth": 1}``; ``"MODEL:dotted.key"`` applies to that model only and creates the
            key (as ``task_overrides``; see :func:`~loupe_bench.pipeline.overrides.model_spec_mapping`). Empty: the
            shipped specs are trained by name. The runs keep the spec's name: a plan with overrides is a different
            protocol (the manifest records them).
        eval_device: device of the evaluation jobs (``cpu``, ``cuda``, ``auto``); training uses the recipe's.
        world_workers: processes rendering the world (``None``: :func:`~loupe_bench.data.synth.generate_world`'s
            default, up to 4); the world does not depend on it.
    """

    world_size: str = "small"
    image_size: int = 64
    world_seed: int = 0
    models: List[str] = field(default_factory=lambda: list(MAIN_MODELS + PEERS + ABLATIONS + BOUNDS))
    recipe: str = "tiny-cpu"
    recipe_overrides: Dict[str, Any] = field(default_factory=dict)
    tasks: Optional[List[str]] = None
    task_overrides: Dict[str, Any] = field(default_factory=dict)
    model_task_types: Dict[str, List[str]] = field(default_factory=dict)
    workers: int = 2
    worker_threads: int = 1
    quick: bool = False
    seeds: int = 1
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    eval_device: str = "cpu"
    world_workers: Optional[int] = None


#: task types the LOUPE ablations are evaluated on in the default plan
ABLATION_TASK_TYPES = ["retrieval", "classification", "detection", "grounding", "phrase-grounding", "token-interaction",
                       "caption-selection", "two-by-two", "region-classification"]


def default_plan(quick: bool = False) -> SyntheticPlan:
    """The default plan (all models incl. LOUPE ablations) or the quick CI plan (main models, fewer steps)."""
    if quick:
        return SyntheticPlan(models=list(MAIN_MODELS), recipe_overrides=dict(QUICK_OVERRIDES), quick=True,
                             task_overrides=dict(QUICK_TASK_OVERRIDES))
    return SyntheticPlan(task_overrides=dict(DEFAULT_TASK_OVERRIDES),
                         model_task_types={m: list(ABLATION_TASK_TYPES) for m in ABLATIONS + BOUNDS})


# quick variant of the recipe: the same for every model (sized so --quick stays within 60 s on 2 cores: `bench demo`)
QUICK_OVERRIDES: Dict[str, Any] = {"steps": 100, "optim.warmup_steps": 10, "checkpoint.every": 0}
_CAPTION_QUICK_METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"]
# Task overrides are recorded in the task spec, hence in the protocol fingerprint: quick and default results are
# never merged or gated against each other. Detection re-accumulates one COCOeval matching per replicate (cheap);
# corpus BLEU / CIDEr-D are recomputed by pycocoevalcap per replicate (~0.7 s each on the small world), so the
# reproduction leaves their intervals out (ROUGE-L keeps its per-image bootstrap). --quick also shortens the
# caption head's training and leaves out METEOR, whose JVM spends ~11 s loading its paraphrase tables.
DEFAULT_TASK_OVERRIDES: Dict[str, Any] = {"synthetic-captioning:options.bootstrap_resamples": 0}
QUICK_TASK_OVERRIDES: Dict[str, Any] = {
    "bootstrap.n_resamples": 200,
    "options.bootstrap_resamples": 50,
    "options.head.steps": 100,
    "synthetic-captioning:options.bootstrap_resamples": 0,
    "synthetic-captioning:metrics": _CAPTION_QUICK_METRICS,
    "synthetic-captioning:options.decoding": "greedy",
    "synthetic-captioning:options.use_java": False,
    # grounding skips the val split (the model-selection split); test and the compositional split stay
    **{f"synthetic-{p}:splits": ["test", "comptest"] for p in (
        "grounding-grid", "grounding-gt-boxes", "grounding-native", "grounding-head-phrase", "grounding-native-scorer",
        "phrase-grounding-gt-boxes", "phrase-grounding-grid", "phrase-grounding-native")},
}


#: the named plans of ``reproduce synthetic --plan NAME``: each entry is a function ``() -> SyntheticPlan``
PLANS = Registry("reproduce plan")

PLANS.register("default", help="CLIP, FILIP, LOUPE, SPARC, LOUPE's ablations and the oracle-regions bound, tiny "
               "towers, small world, tiny-cpu (2 CPU cores, minutes; --set models+=siglip-tiny adds SigLIP)")(lambda: default_plan(False))
PLANS.register("quick", help="CI variant: CLIP, FILIP, LOUPE, 100 steps, lighter task options "
               "(under a minute on 2 quiet cores)")(lambda: default_plan(True))

#: models of the GPU plan: one tower size (ViT-S/16 at 128 px + BERT 4 x 384) for every compared model
GPU_MAIN_MODELS = ("clip-small", "filip-small", "loupe-small", "sparc-small", "siglip-small")
GPU_ABLATIONS = ("loupe-small-no-tsa", "loupe-small-no-fsa", "loupe-small-sampling", "loupe-small-oracle-regions")
#: task options of the GPU plan: fewer bootstrap replicates per result (the tables' intervals are over the three
#: seeds), grounding without the val split (the model-selection split; test and comptest stay), captions without
#: the JVM metrics (METEOR/SPICE: a JVM per model, absent on most GPU hosts). The medium world's evaluation is
#: CPU-bound (annotation parsing, matching, bootstrap): see :func:`gpu_plan`.
GPU_TASK_OVERRIDES: Dict[str, Any] = {
    "bootstrap.n_resamples": 200,
    "options.bootstrap_resamples": 50,
    "synthetic-captioning:options.bootstrap_resamples": 0,
    "synthetic-captioning:metrics": _CAPTION_QUICK_METRICS,
    "synthetic-captioning:options.use_java": False,
    **{k: v for k, v in QUICK_TASK_OVERRIDES.items() if k.endswith(":splits")},
}


@PLANS.register("gpu", help="CLIP, FILIP, LOUPE, SPARC, SigLIP, LOUPE's ablations and the oracle-regions bound "
                "with ViT-S/16 towers "
                "at 128 px on the medium world, bf16, 3 seeds (one H200, <= 10 min estimated; not yet run)")
def gpu_plan() -> SyntheticPlan:
    """The GPU plan: the question at a scale where it can show, sized for <= 10 minutes of one H200-class GPU.

    What: the ``medium`` world (20 000 train / 1 000 val / 1 000 test / 1 000 comptest images) at 128 px; the
    ``*-small`` specs (:data:`GPU_MAIN_MODELS` — CLIP, FILIP, LOUPE, SPARC, SigLIP — and :data:`GPU_ABLATIONS`:
    ViT-S/16 image tower, 12 blocks x 384, 6 heads,
    mean-pooled, no class token; BERT 4 x 384 text tower; 256-d; otherwise the tiny specs unchanged, ``tsa.
    target_images`` 4 instead of 2) with the ``gpu-bf16`` recipe (bf16 autocast, batch 256, 300 steps, AdamW 1e-3),
    three seeds, every task of the default plan (ablations and the oracle bound on the region and alignment task
    types, as the default plan's ablations), evaluation on CUDA.

    Why 128 px: ViT-S/16 at 128 px has an 8 x 8 patch grid, the grid of the tiny specs: the token-level game keeps its
    64 players and every patch-unit setting (box size, jitter, top-k, NMS) means the same as in the tuned tiny
    specs. 224 px would give 196 players (3x the tokens, ~3.3x the FLOPs per image, noisier Monte-Carlo contexts).
    Why 300 steps: the LOUPE specs' schedules are in steps (box_start 60, FSA start 60 + ramp 60, neural warm-up
    20); at tiny-cpu's 300 steps they mean the same. 300 x 256 = 76.8k pairs, ~3.8 epochs of the medium world.

    Time estimate (arithmetic; NOT measured on a GPU yet):

    * FLOPs per image, forward: per ViT block ``24 T W^2 + 4 T^2 W`` with T = 64 tokens, W = 384:
      226.5 M + 6.3 M = 232.8 M; x 12 blocks + patch embedding (37.7 M) = 2.83 GFLOP. Text, per BERT layer with L =
      32 tokens: ``24 L W^2 + 4 L^2 W`` = 114.8 M; x 4 = 0.46 GFLOP. Training ~3x forward: 9.9 GFLOP per pair,
      2.53 TFLOP per step at batch 256, 0.76 PFLOP per 300-step CLIP run: 3 s at 250 TFLOP/s (25 % of the H200's
      ~990 TFLOP/s dense bf16). Compute is not the limit; kernel dispatch is.
    * Dispatch: ``clip-tiny`` steps take 14 ms on an H200 with 2 + 2 blocks (measured, ``bench train-step``), i.e.
      launch-bound; scaled by blocks (16 vs 4) a ``clip-small`` step is ~50 ms, FILIP ~55 ms.
    * ℒ_TSA's tower game (``models/masked_game.py``): the masks of one step are grouped by kept-patch count
      (1..64), one tower call per group: <= 64 calls x 12 blocks ~ 0.1 ms dispatch each = ~77 ms per step,
      independent of the number of masks. Masks: 4 images x 24 coalitions x 8 contexts x 2 (coalition value) =
      1 536 per warm-up step (~half the tokens each: 2.2 TFLOP, ~9 ms), ~400 after warm-up (routing <= 25 %).
      Hence ``tsa.target_images`` 4: twice the tiny specs' coalitions for ~5 ms more; ``tsa.last_blocks`` stays
      null (the whole tower re-encodes the masked image, the tiny specs' game). LOUPE step ~50 + 77 + 10 (ℒ_FSA,
      ℒ_NSI, region head) = ~135 ms; ``-no-tsa`` ~60, ``-no-fsa`` ~125, ``-sampling`` ~140, oracle ~135.
    * Training: per seed 50 + 55 + 135 + 60 + 125 + 140 + 135 = 700 ms per step for CLIP, FILIP, LOUPE and its
      four variants, plus SPARC ~55 (a CLIP step and one grouping of patches per caption token) and SigLIP ~50
      (a CLIP step): 805 ms, x 300 steps x 3 seeds = 725 s one run after another, with the GPU busy ~15 % of it.
      ``workers`` 4: four runs at once (processes on the one GPU) interleave their kernels; bound by host dispatch
      on 4 cores: ~725 / 4 = ~180 s (~3 min; ~12 min with ``--workers 1``). Data: 256 JPEG decodes + crops per step (~0.1 CPU s) on 3 loader
      workers per run; 4 x (1 + 3) processes on the 16-core host.
    * World: 23 000 images; measured on the 2-core box: ~16 ms per image rendered in a worker, ~5 ms per image in
      the writing process (files, JSON): ~2 min with 8 workers (bound by the writer), once (reused when
      ``world/world.json`` matches).
    * Evaluation (CPU-bound): measured on the 2-core box, one thread, small world, all 16 tasks of one tiny model:
      222 s (captioning 97 s, grounding/phrase grounding 82 s). On the medium world the grounding tasks re-parse
      the whole world's refer annotations per task and split (~1.7 s on the small world, x 9.2 on the medium one)
      and match 3-5x more queries: ~25 CPU s per grounding task-split, x 12 task-splits (val dropped) x 21
      model-seeds = ~6 300 CPU s: ~7 min on 16 cores (``workers`` 4 jobs at a time: ~26 min) if every task parsed
      its data afresh. The tasks of one evaluation process now share one parse per data set and split, and the
      query-text features (tasks/common.py ``load_records``, ``encode_texts``: on the small world's eight grounding
      protocols 21 s -> 7 s of parsing, 17 s -> 10 s of text encoding, identical results), which should bring it
      to ~2-3 min; **this stage is the risk to the budget**. A GPU host's cores are likely faster than the 2-core
      box's.
    * Total: world ~2 + train ~3 + eval ~3-7 + report ~0.5 min: 9-13 min on a first run; the GPU run itself
      will say (``reproduce.json`` timings per stage and run).
    """
    return SyntheticPlan(
        world_size="medium", image_size=128, models=list(GPU_MAIN_MODELS + GPU_ABLATIONS), recipe="gpu-bf16",
        task_overrides=dict(GPU_TASK_OVERRIDES),
        model_task_types={m: list(ABLATION_TASK_TYPES) for m in GPU_ABLATIONS},
        workers=4, worker_threads=2, seeds=3, eval_device="cuda", world_workers=8)


def plan_with(plan: SyntheticPlan, assignments: Dict[str, Any], where: str = "--set") -> SyntheticPlan:
    """``plan`` with fields replaced: ``{"FIELD": value}`` sets a field, ``{"FIELD+": value}`` appends to a list
    field (a name or a list of names), e.g. ``reproduce synthetic --set models+=siglip-tiny``. Unknown fields and
    values of the wrong type are a :class:`SpecError` naming the field; ``model_task_types`` and the override maps
    stay as the plan has them unless set."""
    from dataclasses import asdict, fields

    from ..specs import from_mapping

    known = {f.name for f in fields(SyntheticPlan)}
    data = asdict(plan)
    for key, value in assignments.items():
        name, append = (key[:-1], True) if key.endswith("+") else (key, False)
        if name not in known:
            raise SpecError(f"{where} {key}: unknown plan field; known: {', '.join(sorted(known))}")
        if append:
            if not isinstance(data[name], list):
                raise SpecError(f"{where} {key}: {name} is not a list; use {name}=VALUE")
            extra = value if isinstance(value, list) else [value]
            data[name] = data[name] + [v for v in extra if v not in data[name]]
        else:
            data[name] = value
    out = from_mapping(SyntheticPlan, data, where)
    _check_plan(out, where)
    return out


def _check_plan(plan: SyntheticPlan, where: str) -> None:
    """Counts in range and every model a shipped spec (resolved now: a typo fails before the world is made)."""
    from ..models.factory import get_spec

    for name, lo, hi in (("workers", 1, 64), ("worker_threads", 1, 256), ("seeds", 1, 10), ("image_size", 16, 1024)):
        value = getattr(plan, name)
        if not lo <= value <= hi:
            raise SpecError(f"{where}: field '{name}': must be in {lo}..{hi}, got {value}")
    if not plan.models:
        raise SpecError(f"{where}: field 'models': must name at least one model")
    for model in plan.models:
        get_spec(model)


def get_plan(name: str) -> SyntheticPlan:
    """A fresh :class:`SyntheticPlan` of the registered plan ``name`` (:data:`PLANS`); unknown: SpecError."""
    return PLANS.get(name)()


#: synthetic task types the reproduction plans leave out until they are chosen for them (the token-interaction
#: probe costs ~20 s of game evaluations per model on one thread; see tasks/README.md)
#: task types only the default plan runs (the token-level probe re-encodes ~10^4 masked images per model)
NOT_IN_QUICK: Tuple[str, ...] = ("token-interaction",)


def synthetic_tasks(quick: bool = False) -> List[str]:
    """Every shipped task spec whose dataset is the synthetic world (with ``quick``, types in
    :data:`NOT_IN_QUICK` left out)."""
    from ..specs import load_yaml, spec_index

    out = []
    for name, f in spec_index("tasks").items():
        data = load_yaml(f)
        if quick and str(data.get("type", "")) in NOT_IN_QUICK:
            continue
        ds = data.get("dataset") or {}
        dataset = ds.get("name") if isinstance(ds, dict) else ds
        if str(dataset).startswith("synthetic"):
            out.append(name)
    if not out:
        raise SpecError("no synthetic task specs found (tasks/*.yaml with dataset.name: synthetic)")
    return sorted(out)
