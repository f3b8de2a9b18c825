"""Running ``loupe-bench`` in-process from a test, and the one-line error rule (docs/architecture.md, "Errors")."""
from __future__ import annotations

from typing import Iterable, Tuple

import pytest

from loupe_bench.cli.main import main


def run_cli(argv, capsys) -> Tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``loupe-bench ARGV`` run in this process."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def one_line_error(code: int, err: str, *needles, contains: Iterable[str] = ()) -> str:
    """Exit 2, exactly one ``error:`` line (naming every needle), no traceback, no advice to load unsafely."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "weights_only=False" not in err and "set to `False`" not in err, err
    for needle in (*needles, *contains):
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]
