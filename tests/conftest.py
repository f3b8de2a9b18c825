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


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """Path of the tiny synthetic world (``generate_world(size="tiny", seed=0, image_size=64)``)."""
    from loupe_bench.data.synth import generate_world

    return generate_world(tmp_path_factory.mktemp("world") / "tiny", seed=0, size="tiny", image_size=64)
