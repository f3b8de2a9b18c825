"""The public API: each function is defined once, in the module that implements it, and re-exported by the package
root; no public name shadows a package; ``import loupe_bench`` stays light; and every command of the CLI calls the
very function a notebook calls."""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import loupe_bench
from cli_run import run_cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "loupe_bench"

#: the file under loupe_bench/ that defines each public function (and the command that calls it)
DEFINED_IN = {
    "models/sources.py": ("load_model", "load_model_and_transforms"),  # --model of every command
    "train/engine.py": ("train_model",),                               # train
    "tasks/evaluate.py": ("evaluate",),                                # eval
    "report/render.py": ("render_report",),                            # report
    "pipeline/synthetic.py": ("reproduce_synthetic",),                 # reproduce synthetic
    "pipeline/paper.py": ("reproduce_paper",),                         # reproduce paper
}
#: public name -> its module
PUBLIC = {name: "loupe_bench." + path[:-3].replace("/", ".") for path, names in DEFINED_IN.items() for name in names}


def test_all_lists_the_public_functions():
    assert loupe_bench.__all__ == ["__version__", *PUBLIC]
    assert set(PUBLIC) <= set(dir(loupe_bench))


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_function_is_the_implementation_itself(name):
    fn = getattr(loupe_bench, name)
    assert fn is getattr(importlib.import_module(PUBLIC[name]), name)
    assert (fn.__module__, fn.__qualname__) == (PUBLIC[name], name)
    doc = inspect.getdoc(fn)
    assert doc and ("Args:" in doc or "Arguments as for" in doc), name


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_function_is_defined_exactly_once(name):
    """One ``def`` of each public name in the whole package (no wrapper repeating its signature and docstring)."""
    defs = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defs += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name]
    expected = PUBLIC[name].replace(".", "/") + ".py"
    assert len(defs) == 1 and defs[0].startswith(expected + ":"), defs


def _packages():
    """Every package of loupe_bench, as ``(dotted name, its submodule names)``."""
    out = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        folder = init.parent
        if "__pycache__" in folder.parts:
            continue
        dotted = ".".join(folder.relative_to(ROOT).parts)
        out.append((dotted, {m.name for m in pkgutil.iter_modules([str(folder)])}))
    return out


@pytest.mark.parametrize("package,children", _packages(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_public_name_shadows_a_package(package, children):
    """No name a package exports is the name of the package itself or of one of its submodules (so
    ``loupe_bench.train`` is always the package, whatever was imported first)."""
    module = importlib.import_module(package)
    exported = set(getattr(module, "__all__", ()))
    assert not exported & (children | {package.rsplit(".", 1)[-1]}), package


def test_import_is_light_and_names_load_on_first_access():
    code = ("import sys\nimport loupe_bench\nnames = list(loupe_bench.__all__) + dir(loupe_bench)\n"
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')\n"
            "print('ENGINE' if 'loupe_bench.train.engine' in sys.modules else 'NOENGINE')\n"
            "loupe_bench.train_model\nprint('ENGINE' if 'loupe_bench.train.engine' in sys.modules else 'NOENGINE')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["NOTORCH", "NOENGINE", "ENGINE"]
    with pytest.raises(AttributeError, match="no_such_function"):
        loupe_bench.no_such_function  # noqa: B018


def _recorder(monkeypatch, name, result):
    """Replace the public function ``name`` in its defining module by one recording its arguments."""
    module = importlib.import_module(PUBLIC[name])
    sig = inspect.signature(getattr(module, name))
    calls = []

    def record(*args, **kwargs):
        calls.append(dict(sig.bind(*args, **kwargs).arguments))
        return result

    monkeypatch.setattr(module, name, record)
    return calls


def test_cli_commands_call_the_public_functions(monkeypatch, tmp_path, capsys):
    """``train``, ``eval``, ``report`` and ``reproduce`` hand their options to the functions ``loupe_bench``
    exports (the same objects a notebook calls), under the functions' own parameter names."""
    calls = _recorder(monkeypatch, "train_model", tmp_path / "run")
    code, out, err = run_cli(["train", "--model", "clip-tiny", "--data", "world", "--out", tmp_path / "run",
                              "--seed", "3", "--steps", "5", "--set", "optim.lr=0.01"], capsys)
    assert code == 0, err
    assert calls == [{"model": "clip-tiny", "data": "world", "recipe": "tiny-cpu", "out": str(tmp_path / "run"),
                      "resume": None, "seed": 3, "overrides": {"optim.lr": 0.01, "steps": 5},
                      "allow_remote_shards": False, "allow_changed": (), "on_bad_sample": "error"}]

    calls = _recorder(monkeypatch, "evaluate", [])
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", "synthetic-retrieval", "--out", tmp_path / "e",
                            "--precision", "bf16"], capsys)
    assert code == 0, err
    assert len(calls) == 1 and calls[0]["models"] == ["clip-tiny"] and calls[0]["tasks"] == ["synthetic-retrieval"]
    assert calls[0]["precision"] == "bf16" and calls[0]["out_dir"] == str(tmp_path / "e")

    calls = _recorder(monkeypatch, "render_report", SimpleNamespace(csv=None, leaderboard=None, markdown=None,
                                                                    html=None))
    (tmp_path / "results").mkdir()
    code, _, err = run_cli(["report", tmp_path / "results", "--no-html", "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    assert len(calls) == 1 and calls[0]["results_dir"] == tmp_path / "results" and calls[0]["html"] is False

    calls = _recorder(monkeypatch, "reproduce_synthetic", tmp_path / "syn" / "reproduce.json")
    code, _, err = run_cli(["reproduce", "synthetic", "--out", tmp_path / "syn", "--quick", "--seeds", "2"], capsys)
    assert code == 0, err
    assert len(calls) == 1 and calls[0]["out"] == tmp_path / "syn" and list(calls[0]["seeds"]) == [0, 1]

    calls = _recorder(monkeypatch, "reproduce_paper", tmp_path / "paper" / "paper_comparison.md")
    code, _, err = run_cli(["reproduce", "paper", "--data-root", tmp_path, "--model", "clip-tiny", "--out",
                            tmp_path / "paper"], capsys)
    assert code == 0, err
    assert calls == [{"data_root": tmp_path, "models": ("clip-tiny",), "out": tmp_path / "paper", "tasks": None,
                      "seed": 0, "device": "auto"}]
