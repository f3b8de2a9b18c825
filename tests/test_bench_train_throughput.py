"""``bench train-throughput``: the open_clip model it times is our CLIP's backbone, and a missing open_clip is one line.

The run itself (JSON fields, equal parameter counts, the ratios) is checked with every other benchmark in
``test_bench.py``. Here the claim behind the ratio is checked against open_clip itself: with our weights copied in, the
``open_clip.CustomTextCLIP`` twin gives the same embeddings, open_clip's ``ClipLoss`` gives our loss, and backward
gives the same gradient for every parameter (name by name), so the two training loops compute the same thing.
"""
from __future__ import annotations

import sys

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _map(name: str) -> str:
    """Our parameter name -> the twin's (the correspondence the benchmark's weight copy uses)."""
    for ours, theirs in (("image_tower.model.", "visual.trunk."), ("text_tower.model.", "text.transformer."),
                         ("image_proj.", "visual.head.proj."), ("text_proj.", "text.proj.")):
        if name.startswith(ours):
            return theirs + name[len(ours):]
    return name


def test_open_clip_twin_is_the_same_model(tiny_world):
    open_clip = pytest.importorskip("open_clip")
    from loupe_bench.bench.common import build_tiny, world_batches
    from loupe_bench.bench.train_throughput import n_params, open_clip_text, open_clip_twin

    model = build_tiny("clip-tiny", 0, tiny_world)
    twin = open_clip_twin(model)
    assert isinstance(twin, open_clip.CustomTextCLIP)
    assert n_params(twin) == n_params(model)
    batch = world_batches(model, 1, 6, 0, tiny_world)[0]
    batch["attention_mask"][0, 3:] = 0  # a short caption: padding must be masked the same way on both sides
    texts = open_clip_text(model, batch)
    model.eval(), twin.eval()  # no dropout: the two forwards must agree exactly
    ours = model.loss(batch)
    out = twin(batch["pixels"], texts)
    theirs = open_clip.ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"])
    assert float(theirs.detach()) == pytest.approx(float(ours.total.detach()), rel=1e-5)
    ours.total.backward()
    theirs.backward()
    mine = dict(model.named_parameters())
    other = dict(twin.named_parameters())
    assert {_map(n) for n in mine} == set(other)
    for name, p in mine.items():
        q = other[_map(name)]
        assert p.shape == q.shape, name
        if p.grad is None:
            assert q.grad is None or not q.grad.any(), name
            continue
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_missing_open_clip_is_one_line(monkeypatch, tmp_path, capsys):
    from loupe_bench.bench.runner import run_benchmarks

    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` raises ImportError
    records = run_benchmarks(["train-throughput"], repeat=1, out_dir=tmp_path)
    assert records == []
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "open_clip" in line]
    assert len(lines) == 1 and "pip install 'loupe-bench[openclip]'" in lines[0], out
    assert "Traceback" not in out
    assert not (tmp_path / "train_throughput.json").exists()  # a committed result is not overwritten by a skip
