"""Registration is loud: a typo in a registration list fails when the list's module is imported, naming the
module; listing the lists imports nothing heavy; recipes are parsed on use, never at import; every registry has its
own kind."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loupe_bench.registry import Registry, registering_modules

ROOT = Path(__file__).resolve().parents[1]


def test_a_typo_in_a_registration_list_fails_at_import_naming_the_module(tmp_path, monkeypatch):
    pkg = tmp_path / "planted_registrations"
    pkg.mkdir()
    (pkg / "good.py").write_text("LOADED = True\n")
    (pkg / "__init__.py").write_text("from loupe_bench.registry import registering_modules\n"
                                     "MODULES = registering_modules('planted_registrations.good', "
                                     "'planted_registrations.godo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="'planted_registrations.godo' not found"):
        import planted_registrations  # noqa: F401
    assert "planted_registrations.good" not in sys.modules  # checked, not imported
    monkeypatch.delitem(sys.modules, "planted_registrations", raising=False)
    (pkg / "__init__.py").write_text("from loupe_bench.registry import registering_modules\n"
                                     "MODULES = registering_modules('planted_registrations.good')\n")
    import planted_registrations

    assert planted_registrations.MODULES == ("planted_registrations.good",)
    assert "planted_registrations.good" not in sys.modules


@pytest.mark.parametrize("name", ["loupe_bench.tasks.retrievl", "loupe_bench.bench.no_such_bench",
                                  "no_such_top_level_package_xyz.sub"])
def test_registering_modules_names_the_missing_module(name):
    with pytest.raises(ImportError, match=name.replace(".", r"\.")):
        registering_modules("loupe_bench.tasks.retrieval", name)


def fresh_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter in the repository root (what a module imports is seen from scratch);
    its stripped standard output. A failure shows the child's stderr."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_shipped_lists_are_checked_without_importing_torch():
    """``loupe_bench.tasks`` and ``loupe_bench.bench`` check their lists at import, and import no adapter, no
    benchmark and no torch doing so; ``loupe_bench.train`` parses no recipe at import."""
    code = ("import sys\nimport loupe_bench.specs as specs\ncalls = []\norig = specs.spec_index\n"
            "specs.spec_index = lambda *a, **k: (calls.append(a), orig(*a, **k))[1]\n"
            "import loupe_bench.tasks, loupe_bench.bench, loupe_bench.train\n"
            "heavy = [m for m in sys.modules if m == 'torch' or m.startswith(('loupe_bench.tasks.retrieval', "
            "'loupe_bench.bench.shapley_bench'))]\n"
            "print(heavy, [c for c in calls if c and c[0] == 'recipes'])\n")
    assert fresh_python(code) == "[] []"


def test_every_registry_has_its_own_kind():
    """Two registries never share a description (e.g. the model families of the factory and the published
    families of the paper tables), so an "unknown ..." error names one registry."""
    from loupe_bench.bench import load_all
    from loupe_bench.models import MODEL_CLASSES
    from loupe_bench.tasks import load_adapters

    import loupe_bench.pipeline  # noqa: F401
    import loupe_bench.report.export  # noqa: F401
    import loupe_bench.report.paper as paper

    load_adapters()
    load_all()
    found = {id(obj): obj for name, module in list(sys.modules.items()) if name.startswith("loupe_bench.")
             for obj in vars(module).values() if isinstance(obj, Registry)}
    kinds = [obj.kind for obj in found.values()]
    assert MODEL_CLASSES.kind == "model family" and paper.FAMILIES.kind != MODEL_CLASSES.kind
    assert len(kinds) >= 15
    assert sorted(k for k in set(kinds) if kinds.count(k) > 1) == []
