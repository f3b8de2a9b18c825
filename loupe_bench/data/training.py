"""Training-side data plumbing: caption records, the image–caption pair datasets (map-style and webdataset
shards) and :class:`TrainCollator`, which builds the batch dict of ``docs/architecture.md``.

Determinism: the caption drawn for an image and its random augmentation depend only on
``(seed, epoch, image_id)``, never on worker count or on how far an earlier run got, so a resumed run sees exactly
the samples an uninterrupted one would (call :meth:`PairDataset.set_epoch` at the start of every epoch).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from ..errors import DataError, SpecError
from .records import ImageRecord

PathLike = Union[str, os.PathLike]
CAPTION_POLICIES = ("random", "cycle", "first")


class PairSample(NamedTuple):
    """One training pair.

    Attributes:
        pixels: ``[3, H, W]`` transformed image.
        caption: the caption text.
        spans: ``(start, end)`` character spans of the caption's phrases.
        image_id: the image's integer id.
        phrase_boxes: per phrase (same order as ``spans``), the box of the object it refers to in the
            *transformed* image, normalised xyxy, NaN where unknown or cut away by the crop; ``None`` when the data
            carries no phrase box at all (or the transform cannot move boxes).
    """

    pixels: torch.Tensor
    caption: str
    spans: Tuple[Tuple[int, int], ...]
    image_id: int
    phrase_boxes: Optional[Tuple[Tuple[float, float, float, float], ...]] = None


def load_caption_records(data: Union[PathLike, Dict[str, Any]], split: Optional[str] = None) -> List[ImageRecord]:
    """Image records with captions (and gold phrases where known) of one split.

    Args:
        data: a synthetic world folder; a ``"format:path"`` string (``karpathy:/x/dataset_coco.json``,
            ``csv:/x/train.csv``, ``webdataset:/x/train-{000000..000003}.tar`` …); a plain path whose format is
            detected; or a dict ``{"format": ..., "path": ..., **loader options}``.
        split: keep only this split (None: all).
    """
    from . import DATASETS
    from .check import detect_format

    options: Dict[str, Any] = {}
    if isinstance(data, dict):
        options = {k: v for k, v in data.items() if k not in ("format", "path")}
        fmt, path = data.get("format", "auto"), data["path"]
    else:
        text = str(data)
        head, sep, tail = text.partition(":")
        if sep and head in DATASETS:
            fmt, path = head, tail
        else:
            fmt, path = "auto", text
    if fmt == "auto":
        fmt = detect_format(path)
    options.setdefault("verify_images", False)
    recs = DATASETS.get(fmt)(path, split=split, **options).load()
    images = [r for r in recs.images if r.captions]
    if not images:
        raise DataError(f"no captioned images{'' if split is None else f' in split {split!r}'}", file=str(path))
    return images


def _caption_index(policy: str, seed: int, epoch: int, index: int, n: int) -> int:
    """Which of ``n`` captions to use: ``random`` draws from ``Generator([seed, epoch, index])``, ``cycle`` is
    ``(epoch + index) mod n``, ``first`` is 0 (``index`` is the image id)."""
    if policy == "first" or n == 1:
        return 0
    if policy == "cycle":
        return (epoch + index) % n
    return int(np.random.default_rng([seed, epoch, index]).integers(n))


def _apply_transform(transform: Callable, img, seed: int, epoch: int, index: int,
                     boxes: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Run a (possibly random) torchvision transform under a torch seed derived from ``(seed, epoch, index)``.

    Returns ``(pixels, boxes)``: with ``boxes`` (``[M, 4]`` normalised xyxy in ``img``) and a transform that can
    move them (:meth:`~loupe_bench.data.transforms.PairTransform.with_boxes`, same random draws, so the same
    pixels), the boxes in the transformed image; otherwise ``None``.
    """
    # the CPU default generator directly: torch.random.fork_rng + torch.manual_seed cost ~0.3 ms per image (they
    # also visit every accelerator), this costs ~5 us; the caller's random state is restored either way
    gen = torch.default_generator
    state = gen.get_state()
    try:
        gen.manual_seed(int(np.random.default_rng([seed, epoch, index, 7]).integers(2**62)))
        if boxes is not None and hasattr(transform, "with_boxes"):
            return transform.with_boxes(img, boxes)
        return transform(img), None
    finally:
        gen.set_state(state)


def normalised_phrase_boxes(bboxes: Sequence[Optional[Sequence[float]]], width: int, height: int
                            ) -> Optional[torch.Tensor]:
    """Pixel ``xywh`` boxes of a caption's phrases (``None`` where a phrase has none) -> ``[M, 4]`` normalised xyxy
    ``(x / W, y / H, (x + w) / W, (y + h) / H)`` with NaN rows for the missing ones; ``None`` when no phrase has
    a box (or there is no phrase)."""
    if not any(b is not None for b in bboxes):
        return None
    out = torch.full((len(bboxes), 4), float("nan"), dtype=torch.float64)
    for k, b in enumerate(bboxes):
        if b is not None:
            x, y, w, h = (float(v) for v in b)
            out[k] = torch.tensor([x / width, y / height, (x + w) / width, (y + h) / height], dtype=torch.float64)
    return out


def _box_tuple(boxes: Optional[torch.Tensor]) -> Optional[Tuple[Tuple[float, float, float, float], ...]]:
    return None if boxes is None else tuple(tuple(float(v) for v in row) for row in boxes.tolist())


def open_rgb(path: PathLike, record: Any = None):
    """Open an image file as 8-bit RGB (:func:`~loupe_bench.data.formats.base.to_rgb`: 16-bit images scaled, not
    clipped). Only a regular file within the image size limit is opened; a missing, oversized, non-regular or
    unreadable file is a :class:`DataError` naming the file and record."""
    from PIL import Image

    from .formats.base import image_errors, to_rgb, user_file

    user_file(path, "image", "image file", record)
    with image_errors(path, record):
        with Image.open(path) as im:
            rgb = to_rgb(im, path, record)
            return rgb.copy() if rgb is im else rgb  # decoded now: closing the file frees ``im``


#: record count up to which :class:`PairDataset` keeps decoded images in memory by default
CACHE_MAX_IMAGES = 20000


class PairDataset(Dataset):
    """Map-style dataset: one (image, caption) pair per image per epoch.

    Args:
        records: image records with captions (e.g. from :func:`load_caption_records`).
        transform: PIL image -> tensor (e.g. :func:`~loupe_bench.data.transforms.build_transform`).
        caption_policy: ``random`` (seeded by ``(seed, epoch, image_id)``), ``cycle`` (``(epoch + image_id) mod n``)
            or ``first``.
        seed: base seed of caption choice and augmentation.
        cache_images: keep decoded images in memory after first use (``None``: when there are at most
            :data:`CACHE_MAX_IMAGES` records, e.g. the synthetic world; decoding is a tenth of a tiny step).
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable, caption_policy: str = "random", seed: int = 0,
                 cache_images: Optional[bool] = None):
        if caption_policy not in CAPTION_POLICIES:
            raise SpecError(f"caption_policy must be one of {', '.join(CAPTION_POLICIES)}, got {caption_policy!r}")
        self.records = [r for r in records if r.captions]
        if not self.records:
            raise DataError("no image with a caption")
        self.transform = transform
        self.caption_policy = caption_policy
        self.seed = int(seed)
        self.epoch = 0
        self.cache: Optional[Dict[int, Any]] = (
            {} if (cache_images if cache_images is not None else len(self.records) <= CACHE_MAX_IMAGES) else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def caption_index(self, index: int) -> int:
        rec = self.records[index]
        return _caption_index(self.caption_policy, self.seed, self.epoch, int(rec.image_id), len(rec.captions))

    def __getitem__(self, index: int) -> PairSample:
        rec = self.records[index]
        cap = rec.captions[self.caption_index(index)]
        if self.cache is None:
            img = open_rgb(rec.path, record=rec.image_id)
        else:
            img = self.cache.get(index)
            if img is None:
                img = self.cache[index] = open_rgb(rec.path, record=rec.image_id)
        boxes = normalised_phrase_boxes([p.bbox for p in cap.phrases], *img.size)
        pixels, boxes = _apply_transform(self.transform, img, self.seed, self.epoch, int(rec.image_id), boxes)
        return PairSample(pixels, cap.text, tuple((p.start, p.end) for p in cap.phrases), int(rec.image_id),
                          _box_tuple(boxes))


class ShardPairs(IterableDataset):
    """Iterable (image, caption) pairs from webdataset shards (``<key>.jpg`` + ``<key>.json``/``.txt``).

    Shards are split across DDP ranks and data-loader workers (shard ``i`` of ``n`` goes to rank ``i mod W``, then
    to worker ``j mod K`` of that rank's list, as ``webdataset.split_by_node`` / ``split_by_worker``) and read in
    order; caption choice and augmentation are seeded by ``(seed, epoch, image_id)`` as in :class:`PairDataset`, so
    both give the same samples.

    Local shards are opened by their resolved absolute path with :mod:`tarfile` (a file named
    ``pipe:cmd;cat s.tar`` is just read, no shell runs); ``pipe:`` / ``http(s):`` names are refused unless
    ``allow_remote`` (then webdataset's opener streams them).

    Args:
        shards: a file, folder, brace pattern or list of those.
        transform, caption_policy, seed: as :class:`PairDataset`.
        on_bad_sample: ``error`` or ``skip`` (counted in :attr:`skipped`, per worker).
        split: keep only this split: from a folder only ``<split>-*.tar``, and only samples whose JSON ``split``
            (when present) matches.
        allow_remote: let webdataset open URL / ``pipe:`` shard names.
    """

    def __init__(
        self,
        shards: Any,
        transform: Callable,
        caption_policy: str = "random",
        seed: int = 0,
        on_bad_sample: str = "error",
        split: Optional[str] = None,
        allow_remote: bool = False,
    ):
        from .formats.shards import expand_shards, shard_url

        if caption_policy not in CAPTION_POLICIES:
            raise SpecError(f"caption_policy must be one of {', '.join(CAPTION_POLICIES)}, got {caption_policy!r}")
        paths = expand_shards(shards)
        if split is not None and not isinstance(shards, (list, tuple)) and Path(str(shards)).is_dir():
            paths = [p for p in paths if p.name.startswith(f"{split}-")]
            if not paths:
                raise DataError(f"no {split}-*.tar shards in folder", file=str(shards))
        self.split = split
        self.allow_remote = bool(allow_remote)
        self.urls = [shard_url(p, self.allow_remote) for p in paths]
        self.transform = transform
        self.caption_policy = caption_policy
        self.seed = int(seed)
        self.on_bad_sample = on_bad_sample
        self.epoch = 0
        self.skipped: List[DataError] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def my_urls(self) -> List[str]:
        """This rank's and this data-loader worker's shards (see the class docstring)."""
        import torch.distributed as dist
        from torch.utils.data import get_worker_info

        urls = list(self.urls)
        if dist.is_available() and dist.is_initialized():
            urls = urls[dist.get_rank()::dist.get_world_size()]
        worker = get_worker_info()
        if worker is not None:
            urls = urls[worker.id::worker.num_workers]
        return urls

    def _samples(self) -> Iterator[Dict[str, Any]]:
        """webdataset-style sample dicts (``__key__``, ``__url__``, one entry per member extension)."""
        from .formats.shards import iter_tar_samples

        for url in self.my_urls():
            for key, parts in iter_tar_samples(url, self.allow_remote):
                sample: Dict[str, Any] = dict(parts)
                sample["__key__"], sample["__url__"] = key, url
                yield sample

    def __iter__(self) -> Iterator[PairSample]:
        from PIL import Image

        from .formats.base import check_bbox, image_size_from_bytes, to_rgb
        from .formats.shards import IMAGE_EXTS, parse_sample_meta

        for pos, sample in enumerate(self._samples()):
            key, url = sample.get("__key__", "?"), sample.get("__url__", "?")
            try:
                parts = {k: v for k, v in sample.items() if not k.startswith("__")}
                ext = next((e for e in IMAGE_EXTS if e in parts), None)
                if ext is None:
                    raise DataError("sample has no image member", file=url, record=key)
                meta = parse_sample_meta(key, parts, url)
                image_size_from_bytes(parts[ext], file=url, record=key)  # decodes: any bad image is a DataError
                img = to_rgb(Image.open(io.BytesIO(parts[ext])), url, key)
                caps = meta["captions"]
                phrases = meta.get("phrases") or [[] for _ in caps]
                image_id = int(meta.get("image_id", key if str(key).isdigit() else pos))
                c = _caption_index(self.caption_policy, self.seed, self.epoch, image_id, len(caps))
                bboxes = [None if p.get("bbox") is None else check_bbox(p["bbox"], img.size[0], img.size[1], url, key)
                          for p in phrases[c]]
            except DataError as err:
                if self.on_bad_sample == "error":
                    raise
                self.skipped.append(err)
                continue
            if self.split is not None and meta.get("split", self.split) != self.split:
                continue
            boxes = normalised_phrase_boxes(bboxes, *img.size)
            pixels, boxes = _apply_transform(self.transform, img, self.seed, self.epoch, image_id, boxes)
            spans = tuple((int(p["start"]), int(p["end"])) for p in phrases[c])
            yield PairSample(pixels, caps[c], spans, image_id, _box_tuple(boxes))


def phrase_token_mask(offsets: torch.Tensor, attention_mask: torch.Tensor, spans: Sequence[Sequence[Tuple[int, int]]], max_phrases: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Tokens of each phrase from character spans and token character offsets.

    Token ``j`` of text ``b`` belongs to phrase ``p = [s_p, e_p)`` when it is a real token with a non-empty span
    ``[a_j, z_j)`` (``z_j > a_j``, attention mask 1) that overlaps the phrase: ``a_j < e_p`` and ``z_j > s_p``.
    A phrase slot is real (``phrase_mask``) when it holds a phrase with at least one token (a phrase cut off by
    truncation is dropped). Phrases beyond ``max_phrases`` are dropped.

    Args:
        offsets: ``[B, L, 2]`` long token offsets.
        attention_mask: ``[B, L]``.
        spans: per text, the ``(start, end)`` character spans.
        max_phrases: ``P``.

    Returns:
        ``phrase_token_mask [B, P, L]`` bool and ``phrase_mask [B, P]`` bool.
    """
    b, l = attention_mask.shape
    p = max(1, int(max_phrases))
    starts = torch.zeros(b, p, dtype=torch.long)
    ends = torch.zeros(b, p, dtype=torch.long)
    for i, sp in enumerate(spans):
        for k, (s, e) in enumerate(list(sp)[:p]):
            starts[i, k], ends[i, k] = int(s), int(e)
    a, z = offsets[..., 0].long(), offsets[..., 1].long()  # [B, L]
    real = (attention_mask > 0) & (z > a)
    overlap = (a[:, None, :] < ends[:, :, None]) & (z[:, None, :] > starts[:, :, None])  # [B, P, L]
    tok = overlap & real[:, None, :] & (ends > starts)[:, :, None]
    return tok, tok.any(dim=-1)


class TrainCollator:
    """List of :class:`PairSample` -> the training batch dict.

    Keys: ``pixels [B,3,H,W]``, ``input_ids``/``attention_mask [B,L]``, ``phrase_token_mask [B,P,L]`` bool,
    ``phrase_mask [B,P]`` bool, ``image_ids [B]`` long, and — only when some sample carries phrase boxes —
    ``phrase_boxes [B,P,4]`` float (normalised xyxy in the transformed image of the object each phrase slot refers
    to; NaN where unknown, cut away by the crop, or the slot is empty).

    Args:
        tokenizer: ``tokenizer(texts) -> TokenBatch(input_ids, attention_mask, offsets)``.
        max_phrases: ``P``.
    """

    def __init__(self, tokenizer: Callable, max_phrases: int = 8):
        self.tokenizer = tokenizer
        self.max_phrases = int(max_phrases)

    def __call__(self, samples: Sequence[Any]) -> Dict[str, torch.Tensor]:
        samples = [s if isinstance(s, PairSample) else PairSample(*s) for s in samples]
        tb = self.tokenizer([s.caption for s in samples])
        input_ids, attention_mask, offsets = tb[0], tb[1], tb[2]
        ptm, pm = phrase_token_mask(offsets, attention_mask, [s.spans for s in samples], self.max_phrases)
        out = {
            "pixels": torch.stack([s.pixels for s in samples]),
            "input_ids": input_ids.long(),
            "attention_mask": attention_mask.long(),
            "phrase_token_mask": ptm,
            "phrase_mask": pm,
            "image_ids": torch.tensor([s.image_id for s in samples], dtype=torch.long),
        }
        if any(s.phrase_boxes is not None for s in samples):
            p = pm.shape[1]
            boxes = torch.full((len(samples), p, 4), float("nan"), dtype=torch.float32)
            for i, s in enumerate(samples):
                for k, box in enumerate(list(s.phrase_boxes or ())[:p]):
                    boxes[i, k] = torch.tensor(box, dtype=torch.float32)
            boxes[~pm] = float("nan")  # a slot without a real phrase (dropped by truncation) has no box either
            out["phrase_boxes"] = boxes
        return out
