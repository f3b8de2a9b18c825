"""Validation of a model spec before anything is built or allocated: a spec file, the tower preset merged into it,
and the ``config.json`` of a saved model folder (the resolved spec) are checked by one function,
:func:`validate_spec`.

Rules:

* **family**: a string naming a registered family; the top-level keys are the ones the family reads
  (:func:`~loupe_bench.models.factory.check_spec_keys`).
* **types and finite numbers**: each section is built strictly with :func:`~loupe_bench.specs.from_mapping` from its
  config dataclass (:class:`SpecFields`, :class:`ProjectionCfg`, :class:`LossCfg`,
  :class:`~loupe_bench.models.towers.ImageTowerCfg`, :class:`~loupe_bench.models.towers.TextTowerCfg`,
  :class:`~loupe_bench.models.tokenizer.TokenizerCfg`), whose fields carry ``metadata["check"]``: NaN, infinity, a
  wrong type or a value out of range is refused.
* **sizes**: every size (``embed_dim``, ``image_size``, the timm size kwargs, the BERT config sizes, the tokenizer's
  ``vocab_size`` and ``max_length``) is an integer in its range of
  :data:`~loupe_bench.models.untrusted.SIZE_RANGES` (:data:`TIMM_SIZE_KEYS`, :data:`BERT_SIZE_KEYS`).
* **shapes**: the image tower's ``img_size`` is the spec's ``image_size``, the image size is a multiple of the
  patch size, its patch grid holds at most :data:`~loupe_bench.models.untrusted.MAX_PATCHES` patches, a tower's
  width is a multiple of its heads, and the tokenizer's ``max_length`` fits the text tower's
  ``max_position_embeddings``.
* **parameters**: the towers and projections estimated from the spec
  (:func:`~loupe_bench.models.untrusted.tower_params`; a size the spec leaves to the architecture counts as
  :data:`DEFAULT_IMAGE` / :data:`DEFAULT_TEXT`) hold at most :data:`~loupe_bench.models.untrusted.MAX_PARAMS`.
* **family blocks**: a family's own section (``filip``, ``loupe``) is checked by the class's ``check_family_spec``.

Every refusal is one line ``<file>: field '<dotted field>': <what is wrong>``: a :class:`SpecError` for a spec file
or mapping, a :class:`CheckpointError` for a model folder's ``config.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from ..errors import LoupeBenchError, SpecError
from ..specs import from_mapping
from .untrusted import MAX_PARAMS, MAX_PATCHES, MLP_RATIO_RANGE, SIZE_RANGES, tower_params

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


# -- the one entry point ----------------------------------------------------------------------------------------------
def validate_spec(spec: Any, where: str, error: Type[LoupeBenchError] = SpecError) -> None:
    """Check every field of the resolved model spec ``spec`` (see the module rules) before anything is built;
    a refusal is one ``error`` line that starts with ``where`` (the spec file, ``<mapping>``, or a model folder's
    ``config.json``)."""
    try:
        _validate(spec, where)
    except SpecError as exc:
        message = " ".join(str(exc).split())
        if message.startswith(FAMILY_SOURCE + ": "):
            message = message[len(FAMILY_SOURCE) + 2:]
        if not message.startswith(f"{where}:"):
            message = f"{where}: {message}"
        raise error(message) from None


def _validate(spec: Any, where: str) -> None:
    from ._registry import model_class
    from .factory import check_spec_keys
    from .tokenizer import TokenizerCfg

    if not isinstance(spec, Mapping):
        raise SpecError(f"{where}: a model spec must be a mapping, got {type(spec).__name__}")
    family = spec.get("family")
    if not isinstance(family, str):
        raise SpecError(f"{where}: field 'family': must be a string naming a model family, got {family!r}")
    cls = model_class(spec)
    check_spec_keys(spec, cls)
    top = from_mapping(SpecFields, {k: v for k, v in spec.items() if k in SpecFields.__dataclass_fields__}, where)
    for key, section in (("projection", ProjectionCfg), ("loss", LossCfg)):
        if key in spec:
            from_mapping(section, spec[key], where, key)
    tok = from_mapping(TokenizerCfg, spec["tokenizer"], where, "tokenizer") if "tokenizer" in spec else None
    if "image_tower" in spec and "text_tower" in spec:
        _check_towers(spec, top, tok if tok is not None else TokenizerCfg(), where)
    hook = getattr(cls, "check_family_spec", None)
    if hook is not None:
        hook(spec)


def _check_towers(spec: Mapping[str, Any], top: SpecFields, tok: Any, where: str) -> None:
    """The towers' sections, the image grid, the tokenizer's length against the text positions, and the parameter
    estimate of towers and projections."""
    from .towers import ImageTowerCfg, TextTowerCfg

    image = from_mapping(ImageTowerCfg, spec["image_tower"], where, "image_tower")
    text = from_mapping(TextTowerCfg, spec["text_tower"], where, "text_tower")
    image_size = top.image_size if top.image_size is not None else 64
    own = image.kwargs.get("img_size")
    if top.image_size is not None and _is_int(own) and own != top.image_size:
        raise SpecError(f"{where}: field 'image_tower.kwargs': img_size {own} differs from image_size {image_size}")
    if "patch_size" in image.kwargs:
        err = grid_error(image.kwargs.get("img_size", image_size), image.kwargs["patch_size"])
        if err:
            raise SpecError(f"{where}: field 'image_tower.kwargs': {err}")
    positions = text.config.get("max_position_embeddings")
    if not text.pretrained and positions is not None and tok.max_length > positions:
        raise SpecError(f"{where}: field 'tokenizer.max_length': {tok.max_length} is above the text tower's "
                        f"max_position_embeddings {positions}")
    i_params, i_width = image_params(image.kwargs, image_size)
    t_params, t_width = text_params(text.config, tok.vocab_size, tok.max_length)
    total = i_params + t_params + 2 * (top.embed_dim or 0) * (i_width + t_width)
    if total > MAX_PARAMS:
        raise SpecError(f"{where}: the towers and projections have about {total:.3g} parameters, above the limit "
                        f"of {MAX_PARAMS:.3g}")
