"""``torchrun --nproc_per_node 2`` (CPU, gloo) on the real ``loupe-bench train`` entry point equals one process.

What makes the two runs the same computation, with the same global batch ``G`` (here 8 = 2 ranks x 4):

* data: :class:`~loupe_bench.train.data.GlobalBatchSampler` cuts global batch ``k`` of the seeded per-epoch
  permutation into contiguous per-rank slices (rank order = single-process order); caption choice and augmentation
  are seeded per sample by ``(seed, epoch, image_id)``, not by a rank's RNG;
* model: every rank builds the model from the recipe seed (the tokenizer is trained on the same captions) and rank 0's
  parameters are broadcast;
* loss: the contrastive loss all-gathers the embeddings with gradients (``local_loss: false``), so each rank computes
  the full-batch loss; averaging the ranks' gradients then gives the full-batch gradient (checked against a single
  process in ``test_models_distributed.py`` and, on a stand-in model, in ``test_train_engine.py``).

Stochastic layers are the one thing a world size changes: rank ``r`` draws dropout masks from seed ``seed + 1000 r``,
so a dropout mask over 2 x 4 rows is not the mask a single process draws over 8. The shipped ``clip-tiny`` has BERT's
default dropout 0.1 (its 2-rank loss differs from the single process' in the second decimal), so this test trains
``clip-tiny`` with the text tower's dropout set to 0 — a spec file passed to ``--model`` as a user would.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import loupe_bench

STEPS, GLOBAL_BATCH = 4, 8
SETS = [f"data.batch_size={GLOBAL_BATCH}", "threads=1", "checkpoint.every=2", "log.progress=false", "device=cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry_point() -> list:
    """torchrun's program: the installed ``loupe-bench`` console script of this interpreter (``--no-python``), else
    the package as a module (``-m loupe_bench``)."""
    script = Path(sys.executable).parent / "loupe-bench"
    if script.is_file() and os.access(script, os.X_OK):
        return ["--no-python", str(script)]
    return ["-m", "loupe_bench"]


def _dropout_free_spec(tmp_path: Path) -> Path:
    from loupe_bench.models import get_spec

    spec = get_spec("clip-tiny")
    spec["name"] = "clip-tiny-nodropout"
    spec["text_tower"]["config"].update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    path = tmp_path / "clip-tiny-nodropout.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _rows(run: Path) -> list:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(tiny_world, tmp_path, one_torch_thread):
    from safetensors.torch import load_file

    from loupe_bench.models import load_model
    from loupe_bench.train import resume
    from loupe_bench.train.engine import train_model

    spec = _dropout_free_spec(tmp_path)
    args = ["train", "--model", str(spec), "--data", str(tiny_world), "--steps", str(STEPS)]
    for item in SETS:
        args += ["--set", item]
    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", "loupe-test",
           *_entry_point(), *args, "--out", str(out)]
    package_root = str(Path(loupe_bench.__file__).resolve().parents[1])  # the ranks import the package under test
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained ") == 1  # rank 0 reports, rank 1 stays quiet

    # the single-process reference: same spec, data, recipe and overrides, global batch 8 on one rank
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in SETS)}
    single = train_model(str(spec), str(tiny_world), "tiny-cpu", tmp_path / "single", overrides=dict(overrides, steps=STEPS))

    rows, ref = _rows(out), _rows(single)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # one writer: no duplicated rows
    for got, want in zip(rows, ref):
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)
        # every rank computes the full-batch loss from the gathered embeddings; rank 0 logs it
        for key in [k for k in want if k == "loss" or k.startswith("loss/")] + ["grad_norm"]:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (got["step"], key)
    assert len({round(r["loss"], 4) for r in ref}) > 1  # the steps saw different batches
    a, b = load_file(str(out / "model.safetensors")), load_file(str(single / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    # the run really was distributed, and the run dir is a model directory with the same tokenizer
    state = resume.load_state(resume.resolve_resume("latest", out) / "state.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["step"] == STEPS
    assert state["global_batch"] == GLOBAL_BATCH
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == (single / "tokenizer" / "tokenizer.json").read_bytes()
    load_model(out)
