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

from typing import Any, Mapping, Type

from ..errors import LoupeBenchError, SpecError
from ..specs import from_mapping
from ._registry import model_class
from .spec_fields import (FAMILY_SOURCE, LossCfg, ProjectionCfg, SpecFields, _is_int, check_spec_keys, grid_error,
                          image_params, text_params)
from .untrusted import MAX_PARAMS
from .tokenizer import TokenizerCfg
from .towers import ImageTowerCfg, TextTowerCfg

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
