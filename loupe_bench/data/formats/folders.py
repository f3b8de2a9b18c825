"""ImageFolder classification (``<root>/<split>/<class>/<file>`` + ``classnames.txt``) and the synthetic world
folder (all its formats merged into one set of records)."""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List

from ...errors import DataError
from ...utils.io import read_json
from ..records import ClassificationSample, DatasetRecords
from .base import DATASETS, Loader, image_size, user_text
from .coco import CocoLoader
from .karpathy import KarpathyLoader
from .refer import ReferLoader

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@DATASETS.register("imagefolder")
class ImageFolderLoader(Loader):
    """ImageFolder classification: <root>/<split>/<class>/<image> (or <root>/<class>/<image>) + classnames.txt.

    Labels index ``classnames.txt`` (one name per line) when present, else the sorted class folder names. When no
    folder is named after a class but their count matches (ImageNet wnids), label ``i`` is the ``i``-th folder in
    sorted order. Integer file stems become ``image_id``.
    """

    name = "imagefolder"
    description = "ImageFolder classification (<split>/<class>/<image>, classnames.txt)"

    def _load(self) -> DatasetRecords:
        root = self.path
        if not root.is_dir():
            raise DataError("not a folder", file=str(root))
        names_file = root / "classnames.txt"
        if not names_file.exists() and (root.parent / "classnames.txt").exists():
            names_file = root.parent / "classnames.txt"
        subdirs = sorted(p for p in root.iterdir() if p.is_dir())
        if names_file.exists():  # read only when regular: a FIFO or device is refused
            classnames = [ln.strip() for ln in user_text(names_file).splitlines() if ln.strip()]
        else:
            classnames = []
        if self.split is not None:
            split_dirs = {self.split: root / self.split}
            if not split_dirs[self.split].is_dir():
                raise DataError(f"no folder for split {self.split!r}", file=str(root / self.split))
        elif subdirs and classnames and all(p.name in classnames for p in subdirs):
            split_dirs = {None: root}
        elif subdirs and not classnames and all(any(c.is_file() for c in p.iterdir()) for p in subdirs):
            split_dirs = {None: root}
        else:
            split_dirs = {p.name: p for p in subdirs}
        if not classnames:
            found = set()
            for d in split_dirs.values():
                found.update(p.name for p in d.iterdir() if p.is_dir())
            classnames = sorted(found)
        index = {c: i for i, c in enumerate(classnames)}
        folders = sorted({p.name for d in split_dirs.values() for p in d.iterdir() if p.is_dir()})
        if folders and not any(f in index for f in folders) and len(folders) == len(classnames):
            # ImageNet style: folders are ids (n01440764 ...), classnames.txt holds readable names in sorted-folder
            # order (torchvision's label convention)
            index = {f: i for i, f in enumerate(folders)}
        out = DatasetRecords(name=self.name, source=str(root), classnames=classnames)
        for split, d in split_dirs.items():
            for cdir in sorted(p for p in d.iterdir() if p.is_dir()):
                if cdir.name not in index:
                    self.bad(DataError(f"class folder {cdir.name!r} is not in classnames.txt", file=str(cdir)))
                    continue
                for f in sorted(cdir.iterdir()):
                    if f.suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    if self.verify_images:
                        ok, _ = self.guard(lambda: image_size(f, record=f.stem))
                        if not ok:
                            continue
                    out.samples.append(
                        ClassificationSample(
                            path=f,
                            label=index[cdir.name],
                            image_id=int(f.stem) if f.stem.isdigit() else None,
                            split=split,
                        )
                    )
        return out


@DATASETS.register("synthetic")
class SyntheticWorldLoader(Loader):
    """The synthetic fine-grained world folder (loupe-bench data synth): captions, phrases, boxes, refs, labels.

    Reads ``dataset_synthetic.json`` + ``phrases.json`` (captions with gold phrase boxes), the COCO
    ``annotations/instances_<split>.json`` (boxes), ``refsynth/`` (referring expressions) and ``classification/``
    (labels) and merges them per image.
    """

    name = "synthetic"
    description = "the synthetic fine-grained world folder (all of its formats merged per image)"

    def _load(self) -> DatasetRecords:
        world = read_json(self.path / "world.json")
        kw = dict(split=self.split, on_bad_sample=self.on_bad_sample)
        sub: List[Loader] = []

        def run(loader: Loader) -> DatasetRecords:
            sub.append(loader)
            return loader.load()

        caps = run(KarpathyLoader(self.path / world["files"]["karpathy"], verify_images=self.verify_images, **kw))
        boxes: Dict[int, tuple] = {}
        categories: Dict[int, str] = {}
        for split, rel in sorted(world["files"]["coco"].items()):
            if self.split is not None and split != self.split:
                continue
            det = run(CocoLoader(self.path / rel, verify_images=False, on_bad_sample=self.on_bad_sample))
            categories.update(det.categories)
            for im in det.images:
                boxes[im.image_id] = im.boxes
        refs = run(ReferLoader(self.path / "refsynth", verify_images=False, **kw))
        cls = run(ImageFolderLoader(self.path / "classification", verify_images=False, **kw))
        labels = {s.image_id: s.label for s in cls.samples}
        out = DatasetRecords(
            name=self.name,
            source=str(self.path),
            images=[replace(im, boxes=boxes.get(im.image_id, ()), label=labels.get(im.image_id)) for im in caps.images],
            refs=refs.refs,
            samples=cls.samples,
            categories=categories or {c["id"]: c["name"] for c in world.get("categories", [])},
            classnames=list(world.get("classnames") or cls.classnames),
        )
        for loader in sub:
            self.skipped.extend(loader.skipped)
        return out
