"""Tokenizers: one callable wrapper over transformers fast tokenizers, plus WordPiece training for from-scratch runs.

``tokenizer(texts) -> TokenBatch(input_ids, attention_mask, offsets)``, padded to ``max_length``. Offsets come from
the fast tokenizer (``(0, 0)`` for special and padding tokens). A pretrained tower brings its own tokenizer (an
HF-format directory loaded with ``AutoTokenizer``); a from-scratch model trains a WordPiece tokenizer on the
training captions with :func:`train_tokenizer` and saves it with the model (``tokenizer/`` in the model directory).
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence

import torch

from ..errors import CheckpointError, SpecError
from .base import TokenBatch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Characters always in a trained vocabulary (as word starts and ``##`` continuations), so no text maps to [UNK]
#: merely because a character was absent from the training captions.
ALPHABET = string.ascii_lowercase + string.digits + string.punctuation


@dataclass
class TokenizerCfg:
    """Tokenizer spec (``tokenizer:`` in a model spec).

    Attributes:
        kind: ``wordpiece`` (trained on the training captions), ``wordlevel`` (one id per word, trained likewise) or
            ``pretrained`` (from ``path``, or from the text tower's pretrained directory when ``path`` is empty).
        vocab_size: target size of a trained vocabulary.
        max_length: every batch is padded / truncated to this many tokens.
        lowercase: lower-case before tokenising (trained kinds).
        path: an HF-format tokenizer directory (``pretrained`` kind).
    """

    kind: str = "wordpiece"
    vocab_size: int = 1000
    max_length: int = 32
    lowercase: bool = True
    path: Optional[str] = None

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "TokenizerCfg":
        from .towers import _from_mapping

        cfg = _from_mapping(cls, data or {}, "tokenizer")
        if cfg.kind not in ("wordpiece", "wordlevel", "pretrained"):
            raise SpecError(f"tokenizer: unknown kind {cfg.kind!r}; known: pretrained, wordlevel, wordpiece")
        return cfg


class Tokenizer:
    """Callable wrapper around a transformers fast tokenizer.

    Args:
        hf_tokenizer: a fast tokenizer (``return_offsets_mapping`` must work).
        max_length: pad / truncate length.
    """

    def __init__(self, hf_tokenizer: Any, max_length: int):
        if not getattr(hf_tokenizer, "is_fast", False):
            raise SpecError("tokenizer: a fast (tokenizers-backed) tokenizer is needed for character offsets")
        self.hf = hf_tokenizer
        self.max_length = int(max_length)
        if self.hf.pad_token is None:  # e.g. a GPT-style vocabulary
            self.hf.pad_token = self.hf.eos_token or self.hf.unk_token

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        if isinstance(texts, str):
            texts = [texts]
        enc = self.hf(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length,
            return_offsets_mapping=True, return_attention_mask=True, return_tensors="pt",
        )
        return TokenBatch(
            enc["input_ids"].long(), enc["attention_mask"].long(), enc["offset_mapping"].long()
        )

    def __len__(self) -> int:
        return len(self.hf)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def pad_id(self) -> int:
        return int(self.hf.pad_token_id)

    @property
    def special_ids(self) -> List[int]:
        """Ids of special tokens other than ``[UNK]`` (``[CLS]``, ``[SEP]``, ``[PAD]``, ``<|endoftext|>`` ...).

        Padding is included on purpose: a vocabulary whose pad token is also its end token (OpenAI CLIP) must drop
        the real end token too when special tokens are excluded from token-level scoring.
        """
        unk = self.hf.unk_token_id
        return sorted({int(i) for i in self.hf.all_special_ids} - ({int(unk)} if unk is not None else set()))

    def save(self, directory: Path) -> None:
        self.hf.save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: Path, max_length: int) -> "Tokenizer":
        """Load an HF-format tokenizer directory (offline; never ``trust_remote_code``)."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: tokenizer directory not found")
        try:
            hf = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, use_fast=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{directory}: cannot load tokenizer ({exc})".splitlines()[0]) from None
        return cls(hf, max_length)


def _alphabet_corpus(lowercase: bool) -> List[str]:
    chars = ALPHABET + ("" if lowercase else string.ascii_uppercase)
    # "a" + c makes the trainer see c as a continuation (##c); c alone makes it a word start
    return [" ".join(chars), " ".join("a" + c for c in chars if c.isalnum())]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000, max_length: int = 32, kind: str = "wordpiece",
                    lowercase: bool = True) -> Tokenizer:
    """Train a BERT-style tokenizer (``[CLS] text [SEP]``, ``[PAD]`` = 0) on ``texts``; deterministic.

    Args:
        texts: training captions.
        vocab_size: target vocabulary size (WordPiece) or the most frequent words kept (word level).
        max_length: pad / truncate length of the returned wrapper.
        kind: ``wordpiece`` or ``wordlevel``.
        lowercase: lower-case and strip accents first.
    """
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(texts) + _alphabet_corpus(lowercase)
    if kind == "wordpiece":
        raw = RawTokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                            min_frequency=1, show_progress=False)
        raw.decoder = decoders.WordPiece()
    elif kind == "wordlevel":
        raw = RawTokenizer(models.WordLevel(unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                            min_frequency=1, show_progress=False)
    else:
        raise SpecError(f"tokenizer: cannot train kind {kind!r} (wordpiece or wordlevel)")
    raw.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.train_from_iterator(corpus, trainer=trainer)
    cls_id, sep_id = raw.token_to_id("[CLS]"), raw.token_to_id("[SEP]")
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                 sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length)
    tok = Tokenizer(hf, max_length)
    # transformers 5.x trap: make sure the vocabulary really is the trained one and ids are the expected ones
    if hf.pad_token_id != 0 or len(hf) < len(SPECIAL_TOKENS) + len(ALPHABET):
        raise RuntimeError(f"tokenizer training produced an unexpected vocabulary (size {len(hf)}, "
                           f"pad id {hf.pad_token_id})")
    return tok


def build_tokenizer(cfg: TokenizerCfg, corpus: Optional[Iterable[str]] = None,
                    text_tower_dir: Optional[str] = None) -> Tokenizer:
    """The tokenizer a spec asks for: trained on ``corpus`` or loaded from a pretrained directory.

    Without a corpus a trained kind still works: its vocabulary is the special tokens plus the character alphabet
    (every word splits into characters), so a randomly initialised model can be built and evaluated.
    """
    if cfg.kind == "pretrained":
        src = cfg.path or text_tower_dir
        if not src:
            raise SpecError("tokenizer: kind 'pretrained' needs tokenizer.path or a pretrained text tower directory")
        if not Path(src).expanduser().is_dir():
            from .towers import hub_offline

            if hub_offline():
                raise CheckpointError(f"tokenizer {src!r}: not a local directory and HF_HUB_OFFLINE is set")
            from transformers import AutoTokenizer

            return Tokenizer(AutoTokenizer.from_pretrained(src, use_fast=True), cfg.max_length)
        return Tokenizer.load(Path(src).expanduser(), cfg.max_length)
    return train_tokenizer(corpus or [], cfg.vocab_size, cfg.max_length, cfg.kind, cfg.lowercase)
