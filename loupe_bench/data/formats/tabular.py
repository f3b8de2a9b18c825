"""CSV (``filepath,caption`` rows, one caption per row) and Hugging Face ``datasets`` (``load_from_disk`` or a hub
name when online)."""
from __future__ import annotations

import csv
import io
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Optional

from ...errors import DataError
from ..records import Caption, DatasetRecords, ImageRecord, tokenize
from .base import DATASETS, Loader, as_int, check_caption, image_size, image_size_from_bytes, user_text
from .karpathy import KARPATHY_SPLITS


@DATASETS.register("csv")
class CsvLoader(Loader):
    """CSV with a header ``filepath,caption`` (optional ``image_id``, ``split``, ``sent_id``); rows of the same
    image are grouped in order.

    Options:
        image_root: folder ``filepath`` is relative to (default: the CSV's folder).
        delimiter: field separator (default ``,``; use ``\\t`` for TSV).
        img_key, caption_key: column names (default ``filepath`` and ``caption``, as open_clip).
    """

    name = "csv"
    description = "CSV/TSV of filepath,caption rows (open_clip style; optional image_id, split, sent_id)"
    known_splits = KARPATHY_SPLITS

    def _load(self) -> DatasetRecords:
        path = self.path
        root = Path(self.options.get("image_root") or path.parent)
        img_key = self.options.get("img_key", "filepath")
        cap_key = self.options.get("caption_key", "caption")
        text = user_text(path)
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=self.options.get("delimiter", ","))
            rows = list(reader)
        except csv.Error as exc:
            raise DataError(f"malformed CSV ({exc})", file=str(path)) from None
        if img_key not in (reader.fieldnames or ()) or cap_key not in (reader.fieldnames or ()):
            raise DataError(f"CSV header must name columns {img_key!r} and {cap_key!r}", file=str(path))
        groups: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
        bad_images = set()
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            rec = f"line {line}"

            def parse(row=row, rec=rec, line=line):
                fp = (row.get(img_key) or "").strip()
                if not fp:
                    raise DataError("empty filepath", file=str(path), record=rec)
                text = check_caption(row.get(cap_key), path, rec)
                split = row.get("split") or None
                if split is not None:
                    split = self.check_split(split, path, rec)
                g = groups.get(fp)
                if g is None:
                    iid = row.get("image_id")
                    g = {
                        "image_id": as_int(iid, "image_id", path, rec) if iid not in (None, "") else len(groups) + 1,
                        "split": split,
                        "captions": [],
                    }
                sid = row.get("sent_id")
                sid = as_int(sid, "sent_id", path, rec) if sid not in (None, "") else line - 2
                g["captions"].append(Caption(sent_id=sid, text=text, tokens=tuple(tokenize(text))))
                groups[fp] = g

            self.guard(parse)
        out = DatasetRecords(name=self.name, source=str(path))
        for fp, g in groups.items():
            if self.split is not None and g["split"] != self.split:
                continue
            ipath = root / fp
            width = height = None
            if self.verify_images:
                ok, size = self.guard(lambda: image_size(ipath, record=fp))
                if not ok:
                    continue
                width, height = size
            out.images.append(
                ImageRecord(
                    image_id=g["image_id"],
                    file_name=fp,
                    path=ipath,
                    split=g["split"],
                    width=width,
                    height=height,
                    captions=tuple(g["captions"]),
                )
            )
        return out


@DATASETS.register("hf")
class HuggingFaceLoader(Loader):
    """Hugging Face ``datasets``: a folder saved with ``save_to_disk`` (Dataset or DatasetDict), or a hub name.

    Columns: ``image`` (Image feature) or ``filepath``; ``captions`` (list) or ``caption``; optional ``image_id``,
    ``sent_ids``. The split is the DatasetDict key (or a ``split`` column). A hub name is used only when ``path`` is
    not a local folder; offline, that is a clear :class:`DataError`.
    """

    name = "hf"
    description = "Hugging Face datasets (load_from_disk folder, or a hub name when online)"

    def _load(self) -> DatasetRecords:
        import datasets

        if self.path.exists():
            try:
                ds = datasets.load_from_disk(str(self.path))
            except (FileNotFoundError, ValueError, OSError) as exc:
                raise DataError(f"not a saved Hugging Face dataset ({exc})", file=str(self.path)) from None
        else:
            try:
                ds = datasets.load_dataset(str(self.path), split=self.split)
            except Exception as exc:  # the hub raises many types (offline, not found, gated)
                raise DataError(f"cannot load Hugging Face dataset ({type(exc).__name__}: {exc})".splitlines()[0], file=str(self.path)) from None
        parts = dict(ds) if isinstance(ds, datasets.DatasetDict) else {self.split: ds}
        out = DatasetRecords(name=self.name, source=str(self.path))
        next_sid = 0
        for split, d in parts.items():
            if self.split is not None and split is not None and split != self.split:
                continue
            if "image" in d.column_names:
                d = d.cast_column("image", datasets.Image(decode=False))
            for idx, row in enumerate(d):
                rec = f"{split}[{idx}]"
                ok, got = self.guard(lambda: self._row(row, rec, split, next_sid, idx))
                if ok:
                    out.images.append(got)
                    next_sid = max(next_sid, max(c.sent_id for c in got.captions) + 1)
        return out

    def _row(self, row: Dict[str, Any], rec: str, split: Optional[str], next_sid: int, idx: int) -> ImageRecord:
        src = str(self.path)
        caps = row.get("captions")
        if caps is None and row.get("caption") is not None:
            caps = [row["caption"]]
        if not caps:
            raise DataError("row has no caption", file=src, record=rec)
        sids = row.get("sent_ids") or list(range(next_sid, next_sid + len(caps)))
        captions = tuple(
            Caption(sent_id=int(s), text=check_caption(t, src, f"{rec} caption {s}"), tokens=tuple(tokenize(t or "")))
            for t, s in zip(caps, sids)
        )
        width = height = None
        img = row.get("image")
        if img is not None:
            fname = row.get("file_name") or img.get("path") or f"{idx}"
            ipath = Path(img.get("path") or fname)
            if self.verify_images:
                if img.get("bytes") is not None:
                    width, height = image_size_from_bytes(img["bytes"], file=src, record=rec)
                else:
                    width, height = image_size(ipath, record=rec)
        elif row.get("filepath"):
            fname = row["filepath"]
            ipath = Path(self.options.get("image_root") or self.path) / fname
            if self.verify_images:
                width, height = image_size(ipath, record=rec)
        else:
            raise DataError("row has neither 'image' nor 'filepath'", file=src, record=rec)
        return ImageRecord(
            image_id=as_int(row.get("image_id", idx), "image_id", src, rec),
            file_name=str(fname),
            path=ipath,
            split=row.get("split", split),
            width=width,
            height=height,
            captions=captions,
        )
