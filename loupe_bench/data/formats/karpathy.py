"""Karpathy caption JSON (``dataset_coco.json``, ``dataset_flickr30k.json``, the synthetic world's
``dataset_synthetic.json``) with an optional phrase sidecar (``phrases.json`` keyed by sentence id)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...errors import DataError
from ...utils.io import read_json
from ..records import Caption, DatasetRecords, ImageRecord, Phrase, tokenize
from .base import DATASETS, Loader, as_int, as_str, check_bbox, check_caption, image_size, require

KARPATHY_SPLITS = ("train", "restval", "val", "test", "comptest")


def parse_phrases(
    items: Any, text: str, file: Path, record: Any, width: Optional[int] = None, height: Optional[int] = None
) -> Tuple[Phrase, ...]:
    """Validate a list of ``{start, end, text, ann_id?, bbox?}`` against the caption text."""
    if not isinstance(items, list):
        raise DataError("phrases must be a list", file=str(file), record=record)
    out = []
    for p in items:
        start = as_int(require(p, "start", file, record), "phrase start", file, record)
        end = as_int(require(p, "end", file, record), "phrase end", file, record)
        if not 0 <= start < end <= len(text):
            raise DataError(
                f"phrase span [{start}, {end}) outside the caption (length {len(text)})", file=str(file), record=record
            )
        ptext = p.get("text", text[start:end])
        if ptext != text[start:end]:
            raise DataError(
                f"phrase text {ptext!r} differs from caption[{start}:{end}] = {text[start:end]!r}",
                file=str(file),
                record=record,
            )
        ann = p.get("ann_id")
        bbox = p.get("bbox")
        out.append(
            Phrase(
                start=start,
                end=end,
                text=ptext,
                ann_id=None if ann is None else as_int(ann, "ann_id", file, record),
                bbox=None if bbox is None else check_bbox(bbox, width, height, file, record),
            )
        )
    return tuple(out)


@DATASETS.register("karpathy")
class KarpathyLoader(Loader):
    """Karpathy caption JSON (Flickr30K / COCO / synthetic) + image root + optional phrases.json sidecar.

    Options:
        image_root: folder the ``filepath/filename`` of each image is relative to (default: the JSON's folder).
        phrases: path of the phrase sidecar (default: ``phrases.json`` beside the JSON when it exists;
            ``False`` to ignore it).
    """

    name = "karpathy"
    description = "Karpathy caption JSON (Flickr30K/COCO; image root; optional phrases.json sidecar)"
    known_splits = KARPATHY_SPLITS

    def _load(self) -> DatasetRecords:
        path = self.path
        if path.is_dir():
            found = sorted(path.glob("dataset_*.json"))
            if not found:
                raise DataError("no dataset_*.json in folder", file=str(path))
            path = found[0]
        data = read_json(path)
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, list):
            raise DataError("expected an object with an 'images' list (Karpathy layout)", file=str(path))
        root = Path(self.options.get("image_root") or path.parent)
        phrases = self._phrases(path)
        out = DatasetRecords(name=str(data.get("dataset", self.name)), source=str(path))
        seen_ids = set()
        for idx, im in enumerate(images):
            rec_id = f"image {im.get('cocoid', im.get('imgid', f'#{idx}')) if isinstance(im, dict) else f'#{idx}'}"
            ok, rec = self.guard(lambda: self._image(im, rec_id, root, path, phrases))
            if not ok or rec is None:
                continue
            if rec.image_id in seen_ids:
                self.bad(DataError("duplicate image id", file=str(path), record=f"image {rec.image_id}"))
                continue
            seen_ids.add(rec.image_id)
            out.images.append(rec)
        return out

    def _phrases(self, path: Path) -> Optional[Dict[str, Any]]:
        opt = self.options.get("phrases")
        if opt is False:
            return None
        side = Path(opt) if opt else path.parent / "phrases.json"
        if not opt and not side.is_file():
            return None
        data = read_json(side)
        if not isinstance(data, dict):
            raise DataError("phrase sidecar must map sentence id -> list of phrases", file=str(side))
        self._phrase_file = side
        return data

    def _image(
        self, im: Any, rec_id: Any, root: Path, path: Path, phrases: Optional[Dict[str, Any]]
    ) -> Optional[ImageRecord]:
        if not isinstance(im, dict):
            raise DataError("image entry is not an object", file=str(path), record=rec_id)
        image_id = as_int(im.get("cocoid", im.get("imgid")), "image id", path, rec_id)
        fname = as_str(require(im, "filename", path, rec_id), "filename", path, rec_id)
        split = self.check_split(require(im, "split", path, rec_id), path, rec_id)
        if self.split is not None and split != self.split:
            return None
        sub = as_str(im["filepath"], "filepath", path, rec_id) if im.get("filepath") else ""
        img_path = root / sub / fname
        width = height = None
        if self.verify_images:
            width, height = image_size(img_path, record=f"image {image_id}")
        sentences = require(im, "sentences", path, rec_id)
        if not isinstance(sentences, list):
            raise DataError("'sentences' is not a list", file=str(path), record=rec_id)
        captions: List[Caption] = []
        for k, s in enumerate(sentences):
            sid = s.get("sentid", f"{image_id}#{k}") if isinstance(s, dict) else f"{image_id}#{k}"
            ok, cap = self.guard(lambda: self._caption(s, sid, path, phrases, width, height))
            if ok:
                captions.append(cap)
        if not captions:
            raise DataError("image has no usable caption", file=str(path), record=rec_id)
        return ImageRecord(
            image_id=image_id,
            file_name=str(fname),
            path=img_path,
            split=split,
            width=width,
            height=height,
            captions=tuple(captions),
        )

    def _caption(self, s: Any, sid: Any, path: Path, phrases, width, height) -> Caption:
        if not isinstance(s, dict):
            raise DataError("sentence is not an object", file=str(path), record=f"sentence {sid}")
        raw = check_caption(s.get("raw"), path, f"sentence {sid}")
        tokens = s.get("tokens") or tokenize(raw)
        if not isinstance(tokens, list):
            raise DataError(f"'tokens' {tokens!r} is not a list", file=str(path), record=f"sentence {sid}")
        sent_id = as_int(s.get("sentid"), "sentid", path, f"sentence {sid}")
        plist: Tuple[Phrase, ...] = ()
        if phrases is not None and str(sent_id) in phrases:
            plist = parse_phrases(phrases[str(sent_id)], raw, self._phrase_file, f"sentence {sent_id}", width, height)
        return Caption(sent_id=sent_id, text=raw, tokens=tuple(str(t) for t in tokens), phrases=plist)
