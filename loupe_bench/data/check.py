"""``check_dataset``: every problem of a data set in one pass (the engine of ``loupe-bench data check``).

Each loader runs with ``on_bad_sample="skip"`` and image verification on, so it walks all records and collects one
:class:`~loupe_bench.errors.DataError` per bad record; a fatal problem of one file (malformed JSON, corrupt tar) is
recorded and the remaining files are still checked. A synthetic world folder is checked in all of its formats.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from ..errors import DataError
from ..registry import Registry
from .formats import DATASETS
from .formats.base import user_file
from .formats.shards import expand_shards, is_remote_shard, shard_url

PathLike = Union[str, os.PathLike]
CHECK_FORMATS = ("auto", "synthetic", "karpathy", "coco", "refer", "voc", "flickr30k-entities", "webdataset", "csv", "hf",
                 "imagefolder", "sugarcrepe", "aro", "winoground", "mmvp-vlm")

#: format name -> predicate ``(path) -> bool`` used by :func:`detect_format`, tried in registration order
DETECTORS = Registry("format detector")


def _json_head(path: Path, n: int = 4096) -> str:
    """The first ``n`` characters of a regular file ("" for anything else: a FIFO or device is never opened)."""
    try:
        with open(user_file(path, None), "r", encoding="utf-8", errors="replace") as fh:
            return fh.read(n)
    except (OSError, DataError):
        return ""


def _refuse_remote(path: PathLike) -> None:
    """``data check`` never fetches: a remote shard name, or a brace pattern naming one, is refused as unusable
    input (:func:`~loupe_bench.data.formats.shards.shard_url`'s :class:`DataError`, naming the URL as given)."""
    if "{" in str(path) or is_remote_shard(path):
        for name in expand_shards(str(path)):
            shard_url(name)


DETECTORS.add("synthetic", lambda p: p.is_dir() and (p / "world.json").is_file())
DETECTORS.add("refer", lambda p: p.is_dir() and any(p.glob("refs(*).p")))
DETECTORS.add("flickr30k-entities", lambda p: p.is_dir() and (p / "Sentences").is_dir() and (p / "Annotations").is_dir())
DETECTORS.add("voc", lambda p: p.is_dir() and (p / "Annotations").is_dir())
DETECTORS.add("hf", lambda p: p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file()))
DETECTORS.add("karpathy", lambda p: (p.is_file() and p.suffix == ".json" and p.name.startswith("dataset_"))
              or (p.is_dir() and any(p.glob("dataset_*.json"))))
DETECTORS.add("coco", lambda p: (p.is_file() and p.suffix == ".json" and '"annotations"' in _json_head(p, 1 << 20))
              or (p.is_dir() and any(p.glob("instances_*.json"))))
DETECTORS.add("karpathy_like", lambda p: p.is_file() and p.suffix == ".json" and '"sentences"' in _json_head(p, 1 << 20))
DETECTORS.add("webdataset", lambda p: "{" in str(p) or (p.is_file() and p.suffix == ".tar") or (p.is_dir() and any(p.glob("*.tar"))))
DETECTORS.add("csv", lambda p: p.is_file() and p.suffix.lower() in (".csv", ".tsv"))
DETECTORS.add("imagefolder", lambda p: p.is_dir() and (p / "classnames.txt").is_file())
_DETECT_ORDER = ("synthetic", "refer", "flickr30k-entities", "voc", "hf", "karpathy", "coco", "karpathy_like", "webdataset", "csv", "imagefolder")


def detect_format(path: PathLike) -> str:
    """Guess the format of ``path`` (a :class:`DataError` when nothing matches)."""
    if is_remote_shard(path):
        return "webdataset"
    p = Path(path)
    if "{" not in str(path) and not p.exists():
        raise DataError("no such file or folder", file=str(path))
    for name in _DETECT_ORDER:
        if DETECTORS.get(name)(p):
            return "karpathy" if name == "karpathy_like" else name
    raise DataError("cannot tell the data format; pass --format", file=str(path))


def check_loader(fmt: str, path: PathLike, **options: Any) -> List[DataError]:
    """Run the loader registered as ``fmt`` on ``path`` with ``on_bad_sample="skip"`` (images verified unless
    ``verify_images=False``): every record it skipped as a :class:`~loupe_bench.errors.DataError`, then the fatal
    error that stopped it, if any; a data set without a single record is one problem."""
    options.setdefault("verify_images", True)
    loader = DATASETS.get(fmt)(path, on_bad_sample="skip", **options)
    try:
        recs = loader.load()
    except DataError as err:
        return list(loader.skipped) + [err]
    if not (recs.images or recs.refs or recs.samples or recs.groups or loader.skipped):
        split = options.get("split")
        return [DataError(f"no records{'' if split is None else f' in split {split!r}'}: the data set is empty",
                          file=str(path))]
    return list(loader.skipped)


def _check_world(path: Path) -> List[DataError]:
    """All formats inside a synthetic world folder."""
    from ..utils.io import read_json

    try:
        world = read_json(path / "world.json")
        files = world["files"]
    except DataError as err:
        return [err]
    except (KeyError, TypeError):
        return [DataError("world.json has no 'files' map", file=str(path / "world.json"))]
    errors: List[DataError] = []
    jobs: List[Tuple[str, Path, Dict[str, Any]]] = [("karpathy", path / files["karpathy"], {})]
    jobs += [("coco", path / rel, {}) for _, rel in sorted(files.get("coco", {}).items())]
    # refsynth/instances.json names the same image files as the per-split COCO files: check them once
    jobs += [("refer", path / "refsynth", {"verify_images": False})]
    jobs += [("imagefolder", path / files.get("classification", "classification"), {})]
    if "flickr30k_entities" in files:  # worlds written before the format was added lack it
        # same image files as the Karpathy JSON (verified above): check the markup, XML and boxes only
        jobs += [("flickr30k-entities", path / files["flickr30k_entities"],
                  {"image_root": str(path / files.get("images", "images")), "verify_images": False})]
    for fmt, p, opts in jobs:
        if not p.exists():
            errors.append(DataError("file or folder listed in world.json is missing", file=str(p)))
            continue
        errors += check_loader(fmt, p, **opts)
    for split, shards in sorted(files.get("shards", {}).items()):
        errors += check_loader("webdataset", path / "shards", shards=[str(path / s) for s in shards])
    return errors


def check_dataset(path: PathLike, fmt: str = "auto", **options: Any) -> List[DataError]:
    """Every problem found in the data set at ``path``, in one pass (empty list: clean).

    Args:
        path: file, folder or shard pattern.
        fmt: a format name of :data:`CHECK_FORMATS` or ``auto`` (see :func:`detect_format`).
        options: passed to the loader (e.g. ``image_root``).

    Raises:
        DataError: the input is unusable as a whole (does not exist, format cannot be detected, a URL or
            ``pipe:`` shard name).
    """
    if fmt not in CHECK_FORMATS:
        raise DataError(f"unknown format {fmt!r}; known: {', '.join(CHECK_FORMATS)}", file=str(path))
    if fmt in ("auto", "webdataset"):
        _refuse_remote(path)
    if fmt == "auto":
        fmt = detect_format(path)
    elif "{" not in str(path) and not Path(path).exists():
        raise DataError("no such file or folder", file=str(path))
    if fmt == "synthetic":
        errors = _check_world(Path(path))
    else:
        errors = check_loader(fmt, path, **options)
    return unique_errors(errors)


def unique_errors(errors: List[DataError]) -> List[DataError]:
    """The errors in order, each message once (several loaders may report the same bad file)."""
    seen, out = set(), []
    for e in errors:
        if str(e) not in seen:
            seen.add(str(e))
            out.append(e)
    return out
