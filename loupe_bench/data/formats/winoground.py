"""Winoground (Thrush et al., CVPR 2022): two images, two captions with the same words in a different order.

The data set is the gated Hugging Face repository ``facebook/winoground`` (research use under its own licence
terms; accept them on the hub and download it yourself — loupe-bench never downloads it). Layout read, as the
repository's own loading script reads it:

    examples.jsonl     one JSON object per line:
                       {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1",
                        "caption_0": "...", "caption_1": "...", "tag": "...", "secondary_tag": "...",
                        "num_main_preds": 1, "collapsed_tag": "..."}
    images/<name>.png  the images, ``<name>`` the ``image_0`` / ``image_1`` value (stored without extension)

``huggingface_hub.snapshot_download("facebook/winoground", repo_type="dataset")`` gives ``data/examples.jsonl``
and ``data/images.zip``; unzip the archive in ``data/`` (``data/images/*.png``) and use ``data/`` as the folder.
The loader's ``path`` is ``examples.jsonl`` itself, or a folder holding it directly or under ``data/``. (The
``WinoGround`` class of CLIP_benchmark 1.6.2 reads the same repository through ``datasets.load_dataset``.)

Each line becomes one :class:`~loupe_bench.data.records.MatchGroup`: ``group_id`` the ``id``, ``images``
``(image_0, image_1)``, ``texts`` ``(caption_0, caption_1)`` (caption ``i`` describes image ``i``), ``kind`` the
``tag`` and ``tags`` the ``secondary_tag``, ``collapsed_tag`` and ``num_main_preds`` given. The file has no splits:
every item gets the split asked for (the release is one ``test`` split).

Reading is bounded: the file is within the annotation size limit, holds at most :data:`MAX_LINES` lines of at most
:data:`MAX_LINE_BYTES` bytes each, and every line is parsed with the bounded JSON reader. A bad line (malformed
JSON, a missing or mistyped field, an image name that is not a plain file name, a missing image) is one
:class:`~loupe_bench.errors.DataError` naming the file and the line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from ...errors import DataError
from ...utils.bounded import json_load
from ..records import DatasetRecords, MatchGroup
from .base import DATASETS, Loader, as_int, as_str, check_caption, image_size, require, user_file, user_text

#: most lines of a JSON-lines file (Winoground has 400)
MAX_LINES = 1_000_000
#: longest line of a JSON-lines file, in bytes (a Winoground line is a few hundred)
MAX_LINE_BYTES = 1 << 20
#: optional per-item labels of a Winoground line kept as ``MatchGroup.tags`` (``tag`` is the ``kind``)
WINOGROUND_TAGS = ("secondary_tag", "collapsed_tag", "num_main_preds")


def jsonl_lines(path: Path) -> Iterator[Tuple[int, str, Any]]:
    """``(line number, record name, parsed object or DataError)`` of every non-blank line of a JSON-lines file.

    The file passes the annotation size limit; more than :data:`MAX_LINES` lines is fatal. A line longer than
    :data:`MAX_LINE_BYTES` bytes or not valid JSON yields a :class:`DataError` naming the file and the line (for the
    caller's bad-sample policy) instead of an object."""
    lines = user_text(path, "annotation", "JSON-lines file").splitlines()
    if len(lines) > MAX_LINES:
        raise DataError(f"{len(lines):,} lines, above the limit of {MAX_LINES:,}", file=str(path))
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        rec = f"line {n}"
        if len(line.encode("utf-8")) > MAX_LINE_BYTES:
            yield n, rec, DataError(f"line longer than {MAX_LINE_BYTES:,} bytes", file=str(path), record=rec)
            continue
        try:
            yield n, rec, json_load(line, str(path))
        except DataError as err:
            yield n, rec, DataError(err.message.replace(" at line 1 column ", " at column "), file=str(path),
                                    record=rec)


def plain_name(value: Any, what: str, file: Path, record: Any) -> str:
    """A file name with no folder part: a non-empty string without ``/``, ``\\`` or NUL, not ``.`` or ``..``
    (never joined as a path that could leave its folder)."""
    name = as_str(value, what, file, record)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise DataError(f"{what} {name!r} is not a plain file name (a '/', '\\\\' or '..'); refused", file=str(file),
                        record=record)
    return name


def image_file(root: Path, name: str, file: Path, record: Any, verify: bool) -> Path:
    """``root / name`` when it is a regular image file within the size limit (``stat`` only; decoded in full with
    ``verify``); else a :class:`DataError` naming the image, the record and the annotation file listing it."""
    path = root / name
    try:
        user_file(path, "image", "image file", record)
        if verify:
            image_size(path, record)
    except DataError as err:
        raise DataError(f"{err.message} (listed in {file})", file=err.file, record=record) from None
    return path


def find_file(path: Path, name: str, subfolder: str = "data") -> Path:
    """``path`` itself when it is not a folder; else ``path/name``, or ``path/subfolder/name`` when only that
    exists (a hub snapshot's layout)."""
    if not path.is_dir():
        return path
    nested = path / subfolder / name
    return nested if not (path / name).exists() and nested.exists() else path / name


@DATASETS.register("winoground")
class WinogroundLoader(Loader):
    """Winoground ``examples.jsonl`` + ``images/`` (see the module docstring).

    Options:
        image_root: the folder of the images (default: ``images/`` beside ``examples.jsonl``).
        image_ext: the extension added to the ``image_0`` / ``image_1`` names (default ``.png``).
    """

    name = "winoground"
    description = "Winoground examples.jsonl (id, image_0/1, caption_0/1, tags) + images/<name>.png"

    def _load(self) -> DatasetRecords:
        path = find_file(self.path, "examples.jsonl")
        root = Path(self.options.get("image_root") or path.parent / "images")
        if not root.is_dir():
            zipped = " (unzip images.zip there first)" if (path.parent / "images.zip").is_file() else ""
            raise DataError(f"image folder not found{zipped}; Winoground expects images/ beside examples.jsonl",
                            file=str(root))
        ext = str(self.options.get("image_ext", ".png"))
        out = DatasetRecords(name=self.name, source=str(path))
        seen: Dict[str, str] = {}
        for _, rec, obj in jsonl_lines(path):
            ok, group = self.guard(lambda rec=rec, obj=obj: self._item(obj, path, rec, root, ext, seen))
            if ok:
                out.groups.append(group)
        return out

    def _item(self, obj: Any, path: Path, rec: str, root: Path, ext: str, seen: Dict[str, str]) -> MatchGroup:
        if isinstance(obj, DataError):
            raise obj
        if not isinstance(obj, dict):
            raise DataError("line is not a JSON object", file=str(path), record=rec)
        gid = str(as_int(require(obj, "id", path, rec), "id", path, rec))
        if gid in seen:
            raise DataError(f"duplicate id {gid} (first on {seen[gid]})", file=str(path), record=rec)
        line, rec = rec, f"{rec} (id {gid})"
        texts = tuple(check_caption(as_str(require(obj, k, path, rec), k, path, rec), path, rec)
                      for k in ("caption_0", "caption_1"))
        images = tuple(image_file(root, plain_name(require(obj, k, path, rec), k, path, rec) + ext, path, rec,
                                  self.verify_images) for k in ("image_0", "image_1"))
        kind = as_str(obj["tag"], "tag", path, rec) if obj.get("tag") not in (None, "") else ""
        seen[gid] = line
        return MatchGroup(group_id=gid, images=images, texts=texts, kind=kind, split=self.split,
                          tags=_tags(obj, path, rec))


def _tags(obj: Dict[str, Any], path: Path, rec: str) -> Tuple[Tuple[str, str], ...]:
    """The optional labels of :data:`WINOGROUND_TAGS` present on a line (``num_main_preds`` an integer, the others
    strings; an empty string is kept as given)."""
    out = []
    for key in WINOGROUND_TAGS:
        value: Optional[Any] = obj.get(key)
        if value is None:
            continue
        if key == "num_main_preds":
            out.append((key, str(as_int(value, key, path, rec))))
        elif isinstance(value, str):
            out.append((key, value))
        else:
            raise DataError(f"{key} {value!r} is not a string", file=str(path), record=rec)
    return tuple(out)
