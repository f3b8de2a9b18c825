"""The CLI's one error rule (docs/architecture.md, "Errors"), walked over every command and sub-command.

Exit 0 success; 1 only for the findings of ``data check`` / ``check``; 2 for bad input or environment, as one line on
stderr; 3 for an internal error, also one line (its traceback only with ``LOUPE_BENCH_TRACEBACK=1``). Never a
traceback for anything a user can cause."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import click
import pytest

from loupe_bench.cli import main as cli_main
from loupe_bench.cli.main import INTERNAL_ERROR, TRACEBACK_ENV, cli, main


def _leaves() -> List[Tuple[str, ...]]:
    """Every runnable command path, e.g. ``("data", "check")``, found by walking the lazy click group."""
    out: List[Tuple[str, ...]] = []

    def walk(cmd: click.Command, path: Tuple[str, ...]) -> None:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), path + (name,))
        else:
            out.append(path)

    walk(cli, ())
    return out


LEAVES = _leaves()


def _run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _one_line(code: int, err: str, expected: int = 2) -> None:
    assert code == expected, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_walk_finds_every_command():
    names = {" ".join(p) for p in LEAVES}
    assert {"train", "eval", "report", "check", "compare", "export", "bench", "data check", "data synth",
            "reproduce synthetic", "reproduce paper", "list"} <= names


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_unknown_option_is_one_line_exit_2(path, capsys):
    code, _, err = _run([*path, "--no-such-option"], capsys)
    _one_line(code, err)
    assert "--no-such-option" in err and "--help" in err


def _path_cases(missing: Path):
    """Per command, an argv whose input path does not exist."""
    return {
        ("train",): ["train", "--model", "clip-tiny", "--data", missing, "--out", missing.parent / "o"],
        ("eval",): ["eval", "--model", missing, "--task", "synthetic-retrieval", "--data-root", missing.parent],
        ("report",): ["report", missing],
        ("check",): ["check", missing, "--reference", "synthetic-quick"],
        ("compare",): ["compare", "--paper", missing],
        ("export",): ["export", "--format", "clip_benchmark", missing, "--out", missing.parent / "o"],
        ("bench",): ["bench", "--readme", missing, "--render-only"],
        ("data", "check"): ["data", "check", missing],
        ("data", "phrases"): ["data", "phrases", missing, "--out", missing.parent / "p.json"],
        ("reproduce", "paper"): ["reproduce", "paper", "--data-root", missing, "--model", "clip-tiny"],
    }


#: Commands that read no input path (``list``; ``data synth`` and ``reproduce synthetic`` write one).
NO_INPUT_PATH = {("list",), ("data", "synth"), ("reproduce", "synthetic")}
PATH_CASES = sorted(_path_cases(Path("x")))


def test_every_command_with_an_input_path_is_walked():
    assert set(LEAVES) - NO_INPUT_PATH == set(PATH_CASES)


@pytest.mark.parametrize("path", PATH_CASES, ids=[" ".join(p) for p in PATH_CASES])
def test_missing_path_is_one_line_exit_2(path, tmp_path, capsys):
    code, _, err = _run(_path_cases(tmp_path / "does-not-exist")[path], capsys)
    _one_line(code, err)


def test_environment_error_is_one_line_exit_2(monkeypatch, capsys):
    def boom(*a, **k):
        raise PermissionError(13, "Permission denied", "/ro/results.json")

    monkeypatch.setattr(cli, "main", boom)
    code, _, err = _run(["list", "models"], capsys)
    _one_line(code, err)
    assert "/ro/results.json: Permission denied" in err


def test_internal_error_is_one_line_exit_3_with_traceback_on_request(monkeypatch, capsys):
    def boom(*a, **k):
        raise ZeroDivisionError("planted\nbug")

    monkeypatch.setattr(cli, "main", boom)
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    code, _, err = _run(["list", "models"], capsys)
    _one_line(code, err, INTERNAL_ERROR)
    assert "ZeroDivisionError: planted bug" in err and TRACEBACK_ENV in err
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(ZeroDivisionError):
        main(["list", "models"])


def test_multi_line_messages_are_joined(monkeypatch, capsys):
    from loupe_bench.errors import SpecError

    def boom(*a, **k):
        raise SpecError("first\nsecond", file="x.yaml")

    monkeypatch.setattr(cli, "main", boom)
    code, _, err = _run(["list", "models"], capsys)
    _one_line(code, err)
    assert "x.yaml: first second" in err


def test_exit_codes_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert "LOUPE_BENCH_TRACEBACK" in text and cli_main.INTERNAL_ERROR == 3


def test_nul_character_in_an_argument_is_one_line(capsys, tmp_path):
    code, _, err = _run(["report", f"{tmp_path}\0x"], capsys)
    _one_line(code, err)
    assert "NUL" in err
