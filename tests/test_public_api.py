"""The public API (``loupe_bench.load_model / load_model_and_transforms / train / evaluate / report``) shows its real
parameters and docstrings in a notebook (``inspect.signature``, ``help``), without importing torch, and hands every
argument on to the implementation it wraps."""
from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import loupe_bench

ROOT = Path(__file__).resolve().parents[1]

#: public name -> (implementation module, its function, the parameter names a user sees)
PUBLIC = {
    "load_model": ("loupe_bench.models.sources", "load_model", ["name_or_path", "seed"]),
    "load_model_and_transforms": ("loupe_bench.models.sources", "load_model_and_transforms",
                                  ["name_or_path", "seed"]),
    "train": ("loupe_bench.train.engine", "train",
              ["model", "data", "recipe", "out", "resume", "seed", "overrides", "stop_after", "allow_remote_shards",
               "allow_changed", "on_bad_sample", "on_step"]),
    "evaluate": ("loupe_bench.tasks.evaluate", "evaluate",
                 ["models", "tasks", "data_root", "out_dir", "seed", "device", "skip_unsupported", "names",
                  "batch_size", "num_workers", "precision"]),
    "report": ("loupe_bench.report.render", "report",
               ["results_dir", "html", "markdown", "csv", "out_dir", "runs", "world_dir", "explain_images", "console",
                "title", "quiet"]),
}


def _impl(name):
    module, attr, _ = PUBLIC[name]
    return getattr(importlib.import_module(module), attr)


def test_all_lists_the_public_functions():
    assert set(PUBLIC) <= set(loupe_bench.__all__)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_function_has_the_real_signature_and_a_docstring(name):
    fn = getattr(loupe_bench, name)
    params = inspect.signature(fn).parameters
    assert list(params) == PUBLIC[name][2]
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
    impl = inspect.signature(_impl(name)).parameters
    assert [(p.name, p.kind, p.default) for p in params.values()] == \
        [(p.name, p.kind, p.default) for p in impl.values()]
    doc = inspect.getdoc(fn)
    assert doc and len(doc.splitlines()) > 2
    assert "Args:" in doc or "Arguments as for" in doc or name == "load_model_and_transforms"


def test_signatures_and_docstrings_need_no_torch():
    """``import loupe_bench`` stays cheap: reading the API's signatures and docstrings imports no torch."""
    code = ("import inspect, sys\nimport loupe_bench\n"
            f"for name in {sorted(PUBLIC)!r}:\n"
            "    fn = getattr(loupe_bench, name)\n"
            "    print(name, list(inspect.signature(fn).parameters), bool(inspect.getdoc(fn)))\n"
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "NOTORCH"
    for name, (_, _, params) in PUBLIC.items():
        assert f"{name} {params!r} True" in lines


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_function_forwards_every_argument(name, monkeypatch):
    """Each argument given to the public function reaches the implementation, under its own name."""
    module, attr, params = PUBLIC[name]
    impl_sig = inspect.signature(_impl(name))
    got = {}

    def record(*args, **kwargs):
        got.update(impl_sig.bind(*args, **kwargs).arguments)
        return (None, None, None) if name == "load_model_and_transforms" else None

    monkeypatch.setattr(importlib.import_module(module), attr, record)
    sentinels = {p: object() for p in params}
    sig = inspect.signature(getattr(loupe_bench, name))
    positional = [sentinels[p.name] for p in sig.parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    keyword = {p.name: sentinels[p.name] for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY}
    getattr(loupe_bench, name)(*positional, **keyword)
    assert set(got) == set(params)
    assert all(got[p] is sentinels[p] for p in params), [p for p in params if got[p] is not sentinels[p]]
