"""Limits before reading (loupe_bench/utils/bounded.py): file type, size, YAML alias expansion and nesting depth."""
from __future__ import annotations

import os
import time

import pytest
import yaml

from loupe_bench.errors import DataError, SpecError
from loupe_bench.specs import load_yaml, parse_assignments
from loupe_bench.utils import bounded


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_refused_before_expansion(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(_bomb(9))  # 10**9 leaves once expanded, a few hundred bytes on disk
    assert path.stat().st_size < 1000
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="expands to more than"):
        load_yaml(path)
    assert time.perf_counter() - t0 < 2.0


def test_small_aliases_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {lr: 0.1}\nother: *b\n")
    assert load_yaml(path) == {"base": {"lr": 0.1}, "other": {"lr": 0.1}}
    assert bounded.yaml_load(_bomb(3)) == yaml.safe_load(_bomb(3))  # 1,000 leaves: within the limit


def test_deep_nesting_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(SpecError, match="nested deeper"):
        load_yaml(path)
    with pytest.raises(DataError, match="nested"):
        bounded.json_load("[" * 100000 + "]" * 100000, "deep.json")


def test_recursive_alias_refused():
    with pytest.raises(DataError):
        bounded.yaml_load("a: &a [*a]\n")


def test_fifo_and_device_refused_without_blocking(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="not a regular file"):
        load_yaml(fifo)  # opening a FIFO with no writer would block forever
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="not a regular file"):
        bounded.load_json_file(link)
    with pytest.raises(DataError, match="is a folder"):
        bounded.read_bytes(tmp_path)


def test_size_limit_from_stat(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 2000 + "\n")
    monkeypatch.setitem(bounded.LIMITS, "spec", 1000)
    with pytest.raises(SpecError, match="above the limit of 1,000 bytes"):
        load_yaml(path)


def test_non_finite_json_and_options_refused():
    with pytest.raises(DataError, match="non-finite"):
        bounded.json_load('{"x": NaN}', "r.json")
    with pytest.raises(SpecError, match="NaN"):
        parse_assignments(["optim.grad_clip=.nan"])
    assert parse_assignments(["optim.lr=0.001"]) == {"optim.lr": 0.001}


def test_config_builder_refuses_non_finite_and_huge_numbers():
    from loupe_bench.train.recipe import OptimConfig
    from loupe_bench.specs import from_mapping

    with pytest.raises(SpecError, match="finite"):
        from_mapping(OptimConfig, {"grad_clip": float("inf")}, "r.yaml", "optim")
    with pytest.raises(SpecError, match="digit"):
        from_mapping(OptimConfig, {"warmup_steps": 10**30}, "r.yaml", "optim")
