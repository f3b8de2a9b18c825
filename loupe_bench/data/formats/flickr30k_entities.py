"""Flickr30K Entities (Plummer et al., https://github.com/BryanPlummer/flickr30k_entities): captions whose noun
phrases are linked to entities, and each entity's boxes.

Layout of the root folder::

    Sentences/<image_id>.txt     one caption per line, phrases marked  [/EN#<entity id>/<type>[/<type>...] words]
    Annotations/<image_id>.xml   PASCAL-VOC-like: <size>, then <object>s with one or more <name> (entity ids) and
                                 either a <bndbox> or <nobndbox>1</nobndbox> (and a <scene> flag)
    train.txt, val.txt, test.txt image ids, one per line (the synthetic world adds comptest.txt)
    types.txt                    optional (not in the official release): the phrase types in category order

Images live in a separate folder (option ``image_root``; default ``<root>/../flickr30k-images``), named
``<image_id>.jpg``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...errors import DataError
from ..records import BBox, BoxAnnotation, Caption, DatasetRecords, ImageRecord, Phrase, tokenize
from .base import DATASETS, Loader, as_int, check_bbox, check_caption, image_size, read_xml, user_file, user_text
from .voc import _num, voc_to_xywh

#: the phrase types of the official release, in category order (category id = index + 1)
ENTITY_TYPES: Tuple[str, ...] = (
    "people", "clothing", "bodyparts", "animals", "vehicles", "instruments", "scene", "other", "notvisual",
)  # fmt: skip
#: split files looked for (``<root>/<name>.txt``) when no split is asked for, in this order
SPLIT_FILES: Tuple[str, ...] = ("train", "val", "test", "comptest")
#: category id of the boxes of an entity that no phrase of its image mentions (so it has no type)
UNTYPED = 0
#: ``sent_id = image_id * SENT_STRIDE + k`` for the ``k``-th (0-based) non-empty line of ``Sentences/<id>.txt``
SENT_STRIDE = 100
#: why a phrase has no box (the keys of ``DatasetRecords.notes["phrases_without_box"]``)
NO_BOX_REASONS: Tuple[str, ...] = ("notvisual", "scene", "nobndbox", "unannotated")

_HEADER = re.compile(r"/EN#(?P<id>[0-9]+)(?P<types>(?:/[^/\s\[\]]+)+)")

EntitySpan = Tuple[int, int, int, Tuple[str, ...]]  # start, end, entity id, types


def parse_entity_sentence(line: str) -> Tuple[str, List[EntitySpan]]:
    """Split one ``Sentences/<id>.txt`` line into the clean caption and its phrase spans.

    Grammar: a phrase is ``[`` HEADER WHITESPACE WORDS ``]`` where HEADER is ``/EN#<digits>`` followed by one or
    more ``/<type>`` (a type: one or more characters other than ``/``, ``[``, ``]`` and whitespace), e.g.
    ``[/EN#5/people/other two men]``. Phrases do not nest, and every ``[`` opens a phrase and every ``]`` closes
    one. The caption text is the line (surrounding whitespace stripped) with each ``[`` HEADER WHITESPACE and each
    closing ``]`` removed; everything else is kept verbatim. A phrase's span covers its words without trailing
    whitespace, so ``text[start:end]`` is the phrase.

    Returns:
        ``(text, [(start, end, entity_id, types), ...])`` in order of appearance.

    Raises:
        ValueError: malformed markup (the message names the column, 1-based, in the stripped line).
    """
    line = line.strip()
    pieces: List[str] = []
    spans: List[EntitySpan] = []
    length = 0
    i, n = 0, len(line)
    while i < n:
        opened, closed = line.find("[", i), line.find("]", i)
        if closed != -1 and (opened == -1 or closed < opened):
            raise ValueError(f"']' at column {closed + 1} closes no phrase")
        if opened == -1:
            pieces.append(line[i:])
            length += n - i
            break
        pieces.append(line[i:opened])
        length += opened - i
        head_end = opened + 1
        while head_end < n and not line[head_end].isspace() and line[head_end] not in "[]":
            head_end += 1
        m = _HEADER.fullmatch(line, opened + 1, head_end)
        if m is None:
            raise ValueError(
                f"phrase markup {line[opened:head_end + 1]!r} at column {opened + 1} is not '[/EN#<id>/<type> words]'"
            )
        words = head_end
        while words < n and line[words].isspace():
            words += 1
        close = line.find("]", words)
        nested = line.find("[", words)
        if close == -1:
            raise ValueError(f"phrase opened at column {opened + 1} is never closed (no ']')")
        if nested != -1 and nested < close:
            raise ValueError(f"'[' at column {nested + 1} inside the phrase opened at column {opened + 1} (nesting)")
        if words == head_end or not line[words:close].strip():
            raise ValueError(f"phrase at column {opened + 1} has no words")
        body = line[words:close]
        start = length
        pieces.append(body)
        length += len(body)
        types = tuple(m.group("types").split("/")[1:])
        spans.append((start, start + len(body.rstrip()), int(m.group("id")), types))
        i = close + 1
    return "".join(pieces), spans


def _read_lines(path: Path, record: Any) -> List[str]:
    """The lines of a UTF-8 text file: a regular file within the annotation size limit (a :class:`DataError`
    naming the file otherwise, or when it is not UTF-8)."""
    return user_text(path, record=record).splitlines()


@DATASETS.register("flickr30k-entities")
class Flickr30kEntitiesLoader(Loader):
    """Flickr30K Entities (Sentences/, Annotations/, <split>.txt): captions with phrase -> entity box(es).

    Options:
        image_root: folder of ``<image_id>.jpg`` (default ``<root>/../flickr30k-images``).
        sentences_dir, annotations_dir: folder names under the root (default ``Sentences``, ``Annotations``).
        types: phrase type names in category order; default ``types.txt`` in the root when present, else
            :data:`ENTITY_TYPES`.

    Records (one :class:`ImageRecord` per image id of the split files, in split-file order):

    * ``image_id``: the integer value of the id in the split file (``000042`` -> 42); ``file_name`` ``<id>.jpg``;
      ``split``: the split file's name (``train``, ``val``, ``test``, ``comptest``).
    * ``captions``: one :class:`Caption` per non-empty line of ``Sentences/<id>.txt`` (grammar:
      :func:`parse_entity_sentence`), ``sent_id = image_id * 100 + k`` (``k``: the 0-based index of the non-empty
      line), ``text`` without markup, ``tokens`` :func:`tokenize`. Each phrase is ``Phrase(start, end, text,
      ann_id=<entity id>, bbox=<xywh of the entity's first box, or None>)``.
    * ``boxes``: one :class:`BoxAnnotation` per (entity id, box), in ``<object>`` order; ``ann_id`` is the entity
      id (unique within the image only; an entity with several boxes gives several boxes with the same ann_id),
      ``category_id`` the index + 1 in the type list of the first type of the first phrase (in caption order)
      that mentions the entity, :data:`UNTYPED` (0, category ``"untyped"``) when no phrase does.
    * ``categories``: category id -> type name (the whole type list; plus ``0: "untyped"`` when used).
    * ``notes``: ``phrases`` (count), ``phrases_with_box`` and ``phrases_without_box``: reason -> count, reasons
      :data:`NO_BOX_REASONS` (first that applies: type ``notvisual``; entity flagged ``<scene>``; flagged
      ``<nobndbox>``; entity absent from the XML).
    """

    name = "flickr30k-entities"
    description = "Flickr30K Entities (Sentences/ phrase markup, Annotations/ entity boxes, <split>.txt)"

    # -- layout ----------------------------------------------------------------------------------------------------
    def _types(self) -> List[str]:
        opt = self.options.get("types")
        if opt:
            return [str(t) for t in opt]
        txt = self.path / "types.txt"
        if txt.is_file():
            return [ln.strip() for ln in _read_lines(txt, None) if ln.strip()]
        return list(ENTITY_TYPES)

    def _split_files(self) -> List[Tuple[str, Path]]:
        if self.split is not None:
            f = self.path / f"{self.split}.txt"
            if not f.is_file():
                raise DataError(f"no split file for split {self.split!r}", file=str(f))
            return [(self.split, f)]
        found = [(s, self.path / f"{s}.txt") for s in SPLIT_FILES if (self.path / f"{s}.txt").is_file()]
        if not found:
            raise DataError(f"no split file ({', '.join(s + '.txt' for s in SPLIT_FILES)})", file=str(self.path))
        return found

    def _image_ids(self) -> List[Tuple[str, str, Path, int]]:
        """``(stem, split, split file, line number)`` of every listed image; bad or repeated lines reported."""
        out, seen = [], set()
        for split, f in self._split_files():
            for lineno, ln in enumerate(_read_lines(f, None), start=1):
                stem = ln.strip()
                if not stem:
                    continue
                if not stem.isdigit():
                    self.bad(DataError(f"image id {stem!r} is not a number", file=str(f), record=f"line {lineno}"))
                elif stem in seen:
                    self.bad(DataError(f"image id {stem} is listed twice", file=str(f), record=f"line {lineno}"))
                else:
                    seen.add(stem)
                    out.append((stem, split, f, lineno))
        return out

    def _load(self) -> DatasetRecords:
        if not self.path.is_dir():
            raise DataError("not a folder (Flickr30K Entities root)", file=str(self.path))
        self._sent_dir = self.path / self.options.get("sentences_dir", "Sentences")
        self._ann_dir = self.path / self.options.get("annotations_dir", "Annotations")
        for d in (self._sent_dir, self._ann_dir):
            if not d.is_dir():
                raise DataError(f"no {d.name}/ folder (Flickr30K Entities layout)", file=str(d))
        opt_root = self.options.get("image_root")
        self._image_root = Path(opt_root) if opt_root else self.path.parent / "flickr30k-images"
        types = self._types()
        self._cat_ids = {t: k + 1 for k, t in enumerate(types)}
        out = DatasetRecords(name=self.name, source=str(self.path), categories={k + 1: t for k, t in enumerate(types)})
        self._no_box = {r: 0 for r in NO_BOX_REASONS}
        self._with_box = 0
        for stem, split, f, lineno in self._image_ids():
            ok, rec = self.guard(lambda: self._image(stem, split, f, lineno))
            if ok:
                out.images.append(rec)
                if any(b.category_id == UNTYPED for b in rec.boxes):
                    out.categories[UNTYPED] = "untyped"
        out.notes = {
            "phrases": self._with_box + sum(self._no_box.values()),
            "phrases_with_box": self._with_box,
            "phrases_without_box": dict(self._no_box),
        }
        return out

    # -- one image -------------------------------------------------------------------------------------------------
    def _image(self, stem: str, split: str, split_file: Path, lineno: int) -> ImageRecord:
        image_id = int(stem)
        sent_file, xml_file = self._sent_dir / f"{stem}.txt", self._ann_dir / f"{stem}.xml"
        for f in (xml_file, sent_file):
            if not f.exists():
                raise DataError(f"missing file for the image listed in {split_file.name} line {lineno}", file=str(f),
                                record=f"image {stem}")
            user_file(f, "annotation", record=f"image {stem}")  # a FIFO or device is refused, never read
        width, height, order, flags = self._annotations(xml_file)
        boxes: Dict[int, List[BBox]] = {}
        for eid, box in order:
            boxes.setdefault(eid, []).append(box)
        fname = f"{stem}.jpg"
        ipath = self._image_root / fname
        if self.verify_images:
            rw, rh = image_size(ipath, record=f"image {stem}")
            if (width is not None and width != rw) or (height is not None and height != rh):
                raise DataError(f"recorded size {width}x{height} differs from the image file's {rw}x{rh}",
                                file=str(xml_file), record="size")
            width, height = rw, rh
        captions, entity_type, no_box = self._captions(sent_file, image_id, boxes, flags)
        if not captions:
            raise DataError("image has no usable caption", file=str(sent_file), record=f"image {stem}")
        for reason, count in no_box.items():
            self._no_box[reason] += count
        self._with_box += sum(1 for c in captions for p in c.phrases if p.bbox is not None)
        anns = [
            BoxAnnotation(
                ann_id=eid,
                image_id=image_id,
                category_id=self._cat_ids[entity_type[eid]] if eid in entity_type else UNTYPED,
                bbox=box,
                area=box[2] * box[3],
            )
            for eid, box in order
        ]
        return ImageRecord(image_id=image_id, file_name=fname, path=ipath, split=split, width=width, height=height,
                           captions=tuple(captions), boxes=tuple(anns))

    def _annotations(self, xml_file: Path) -> Tuple[Optional[int], Optional[int], List[Tuple[int, BBox]], Dict[int, str]]:
        """Read ``Annotations/<id>.xml``: size, ``(entity id, box)`` pairs in document order, and the no-box flag
        of each entity that has no box.

        Coordinate convention (as in PASCAL VOC and the official ``flickr30k_entities_utils.py``, which subtracts 1
        from every corner): ``xmin``, ``ymin``, ``xmax``, ``ymax`` are 1-based inclusive pixel corners, so the box
        is ``x = xmin - 1``, ``y = ymin - 1``, ``w = xmax - xmin + 1``, ``h = ymax - ymin + 1`` (pixel xywh,
        :func:`~loupe_bench.data.formats.voc.voc_to_xywh`); it must lie inside ``<size>`` within
        :data:`~loupe_bench.data.formats.base.BOX_TOLERANCE`. An ``<object>`` with several ``<name>``\\ s gives its
        box to each of those entities. An object without ``<bndbox>`` must have ``<nobndbox>`` or ``<scene>``
        (integers); the entity is then flagged ``scene`` (``<scene>`` > 0) or ``nobndbox``. An entity that has a
        box anywhere is not flagged. Record names: ``size``, ``object <k>`` (0-based ``<object>`` index).
        """
        root = read_xml(xml_file, record=f"image {xml_file.stem}")
        size = root.find("size")
        width = int(_num(size, "width", xml_file, "size")) if size is not None else None
        height = int(_num(size, "height", xml_file, "size")) if size is not None else None
        flags: Dict[int, str] = {}
        order: List[Tuple[int, BBox]] = []
        for k, obj in enumerate(root.findall("object")):
            rec = f"object {k}"
            names = [(el.text or "").strip() for el in obj.findall("name")]
            if not names:
                raise DataError("object has no <name> (entity id)", file=str(xml_file), record=rec)
            bad = [v for v in names if not v.isdigit()]
            if bad:
                raise DataError(f"entity id {bad[0]!r} in <name> is not a number", file=str(xml_file), record=rec)
            eids = [int(v) for v in names]
            bb = obj.find("bndbox")
            if bb is not None:
                corners = [_num(bb, t, xml_file, rec) for t in ("xmin", "ymin", "xmax", "ymax")]
                box = check_bbox(voc_to_xywh(*corners), width, height, xml_file, rec)
                order.extend((eid, box) for eid in eids)
                continue
            marks = {t: obj.findtext(t) for t in ("nobndbox", "scene")}
            if all(v is None for v in marks.values()):
                raise DataError("object has neither <bndbox> nor <nobndbox>", file=str(xml_file), record=rec)
            scene = as_int((marks["scene"] or "0").strip(), "<scene>", xml_file, rec)
            as_int((marks["nobndbox"] or "0").strip(), "<nobndbox>", xml_file, rec)
            for eid in eids:
                flags.setdefault(eid, "scene" if scene > 0 else "nobndbox")
        boxed = {eid for eid, _ in order}
        return width, height, order, {e: r for e, r in flags.items() if e not in boxed}

    def _captions(
        self, sent_file: Path, image_id: int, boxes: Dict[int, List[BBox]], flags: Dict[int, str]
    ) -> Tuple[List[Caption], Dict[int, str], Dict[str, int]]:
        """Parse every non-empty line (a bad line is reported and skipped); record name ``line <n>`` (1-based)."""
        captions: List[Caption] = []
        entity_type: Dict[int, str] = {}
        no_box = {r: 0 for r in NO_BOX_REASONS}
        lines = [(n, ln) for n, ln in enumerate(_read_lines(sent_file, f"image {image_id}"), start=1) if ln.strip()]
        if len(lines) > SENT_STRIDE:
            raise DataError(f"more than {SENT_STRIDE} captions", file=str(sent_file), record=f"image {image_id}")
        for k, (lineno, ln) in enumerate(lines):
            ok, got = self.guard(lambda: self._caption(ln, sent_file, f"line {lineno}", image_id * SENT_STRIDE + k, boxes))
            if not ok:
                continue
            cap, spans = got
            captions.append(cap)
            for (_, _, eid, types), phrase in zip(spans, cap.phrases):
                entity_type.setdefault(eid, types[0])
                if phrase.bbox is None:
                    no_box[self._no_box_reason(types, flags.get(eid))] += 1
        return captions, entity_type, no_box

    @staticmethod
    def _no_box_reason(types: Sequence[str], flag: Optional[str]) -> str:
        """The first of :data:`NO_BOX_REASONS` that applies to a phrase without a box."""
        return "notvisual" if "notvisual" in types else (flag or "unannotated")

    def _caption(self, line: str, sent_file: Path, rec: str, sent_id: int, boxes: Dict[int, List[BBox]]):
        try:
            text, spans = parse_entity_sentence(line)
        except ValueError as exc:
            raise DataError(f"malformed phrase markup: {exc}", file=str(sent_file), record=rec) from None
        check_caption(text, sent_file, rec)
        for _, _, _, types in spans:
            unknown = [t for t in types if t not in self._cat_ids]
            if unknown:
                raise DataError(f"unknown phrase type {unknown[0]!r} (known: {', '.join(self._cat_ids)}; list the "
                                "types in types.txt or the 'types' option)", file=str(sent_file), record=rec)
        phrases = tuple(
            Phrase(start=s, end=e, text=text[s:e], ann_id=eid, bbox=boxes[eid][0] if eid in boxes else None)
            for s, e, eid, _ in spans
        )
        return Caption(sent_id=sent_id, text=text, tokens=tuple(tokenize(text)), phrases=phrases), spans
