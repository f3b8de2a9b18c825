"""Stand-ins for the training-engine tests: a tiny two-tower model and an in-memory data source.

The model follows the :class:`~loupe_bench.models.base.VLModel` training contract (``embed`` /
``loss_from_embeddings``, cross-rank negatives through ``loupe_bench.models.gather``) with a few hundred parameters,
so engine behaviour (resume, DDP, accumulation) is tested in milliseconds. No tests live here.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loupe_bench.models.base import LossOutput, VLModel
from loupe_bench.train.data import BuiltData

VOCAB, LENGTH, PIX = 12, 6, 4


class TinyVL(VLModel):
    """Linear image tower on 3×4×4 pixels, bag-of-embeddings text tower, a learnable temperature."""

    def __init__(self, dim: int = 8, sleep: float = 0.0, nan_at: int = -1):
        super().__init__()
        self.spec = {"name": "tiny-standin", "dim": dim}
        self.tokenizer = None
        self.image = nn.Sequential(nn.Flatten(), nn.Linear(3 * PIX * PIX, 16), nn.GELU(), nn.Linear(16, dim))
        self.text = nn.Embedding(VOCAB, dim)
        self.text_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.sleep = sleep
        self.nan_at = nan_at
        self.calls = 0

    def embed(self, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        if self.sleep:
            time.sleep(self.sleep)
        img = F.normalize(self.image(batch["pixels"]), dim=-1)
        m = batch["attention_mask"].unsqueeze(-1).float()
        txt = (self.text(batch["input_ids"]) * m).sum(1) / m.sum(1).clamp(min=1)
        txt = F.normalize(self.text_proj(self.norm(txt)), dim=-1)
        return {"image": img, "text": txt}

    def loss_from_embeddings(self, emb: Dict[str, Tensor], batch: Dict[str, Any]) -> LossOutput:
        from loupe_bench.models.gather import gather_batch

        img, txt = gather_batch(emb["image"]), gather_batch(emb["text"])
        logits = self.logit_scale.exp() * img @ txt.T
        target = torch.arange(img.shape[0])
        i2t, t2i = F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)
        self.calls += 1
        if self.calls == self.nan_at:
            i2t = i2t * float("nan")
        return LossOutput(0.5 * (i2t + t2i), {"i2t": i2t, "t2i": t2i}, {"scale": float(self.logit_scale.detach().exp())})


class TensorDataset(torch.utils.data.Dataset):
    """N paired samples: image ``i`` shows a class pattern, its caption names the class.

    Like the data layer's pair dataset, per-sample randomness (here: pixel noise, the augmentation stand-in) is
    seeded by ``(epoch, index)`` so a resumed run draws the same samples.
    """

    def __init__(self, n: int = 48, classes: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.protos = torch.randn(classes, 3, PIX, PIX, generator=g)
        self.labels = torch.randint(0, classes, (n,), generator=g)
        self.words = torch.randint(2, VOCAB, (classes, LENGTH), generator=g)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.epoch * 100_003 + i)
        c = int(self.labels[i])
        return {"pixels": self.protos[c] + 0.3 * torch.randn(3, PIX, PIX, generator=g),
                "input_ids": self.words[c], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "image_ids": torch.tensor(i)}


def stack(samples: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class TensorSource:
    """A :class:`~loupe_bench.train.data.TrainSource` over :class:`TensorDataset`."""

    name = "tensors"

    def __init__(self, n: int = 48):
        self.n = n

    def captions(self) -> List[str]:
        return ["a caption"]

    def build(self, model, recipe, rank: int, world_size: int) -> BuiltData:
        return BuiltData(TensorDataset(self.n), stack, self.n)


def tiny_recipe(**changes) -> "Recipe":
    from loupe_bench.train.recipe import recipe_from_dict

    base = {"name": "standin", "steps": 8, "threads": 1, "device": "cpu", "seed": 3,
            "data": {"batch_size": 8, "workers": 0},
            "optim": {"lr": 0.01, "warmup_steps": 2, "weight_decay": 0.05},
            "checkpoint": {"every": 2, "keep_last": 2}, "log": {"progress": False}}
    r = recipe_from_dict(base)
    return r.replace(**changes) if changes else r


def weights(run_dir) -> Dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def ddp_worker(rank: int, world: int, port: int, runs: List[Any]) -> None:
    """One rank of gloo runs ``[(out, overrides), ...]``, configured through the environment variables torchrun
    sets. The first run initialises the process group from them (as under torchrun); later runs reuse it (the
    engine only tears down a group it created, and torch's autograd all-gather keeps the first world group)."""
    import os

    import torch.distributed as dist

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from loupe_bench.train.engine import train_model

    for i, (out, overrides) in enumerate(runs):
        if i == 0 and len(runs) > 1:
            dist.init_process_group("gloo", rank=rank, world_size=world)
        torch.manual_seed(0)
        train_model(TinyVL(), TensorSource(), tiny_recipe(**overrides), out)
    if dist.is_initialized():
        dist.barrier()  # both ranks past their last collective before the group's threads are torn down
        dist.destroy_process_group()


KILL_SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
import torch
from test_train_support import TinyVL, TensorSource, tiny_recipe
from loupe_bench.train.engine import train_model
torch.manual_seed(0)
train_model(TinyVL(sleep={sleep}), TensorSource(), tiny_recipe(steps={steps}), {out!r}, resume={resume!r})
"""
