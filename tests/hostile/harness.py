"""Run one hostile case in-process and check the invariants every case shares.

A case builds its inputs under its own folder ``root`` (``root/in``: input copies, ``root/cwd``: the working
directory, ``root/out``: the only place the command may write), returns the argv, and declares the exit code(s) the
issue's rule gives it. The harness then checks, for every case:

* the exit code; for exit 2 exactly one non-empty line on stderr, starting with ``error:``; never ``Traceback``;
* no marker file from a planted ``pipe:touch MARKER`` command (in ``root``, ``root/cwd``, the shared world, the
  process's original working directory);
* every input folder unchanged (path -> type, size, mtime_ns, mode, link target, sha256 of small files), and nothing
  new or changed anywhere under ``root`` except ``root/out`` (and ``root/out`` itself unchanged when it is an input);
* for an exit-2 refusal, no file written into a fresh ``root/out`` (refused before writing);
* for gathering commands (report, check, compare, export): no ``nan`` / ``inf`` in their console output or files.

Bounded resources: each command runs under a wall-clock alarm (a hang is reported as ``hang``) and an address-space
limit a few GiB above the process's current size (an unbounded allocation becomes a ``MemoryError`` rather than an
out-of-memory kill of the shared machine).
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

MARKER = "PWNED"
#: seconds one command may take before it counts as a hang
CASE_TIMEOUT_S = 10.0
#: ... and for train (a wrongly accepted input trains 2 steps; resume cases train one more)
TRAIN_TIMEOUT_S = 40.0
#: address space a command may add above the process's size when it starts
MEMORY_HEADROOM = 3 << 30
SMALL_FILE = 256 << 10
GATHERING = ("report", "check", "compare", "export")
NON_FINITE = re.compile(r"(?<![A-Za-z_])(nan|[+-]?inf(inity)?)(?![A-Za-z_])", re.IGNORECASE)


class CaseTimeout(BaseException):
    """Raised by the alarm inside a hanging command (a BaseException: an `except Exception` cannot swallow it)."""


class WouldRun(BaseException):
    """Raised by the stand-ins for benchmarks and reproduction pipelines: an options-only case got past validation."""


@dataclass
class Outcome:
    code: Union[int, str]
    out: str
    err: str
    seconds: float


@dataclass
class Case:
    surface: str
    name: str
    build: Callable[["Ctx"], List[str]]
    expect: Tuple[int, ...]
    checks: Tuple[Callable[["Ctx", Outcome], None], ...] = ()
    needs_bank: bool = False
    why: str = ""

    @property
    def id(self) -> str:
        return f"{self.surface}-{self.name}"


def snapshot(folder: Path, skip: Sequence[Path] = ()) -> Dict[str, tuple]:
    """Path (relative) -> (type, size, mtime_ns, mode, link target or sha256 of a small regular file). Never opens
    anything but small regular files (FIFOs, devices and links are described by lstat alone)."""
    folder = Path(folder)
    skip = {os.path.abspath(s) for s in skip}
    out: Dict[str, tuple] = {}
    if not os.path.lexists(folder):
        return out
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        if os.path.abspath(dirpath) in skip:
            dirnames[:] = []
            continue
        for name in list(dirnames) + filenames:
            p = os.path.join(dirpath, name)
            if os.path.abspath(p) in skip:
                continue
            st = os.lstat(p)
            extra: object = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode) and st.st_size <= SMALL_FILE:
                with open(p, "rb") as fh:
                    extra = hashlib.sha256(fh.read()).hexdigest()
            isdir = stat.S_ISDIR(st.st_mode)
            out[os.path.relpath(p, folder)] = (stat.S_IFMT(st.st_mode), None if isdir else st.st_size,
                                               None if isdir else st.st_mtime_ns, st.st_mode, extra)
    return out


def diff(before: Dict[str, tuple], after: Dict[str, tuple]) -> List[str]:
    changes = [f"removed {k}" for k in sorted(set(before) - set(after))]
    changes += [f"new {k}" for k in sorted(set(after) - set(before))]
    changes += [f"changed {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return changes


def _files(folder: Path) -> List[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


class Ctx:
    """One case's folders and helpers (see the module docstring)."""

    def __init__(self, root: Path, world: Path, bank=None):
        self.root = Path(root)
        self.inputs = self.root / "in"
        self.cwd = self.root / "cwd"
        self.out = self.root / "out"
        self.marker = self.root / MARKER
        self.shared_world = Path(world)
        self.bank = bank
        self.shared: List[Path] = []         # read-only shared folders this case reads (snapshotted)
        self.out_is_input = False            # the case's out folder holds input (a run to resume, a foreign folder)
        for d in (self.inputs, self.cwd):
            d.mkdir(parents=True, exist_ok=True)

    # -- inputs -------------------------------------------------------------------------------------------------------
    @property
    def planted(self) -> str:
        """A planted shell command that would create the marker file."""
        return f"pipe:touch {self.marker}; cat /dev/null"

    def world(self, copy: bool = False) -> Path:
        """The tiny synthetic world: shared (read-only, snapshotted) or a private copy under ``in/``."""
        import shutil

        if not copy:
            if self.shared_world not in self.shared:
                self.shared.append(self.shared_world)
            return self.shared_world
        dest = self.inputs / "world"
        if not dest.exists():
            shutil.copytree(self.shared_world, dest, symlinks=True)
        return dest

    def use_bank(self, path: Path) -> Path:
        if path not in self.shared:
            self.shared.append(path)
        return path

    def copy_in(self, src: Path, name: Optional[str] = None) -> Path:
        import shutil

        dest = self.inputs / (name or Path(src).name)
        if Path(src).is_dir():
            shutil.copytree(src, dest, symlinks=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        return dest

    def write(self, rel: str, data: Union[str, bytes]) -> Path:
        p = self.inputs / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode("utf-8")
        p.write_bytes(data)
        return p

    def marker_paths(self) -> List[Path]:
        paths = [self.marker, self.cwd / MARKER, self.shared_world / MARKER, Path(_START_CWD) / MARKER]
        paths += [self.inputs / MARKER, self.inputs / "world" / MARKER]
        return paths


_START_CWD = os.getcwd()


# -- running ----------------------------------------------------------------------------------------------------------
def _address_space() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_main(argv: Sequence[str], capsys, timeout: float = CASE_TIMEOUT_S) -> Outcome:
    """``main(argv)`` in-process under an alarm and an address-space limit; an exception escaping ``main`` becomes
    ``code = 'raised <Type>: <message>'``."""
    from loupe_bench.cli.main import main

    def on_alarm(signum, frame):
        raise CaseTimeout()

    capsys.readouterr()
    _rebind_log_streams()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, timeout)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    t0 = time.perf_counter()
    code: Union[int, str]
    try:
        main([str(a) for a in argv])
        code = "returned without SystemExit"
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else f"exit {exc.code!r}")
    except CaseTimeout:
        code = f"hang (no answer in {timeout:.0f} s)"
    except WouldRun as exc:
        code = f"accepted and started {exc}"
    except BaseException as exc:  # noqa: BLE001 - what escapes main() is the finding
        code = f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    finally:
        seconds = time.perf_counter() - t0
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, max(previous_timer[0] - seconds, 0.001), previous_timer[1])
    cap = capsys.readouterr()
    return Outcome(code, cap.out, cap.err, seconds)


def _rebind_log_streams() -> None:
    """Logging handlers made by an earlier case hold that case's (closed) captured stderr; point them at this case's,
    as a fresh process would have them write to its stderr."""
    import logging
    import sys

    loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values()
                                       if isinstance(l, logging.Logger)]
    import io

    for logger in loggers:
        for h in logger.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) \
                    and not isinstance(h.stream, io.StringIO) and h.stream not in (sys.stdout, sys.stderr):
                h.stream = sys.stderr  # not setStream: it flushes the old, closed stream


def _short(text: str, n: int = 300) -> str:
    text = " | ".join(l for l in text.splitlines() if l.strip())
    return text if len(text) <= n else text[:n] + " ..."


def verify(case: Case, ctx: Ctx, argv: Sequence[str], res: Outcome, before: dict, out_existed: bool) -> List[str]:
    """Every invariant of the module docstring; returns the violations (empty: the case passed)."""
    problems: List[str] = []
    if res.code not in case.expect:
        exp = " or ".join(map(str, case.expect))
        problems.append(f"exit {res.code} (expected {exp}); stderr: {_short(res.err)}")
    if "Traceback" in res.out + res.err:
        problems.append("a traceback was printed")
    if res.code == 2:
        lines = [l for l in res.err.splitlines() if l.strip()]
        if len(lines) != 1 or not lines[0].startswith("error:"):
            problems.append(f"exit 2 without exactly one 'error:' line on stderr ({len(lines)} lines: "
                            f"{_short(res.err)})")
    for m in ctx.marker_paths():
        if os.path.lexists(m):
            problems.append(f"planted command ran: {m} exists")
    after = _snapshots(ctx)
    for label in before:
        changes = diff(before[label], after.get(label, {}))
        if changes:
            problems.append(f"{label} changed: {', '.join(changes[:6])}" + (" ..." if len(changes) > 6 else ""))
    if res.code == 2 and not ctx.out_is_input and not out_existed:
        written = _files(ctx.out)
        if written:
            problems.append(f"refused, but wrote {len(written)} file(s) into --out "
                            f"({', '.join(p.name for p in written[:4])})")
    if argv and str(argv[0]) in GATHERING:
        texts = [("stdout", res.out)]
        for p in _files(ctx.out):
            if p.suffix in (".csv", ".md", ".json", ".html", ".txt") and p.stat().st_size < (8 << 20):
                texts.append((p.name, p.read_text(errors="replace")))
        for label, text in texts:
            if label.endswith(".html"):
                text = re.sub(r"<script.*?</script>|data:[^\"']+", "", text, flags=re.S)
            hit = NON_FINITE.search(text)
            if hit:
                problems.append(f"non-finite number {hit.group(0)!r} in {label}")
                break
    for check in case.checks:
        try:
            check(ctx, res)
        except AssertionError as exc:
            problems.append(str(exc) or f"check {check.__name__} failed")
    return problems


def _snapshots(ctx: Ctx) -> Dict[str, dict]:
    snaps = {"case folder (outside --out)": snapshot(ctx.root, skip=[] if ctx.out_is_input else [ctx.out])}
    for p in ctx.shared:
        snaps[f"shared input {p.name}"] = snapshot(p)
    return snaps


def run_case(case: Case, ctx: Ctx, capsys, monkeypatch) -> Tuple[List[str], Outcome, List[str]]:
    monkeypatch.chdir(ctx.cwd)
    monkeypatch.delenv("LOUPE_BENCH_TRACEBACK", raising=False)
    argv = [str(a) for a in case.build(ctx)]
    out_existed = os.path.lexists(ctx.out)
    before = _snapshots(ctx)
    res = run_main(argv, capsys, TRAIN_TIMEOUT_S if argv[:1] == ["train"] else CASE_TIMEOUT_S)
    return argv, res, verify(case, ctx, argv, res, before, out_existed)
