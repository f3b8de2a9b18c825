"""Atomic writes (temp file in the same directory, fsync, rename) and stable hashing.

Temp files and folders of ours are named ``.<target name>.<pid>.<random>.tmp``; :func:`clean_stale_temps` removes
the ones whose writing process is gone (a killed run or eval) on the next start.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

from ..errors import DataError

PathLike = Union[str, os.PathLike]


def atomic_write_bytes(path: PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one.

    ``fsync=False`` skips flushing the file to disk before the rename: for bulk files (thousands of images) whose
    writer fsyncs the metadata files it writes last. The bytes, permissions and temp naming are the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp$")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def clean_stale_temps(directory: PathLike) -> int:
    """Remove temp files / folders of ours (``.<name>.<pid>.<random>.tmp``) in ``directory`` whose writing process
    no longer runs (a temp of a live process, another run writing now, is kept). Returns how many were removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    n = 0
    for entry in directory.iterdir():
        m = _TEMP_NAME.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink()
            except FileNotFoundError:
                continue
        n += 1
    return n


def _same_tree(a: Path, b: Path) -> bool:
    files_a = {str(p.relative_to(a)): p for p in a.rglob("*") if p.is_file()}
    files_b = {str(p.relative_to(b)): p for p in b.rglob("*") if p.is_file()}
    return files_a.keys() == files_b.keys() and all(files_a[k].read_bytes() == files_b[k].read_bytes()
                                                    for k in files_a)


def atomic_write_dir(target: PathLike, write: Callable[[Path], Any]) -> Path:
    """Write a folder (e.g. ``save_pretrained``) atomically and only when its content changes.

    ``write(tmp)`` fills a temp folder beside ``target``; a missing ``target`` is then created by one rename; an
    existing one with the same files and bytes is left untouched (written once); a different one is swapped out
    (rename old aside, rename new in, delete old), so readers see the old or the new folder, never a mix.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=str(target.parent)))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp creates 0700; give the folder the usual permissions
        write(tmp)
        if target.is_dir() and _same_tree(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        if not target.exists():
            os.replace(tmp, target)
            return target
        old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=str(target.parent)))
        os.rmdir(old)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON with sorted keys (byte-stable for equal objects)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: PathLike, kind: str = "annotation") -> Any:
    """Read JSON from a regular file within the size limit of ``kind`` (:mod:`~loupe_bench.utils.bounded`); a
    missing, oversized, non-regular or malformed file is a :class:`DataError` naming the file (and line)."""
    from .bounded import load_json_file

    return load_json_file(path, kind=kind, error=DataError)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file's bytes (a FIFO or device is refused, never read: it could block or never end)."""
    from .bounded import regular_file

    regular_file(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no whitespace), truncated to ``length`` hex chars."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]
