"""Image transforms for training and evaluation (torchvision), with boxes carried through the geometric steps."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

#: RandomResizedCrop scale range: mild, so the boxes that phrases refer to stay in view
TRAIN_SCALE = (0.8, 1.0)
TRAIN_RATIO = (0.9, 1.1)


def _to_rgb(img):
    """8-bit RGB; 16-bit images scaled, not clipped (:func:`~loupe_bench.data.formats.base.to_rgb`)."""
    from .formats.base import to_rgb

    return to_rgb(img, getattr(img, "filename", None) or "<image>")


def crop_boxes(boxes: Tensor, width: float, height: float, left: float, top: float, crop_w: float,
               crop_h: float) -> Tensor:
    """Normalised xyxy boxes of a ``width × height`` image → the same boxes in the crop ``[left, left + crop_w) ×
    [top, top + crop_h)`` (pixels), normalised to the crop and clipped to it.

    ``x' = clip((x · width − left) / crop_w, 0, 1)``, ``y' = clip((y · height − top) / crop_h, 0, 1)`` for both
    corners; a resize of the crop to any output size leaves normalised coordinates unchanged. A box with nothing
    left inside the crop (``x'_1 − x'_0 ≤ 0`` or ``y'_1 − y'_0 ≤ 0`` after clipping) becomes NaN (invalid); NaN rows
    stay NaN.
    """
    b = boxes.to(torch.float64)
    x = (b[:, 0::2] * width - left) / crop_w
    y = (b[:, 1::2] * height - top) / crop_h
    out = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1).clamp(0.0, 1.0)
    gone = ~((out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1]))  # NaN compares False: stays gone
    out[gone] = float("nan")
    return out.to(boxes.dtype)


def flip_boxes(boxes: Tensor) -> Tensor:
    """Horizontal flip of normalised xyxy boxes: ``(x0, y0, x1, y1) → (1 − x1, y0, 1 − x0, y1)``."""
    return torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)


class PairTransform:
    """A sequence of torchvision transforms (as ``torchvision.transforms.Compose``: ``transform(img)`` runs each
    step) that can also carry boxes through its geometric steps (:meth:`with_boxes`).

    Steps with a box rule: ``RandomResizedCrop`` (:func:`crop_boxes` with the drawn crop), ``CenterCrop`` (the
    centred crop, after torchvision's zero padding when the image is smaller), ``Resize`` (normalised boxes
    unchanged), ``RandomHorizontalFlip`` (:func:`flip_boxes` when it flips), and the box-preserving ``ToTensor``,
    ``PILToTensor``, ``ConvertImageDtype``, ``Normalize`` and the RGB conversion. Any other step makes the boxes
    unknown (:meth:`with_boxes` returns ``None`` for them).

    :meth:`with_boxes` draws the same random numbers in the same order as ``__call__`` (``get_params`` of the
    crop, ``torch.rand(1)`` of the flip), so under the same RNG state the pixels are identical.
    """

    def __init__(self, steps: Sequence[Callable]):
        self.transforms = list(steps)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        return f"PairTransform({self.transforms!r})"

    def with_boxes(self, img, boxes: Tensor) -> Tuple[Any, Optional[Tensor]]:
        """``(transformed image, boxes [M, 4] in the output's normalised xyxy or None when unknown)``.

        Args:
            img: PIL image (or tensor) as for ``__call__``.
            boxes: ``[M, 4]`` normalised xyxy boxes in ``img`` (NaN rows: unknown, kept NaN).
        """
        import torchvision.transforms.functional as TF
        from torchvision import transforms as T

        keep = (T.ToTensor, T.PILToTensor, T.ConvertImageDtype, T.Normalize)
        b: Optional[Tensor] = boxes.clone()
        for t in self.transforms:
            if isinstance(t, T.RandomResizedCrop):
                _, h_img, w_img = TF.get_dimensions(img)
                top, left, h, w = t.get_params(img, t.scale, t.ratio)
                img = TF.resized_crop(img, top, left, h, w, t.size, t.interpolation, antialias=t.antialias)
                b = None if b is None else crop_boxes(b, w_img, h_img, left, top, w, h)
            elif isinstance(t, T.RandomHorizontalFlip):
                if torch.rand(1) < t.p:
                    img = TF.hflip(img)
                    b = None if b is None else flip_boxes(b)
            elif isinstance(t, T.CenterCrop):
                _, h_img, w_img = TF.get_dimensions(img)
                ch, cw = t.size
                pad_l = (cw - w_img) // 2 if cw > w_img else 0
                pad_t = (ch - h_img) // 2 if ch > h_img else 0
                w_pad, h_pad = max(w_img, cw), max(h_img, ch)
                top, left = int(round((h_pad - ch) / 2.0)), int(round((w_pad - cw) / 2.0))
                img = t(img)
                b = None if b is None else crop_boxes(b, w_img, h_img, left - pad_l, top - pad_t, cw, ch)
            elif isinstance(t, T.Resize) or isinstance(t, keep) or (isinstance(t, T.Lambda) and t.lambd is _to_rgb):
                img = t(img)
            else:
                img = t(img)
                b = None
        return img, b


def build_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    hflip: bool = False,
    scale: Optional[Sequence[float]] = TRAIN_SCALE,
    ratio: Sequence[float] = TRAIN_RATIO,
) -> PairTransform:
    """PIL image -> normalised ``[3, image_size, image_size]`` float tensor (a :class:`PairTransform`).

    Train: ``RandomResizedCrop(scale=(0.8, 1.0), ratio=(0.9, 1.1))`` (bicubic; ``scale`` / ``ratio`` override it,
    ``scale=None`` resizes the short side and centre-crops instead), optional horizontal flip (off by default:
    captions speak of left and right), normalise. Eval: resize the short side to ``image_size``, centre crop,
    normalise. Normalisation is ``x' = (x / 255 - mean) / std`` per channel.
    """
    from torchvision import transforms as T

    interp = T.InterpolationMode.BICUBIC
    if train and scale is not None:
        steps = [T.Lambda(_to_rgb), T.RandomResizedCrop(image_size, scale=tuple(float(s) for s in scale),
                                                        ratio=tuple(float(r) for r in ratio), interpolation=interp)]
    else:
        steps = [T.Lambda(_to_rgb), T.Resize(image_size, interpolation=interp), T.CenterCrop(image_size)]
    if train and hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(tuple(float(m) for m in mean), tuple(float(s) for s in std))]
    return PairTransform(steps)
