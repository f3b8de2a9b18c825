"""``retrieval-metric`` benchmark: R@1/5/10 both ways from a COCO-5K-sized score matrix (5,000 images × 25,000
captions, 5 per image), the project's tiled implementation (:func:`~loupe_bench.tasks.metrics.retrieval.
retrieval_metrics`) against CLIP_benchmark 1.6.2's ``recall_at_k`` + ``batchify`` (optional extra ``bench``) and
against the project's definition written naively in numpy (per query: a stable ``argsort`` of the negated scores, the
position of the first ground-truth item, hit when ``< k``), all in the same run.

CLIP_benchmark is called the way its ``zeroshot_retrieval.evaluate`` calls it: ``scores = texts @ images.T``
(a contiguous ``[N_texts, N_images]`` matrix), ``positive_pairs[t, image_of(t)] = True``, for every ``k``
``image_retrieval_recall@k = mean(batchify(recall_at_k, scores, positive_pairs, batch_size, device, k=k) > 0)`` and
``text_retrieval_recall@k`` the same on ``scores.T`` / ``positive_pairs.T``, with ``batch_size`` the dataloader batch
(64, its CLI default). Its ``image_retrieval`` is our ``t2i`` (a caption query ranks images), ``text_retrieval`` our
``i2t``. Only the metric module is imported (``clip_benchmark.metrics.zeroshot_retrieval``: torch and tqdm; the
package ``__init__`` imports nothing, so open_clip is not needed).

**Ties.** Scores are rounded to 2 decimals so that ties occur. CLIP_benchmark takes ``torch.topk`` whose order among
equal scores is unspecified; ours is the stable rule (lower gallery index first). A query's hit at ``k`` can
therefore differ only when it is *tie-ambiguous*: with ``b`` its best positive score,
``lo = #{g : s_g > b}`` (the positive first among its ties) and ``hi = lo + #{non-positive g : s_g = b}`` (last),
the query is ambiguous at ``k`` iff ``lo < k <= hi``. The benchmark checks that both agree on every other query and
reports how many queries are ambiguous and how many of those differ.

Figures: equality with the naive reference (recalls and all ranks), agreement with CLIP_benchmark, the three times
and the speed-ups (target: ``t_CLIP_benchmark / t_project >= 20``).
"""
from __future__ import annotations

import importlib
import time
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import figure

#: CLIP_benchmark's metric module (its package ``__init__`` is empty; the module needs torch and tqdm only)
CLIP_BENCHMARK_MODULE = "clip_benchmark.metrics.zeroshot_retrieval"
#: ``--batch_size`` default of CLIP_benchmark's CLI; ``evaluate`` passes the dataloader batch size to ``batchify``
CLIP_BENCHMARK_BATCH = 64
SPEEDUP_TARGET = 20.0


def naive_recalls(scores: np.ndarray, owners: np.ndarray, ks=(1, 5, 10)) -> Dict[str, Any]:
    """The reference: R@k by sorting every query's scores (stable: lower gallery index first on ties)."""
    n_img, n_txt = scores.shape
    i2t = np.empty(n_img, dtype=np.int64)
    for i in range(n_img):
        order = np.argsort(-scores[i], kind="stable")
        i2t[i] = np.flatnonzero(owners[order] == i)[0]
    t2i = np.empty(n_txt, dtype=np.int64)
    for j in range(n_txt):
        order = np.argsort(-scores[:, j], kind="stable")
        t2i[j] = np.flatnonzero(order == owners[j])[0]
    out = {f"i2t_R@{k}": float((i2t < k).mean()) for k in ks}
    out.update({f"t2i_R@{k}": float((t2i < k).mean()) for k in ks})
    return {"metrics": out, "i2t_ranks": i2t, "t2i_ranks": t2i}


def load_clip_benchmark():
    """CLIP_benchmark's retrieval metric module, or ``None`` when the optional extra is not installed."""
    try:
        return importlib.import_module(CLIP_BENCHMARK_MODULE)
    except ImportError:
        return None


def clip_benchmark_hits(zr, scores_img_by_txt: np.ndarray, owners: np.ndarray, ks: Sequence[int],
                        batch_size: int = CLIP_BENCHMARK_BATCH, device: str = "cpu") -> Dict[str, np.ndarray]:
    """Per-query hits from CLIP_benchmark's functions, called as its ``evaluate`` does (see module docstring).

    Returns ``{"i2t_R@k": [N_images] bool, "t2i_R@k": [N_texts] bool}``; the recall is the mean of each.
    """
    import torch

    scores = torch.from_numpy(np.ascontiguousarray(scores_img_by_txt.T))  # = texts_emb @ images_emb.t()
    positive_pairs = torch.zeros_like(scores, dtype=bool)
    positive_pairs[torch.arange(len(scores)), torch.as_tensor(owners)] = True
    out: Dict[str, np.ndarray] = {}
    for k in ks:
        out[f"t2i_R@{k}"] = (zr.batchify(zr.recall_at_k, scores, positive_pairs, batch_size, device, k=k) > 0).numpy()
        out[f"i2t_R@{k}"] = (zr.batchify(zr.recall_at_k, scores.T, positive_pairs.T, batch_size, device,
                                         k=k) > 0).numpy()
    return out


def tie_bounds(scores: np.ndarray, owners: np.ndarray, i2t_best: np.ndarray, t2i_best: np.ndarray,
               block: int = 256) -> Dict[str, np.ndarray]:
    """``lo``/``hi`` rank bounds of the best positive of every query over all tie orders (module docstring)."""
    n_img, n_txt = scores.shape
    pos_t = np.zeros(n_img, dtype=np.int64)  # positives of image i scoring its best
    np.add.at(pos_t, owners, scores[owners, np.arange(n_txt)] == i2t_best[owners])
    lo_i, eq_i = np.empty(n_img, np.int64), np.empty(n_img, np.int64)
    lo_t, eq_t = np.zeros(n_txt, np.int64), np.zeros(n_txt, np.int64)
    for s in range(0, n_img, block):
        b = scores[s : s + block]
        lo_i[s : s + block] = np.count_nonzero(b > i2t_best[s : s + block, None], axis=1)
        eq_i[s : s + block] = np.count_nonzero(b == i2t_best[s : s + block, None], axis=1)
        lo_t += np.count_nonzero(b > t2i_best[None], axis=0)
        eq_t += np.count_nonzero(b == t2i_best[None], axis=0)
    return {"i2t_lo": lo_i, "i2t_hi": lo_i + eq_i - pos_t, "t2i_lo": lo_t, "t2i_hi": lo_t + eq_t - 1}


def compare_with_clip_benchmark(cb_hits: Dict[str, np.ndarray], ours, bounds: Dict[str, np.ndarray]
                                ) -> Dict[str, Any]:
    """Agreement of CLIP_benchmark's per-query hits with ours, split into tie-ambiguous and unambiguous queries."""
    rows = {}
    for key, hits in cb_hits.items():
        d, k = key.split("_R@")
        ranks = ours.i2t_ranks if d == "i2t" else ours.t2i_ranks
        lo, hi = bounds[f"{d}_lo"], bounds[f"{d}_hi"]
        ambiguous = (lo < int(k)) & (int(k) <= hi)
        differ = hits != (ranks < int(k))
        rows[key] = {"recall_clip_benchmark": float(hits.mean()), "recall_project": float((ranks < int(k)).mean()),
                     "tie_ambiguous_queries": int(ambiguous.sum()), "differing_queries": int(differ.sum()),
                     "differing_unambiguous_queries": int((differ & ~ambiguous).sum())}
    return rows


@BENCHMARKS.register("retrieval-metric",
                     help="R@k on a 5K x 25K score matrix: project vs CLIP_benchmark 1.6.2 vs naive numpy.")
def retrieval_metric(repeat: int = 1, device: str = "cpu", n_images: int = 5000, captions_per_image: int = 5,
                     chunk_size: int = 1024, seed: int = 0, signal: float = 3.0, decimals: int = 2,
                     clip_benchmark: Optional[bool] = None) -> Dict[str, Any]:
    """Time the implementations on the same random score matrix (median of ``repeat`` runs of the project's; the
    references once each).

    Scores are ``round(N(0, 1) + signal * [positive pair], decimals)`` (the signal makes the recalls non-trivial,
    the rounding makes ties). ``clip_benchmark``: ``None`` = use it when installed, ``False`` = skip it.
    """
    import torch

    from ..tasks.metrics.retrieval import retrieval_metrics

    ks = (1, 5, 10)
    rng = np.random.default_rng(seed)
    owners = np.repeat(np.arange(n_images), captions_per_image)
    scores = rng.normal(size=(n_images, owners.size))
    scores[owners, np.arange(owners.size)] += signal
    scores = np.round(scores, decimals).astype(np.float32)
    s_t = torch.from_numpy(scores)
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        ours = retrieval_metrics(s_t, s_t, owners, ks=ks, chunk_size=chunk_size)
        times.append(time.perf_counter() - t0)
    t_ours = float(np.median(times))

    zr = load_clip_benchmark() if clip_benchmark is not False else None
    cb: Dict[str, Any] = {"installed": zr is not None, "module": CLIP_BENCHMARK_MODULE,
                          "batch_size": CLIP_BENCHMARK_BATCH}
    figures = []
    if zr is not None:
        t0 = time.perf_counter()
        cb_hits = clip_benchmark_hits(zr, scores, owners, ks, device="cpu")
        t_cb = time.perf_counter() - t0
        pos_scores = scores[owners, np.arange(owners.size)]
        i2t_best = np.full(n_images, -np.inf, dtype=np.float32)
        np.maximum.at(i2t_best, owners, pos_scores)
        bounds = tie_bounds(scores, owners, i2t_best, pos_scores)
        rows = compare_with_clip_benchmark(cb_hits, ours, bounds)
        cb.update(per_metric=rows, time_s=t_cb)
        unamb = sum(r["differing_unambiguous_queries"] for r in rows.values())
        n_amb = sum(r["tie_ambiguous_queries"] for r in rows.values())
        n_diff = sum(r["differing_queries"] for r in rows.values())
        max_diff = max(abs(r["recall_clip_benchmark"] - r["recall_project"]) for r in rows.values())
        figures += [
            figure("CLIP_benchmark hits = ours on tie-unambiguous queries", float(unamb == 0), "bool", "1",
                   unamb == 0),
            figure("tie-ambiguous (query, k) pairs", float(n_amb), "count"),
            figure("of those, hit differs from CLIP_benchmark (topk tie order)", float(n_diff), "count"),
            figure("max |recall CLIP_benchmark - project| (6 values)", max_diff, "fraction"),
            figure("CLIP_benchmark 1.6.2 time", t_cb, "s"),
            figure("speed-up CLIP_benchmark / project", t_cb / t_ours, "x", f">= {SPEEDUP_TARGET:g}",
                   t_cb / t_ours >= SPEEDUP_TARGET),
        ]
    else:
        figures.append(figure("CLIP_benchmark 1.6.2 installed (pip install 'loupe-bench[bench]')", 0.0, "bool",
                              "1", None))

    t0 = time.perf_counter()
    ref = naive_recalls(scores, owners, ks)
    t_naive = time.perf_counter() - t0
    keys = list(ref["metrics"])
    equal = all(ours.metrics[k] == ref["metrics"][k] for k in keys)
    ranks_equal = bool((ours.i2t_ranks == ref["i2t_ranks"]).all() and (ours.t2i_ranks == ref["t2i_ranks"]).all())
    figures = [
        figure("recalls equal (6 values)", float(equal), "bool", "1", equal),
        figure("ranks equal (all queries)", float(ranks_equal), "bool", "1", ranks_equal),
        figure("project time", t_ours, "s"),
    ] + figures + [
        figure("naive numpy time", t_naive, "s"),
        figure("speed-up naive / project", t_naive / t_ours, "x", ">= 1", t_naive / t_ours >= 1.0),
    ]
    return {
        "name": "retrieval-metric", "figures": figures, "shape": [n_images, int(owners.size)],
        "scores": {"signal": signal, "decimals": decimals, "seed": seed},
        "metrics_project": ours.metrics, "metrics_naive": ref["metrics"], "clip_benchmark": cb,
        "project_times_s": times, "chunk_size": chunk_size, "environment": environment_info(device),
    }
