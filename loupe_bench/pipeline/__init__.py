"""The end-to-end reproduction: ``loupe-bench reproduce synthetic`` and ``loupe-bench reproduce paper``.

The pipeline is the layer above training, evaluation and reporting: it generates the world (``data``), trains
(``train``), evaluates (``tasks``) and renders (``report``); none of those imports it.

* ``plan.py``: :class:`SyntheticPlan`, the registry :data:`PLANS` of named plans (``default``, ``quick``, ``gpu``),
  :func:`get_plan`, the task list of a plan (:func:`synthetic_tasks`).
* ``overrides.py``: the shipped model / task specs as mappings with a plan's dotted overrides applied.
* ``stages.py``: the registry :data:`STAGES` (``world`` -> ``train`` -> ``eval`` -> ``report``).
* ``jobs.py``: the worker jobs (one training run, one evaluation) and the runner of a stage's jobs.
* ``context.py``: a run's :class:`Context`, its :class:`StageLog`, the manifest ``reproduce.json``.
* ``progress.py``: the live per-worker progress rows (training: step, loss, ETA).
* ``synthetic.py``: :func:`reproduce_synthetic`; ``paper.py``: :func:`reproduce_paper`.

Importing this package is light (no torch): the heavy modules are imported by the stages when they run.
"""
from __future__ import annotations

from .context import Context, StageLog, announce_missing, missing_metrics, write_manifest
from .jobs import eval_job, run_jobs, train_job
from .overrides import apply_overrides, model_spec_mapping, plan_model, task_spec_mapping
from .paper import paper_task_specs, reproduce_paper
from .plan import (
    ABLATION_TASK_TYPES,
    ABLATIONS,
    BOUNDS,
    DEFAULT_TASK_OVERRIDES,
    GPU_ABLATIONS,
    GPU_MAIN_MODELS,
    GPU_TASK_OVERRIDES,
    MAIN_MODELS,
    OPTIONAL_PEERS,
    PEERS,
    NOT_IN_QUICK,
    PLANS,
    QUICK_OVERRIDES,
    QUICK_TASK_OVERRIDES,
    SyntheticPlan,
    default_plan,
    get_plan,
    gpu_plan,
    synthetic_tasks,
)
from .stages import (
    EVAL_GROUPS,
    STAGE_ORDER,
    STAGES,
    stage_eval,
    stage_report,
    stage_train,
    stage_world,
    training_cost,
)
from .synthetic import reproduce_synthetic

__all__ = [
    "ABLATION_TASK_TYPES", "ABLATIONS", "BOUNDS", "Context", "DEFAULT_TASK_OVERRIDES", "EVAL_GROUPS", "GPU_ABLATIONS",
    "GPU_MAIN_MODELS", "GPU_TASK_OVERRIDES", "MAIN_MODELS", "NOT_IN_QUICK", "OPTIONAL_PEERS", "PEERS", "PLANS", "QUICK_OVERRIDES",
    "QUICK_TASK_OVERRIDES", "STAGES", "STAGE_ORDER", "StageLog", "SyntheticPlan", "announce_missing",
    "apply_overrides", "default_plan", "eval_job", "get_plan", "gpu_plan", "missing_metrics", "model_spec_mapping",
    "paper_task_specs", "plan_model", "reproduce_paper", "reproduce_synthetic", "run_jobs", "stage_eval",
    "stage_report", "stage_train", "stage_world", "synthetic_tasks", "task_spec_mapping", "train_job",
    "training_cost", "write_manifest",
]
