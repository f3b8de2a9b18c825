"""The spec index: every kind of YAML/JSON spec the package ships, found, named, read and checked one way.

Kinds (:data:`SPEC_KINDS`): ``models`` (``baselines/``: CLIP, FILIP, LOUPE and every ablation), ``tasks``
(``tasks/``), ``recipes`` (``loupe_bench/train/recipes``), ``paper`` (``results/paper``: published numbers) and
``reference`` (``results/reference``: committed reference runs of the regression gate). The top-level folders are
shipped inside the wheel as ``loupe_bench/_specs/<folder>`` (see ``pyproject.toml``); in a source checkout (editable
install, or running from the repo) the top-level folders are used directly.

One rule for every kind:

- **scan** -- :func:`spec_index` maps each spec's name (its ``name:`` key, else the file stem) to its file; a name
  defined twice is an error.
- **name or path** -- :func:`resolve_spec`: text that looks like a path (it holds a ``/`` or ``\\``, or ends in
  ``.yaml`` / ``.yml`` / ``.json``) is a file that must exist; anything else is a shipped name.
- **one error type** -- every spec problem (unknown name, missing file, malformed YAML, unknown field, bad value) is a
  :class:`~loupe_bench.errors.SpecError` whose text names the file (or ``<mapping>``) and the dotted field.
- **dotted overrides** -- :func:`parse_assignments` reads ``KEY=VALUE`` command-line items (values as YAML) and
  :func:`set_dotted` writes one ``a.b.c`` key into a nested mapping.
- **strict dataclasses** -- :func:`from_mapping` builds a (nested) config dataclass from a mapping, refusing unknown
  fields and running each field's ``metadata["check"]``.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import collections.abc
import json
import math
import re
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

import yaml

from .errors import SpecError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


class SpecKind(NamedTuple):
    """One kind of spec: where its files live and how they are named.

    Attributes:
        label: the word in messages (``unknown model 'x'``).
        shipped: folder name under ``loupe_bench/_specs`` in a wheel (``None``: the folder is package data).
        source: folder in a source checkout, relative to the repository (or, without ``shipped``, to the package).
        suffixes: file name endings that hold a spec.
        named_by_key: the name is the file's ``name:`` key (else, and for non-mappings, the file stem).
    """

    label: str
    shipped: Optional[str]
    source: str
    suffixes: Tuple[str, ...] = (".yaml", ".yml")
    named_by_key: bool = True


#: every kind of shipped spec
SPEC_KINDS: Dict[str, SpecKind] = {
    "models": SpecKind("model", "baselines", "baselines"),
    "towers": SpecKind("tower preset", "baselines/towers", "baselines/towers"),
    "tasks": SpecKind("task", "tasks", "tasks"),
    "recipes": SpecKind("recipe", None, "train/recipes"),
    "paper": SpecKind("paper table", "paper", "results/paper", SPEC_SUFFIXES, named_by_key=False),
    "reference": SpecKind("reference", "reference", "results/reference", (".json",), named_by_key=False),
}


def _kind(kind: str) -> SpecKind:
    try:
        return SPEC_KINDS[kind]
    except KeyError:
        raise SpecError(f"unknown spec kind {kind!r}; known: {', '.join(SPEC_KINDS)}") from None


def spec_dir(kind: str) -> Path:
    """Folder holding the shipped specs of ``kind`` (a key of :data:`SPEC_KINDS`)."""
    k = _kind(kind)
    if k.shipped is None:
        folder = PACKAGE_DIR / k.source
        if folder.is_dir():
            return folder
        raise SpecError(f"spec folder {kind!r} not found (looked in {folder})")
    shipped = PACKAGE_DIR / "_specs" / k.shipped
    if shipped.is_dir():
        return shipped
    source = REPO_DIR / k.source
    if source.is_dir():
        return source
    raise SpecError(f"spec folder {kind!r} not found (looked in {shipped} and {source})")


def spec_files(kind: str) -> List[Path]:
    """Every spec file of ``kind``, sorted by path."""
    k = _kind(kind)
    folder = spec_dir(kind)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in k.suffixes)


def read_spec(path: Union[str, Path]) -> Any:
    """The content of one spec file (YAML, or JSON for ``.json``); a missing or malformed file is a
    :class:`SpecError` naming it."""
    from .utils.bounded import load_yaml_file

    return load_yaml_file(path, kind="spec", error=SpecError)


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a spec file that must hold a mapping (an empty file is ``{}``); errors name the file."""
    data = read_spec(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    return data


def spec_name(path: Path, data: Any, kind: str) -> str:
    """A spec's name: its ``name:`` key where the kind is named by key, else the file stem."""
    if _kind(kind).named_by_key and isinstance(data, dict) and data.get("name") is not None:
        return str(data["name"])
    return path.stem


#: (kind, (file, content digest) of every file) -> index: a folder is parsed again only when one of its files changes
_INDEX_CACHE: Dict[Tuple[Any, ...], Dict[str, Path]] = {}


def spec_index(kind: str) -> Dict[str, Path]:
    """Name -> file of every shipped spec of ``kind`` (one scan); a name defined twice is a :class:`SpecError`.

    The files are parsed once per content of the folder (file names and a digest of their bytes), so resolving a
    ``base:`` chain or listing every spec does not parse the folder again for each spec."""
    files = spec_files(kind)
    key = (kind, tuple((str(p), hashlib.blake2b(p.read_bytes(), digest_size=16).digest()) for p in files))
    cached = _INDEX_CACHE.get(key)
    if cached is None:
        cached = {}
        for path in files:
            name = spec_name(path, read_spec(path) if _kind(kind).named_by_key else None, kind)
            if name in cached:
                raise SpecError(f"{_kind(kind).label} {name!r} defined twice ({cached[name]} and {path})")
            cached[name] = path
        _INDEX_CACHE[key] = cached
    return dict(cached)


def looks_like_path(text: Union[str, Path]) -> bool:
    """The one "name or path" rule: a path holds a folder separator or ends in ``.yaml`` / ``.yml`` / ``.json``."""
    text = str(text)
    return "/" in text or "\\" in text or Path(text).suffix in SPEC_SUFFIXES


def resolve_spec(kind: str, name_or_path: Union[str, Path]) -> Path:
    """The file of a spec given by shipped name or by path (:func:`looks_like_path`); unknown names and missing
    files are a :class:`SpecError` (an unknown name lists the known ones)."""
    k = _kind(kind)
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or looks_like_path(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise SpecError(f"{path}: {k.label} file not found")
        return path
    index = spec_index(kind)
    if text not in index:
        known = ", ".join(sorted(index)) or "(none)"
        raise SpecError(f"unknown {k.label} {text!r}; known: {known} (or give a path to a "
                        f"{'/'.join(s.lstrip('.') for s in k.suffixes)} file)")
    return index[text]


def load_named(kind: str, name_or_path: Union[str, Path]) -> Tuple[Dict[str, Any], Path]:
    """``(mapping, file)`` of a spec by name or path; ``name`` defaults to the file stem."""
    path = resolve_spec(kind, name_or_path)
    return read_named_file(kind, path), path


# -- inheritance --------------------------------------------------------------------------------------------------------
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


def read_named_file(kind: str, path: Union[str, Path]) -> Dict[str, Any]:
    """One spec file of ``kind`` as written (``base:`` unresolved); ``name`` defaults to the file stem."""
    path = Path(path)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    return data


#: a per-level expansion run on each spec of a ``base:`` chain before it is merged (``(spec, where) -> spec``)
Expand = Callable[[Dict[str, Any], str], Dict[str, Any]]


def resolve_base(kind: str, spec: Mapping[str, Any], where: str, index: Optional[Mapping[str, Path]] = None,
                 expand: Optional[Expand] = None, _chain: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Resolve ``base: NAME`` (a shipped spec of the same ``kind``) of ``spec``, recursively.

    The result is ``merge_spec(resolved(base), own)`` (see :func:`merge_spec`), where ``own`` is ``spec`` minus
    ``base`` (after ``expand``, when given), without the base's :data:`NOT_INHERITED` keys the child does not give; a
    spec without ``base`` is returned as a copy. A chain (``loupe-small-no-fsa -> loupe-small -> loupe-tiny``)
    resolves bottom-up. An unknown base or a cycle (``a -> b -> a``) is a :class:`SpecError` naming ``where`` (the
    file, or ``<mapping>``).
    """
    own = dict(expand(dict(spec), where) if expand is not None else spec)
    if "base" not in own:
        return copy.deepcopy(own)
    base = own.pop("base")
    name = str(own.get("name", "?"))
    label = _kind(kind).label
    chain = _chain + (name,)
    if index is None:
        index = spec_index(kind)
    if not isinstance(base, str) or base not in index:
        raise SpecError(f"{where}: {label} spec {name!r}: unknown base {base!r}; "
                        f"known: {', '.join(sorted(index)) or '(none)'}")
    if base in chain:
        raise SpecError(f"{where}: {label} spec {name!r}: cycle in base specs ({' -> '.join(chain + (base,))})")
    parent_path = index[base]
    parent = resolve_base(kind, read_named_file(kind, parent_path), str(parent_path), index, expand, chain)
    merged = merge_spec(parent, own)
    for key in NOT_INHERITED:  # kept in the base's place when the child gives them, else dropped
        if key not in own:
            merged.pop(key, None)
    return merged


def list_references() -> List[Tuple[str, str]]:
    """Committed reference runs of the regression gate: ``(name, description)``."""
    out = []
    for name, f in sorted(spec_index("reference").items()):
        try:
            ref = read_spec(f)
            desc = f"{len(ref.get('rows', []))} gated rows, seeds {ref.get('seeds', '?')}"
        except (SpecError, AttributeError):
            desc = "(unreadable)"
        out.append((name, desc))
    return out


def reference_path(name_or_path: Union[str, Path]) -> Path:
    """Resolve ``--reference``: a committed reference by name (``synthetic-quick``) or a path (the rule of
    :func:`looks_like_path`). A path need not exist yet: ``check --update`` creates it, and the gate reports a
    missing reference itself."""
    if isinstance(name_or_path, Path) or looks_like_path(name_or_path):
        return Path(str(name_or_path)).expanduser()
    return resolve_spec("reference", name_or_path)


# -- dotted overrides ---------------------------------------------------------------------------------------------------
def parse_assignments(items: Iterable[str], option: str = "--set", example: str = "optim.lr=1e-3") -> Dict[str, Any]:
    """``KEY=VALUE`` command-line items -> ``{KEY: value}`` with each VALUE read as YAML (``1e-3`` a float, ``true``
    a bool); a missing ``=`` or a value that is not YAML is a :class:`SpecError` naming the item."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise SpecError(f"{option} {item!r}: expected KEY=VALUE, e.g. {example}")
        from .utils.bounded import yaml_load

        try:
            parsed = yaml_load(value, f"{option} {key.strip()}", error=SpecError)
        except SpecError:
            raise SpecError(f"{option} {item!r}: value is not valid YAML") from None
        if _has_nan(parsed):
            raise SpecError(f"{option} {item!r}: NaN is not a valid value")
        out[key.strip()] = parsed
    return out


def _has_nan(value: Any) -> bool:
    """Whether a parsed value holds a NaN anywhere (never a meaningful option)."""
    if isinstance(value, float):
        return value != value
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False


def check_dotted(cls: type, key: str, what: str = "override") -> None:
    """Check that the dotted ``key`` names a field of the config dataclass ``cls``: every part but the last a nested
    dataclass (a section), the last a field of it; else a :class:`SpecError` naming the key and the known fields
    there (a field without a dataclass default, e.g. a free mapping, takes any key below it)."""
    parts = str(key).split(".")
    current: Optional[type] = cls
    for i, part in enumerate(parts):
        if current is None:
            return
        fields = {f.name: f for f in dataclasses.fields(current)}
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            raise SpecError(f"{what} {key!r}: unknown field {part!r} in {where}; known: {', '.join(sorted(fields))}")
        if i < len(parts) - 1:
            nested = _nested_class(fields[part])
            if nested is None and fields[part].default_factory is dataclasses.MISSING:
                raise SpecError(f"{what} {key!r}: {'.'.join(parts[:i + 1])!r} is a value, not a section")
            current = nested


def set_dotted(data: Dict[str, Any], key: str, value: Any, *, create: bool = False) -> bool:
    """Set the dotted ``key`` (``a.b.c``) of the nested mapping ``data`` to ``value`` (in place).

    With ``create`` missing (or ``None``) parents become mappings and a missing last key is added; without it only
    an existing key is replaced. Returns whether the value was set (``False``: a parent is missing or is a value)."""
    parts = str(key).split(".")
    node: Any = data
    for part in parts[:-1]:
        if create and isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return False
    if create or parts[-1] in node:
        node[parts[-1]] = value
        return True
    return False


# -- strict dataclasses -------------------------------------------------------------------------------------------------
#: a field check returns an error text, or ``None`` when the value is fine (``check.numeric``: read numbers first)
Check = Callable[[Any], Optional[str]]

#: a number written the way YAML 1.1 leaves it a string (``1e-3``: no dot in the mantissa, or no sign in the exponent)
_NUMBER_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def yaml_number(value: Any) -> Any:
    """``"1e-3"`` -> ``0.001``: a string that is a decimal number (YAML 1.1 reads ``1e-3`` as a string, YAML 1.2 as
    a float) becomes an int (no dot, no exponent) or a float; anything else is returned unchanged."""
    if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    return value


def _nested_class(f: dataclasses.Field) -> Optional[type]:
    factory = f.default_factory
    return factory if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory) else None


#: Largest integer a config field takes (a seed, a step count): what a 64-bit signed counter holds.
MAX_INT = 2**63 - 1


def _finite_error(value: Any) -> Optional[str]:
    """Every number of a config is finite and integers fit 64 bits (NaN / inf / 10**30 are never an option)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if isinstance(value, int) and abs(value) > MAX_INT:
        return f"must be an integer of at most {MAX_INT}, got a {len(str(abs(value)))}-digit number"
    if isinstance(value, (list, tuple)):
        return next((e for e in map(_finite_error, value) if e), None)
    return None


def _type_hints(cls: type) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation this module cannot resolve: fields without a check are then not type-checked
        return {}


def _numeric_hint(hint: Any) -> bool:
    """Whether an annotation is ``float`` (optionally ``Optional``): its text values such as ``"1e-3"`` (a string in
    YAML 1.1) are read as numbers; an integer field never takes text."""
    return hint is float or (typing.get_origin(hint) is Union and float in typing.get_args(hint))


_SCALARS = {int: "an integer", float: "a number", str: "a text value", bool: "true or false"}


def _type_error(value: Any, hint: Any) -> Optional[str]:
    """Why ``value`` does not fit the annotation ``hint`` of a config field without its own check (``int``,
    ``float`` (an integer is a number), ``str``, ``bool``, ``Optional``/``Union`` of them, ``List``/``Tuple``/
    ``Sequence`` of them, ``Dict`` with text keys); ``None`` when it fits or the annotation is anything else."""
    if hint is None or hint is Any:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        errors = [_type_error(value, a) for a in args if a is not type(None)]
        if value is None and type(None) in args:
            return None
        return None if not errors or any(e is None for e in errors) else errors[0]
    if hint in _SCALARS:
        ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        ok = ok or (hint is float and isinstance(value, int) and not isinstance(value, bool))
        return None if ok else f"must be {_SCALARS[hint]}, got {value!r}"[:200]
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return f"must be a list, got {value!r}"[:200]
        inner = args[0] if args else None
        return next((e for e in (_type_error(v, inner) for v in value) if e), None)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return f"must be a mapping, got {value!r}"[:200]
        return None if all(isinstance(k, str) for k in value) else "mapping keys must be text"
    return None


def from_mapping(cls: type, data: Optional[Mapping[str, Any]], source: str = "<mapping>", prefix: str = "") -> Any:
    """Build the config dataclass ``cls`` from ``data``, strictly.

    ``None`` is ``{}``. A key that is not a field is a :class:`SpecError` (``SOURCE: unknown field 'PREFIX.KEY';
    known: ...``); a field whose default is a dataclass (``field(default_factory=Cfg)``) is built from its sub-mapping
    the same way; a field with ``metadata["check"]`` runs it (numbers written as text read first when the check is
    numeric) and a failure names ``SOURCE`` and the dotted field. Missing fields keep their defaults.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: field '{prefix or '<top>'}': must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise SpecError(f"{source}: unknown field '{where}{unknown[0]}'; known: {', '.join(sorted(fields))}")
    kwargs: Dict[str, Any] = {}
    hints = _type_hints(cls)
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        nested = _nested_class(f)
        if nested is not None:
            kwargs[name] = from_mapping(nested, data.get(name), source, dotted)
            continue
        if name not in data:
            continue
        value = data[name]
        check = f.metadata.get("check")
        if getattr(check, "numeric", False) or (check is None and _numeric_hint(hints.get(name))):
            value = yaml_number(value)
        err = _finite_error(value) or (check(value) if check else _type_error(value, hints.get(name)))
        if err:
            raise SpecError(f"{source}: field '{dotted}': {err}")
        kwargs[name] = list(value) if isinstance(value, tuple) else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{source}: field '{prefix or '<top>'}': {exc}") from None
