"""Create and list models from specs: shipped YAML specs, spec files and spec mappings.

Loading a saved model (model / run directories, Hugging Face and open_clip checkpoints) is
:func:`loupe_bench.models.sources.load_model`; the model-directory format is :mod:`loupe_bench.models.checkpoint`.
The dependency goes one way: ``sources`` uses this module and ``checkpoint``; neither of them imports ``sources``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch

from ..errors import SpecError
from ..specs import NOT_INHERITED, merge_spec, read_named_file, resolve_base as _resolve_base
from ..specs import resolve_spec, spec_index
from ._registry import model_class
from .spec_check import validate_spec
from .spec_fields import check_spec_keys  # noqa: F401  (re-exported: families call it)

SpecLike = Union[str, Path, Mapping[str, Any]]

#: the keys a tower preset (``baselines/towers/NAME.yaml``, ``towers: NAME`` in a model spec) may set: the dual
#: encoder every compared model of one size shares
TOWER_KEYS = ("image_size", "embed_dim", "image_tower", "text_tower", "tokenizer", "projection", "temperature_init",
              "max_logit_scale", "text_special_tokens")


def tower_preset(name: Any, where: str = "<mapping>") -> Dict[str, Any]:
    """The tower preset ``name`` (``baselines/towers/NAME.yaml``, its own ``base:`` resolved) without ``name`` and
    ``description``; a key outside :data:`TOWER_KEYS` is a :class:`SpecError`."""
    index = spec_index("towers")
    if not isinstance(name, str) or name not in index:
        raise SpecError(f"{where}: unknown tower preset {name!r}; known: {', '.join(sorted(index)) or '(none)'}")
    path = index[name]
    preset = _resolve_base("towers", read_named_file("towers", path), str(path), index)
    for key in NOT_INHERITED:
        preset.pop(key, None)
    unknown = sorted(set(preset) - set(TOWER_KEYS))
    if unknown:
        raise SpecError(f"{path}: tower preset {name!r}: unknown key(s) {', '.join(unknown)}; "
                        f"known: {', '.join(TOWER_KEYS)}")
    return preset


def list_towers() -> List[Tuple[str, str]]:
    """``(name, description)`` of every shipped tower preset (``baselines/towers/*.yaml``), for
    ``loupe-bench list towers``."""
    rows = []
    for name, path in sorted(spec_index("towers").items()):
        desc = str(read_named_file("towers", path).get("description", "")).strip().splitlines()
        rows.append((name, desc[0] if desc else ""))
    return rows


def expand_towers(spec: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Replace ``towers: NAME`` by the keys of the tower preset ``NAME``, in the place of ``towers``.

    ``expanded[k] = merge_spec(preset[k], spec[k])`` for a key both give as mappings, else ``spec[k]`` when the
    spec gives it, else ``preset[k]``: the spec's own keys override its preset (as a child overrides its base). A
    spec without ``towers`` is returned unchanged. Run on each level of a ``base:`` chain before it is merged, so a
    child's preset replaces its parent's towers and the child's own keys win over both.
    """
    if "towers" not in spec:
        return spec
    preset = tower_preset(spec["towers"], where)
    out: Dict[str, Any] = {}
    for key, value in spec.items():
        if key == "towers":
            for pkey, pvalue in preset.items():
                if pkey not in spec:
                    out[pkey] = copy.deepcopy(pvalue)
                elif isinstance(pvalue, Mapping) and isinstance(spec[pkey], Mapping):
                    out[pkey] = merge_spec(pvalue, spec[pkey])
                else:
                    out[pkey] = copy.deepcopy(spec[pkey])
        elif key not in out:
            out[key] = value
    return out


def resolve_base(spec: Mapping[str, Any], where: str, known: Optional[Mapping[str, Path]] = None) -> Dict[str, Any]:
    """A model spec with its ``base:`` chain and ``towers:`` presets resolved (:func:`loupe_bench.specs.resolve_base`
    with :func:`expand_towers` on each level)."""
    return _resolve_base("models", spec, where, known, expand=expand_towers)


def read_spec_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a model spec file (YAML or JSON), with its ``base:`` and ``towers:`` resolved (:func:`resolve_base`) and
    every field validated (:func:`~loupe_bench.models.spec_check.validate_spec`; errors name the file)."""
    path = Path(path)
    spec = resolve_base(read_named_file("models", path), str(path))
    validate_spec(spec, str(path))
    return spec


def available_specs() -> Dict[str, Path]:
    """Name -> file of every shipped model spec (``baselines/*.yaml``)."""
    return spec_index("models")


def list_models() -> List[Tuple[str, str]]:
    """``(name, description)`` of every shipped model spec, for ``loupe-bench list models``."""
    rows = []
    for name, path in sorted(available_specs().items()):
        spec = read_spec_file(path)
        desc = str(spec.get("description", "")).strip().splitlines()
        rows.append((name, f"({spec.get('family', '?')}) " + (desc[0] if desc else "")))
    return rows


def get_spec(spec: SpecLike) -> Dict[str, Any]:
    """Resolve a spec name, a spec file path or a mapping to a spec dict (a copy), its ``base:`` resolved.

    Inheritance: a spec may say ``base: NAME`` (a shipped model spec) and give only the keys it changes, e.g.
    ``{name: loupe-no-fsa, base: loupe-tiny, loss: {weights: {fsa: 0.0}}}``; the returned dict is the fully merged
    spec (see :func:`resolve_base`), so nothing downstream sees ``base``. Every field of the resolved spec is
    validated (:func:`~loupe_bench.models.spec_check.validate_spec`) before it is returned, so nothing is built from a
    bad spec.
    """
    if isinstance(spec, Mapping):
        resolved = resolve_base(spec, "<mapping>")
        validate_spec(resolved, "<mapping>")
        return resolved
    return read_spec_file(resolve_spec("models", spec))


def create_model(spec: SpecLike, tokenizer_corpus: Optional[Iterable[str]] = None, seed: Optional[int] = None):
    """Build a model from a spec (name, file or dict): towers, heads and tokenizer.

    Args:
        spec: a shipped spec name, a YAML/JSON spec path, or a spec dict.
        tokenizer_corpus: captions to train a from-scratch tokenizer on (ignored by pretrained tokenizers).
        seed: seeds ``torch`` before the parameters are initialised (same seed → same weights).
    """
    spec = get_spec(spec)
    cls = model_class(spec)
    if seed is not None:
        torch.manual_seed(int(seed))
    return cls.from_spec(spec, tokenizer_corpus=tokenizer_corpus)
