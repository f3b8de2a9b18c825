"""The generated hostile-input suite.

Cases come from a small grammar (tests/hostile/grammar.py: seeds x mutations) combined with commands per surface
(tests/hostile/cases.py): specs, recipes, task specs, checkpoints and model folders, data formats, images, shards,
paths, numbers, results and references, resume, bench options. Each case runs ``loupe-bench`` in-process and the
harness (tests/hostile/harness.py) asserts: the exit code the error rule gives (docs/architecture.md, "Errors"), one
``error:`` line on stderr for exit 2, no traceback, no marker file from a planted command, the input folders
unchanged, nothing written outside the case's output folder, and for gathering commands no non-finite, merged or stale
number. Training happens once per session (the ``bank``); most cases need none.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from hostile.cases import CASES, QUICK
from hostile.harness import Ctx, WouldRun, run_case, run_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def bank(tiny_world, tmp_path_factory, ):
    """Trained run, results and a reference made once: ``run`` (clip-tiny, 2 steps, checkpoints step_1 and step_2,
    folder ``tinyrun``), ``results`` (the run and the clip-tiny spec on synthetic-classification: two identities, two
    names), ``results_merged`` (a copy of the run in a folder named ``clip-tiny`` and the clip-tiny spec: two
    identities, one display name), ``reference`` (``check --update`` of ``results``)."""
    import torch

    from loupe_bench.cli.main import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hostile-bank")

    def cli(*argv):
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in argv])
        assert info.value.code == 0, argv

    try:
        run = root / "runs" / "tinyrun"
        cli("train", "--model", "clip-tiny", "--data", tiny_world, "--out", run, *QUICK)
        results = root / "results"
        cli("eval", "--model", run, "--model", "clip-tiny", "--task", "synthetic-classification", "--data-root",
            tiny_world, "--out", results)
        same_name = root / "runs2" / "clip-tiny"
        shutil.copytree(run, same_name)
        merged = root / "results-merged"
        cli("eval", "--model", same_name, "--model", "clip-tiny", "--task", "synthetic-classification",
            "--data-root", tiny_world, "--out", merged)
        reference = root / "reference.json"
        cli("check", results, "--reference", reference, "--update")
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(root=root, run=run, results=results, results_merged=merged, reference=reference)


@pytest.fixture()
def stand_ins(monkeypatch):
    """Benchmarks and reproduction pipelines replaced by stand-ins that raise: an options-only case that gets past
    validation is reported as 'accepted and started', never runs a real benchmark or pipeline."""
    import loupe_bench.bench.runner as runner
    import loupe_bench.pipeline as pipeline
    from loupe_bench.registry import Registry

    real = runner.load_all()
    fake = Registry("benchmark")
    for name in real.names():
        fn = real.get(name)

        @functools.wraps(fn)
        def would_run(*a, _name=name, **k):
            raise WouldRun(f"benchmark {_name}")

        fake.add(name, would_run, real.help(name))
    monkeypatch.setattr(runner, "load_all", lambda: fake)
    for attr in ("reproduce_synthetic", "reproduce_paper"):
        monkeypatch.setattr(pipeline, attr, lambda *a, _n=attr, **k: (_ for _ in ()).throw(WouldRun(_n)))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case, tiny_world, request, tmp_path, capsys, monkeypatch, stand_ins):
    bank = request.getfixturevalue("bank") if case.needs_bank else None
    ctx = Ctx(tmp_path / "case", tiny_world, bank)
    try:
        argv, res, problems = run_case(case, ctx, capsys, monkeypatch)
    finally:
        _restore_modes(ctx.root)
        shutil.rmtree(ctx.root, ignore_errors=True)  # 500 world copies would otherwise linger in pytest's basetemp
    shown = " ".join(a if len(a) < 80 else a[:77] + "..." for a in map(str, argv))
    assert not problems, f"{case.id}: loupe-bench {shown}\n  " + "\n  ".join(problems)


def _restore_modes(root: Path) -> None:
    """Read-only folders a case made are made writable again so pytest can remove them."""
    for p in [root, *root.rglob("*")] if root.exists() else []:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)


def test_suite_size_and_surfaces():
    """The issue asks for at least 150 generated cases over the twelve surfaces."""
    surfaces = {c.surface for c in CASES}
    assert len(CASES) >= 150 and len(surfaces) >= 12, (len(CASES), sorted(surfaces))


def test_harness_catches_every_violation(tiny_world, tmp_path, capsys, monkeypatch):
    """The harness itself: a stand-in command that breaks every invariant is reported on each count."""
    import sys

    import loupe_bench.cli.main as cli_main
    from hostile.harness import Case

    def bad_main(argv):
        ctx_root = Path(argv[0])
        (ctx_root / "PWNED").write_text("ran")                       # a planted command ran
        (ctx_root / "outside.txt").write_text("x")                   # written outside --out
        (ctx_root / "in" / "input.txt").write_text("changed")        # an input changed
        (ctx_root / "out").mkdir()
        (ctx_root / "out" / "report.md").write_text("| m | nan |")   # a non-finite number gathered
        print("Traceback (most recent call last):", file=sys.stderr)
        print("error: two lines", file=sys.stderr)
        sys.exit(2)

    monkeypatch.setattr(cli_main, "main", bad_main)
    ctx = Ctx(tmp_path / "case", tiny_world)
    ctx.write("input.txt", "original")
    case = Case("self", "bad", lambda c: [str(c.root), "report"], (1,))
    monkeypatch.setattr("hostile.harness.GATHERING", ("report", str(ctx.root)))
    _, res, problems = run_case(case, ctx, capsys, monkeypatch)
    text = "\n".join(problems)
    for words in ("exit 2 (expected 1)", "traceback", "exactly one 'error:' line", "planted command ran",
                  "new outside.txt", "changed in/input.txt", "refused, but wrote", "non-finite"):
        assert words in text, (words, text)
