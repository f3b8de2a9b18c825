"""RefCOCO / RefCOCO+ / RefCOCOg (``lichengunc/refer`` layout): ``instances.json`` + ``refs(<splitBy>).p``.

The refs file is a Python-2 pickle of plain lists/dicts. It is read with a restricted unpickler that refuses every
global (no code can run), first as UTF-8 and then with ``encoding="latin1"`` (Python-2 byte strings).
"""
from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...errors import DataError
from ..records import DatasetRecords, RefRecord
from .base import DATASETS, Loader, as_int, check_caption, require, user_bytes
from .coco import default_image_root, parse_instances

SPLIT_BYS = ("unc", "umd", "google")
REFER_SPLITS = ("train", "val", "test", "testA", "testB", "testC", "comptest")


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler for data-only pickles: any class or function reference is an error."""

    def find_class(self, module: str, name: str):  # noqa: D102
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (refs pickles hold plain data)")


def read_refs_pickle(path: Path) -> List[Dict[str, Any]]:
    """Read a refs pickle safely (Python 3; ``latin1`` fallback for Python-2 byte strings)."""
    blob = user_bytes(path)
    last: Optional[Exception] = None
    for encoding in ("ASCII", "latin1"):
        try:
            refs = _PlainUnpickler(io.BytesIO(blob), encoding=encoding).load()
            break
        except UnicodeDecodeError as exc:
            last = exc
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise DataError(f"unreadable refs pickle ({exc})", file=str(path)) from None
    else:
        raise DataError(f"unreadable refs pickle ({last})", file=str(path))
    if not isinstance(refs, list):
        raise DataError("refs pickle must hold a list of refs", file=str(path))
    return refs


def split_matches(wanted: str, split: str) -> bool:
    """``refer.getRefIds`` semantics: ``testA`` also matches a combined split such as ``testAB``."""
    if wanted == split:
        return True
    return wanted in ("testA", "testB", "testC") and split.startswith("test") and wanted[-1] in split[4:]


def _decode(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _claim_ids(ref_id: int, sents: Any, seen: Dict[str, Dict[int, int]], idx: int, path: Path, rec: str) -> None:
    """Record ``ref_id`` and the sentence ids of the ref at list position ``idx`` as taken (whatever the split);
    an id that an earlier ref (or an earlier sentence of this one) holds is a :class:`DataError` naming both
    positions. Every ref and every sentence is one query of the metric and one unit of its bootstrap, so a
    repeated one would count twice and narrow the interval."""
    sids = []
    for k, s in enumerate(sents if isinstance(sents, list) else []):
        s = {_decode(a): b for a, b in s.items()} if isinstance(s, dict) else {}
        if "sent_id" in s:
            sids.append(as_int(s["sent_id"], "sent_id", path, f"{rec} sentence {k}"))
    for what, ids in (("ref_id", [ref_id]), ("sent_id", sids)):
        for i in ids:
            if i in seen[what]:
                raise DataError(f"duplicate {what} {i} (refs list entries {seen[what][i]} and {idx})",
                                file=str(path), record=rec)
            seen[what][i] = idx


@DATASETS.register("refer")
class ReferLoader(Loader):
    """RefCOCO/RefCOCO+/RefCOCOg refs pickle + instances.json (splitBy unc, umd, google).

    ``path`` is the data set folder (``data/refcoco``). Options:
        split_by: ``unc``, ``umd`` or ``google`` (default: the only/first ``refs(*).p`` present).
        image_root: folder of the images (default: ``../images`` when it exists).
        instances: path of the instances file (default: ``instances.json`` in the folder).
    Splits ``testA``/``testB`` also match the combined ``testAB`` etc. as in ``refer.getRefIds``.
    """

    name = "refer"
    description = "RefCOCO/RefCOCO+/RefCOCOg refs(<splitBy>).p + instances.json (unc, umd, google)"
    known_splits = REFER_SPLITS

    def check_split(self, split: Any, file, record: Any) -> str:
        if isinstance(split, str) and re.fullmatch(r"test[A-C]{2,3}", split):
            return split
        return super().check_split(split, file, record)

    def _load(self) -> DatasetRecords:
        root = self.path if self.path.is_dir() else self.path.parent
        split_by = self.options.get("split_by")
        if split_by is not None and split_by not in SPLIT_BYS:
            raise DataError(f"unknown splitBy {split_by!r} (known: {', '.join(SPLIT_BYS)})", file=str(root))
        if self.path.is_file():
            refs_path = self.path
        elif split_by:
            refs_path = root / f"refs({split_by}).p"
        else:
            found = sorted(root.glob("refs(*).p"))
            if not found:
                raise DataError("no refs(<splitBy>).p in folder", file=str(root))
            refs_path = found[0]
        inst_path = Path(self.options.get("instances") or root / "instances.json")
        image_root = Path(self.options.get("image_root") or default_image_root(inst_path))
        out = parse_instances(self, inst_path, image_root, None)
        out.name = self.name
        out.source = str(refs_path)
        images = {r.image_id: r for r in out.images}
        anns = {b.ann_id: b for r in out.images for b in r.boxes}
        raw = read_refs_pickle(refs_path)
        seen: Dict[str, Dict[int, int]] = {"ref_id": {}, "sent_id": {}}
        for idx, ref in enumerate(raw):
            rec = f"ref {ref.get('ref_id', '#' + str(idx)) if isinstance(ref, dict) else '#' + str(idx)}"
            ok, r = self.guard(lambda: self._ref(ref, rec, refs_path, images, anns, (seen, idx)))
            if ok and r is not None:
                out.refs.append(r)
        keep = {r.image_id for r in out.refs}
        if self.split is not None:
            out.images = [im for im in out.images if im.image_id in keep]
        return out

    def _ref(self, ref: Any, rec: str, path: Path, images, anns, seen: Tuple[Dict[str, Dict[int, int]], int]
             ) -> Optional[RefRecord]:
        if not isinstance(ref, dict):
            raise DataError("ref is not a dict", file=str(path), record=rec)
        ref = {_decode(k): v for k, v in ref.items()}
        ref_id = as_int(require(ref, "ref_id", path, rec), "ref_id", path, rec)
        _claim_ids(ref_id, ref.get("sentences"), *seen, path, rec)
        split = self.check_split(_decode(require(ref, "split", path, rec)), path, rec)
        if self.split is not None and not split_matches(self.split, split):
            return None
        ann_id = as_int(require(ref, "ann_id", path, rec), "ann_id", path, rec)
        image_id = as_int(require(ref, "image_id", path, rec), "image_id", path, rec)
        if image_id in getattr(self, "dropped_image_ids", ()):
            return None  # its image was skipped as bad (already reported)
        if image_id not in images:
            raise DataError(f"points at unknown image id {image_id}", file=str(path), record=rec)
        if ann_id not in anns:
            raise DataError(f"points at unknown annotation id {ann_id}", file=str(path), record=rec)
        if anns[ann_id].image_id != image_id:
            raise DataError(f"annotation {ann_id} belongs to another image", file=str(path), record=rec)
        sents = require(ref, "sentences", path, rec)
        if not isinstance(sents, list) or not sents:
            raise DataError("no sentences", file=str(path), record=rec)
        texts, sids, heads = [], [], []
        for k, s in enumerate(sents):
            s = {_decode(a): _decode(b) for a, b in s.items()} if isinstance(s, dict) else {}
            texts.append(check_caption(s.get("sent", s.get("raw")), path, f"{rec} sentence {k}"))
            if "sent_id" in s:
                sids.append(as_int(s["sent_id"], "sent_id", path, rec))
            head = s.get("head")   # not in the refer release; the synthetic world records each head noun phrase
            if head is not None and (not isinstance(head, str) or head not in texts[-1]):
                raise DataError("'head' must be a substring of its sentence", file=str(path), record=f"{rec} sentence {k}")
            heads.append(head)
        cat = ref.get("category_id", anns[ann_id].category_id)
        return RefRecord(
            ref_id=ref_id,
            ann_id=ann_id,
            image_id=image_id,
            split=split,
            sentences=tuple(texts),
            category_id=as_int(cat, "category_id", path, rec),
            bbox=anns[ann_id].bbox,
            file_name=_decode(ref.get("file_name")),
            sent_ids=tuple(sids),
            heads=tuple(heads) if any(h is not None for h in heads) else (),
        )
