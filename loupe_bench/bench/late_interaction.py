"""Benchmark: FILIP chunked late-interaction scoring against a plain matmul of the same FLOP count.

Scoring ``N_img`` images × ``N_txt`` texts with ``n1`` patches, ``n2`` tokens and width ``d`` costs
``F = 2 · N_img · N_txt · n1 · n2 · d`` floating-point operations in its matrix products. The benchmark times
:func:`~loupe_bench.models.losses.filip_similarity` and, in the same run, ``torch.matmul`` of the scorer's block shape
``[ci·n1, d] @ [d, ct·n2]`` repeated for as many blocks (the same ``F``, written into a preallocated output), and
reports ``(F / t_filip) / (F / t_matmul)``: the fraction of matmul FLOP/s the scorer achieves (target >= 0.5). Memory
is bounded by the block size (``max_chunk_elements`` similarity values), never the ``[N_img, N_txt, n1, n2]`` tensor.
"""
from __future__ import annotations

import math
import resource
import sys
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..models.losses import default_chunk_elements, filip_chunk_shape, filip_scores, filip_similarity
from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import figure, sync, time_call

#: default sizes: 1K × 5K on an accelerator; a 1:5 problem small enough for a 2-core CPU otherwise
DEFAULT_SIZES = {"cuda": (1000, 5000), "cpu": (200, 1000)}


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


@BENCHMARKS.register("late-interaction", help="FILIP chunked scoring vs plain matmul of the same FLOP count")
def late_interaction(repeat: int = 3, n_images: Optional[int] = None, n_texts: Optional[int] = None, n1: int = 49,
                     n2: int = 32, d: int = 256, device: str = "cpu", image_chunk: int = 256,
                     max_chunk_elements: Optional[int] = None, seed: int = 0) -> Dict[str, Any]:
    """Time FILIP chunked scoring and a same-FLOP matmul side by side; return the JSON record.

    Args:
        repeat: timed repetitions (median reported) after one warm-up.
        n_images, n_texts: problem size; default 1000 × 5000 on CUDA, 200 × 1000 on CPU.
        n1, n2, d: patches per image, tokens per text (padded; real lengths are drawn in ``[n2/2, n2]``), width.
        device: ``cpu`` or ``cuda[:i]``.
        image_chunk, max_chunk_elements: the scorer's block bounds (default block: 8M values on CPU, 128M on CUDA).
        seed: random features.
    """
    kind = "cuda" if device.startswith("cuda") else "cpu"
    max_chunk_elements = max_chunk_elements or default_chunk_elements(device)
    n_images = n_images or DEFAULT_SIZES[kind][0]
    n_texts = n_texts or DEFAULT_SIZES[kind][1]
    g = torch.Generator().manual_seed(seed)
    img, txt, mask = _features(n_images, n_texts, n1, n2, d, g, device)
    ci, ct = filip_chunk_shape(n_images, n_texts, n1, n2, image_chunk, max_chunk_elements)
    n_blocks = math.ceil(n_images / ci) * math.ceil(n_texts / ct)
    flops = 2.0 * n_images * n_texts * n1 * n2 * d
    block_flops = 2.0 * ci * n1 * ct * n2 * d
    # same FLOP count as one scoring pass: the block-shaped product, once per block (last blocks may be smaller in
    # the scorer, so scale the repetitions to the exact FLOP count)
    n_matmuls = max(1, round(flops / block_flops))
    a = torch.randn(ci * n1, d, generator=g).to(device)
    b = torch.randn(d, ct * n2, generator=g).to(device)
    timings, peak_measured, rss_increase = _time_scoring(img, txt, mask, a, b, n_matmuls, image_chunk,
                                                         max_chunk_elements, device, repeat)
    err = _spot_check_error(img, txt, mask, n1, n2)
    filip_rate = flops / timings["filip"]["median_s"]
    matmul_rate = n_matmuls * block_flops / timings["matmul"]["median_s"]
    fraction = filip_rate / matmul_rate
    memory = _memory_bytes(n_images, n_texts, n1, n2, d, ci, ct)
    figures = [
        figure("FILIP scoring FLOP/s / matmul FLOP/s", fraction, "ratio", ">= 0.5", fraction >= 0.5),
        figure("FILIP scoring", filip_rate / 1e9, "GFLOP/s"),
        figure("matmul, same FLOP count", matmul_rate / 1e9, "GFLOP/s"),
        figure("peak memory estimate (block + outputs)", memory["estimate"] / 2**20, "MiB",
               f"bounded by chunk ({max_chunk_elements} values)", memory["block"] <= 4 * max_chunk_elements),
        figure("dense 4-D tensor avoided", memory["dense"] / 2**20, "MiB"),
        figure("padded / length-bucketed scoring time (real lengths U[n2/2, n2])",
               timings["filip"]["median_s"] / timings["filip_bucketed"]["median_s"], "x"),
        figure("max |chunked - dense| (spot check)", err, "abs", "<= 1e-5", err <= 1e-5),
    ]
    if peak_measured is not None:
        figures.append(figure("peak CUDA memory measured", peak_measured / 2**20, "MiB"))
    else:
        figures.append(figure("max RSS increase during scoring", rss_increase / 2**20, "MiB"))
    return {
        "name": "late-interaction",
        "config": {"n_images": n_images, "n_texts": n_texts, "n1": n1, "n2": n2, "d": d, "device": device,
                   "image_chunk": image_chunk, "max_chunk_elements": max_chunk_elements, "block": [ci, ct],
                   "n_blocks": n_blocks, "flops": flops, "repeat": repeat, "threads": torch.get_num_threads()},
        "timings": timings,
        "figures": figures,
        "fraction_of_matmul": fraction,
        "target": 0.5,
        "peak_memory_estimate_bytes": memory["estimate"],
        "peak_memory_measured_bytes": peak_measured if peak_measured is not None else rss_increase,
        "environment": environment_info(device),
    }


def _features(n_images: int, n_texts: int, n1: int, n2: int, d: int, g: torch.Generator,
              device: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random L2-normalised patch features ``[n_images, n1, d]``, token features ``[n_texts, n2, d]`` and the token
    mask ``[n_texts, n2]`` of real lengths drawn uniformly in ``[max(1, n2 // 2), n2]``."""
    img = F.normalize(torch.randn(n_images, n1, d, generator=g), dim=-1).to(device)
    txt = F.normalize(torch.randn(n_texts, n2, d, generator=g), dim=-1).to(device)
    lengths = torch.randint(max(1, n2 // 2), n2 + 1, (n_texts,), generator=g)
    mask = (torch.arange(n2)[None, :] < lengths[:, None]).to(device)
    return img, txt, mask


def _time_scoring(img, txt, mask, a, b, n_matmuls: int, image_chunk: int, max_chunk_elements: int, device: str,
                  repeat: int) -> Tuple[Dict[str, Dict[str, float]], Optional[int], int]:
    """Timings of the padded FILIP scorer (the peak CUDA memory above the inputs, or the RSS increase on CPU,
    measured around it), of ``n_matmuls`` products ``a @ b`` into a preallocated output, and of the length-bucketed
    scorer: ``({filip, matmul, filip_bucketed}, peak CUDA bytes or None, RSS increase bytes)``."""
    out = torch.empty(a.shape[0], b.shape[1], device=device)

    def run_filip() -> None:  # the padded kernel: its FLOP count is the matmul's
        filip_similarity(img, txt, mask, image_chunk=image_chunk, max_chunk_elements=max_chunk_elements,
                         out_device=device, length_buckets=False)
        sync(device)

    def run_bucketed() -> None:  # what evaluation runs: texts grouped by real length, no padded column scored
        filip_similarity(img, txt, mask, image_chunk=image_chunk, max_chunk_elements=max_chunk_elements,
                         out_device=device, length_buckets=True)
        sync(device)

    def run_matmul() -> None:
        for _ in range(n_matmuls):
            torch.matmul(a, b, out=out)
        sync(device)

    cuda = device.startswith("cuda")
    rss_before = _max_rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base_alloc = torch.cuda.memory_allocated(device)
    t_filip = time_call(run_filip, repeat=repeat, warmup=1)
    peak_measured = (torch.cuda.max_memory_allocated(device) - base_alloc) if cuda else None
    rss_increase = max(0, _max_rss_bytes() - rss_before)
    t_matmul = time_call(run_matmul, repeat=repeat, warmup=1)
    t_bucketed = time_call(run_bucketed, repeat=repeat, warmup=1)
    return {"filip": t_filip, "matmul": t_matmul, "filip_bucketed": t_bucketed}, peak_measured, rss_increase


def _spot_check_error(img, txt, mask, n1: int, n2: int) -> float:
    """Largest |chunked − dense| of both score directions on the first 8 images × 16 texts, the chunked scorer forced
    into several small blocks, against the dense differentiable scorer."""
    sub_i, sub_t = min(8, img.shape[0]), min(16, txt.shape[0])
    fast = filip_similarity(img[:sub_i], txt[:sub_t], mask[:sub_t], image_chunk=3, max_chunk_elements=5 * n1 * n2)
    dense = filip_scores(img[:sub_i], txt[:sub_t], mask[:sub_t])
    return max(float((fast.i2t - dense.i2t.cpu()).abs().max()), float((fast.t2i - dense.t2i.cpu()).abs().max()))


def _memory_bytes(n_images: int, n_texts: int, n1: int, n2: int, d: int, ci: int, ct: int) -> Dict[str, int]:
    """Bytes of the scorer's fp32 working set for ``ci × ct`` blocks: ``block = 4·ci·n1·ct·n2`` (the similarity
    block), ``estimate = block + 4·(ci·n1·ct + ci·ct·n2)`` (per-patch and per-token maxima)
    ``+ 4·(ci·n1 + ct·n2)·8·⌈(d + 1)/8⌉`` (augmented feature copies) ``+ 2·4·n_images·n_texts`` (the two outputs),
    and ``dense = 4·n_images·n_texts·n1·n2`` (the 4-D tensor never built)."""
    block_bytes = 4 * ci * n1 * ct * n2  # the similarity block
    reduce_bytes = 4 * (ci * n1 * ct + ci * ct * n2)  # per-patch and per-token maxima
    aug_bytes = 4 * (ci * n1 + ct * n2) * 8 * math.ceil((d + 1) / 8)  # augmented copies of the block's features
    output_bytes = 2 * 4 * n_images * n_texts
    return {"block": block_bytes, "estimate": block_bytes + reduce_bytes + aug_bytes + output_bytes,
            "dense": 4 * n_images * n_texts * n1 * n2}
