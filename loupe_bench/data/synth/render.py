"""Rendering: a scene's objects composited over a textured background (anti-aliased shapes, per-pixel noise), and
the encoding of the pixels as image files."""
from __future__ import annotations

import functools
import io
import math
from typing import Any, Dict, List, Tuple

import numpy as np

from .sampling import Scene, SceneObject

SUPERSAMPLE = 4
#: image file formats of the world and their Pillow save options: JPEG for the world's images, PNG for the
#: Winoground pairs
IMAGE_FORMATS: Dict[str, Dict[str, Any]] = {"JPEG": {"quality": 95, "subsampling": 0}, "PNG": {}}


def _unit_polygon(shape: str) -> List[Tuple[float, float]]:
    if shape == "square":
        return [(0, 0), (1, 0), (1, 1), (0, 1)]
    if shape == "triangle":
        return [(0.5, 0), (1, 1), (0, 1)]
    if shape == "diamond":
        return [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]
    if shape == "cross":
        a, b = 0.32, 0.68
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    if shape == "star":
        pts = []
        for i in range(10):
            r = 1.0 if i % 2 == 0 else 0.45
            t = -math.pi / 2 + i * math.pi / 5
            pts.append((r * math.cos(t), r * math.sin(t)))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        return [((px - x0) / (x1 - x0), (py - y0) / (y1 - y0)) for px, py in pts]
    raise ValueError(shape)


def _shape_alpha(obj: SceneObject) -> np.ndarray:
    """Anti-aliased coverage ``[h, w]`` in ``[0, 1]`` of one object inside its box (drawn at 4×, box-filtered)."""
    from PIL import Image, ImageDraw

    s = SUPERSAMPLE
    _, _, w, h = obj.box
    big = Image.new("L", (w * s, h * s), 0)
    draw = ImageDraw.Draw(big)
    x1, y1 = w * s - 1, h * s - 1
    if obj.shape == "circle":
        draw.ellipse([0, 0, x1, y1], fill=255)
    else:
        draw.polygon([(u * x1, v * y1) for u, v in _unit_polygon(obj.shape)], fill=255)
    small = big.resize((w, h), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=4)
def _grid(n: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _background(rng: np.random.Generator, kind: str, image_size: int) -> np.ndarray:
    n = image_size
    grey = float(rng.uniform(80, 170))
    tint = rng.uniform(-10, 10, size=3)
    yy, xx = _grid(n)
    if kind == "noisy":
        base = np.zeros((n, n), np.float32)
        noise_sd = 18.0
    elif kind == "striped":
        angle = float(rng.uniform(0, math.pi))
        period = float(rng.uniform(6, 14)) * n / 64.0
        base = 22.0 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        noise_sd = 6.0
    elif kind == "checkered":
        cell = max(2, int(rng.integers(4, 9) * n / 64))
        base = np.where(((xx // cell) + (yy // cell)) % 2 == 0, 15.0, -15.0).astype(np.float32)
        noise_sd = 6.0
    else:  # shaded
        angle = float(rng.uniform(0, 2 * math.pi))
        ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / n
        base = 45.0 * (ramp - ramp.mean())
        noise_sd = 8.0
    img = grey + base[..., None] + tint[None, None, :] + rng.normal(0, noise_sd, size=(n, n, 3))
    return img.astype(np.float32)


def render_scene(rng: np.random.Generator, scene: Scene, image_size: int) -> Tuple[np.ndarray, List[float]]:
    """Composite the objects (in order, later ones on top) over the background.

    Pixel value ``I = (1 - a) * I_below + a * (rgb + noise)`` with ``a`` the object's anti-aliased coverage
    (the same for both kinds) and ``noise ~ N(0, 5²)`` per pixel and channel. For a two-part object ``rgb`` is the
    top colour's on the box rows ``y … y + h//2 - 1`` and the bottom colour's on rows ``y + h//2 … y + h - 1`` (a
    crisp split at :attr:`SceneObject.split_row`).

    Returns:
        ``uint8 [H, W, 3]`` image and the pixel area (coverage sum) of each object.
    """
    img = _background(rng, scene.background, image_size)
    areas = []
    for obj in scene.objects:
        x, y, w, h = obj.box
        alpha = _shape_alpha(obj)[..., None]
        fill = np.empty((h, w, 3), np.float32)
        fill[:] = np.asarray(obj.rgb, np.float32)
        if obj.rgb2 is not None:
            fill[h // 2:] = np.asarray(obj.rgb2, np.float32)
        fill += rng.normal(0, 5, size=(h, w, 3)).astype(np.float32)
        patch = img[y : y + h, x : x + w]
        img[y : y + h, x : x + w] = (1 - alpha) * patch + alpha * fill
        areas.append(round(float(alpha.sum()), 2))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), areas


def encode_image(arr: np.ndarray, fmt: str) -> bytes:
    """The bytes of a ``uint8 [H, W, 3]`` RGB image saved as ``fmt`` (a key of :data:`IMAGE_FORMATS`) with that
    format's options."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format=fmt, **IMAGE_FORMATS[fmt])
    return buf.getvalue()
