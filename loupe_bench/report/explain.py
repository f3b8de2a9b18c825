"""LOUPE's explanations on sample images of the synthetic world, as PNG figures for the HTML report.

For each sample (a test image and its first caption with gold phrase spans) the figure shows

* the generated semantic regions (LOUPE's region head: boxes with confidences),
* each phrase's best region (the region with the highest region–phrase score) as a black-on-white dashed outline
  (one dash pattern per phrase; the regions' colours are not reused), and the ground-truth box of the phrase's
  object (``phrases.json``) as a white-on-black outline with the same dash pattern,
* the region–phrase interaction matrix as a heat map (rows: regions, columns: phrases).

The numbers come from the LOUPE model's ``explain`` method; nothing here recomputes or invents them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, NamedTuple, Sequence, Tuple

import numpy as np

from ..errors import DataError, SpecError
from ..utils.io import read_json
from .plots import MIN_FONT_PT, _plt, fig_to_png

#: one dash pattern per phrase (cycled): a phrase's best region and its ground-truth box share it
PHRASE_DASHES = ((0, (4, 2)), (0, (1.5, 1.5)), (0, (6, 2, 1.5, 2)), (0, (3, 3)), (0, (8, 3)), (0, (1, 3)))


class Sample(NamedTuple):
    image_id: int
    path: Path
    caption: str
    phrases: List[str]
    spans: List[Tuple[int, int]]
    gt_boxes: Tuple = ()             # per phrase: its object's ground-truth box [x, y, w, h] in pixels, or None


def sample_images(world_dir, n: int = 3, split: str = "test") -> List[Sample]:
    """The first ``n`` images of ``split``, each with its caption of most phrases and their gold spans."""
    world = Path(world_dir)
    data = read_json(world / "dataset_synthetic.json")
    phrases = read_json(world / "phrases.json")
    out: List[Sample] = []
    for im in data["images"]:
        if im.get("split") != split:
            continue
        # the caption with the most phrases (first such caption on ties): the richest explanation
        sent = max(im["sentences"], key=lambda st: len(phrases.get(str(st["sentid"]), [])))
        ph = phrases.get(str(sent["sentid"]), [])
        if not ph:
            continue
        out.append(Sample(int(im["imgid"]), world / im.get("filepath", "images") / im["filename"], sent["raw"],
                          [p["text"] for p in ph], [(int(p["start"]), int(p["end"])) for p in ph],
                          tuple(p.get("bbox") for p in ph)))
        if len(out) >= n:
            break
    if not out:
        raise DataError(f"no {split} image with phrases found", file=str(world / "dataset_synthetic.json"))
    return out


def explanation_figure(image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray, phrases: Sequence[str],
                       phrase_best_region: Sequence[int], interaction: np.ndarray, caption: str = "",
                       max_regions: int = 6, gt_boxes=None):
    """The matplotlib figure behind :func:`plot_explanation`.

    ``gt_boxes``: ``[P, 4]`` normalised xyxy ground-truth box of each phrase's object (NaN rows: unknown), drawn
    white-on-black with the phrase's dash pattern (:data:`PHRASE_DASHES`) beside its black-on-white best region.

    Drawn regions: the ``max_regions`` most confident ones **and every phrase's best region** (what the figure
    refers to is always drawn). Labels never overlap: no text is written on the images; each drawn region has its
    own colour, and a legend left of the first panel lists ``r<i>  <confidence>`` (most confident first, a best
    region outside the top ones marked "best of a phrase"); the phrases' legend (``phrase → r<i>``) sits below the
    second panel. Each region rectangle carries ``gid="r<i>"``, each ground-truth box ``gid="gt<j>"``.
    """
    plt = _plt()
    from matplotlib.patches import Rectangle

    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    box_scores = np.asarray(box_scores, dtype=float).reshape(-1)
    interaction = np.asarray(interaction, dtype=float)
    k, p = boxes.shape[0], len(phrases)
    if interaction.shape != (k, p):
        raise ValueError(f"interaction matrix shape {interaction.shape} != (regions {k}, phrases {p})")
    best = [int(i) for i in phrase_best_region]
    if any(not 0 <= i < k for i in best):
        raise ValueError(f"a phrase's best region is not one of the {k} regions: {best}")
    h, w = image.shape[:2]
    top = [int(i) for i in np.argsort(-box_scores, kind="stable")[:max_regions]]
    drawn = top + sorted(set(best) - set(top), key=lambda i: (-box_scores[i], i))
    keep = sorted(drawn)
    region_colours = plt.get_cmap("tab20")
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    ax0.imshow(image)
    for n, i in enumerate(drawn):
        x0, y0, x1, y1 = boxes[i] * [w, h, w, h]
        note = "" if i in top else "  (best of a phrase)"
        ax0.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=region_colours(n % 20),
                                linewidth=1.5, gid=f"r{i}", label=f"r{i}  {box_scores[i]:.2f}{note}"))
    ax0.legend(loc="upper right", bbox_to_anchor=(-0.03, 1.0), fontsize=MIN_FONT_PT, frameon=False,
               borderaxespad=0.0, title="region  confidence", title_fontsize=MIN_FONT_PT)
    ax0.set_title("generated regions", fontsize=9)
    ax1.imshow(image)
    _phrase_boxes(ax1, boxes[best] * [w, h, w, h], phrases, best, gt_boxes, (w, h))
    ax1.set_title("best region (black) · ground truth (white)", fontsize=9)
    for ax in (ax0, ax1):
        ax.set_xticks([])
        ax.set_yticks([])
    im = ax2.imshow(interaction[keep], aspect="auto", cmap="viridis")
    ax2.set_yticks(range(len(keep)))
    ax2.set_yticklabels([f"r{i}" for i in keep], fontsize=MIN_FONT_PT)
    ax2.set_xticks(range(p))
    ax2.set_xticklabels(phrases, rotation=35, ha="right", fontsize=MIN_FONT_PT)
    ax2.set_title("region–phrase interaction", fontsize=9)
    fig.colorbar(im, ax=ax2, fraction=0.046).ax.tick_params(labelsize=MIN_FONT_PT)
    if caption:
        fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    return fig


def _phrase_boxes(ax, best_px: np.ndarray, phrases: Sequence[str], best: Sequence[int], gt_boxes, size) -> None:
    """Each phrase's best region (black dashes on a white halo) and its ground-truth box (white dashes on a black
    halo), one dash pattern per phrase; a legend below the axes names them."""
    from matplotlib.patches import Rectangle

    w, h = size
    gt = None if gt_boxes is None else np.asarray(gt_boxes, dtype=float).reshape(-1, 4) * [w, h, w, h]
    for j, (phrase, i) in enumerate(zip(phrases, best)):
        dash = PHRASE_DASHES[j % len(PHRASE_DASHES)]
        x0, y0, x1, y1 = best_px[j]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=3.0))
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="black", linewidth=1.6,
                               linestyle=dash, gid=f"r{i}", label=f"{j + 1}. {phrase} → r{i}"))
        if gt is not None and j < len(gt) and np.isfinite(gt[j]).all():
            g0, h0, g1, h1 = gt[j]
            ax.add_patch(Rectangle((g0, h0), g1 - g0, h1 - h0, fill=False, edgecolor="black", linewidth=3.0))
            ax.add_patch(Rectangle((g0, h0), g1 - g0, h1 - h0, fill=False, edgecolor="white", linewidth=1.6,
                                   linestyle=dash, gid=f"gt{j}"))
    handles, labels = ax.get_legend_handles_labels()
    if gt is not None:
        handles.append(Rectangle((0, 0), 1, 1, fill=False, edgecolor="black", linewidth=1.6, hatch=None))
        labels.append("white outline, same dashes: ground truth")
    ax.legend(handles, labels, fontsize=MIN_FONT_PT, loc="upper center", bbox_to_anchor=(0.5, -0.03), frameon=False,
              borderaxespad=0.0)


def plot_explanation(image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray, phrases: Sequence[str],
                     phrase_best_region: Sequence[int], interaction: np.ndarray, caption: str = "",
                     max_regions: int = 6, gt_boxes=None) -> bytes:
    """One figure as PNG: image with regions and each phrase's best region, and the interaction heat map.

    Args:
        image: ``[H, W, 3]`` uint8.
        boxes: ``[K, 4]`` normalised xyxy.
        box_scores: ``[K]`` region confidences.
        phrases: the P phrase texts.
        phrase_best_region: ``[P]`` index of each phrase's best region.
        interaction: ``[K, P]`` region–phrase interaction matrix.
        max_regions: the most confident regions drawn (each phrase's best region is drawn too).
        gt_boxes: ``[P, 4]`` normalised xyxy ground-truth box of each phrase's object (NaN: unknown), or None.

    See :func:`explanation_figure` for the drawing and labelling rules.
    """
    return fig_to_png(explanation_figure(image, boxes, box_scores, phrases, phrase_best_region, interaction,
                                         caption=caption, max_regions=max_regions, gt_boxes=gt_boxes))


def normalised_boxes(bboxes: Sequence, size: Tuple[int, int]) -> np.ndarray:
    """``[x, y, w, h]`` pixel boxes (``phrases.json``) of an image of ``size`` (w, h) as ``[P, 4]`` normalised xyxy;
    a missing box is a NaN row."""
    w, h = size
    out = np.full((len(bboxes), 4), np.nan)
    for j, b in enumerate(bboxes):
        if b is not None and len(b) == 4:
            x, y, bw, bh = (float(v) for v in b)
            out[j] = [x / w, y / h, (x + bw) / w, (y + bh) / h]
    return out


def _field(obj: Any, *names: str):
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    raise SpecError(f"LOUPE explanation lacks field {names[0]!r}")


def _to_np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def explanation_figures(run_dir, world_dir, n_images: int = 3, label: str = "loupe") -> List[Tuple[str, bytes]]:
    """Load the LOUPE run, explain ``n_images`` test images of the world, return (caption, PNG) pairs.

    Raises:
        SpecError: when the model in ``run_dir`` has no ``explain`` method (not a LOUPE model).
    """
    import torch
    from PIL import Image

    from ..data.training import open_rgb, phrase_token_mask
    from ..models.sources import load_model

    model = load_model(str(run_dir))
    if not callable(getattr(model, "explain", None)):
        raise SpecError(f"{run_dir}: model {type(model).__name__} has no explain() (not a LOUPE model)")
    model.eval()
    size = int(getattr(model, "image_size", 64))
    mean = torch.tensor(model.image_mean).view(3, 1, 1)
    std = torch.tensor(model.image_std).view(3, 1, 1)
    out: List[Tuple[str, bytes]] = []
    for s in sample_images(world_dir, n_images):
        full = open_rgb(s.path)
        img = full.resize((size, size), Image.BICUBIC)
        arr = np.asarray(img)
        pixels = ((torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0 - mean) / std)[None]
        tok = model.tokenizer([s.caption])
        ptm, pmask = phrase_token_mask(tok.offsets, tok.attention_mask, [s.spans], max_phrases=len(s.spans))
        with torch.no_grad():
            ex = model.explain(pixels, tok.input_ids, tok.attention_mask, ptm, pmask)
        keep = pmask[0].numpy().astype(bool)            # phrases cut off by truncation are dropped
        phrases = [t for t, k in zip(s.phrases, keep) if k]
        boxes = _to_np(_field(ex, "boxes"))[0]
        scores = _to_np(_field(ex, "box_scores", "scores"))[0]
        best = _to_np(_field(ex, "phrase_best_region")).astype(int)[0][keep]
        inter = _to_np(_field(ex, "interaction_matrix", "interaction"))[0][:, keep]
        gt = normalised_boxes([b for b, k in zip(s.gt_boxes, keep) if k], full.size) if s.gt_boxes else None
        out.append((f"{label}: image {s.image_id}: “{s.caption}”",
                    plot_explanation(arr, boxes, scores, phrases, best, inter, caption=s.caption, gt_boxes=gt)))
    return out
