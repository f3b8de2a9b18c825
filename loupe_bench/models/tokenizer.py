"""Tokenizers: one callable wrapper over transformers fast tokenizers, plus WordPiece training for from-scratch runs.

``tokenizer(texts) -> TokenBatch(input_ids, attention_mask, offsets)``, padded to ``max_length``. Offsets come from
the fast tokenizer (``(0, 0)`` for special and padding tokens). A pretrained tower brings its own tokenizer (an
HF-format directory loaded with ``AutoTokenizer``); a from-scratch model trains a WordPiece tokenizer on the
training captions with :func:`train_tokenizer` and saves it with the model (``tokenizer/`` in the model directory).
"""
from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence


from ..errors import CheckpointError, SpecError
from .base import TokenBatch
from .spec_fields import choice_check, size_check, type_check

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Characters always in a trained WordPiece vocabulary (as word starts and ``##`` continuations), so no text maps to
#: [UNK] merely because a character was absent from the training captions.
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

    kind: str = field(default="wordpiece", metadata={"check": choice_check("pretrained", "wordlevel", "wordpiece")})
    vocab_size: int = field(default=1000, metadata={"check": size_check("vocab_size")})
    max_length: int = field(default=32, metadata={"check": size_check("context_length")})
    lowercase: bool = field(default=True, metadata={"check": type_check(bool)})
    path: Optional[str] = field(default=None, metadata={"check": type_check(str, optional=True)})

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "TokenizerCfg":
        from ..specs import from_mapping

        return from_mapping(cls, data, "model spec", "tokenizer")


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
        """``save_pretrained`` into ``directory`` atomically, and not at all when it already holds the same files
        (:func:`~loupe_bench.utils.io.atomic_write_dir`)."""
        from ..utils.io import atomic_write_dir

        atomic_write_dir(directory, lambda d: self.hf.save_pretrained(str(d)))

    @classmethod
    def load(cls, directory: Path, max_length: int) -> "Tokenizer":
        """Load an HF-format tokenizer directory (offline; never ``trust_remote_code``). Every file in it must be a
        regular file (a FIFO or a device is refused unopened); whatever transformers raises on its files is one
        :class:`CheckpointError` line naming the directory."""
        from transformers import AutoTokenizer

        from .untrusted import regular_files_of

        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: tokenizer directory not found")
        regular_files_of(directory)
        try:
            hf = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, use_fast=True)
        except Exception as exc:  # malformed or partial tokenizer files: the directory's fault
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
            raise CheckpointError(f"{directory}: cannot load tokenizer ({type(exc).__name__}: {detail})") from None
        return cls(hf, max_length)


def _word_counts(texts: Iterable[str], lowercase: bool) -> "Counter[str]":
    """Words as BERT's normaliser and pre-tokeniser see them, counted."""
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    for text in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    return counts


def train_vocab(texts: Iterable[str], vocab_size: int, kind: str = "wordpiece", lowercase: bool = True) -> Dict[str, int]:
    """A deterministic vocabulary: special tokens, then (WordPiece) every alphabet character as a word start and as a
    ``##`` continuation, then the most frequent words (ties by spelling) until ``vocab_size``.

    With this vocabulary WordPiece's greedy longest-match keeps frequent words whole and spells rarer ones out of
    characters, so no text maps to ``[UNK]``. (The ``tokenizers`` trainers iterate hash maps with per-process random
    order, so their ids change from run to run; this construction does not.)
    """
    chars = ALPHABET + ("" if lowercase else string.ascii_uppercase)
    vocab: Dict[str, int] = {}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    counts = _word_counts(texts, lowercase)
    if kind == "wordpiece":
        # characters of the corpus beyond the ASCII alphabet too (sorted), so accented / unicode text still encodes
        extra = sorted({c for w in counts for c in w} - set(chars))
        for c in list(chars) + extra:
            vocab.setdefault(c, len(vocab))
        for c in list(chars) + extra:
            vocab.setdefault("##" + c, len(vocab))
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(word, len(vocab))
    return vocab


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000, max_length: int = 32, kind: str = "wordpiece",
                    lowercase: bool = True) -> Tokenizer:
    """Train a BERT-style tokenizer (``[CLS] text [SEP]``, ``[PAD]`` = 0) on ``texts``; deterministic.

    Args:
        texts: training captions.
        vocab_size: vocabulary size (the character alphabet always fits in, even beyond it).
        max_length: pad / truncate length of the returned wrapper.
        kind: ``wordpiece`` (unknown words spelled out of pieces) or ``wordlevel`` (unknown words are ``[UNK]``).
        lowercase: lower-case and strip accents first.
    """
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if kind not in ("wordpiece", "wordlevel"):
        raise SpecError(f"tokenizer: cannot train kind {kind!r} (wordpiece or wordlevel)")
    vocab = train_vocab(texts, vocab_size, kind, lowercase)
    if kind == "wordpiece":
        raw = RawTokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        raw.decoder = decoders.WordPiece()
    else:
        raw = RawTokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                 sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length)
    # transformers 5.x trap: make sure the wrapped vocabulary really is ours and ids are the expected ones
    if hf.pad_token_id != 0 or len(hf) != len(vocab) or hf.convert_tokens_to_ids("[SEP]") != sep_id:
        raise RuntimeError(f"tokenizer wrapping produced an unexpected vocabulary (size {len(hf)} != {len(vocab)}, "
                           f"pad id {hf.pad_token_id})")
    return Tokenizer(hf, max_length)


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


class UnavailableTokenizer:
    """Stands in for the tokenizer of a checkpoint that ships none (e.g. a Hugging Face ``CLIPModel`` directory saved
    without tokenizer files): the model loads and encodes token ids given to ``encode_text``; calling the tokenizer
    is a :class:`CheckpointError` saying why there is none and what to do.

    Args:
        reason: one line, shown when the tokenizer is called.
        max_length: the text tower's context length.
    """

    def __init__(self, reason: str, max_length: int):
        self.reason = str(reason)
        self.max_length = int(max_length)

    @property
    def special_ids(self) -> List[int]:
        return []

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        raise CheckpointError(self.reason)

    def __len__(self) -> int:
        raise CheckpointError(self.reason)

    def save(self, directory: Path) -> None:
        """Nothing to save: a model directory without ``tokenizer/`` loads with this stand-in again."""
