"""``retrieval-metric`` benchmark: R@1/5/10 both ways from a COCO-5K-sized score matrix (5,000 images × 25,000
captions, 5 per image), the project's chunked implementation (:func:`~loupe_bench.tasks.metrics.retrieval.
retrieval_metrics`) against the same definition written naively in numpy (per query: a stable ``argsort`` of the
negated scores, the position of the first ground-truth item, hit when ``< k``), in the same run.

Figures: whether the six recalls (and all ranks) are equal, both times, and the speed-up ``t_naive / t_project``.
Scores are rounded to 2 decimals so that ties occur and the tie rule is exercised.
"""
from __future__ import annotations

import time
from typing import Any, Dict

import numpy as np

from ..utils.provenance import environment_info
from . import BENCHMARKS
from .timing import figure


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


@BENCHMARKS.register("retrieval-metric", help="R@k on a 5K x 25K score matrix: project vs naive numpy, same values.")
def retrieval_metric(repeat: int = 1, device: str = "cpu", n_images: int = 5000, captions_per_image: int = 5,
                     chunk_size: int = 1024, seed: int = 0) -> Dict[str, Any]:
    """Time both implementations on the same random score matrix (median of ``repeat`` runs of the project's)."""
    import torch

    from ..tasks.metrics.retrieval import retrieval_metrics

    rng = np.random.default_rng(seed)
    owners = np.repeat(np.arange(n_images), captions_per_image)
    scores = np.round(rng.normal(size=(n_images, owners.size)), 2).astype(np.float32)
    s_t = torch.from_numpy(scores)
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        ours = retrieval_metrics(s_t, s_t, owners, chunk_size=chunk_size)
        times.append(time.perf_counter() - t0)
    t_ours = float(np.median(times))
    t0 = time.perf_counter()
    ref = naive_recalls(scores, owners)
    t_naive = time.perf_counter() - t0
    keys = list(ref["metrics"])
    equal = all(ours.metrics[k] == ref["metrics"][k] for k in keys)
    ranks_equal = bool((ours.i2t_ranks == ref["i2t_ranks"]).all() and (ours.t2i_ranks == ref["t2i_ranks"]).all())
    figures = [
        figure("recalls equal (6 values)", float(equal), "bool", "1", equal),
        figure("ranks equal (all queries)", float(ranks_equal), "bool", "1", ranks_equal),
        figure("project time", t_ours, "s"),
        figure("naive numpy time", t_naive, "s"),
        figure("speed-up naive / project", t_naive / t_ours, "x", ">= 1", t_naive / t_ours >= 1.0),
    ]
    return {
        "name": "retrieval-metric", "figures": figures, "shape": [n_images, int(owners.size)],
        "metrics_project": ours.metrics, "metrics_naive": ref["metrics"], "chunk_size": chunk_size,
        "environment": environment_info(device),
    }
