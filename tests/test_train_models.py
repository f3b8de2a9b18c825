"""The one loop trains the real tiny CLIP, FILIP and LOUPE on the tiny synthetic world: the loss falls, every term
stays finite, and the run dir is a model directory.

Twenty-four steps only take the tiny models from their random start to a little below the chance level of the
contrastive loss (fourteen were enough on world version 2; on version 3, whose two-part objects make the captions
harder to match, FILIP's loss falls by only 6-14 % in fourteen steps over training seeds 0-3 and by 14-23 % in
twenty-four); that retrieval is learned far above chance with the ``tiny-cpu`` recipe is shown by its full runs (see the
training section of the report), not by a unit test.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from loupe_bench.train.engine import train_model

OVERRIDES = {"steps": 24, "threads": 1, "data.batch_size": 16, "optim.lr": 3e-3, "optim.warmup_steps": 2,
             "optim.min_lr_ratio": 0.3, "checkpoint.every": 0, "log.progress": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("spec", ["clip-tiny", "filip-tiny", "loupe-tiny"])
def test_tiny_run_loss_falls(spec, tiny_world, tmp_path):
    from loupe_bench.models import load_model

    run = train_model(spec, tiny_world, "tiny-cpu", tmp_path / spec, overrides=OVERRIDES)
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert len(rows) == OVERRIDES["steps"]
    terms = [k for k in rows[0] if k.startswith("loss/")]
    assert terms
    for r in rows:
        for k in terms + ["loss"]:
            assert r[k] == r[k] and abs(r[k]) != float("inf"), (r["step"], k)
    first = sum(r["loss"] for r in rows[:3]) / 3
    last = sum(r["loss"] for r in rows[-3:]) / 3
    assert last < 0.9 * first, (first, last)
    if spec != "loupe-tiny":  # a single InfoNCE term: it must not end above chance, ln(batch)
        assert last < math.log(OVERRIDES["data.batch_size"]) + 0.05, last
    model = load_model(run)  # the run dir is a model directory
    from safetensors.torch import load_file

    saved = load_file(str(run / "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def _loupe_spec(name="loupe-tiny", start=1, ramp=2):
    """A LOUPE spec whose ℒ_FSA starts at step ``start`` (the shipped specs wait 60 steps)."""
    from loupe_bench.models import get_spec

    spec = get_spec(name)
    spec["loupe"]["fsa"].update(start_step=start, ramp_steps=ramp)
    return spec


def test_loupe_resume_is_bit_identical(tiny_world, tmp_path):
    """The most stateful model (dropout, sampled coalitions, the neural-Shapley replay buffer kept out of the
    weights file, ℒ_FSA's step schedule): stop after step 3, resume from the step-2 checkpoint, compare with an
    uninterrupted run. ℒ_FSA starts at step 1 and ramps over 2, so the schedule crosses the cut."""
    from safetensors.torch import load_file

    ov = dict(OVERRIDES, steps=5, **{"data.batch_size": 8, "checkpoint.every": 2})
    full = train_model(_loupe_spec(), tiny_world, "tiny-cpu", tmp_path / "full", overrides=ov)
    train_model(_loupe_spec(), tiny_world, "tiny-cpu", tmp_path / "cut", overrides=ov, stop_after=3)
    cut = train_model(_loupe_spec(), tiny_world, "tiny-cpu", tmp_path / "cut", overrides=ov, resume="latest")
    rows = [json.loads(l) for l in (cut / "log.jsonl").read_text().splitlines()]
    assert [r["fsa_factor"] for r in rows] == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert [("loss/fsa" in r) for r in rows] == [False, True, True, True, True]
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_grad_checkpointing_keeps_the_gradient():
    """Activation checkpointing in both towers (timm + transformers) recomputes, it does not change the gradient."""
    from loupe_bench.models import create_model
    from loupe_bench.train.engine import enable_grad_checkpointing
    from loupe_bench.train.step import forward_backward

    caps = ["a small red circle left of a blue square", "a large green triangle", "two yellow stars on the right"]
    model = create_model("clip-tiny", tokenizer_corpus=caps * 5, seed=0).train()
    tb = model.tokenizer(caps)
    g = torch.Generator().manual_seed(0)
    batch = {"pixels": torch.randn(3, 3, 64, 64, generator=g), "input_ids": tb.input_ids,
             "attention_mask": tb.attention_mask, "image_ids": torch.arange(3)}

    def grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        forward_backward(model, batch, 1)
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = grads()
    assert enable_grad_checkpointing(model) >= 2
    bert = model.text_tower.model
    assert model.image_tower.model.grad_checkpointing
    assert getattr(bert, "is_activation_checkpointing", None) or bert.is_gradient_checkpointing
    got = grads()
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)


def test_oracle_regions_spec_trains_on_the_world(tiny_world, tmp_path):
    """``loupe-oracle-regions`` (NOT LOUPE: ℒ_FSA on ground-truth phrase boxes) trains a few steps: the batch carries
    the phrase boxes through the crop, ℒ_FSA stays finite; data without phrase boxes is refused."""
    from loupe_bench.errors import DataError

    ov = dict(OVERRIDES, steps=4, **{"data.batch_size": 8})
    run = train_model(_loupe_spec("loupe-oracle-regions", 0, 0), tiny_world, "tiny-cpu", tmp_path / "oracle", overrides=ov)
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(math.isfinite(r["loss/fsa"]) and r["fsa_factor"] == 1.0 for r in rows)
    no_boxes = tmp_path / "no_boxes"
    import shutil

    shutil.copytree(tiny_world, no_boxes)
    (no_boxes / "phrases.json").write_text(
        json.dumps({k: [{kk: vv for kk, vv in p.items() if kk != "bbox"} for p in v]
                    for k, v in json.loads((tiny_world / "phrases.json").read_text()).items()}))
    with pytest.raises(DataError, match="phrase_boxes"):
        train_model(_loupe_spec("loupe-oracle-regions", 0, 0), no_boxes, "tiny-cpu", tmp_path / "oracle2",
              overrides=dict(ov, steps=1))
