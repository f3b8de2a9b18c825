"""SugarCrepe (Hsieh et al., 2023; ``RAIVNLab/sugar-crepe``): caption selection with hard negatives.

Layout read (the release's ``data/`` folder, as CLIP_benchmark 1.6.2's ``sugar_crepe`` builder and SugarCrepe's own
``main_eval.py`` read it): one JSON file per subset, ``add_obj.json``, ``add_att.json``, ``replace_obj.json``,
``replace_att.json``, ``replace_rel.json``, ``swap_obj.json``, ``swap_att.json``, each an object

    {"<id>": {"filename": "000000397133.jpg", "caption": "...", "negative_caption": "..."}, ...}

whose ids need not be contiguous. ``filename`` is relative to the COCO val2017 image folder (loader option
``image_root``). Each entry becomes one :class:`~loupe_bench.data.records.MatchGroup` with one image and the texts
``(caption, negative_caption)`` (the true caption first), ``kind`` and ``split`` the subset name (the file stem).

The loader's ``path`` is the folder of the JSONs (``split`` picks the subset file ``<split>.json``; no split: every
subset file present) or one subset file. Option ``split_by: folder``: the path is one split's folder and every
``*.json`` in it is a subset (the synthetic world's ``captionsel/<split>/``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...errors import DataError
from ...utils.io import read_json
from ..records import DatasetRecords, MatchGroup
from .base import DATASETS, Loader, as_str, check_caption, image_size, require, user_file

#: the subsets of the SugarCrepe release (file stems of its ``data/`` folder)
SUGARCREPE_SUBSETS = ("add_obj", "add_att", "replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")


def image_under_root(root: Path, name: Any, what: str, file: Path, record: Any,
                     verify: bool) -> Tuple[Path, Optional[Tuple[int, int]]]:
    """``(root / name, (width, height) or None)`` for an image file name read from an annotation file.

    The name must be a non-empty relative path that stays inside ``root``: an absolute name (``/x``, ``\\x``,
    ``C:x``) or one with a ``..`` component is refused, never joined. The image must be a regular file within the
    image size limit (``stat`` only); with ``verify`` it is also decoded in full and its size returned.

    Raises:
        DataError: naming the annotation ``file`` and ``record`` (a missing or unreadable image names the image and
            says which annotation file lists it).
    """
    name = as_str(name, what, file, record)
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise DataError(f"{what} {name!r} is absolute or leaves the image folder ('..'); refused", file=str(file),
                        record=record)
    path = root / name
    try:
        user_file(path, "image", "image file", record)
        return path, (image_size(path, record) if verify else None)
    except DataError as err:
        raise DataError(f"{err.message} (listed in {file})", file=err.file, record=record) from None


def default_image_root(folder: Path) -> Path:
    """``val2017/`` inside or beside the folder of the JSONs when it exists (CLIP_benchmark's layout), else the
    folder itself."""
    for cand in (folder / "val2017", folder.parent / "val2017"):
        if cand.is_dir():
            return cand
    return folder


@DATASETS.register("sugarcrepe")
class SugarCrepeLoader(Loader):
    """SugarCrepe subset JSONs (see the module docstring).

    Options:
        image_root: the folder ``filename`` is relative to (COCO ``val2017/``; default: ``val2017/`` inside or
            beside the JSON folder when it exists, else the JSON folder).
    """

    name = "sugarcrepe"
    description = "SugarCrepe subset JSONs ({id: {filename, caption, negative_caption}}) + COCO val2017 images"

    def _files(self) -> List[Path]:
        path = self.path
        if not path.is_dir():
            return [path]
        if self.split_by == "folder":  # every subset file of the split's folder
            found = sorted(f for f in path.glob("*.json") if f.is_file())
            if not found:
                raise DataError("no subset file (*.json) in the split's folder", file=str(path))
            return found
        if self.split is not None:
            f = path / f"{self.split}.json"
            if not f.exists():
                raise DataError(f"no file for subset {self.split!r} (SugarCrepe subsets: "
                                f"{', '.join(SUGARCREPE_SUBSETS)})", file=str(f))
            return [f]
        found = [path / f"{s}.json" for s in SUGARCREPE_SUBSETS if (path / f"{s}.json").exists()]
        if not found:
            raise DataError(f"no SugarCrepe subset file ({', '.join(s + '.json' for s in SUGARCREPE_SUBSETS)})",
                            file=str(path))
        return found

    @property
    def split_by(self) -> str:
        """``subset`` (SugarCrepe's release: a split is a subset file) or ``folder`` (the path is one split's folder
        of subset files, e.g. the synthetic world's ``captionsel/<split>/``: every item gets the split asked for)."""
        value = self.options.get("split_by", "subset")
        if value not in ("subset", "folder"):
            raise DataError(f"split_by must be 'subset' or 'folder', got {value!r}", file=str(self.path))
        return value

    def _load(self) -> DatasetRecords:
        folder = self.path if self.path.is_dir() else self.path.parent
        root = Path(self.options.get("image_root") or default_image_root(folder))
        out = DatasetRecords(name=self.name, source=str(self.path))
        for f in self._files():
            out.groups.extend(self._subset(f, root))
        return out

    def _subset(self, path: Path, root: Path) -> List[MatchGroup]:
        """The items of one subset file; a bad item is reported through :meth:`bad`."""
        data = read_json(path)
        if not isinstance(data, dict):
            raise DataError("expected an object {id: {filename, caption, negative_caption}} (SugarCrepe layout)",
                            file=str(path))
        subset = path.stem
        out: List[MatchGroup] = []
        for key, entry in data.items():
            ok, group = self.guard(lambda key=key, entry=entry: self._item(key, entry, subset, path, root))
            if ok:
                out.append(group)
        return out

    def _item(self, key: str, entry: Any, subset: str, path: Path, root: Path) -> MatchGroup:
        if not isinstance(entry, dict):
            raise DataError("entry is not an object", file=str(path), record=key)
        texts: Dict[str, str] = {}
        for field in ("caption", "negative_caption"):
            texts[field] = check_caption(as_str(require(entry, field, path, key), field, path, key), path, key)
        image, _ = image_under_root(root, require(entry, "filename", path, key), "filename", path, key,
                                    self.verify_images)
        split = subset if self.split_by == "subset" else self.split
        return MatchGroup(group_id=str(key), images=(image,), texts=(texts["caption"], texts["negative_caption"]),
                          kind=subset, split=split)
