"""The field checks of model specs (types, ranges, sizes, shapes and parameter estimates) and the config
dataclasses they run on; :mod:`loupe_bench.models.spec_check` applies them to a whole spec. This module imports no
other model module but :mod:`~loupe_bench.models.untrusted`, so the tower and tokenizer configs can use its checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from ..errors import SpecError
from .untrusted import MAX_PATCHES, MLP_RATIO_RANGE, SIZE_RANGES, tower_params

#: timm keyword -> the :data:`SIZE_RANGES` kind it is checked as (an int, or a list of ints for Swin stages)
TIMM_SIZE_KEYS = {"img_size": "image_size", "patch_size": "patch_size", "embed_dim": "width", "depth": "layers",
                  "depths": "layers", "num_heads": "heads", "window_size": "patch_size"}
#: ``BertConfig`` fields checked against :data:`SIZE_RANGES` (same names)
BERT_SIZE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "vocab_size", "type_vocab_size")
#: image tower sizes a spec leaves to the timm architecture, counted as those of a large tower
DEFAULT_IMAGE = {"embed_dim": 1024, "depth": 24, "mlp_ratio": 4.0, "patch_size": 16, "img_size": 224}
#: ``BertConfig`` defaults
DEFAULT_TEXT = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "type_vocab_size": 2}
#: the source the config dataclasses' own ``from_dict`` name (replaced by the file in :func:`validate_spec`)
FAMILY_SOURCE = "model spec"
#: exclusive low, inclusive high end of ``temperature_init``
TEMPERATURE_RANGE = (0.0, 100.0)
#: inclusive range of ``max_logit_scale``
LOGIT_SCALE_RANGE = (1.0, 1e6)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def size_error(kind: str, value: Any) -> Optional[str]:
    """``None`` when ``value`` is an integer in :data:`SIZE_RANGES` ``[kind]``, else what is wrong."""
    lo, hi = SIZE_RANGES[kind]
    if _is_int(value) and lo <= value <= hi:
        return None
    return f"must be an integer in [{lo}, {hi}], got {value!r}"


def size_check(kind: str):
    """A ``metadata["check"]`` for an integer size field of :data:`SIZE_RANGES` kind ``kind``."""
    def check(value: Any) -> Optional[str]:
        return size_error(kind, value)

    check.numeric = True  # type: ignore[attr-defined]
    return check


def range_check(lo: float, hi: float, low_open: bool = False):
    """A ``metadata["check"]`` for a number in ``[lo, hi]`` (``(lo, hi]`` with ``low_open``)."""
    def check(value: Any) -> Optional[str]:
        if _is_number(value) and (lo < value if low_open else lo <= value) and value <= hi:
            return None
        return f"must be a number in {'(' if low_open else '['}{lo:g}, {hi:g}], got {value!r}"

    check.numeric = True  # type: ignore[attr-defined]
    return check


def type_check(*types: Type, optional: bool = False):
    """A ``metadata["check"]`` for a value of one of ``types`` (or ``None`` with ``optional``)."""
    names = " or ".join(t.__name__ for t in types) + (" or null" if optional else "")

    def check(value: Any) -> Optional[str]:
        if (value is None and optional) or (isinstance(value, types) and not (
                isinstance(value, bool) and bool not in types)):
            return None
        return f"must be a {names}, got {value!r}"

    return check


def choice_check(*allowed: str):
    """A ``metadata["check"]`` for one of the strings ``allowed``."""
    def check(value: Any) -> Optional[str]:
        return None if isinstance(value, str) and value in allowed else \
            f"must be one of {', '.join(allowed)}, got {value!r}"

    return check


def _triple_check(positive: bool):
    def check(value: Any) -> Optional[str]:
        if isinstance(value, (list, tuple)) and len(value) == 3 and all(
                _is_number(v) and (v > 0 if positive else True) for v in value):
            return None
        return f"must be a list of 3 {'positive ' if positive else ''}numbers, got {value!r}"

    return check


def _check(fn) -> Dict[str, Any]:
    return {"check": fn}


@dataclass
class SpecFields:
    """The top-level scalar fields of a model spec (sections are checked by their own dataclasses)."""

    name: Optional[str] = field(default=None, metadata=_check(type_check(str)))
    family: str = field(default="", metadata=_check(type_check(str)))
    description: Optional[str] = field(default=None, metadata=_check(type_check(str, optional=True)))
    similarity: Optional[str] = field(default=None, metadata=_check(type_check(str, optional=True)))
    pretrained: Optional[str] = field(default=None, metadata=_check(type_check(str, optional=True)))
    embed_dim: Optional[int] = field(default=None, metadata=_check(size_check("embed_dim")))
    image_size: Optional[int] = field(default=None, metadata=_check(size_check("image_size")))
    temperature_init: float = field(default=0.07, metadata=_check(range_check(*TEMPERATURE_RANGE, low_open=True)))
    max_logit_scale: float = field(default=100.0, metadata=_check(range_check(*LOGIT_SCALE_RANGE)))
    image_mean: Optional[List[float]] = field(default=None, metadata=_check(_triple_check(False)))
    image_std: Optional[List[float]] = field(default=None, metadata=_check(_triple_check(True)))
    text_special_tokens: bool = field(default=False, metadata=_check(type_check(bool)))


@dataclass
class ProjectionCfg:
    """``projection:`` of a model spec."""

    shared_token_projection: bool = field(default=True, metadata=_check(type_check(bool)))
    bias: bool = field(default=False, metadata=_check(type_check(bool)))


def _weights_check(value: Any) -> Optional[str]:
    if isinstance(value, Mapping) and all(isinstance(k, str) and _is_number(v) and v >= 0 for k, v in value.items()):
        return None
    return f"must be a mapping of loss term -> non-negative number, got {value!r}"


@dataclass
class LossCfg:
    """``loss:`` of a model spec (the family checks the term names)."""

    weights: Dict[str, float] = field(default_factory=dict, metadata=_check(_weights_check))
    gather_with_grad: bool = field(default=True, metadata=_check(type_check(bool)))
    local_loss: bool = field(default=False, metadata=_check(type_check(bool)))


# -- tower sizes ------------------------------------------------------------------------------------------------------
def _sizes(value: Any, kind: str) -> Optional[str]:
    """An int of ``kind``'s range, or (Swin stages, timm ``(H, W)``) a non-empty list of them."""
    if isinstance(value, (list, tuple)):
        if not value:
            return f"must be a non-empty list, got {value!r}"
        return next((e for e in (size_error(kind, v) for v in value) if e), None)
    return size_error(kind, value)


def timm_kwargs_error(kwargs: Any) -> Optional[str]:
    """What is wrong with the size keywords of ``image_tower.kwargs`` (:data:`TIMM_SIZE_KEYS`, ``mlp_ratio``), the
    image's divisibility by its patches, the patch grid and a width not divisible by its heads; ``None`` when fine."""
    if not isinstance(kwargs, Mapping):
        return f"must be a mapping, got {kwargs!r}"
    for key, kind in TIMM_SIZE_KEYS.items():
        err = _sizes(kwargs[key], kind) if key in kwargs else None
        if err:
            return f"{key} {err}"
    ratio = kwargs.get("mlp_ratio", 4.0)
    lo, hi = MLP_RATIO_RANGE
    if not _is_number(ratio) or not lo < ratio <= hi:
        return f"mlp_ratio must be a number in ({lo:g}, {hi:g}], got {ratio!r}"
    if "img_size" in kwargs and "patch_size" in kwargs:
        err = grid_error(kwargs["img_size"], kwargs["patch_size"])
        if err:
            return err
    width, heads = kwargs.get("embed_dim"), kwargs.get("num_heads")
    if _is_int(width) and _is_int(heads) and width % heads:
        return f"embed_dim {width} is not divisible by num_heads {heads}"
    return None


def grid_error(image_size: Any, patch_size: Any) -> Optional[str]:
    """A patch size that does not divide the image size, or a grid above :data:`MAX_PATCHES`; ``None`` when fine
    (a ``(H, W)`` size is checked per side)."""
    sides = list(image_size) if isinstance(image_size, (list, tuple)) else [image_size, image_size]
    patches = list(patch_size) if isinstance(patch_size, (list, tuple)) else [patch_size] * len(sides)
    for side, patch in zip(sides, patches):
        if side % patch:
            return f"image size {side} is not a multiple of patch_size {patch}"
    count = 1
    for side, patch in zip(sides, patches):
        count *= side // patch
    if count > MAX_PATCHES:
        return f"image size {image_size} / patch_size {patch_size} gives {count:,} patches, above {MAX_PATCHES:,}"
    return None


def bert_config_error(config: Any) -> Optional[str]:
    """What is wrong with the sizes of ``text_tower.config`` (:data:`BERT_SIZE_KEYS`, width divisible by its heads);
    ``None`` when fine."""
    if not isinstance(config, Mapping):
        return f"must be a mapping, got {config!r}"
    for key in BERT_SIZE_KEYS:
        if key in config and config[key] is not None:
            err = size_error(key, config[key])
            if err:
                return f"{key} {err}"
    width = config.get("hidden_size", DEFAULT_TEXT["hidden_size"])
    heads = config.get("num_attention_heads", DEFAULT_TEXT["num_attention_heads"])
    if width % heads:
        return f"hidden_size {width} is not divisible by num_attention_heads {heads}"
    return None


def image_params(kwargs: Mapping[str, Any], image_size: int) -> Tuple[int, int]:
    """``(parameters, width)`` of a timm image tower estimated from its kwargs (sizes it leaves out:
    :data:`DEFAULT_IMAGE`). Swin stages (``depths`` a list) double the width per stage; the widest stage counts for
    every layer."""
    get = lambda key: kwargs.get(key, DEFAULT_IMAGE[key])  # noqa: E731
    depth = kwargs.get("depths", get("depth"))
    layers = sum(depth) if isinstance(depth, (list, tuple)) else depth
    width = get("embed_dim") * (2 ** (len(depth) - 1) if isinstance(depth, (list, tuple)) else 1)
    size = kwargs.get("img_size", image_size)
    side = max(size) if isinstance(size, (list, tuple)) else size
    patch = get("patch_size")
    patch = max(patch) if isinstance(patch, (list, tuple)) else patch
    return tower_params(width, layers, int(width * get("mlp_ratio")), (side // patch) ** 2, 3 * patch * patch), width


def text_params(config: Mapping[str, Any], vocab_size: int, max_length: int) -> Tuple[int, int]:
    """``(parameters, width)`` of a BERT text tower estimated from its config (defaults: :data:`DEFAULT_TEXT`)."""
    width = config.get("hidden_size") or DEFAULT_TEXT["hidden_size"]
    layers = config.get("num_hidden_layers") or DEFAULT_TEXT["num_hidden_layers"]
    mlp = config.get("intermediate_size") or 4 * width
    positions = config.get("max_position_embeddings") or max(512, max_length)
    rows = (config.get("vocab_size") or vocab_size) + (config.get("type_vocab_size") or 0)
    return tower_params(width, layers, mlp, positions, rows), width




def check_spec_keys(spec: Mapping[str, Any], cls: Any) -> None:
    """Refuse a top-level spec key the family does not read (a typo such as ``temprature_init`` would otherwise be
    silently ignored). The known keys are the class's ``SPEC_KEYS`` (a family without it is not checked)."""
    known = getattr(cls, "SPEC_KEYS", None)
    if known is None:
        return
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise SpecError(f"model spec {spec.get('name', '?')!r}: unknown top-level key(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(known))}")
