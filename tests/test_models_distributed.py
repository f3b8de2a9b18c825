"""Cross-rank negatives: the contrastive losses on 2 CPU (gloo) processes equal the single-process full batch."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from loupe_bench.models.losses import clip_infonce, filip_infonce

WORLD = 2


def _data():
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    t = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    it = F.normalize(torch.randn(6, 5, 8, generator=g), dim=-1)
    tt = F.normalize(torch.randn(6, 4, 8, generator=g), dim=-1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]).bool()
    return v, t, it, tt, mask


def _losses(v, t, it, tt, mask, local, with_grad=True):
    scale = torch.tensor(5.0)
    return (clip_infonce(v, t, scale, local_loss=local, with_grad=with_grad),
            filip_infonce(it, tt, mask, scale, local_loss=local, with_grad=with_grad))


def _worker(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        v, t, it, tt, mask = _data()
        rows = slice(rank * 3, rank * 3 + 3)
        results = {}
        for key, local, with_grad in (("global", False, True), ("local", True, True), ("nograd", False, False)):
            leaves = [x[rows].clone().requires_grad_(True) for x in (v, t, it, tt)]
            clip_l, filip_l = _losses(*leaves, mask[rows], local, with_grad)
            (clip_l + filip_l).backward()
            results[key] = (clip_l.item(), filip_l.item(), [x.grad.clone() for x in leaves])
        torch.save(results, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_losses_equal_full_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    v, t, it, tt, mask = _data()
    leaves = [x.clone().requires_grad_(True) for x in (v, t, it, tt)]
    clip_full, filip_full = _losses(*leaves, mask, local=False)
    (clip_full + filip_full).backward()
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(WORLD)]
    for r, res in enumerate(ranks):
        # global logits: every rank computes the full-batch loss
        assert res["global"][0] == pytest.approx(clip_full.item(), abs=1e-6)
        assert res["global"][1] == pytest.approx(filip_full.item(), abs=1e-6)
        assert res["nograd"][:2] == pytest.approx(res["global"][:2], abs=1e-6)
        # gather-with-grad sums every rank's gradient; DDP's averaging then gives the full-batch gradient
        for got, leaf in zip(res["global"][2], leaves):
            torch.testing.assert_close(got / WORLD, leaf.grad[r * 3:r * 3 + 3], atol=1e-6, rtol=1e-5)
        # without grad through the gather only this rank's (identical) loss reaches its rows: exactly dL/dx_local,
        # a factor WORLD below gather-with-grad
        for got, leaf in zip(res["nograd"][2], leaves):
            torch.testing.assert_close(got, leaf.grad[r * 3:r * 3 + 3], atol=1e-6, rtol=1e-5)
    # local loss (local rows x global columns): the mean over ranks is the full-batch loss
    assert sum(res["local"][0] for res in ranks) / WORLD == pytest.approx(clip_full.item(), abs=1e-6)
    assert sum(res["local"][1] for res in ranks) / WORLD == pytest.approx(filip_full.item(), abs=1e-6)


def _grad_worker(rank, init_file, out_file):
    from loupe_bench.train.distributed import average_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        both, only0, none = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
        both.grad = torch.full((3,), float(rank + 1))  # 1 and 2: mean 1.5
        if rank == 0:
            only0.grad = torch.full((3,), 4.0)  # rank 1 has none: it takes part with zeros, mean 2
        average_gradients([both, only0, none])
        torch.save({"both": both.grad, "only0": only0.grad, "none": none.grad is None}, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_average_gradients_keeps_none_where_no_rank_has_a_gradient(tmp_path):
    """A parameter with a gradient on some rank is averaged with zeros elsewhere; one without a gradient on every
    rank keeps ``grad = None`` (as in one process, where the optimiser skips it: e.g. ``loupe.tsa.every``)."""
    mp.spawn(_grad_worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    for r in range(WORLD):
        res = torch.load(tmp_path / f"out.{r}", weights_only=True)
        torch.testing.assert_close(res["both"], torch.full((3,), 1.5))
        torch.testing.assert_close(res["only0"], torch.full((3,), 2.0))
        assert res["none"] is True
