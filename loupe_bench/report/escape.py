"""Escaping of user-derived text (model, task, metric and folder names, notes, anything read from a result file)
for each output a report writes.

Rule: every string that comes from a result, a reference, a run or a path is escaped for the format it lands in —
Markdown (:func:`md`), rich console markup (:func:`console`), matplotlib labels (:func:`plot`), CSV cells that a
spreadsheet would read as a formula (:func:`csv_cell`); HTML uses ``html.escape``. Only the report's own markup (headings, bold for the best cell, table rules) stays live.
"""
from __future__ import annotations

import re
from typing import Any

#: ASCII punctuation that starts Markdown (CommonMark + GFM tables, strikethrough, math) markup or raw HTML
_MD_SPECIAL = re.compile(r"([\\`*|<>\[\]~&$#!])")
#: an underscore that can open or close emphasis (an intraword ``_``, as in ``i2t_R@1``, never does)
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md(text: Any) -> str:
    """``text`` as literal Markdown inline text: on one line (line breaks and tabs become spaces), every markup
    character backslash-escaped, so ``<script>``, ``|``, ``*``, backticks and links render as the characters
    themselves and a table row keeps its columns."""
    flat = " ".join(str(text).split())
    return _MD_UNDERSCORE.sub(r"\\_", _MD_SPECIAL.sub(r"\\\1", flat))


def console(text: Any) -> str:
    """``text`` as literal rich console text (square brackets cannot open markup tags)."""
    from rich.markup import escape

    return escape(str(text))


def plot(text: Any) -> str:
    """``text`` as a literal matplotlib label (``$`` cannot start mathtext; a leading ``_`` does not hide it from
    the legend)."""
    out = str(text).replace("$", r"\$")
    return " " + out if out.startswith("_") else out


#: first characters with which a spreadsheet reads a cell as a formula (OWASP's CSV-injection list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a string starting a formula gets a leading ``'``; numbers (a
    negative number included) pass unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def new_console(**kwargs: Any):
    """A rich Console that never turns ``:name:`` into an emoji (``acc@0.5:anchor:`` stays text): every console the
    CLI prints result, model or metric names to is made here. Markup stays on for the CLI's own styling; names are
    passed through :func:`console` (brackets) or as :class:`rich.text.Text`."""
    from rich.console import Console

    kwargs.setdefault("emoji", False)
    return Console(**kwargs)
