"""Training recipes: one YAML file fixes everything that must be equal when CLIP, FILIP and LOUPE are compared
(data order, batch, steps, optimiser, schedule, precision, augmentation, seed).

A recipe is a tree of small config dataclasses. :func:`load_recipe` reads a shipped recipe by name
(``loupe_bench/train/recipes/<name>.yaml``) or any YAML path, rejects unknown fields and checks every value;
a bad value is a :class:`~loupe_bench.errors.SpecError` naming the file and the dotted field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from ..errors import SpecError
from ..specs import Check, check_dotted, from_mapping, load_named, resolve_spec, set_dotted, spec_dir, spec_index

#: folder of the shipped recipes (package data; the ``recipes`` kind of :mod:`loupe_bench.specs`)
RECIPE_DIR = spec_dir("recipes")

#: Largest seed: every generator the code seeds takes it (numpy's global seed needs ``< 2**32``).
MAX_SEED = 2**32 - 1
#: Largest step / epoch count: far beyond any real run, so step counters and schedules stay exact.
MAX_STEPS = 10**9
#: Largest count of loader workers, CPU threads and phrase slots: bounds what a value can make the process spawn or
#: allocate.
MAX_WORKERS = 256
MAX_THREADS = 4096
MAX_PHRASES = 1024


# -- checks -----------------------------------------------------------------------------------------------------------


def _number(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False, integer: bool = False,
            optional: bool = False) -> Check:
    def check(v: Any) -> Optional[str]:
        if v is None:
            return None if optional else "is required"
        kind = "an integer" if integer else "a number"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            return f"must be {kind}, got {v!r}"
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}, got {v!r}"
        if hi is not None and v > hi:
            return f"must be <= {hi}, got {v!r}"
        return None

    check.numeric = True  # type: ignore[attr-defined]  # values are read with yaml_number first
    return check


def _choice(*options: Any) -> Check:
    def check(v: Any) -> Optional[str]:
        return None if v in options else f"must be one of {', '.join(map(str, options))}; got {v!r}"

    return check


def _boolean(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def _string(optional: bool = False) -> Check:
    def check(v: Any) -> Optional[str]:
        if v is None and optional:
            return None
        return None if isinstance(v, str) and v else f"must be a non-empty string, got {v!r}"

    return check


def _pair(lo: float, hi: float) -> Check:
    def check(v: Any) -> Optional[str]:
        if v is None:
            return None
        if (not isinstance(v, (list, tuple)) or len(v) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            return f"must be a pair [a, b] of numbers, got {v!r}"
        if not (lo <= v[0] <= v[1] <= hi):
            return f"must satisfy {lo} <= a <= b <= {hi}, got {list(v)!r}"
        return None

    return check


def _strings(v: Any) -> Optional[str]:
    return None if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v) else \
        f"must be a list of strings, got {v!r}"


def _hflip(v: Any) -> Optional[str]:
    return None if v in (True, False, "auto") else f"must be true, false or auto; got {v!r}"


def _f(default: Any, check: Check, help: str = "") -> Any:
    """A dataclass field carrying its check and a one-line help text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"check": check, "help": help})
    return field(default=default, metadata={"check": check, "help": help})


# -- config sections --------------------------------------------------------------------------------------------------
@dataclass
class AugmentConfig:
    """Training-time image augmentation (evaluation always resizes + centre-crops)."""

    random_resized_crop: Optional[List[float]] = _f([0.8, 1.0], _pair(0.0, 1.0), "scale range; null: resize only")
    hflip: Union[bool, str] = _f("auto", _hflip, "auto: off when captions speak of left/right")


@dataclass
class DataConfig:
    """What is read and how it is batched.

    ``batch_size`` is the GLOBAL batch (all ranks, all micro-batches): ``batch_size = world_size * accum_freq *
    micro_batch``. An epoch's incomplete last global batch is dropped.
    """

    format: str = _f("auto", _string(), "data-layer loader name (auto: detect from the path)")
    split: str = _f("train", _string(), "split used for training")
    caption_policy: str = _f("random", _choice("random", "cycle", "first"),
                             "one caption per image per epoch: random (seeded by seed, epoch, image), cycle, first")
    batch_size: int = _f(64, _number(1, 2**31 - 1, integer=True), "global batch size")
    workers: int = _f(0, _number(0, MAX_WORKERS, integer=True), "DataLoader workers per rank")
    max_phrases: int = _f(8, _number(0, MAX_PHRASES, integer=True), "phrase slots per caption")
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    """Optimiser and schedule: cosine decay from ``lr`` to ``lr * min_lr_ratio`` after a linear warm-up."""

    name: str = _f("adamw", _choice("adamw", "lamb"), "adamw (torch) or lamb (timm.optim)")
    lr: float = _f(5e-4, _number(0.0, lo_open=True), "peak learning rate")
    weight_decay: float = _f(0.1, _number(0.0), "decoupled weight decay (not on norms/biases/temperature/embeddings)")
    betas: List[float] = _f([0.9, 0.98], _pair(0.0, 0.999999), "Adam betas")
    eps: float = _f(1e-6, _number(0.0, lo_open=True), "Adam epsilon")
    warmup_steps: int = _f(0, _number(0, MAX_STEPS, integer=True), "linear warm-up steps")
    min_lr_ratio: float = _f(0.0, _number(0.0, 1.0), "final lr as a fraction of the peak")
    grad_clip: Optional[float] = _f(1.0, _number(0.0, lo_open=True, optional=True), "max global grad norm; null: off")
    no_decay: List[str] = _f(["logit_scale", "temperature", "embeddings", "pos_embed", "cls_token", "token_embedding",
                              "position_embedding"], _strings,
                             "parameter-name substrings exempt from weight decay (besides every 0-/1-d tensor)")


@dataclass
class CheckpointConfig:
    every: int = _f(0, _number(0, integer=True), "save every N optimiser steps (0: only at the end)")
    keep_last: int = _f(2, _number(1, integer=True), "checkpoints kept")


@dataclass
class LogConfig:
    every: int = _f(1, _number(1, integer=True), "write a log.jsonl row every N steps")
    tensorboard: bool = _f(False, _boolean, "also write TensorBoard events under <run>/tensorboard")
    progress: bool = _f(True, _boolean, "rich progress bar (rank 0, TTY only)")


@dataclass
class DistributedConfig:
    strategy: str = _f("ddp", _choice("ddp", "fsdp2"), "ddp: replicate + average gradients; fsdp2: fully_shard")
    backend: str = _f("auto", _choice("auto", "nccl", "gloo"), "auto: nccl on CUDA, gloo on CPU")


@dataclass
class Recipe:
    """One training recipe (see the module docstring)."""

    name: str = _f("custom", _string(), "recipe name")
    description: str = _f("", lambda v: None if isinstance(v, str) else f"must be a string, got {v!r}", "")
    steps: Optional[int] = _f(None, _number(1, MAX_STEPS, integer=True, optional=True),
                              "optimiser steps (or set epochs)")
    epochs: Optional[int] = _f(None, _number(1, MAX_STEPS, integer=True, optional=True),
                               "epochs (used when steps is null)")
    precision: str = _f("fp32", _choice("fp32", "bf16", "fp16"), "fp32 | bf16 autocast | fp16 autocast + GradScaler")
    grad_checkpointing: bool = _f(False, _boolean, "activation checkpointing in the towers")
    accum_freq: int = _f(1, _number(1, integer=True), "micro-batches per step, with feature caching")
    compile: bool = _f(False, _boolean, "torch.compile the towers' forward (embed)")
    seed: int = _f(0, _number(0, MAX_SEED, integer=True), "global seed (model init, data order, augmentation)")
    device: str = _f("auto", _choice("auto", "cpu", "cuda"), "auto: cuda when available")
    threads: Optional[int] = _f(None, _number(1, MAX_THREADS, integer=True, optional=True),
                                "torch CPU threads (null: leave)")
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    notes: Dict[str, Any] = field(default_factory=dict, metadata={"check": lambda v: None if isinstance(v, dict)
                                                                  else f"must be a mapping, got {v!r}",
                                                                  "help": "free-form provenance notes"})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with dotted-field overrides, e.g. ``replace(**{"optim.lr": 1e-3, "steps": 5})`` (validated).

        Each key is checked against the recipe's fields (:func:`~loupe_bench.specs.check_dotted`: every part but the
        last a section, the last a field of it; ``notes`` takes any key), set with
        :func:`~loupe_bench.specs.set_dotted`, and the result is built again by :func:`recipe_from_dict`, so an
        unknown field or a bad value is a :class:`SpecError` naming the dotted key."""
        d = self.to_dict()
        for key, value in changes.items():
            check_dotted(Recipe, str(key))
            if not set_dotted(d, str(key), value, create=True):
                raise SpecError(f"override {key!r}: a part of it names a value, not a section")
        return recipe_from_dict(d, source=f"<{self.name} with overrides>")

    def per_rank_batch(self, world_size: int, source: str = "<recipe>") -> int:
        """Micro-batch arithmetic: ``batch_size = world_size * accum_freq * micro_batch``; returns the per-rank batch."""
        b = self.data.batch_size
        if b % world_size:
            raise SpecError(f"{source}: field 'data.batch_size': {b} is not divisible by the world size {world_size}")
        per_rank = b // world_size
        if per_rank % self.accum_freq:
            raise SpecError(f"{source}: field 'accum_freq': per-rank batch {per_rank} is not divisible by "
                            f"accum_freq {self.accum_freq}")
        return per_rank


def recipe_from_dict(data: Dict[str, Any], source: str = "<dict>") -> Recipe:
    """Build and validate a :class:`Recipe`; errors name ``source`` and the dotted field."""
    recipe = from_mapping(Recipe, data, source)
    if recipe.steps is None and recipe.epochs is None:
        raise SpecError(f"{source}: field 'steps': set steps or epochs")
    if recipe.data.batch_size % recipe.accum_freq:
        raise SpecError(f"{source}: field 'accum_freq': batch_size {recipe.data.batch_size} is not divisible by "
                        f"accum_freq {recipe.accum_freq}")
    if recipe.accum_freq > 1 and recipe.data.batch_size // recipe.accum_freq < 2:
        raise SpecError(f"{source}: field 'accum_freq': micro-batches of one sample cannot be contrasted")
    return recipe


def recipe_path(name_or_path: Union[str, Path]) -> Path:
    """A shipped recipe name (``tiny-cpu``) or a path to a YAML file (the rule of
    :func:`~loupe_bench.specs.resolve_spec`)."""
    return resolve_spec("recipes", name_or_path)


def load_recipe(name_or_path: Union[str, Path, Recipe]) -> Recipe:
    """Load a recipe by shipped name or YAML path; a :class:`Recipe` built in code is checked like a file."""
    if isinstance(name_or_path, Recipe):
        return recipe_from_dict(name_or_path.to_dict(), source=f"recipe {name_or_path.name!r}")
    data, path = load_named("recipes", name_or_path)
    return recipe_from_dict(data, source=str(path))


def list_recipes() -> List[Tuple[str, str]]:
    """``(name, description)`` of every shipped recipe (``loupe-bench list recipes``); each is parsed here, on
    call, never at import."""
    out = []
    for name, p in sorted(spec_index("recipes").items()):
        try:
            desc = load_recipe(p).description
        except SpecError as exc:  # pragma: no cover - shipped recipes are tested
            desc = f"INVALID: {exc}"
        out.append((name, desc.strip().splitlines()[0] if desc.strip() else ""))
    return out
