"""The caption head shared by every backbone: a small transformer decoder over frozen image tokens.

The same word vocabulary (built from the training captions), architecture and recipe serve every model; only the
frozen image features differ, so caption metrics compare backbones. Memory = a linear projection of
``[pooled; tokens]`` of the image (``[B, 1 + N, D] -> [B, 1 + N, d]``) plus learned position embeddings; the decoder
is ``nn.TransformerDecoder`` (pre-norm, causal self-attention, cross-attention to the memory). Training minimises
token cross-entropy with teacher forcing,

    L = -(1/|T|) sum_{(b, t) in T} log p(w_{b,t} | w_{b,<t}, memory_b),

over non-pad target tokens ``T``, AdamW with linear warm-up and cosine decay, seeded sampling of (image, caption)
pairs. Decoding is greedy or beam search (sum of log-probabilities, no length penalty).
"""
from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass
from typing import List, Sequence

import torch
from torch import Tensor, nn

from .metrics.captioning import python_tokenize

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


@dataclass
class CaptionHeadConfig:
    """Architecture and recipe (identical for every backbone)."""

    width: int = 64
    layers: int = 2
    heads: int = 4
    max_len: int = 24
    min_count: int = 1
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    beam_size: int = 3


class Vocab:
    """Word vocabulary from training captions (Python tokenizer of the caption metrics)."""

    def __init__(self, captions: Sequence[str], min_count: int = 1):
        counts = Counter(w for c in captions for w in python_tokenize(c).split())
        words = sorted(w for w, n in counts.items() if n >= min_count)
        self.itos = SPECIALS + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int) -> List[int]:
        ids = [self.stoi.get(w, UNK) for w in python_tokenize(text).split()][: max_len - 2]
        return [BOS] + ids + [EOS]

    def decode(self, ids: Sequence[int]) -> str:
        words = []
        for i in ids:
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            words.append(self.itos[i])
        return " ".join(words)


class CaptionHead(nn.Module):
    """Transformer decoder over projected frozen image features."""

    def __init__(self, feature_dim: int, memory_len: int, vocab_size: int, cfg: CaptionHeadConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, cfg.width))
        self.mem_pos = nn.Parameter(torch.zeros(1, memory_len, cfg.width))
        self.embed = nn.Embedding(vocab_size, cfg.width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.zeros(1, cfg.max_len, cfg.width))
        layer = nn.TransformerDecoderLayer(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.layers)
        self.norm = nn.LayerNorm(cfg.width)
        self.out = nn.Linear(cfg.width, vocab_size)
        nn.init.normal_(self.mem_pos, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def memory(self, feats: Tensor) -> Tensor:
        """``[B, M, D]`` image features -> ``[B, M, d]`` decoder memory."""
        return self.proj(feats) + self.mem_pos[:, : feats.shape[1]]

    def forward(self, memory: Tensor, ids: Tensor) -> Tensor:
        """Next-token logits ``[B, L, V]`` for input ids ``[B, L]`` (causal)."""
        L = ids.shape[1]
        x = self.embed(ids) + self.pos[:, :L]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
        h = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=ids.eq(PAD))
        return self.out(self.norm(h))

    @torch.no_grad()
    def greedy(self, feats: Tensor) -> List[List[int]]:
        mem = self.memory(feats)
        ids = torch.full((feats.shape[0], 1), BOS, dtype=torch.long)
        done = torch.zeros(feats.shape[0], dtype=torch.bool)
        for _ in range(self.cfg.max_len - 1):
            nxt = self.forward(mem, ids)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= nxt.eq(EOS)
            if done.all():
                break
        return [row[1:].tolist() for row in ids]

    @torch.no_grad()
    def beam(self, feats: Tensor, beam_size: int) -> List[List[int]]:
        """Beam search, batched over images: keep the ``beam_size`` prefixes with the largest summed
        log-probability; a finished hypothesis (EOS) keeps its score and only extends with PAD; ties go to the lower
        (beam, token) index (stable sort). Returns the best hypothesis per image (without BOS)."""
        B, K = feats.shape[0], max(1, int(beam_size))
        mem = self.memory(feats).repeat_interleave(K, 0)
        seqs = torch.full((B * K, 1), BOS, dtype=torch.long)
        scores = torch.full((B, K), float("-inf"))
        scores[:, 0] = 0.0
        finished = torch.zeros(B * K, dtype=torch.bool)
        base = (torch.arange(B) * K)[:, None]
        for _ in range(self.cfg.max_len - 1):
            logp = torch.log_softmax(self.forward(mem, seqs)[:, -1].float(), -1)  # [B*K, V]
            V = logp.shape[1]
            if finished.any():
                logp[finished] = float("-inf")
                logp[finished, PAD] = 0.0
            cand = (scores.reshape(B * K, 1) + logp).reshape(B, K * V)
            top = torch.sort(cand, dim=1, descending=True, stable=True)
            pick, scores = top.indices[:, :K], top.values[:, :K]
            src = (base + pick // V).reshape(-1)
            tok = (pick % V).reshape(-1)
            seqs = torch.cat([seqs[src], tok[:, None]], 1)
            finished = finished[src] | tok.eq(EOS)
            if finished.all():
                break
        best = scores.argmax(1)  # first maximum
        return [seqs[b * K + int(best[b]), 1:].tolist() for b in range(B)]


@contextlib.contextmanager
def single_thread():
    """Run torch single-threaded (tiny ops are fastest so on a shared CPU, and the result does not depend on the
    machine's core count); the thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_caption_head(
    feats: Tensor, captions: Sequence[Sequence[str]], cfg: CaptionHeadConfig, seed: int = 0
) -> tuple:
    """Train the head on frozen features ``[N_img, M, D]`` with each image's captions; returns ``(head, vocab,
    losses)``. Deterministic for a seed (own RNG state; the global RNG is restored afterwards)."""
    vocab = Vocab([c for caps in captions for c in caps], cfg.min_count)
    pairs = [(i, c) for i, caps in enumerate(captions) for c in caps]
    encoded = [vocab.encode(c, cfg.max_len) for _, c in pairs]
    owners = torch.tensor([i for i, _ in pairs])
    losses: List[float] = []
    with single_thread():
        head = _train(feats, cfg, seed, vocab, encoded, owners, pairs, losses)
    head.eval()
    return head, vocab, losses


def _train(feats, cfg, seed, vocab, encoded, owners, pairs, losses):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = CaptionHead(feats.shape[-1], feats.shape[1], len(vocab), cfg)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, int(cfg.warmup_frac * cfg.steps))
        def lr_factor(s: int) -> float:
            """Linear warm-up to 1 over ``warm`` steps, then cosine decay to 0 at ``cfg.steps``."""
            if s < warm:
                return (s + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, cfg.steps - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        head.train()
        for _ in range(cfg.steps):
            pick = torch.randint(len(pairs), (min(cfg.batch_size, len(pairs)),), generator=gen)
            seqs = [encoded[i] for i in pick.tolist()]
            L = max(len(s) for s in seqs)
            ids = torch.tensor([s + [PAD] * (L - len(s)) for s in seqs])
            logits = head(head.memory(feats[owners[pick]]), ids[:, :-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                               ignore_index=PAD)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
    return head
