"""Image transforms for training and evaluation (torchvision)."""
from __future__ import annotations

from typing import Callable, Sequence

#: RandomResizedCrop scale range: mild, so the boxes that phrases refer to stay in view
TRAIN_SCALE = (0.8, 1.0)
TRAIN_RATIO = (0.9, 1.1)


def _to_rgb(img):
    return img.convert("RGB") if img.mode != "RGB" else img


def build_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    hflip: bool = False,
) -> Callable:
    """PIL image -> normalised ``[3, image_size, image_size]`` float tensor.

    Train: ``RandomResizedCrop(scale=(0.8, 1.0), ratio=(0.9, 1.1))`` (bicubic), optional horizontal flip (off by
    default: captions speak of left and right), normalise. Eval: resize the short side to ``image_size``, centre
    crop, normalise. Normalisation is ``x' = (x / 255 - mean) / std`` per channel.
    """
    from torchvision import transforms as T

    interp = T.InterpolationMode.BICUBIC
    if train:
        steps = [T.Lambda(_to_rgb), T.RandomResizedCrop(image_size, scale=TRAIN_SCALE, ratio=TRAIN_RATIO, interpolation=interp)]
        if hflip:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps = [T.Lambda(_to_rgb), T.Resize(image_size, interpolation=interp), T.CenterCrop(image_size)]
    steps += [T.ToTensor(), T.Normalize(tuple(float(m) for m in mean), tuple(float(s) for s in std))]
    return T.Compose(steps)
