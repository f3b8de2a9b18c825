"""``eval-throughput`` benchmark: images/s of retrieval evaluation on the synthetic world, per model family.

Every model is built from its tiny spec (untrained weights: throughput does not depend on training) and
evaluated with the same synthetic retrieval protocol; images/s = test images / median wall time of
``evaluate`` over ``repeat`` runs, measured side by side in one process. What is timed is the whole retrieval
evaluation: encoding the test images and all their captions, scoring (cosine for CLIP; FILIP's token-wise late
interaction, both directions from one pass), R@k both ways and the bootstrap of RSUM. Target: FILIP ≥ 0.5× CLIP.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, Sequence

from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import figure, time_call

MODELS = ("clip-tiny", "filip-tiny", "loupe-tiny")
#: throughput targets relative to CLIP on the same towers (FILIP's late interaction is its only extra work)
TARGETS = {"filip-tiny": 0.5}


def _n_images(world: Path, split: str) -> int:
    from ..utils.io import read_json

    data = read_json(world / "dataset_synthetic.json")
    return sum(1 for im in data["images"] if im["split"] == split)


@BENCHMARKS.register("eval-throughput", help="Images/s of retrieval evaluation on the synthetic world per model.")
def eval_throughput(repeat: int = 3, device: str = "cpu", models: Sequence[str] = MODELS, size: str = "small",
                    task: str = "synthetic-retrieval") -> Dict[str, Any]:
    """Median images/s of ``evaluate(model, task)`` on the ``size`` synthetic world, one figure per model."""
    from ..data.synth import generate_world
    from ..tasks import load_task
    from ..tasks.evaluate import evaluate

    figures = []
    detail: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="loupe-evalbench-") as tmp:
        world = generate_world(Path(tmp) / "world", seed=0, size=size, image_size=64)
        spec = load_task(task)
        n = sum(_n_images(world, s) for s in spec.splits)
        base = None
        for m in models:
            out = Path(tmp) / "results" / m
            t = time_call(lambda: evaluate([m], [task], data_root=world, out_dir=out, seed=0), repeat=repeat,
                          warmup=1)
            ips = n / t["median_s"]
            base = base or ips
            detail[m] = {**t, "images": n, "images_per_s": ips}
            figures.append(figure(f"{m} images/s", ips, "img/s"))
            target = TARGETS.get(m) if m != models[0] and models[0] == "clip-tiny" else None
            figures.append(figure(f"{m} / {models[0]} throughput ratio", ips / base, "x",
                                  f">= {target:g}" if target else "", (ips / base >= target) if target else None))
    return {"name": "eval-throughput", "figures": figures, "detail": detail, "task": task, "world_size": size,
            "environment": environment_info(device)}
