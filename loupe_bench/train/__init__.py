"""The training engine: one loop for every model, YAML recipes, torchrun DDP / FSDP2, exact checkpoint/resume.

Entry points: :func:`train` (``loupe_bench.train.engine``), :func:`load_recipe`, :data:`RECIPES` (shipped recipe
name -> file), :func:`list_recipes` (for ``loupe-bench list recipes``). ``torchrun -m loupe_bench.train ...`` runs
the CLI under torchrun.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from ..registry import Registry
from .recipe import RECIPE_DIR, Recipe, load_recipe, recipe_from_dict, shipped_recipes

#: shipped recipe name -> YAML path
RECIPES = Registry("recipe")
for _path in sorted(RECIPE_DIR.glob("*.yaml")):
    RECIPES.add(_path.stem, _path)


def list_recipes() -> List[Tuple[str, str]]:
    """``(name, description)`` of every shipped recipe."""
    return shipped_recipes()


def train(model: Any, data: Any, recipe: Union[str, Path, Recipe], out: Union[str, Path],
          resume: Optional[Union[str, Path]] = None, seed: Optional[int] = None, *,
          overrides: Optional[Mapping[str, Any]] = None, stop_after: Optional[int] = None,
          allow_remote_shards: bool = False, allow_changed: Sequence[str] = (), on_bad_sample: str = "error") -> Path:
    """Train ``model`` on ``data`` with ``recipe`` into the run directory ``out``; arguments as
    :func:`loupe_bench.train.engine.train` (imported lazily: torch is heavy)."""
    from .engine import train as _train

    return _train(model, data, recipe, out, resume, seed, overrides=overrides, stop_after=stop_after,
                  allow_remote_shards=allow_remote_shards, allow_changed=allow_changed, on_bad_sample=on_bad_sample)


__all__ = ["RECIPES", "Recipe", "load_recipe", "recipe_from_dict", "list_recipes", "train"]
