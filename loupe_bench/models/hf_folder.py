"""What a Hugging Face model folder says about itself, read from its files with the checks of
:mod:`~loupe_bench.models.untrusted`: architecture sizes of ``config.json`` and the eval preprocessing of its image
processor.

Preprocessing rule (:func:`read_preprocessing`): the image processor's settings are read from
``preprocessor_config.json`` (``CLIPImageProcessor.save_pretrained``), else from the ``image_processor`` object of
``processor_config.json`` (``CLIPProcessor.save_pretrained``); with neither, the documented default is the vision
tower's ``image_size`` and OpenAI CLIP's mean / std. From the settings:

* image size: ``crop_size`` when ``do_center_crop`` (default true), else ``size``; either may be an integer or an
  object with ``height`` / ``width`` (equal: square) or ``shortest_edge``; absent: the other one, then the vision
  tower's ``image_size``. It must equal the vision tower's ``image_size`` (the position table is that size).
* mean / std: ``image_mean`` / ``image_std``, a number or a list of 1 or 3 numbers (std positive); absent: OpenAI's;
  ``do_normalize: false``: mean 0, std 1.

A settings file that is present but unreadable (not a regular file, malformed JSON, a key of the wrong type) is a
:class:`~loupe_bench.errors.CheckpointError` naming the file and the key; nothing falls back silently.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import CheckpointError
from .untrusted import (SIZE_RANGES, check_heads, check_params, check_patch_grid, optional_config, read_config_json,
                        size_field, tower_params)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"

#: transformers' defaults of the size fields checked, per kind of config section
CLIP_TEXT_SIZES = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                   "num_attention_heads": 8, "max_position_embeddings": 77}
CLIP_VISION_SIZES = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "image_size": 224, "patch_size": 32}
TEXT_MODEL_SIZES = {"vocab_size": 30522, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "max_position_embeddings": 512, "type_vocab_size": 2}


# -- architecture sizes -----------------------------------------------------------------------------------------------
def _section_params(where: str, section: Mapping[str, Any], defaults: Mapping[str, int]) -> Tuple[int, int]:
    """``(parameters, width)`` of one tower section, every size field checked."""
    f = {key: size_field(where, section, key, default) for key, default in defaults.items()}
    width = f["hidden_size"]
    check_heads(where, width, f["num_attention_heads"])
    if "image_size" in f:
        patches = check_patch_grid(where, f["image_size"], f["patch_size"])
        return tower_params(width, f["num_hidden_layers"], f["intermediate_size"], patches + 1,
                            3 * f["patch_size"] ** 2), width
    rows = f["vocab_size"] + f.get("type_vocab_size", 0)
    return tower_params(width, f["num_hidden_layers"], f["intermediate_size"], f["max_position_embeddings"],
                        rows), width


def is_clip_layout(config: Mapping[str, Any]) -> bool:
    return "text_config" in config or "vision_config" in config or config.get("model_type") == "clip"


def check_hf_config(path: Path) -> Dict[str, Any]:
    """``config.json`` of a transformers model read within the limits: a CLIP config's ``text_config`` and
    ``vision_config`` (any other: the top level, as a text model) hold sizes in range, and the estimated parameter
    count is within :data:`~loupe_bench.models.untrusted.MAX_PARAMS`. Returns the config."""
    config = read_config_json(path)
    if not is_clip_layout(config):
        check_params(str(path), _section_params(str(path), config, TEXT_MODEL_SIZES)[0])
        return config
    total, widths = 0, 0
    for key, defaults in (("text_config", CLIP_TEXT_SIZES), ("vision_config", CLIP_VISION_SIZES)):
        section = config.get(key) or {}
        if not isinstance(section, dict):
            raise CheckpointError(f"{path}: {key} must be an object, got {type(section).__name__}")
        params, width = _section_params(f"{path}: {key}", section, defaults)
        total, widths = total + params, widths + width
    total += size_field(str(path), config, "projection_dim", 512) * widths
    check_params(str(path), total)
    return config


def vision_image_size(config: Mapping[str, Any]) -> int:
    """The vision tower's ``image_size`` of a CLIP config checked by :func:`check_hf_config`."""
    return int((config.get("vision_config") or {}).get("image_size") or CLIP_VISION_SIZES["image_size"])


# -- preprocessing ----------------------------------------------------------------------------------------------------
def processor_settings(folder: Path) -> Tuple[Optional[Path], Optional[Dict[str, Any]]]:
    """``(file, settings)`` of the image processor saved in ``folder`` (see the module rule); ``(None, None)``
    when none is saved."""
    settings = optional_config(folder / PREPROCESSOR_FILE)
    if settings is not None:
        return folder / PREPROCESSOR_FILE, settings
    outer = optional_config(folder / PROCESSOR_FILE)
    if outer is None or outer.get("image_processor") is None:
        return None, None
    if not isinstance(outer["image_processor"], dict):
        raise CheckpointError(f"{folder / PROCESSOR_FILE}: image_processor must be an object, got "
                              f"{type(outer['image_processor']).__name__}")
    return folder / PROCESSOR_FILE, outer["image_processor"]


def _edge(where: Path, settings: Mapping[str, Any], key: str) -> Optional[int]:
    """The square edge ``settings[key]`` gives (integer, ``{height, width}`` or ``{shortest_edge}``), or ``None``."""
    value = settings.get(key)
    if value is None:
        return None
    if isinstance(value, dict):
        height, width = value.get("height"), value.get("width")
        if height is not None or width is not None:
            if height != width:
                raise CheckpointError(f"{where}: {key} {value} is not square (height and width differ)")
            value = height
        elif value.get("shortest_edge") is not None:
            value = value["shortest_edge"]
        else:
            raise CheckpointError(f"{where}: {key} {value} gives neither height / width nor shortest_edge")
    lo, hi = SIZE_RANGES["image_size"]
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise CheckpointError(f"{where}: {key} must be an integer in [{lo}, {hi}] or an object holding one, "
                              f"got {settings[key]!r}")
    return value


def _flag(where: Path, settings: Mapping[str, Any], key: str) -> bool:
    value = settings.get(key, True)
    if not isinstance(value, bool):
        raise CheckpointError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def channel_values(where: Any, settings: Mapping[str, Any], key: str, default: Tuple[float, ...],
                   positive: bool) -> Tuple[float, ...]:
    """``settings[key]`` as 3 finite floats (a number or a list of 1 or 3 numbers); ``default`` when absent."""
    value = settings.get(key)
    if value is None:
        return default
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    ok = len(values) in (1, 3) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                       and (v > 0 or not positive) for v in values)
    if not ok:
        kind = "positive " if positive else ""
        raise CheckpointError(f"{where}: {key} must be a {kind}number or a list of 1 or 3 {kind}numbers, "
                              f"got {value!r}")
    return tuple(float(v) for v in values) * (3 if len(values) == 1 else 1)


def preprocessing_of(where: Path, settings: Mapping[str, Any],
                     vision_size: int) -> Tuple[int, Tuple[float, ...], Tuple[float, ...]]:
    """``(image_size, mean, std)`` from image-processor ``settings`` (see the module rule)."""
    crop, size = _edge(where, settings, "crop_size"), _edge(where, settings, "size")
    first, second = (crop, size) if _flag(where, settings, "do_center_crop") else (size, crop)
    edge = first if first is not None else second if second is not None else vision_size
    if edge != vision_size:
        raise CheckpointError(f"{where}: the processor's image size {edge} differs from the vision tower's "
                              f"image_size {vision_size}")
    if not _flag(where, settings, "do_normalize"):
        return edge, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return (edge, channel_values(where, settings, "image_mean", OPENAI_MEAN, False),
            channel_values(where, settings, "image_std", OPENAI_STD, True))


def read_preprocessing(folder: Optional[Path],
                       vision_size: int) -> Tuple[int, Tuple[float, ...], Tuple[float, ...]]:
    """``(image_size, mean, std)`` of the image processor saved in ``folder``; the documented default (the vision
    tower's size, OpenAI's mean / std) when ``folder`` is ``None`` or holds no processor settings."""
    where, settings = processor_settings(folder) if folder is not None else (None, None)
    if settings is None:
        return vision_size, OPENAI_MEAN, OPENAI_STD
    return preprocessing_of(where, settings, vision_size)
