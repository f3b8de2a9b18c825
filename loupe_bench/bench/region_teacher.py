"""How good are the box teachers of LOUPE's region head, on a trained model? (``bench region-teacher --run RUN``)

The region head learns box geometry from a teacher that proposes, for each box, a better box. Whatever the head,
its boxes can only end on objects as often as the teacher leads a box there. This benchmark measures exactly that,
on the test images of the run's synthetic world: each object named by a phrase of the image's first caption gets a
start box, its ground-truth box shifted by ``shift`` of its size to the right and down; the teacher is applied
``iterations`` times (the box follows its targets, as training does); the **hit rate** is the fraction of objects
whose final box has IoU ≥ 0.5 with the object. Teachers, all on the model's own token game (the masked image
re-encoded, cosine with the text):

* ``jitter`` — the shipped rule (``loupe.region.geometry: jitter``): the box and ``box_jitter`` jittered copies,
  each scored by its coalition excess ``φ̂([A]) − |A| v(N)/N`` (``M`` contexts), the best one is the next box;
* ``map`` — ``loupe.region.geometry: patch_map``: the best grid rectangle with IoU ≥ ``map_iou`` by the additive
  excess map ``Σ_{i∈R} (φ̂_i − λ (v(N) − v(∅))/N)``, ``φ̂_i`` from ``P`` antithetic pairs of patch orders
  (:mod:`~loupe_bench.models.region_geometry`), for each ``λ`` and ``P`` asked;
* with ``text: phrase`` the game's text is the object's own phrase, encoded alone, instead of the caption.

The run's model state is recorded (``model_state``): the figures are about that model, not an untrained one.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..errors import DataError
from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import figure, torch_threads


def start_boxes(gt: Tensor, shift: float) -> Tensor:
    """``gt [K, 4]`` xyxy shifted right and down by ``shift`` of each box's size, clamped to the image."""
    size = (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
    return (gt + shift * size).clamp(0.0, 1.0)


def follow(teacher: Callable[[Tensor], Tensor], boxes: Tensor, iterations: int) -> Tensor:
    """The boxes after ``iterations`` applications of ``teacher`` (``[K, 4] → [K, 4]``)."""
    for _ in range(iterations):
        boxes = teacher(boxes)
    return boxes


def box_iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``a[k]`` with ``b[k]`` (``[K, 4]`` xyxy each)."""
    from ..models.region_geometry import pairwise_iou

    return torch.diagonal(pairwise_iou(a, b))


def jitter_teacher(game, grid: Tuple[int, int], v_full: float, copies: int, scale: float, samples: int,
                   gen: torch.Generator) -> Callable[[Tensor], Tensor]:
    """One step of the ``jitter`` rule for the boxes of one image under ``game`` (a one-image game): the box and
    ``copies`` jittered copies (``scale``), the one with the largest excess ``φ̂([A]) − |A| v(N)/N``."""
    from ..models.loupe_heads import jitter_boxes, member_masks
    from ..shapley import sample_coalition_value

    n = grid[0] * grid[1]

    def step(boxes: Tensor) -> Tensor:
        jit = jitter_boxes(boxes, copies, scale, generator=gen)  # [K, J, 4]
        cand = torch.cat([boxes[:, None], jit], dim=1)  # [K, 1 + J, 4]
        members = member_masks(cand.reshape(1, -1, 4), grid)  # [1, K(1+J), N]
        phi = sample_coalition_value(game, members, samples, gen).mean[0]
        excess = (phi - members[0].sum(-1).double() / n * v_full).reshape(cand.shape[:2])
        return cand[torch.arange(cand.shape[0]), excess.argmax(-1)]

    return step


def map_teacher(pmap: Tensor, grid: Tuple[int, int], min_iou: float) -> Callable[[Tensor], Tensor]:
    """One step of the ``map`` rule for the boxes of one image (``pmap [N]`` the excess map)."""
    from ..models.region_geometry import map_targets

    def step(boxes: Tensor) -> Tensor:
        return map_targets(boxes[None], pmap[None].float(), grid, min_iou)[0][0]

    return step


def _objects(world, images: int) -> List[Tuple[Any, List[Any]]]:
    """``(image record, [phrase with a box, …])`` of the first ``images`` test images whose first caption has one."""
    from ..tasks import load_task
    from ..tasks.common import load_records

    spec = load_task("synthetic-phrase-grounding-gt-boxes")
    recs = load_records(spec, world, "test")
    out = []
    for r in recs.images:
        phrases = [p for p in (r.captions[0].phrases if r.captions else ()) if p.bbox]
        if phrases:
            out.append((r, phrases))
        if len(out) >= images:
            break
    if not out:
        raise DataError("no test image with phrase boxes (bench region-teacher needs a synthetic world)",
                        file=str(world))
    return out


def _world_folder(info: Dict[str, Any], world: Optional[str]) -> str:
    """The synthetic world the run trained on (the folder of its recorded training file), else ``world``."""
    from pathlib import Path

    if world is not None:
        return str(world)
    path = (info.get("data") or {}).get("path")
    if isinstance(path, str) and Path(path).exists():
        return str(Path(path).parent if Path(path).is_file() else Path(path))
    raise DataError("the run's training world is not readable here; pass --set region-teacher.world=WORLD",
                    file=str(info.get("run")))


def _encode(model, items) -> Dict[str, Any]:
    """Pixels, image tokens, caption and phrase embeddings, normalised ground-truth boxes of the items."""
    from ..tasks.common import open_image

    pix = torch.stack([model.preprocess(open_image(r.path)) for r, _ in items])
    tb = model.tokenizer([r.captions[0].text for r, _ in items])
    flat = [p.text for _, ps in items for p in ps]
    pb = model.tokenizer(flat)
    gts = []
    for r, ps in items:
        w, h = float(r.width or pix.shape[-1]), float(r.height or pix.shape[-2])
        gts.append(torch.tensor([[p.bbox[0] / w, p.bbox[1] / h, (p.bbox[0] + p.bbox[2]) / w,
                                  (p.bbox[1] + p.bbox[3]) / h] for p in ps]))
    with torch.no_grad():
        return {"pixels": pix, "tokens": model.encode_image(pix).tokens,
                "caption": model.encode_text(tb.input_ids, tb.attention_mask).pooled,
                "phrases": model.encode_text(pb.input_ids, pb.attention_mask).pooled, "gts": gts}


def _games(model, enc: Dict[str, Any], b: int, k0: int, text: str) -> List[Any]:
    """One-image games of image ``b``: one for the caption, or one per object (its phrase) from row ``k0`` on."""
    sl = slice(b, b + 1)
    if text == "caption":
        return [model.token_game(enc["pixels"][sl], enc["tokens"][sl], enc["caption"][sl])]
    return [model.token_game(enc["pixels"][sl], enc["tokens"][sl], enc["phrases"][k0 + j : k0 + j + 1])
            for j in range(enc["gts"][b].shape[0])]


def _hits(model, enc, teacher: str, text: str, opts: Dict[str, Any], gen: torch.Generator) -> Dict[str, float]:
    """Hit rate and mean final box area of one teacher configuration over every object."""
    from ..models.region_geometry import excess_map
    from ..shapley.permutation import sample_player_values

    grid = tuple(model.grid)
    n = grid[0] * grid[1]
    hits: List[float] = []
    areas: List[float] = []
    k0 = 0
    with torch.no_grad():
        for b, gt in enumerate(enc["gts"]):
            games = _games(model, enc, b, k0, text)
            k0 += gt.shape[0]
            rows = [slice(None)] if text == "caption" else [slice(j, j + 1) for j in range(gt.shape[0])]
            for game, rows_k in zip(games, rows):
                if teacher == "jitter":
                    v_full = float(game(torch.ones(1, 1, n, dtype=torch.bool))[0, 0])
                    rc = model.cfg.region
                    step = jitter_teacher(game, grid, v_full, max(rc.box_jitter, 1), rc.jitter_scale,
                                          opts["jitter_samples"], gen)
                else:
                    phi = sample_player_values(game, 1, n, opts["pairs"], generator=gen).mean[0]
                    step = map_teacher(excess_map(phi, opts["threshold"]), grid, model.cfg.region.map_iou)
                final = follow(step, start_boxes(gt[rows_k], opts["shift"]), opts["iterations"])
                hits += (box_iou_pairs(final, gt[rows_k]) >= 0.5).float().tolist()
                areas += (final[:, 2:] - final[:, :2]).prod(-1).tolist()
    return {"hit_rate": sum(hits) / len(hits), "area": sum(areas) / len(areas), "objects": len(hits)}


def _configs(pairs: Sequence[int], thresholds: Sequence[float], texts: Sequence[str]) -> List[Dict[str, Any]]:
    out = [{"teacher": "jitter", "text": t} for t in texts]
    out += [{"teacher": "map", "text": t, "pairs": int(p), "threshold": float(lam)}
            for t in texts for p in pairs for lam in thresholds]
    return out


def _label(cfg: Dict[str, Any]) -> str:
    if cfg["teacher"] == "jitter":
        return f"jitter ({cfg['text']})"
    return f"map ({cfg['text']}, {cfg['pairs']} pair{'s' if cfg['pairs'] > 1 else ''}, λ {cfg['threshold']:g})"


@BENCHMARKS.register("region-teacher", help="how often LOUPE's box teachers lead a box onto its object (trained run)")
def region_teacher(repeat: int = 1, device: str = "cpu", run: Optional[str] = None, world: Optional[str] = None,
                   images: int = 40, pairs: Sequence[int] = (1, 8), thresholds: Sequence[float] = (1.0, 1.5, 2.0),
                   texts: Sequence[str] = ("caption", "phrase"), iterations: int = 6, shift: float = 0.3,
                   jitter_samples: int = 8, seed: int = 0, threads: Optional[int] = 1) -> Dict[str, Any]:
    """Hit rates of the box teachers (module docstring) on a trained LOUPE run's test images.

    Args:
        run: a trained LOUPE run folder (required: the claim is about a trained model).
        world: the synthetic world, when the run's recorded training data is not readable here.
        images: test images (their first caption's phrases with boxes are the objects).
        pairs, thresholds: ``P`` and ``λ`` of the ``map`` teacher (every combination).
        texts: ``caption`` and/or ``phrase`` (the game's text).
        iterations: teacher steps per box; shift: the start box's offset in box sizes.
        jitter_samples: ``M`` of the ``jitter`` teacher's coalition values (the training games use
            ``loupe.tsa.num_samples``, 8 in the tiny specs).
    """
    from .shapley_bench import load_run

    if run is None:
        raise DataError("bench region-teacher needs --set region-teacher.run=RUN (a trained LOUPE run folder)")
    with torch_threads(threads, device) as n_threads:
        model, info = load_run(run)
        model.eval()
        items = _objects(_world_folder(info, world), images)
        enc = _encode(model, items)
        rows = []
        t0 = time.perf_counter()
        for cfg in _configs(pairs, thresholds, texts):
            gen = torch.Generator().manual_seed(seed)
            opts = {"jitter_samples": jitter_samples, "iterations": iterations, "shift": shift, **cfg}
            rows.append({**cfg, "label": _label(cfg), **_hits(model, enc, cfg["teacher"], cfg["text"], opts, gen)})
        wall = time.perf_counter() - t0
    figures = [figure(f"hit rate, {r['label']}", 100 * r["hit_rate"], "%") for r in rows]
    return {"name": "region-teacher", "model_state": info["model_state"], "images": len(items),
            "objects": rows[0]["objects"], "iterations": iterations, "shift": shift, "rows": rows,
            "figures": figures, "wall_s": wall, "threads": n_threads, "environment": environment_info(device)}
