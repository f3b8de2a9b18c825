"""Limits applied to everything read from a user's folder, before it is read or allocated.

One rule for every reader (specs, recipes, task specs, references, results, data annotations, model folders):

* **file type**: only regular files are opened (a symlink is followed, but its target must be a regular file); a
  FIFO, a device (``/dev/zero``), a socket or a folder is refused without being opened, so a read can never block
  or run forever;
* **size**: a file larger than its kind's limit is refused from ``stat`` alone (:data:`LIMITS`);
* **structure**: YAML and JSON documents are limited in nesting depth and in *expanded* size — the number of nodes
  the document holds once every YAML alias is replaced by the node it names. A "billion laughs" document of a few
  hundred bytes therefore fails at parse time, before any mapping is built.

Every refusal is the caller's error class (:class:`~loupe_bench.errors.SpecError` for specs,
:class:`~loupe_bench.errors.DataError` for data) naming the file.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Dict, Optional, Type, Union

import yaml

from ..errors import DataError, LoupeBenchError

PathLike = Union[str, os.PathLike]

MiB = 1 << 20

#: Largest file of each kind read whole into memory (bytes).
LIMITS: Dict[str, int] = {
    "spec": 1 * MiB,          # model / task / recipe / tower YAML, paper tables
    "reference": 16 * MiB,    # the gate's reference JSON
    "result": 16 * MiB,       # one result JSON
    "config": 4 * MiB,        # config.json, preprocessor / tokenizer configs, open_clip architecture JSON
    "annotation": 2048 * MiB,  # COCO / Karpathy / refer annotation files
    "image": 256 * MiB,
    "header": 100 * MiB,      # a safetensors header
}

#: Deepest nesting of a YAML / JSON document.
MAX_DEPTH = 64
#: Most nodes of a YAML document once its aliases are expanded.
MAX_EXPANDED_NODES = 200_000


def regular_file(path: PathLike, *, what: str = "file", limit: Optional[int] = None,
                 error: Type[LoupeBenchError] = DataError) -> Path:
    """``path`` when it is a regular file (symlinks followed) of at most ``limit`` bytes; else ``error`` naming it.

    Nothing is opened: the checks use ``stat`` only, so a FIFO or a device is refused without blocking."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise _err(error, f"{what} not found", p) from None
    except OSError as exc:
        raise _err(error, f"cannot read {what}: {exc.strerror or exc}", p) from None
    if stat.S_ISDIR(st.st_mode):
        raise _err(error, f"{what} is a folder, expected a file", p)
    if not stat.S_ISREG(st.st_mode):
        raise _err(error, f"{what} is not a regular file (a FIFO, device or socket is never read)", p)
    if limit is not None and st.st_size > limit:
        raise _err(error, f"{what} is {st.st_size:,} bytes, above the limit of {limit:,} bytes", p)
    return p


def read_bytes(path: PathLike, *, kind: str = "annotation", what: str = "file",
               error: Type[LoupeBenchError] = DataError) -> bytes:
    """The bytes of a regular file within :data:`LIMITS` ``[kind]``; errors name the file."""
    p = regular_file(path, what=what, limit=LIMITS[kind], error=error)
    try:
        with open(p, "rb") as fh:
            data = fh.read(LIMITS[kind] + 1)
    except OSError as exc:
        raise _err(error, f"cannot read {what}: {exc.strerror or exc}", p) from None
    if len(data) > LIMITS[kind]:  # grew between stat and read
        raise _err(error, f"{what} is above the limit of {LIMITS[kind]:,} bytes", p)
    return data


def read_text(path: PathLike, *, kind: str = "annotation", what: str = "file",
              error: Type[LoupeBenchError] = DataError) -> str:
    data = read_bytes(path, kind=kind, what=what, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _err(error, f"not UTF-8 text ({exc.reason} at byte {exc.start})", Path(path)) from None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts nesting depth while composing (deep documents fail cleanly)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: D102 - PyYAML hook
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, memo: Dict[int, int], depth: int = 0) -> int:
    """Nodes of ``node``'s tree with every alias expanded (shared nodes counted once per use)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if depth > MAX_DEPTH:
        raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels")
    memo[key] = MAX_EXPANDED_NODES + 1  # a cycle (recursive alias) counts as over the limit
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, memo, depth + 1) + _expanded_size(v, memo, depth + 1)
                        for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(v, memo, depth + 1) for v in node.value)
    else:
        total = 1
    memo[key] = min(total, MAX_EXPANDED_NODES + 1)
    return memo[key]


def yaml_load(text: str, source: str = "<text>", *, error: Type[LoupeBenchError] = DataError) -> Any:
    """``yaml.safe_load(text)`` within :data:`MAX_DEPTH` and :data:`MAX_EXPANDED_NODES`; errors name ``source``.

    The document is composed into nodes first (linear in the text), its expanded size counted with shared nodes
    memoised, and only then constructed — so an alias bomb never allocates its expansion."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(f"expands to more than {MAX_EXPANDED_NODES:,} nodes (YAML aliases)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _err(error, f"malformed YAML: {exc}".replace("\n", " "), Path(source)) from None
    except RecursionError:
        raise _err(error, f"malformed YAML: nested deeper than {MAX_DEPTH} levels", Path(source)) from None
    finally:
        loader.dispose()


def _json_depth_ok(text: str) -> bool:
    """Cheap scan: bracket nesting depth (outside strings) stays within :data:`MAX_DEPTH`."""
    depth = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def json_load(text: str, source: str = "<text>", *, error: Type[LoupeBenchError] = DataError) -> Any:
    """``json.loads`` within :data:`MAX_DEPTH`; non-finite constants (``NaN``, ``Infinity``) are refused.

    The depth scan is skipped for large documents (annotation files): their nesting is checked by the parser's own
    recursion limit, caught here."""
    if len(text) <= 4 * MiB and not _json_depth_ok(text):
        raise _err(error, f"malformed JSON: nested deeper than {MAX_DEPTH} levels", Path(source))

    def _no_constant(name: str) -> Any:
        raise ValueError(f"non-finite number {name} is not JSON")

    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _err(error, f"malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", Path(source)) from None
    except ValueError as exc:
        raise _err(error, f"malformed JSON: {exc}", Path(source)) from None
    except RecursionError:
        raise _err(error, "malformed JSON: nested too deeply", Path(source)) from None


def load_yaml_file(path: PathLike, *, kind: str = "spec", error: Type[LoupeBenchError] = DataError) -> Any:
    """A bounded YAML (or, for ``.json``, JSON) file: :func:`read_text` then :func:`yaml_load` / :func:`json_load`."""
    p = Path(path)
    text = read_text(p, kind=kind, error=error)
    if p.suffix == ".json":
        return json_load(text, str(p), error=error)
    return yaml_load(text, str(p), error=error)


def load_json_file(path: PathLike, *, kind: str = "annotation", error: Type[LoupeBenchError] = DataError) -> Any:
    p = Path(path)
    return json_load(read_text(p, kind=kind, error=error), str(p), error=error)


def _err(error: Type[LoupeBenchError], message: str, path: Path) -> LoupeBenchError:
    try:
        return error(message, file=str(path))  # DataError / SpecError: located
    except TypeError:
        return error(f"{path}: {message}")
