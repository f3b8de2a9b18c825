"""Static check: the modules of ``loupe_bench`` import each other without cycles.

Every ``import`` / ``from ... import`` of a package module is collected with :mod:`ast` — at module level and inside
functions alike, so a deferred import does not hide a cycle. An edge ``a -> b`` means module ``a`` names module ``b``
(``from .x import name`` is an edge to ``x``; ``from . import x`` to the submodule ``x`` when there is one, else to
the package). The graph may hold no cycle, except the ones in :data:`KNOWN_CYCLES`.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, FrozenSet, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "loupe_bench"

#: Cycles that still exist, each as the set of modules of one strongly connected component. Each entry is work left:
#: remove the cycle, then its entry (the test fails on an entry that no longer matches a cycle, so the list only
#: shrinks).
KNOWN_CYCLES: List[FrozenSet[str]] = []

#: modules that must never be part of a cycle, whatever the list above says
NEVER_IN_A_CYCLE = ("loupe_bench.models.checkpoint", "loupe_bench.models.factory", "loupe_bench.models.sources",
                    "loupe_bench.train.resume", "loupe_bench.train.engine", "loupe_bench.tasks.evaluate")


def module_files(package: Path = PACKAGE) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(module: str, is_package: bool, node: ast.AST, known: Dict[str, Path]) -> Set[str]:
    """The package modules one import statement names."""
    root = next(iter(known)).split(".")[0]
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == root}
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != root:
        return set()
    return {f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names}


def import_graph(package: Path = PACKAGE) -> Dict[str, Set[str]]:
    """Module -> the package modules it imports anywhere in its file (names not a module map to their parent)."""
    known = module_files(package)
    graph: Dict[str, Set[str]] = {m: set() for m in known}
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, is_package, node, known):
                    while target not in known and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target in known and target != module:
                        graph[module].add(target)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[FrozenSet[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    found: List[FrozenSet[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_no_import_cycle_beyond_the_known_ones():
    found = cycles(import_graph())
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not new, f"import cycles: {new}"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"these known cycles are gone (or changed): remove them from KNOWN_CYCLES: {gone}"


def test_model_directory_modules_are_in_no_cycle():
    """The model-directory format, the factory and the model sources depend one way: sources -> factory /
    checkpoint -> the family registry; training and evaluation use them, never the reverse."""
    graph = import_graph()
    in_cycles = set().union(*cycles(graph))
    assert not in_cycles.intersection(NEVER_IN_A_CYCLE), sorted(in_cycles.intersection(NEVER_IN_A_CYCLE))
    assert "loupe_bench.models.factory" not in graph["loupe_bench.models.checkpoint"]
    assert "loupe_bench.models.sources" not in graph["loupe_bench.models.factory"]
    assert "loupe_bench.models.checkpoint" in graph["loupe_bench.train.resume"]


def test_the_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    """A planted cycle: ``a`` imports ``b`` at module level, ``b`` imports ``a`` inside a function only."""
    pkg = tmp_path / "loupe_bench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from .b import thing\n")
    (pkg / "sub" / "b.py").write_text("def thing():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("import loupe_bench.sub.a\nfrom .sub import b\n")
    graph = import_graph(pkg)
    assert graph["loupe_bench.sub.b"] == {"loupe_bench.sub.a"}
    assert graph["loupe_bench.c"] == {"loupe_bench.sub.a", "loupe_bench.sub.b"}
    assert cycles(graph) == [frozenset({"loupe_bench.sub.a", "loupe_bench.sub.b"})]
    (pkg / "sub" / "b.py").write_text("def thing():\n    return 1\n")
    assert cycles(import_graph(pkg)) == []
