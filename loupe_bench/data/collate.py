"""Batch collation for training (the contract's ``loupe_bench.data.collate``); implemented in
:mod:`loupe_bench.data.training`."""
from .training import PairSample, TrainCollator, phrase_token_mask

__all__ = ["PairSample", "TrainCollator", "phrase_token_mask"]
