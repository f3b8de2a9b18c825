"""The mutation grammar: how a valid input (a *seed*) is made hostile.

Three kinds of mutation, each a named function:

* ``DOC``-level (:func:`at`): set a value at a dotted path of a parsed YAML/JSON document (wrong type, huge, NaN,
  negative, empty list, unknown key, path traversal, planted command, URL, ...), written back as YAML or JSON;
* ``RAW`` (bytes -> bytes): truncate, non-UTF-8 bytes, empty, binary garbage, YAML alias bomb, deep nesting;
* ``FILE`` (replace the file itself): FIFO, symlink to /dev/zero, directory, missing, dangling symlink, sparse
  oversized file.

:func:`apply` applies one mutation to a seed file; :mod:`.cases` combines seeds x mutations x commands into cases.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

import yaml

NAN, INF = float("nan"), float("inf")
HUGE_INT = 10 ** 30
DEEP = 20000


# -- document values ------------------------------------------------------------------------------------------------
def at(path: str, value: Any) -> Callable[[Any], Any]:
    """A mutation setting ``path`` (dotted; ``a.0.b`` indexes lists) to ``value``; ``value`` ``DELETE`` removes it."""

    def mutate(doc: Any) -> Any:
        doc = copy.deepcopy(doc)
        keys = path.split(".")
        node = doc
        for k in keys[:-1]:
            if isinstance(node, list):
                node = node[int(k)]
            else:
                node = node.setdefault(k, {})
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
        return doc

    mutate.__name__ = f"at({path}={value!r})"
    return mutate


def both(*fns: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def mutate(doc):
        for f in fns:
            doc = f(doc)
        return doc

    return mutate


DELETE = object()


# -- raw bytes ------------------------------------------------------------------------------------------------------
def truncate(data: bytes) -> bytes:
    """Cut in half; where a flow collection (``[`` / ``{``) opens after the middle, cut just inside it, so that a
    YAML or JSON document is always left unterminated (not a shorter valid document)."""
    half = max(1, len(data) // 2)
    opens = [i for i in (data.find(b"[", half), data.find(b"{", half)) if i >= 0]
    return data[: min(opens) + 1] if opens else data[:half]


def non_utf8(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + b"\xff\xfe\xc3\x28\x80" + data[i:]


def empty(data: bytes) -> bytes:
    return b""


def binary(data: bytes) -> bytes:
    return bytes((i * 131 + 7) % 256 for i in range(4096))


def yaml_alias_bomb(data: bytes = b"", levels: int = 7, width: int = 9) -> bytes:
    """A few hundred bytes of YAML whose aliases expand to width**levels strings (4.8 M at 7 x 9)."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for k in range(1, levels + 1):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * width) + "]")
    return ("\n".join(lines) + "\n").encode()


def _bomb_under(key: str, levels: int = 7, width: int = 9) -> str:
    out = [f"x_anchors:"]  # never reached by a strict loader: it must refuse the aliases (or the unknown key) first
    out.append(f"  a0: &a0 [" + ", ".join(['"lol"'] * width) + "]")
    for k in range(1, levels + 1):
        out.append(f"  a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * width) + "]")
    out.append(f"{key}: *a{levels}")
    return "\n".join(out) + "\n"


def yaml_deep(data: bytes = b"") -> bytes:
    return ("key: " + "[" * DEEP + "]" * DEEP + "\n").encode()


def json_deep(data: bytes = b"") -> bytes:
    return ("{\"images\": " + "[" * DEEP + "]" * DEEP + "}").encode()


RAW: Dict[str, Callable[[bytes], bytes]] = {
    "truncate": truncate,
    "non_utf8": non_utf8,
    "empty": empty,
    "binary": binary,
}
YAML_RAW = {**RAW, "alias_bomb": yaml_alias_bomb, "deep_nesting": yaml_deep}
JSON_RAW = {**RAW, "deep_nesting": json_deep}


# -- the file itself ------------------------------------------------------------------------------------------------
def fifo(path: Path) -> None:
    _remove(path)
    os.mkfifo(path)


def dev_zero(path: Path) -> None:
    _remove(path)
    os.symlink("/dev/zero", path)


def directory(path: Path) -> None:
    _remove(path)
    path.mkdir()
    (path / "x").write_text("x")


def missing(path: Path) -> None:
    _remove(path)


def dangling(path: Path) -> None:
    _remove(path)
    os.symlink(path.parent / "does-not-exist", path)


def sparse_huge(path: Path, size: int = 6 << 30) -> None:
    """A 6 GiB sparse file (no disk used): anything that reads it whole runs out of the case's address space."""
    _remove(path)
    with open(path, "wb") as fh:
        fh.truncate(size)


FILE: Dict[str, Callable[[Path], None]] = {
    "fifo": fifo,
    "dev_zero": dev_zero,
    "directory": directory,
    "missing": missing,
    "dangling_symlink": dangling,
    "oversized": sparse_huge,
}


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


# -- applying -------------------------------------------------------------------------------------------------------
Mutation = Union[Callable[[Any], Any], Tuple[str, Callable]]


def dump(doc: Any, path: Path) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(doc))  # NaN / Infinity written as JSON's extension literals, as a careless tool
    else:
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None))


def apply(path: Path, kind: str, fn: Callable) -> None:
    """Apply a mutation of ``kind`` ``doc`` / ``raw`` / ``file`` to the seed file at ``path``."""
    path = Path(path)
    if kind == "doc":
        text = path.read_text()
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        dump(fn(doc), path)
    elif kind == "raw":
        path.write_bytes(fn(path.read_bytes()))
    elif kind == "file":
        fn(path)
    else:
        raise ValueError(kind)


def generic(raw: Dict[str, Callable]) -> List[Tuple[str, str, Callable]]:
    """Every raw and file mutation as ``(name, kind, fn)``."""
    return [(n, "raw", f) for n, f in raw.items()] + [(n, "file", f) for n, f in FILE.items()]


# -- planted payloads -----------------------------------------------------------------------------------------------
def planted_pickle(marker: Path) -> bytes:
    """A pickle that runs ``touch marker`` when unpickled (a loader must never unpickle it)."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Payload(), protocol=2)


def planted_torch_file(marker: Path, path: Path) -> None:
    """A torch.save zip whose data.pkl runs ``touch marker`` on an unrestricted load."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": Payload()}, path)


def safetensors_header(header: dict, data: bytes = b"", length: int = None) -> bytes:
    import struct

    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data
