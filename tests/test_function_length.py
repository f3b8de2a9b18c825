"""No function or method of the package is longer than :data:`MAX_LINES` lines.

A function's length is counted from its ``def`` line to its last line, docstring, comments and blank lines
included (decorators excluded); nested functions count towards the function that holds them and are checked on
their own as well.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "loupe_bench"
MAX_LINES = 80

#: ``path/under/loupe_bench.py:qualified.name`` of functions allowed over the limit: empty, and it must stay empty
#: (the test fails on a stale entry too).
ALLOWED_LONG: frozenset = frozenset()


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[Tuple[str, ast.AST]]:
    """``(qualified name, node)`` of every function and method under ``tree``, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, name + ".")
        else:
            yield from _functions(node, prefix)


def function_lengths(root: Path = PACKAGE) -> Dict[str, int]:
    """``{"rel/path.py:qualified.name": lines}`` for every function of the package (``def`` line to last line)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for name, node in _functions(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            out[f"{rel}:{name}"] = node.end_lineno - node.lineno + 1
    return out


def test_function_lengths_counts_def_to_last_line(tmp_path):
    (tmp_path / "mod.py").write_text(
        "def short():\n    '''doc'''\n    return 1\n\n\n"
        "class K:\n    @staticmethod\n    def method():\n        def inner():\n            pass\n        return inner\n"
    )
    assert function_lengths(tmp_path) == {"mod.py:short": 3, "mod.py:K.method": 4, "mod.py:K.method.inner": 2}


def test_no_function_longer_than_80_lines():
    lengths = function_lengths()
    assert len(lengths) > 100  # the walk found the package
    too_long = sorted(f"loupe_bench/{key}:{n}" for key, n in lengths.items() if n > MAX_LINES
                      and key not in ALLOWED_LONG)
    assert not too_long, (f"functions longer than {MAX_LINES} lines (file:function:length), split them into "
                          "named helpers: " + ", ".join(too_long))


def test_allow_list_holds_only_functions_still_too_long():
    lengths = function_lengths()
    stale = sorted(f"loupe_bench/{key}:{lengths.get(key, 'missing')}" for key in ALLOWED_LONG
                   if lengths.get(key, 0) <= MAX_LINES)
    assert not stale, "remove from ALLOWED_LONG (now short or gone; file:function:length): " + ", ".join(stale)
