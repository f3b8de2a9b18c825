"""``scale`` benchmark: the scale curve of LOUPE's region supervision on the CPU.

CLIP, FILIP, LOUPE and the oracle-regions bound (:data:`MODELS`) trained with the default recipe at each of
:data:`STEPS` training steps on the small synthetic world (one seed per point, :data:`LONG_SEEDS` at the longest),
each point a ``reproduce synthetic`` run of the default plan restricted to those models and to :data:`TASKS`. At
every point, per model:

* **matching quality** — ``p(phrase | image) × K``: the softmax probability of each gold phrase of a test image
  among the split's ``K`` distinct gold phrases (logit scale ``1/0.07`` for every model), divided by chance
  ``1/K``, averaged over (image, phrase) pairs (:func:`phrase_matching`); and the retrieval RSUM;
* **the contextual teacher's hit rate** — the token probe's ``box_beats_shifted@phi`` (an object's box beats the
  same box shifted onto background under the coalition value φ, ``synthetic-token-interaction``);
* native proposal recall@10, native detection AP50 beside the grid's, grounding with gt boxes (shared scorer and
  the model's own) and with native proposals, phrase grounding with gt boxes and native proposals.

Values at the longest point carry the mean and the min–max over its seeds. Budget: ≤ 60 min on 2 cores (the
figure ``total wall time`` says what it took on this machine).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..utils.io import read_json
from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import figure

MODELS = ("clip-tiny", "filip-tiny", "loupe-tiny", "loupe-oracle-regions")
STEPS = (300, 1000, 3000)
LONG_SEEDS = 3
#: the logit scale of :func:`phrase_matching`, the same for every model (as the token probe's ``value: prob``)
PHRASE_SCALE = 1.0 / 0.07
TASKS = ("synthetic-retrieval", "synthetic-detection-native", "synthetic-detection-grid",
         "synthetic-grounding-gt-boxes", "synthetic-grounding-native-scorer", "synthetic-grounding-native",
         "synthetic-phrase-grounding-gt-boxes", "synthetic-phrase-grounding-native", "synthetic-token-interaction")
#: (task, metric) -> column of the curve
COLUMNS = {
    ("synthetic-retrieval", "rsum"): "retrieval RSUM",
    ("synthetic-token-interaction", "box_beats_shifted@phi:all"): "teacher hit rate (φ)",
    ("synthetic-detection-native", "proposal_recall@10"): "native recall@10",
    ("synthetic-detection-native", "AP50"): "native AP50",
    ("synthetic-detection-grid", "AP50"): "grid AP50",
    ("synthetic-grounding-gt-boxes", "acc@0.5"): "gt-box grounding (shared)",
    ("synthetic-grounding-native-scorer", "acc@0.5"): "gt-box grounding (own scorer)",
    ("synthetic-grounding-native", "acc@0.5"): "native grounding",
    ("synthetic-phrase-grounding-gt-boxes", "acc@0.5"): "gt-box phrase grounding",
    ("synthetic-phrase-grounding-native", "acc@0.5"): "native phrase grounding",
}


def phrase_matching(run: Path, world: Path, max_images: int = 300) -> float:
    """``mean_{(image, phrase)} p(phrase | image) · K``: the gold phrases of the first ``max_images`` test images
    (the world's Flickr30K-Entities-style annotations, read by the phrase-grounding task's loader) scored among the
    split's ``K`` distinct gold phrases, ``p = softmax_k(s · cos(v_image, t_k))`` with one scale for every model,
    :data:`PHRASE_SCALE` (``1/0.07``, CLIP's initial temperature: FILIP has no trained global temperature, and a
    model's own would make the numbers incomparable); 1 is chance."""
    import torch

    from ..models import load_model
    from ..tasks import load_task
    from ..tasks.common import encode_images, encode_texts, load_records

    model = load_model(str(run))
    model.eval()
    spec = load_task("synthetic-phrase-grounding-gt-boxes")
    recs = load_records(spec, world, "test")
    images = [r for r in recs.images if r.captions][:max_images]
    pairs = [(i, p.text) for i, r in enumerate(images) for c in r.captions for p in c.phrases]
    texts = sorted({t for _, t in pairs})
    img = encode_images(model, [r.path for r in images], spec)
    txt = encode_texts(model, texts, spec)
    with torch.no_grad():
        v = torch.nn.functional.normalize(img.pooled.float(), dim=-1)
        t = torch.nn.functional.normalize(txt.pooled.float(), dim=-1)
        p = (PHRASE_SCALE * v @ t.T).softmax(-1)
    col = {t: k for k, t in enumerate(texts)}
    return float(statistics.mean(float(p[i, col[t]]) for i, t in pairs) * len(texts))


def _point(out: Path, steps: int, seeds: Sequence[int], workers: int, models: Sequence[str], tasks: Sequence[str],
           world_size: str) -> Dict[str, Any]:
    from rich.console import Console

    from ..pipeline import SyntheticPlan, default_plan, reproduce_synthetic

    base = default_plan(False)
    plan = SyntheticPlan(models=list(models), tasks=list(tasks), recipe_overrides={"steps": int(steps)},
                         task_overrides={**base.task_overrides, "bootstrap.n_resamples": 200}, workers=workers,
                         world_size=world_size)
    t0 = time.perf_counter()
    manifest = read_json(reproduce_synthetic(out, seeds=list(seeds), plan=plan, console=Console(quiet=True),
                                             progress=False))
    wall = time.perf_counter() - t0
    rows: Dict[str, Dict[str, List[float]]] = {m: {} for m in models}
    for seed in seeds:
        for f in sorted((out / "results" / f"s{seed}").glob("*__test.json")):
            res = read_json(f)
            model, task = res["model"]["name"], res["task"]["name"]
            for (t, metric), col in COLUMNS.items():
                m = res["metrics"].get(metric)
                if t == task and model in rows and isinstance(m, dict) and m.get("value") is not None:
                    rows[model].setdefault(col, []).append(float(m["value"]))
        for model in models:
            run = out / "runs" / f"s{seed}" / model
            rows[model].setdefault("p(phrase|image) × K", []).append(phrase_matching(run, out / "world"))
    return {"steps": int(steps), "seeds": list(seeds), "wall_s": wall, "cpu_s": manifest["timings"].get("cpu/total"),
            "values": {m: {c: _summary(v) for c, v in cols.items()} for m, cols in rows.items()}}


def _summary(values: List[float]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"mean": statistics.mean(values), "n": len(values)}
    if len(values) > 1:
        out.update(min=min(values), max=max(values), std=statistics.stdev(values))
    return out


@BENCHMARKS.register("scale", help="LOUPE's regions vs training steps: CLIP, FILIP, LOUPE, oracle regions at "
                     "300/1000/3000 steps on the small world (<= 60 min on 2 cores)")
def scale(repeat: int = 1, device: str = "cpu", steps: Optional[Sequence[int]] = None, long_seeds: int = LONG_SEEDS,
          out_dir: str = "", workers: int = 2, models: Sequence[str] = MODELS, tasks: Sequence[str] = TASKS,
          world_size: str = "small") -> Dict[str, Any]:
    """Run the scale curve (module docstring); ``steps`` overrides :data:`STEPS` (the last point gets
    ``long_seeds`` seeds, the others one); ``out_dir`` keeps the runs (default: a folder under the system temp);
    ``models``, ``tasks`` and ``world_size`` shrink it (tests); the figures mean something with the defaults only."""
    import tempfile

    steps = [int(s) for s in (steps or STEPS)]
    base = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="loupe-scale-"))
    t0 = time.perf_counter()
    points = [_point(base / f"steps{s}", s, list(range(long_seeds if s == steps[-1] else 1)), workers, models, tasks,
                     world_size) for s in steps]
    wall = time.perf_counter() - t0
    figures = [figure("total wall time", wall, "s", "<= 3600 s", wall <= 3600)]
    last = points[-1]["values"]
    for model in models:
        for col in ("native recall@10", "native phrase grounding", "gt-box grounding (shared)"):
            if col in last.get(model, {}):
                figures.append(figure(f"{model} {col} at {steps[-1]} steps", 100 * last[model][col]["mean"], "%"))
    return {"name": "scale", "figures": figures, "points": points, "models": list(models), "tasks": list(tasks),
            "runs": str(base), "environment": environment_info(device)}
