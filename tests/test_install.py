"""The installed program, as a user gets it: wheel -> fresh venv (no system site-packages) -> console script.

In-process ``CliRunner`` tests elsewhere exercise the commands' behaviour; they are not evidence that the installed
``loupe-bench`` starts (pytest and site hooks may have imported what the package forgot to import). Everything here
runs ``VENV/bin/loupe-bench`` in a fresh interpreter, from an empty folder outside the source tree.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import click
import pytest

pytestmark = pytest.mark.slow  # in the default suite (CI)

ROOT = Path(__file__).resolve().parents[1]


def command_paths() -> List[Tuple[str, ...]]:
    """Every command and sub-command of the CLI tree (walked through click, so new commands are covered)."""
    from loupe_bench.cli.main import cli

    ctx = click.Context(cli)
    out: List[Tuple[str, ...]] = [()]

    def walk(group: click.Group, prefix: Tuple[str, ...]):
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            out.append(prefix + (name,))
            if isinstance(cmd, click.Group):
                walk(cmd, prefix + (name,))

    walk(cli, ())
    return out


def _ok(res):
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    res = installed.run  # noqa: F841 (fixture built the venv)
    import subprocess

    code = "import loupe_bench, sys; print(loupe_bench.__file__); print(sys.flags.no_site, sys.prefix)"
    out = subprocess.run([str(installed.python), "-c", code], capture_output=True, text=True, cwd=str(installed.cwd))
    assert out.returncode == 0, out.stderr
    where = Path(out.stdout.splitlines()[0]).resolve()
    assert installed.venv.resolve() in where.parents, where
    assert ROOT not in where.parents
    assert not any(installed.cwd.iterdir()), "the user's folder must start empty"


def test_installed_help_version_and_lists(installed):
    from loupe_bench import __version__

    res = installed.run("--help")
    _ok(res)
    for name in ("train", "eval", "reproduce", "check", "data"):
        assert name in res.stdout
    res = installed.run("--version")
    _ok(res)
    assert __version__ in res.stdout
    res = installed.run("list", "models")
    _ok(res)
    for name in ("clip-tiny", "filip-tiny", "loupe-tiny"):
        assert name in res.stdout
    res = installed.run("list", "tasks")
    _ok(res)
    assert "synthetic-retrieval" in res.stdout and "coco-retrieval-5k" in res.stdout
    res = installed.run("list", "references")
    _ok(res)
    assert "synthetic-quick" in res.stdout


def test_every_installed_command_has_help(installed):
    """``--help`` of every command and sub-command, each in a fresh interpreter of the installed program."""
    paths = command_paths()
    assert len(paths) > 12 and ("reproduce", "synthetic") in paths and ("data", "synth") in paths
    failed = []
    for path in paths:
        res = installed.run(*path, "--help", timeout=300)
        if res.returncode != 0 or "Usage:" not in res.stdout or "Traceback" in res.stderr:
            failed.append((" ".join(path) or "(top)", res.returncode, res.stderr[-500:]))
    assert not failed, failed


def test_installed_user_errors_are_one_line(installed, tmp_path):
    res = installed.run("check", tmp_path / "missing", "--reference", "no-such-reference")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "unknown reference 'no-such-reference'" in res.stderr and "synthetic-quick" in res.stderr
    res = installed.run("eval", "--model", "clip-tiny", "--task", "synthetic-retrieval", "--device", "cuda:7")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len([l for l in res.stderr.splitlines() if l.strip()]) == 1, res.stderr


def test_installed_reproduce_quick_then_check_by_name(installed, installed_quick_run):
    """README command 1's program: `reproduce synthetic --quick`, then `check` against the shipped reference."""
    man = json.loads((installed_quick_run / "reproduce.json").read_text())
    assert man["quick"] is True
    # a plain install computes every captioning metric this machine can (pycocoevalcap is a core dependency)
    missing = man["missing_metrics"].get("synthetic-captioning", {})
    assert "BLEU-4" not in missing and "CIDEr-D" not in missing
    res = installed.run("check", installed_quick_run / "results", "--reference", "synthetic-quick")
    _ok(res)
    assert "regression gate passed" in res.stdout


def test_installed_reproduce_redirected_is_one_line_per_unit(installed_quick_run):
    """Redirected, ``reproduce`` writes plain lines: no live worker rows (no step/loss lines, no cursor control),
    one ``done in`` line per finished unit (3 trainings, the evaluation groups, world, report)."""
    text = (installed_quick_run / "console.txt").read_text()
    assert "\x1b[" not in text and "\r" not in text
    lines = text.splitlines()
    assert not [l for l in lines if "loss " in l]
    man = json.loads((installed_quick_run / "reproduce.json").read_text())
    trained = [l for l in lines if "done in" in l and "train:" in l]
    assert len(trained) == len(man["plan"]["models"]) == 3


def test_installed_reproduce_summary_fits_80_columns(installed_quick_run):
    """Redirected to a file, the end-of-run summary is readable at 80 columns: no line longer, no cell wrapped."""
    text = (installed_quick_run / "console.txt").read_text()
    assert "synthetic-retrieval" in text
    lines = text.splitlines()
    assert max(len(l) for l in lines) <= 80
    for model in ("clip-tiny", "filip-tiny", "loupe-tiny"):
        # each model's row is one line starting with its name (a wrapped name would start a line with a fragment)
        assert any(l.lstrip().startswith(model + " ") for l in lines), model
    # every task's title stands whole on one line (the old matrix wrapped names into `syntheti` / `c-retrie`)
    man = json.loads((installed_quick_run / "reproduce.json").read_text())
    for task in man["tasks"]:
        assert any(l.startswith(task + " · ") for l in lines), task
    assert not [l for l in lines if l.strip() in ("syntheti", "c-retrie", "val/test", "/i2t_R@1")]
