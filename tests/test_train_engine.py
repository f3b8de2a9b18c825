"""Training engine: exact resume (also after kill -9), 2-process gloo DDP == one process, feature-caching
accumulation == large batch, NaN guard, checkpoints, schedule and weight-decay groups.

Runs on a stand-in two-tower model (tests/test_train_support.py) so each test takes about a second.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from loupe_bench.errors import CheckpointError, LoupeBenchError
from loupe_bench.models.checkpoint import read_weights
from loupe_bench.train import resume
from loupe_bench.train.engine import NonFiniteLossError, train_model
from loupe_bench.train.optim import cosine_factor, create_optimizer, create_scheduler, param_groups
from loupe_bench.train.step import forward_backward, split_batch
from loupe_bench.utils import run_files

from test_train_support import KILL_SCRIPT, TensorDataset, TensorSource, TinyVL, ddp_worker, stack, tiny_recipe, weights

TESTS = str(Path(__file__).resolve().parent)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(out, **changes):
    torch.manual_seed(0)
    return train_model(TinyVL(), TensorSource(), tiny_recipe(**changes), out)


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_dir_layout_log_and_loss_falls(tmp_path):
    run = _run(tmp_path / "run", steps=12)
    assert (run / "config.json").is_file() and (run / "recipe.yaml").is_file() and (run / "model.safetensors").is_file()
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    for key in ("loss", "loss/i2t", "loss/t2i", "lr", "images_per_s", "scale", "grad_norm"):
        assert key in rows[0], key
    assert rows[0]["lr"] == pytest.approx(0.01 / 2)  # first warm-up step
    assert sum(r["loss"] for r in rows[-3:]) < 0.6 * sum(r["loss"] for r in rows[:3])
    # keep-last-2, latest pointer, final step always checkpointed
    assert [p.name for p in run_files.list_checkpoints(run)] == ["step_10", "step_12"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_12"
    # the final weights are those of the last checkpoint
    _assert_identical(weights(run), read_weights(run / "checkpoints" / "step_12" / "model.safetensors"))


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = weights(_run(tmp_path / "a", steps=4))
    b = weights(_run(tmp_path / "b", steps=4))
    c = weights(_run(tmp_path / "c", steps=4, seed=4))
    _assert_identical(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resume_in_process_is_bit_identical(tmp_path):
    """Stop after step 5 (checkpoint at 4, across an epoch boundary: 6 batches per epoch), resume -> identical."""
    full = weights(_run(tmp_path / "full", steps=14))
    torch.manual_seed(0)
    train_model(TinyVL(), TensorSource(), tiny_recipe(steps=14), tmp_path / "cut", stop_after=5)
    assert resume.resolve_resume("latest", tmp_path / "cut").name == "step_4"
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    train_model(TinyVL(), TensorSource(), tiny_recipe(steps=14), tmp_path / "cut", resume="latest")
    _assert_identical(full, weights(tmp_path / "cut"))
    rows = [json.loads(l)["step"] for l in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert rows == list(range(1, 15))  # rows after the checkpoint were replaced, none duplicated


def test_kill_9_then_resume_latest_is_bit_identical(tmp_path):
    steps = 14
    full = weights(_run(tmp_path / "full", steps=steps))
    run = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = KILL_SCRIPT.format(tests=TESTS, sleep=0.15, steps=steps, out=str(run), resume=None)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.is_file() and latest.read_text().strip() in ("step_4", "step_6"):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()  # it really died mid-run
    torch.manual_seed(99)  # resume in this process: every state must come from the checkpoint the kill left
    train_model(TinyVL(), TensorSource(), tiny_recipe(steps=steps), run, resume="latest")
    _assert_identical(full, weights(run))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_and_fsdp2_match_single_process(tmp_path):
    """Same global batch of 8: one process vs 2 ranks x 4 (DDP, then FSDP2 with fully_shard), 6 AdamW steps."""
    import torch.multiprocessing as mp

    single = weights(_run(tmp_path / "single", steps=6))
    runs = [(str(tmp_path / "ddp"), {"steps": 6}), (str(tmp_path / "fsdp"), {"steps": 6, "distributed.strategy": "fsdp2"})]
    mp.start_processes(ddp_worker, args=(2, _free_port(), runs), nprocs=2, join=True, start_method="spawn")
    for name in ("ddp", "fsdp"):
        got = weights(tmp_path / name)
        assert got.keys() == single.keys()
        for k in single:
            torch.testing.assert_close(got[k], single[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")
        # the run really was distributed: the checkpoint records both ranks
        state = resume.load_state(resume.resolve_resume("latest", tmp_path / name) / "state.pt")
        assert state["world_size"] == 2 and len(state["rng"]) == 2
    # and the comparison can fail: another seed gives other weights
    other = weights(_run(tmp_path / "other", steps=6, seed=11))
    assert any(not torch.allclose(other[k], single[k], rtol=1e-4, atol=1e-5) for k in single)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("accum", [2, 4])
def test_feature_caching_accumulation_equals_large_batch(accum):
    ds = TensorDataset(16)
    batch = stack([ds[i] for i in range(16)])
    torch.manual_seed(0)
    model = TinyVL()
    big = forward_backward(model, batch, 1)
    ref = _grads(model)
    model.zero_grad(set_to_none=True)
    out = forward_backward(model, batch, accum)
    got = _grads(model)
    assert float(out.total) == pytest.approx(float(big.total), rel=1e-6)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-7, msg=k)
    # the temperature (used only by the loss) gets its gradient once, not accum times
    assert got["logit_scale"].abs().item() > 0


def test_naive_per_microbatch_loss_differs_from_large_batch():
    """Sanity of the test above: micro-batches contrasted only among themselves give another gradient."""
    ds = TensorDataset(16)
    batch = stack([ds[i] for i in range(16)])
    torch.manual_seed(0)
    model = TinyVL()
    forward_backward(model, batch, 1)
    ref = _grads(model)
    model.zero_grad(set_to_none=True)
    for mb in split_batch(batch, 2):
        (model.loss(mb).total / 2).backward()
    got = _grads(model)
    assert not all(torch.allclose(got[k], ref[k], rtol=1e-5, atol=1e-7) for k in ref)


def test_non_finite_loss_stops_with_step_and_term_and_keeps_last_checkpoint(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(NonFiniteLossError) as info:
        train_model(TinyVL(nan_at=7), TensorSource(), tiny_recipe(steps=10), tmp_path / "nan")
    msg = str(info.value)
    assert "step 7" in msg and "'i2t'" in msg and "nan" in msg and "step_6" in msg
    assert isinstance(info.value, LoupeBenchError)
    assert resume.resolve_resume("latest", tmp_path / "nan").name == "step_6"
    assert not (tmp_path / "nan" / "model.safetensors").exists()


def test_resume_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resume.resolve_resume("latest", tmp_path)
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        resume.resolve_resume(tmp_path, tmp_path)
    run = _run(tmp_path / "r", steps=3)
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="global batch"):
        train_model(TinyVL(), TensorSource(), tiny_recipe(steps=4, **{"data.batch_size": 4}), run, resume="latest")


def test_state_file_holds_every_rng_and_loads_weights_only(tmp_path):
    run = _run(tmp_path / "r", steps=3)
    state = torch.load(run / "checkpoints" / "step_2" / "state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "rng", "step", "epoch", "batch_in_epoch"} <= set(state)
    assert {"python", "numpy", "torch"} <= set(state["rng"][0])
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (2, 0, 2)


def test_rng_state_round_trip():
    import random

    import numpy as np

    s = resume.rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    resume.set_rng_state(s)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def test_cosine_schedule_closed_form():
    import math

    assert cosine_factor(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert cosine_factor(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert cosine_factor(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert cosine_factor(55, 100, 10, 0.0) == pytest.approx(0.5)
    assert cosine_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert cosine_factor(32, 100, 10, 0.2) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 22 / 90)))
    model = TinyVL()
    opt = create_optimizer(model, tiny_recipe().optim)
    sched = create_scheduler(opt, tiny_recipe().optim, 8)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.01 * cosine_factor(s, 8, 2, 0.0) for s in range(8)])


def test_no_weight_decay_on_norms_biases_temperature_embeddings():
    model = TinyVL()
    groups = param_groups(model, 0.1, tiny_recipe().optim.no_decay + ["text.weight"])
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    kept = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {"image.1.weight", "image.3.weight", "text_proj.weight"}
    assert {"logit_scale", "norm.weight", "norm.bias", "image.1.bias", "text.weight"} <= kept


def test_lamb_optimizer_trains(tmp_path):
    rows = _run(tmp_path / "lamb", steps=6, **{"optim.name": "lamb"})
    assert (rows / "model.safetensors").is_file()


def test_tensorboard_option(tmp_path):
    import importlib.util

    from loupe_bench.errors import SpecError

    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(SpecError, match="tensorboard package is not installed"):
            _run(tmp_path / "tb", steps=3, **{"log.tensorboard": True})
    else:
        run = _run(tmp_path / "tb", steps=3, **{"log.tensorboard": True})
        assert any((run / "tensorboard").iterdir())


def test_existing_run_dir_needs_resume(tmp_path):
    from loupe_bench.errors import SpecError

    run = _run(tmp_path / "r", steps=3)
    with pytest.raises(SpecError, match="already holds checkpoints; pass --resume latest"):
        _run(run, steps=3)
