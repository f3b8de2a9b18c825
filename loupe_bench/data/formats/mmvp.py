"""MMVP-VLM (Tong et al., "Eyes Wide Shut?", CVPR 2024; ``tsb0601/MMVP``): CLIP-blind image pairs in 9 visual
patterns.

Layout read (the Hugging Face data set ``MMVP/MMVP_VLM``, as MMVP's ``scripts/evaluate_vlm.py`` reads it):

    Questions.csv                       header ``Question ID,Type,Statement``, one row per image
    MLLM_VLM Images/<Type>/<Question ID>.jpg

Rows pair up in file order, as the script reads them: rows 1 and 2 form the first pair, rows 3 and 4 the second,
and so on; both images of a pair come from the first row's ``Type`` folder. The script takes the statement of
question ``q`` as describing image ``q`` (its ground truth is image 1 for an odd id, image 2 for an even one), so a
pair must be two consecutive ids ``2k - 1, 2k`` of one ``Type``; then statement ``i`` describes image ``i``. The
release has 135 pairs (270 rows), 15 per pattern, in 9 blocks; the script names the patterns by block position
(Orientation and Direction, Presence of Specific Features, State and Condition, Quantity and Count, Positional and
Relational Context, Color and Appearance, Structural Characteristics, Texts, Viewpoint and Perspective), this
loader by the ``Type`` value of the rows (the image folder names), which is the same grouping.

Each pair becomes one :class:`~loupe_bench.data.records.MatchGroup`: ``group_id`` ``"<id1>-<id2>"``, ``images``
the two files, ``texts`` the two raw statements (the task adds MMVP's ``"a photo of "`` prefix through its
``template`` option), ``kind`` the ``Type``. The file has no splits: every pair gets the split asked for.

A bad pair (a missing or non-integer id, ids that are not ``2k - 1, 2k``, two types, an empty statement, a type
that is not a plain folder name, a missing image, an unpaired last row) is one
:class:`~loupe_bench.errors.DataError` naming the CSV and its lines.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Tuple

from ...errors import DataError
from ..records import DatasetRecords, MatchGroup
from .base import DATASETS, Loader, as_int, check_caption, user_text
from .winoground import find_file, image_file, plain_name

#: the loader options naming the CSV columns, with MMVP-VLM's own names
MMVP_COLUMNS = {"id_column": "Question ID", "type_column": "Type", "statement_column": "Statement"}
Row = Tuple[int, Dict[str, str]]  # (last line of the row in the file, the row)


@DATASETS.register("mmvp-vlm")
class MmvpVlmLoader(Loader):
    """MMVP-VLM ``Questions.csv`` + ``MLLM_VLM Images/<Type>/<id>.jpg`` (see the module docstring).

    Options:
        image_root: the folder of the ``<Type>/`` image folders (default: ``MLLM_VLM Images/`` beside the CSV).
        id_column, type_column, statement_column: the CSV's column names (default ``Question ID``, ``Type``,
            ``Statement``).
        image_ext: the image files' extension (default ``.jpg``).
    """

    name = "mmvp-vlm"
    description = "MMVP-VLM Questions.csv (Question ID, Type, Statement; consecutive rows pair up) + MLLM_VLM Images/"

    def _load(self) -> DatasetRecords:
        path = find_file(self.path, "Questions.csv")
        root = Path(self.options.get("image_root") or path.parent / "MLLM_VLM Images")
        if not root.is_dir():
            raise DataError("image folder not found; MMVP-VLM expects 'MLLM_VLM Images/' beside Questions.csv",
                            file=str(root))
        cols = {k: str(self.options.get(k, v)) for k, v in MMVP_COLUMNS.items()}
        rows = self._rows(path, cols)
        out = DatasetRecords(name=self.name, source=str(path))
        for i in range(0, len(rows), 2):
            pair = rows[i : i + 2]
            ok, group = self.guard(lambda pair=pair: self._pair(pair, path, root, cols))
            if ok:
                out.groups.append(group)
        return out

    @staticmethod
    def _rows(path: Path, cols: Dict[str, str]) -> List[Row]:
        """The CSV's rows with the line each ends on; a missing column is fatal."""
        text = user_text(path, "annotation", "CSV file").lstrip("\ufeff")  # a byte-order mark is not a column name
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as exc:
            raise DataError(f"malformed CSV ({exc})", file=str(path)) from None
        missing = [c for c in cols.values() if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"CSV header lacks column(s) {', '.join(map(repr, missing))} (has "
                            f"{', '.join(map(repr, reader.fieldnames or ()))}); MMVP-VLM's are "
                            f"{', '.join(map(repr, MMVP_COLUMNS.values()))}", file=str(path))
        return rows

    def _pair(self, pair: List[Row], path: Path, root: Path, cols: Dict[str, str]) -> MatchGroup:
        """One pair of rows as a :class:`MatchGroup` (the checks of the module docstring)."""
        if len(pair) == 1:
            raise DataError("unpaired last row (MMVP-VLM rows come in pairs)", file=str(path),
                            record=f"line {pair[0][0]}")
        rec = f"lines {pair[0][0]}-{pair[1][0]}"
        ids = [as_int((row.get(cols["id_column"]) or "").strip(), cols["id_column"], path, rec) for _, row in pair]
        if ids[0] % 2 != 1 or ids[1] != ids[0] + 1:
            raise DataError(f"question ids {ids[0]}, {ids[1]} are not a pair 2k-1, 2k (statement i describes "
                            "image i only then)", file=str(path), record=rec)
        rec = f"{rec} (questions {ids[0]}, {ids[1]})"
        types = [(row.get(cols["type_column"]) or "").strip() for _, row in pair]
        if types[0] != types[1]:
            raise DataError(f"the two rows have different types {types[0]!r} and {types[1]!r}", file=str(path),
                            record=rec)
        folder = root / plain_name(types[0], cols["type_column"], path, rec)
        ext = str(self.options.get("image_ext", ".jpg"))
        texts = tuple(check_caption(row.get(cols["statement_column"]), path, rec) for _, row in pair)
        images = tuple(image_file(folder, f"{q}{ext}", path, rec, self.verify_images) for q in ids)
        return MatchGroup(group_id=f"{ids[0]}-{ids[1]}", images=images, texts=texts, kind=types[0],
                          split=self.split)
