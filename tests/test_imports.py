"""Static check: a module that uses ``pkg.sub`` (a submodule of a standard-library package) must import it.

``import importlib`` does not bind ``importlib.util``; code that reads ``importlib.util`` works only where something
else imported the submodule first (pytest, a site hook), and crashes for a user's fresh interpreter. The install
smoke test (``test_install.py``) catches this for what it runs; this test catches it for every module, whether a test
runs it or not.
"""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "loupe_bench"


def _attribute_uses(tree: ast.AST) -> Tuple[Set[str], Set[str], Set[Tuple[str, str, int]]]:
    """(packages bound by ``import pkg``, submodules imported, ``(pkg, attr, line)`` attribute reads)."""
    bound: Set[str] = set()
    imported: Set[str] = set()
    uses: Set[Tuple[str, str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname is None:
                    bound.add(a.name.split(".")[0])
                parts = a.name.split(".")
                imported.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            uses.add((node.value.id, node.attr, node.lineno))
    return bound, imported, uses


def _bound_in_fresh_interpreter(pairs: Set[Tuple[str, str]]) -> Dict[Tuple[str, str], bool]:
    """Whether ``import pkg`` alone binds ``pkg.sub``, asked of an isolated interpreter without site hooks."""
    code = ("import importlib, json, sys\nout = {}\nfor p, s in json.loads(sys.argv[1]):\n"
            "    out[p + '.' + s] = hasattr(importlib.import_module(p), s)\nprint(json.dumps(out))")
    import json

    res = subprocess.run([sys.executable, "-I", "-S", "-c", code, json.dumps(sorted(pairs))], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    return {(p, s): got[f"{p}.{s}"] for p, s in pairs}


def submodule_problems(files) -> List[str]:
    candidates: Dict[Path, List[Tuple[str, str, int]]] = {}
    pairs: Set[Tuple[str, str]] = set()
    for f in files:
        bound, imported, uses = _attribute_uses(ast.parse(Path(f).read_text(encoding="utf-8")))
        for pkg, attr, line in uses:
            if pkg not in bound or pkg not in sys.stdlib_module_names or f"{pkg}.{attr}" in imported:
                continue
            spec = importlib.util.find_spec(pkg)
            if spec is None or not spec.submodule_search_locations:
                continue   # a plain module: its attributes are not submodules
            if importlib.util.find_spec(f"{pkg}.{attr}") is None:
                continue
            candidates.setdefault(Path(f), []).append((pkg, attr, line))
            pairs.add((pkg, attr))
    if not pairs:
        return []
    auto = _bound_in_fresh_interpreter(pairs)
    return [f"{f}:{line}: uses {pkg}.{attr} without `import {pkg}.{attr}`"
            for f, items in sorted(candidates.items()) for pkg, attr, line in sorted(items) if not auto[(pkg, attr)]]


def test_every_used_stdlib_submodule_is_imported():
    problems = submodule_problems(sorted(PACKAGE.rglob("*.py")))
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_planted_missing_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import importlib\n\ndef f(m):\n    return importlib.util.find_spec(m)\n")
    good = tmp_path / "good.py"
    good.write_text("import importlib\nimport importlib.util\n\ndef f(m):\n    return importlib.util.find_spec(m)\n")
    fine = tmp_path / "fine.py"
    fine.write_text("import os\n\ndef f(p):\n    return os.path.join(p, 'x')\n")   # os.path is bound by os itself
    assert submodule_problems([bad]) == [f"{bad}:4: uses importlib.util without `import importlib.util`"]
    assert submodule_problems([good, fine]) == []


def test_registration_lists_fail_loudly_with_the_module_name():
    """A typo in a registration list is an ImportError naming the module at import time, never a later
    "unknown model family"; a module that exists but fails to import keeps its own error."""
    import pytest

    from loupe_bench.registry import import_registering_modules

    with pytest.raises(ImportError, match="loupe_bench.models.cliip"):
        import_registering_modules(["loupe_bench.models.cliip"])
    with pytest.raises(ImportError, match="no_such_top_level_package_xyz"):
        import_registering_modules(["no_such_top_level_package_xyz.sub"])
