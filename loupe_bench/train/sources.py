"""Data sources backed by the data layer: any caption data set it reads, or webdataset shards streamed."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence


# -- the data layer as a training source ------------------------------------------------------------------------------
_SIDE_WORDS = ("left", "right")


def captions_mention_sides(captions: Sequence[str]) -> bool:
    """True when any caption speaks of left or right (whole words), so a horizontal flip would falsify it."""
    import re

    pattern = re.compile(r"\b(" + "|".join(_SIDE_WORDS) + r")\b", re.IGNORECASE)
    return any(pattern.search(c) for c in captions)


def _train_transform(model: Any, scale: Optional[Sequence[float]], hflip: bool):
    """The data layer's training transform (a :class:`~loupe_bench.data.transforms.PairTransform`, so phrase boxes
    follow the crop), with the recipe's random-resized-crop scale (None: resize + centre crop and, when asked, a
    flip)."""
    from ..data.transforms import build_transform

    return build_transform(int(model.image_size), model.image_mean, model.image_std, train=True, hflip=hflip,
                           scale=None if scale is None else tuple(scale))


class DatasetSource:
    """A training source over the data layer: any caption data set it reads, or webdataset shards streamed.

    Args:
        data: a synthetic world folder, a data-set path (format detected) or ``"format:path"``; an empty path is a
            :class:`~loupe_bench.errors.DataError` (never the current folder).
        recipe: the recipe (``data.format`` other than ``auto`` is prefixed to the path; ``data.split`` selects
            the split of formats that have splits).
        allow_remote_shards: let webdataset shard names that are URLs or ``pipe:`` commands be opened (off: they
            are refused; local shards are always read by absolute path, never through a shell).
        on_bad_sample: ``error`` (the first bad image stops training before step 1) or ``skip`` (bad images are
            left out and counted in :attr:`skipped`; streamed shards skip bad samples as they come).
    """

    def __init__(self, data: Any, recipe: Any, allow_remote_shards: bool = False, on_bad_sample: str = "error"):
        from ..data.check import detect_format
        from ..errors import DataError

        self.recipe = recipe
        text = str(data)
        if not text.strip():
            raise DataError("the data path is empty (an empty --data never stands for the current folder); name a "
                            "data set folder or file")
        fmt = recipe.data.format
        if fmt == "auto":
            head, sep, tail = text.partition(":")
            from ..data import DATASETS

            fmt, path = (head, tail) if sep and head in DATASETS else (detect_format(text), text)
        else:
            path = text
        if not path.strip():
            raise DataError(f"{text}: the data path after the format prefix is empty; name a data set folder or file")
        if fmt == "synthetic":  # the world's Karpathy file carries captions and phrase spans; skip boxes/refs
            from ..data import load_world

            fmt, path = "karpathy", str(load_world(path).path("karpathy"))
        self.format, self.path = fmt, path
        self.name = f"{fmt}:{path}"
        self.allow_remote_shards = bool(allow_remote_shards)
        from ..data.formats.base import ON_BAD_SAMPLE
        from ..errors import SpecError

        if on_bad_sample not in ON_BAD_SAMPLE:
            raise SpecError(f"on_bad_sample must be one of {', '.join(ON_BAD_SAMPLE)}, got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.skipped: List[Any] = []
        self._records = None

    @property
    def streamed(self) -> bool:
        return self.format == "webdataset"

    def records(self):
        if self._records is None:
            from ..data.training import load_caption_records

            split = None if self.streamed else self.recipe.data.split
            spec = {"format": self.format, "path": self.path}
            if self.streamed:
                spec["allow_remote"] = self.allow_remote_shards
            self._records = load_caption_records(spec, split=split)
        return self._records

    def checked_records(self):
        """The records whose image passes :func:`~loupe_bench.data.formats.base.check_image_header`, every image
        checked once before step 1 (each distinct file once; fully decoded when the data set is small enough for
        :class:`~loupe_bench.data.training.PairDataset` to cache it anyway): ``error`` raises the first bad one,
        ``skip`` leaves the bad ones out, counts them in :attr:`skipped` and warns once on stderr."""
        import sys

        from ..data.formats.base import check_image_header
        from ..data.training import CACHE_MAX_IMAGES
        from ..errors import DataError

        full = len(self.records()) <= CACHE_MAX_IMAGES
        bad: Dict[str, DataError] = {}
        keep = []
        for rec in self.records():
            key = str(rec.path)
            if key not in bad:
                try:
                    check_image_header(rec.path, record=rec.image_id, full=full)
                    bad[key] = None  # type: ignore[assignment]
                except DataError as err:
                    if self.on_bad_sample == "error":
                        raise
                    bad[key] = err
            if bad[key] is None:
                keep.append(rec)
            else:
                self.skipped.append(bad[key])
        if self.skipped:
            sys.stderr.write(f"warning: skipped {len(self.skipped)} record(s) with a bad image (first: "
                             f"{self.skipped[0]})\n")
        return keep

    def captions(self) -> List[str]:
        return [c.text for r in self.records() for c in r.captions]

    def fingerprint(self) -> Optional[str]:
        """What a resume compares (:func:`~loupe_bench.train.runinfo.data_record`): the content fingerprint of the
        data path (:func:`~loupe_bench.train.runinfo.path_fingerprint`: the annotation file, or every shard) and,
        for a data set of image files, of the training images themselves
        (:func:`~loupe_bench.train.runinfo.images_fingerprint`: names, sizes, sampled content), so replacing the
        images under an unchanged annotation file changes it. Annotations the data layer refuses enter as
        unreadable (a resume then reports changed data first; a new run reports the data error when it reads them)."""
        from ..errors import DataError
        from ..utils.io import stable_hash
        from .runinfo import images_fingerprint, path_fingerprint

        base = path_fingerprint(self.path)
        if self.streamed:
            return base
        try:
            images = images_fingerprint(self.records())
        except DataError:
            images = "unreadable annotations"
        return stable_hash([base, images], 32)

    def hflip(self) -> bool:
        setting = self.recipe.data.augment.hflip
        if setting == "auto":
            return not captions_mention_sides(self.captions())
        return bool(setting)

    def build(self, model: Any, recipe: Any, rank: int, world_size: int):
        from ..data.training import PairDataset, ShardPairs, TrainCollator
        from .data import BuiltData

        transform = _train_transform(model, recipe.data.augment.random_resized_crop, self.hflip())
        collate = TrainCollator(model.tokenizer, recipe.data.max_phrases)
        if self.streamed:
            ds = ShardPairs(self.path, transform, caption_policy=recipe.data.caption_policy, seed=recipe.seed,
                            allow_remote=self.allow_remote_shards, on_bad_sample=self.on_bad_sample)
            return BuiltData(ds, collate, None)
        ds = PairDataset(self.checked_records(), transform, caption_policy=recipe.data.caption_policy, seed=recipe.seed)
        return BuiltData(ds, collate, len(ds))
