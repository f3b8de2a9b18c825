"""Training data for the engine: a deterministic, resumable, rank-aware batch order, and the data sources.

A *source* answers two questions: which captions train a from-scratch tokenizer (:meth:`TrainSource.captions`),
and, once the model (its tokenizer, image size, mean/std) exists, which dataset and collate function feed it
(:meth:`TrainSource.build`). :class:`DatasetSource` wraps the data layer (synthetic world, Karpathy, CSV, HF,
webdataset); tests pass their own source.

Batch order (map-style datasets): epoch ``e`` is the permutation ``π_e`` of a generator seeded by ``(seed, e)``;
global batch ``k`` is ``π_e[kG : (k+1)G]`` and rank ``r`` of ``W`` takes the contiguous slice
``[r·G/W, (r+1)·G/W)`` of it, so the concatenation of the ranks' batches in rank order is exactly the global batch of
a single process. Resuming at batch ``k`` of epoch ``e`` starts the same permutation at ``k``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Protocol, Union

import torch
from torch.utils.data import Dataset, IterableDataset, Sampler


class GlobalBatchSampler(Sampler[List[int]]):
    """Per-rank index lists of consecutive global batches of a seeded per-epoch permutation (see module doc)."""

    def __init__(self, n: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} not divisible by world size {world_size}")
        self.n, self.global_batch, self.rank, self.world_size = n, global_batch, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def permutation(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator()
        g.manual_seed(int(self.seed) * 1_000_003 + int(self.epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[List[int]]:
        perm = self.permutation().tolist()
        local = self.global_batch // self.world_size
        for k in range(self.start_batch, self.batches_per_epoch()):
            lo = k * self.global_batch + self.rank * local
            yield perm[lo: lo + local]


class BuiltData(NamedTuple):
    """What a source builds for a given model.

    Attributes:
        dataset: a map-style ``Dataset`` (ordered by :class:`GlobalBatchSampler`) or an ``IterableDataset`` that
            splits itself by rank and worker and yields per-rank samples.
        collate: turns a list of samples into the training batch of docs/architecture.md.
        size: number of samples per epoch (``None`` for an unsized stream).
    """

    dataset: Union[Dataset, IterableDataset]
    collate: Callable[[List[Any]], Dict[str, Any]]
    size: Optional[int]


class TrainSource(Protocol):
    """Where training data comes from (see the module docstring)."""

    name: str

    def captions(self) -> List[str]:
        ...

    def build(self, model: Any, recipe: Any, rank: int, world_size: int) -> BuiltData:
        ...


def set_dataset_epoch(dataset: Any, epoch: int) -> None:
    """Tell a dataset the epoch (per-epoch caption choice / augmentation seeds), when it listens."""
    fn = getattr(dataset, "set_epoch", None)
    if callable(fn):
        fn(epoch)


def make_loader(built: BuiltData, per_rank_batch: int, global_batch: int, rank: int, world_size: int, seed: int,
                epoch: int, start_batch: int, workers: int, pin_memory: bool = False):
    """A ``DataLoader`` for ``epoch`` starting at ``start_batch`` (its own generator: the global RNG is untouched)."""
    from torch.utils.data import DataLoader

    set_dataset_epoch(built.dataset, epoch)
    g = torch.Generator()
    g.manual_seed(int(seed) * 7_919 + int(epoch))
    common = dict(collate_fn=built.collate, num_workers=workers, generator=g, pin_memory=pin_memory,
                  persistent_workers=False)
    if isinstance(built.dataset, IterableDataset):
        loader = DataLoader(built.dataset, batch_size=per_rank_batch, drop_last=True, **common)
        it = iter(loader)
        for _ in range(start_batch):  # exact but linear-time skip
            next(it)
        return loader, it, None
    sampler = GlobalBatchSampler(built.size, global_batch, rank, world_size, seed)
    sampler.set_epoch(epoch, start_batch)
    loader = DataLoader(built.dataset, batch_sampler=sampler, **common)
    return loader, iter(loader), sampler.batches_per_epoch()
