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
from ..specs import load_yaml, spec_files
from ..utils.io import read_json
from ._registry import model_class

#: folder of LOUPE's own model specs (package data)
MODEL_SPEC_DIR = Path(__file__).resolve().parent / "specs"

SpecLike = Union[str, Path, Mapping[str, Any]]


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


def _spec_paths() -> List[Path]:
    paths: List[Path] = []
    try:
        paths.extend(spec_files("baselines", patterns=("*.yaml", "*.yml")))
    except SpecError:
        pass
    if MODEL_SPEC_DIR.is_dir():
        paths.extend(sorted(MODEL_SPEC_DIR.glob("*.yaml")) + sorted(MODEL_SPEC_DIR.glob("*.yml")))
    return paths


#: keys a child spec never inherits from its ``base:`` (each spec says what it is: ``name`` defaults to the file
#: stem, ``description`` is the child's own or absent)
NOT_INHERITED = ("name", "description")


def merge_spec(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """Recursive merge of a child spec onto its base (neither is modified).

    ``merge(b, o)[k] = merge(b[k], o[k])`` when both values are mappings, else ``o[k]`` when ``k`` is in ``o``, else
    ``b[k]``: the override wins, nested mappings merge key by key, a list or scalar replaces the base's value whole.
    Key order: the base's keys in its order, then the override's new keys in theirs.
    """
    out: Dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_spec(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_raw(path: Path) -> Dict[str, Any]:
    """One spec file as written (``base:`` unresolved); ``name`` defaults to the file stem."""
    spec = read_json(path) if path.suffix == ".json" else load_yaml(path)
    spec.setdefault("name", path.stem)
    return spec


def resolve_base(spec: Mapping[str, Any], where: str, known: Optional[Mapping[str, Path]] = None,
                 _chain: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Resolve ``base: NAME`` (a shipped model spec's name) of ``spec``, recursively.

    The result is ``merge_spec(resolved(base), spec minus "base")`` (see :func:`merge_spec`) without the base's
    ``NOT_INHERITED`` keys the child does not give; a spec without ``base`` is returned as a copy. A chain
    (``loupe-small-no-fsa -> loupe-small -> loupe-tiny``) resolves bottom-up. An unknown base or a cycle (``a -> b -> a``) is a
    :class:`SpecError` naming ``where`` (the file, or ``<mapping>``).
    """
    spec = dict(spec)
    if "base" not in spec:
        return copy.deepcopy(spec)
    base = spec.pop("base")
    name = str(spec.get("name", "?"))
    chain = _chain + (name,)
    if known is None:
        known = available_specs()
    if not isinstance(base, str) or base not in known:
        raise SpecError(f"{where}: model spec {name!r}: unknown base {base!r}; "
                        f"known: {', '.join(sorted(known)) or '(none)'}")
    if base in chain:
        raise SpecError(f"{where}: model spec {name!r}: cycle in base specs ({' -> '.join(chain + (base,))})")
    parent_path = known[base]
    merged = merge_spec(resolve_base(_read_raw(parent_path), str(parent_path), known, chain), spec)
    for key in NOT_INHERITED:  # kept in the base's place when the child gives them, else dropped
        if key not in spec:
            merged.pop(key, None)
    return merged


def read_spec_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a model spec file (YAML or JSON), with its ``base:`` resolved (:func:`resolve_base`)."""
    path = Path(path)
    return resolve_base(_read_raw(path), str(path))


def available_specs() -> Dict[str, Path]:
    """Name -> file of every shipped model spec (``baselines/*.yaml`` and ``loupe_bench/models/specs/*.yaml``)."""
    out: Dict[str, Path] = {}
    for path in _spec_paths():
        name = _read_raw(path)["name"]
        if name in out:
            raise SpecError(f"model spec {name!r} defined twice ({out[name]} and {path})")
        out[name] = path
    return out


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
    spec (see :func:`resolve_base`), so nothing downstream sees ``base``.
    """
    if isinstance(spec, Mapping):
        return resolve_base(spec, "<mapping>")
    text = str(spec)
    known = available_specs()
    if text in known:
        return resolve_base(_read_raw(known[text]), str(known[text]), known)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix in (".yaml", ".yml", ".json"):
        return resolve_base(_read_raw(path), str(path), known)
    raise SpecError(f"unknown model {text!r}; known: {', '.join(sorted(known)) or '(none)'}")


def create_model(spec: SpecLike, tokenizer_corpus: Optional[Iterable[str]] = None, seed: Optional[int] = None):
    """Build a model from a spec (name, file or dict): towers, heads and tokenizer.

    Args:
        spec: a shipped spec name, a YAML/JSON spec path, or a spec dict.
        tokenizer_corpus: captions to train a from-scratch tokenizer on (ignored by pretrained tokenizers).
        seed: seeds ``torch`` before the parameters are initialised (same seed → same weights).
    """
    spec = get_spec(spec)
    cls = model_class(spec)
    check_spec_keys(spec, cls)
    if seed is not None:
        torch.manual_seed(int(seed))
    return cls.from_spec(spec, tokenizer_corpus=tokenizer_corpus)
