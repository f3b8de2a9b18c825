"""Shared pytest fixtures.

``tiny_world``: the tiny synthetic world (seed 0, 64 px), generated once per test session into a temporary
folder. Treat it as read-only; tests that corrupt data copy it first (``shutil.copytree``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture()
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one torch thread is much faster (no oversubscription). Modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """Path of the tiny synthetic world (``generate_world(size="tiny", seed=0, image_size=64)``)."""
    from loupe_bench.data.synth import generate_world

    return generate_world(tmp_path_factory.mktemp("world") / "tiny", seed=0, size="tiny", image_size=64)


@pytest.fixture(scope="session")
def trained_run(tiny_world, tmp_path_factory) -> Path:
    """A LOUPE training run: ``loupe-tiny`` trained for 20 steps on the tiny world (a few seconds on one thread)."""
    import torch

    from loupe_bench import train_model

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("trained") / "loupe-tiny"
    try:
        train_model("loupe-tiny", str(tiny_world), "tiny-cpu", out,
                    overrides={"steps": 20, "data.batch_size": 8, "threads": 1, "log.progress": False})
    finally:
        torch.set_num_threads(threads)
    return out


# ------------------------------------------------------------------------------------------------ installed wheel
ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra) -> dict:
    """The environment a user's shell would give the installed program: no PYTHONPATH pointing at the source tree,
    offline hub flags kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """``loupe-bench`` installed from a freshly built wheel into a fresh venv without system site-packages.

    The wheel is built from this checkout (``pip wheel --no-deps``); the venv is made with ``python -m venv`` (no
    ``--system-site-packages``); ``pip install WHEEL`` installs its dependencies from the package index as for any
    user. Yields an object with ``.bin`` (the venv's ``bin``), ``.exe`` (the console script), ``.python`` and
    ``.run(*args, cwd=...)`` (runs the console script from an empty folder outside the source tree).

    Development aid: ``LOUPE_BENCH_TEST_VENV=DIR`` keeps (and reuses) the venv in DIR, reinstalling only the wheel
    without its dependencies (CI never sets it; the venv is then made fresh and removed afterwards).
    """
    import shutil
    import subprocess
    import sys
    import tempfile
    from types import SimpleNamespace

    wheel_dir = tmp_path_factory.mktemp("wheel")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(wheel_dir), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheel = next(wheel_dir.glob("loupe_bench-*.whl"))
    keep = os.environ.get("LOUPE_BENCH_TEST_VENV")
    venv = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="loupe-venv-"))
    bin_dir = venv / "bin"
    fresh = not (bin_dir / "python").exists()
    try:
        if fresh:
            out = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True,
                                 timeout=600)
            assert out.returncode == 0, out.stderr[-2000:]
        cfg = (venv / "pyvenv.cfg").read_text()
        assert "include-system-site-packages = false" in cfg, cfg
        pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q"]
        pip += [str(wheel)] if fresh else ["--force-reinstall", "--no-deps", str(wheel)]
        out = subprocess.run(pip, capture_output=True, text=True, timeout=1800, env=clean_env(), cwd=str(venv))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        work = tmp_path_factory.mktemp("user-cwd")   # an empty folder outside the source tree
        assert ROOT not in work.resolve().parents

        def run(*args, cwd=None, timeout=600):
            return subprocess.run([str(bin_dir / "loupe-bench"), *map(str, args)], capture_output=True, text=True,
                                  cwd=str(cwd or work), env=clean_env(), timeout=timeout)

        yield SimpleNamespace(venv=venv, bin=bin_dir, exe=bin_dir / "loupe-bench", python=bin_dir / "python",
                              wheel=wheel, cwd=work, run=run)
    finally:
        if not keep:
            shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture(scope="session")
def installed_quick_run(request, tmp_path_factory) -> Path:
    """``loupe-bench reproduce synthetic --quick`` run by the installed console script from an empty folder.

    Development aid: ``LOUPE_BENCH_QUICK_RUN=DIR`` reuses an existing quick reproduction folder (CI never sets it).
    """
    reuse = os.environ.get("LOUPE_BENCH_QUICK_RUN")
    if reuse:
        return Path(reuse)
    installed = request.getfixturevalue("installed")
    out = tmp_path_factory.mktemp("quick") / "run"
    res = installed.run("reproduce", "synthetic", "--quick", "--out", out, timeout=1500)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "Traceback" not in res.stderr
    (out / "console.txt").write_text(res.stdout)
    return out
