"""Static check: the packages of ``loupe_bench`` form layers, and no module imports a module of a higher layer.

Every top-level subpackage (or top-level module) of ``loupe_bench`` has a layer in :data:`LAYERS`, low to high. A
module may import modules of its own layer and of lower ones; imports inside functions count (the import graph is
:func:`test_import_cycles.import_graph`, built with :mod:`ast`). ``docs/architecture.md`` (section "Layers") holds
the same table.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from test_import_cycles import PACKAGE, import_graph

#: the layers, low to high: (name, what it is, its top-level packages / modules of ``loupe_bench``)
LAYERS: List[Tuple[str, str, Tuple[str, ...]]] = [
    ("foundation", "errors, the name -> object registry, the spec index, file/device/provenance helpers, the "
                   "version: no loupe_bench import above these",
     ("_version", "errors", "registry", "specs", "utils")),
    ("data and games", "data sets (records, loaders, the synthetic world, training plumbing) and Shapley "
                       "estimators: neither knows about models", ("data", "shapley")),
    ("models", "towers, model families, losses, the model-directory format and model sources", ("models",)),
    ("training and tasks", "the training engine and the task protocols (evaluation, metrics, result records): "
                           "both use models and data, neither the other", ("train", "tasks")),
    ("report", "rendering results (console, CSV, Markdown, HTML), paper tables, exports, the regression gate",
     ("report",)),
    ("pipeline", "the end-to-end reproduction (plans, stages, worker jobs): world, train, evaluate, report",
     ("pipeline",)),
    ("bench", "registered benchmarks (throughput, the GPU check, the demo timing a reproduction)", ("bench",)),
    ("entry points", "the command line, the public API of the package root and the ``python -m`` entry modules",
     ("cli", "__init__", "__main__")),
]

#: top-level package / module -> layer index
LAYER_OF: Dict[str, int] = {member: i for i, (_, _, members) in enumerate(LAYERS) for member in members}


def top_level(module: str) -> str:
    """The layer key of a dotted module name: its top-level subpackage or module under ``loupe_bench``; the
    package root is ``__init__`` and every ``__main__`` module (an entry point, wherever it sits) is ``__main__``."""
    parts = module.split(".")
    if parts[-1] == "__main__":
        return "__main__"
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(graph: Dict[str, set]) -> List[str]:
    """``"a (layer) imports b (higher layer)"`` for every edge of ``graph`` that goes up a layer."""
    out = []
    for module, targets in sorted(graph.items()):
        low = LAYER_OF[top_level(module)]
        for target in sorted(targets):
            high = LAYER_OF[top_level(target)]
            if high > low:
                out.append(f"{module} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]})")
    return out


def test_every_package_has_a_layer():
    graph = import_graph()
    missing = sorted({top_level(m) for m in graph} - set(LAYER_OF))
    assert not missing, f"give these packages a layer in LAYERS (and in docs/architecture.md): {missing}"
    stale = sorted(set(LAYER_OF) - {top_level(m) for m in graph})
    assert not stale, f"LAYERS names packages that do not exist: {stale}"


def test_no_module_imports_a_higher_layer():
    problems = layer_violations(import_graph())
    assert not problems, "\n".join(problems)


def test_report_does_not_import_the_pipeline():
    """The pipeline calls the renderer; the renderer never reaches up into the pipeline (nor does training or
    evaluation)."""
    graph = import_graph()
    for module, targets in graph.items():
        if top_level(module) in ("report", "tasks", "train"):
            assert not any(top_level(t) == "pipeline" for t in targets), module
    assert "loupe_bench.report.render" in graph["loupe_bench.pipeline.stages"]


def test_architecture_doc_lists_the_layers():
    """docs/architecture.md's layer table names every layer's packages, in this order."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Layers"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section  # up to the next heading
    rows = [line.split("|") for line in section.splitlines() if line.startswith("|")]
    rows = [cells for cells in rows if cells[1].strip().isdigit()]  # "| 0 | foundation | `errors`, ... | ... |"
    assert [int(cells[1]) for cells in rows] == list(range(len(LAYERS)))
    for (name, _, members), cells in zip(LAYERS, rows):
        assert cells[2].strip() == name, cells
        for member in members:
            if member not in ("__init__", "__main__"):
                assert f"`{member}`" in cells[3], (member, cells)


def test_the_check_finds_an_upward_import_hidden_in_a_function(tmp_path):
    """A planted violation: ``data`` imports ``models`` inside a function; ``models`` importing ``data`` is fine."""
    pkg = tmp_path / "loupe_bench"
    for sub in ("data", "models", "cli"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "base.py").write_text("from ..data import thing\n")
    (pkg / "data" / "load.py").write_text("def f():\n    from ..models import base\n    return base\n")
    (pkg / "cli" / "__main__.py").write_text("from ..models import base\n")
    assert layer_violations(import_graph(pkg)) == [
        "loupe_bench.data.load (data and games) imports loupe_bench.models.base (models)"]
    (pkg / "data" / "load.py").write_text("def f():\n    return 1\n")
    assert layer_violations(import_graph(pkg)) == []
