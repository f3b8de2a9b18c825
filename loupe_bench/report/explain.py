"""LOUPE's explanations on sample images of the synthetic world, as PNG figures for the HTML report.

For each sample (a test image and its first caption with gold phrase spans) the figure shows

* the generated semantic regions (LOUPE's region head: boxes with confidences),
* each phrase's best region (the region with the highest region–phrase score), coloured per phrase,
* the region–phrase interaction matrix as a heat map (rows: regions, columns: phrases).

The numbers come from the LOUPE model's ``explain`` method; nothing here recomputes or invents them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, NamedTuple, Sequence, Tuple

import numpy as np

from ..errors import DataError, SpecError
from ..utils.io import read_json
from .plots import _plt, fig_to_png


class Sample(NamedTuple):
    image_id: int
    path: Path
    caption: str
    phrases: List[str]
    spans: List[Tuple[int, int]]


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
                          [p["text"] for p in ph], [(int(p["start"]), int(p["end"])) for p in ph]))
        if len(out) >= n:
            break
    if not out:
        raise DataError(f"no {split} image with phrases found", file=str(world / "dataset_synthetic.json"))
    return out


def explanation_figure(image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray, phrases: Sequence[str],
                       phrase_best_region: Sequence[int], interaction: np.ndarray, caption: str = "",
                       max_regions: int = 6):
    """The matplotlib figure behind :func:`plot_explanation`.

    Drawn regions: the ``max_regions`` most confident ones **and every phrase's best region** (what the figure
    refers to is always drawn). Labels never overlap: no text is written on the images; each drawn region has its
    own colour, and a legend left of the first panel lists ``r<i>  <confidence>`` (most confident first, a best
    region outside the top ones marked "best of a phrase"); the phrases' legend (``phrase → r<i>``) sits below the
    second panel. Each rectangle carries ``gid="r<i>"``.
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
    phrase_colours = plt.get_cmap("tab10")
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    ax0.imshow(image)
    for n, i in enumerate(drawn):
        x0, y0, x1, y1 = boxes[i] * [w, h, w, h]
        note = "" if i in top else "  (best of a phrase)"
        ax0.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=region_colours(n % 20),
                                linewidth=1.5, gid=f"r{i}", label=f"r{i}  {box_scores[i]:.2f}{note}"))
    ax0.legend(loc="upper right", bbox_to_anchor=(-0.03, 1.0), fontsize=7, frameon=False, borderaxespad=0.0,
               title="region  confidence", title_fontsize=7)
    ax0.set_title("generated regions", fontsize=8)
    ax1.imshow(image)
    for j, (phrase, i) in enumerate(zip(phrases, best)):
        x0, y0, x1, y1 = boxes[i] * [w, h, w, h]
        ax1.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=phrase_colours(j % 10), linewidth=2,
                                gid=f"r{i}", label=f"{phrase} → r{i}"))
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.03), frameon=False, borderaxespad=0.0)
    ax1.set_title("each phrase's best region", fontsize=8)
    for ax in (ax0, ax1):
        ax.set_xticks([])
        ax.set_yticks([])
    im = ax2.imshow(interaction[keep], aspect="auto", cmap="viridis")
    ax2.set_yticks(range(len(keep)))
    ax2.set_yticklabels([f"r{i}" for i in keep], fontsize=6)
    ax2.set_xticks(range(p))
    ax2.set_xticklabels(phrases, rotation=35, ha="right", fontsize=6)
    ax2.set_title("region–phrase interaction", fontsize=8)
    fig.colorbar(im, ax=ax2, fraction=0.046)
    if caption:
        fig.suptitle(caption, fontsize=8)
    fig.tight_layout()
    return fig


def plot_explanation(image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray, phrases: Sequence[str],
                     phrase_best_region: Sequence[int], interaction: np.ndarray, caption: str = "",
                     max_regions: int = 6) -> bytes:
    """One figure as PNG: image with regions and each phrase's best region, and the interaction heat map.

    Args:
        image: ``[H, W, 3]`` uint8.
        boxes: ``[K, 4]`` normalised xyxy.
        box_scores: ``[K]`` region confidences.
        phrases: the P phrase texts.
        phrase_best_region: ``[P]`` index of each phrase's best region.
        interaction: ``[K, P]`` region–phrase interaction matrix.
        max_regions: the most confident regions drawn (each phrase's best region is drawn too).

    See :func:`explanation_figure` for the drawing and labelling rules.
    """
    return fig_to_png(explanation_figure(image, boxes, box_scores, phrases, phrase_best_region, interaction,
                                         caption=caption, max_regions=max_regions))


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
        img = open_rgb(s.path).resize((size, size), Image.BICUBIC)
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
        out.append((f"{label}: image {s.image_id}: “{s.caption}”",
                    plot_explanation(arr, boxes, scores, phrases, best, inter, caption=s.caption)))
    return out
