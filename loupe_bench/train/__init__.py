"""The training engine: one loop for every model, YAML recipes, torchrun DDP / FSDP2, exact checkpoint/resume.

Entry points: :func:`train` (``loupe_bench.train.engine``), :func:`load_recipe`, :data:`RECIPES` (shipped recipe
name -> file), :func:`list_recipes` (for ``loupe-bench list recipes``). ``torchrun -m loupe_bench.train ...`` runs
the CLI under torchrun.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

from ..registry import Registry
from ..specs import spec_index
from .recipe import Recipe, load_recipe, recipe_from_dict, shipped_recipes

#: shipped recipe name -> YAML path
RECIPES = Registry("recipe")
for _name, _path in sorted(spec_index("recipes").items()):
    RECIPES.add(_name, _path)


def list_recipes() -> List[Tuple[str, str]]:
    """``(name, description)`` of every shipped recipe."""
    return shipped_recipes()


def train(model: Any, data: Any, recipe: Union[str, Path, Recipe], out: Union[str, Path],
          resume: Optional[Union[str, Path]] = None, seed: Optional[int] = None, *,
          overrides: Optional[Mapping[str, Any]] = None, stop_after: Optional[int] = None,
          allow_remote_shards: bool = False, allow_changed: Sequence[str] = (), on_bad_sample: str = "error",
          on_step: Optional[Callable[[int, int, float], None]] = None) -> Path:
    """Train ``model`` on ``data`` with ``recipe``; returns the run directory ``out`` (a model directory when done).

    The engine (:func:`loupe_bench.train.engine.train`) is imported on the first call: torch is heavy.

    Args:
        model: a built model, or a model spec (name / mapping) to create — a from-scratch tokenizer is then trained
            on the training captions.
        data: a data path (synthetic-world folder, Karpathy JSON, CSV, shards, HF folder) or a ``TrainSource``.
        recipe: shipped recipe name, YAML path or ``Recipe``.
        out: run directory.
        resume: ``"latest"`` (newest checkpoint of ``out``) or a checkpoint folder.
        seed: overrides the recipe's seed.
        overrides: dotted recipe overrides, e.g. ``{"steps": 10, "optim.lr": 1e-3}``.
        stop_after: stop (without the final save) after this optimiser step — for tests of interrupted runs.
        allow_remote_shards: open webdataset shard names that are URLs / ``pipe:`` commands (off: refused).
        allow_changed: recipe fields a resume may change beyond the safe ones (see the engine's ``train``).
        on_bad_sample: ``error`` stops at the first bad training image (checked before step 1), ``skip`` counts
            and leaves bad ones out.
        on_step: called on rank 0 after every optimiser step as ``on_step(step, total_steps, loss)``.
    """
    from .engine import train as _train

    return _train(model, data, recipe, out, resume, seed, overrides=overrides, stop_after=stop_after,
                  allow_remote_shards=allow_remote_shards, allow_changed=allow_changed, on_bad_sample=on_bad_sample, on_step=on_step)


__all__ = ["RECIPES", "Recipe", "load_recipe", "recipe_from_dict", "list_recipes", "train"]
