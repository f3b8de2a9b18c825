"""Packaging, CLI basics and citation metadata (issue 2: package and setup)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from loupe_bench import __version__
from loupe_bench.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "loupe_bench", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )


def test_citation_cff_is_valid_against_schema_1_2_0():
    import cffconvert
    import jsonschema

    schema_path = Path(cffconvert.__file__).parent / "schemas" / "1.2.0" / "schema.json"
    schema = json.loads(schema_path.read_text())
    data = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    # cffconvert's schema is draft-07; dates must be strings in CFF YAML
    jsonschema.Draft7Validator(schema).validate(data)
    assert data["cff-version"] == "1.2.0"
    pref = data["preferred-citation"]
    families = [a["family-names"] for a in pref["authors"]]
    assert families == ["Li", "He", "Wei", "Qian", "Zhu", "Xie", "Zhuang", "Tian", "Tang"]
    assert "2208.02515" in json.dumps(pref)


def test_citation_schema_rejects_a_broken_file():
    import cffconvert
    import jsonschema

    schema = json.loads((Path(cffconvert.__file__).parent / "schemas" / "1.2.0" / "schema.json").read_text())
    data = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    del data["authors"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(data)


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys\n"
        "from loupe_bench.cli.main import cli\n"
        "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "NOTORCH" in out.stdout
    assert "train" in out.stdout and "eval" in out.stdout and "data" in out.stdout


def test_version_flag():
    out = run_cli("--version")
    assert out.returncode == 0
    assert __version__ in out.stdout


@pytest.mark.parametrize("command", ["data", "list", "train", "eval", "report", "compare", "check", "reproduce", "bench",
                                     "export"])
def test_every_command_has_help(command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0


def test_unknown_command_is_usage_error_exit_2():
    out = run_cli("no-such-command")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_user_error_is_one_line_exit_2(tmp_path):
    out = run_cli("data", "check", str(tmp_path / "missing"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len([l for l in out.stderr.splitlines() if l.strip()]) == 1


def test_wheel_ships_specs(tmp_path):
    """`pip install .` must find baselines/, tasks/ and paper tables: they are force-included in the wheel."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("loupe_bench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("baselines", "tasks"):
        prefix = f"loupe_bench/_specs/{folder}/"
        shipped = [n[len(prefix):] for n in names if n.startswith(prefix) and n.endswith(".yaml")]
        source = sorted(p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob("*.yaml"))
        assert sorted(shipped) == source  # subfolders too (baselines/towers/)
    assert "loupe_bench/_specs/baselines/towers/tiny.yaml" in names
    assert not any(n.startswith("loupe_bench/models/specs/") for n in names)  # one home for model specs
    assert any(n.startswith("loupe_bench/_specs/paper/") for n in names)
    assert any(n.startswith("loupe_bench/train/recipes/") for n in names)
    assert "loupe_bench/cli/main.py" in names


def test_device_rule(monkeypatch):
    """``auto`` picks CUDA when present, else the CPU; CUDA without a GPU and unknown names are one-line errors."""
    import torch

    from loupe_bench.errors import SpecError
    from loupe_bench.utils.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(SpecError, match="CUDA is not available"):
            resolve_device(name)
    with pytest.raises(SpecError, match="unknown device"):
        resolve_device("gpu0")
    picked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: picked.append(i))
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(SpecError, match="only 2 CUDA"):
        resolve_device("cuda:5")
    assert picked == [0, 1]


@pytest.mark.parametrize("command", [["eval", "--model", "clip-tiny", "--task", "synthetic-retrieval"],
                                     ["bench", "retrieval-metric"]])
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_gpu_is_one_line_exit_2(command, device, tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")   # no GPU visible, also on a machine that has one
    out = subprocess.run([sys.executable, "-m", "loupe_bench", *command, "--device", device, "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "CUDA is not available" in lines[0], lines
    assert not (tmp_path / "out").exists()   # nothing started, nothing written
