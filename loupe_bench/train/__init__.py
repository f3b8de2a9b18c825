"""The training engine: one loop for every model, YAML recipes, torchrun DDP / FSDP2, exact checkpoint/resume.

The entry point is :func:`~loupe_bench.train.engine.train_model` (re-exported as ``loupe_bench.train_model``;
``loupe-bench train`` calls it); recipes are :func:`load_recipe` / :func:`recipe_from_dict` and
:func:`list_recipes` (for ``loupe-bench list recipes``). ``torchrun -m loupe_bench.train ...`` runs the CLI under
torchrun. Importing this package is light (no torch): the engine is imported by whoever trains.
"""
from __future__ import annotations

from .recipe import Recipe, list_recipes, load_recipe, recipe_from_dict

__all__ = ["Recipe", "list_recipes", "load_recipe", "recipe_from_dict"]
