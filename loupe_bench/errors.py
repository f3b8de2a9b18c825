"""Exception types shared by the whole package.

Every error a user can cause (bad input file, unknown spec name, bad option value) is a
:class:`LoupeBenchError`. The CLI turns these into one clear line on stderr and exit code 2, without a
traceback; so are environment errors (``OSError``: a read-only folder, a full disk). Anything else is a bug: one
line and exit code 3, its traceback shown with ``LOUPE_BENCH_TRACEBACK=1``.
"""
from __future__ import annotations

from typing import Optional


class LoupeBenchError(Exception):
    """A user or input error: reported as one line, CLI exit code 2."""

    exit_code = 2


class _Located(LoupeBenchError):
    """An error that names where it is: the file and, where it applies, the record.

    Args:
        message: what is wrong.
        file: the file (or shard, or directory) that holds the bad record.
        record: an identifier of the record inside the file (image id, sentence id, line number, sample key, entry).
    """

    def __init__(self, message: str, file: Optional[str] = None, record: Optional[str] = None):
        self.message = message
        self.file = None if file is None else str(file)
        self.record = None if record is None else str(record)
        super().__init__(self.format())

    def format(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.record is not None:
            where.append(f"record {self.record}")
        prefix = ": ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class SpecError(_Located):
    """An unknown or invalid spec (model, task, recipe, tower preset, paper table, reference): every problem with a
    spec file or spec mapping, from a missing file or malformed YAML to an unknown field or a bad value."""


class DataError(_Located):
    """Bad input data. Names the file and, where it applies, the record."""


class CheckpointError(LoupeBenchError):
    """A missing or mismatched checkpoint (names missing / unexpected keys)."""
