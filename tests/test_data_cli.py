"""``loupe-bench data synth|check|phrases`` through the real entry point."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loupe_bench.cli.main import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_twice_identical(tmp_path, capsys, tiny_world):
    for name in ("a", "b"):
        code, out, _ = _run(["data", "synth", "--out", str(tmp_path / name), "--seed", "0", "--size", "tiny"], capsys)
        assert code == 0 and "wrote synthetic world" in out
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b and a == _tree(tiny_world)


def test_synth_bad_option(tmp_path, capsys):
    code, _, err = _run(["data", "synth", "--out", str(tmp_path / "x"), "--size", "huge"], capsys)
    assert code == 2 and "huge" in err


def test_check_clean_and_corrupted(tiny_world, tmp_path, capsys):
    code, out, _ = _run(["data", "check", str(tiny_world)], capsys)
    assert code == 0 and "no problems" in out
    bad = tmp_path / "bad"
    shutil.copytree(tiny_world, bad)
    (bad / "images" / "000007.jpg").unlink()
    path = bad / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = [1, 1, -4, 5]
    path.write_text(json.dumps(data))
    code, out, _ = _run(["data", "check", str(bad)], capsys)
    assert code == 1
    assert "000007.jpg" in out and "non-positive size" in out and "problem(s)" in out
    code, out, _ = _run(["data", "check", str(bad / "annotations" / "instances_train.json"), "--format", "coco"], capsys)
    assert code == 1 and "non-positive" in out


def test_check_unusable_input(tmp_path, capsys):
    code, _, err = _run(["data", "check", str(tmp_path / "missing")], capsys)
    assert code == 2 and err.startswith("error: ") and "no such file" in err and err.count("\n") == 1
    (tmp_path / "odd.bin").write_bytes(b"x")
    code, _, err = _run(["data", "check", str(tmp_path / "odd.bin")], capsys)
    assert code == 2 and "--format" in err


def test_phrases_without_spacy_is_one_clear_line(tiny_world, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # spaCy not importable (it is not installed here anyway)
    code, _, err = _run(["data", "phrases", str(tiny_world / "dataset_synthetic.json")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no phrase parser available" in err and "pip install spacy" in err
    assert not (tiny_world / "phrases.json").read_text().startswith("{}")


def test_phrases_with_a_parser_writes_sidecar(tiny_world, tmp_path):
    """The sidecar writer with an injected parser (spaCy's noun chunks replaced by a rule on the shape words)."""
    import re

    from loupe_bench.data import load_dataset
    from loupe_bench.data.phrases import extract_phrases

    src = tmp_path / "dataset_synthetic.json"
    shutil.copyfile(tiny_world / "dataset_synthetic.json", src)

    def parser(text):
        return [m.span() for m in re.finditer(r"(?:(?:small|large) )?[\w-]+ (?:circle|square|triangle|diamond|star|cross)", text)]

    out = extract_phrases(src, parser=parser)
    assert out == tmp_path / "phrases.json"
    gold = json.loads((tiny_world / "phrases.json").read_text())
    got = json.loads(out.read_text())
    assert set(got) == set(gold)
    for sid, plist in gold.items():
        assert [(p["start"], p["end"], p["text"]) for p in got[sid]] == [(p["start"], p["end"], p["text"]) for p in plist]
    recs = load_dataset("karpathy", src, image_root=tiny_world)
    assert sum(len(c.phrases) for r in recs.images for c in r.captions) == sum(len(v) for v in gold.values())


def test_help_is_fast_and_lazy():
    code = (
        "import sys, loupe_bench.cli.data, loupe_bench.cli.main as m;"
        "m.cli.main(args=['data','--help'], standalone_mode=False);"
        "bad=[k for k in ('torch','PIL','numpy','datasets') if k in sys.modules];"
        "print('HEAVY', bad)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout and "synth" in res.stdout and "check" in res.stdout
