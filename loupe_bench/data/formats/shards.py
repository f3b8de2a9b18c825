"""webdataset tar shards: ``<key>.jpg`` (or .png/.jpeg) + ``<key>.json`` ({"captions", "phrases", "image_id"})
or ``<key>.txt`` (one caption). Local paths, folders of ``*.tar`` and brace patterns (``train-{000000..000003}.tar``)."""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ...errors import DataError
from ..records import Caption, DatasetRecords, ImageRecord, tokenize
from .base import DATASETS, Loader, as_int, check_caption, image_size_from_bytes
from .karpathy import KARPATHY_SPLITS, parse_phrases

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def expand_shards(spec: Any) -> List[Path]:
    """Shard list from a file, a folder (its ``*.tar``, sorted), a brace pattern or a list of those."""
    if isinstance(spec, (list, tuple)):
        return [p for s in spec for p in expand_shards(s)]
    text = str(spec)
    if "{" in text:
        from braceexpand import braceexpand

        return [Path(p) for p in braceexpand(text)]
    path = Path(text)
    if path.is_dir():
        found = sorted(path.glob("*.tar"))
        if not found:
            raise DataError("no *.tar shards in folder", file=str(path))
        return found
    return [path]


#: ``scheme:`` prefixes webdataset opens itself (``pipe:`` runs a shell command); see :func:`shard_url`
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def is_remote_shard(name: Any) -> bool:
    """Whether a shard name is a URL / ``pipe:`` command rather than a local file.

    Rule: a name that is an existing local file (whatever characters it holds, ``pipe:touch X;cat s.tar`` included)
    is a local file; otherwise a name starting with ``scheme:`` (``pipe:``, ``http:``, ``https:``, ``s3:`` ...) is
    remote. Remote names are only ever handed to webdataset when the user opts in (``--allow-remote-shards``).
    """
    text = str(name)
    return not Path(text).is_file() and bool(_URL_SCHEME.match(text))


def shard_url(name: Any, allow_remote: bool = False) -> str:
    """The name a shard is opened by: a local file as its resolved absolute path (never a string webdataset could
    read as ``pipe:``); a remote name only when ``allow_remote`` (else a :class:`DataError`)."""
    if is_remote_shard(name):
        if not allow_remote:
            raise DataError("shard name is a URL or pipe: command; refusing to open it (pass --allow-remote-shards "
                            "to let webdataset fetch it)", file=str(name))
        return str(name)
    return str(Path(str(name)).resolve())


def _open_tar(shard: Any, allow_remote: bool) -> tarfile.TarFile:
    """A local shard with :mod:`tarfile` by path; a remote one (opt-in only) as a stream from webdataset's opener."""
    if is_remote_shard(shard):
        url = shard_url(shard, allow_remote)  # raises unless allowed
        from webdataset.gopen import gopen

        return tarfile.open(fileobj=gopen(url, "rb"), mode="r|*")
    return tarfile.open(Path(str(shard)), mode="r")


def iter_tar_samples(shard: Any, allow_remote: bool = False) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    """Group a tar's members by webdataset key (the member path up to the first dot of its base name).

    A local shard is read by path, never through a shell; a URL / ``pipe:`` name needs ``allow_remote``."""
    try:
        tar = _open_tar(shard, allow_remote)
    except FileNotFoundError:
        raise DataError("shard not found", file=str(shard)) from None
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"unreadable tar shard ({exc})", file=str(shard)) from None
    with tar:
        current: Optional[str] = None
        parts: Dict[str, bytes] = {}
        try:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                if "." not in base or base.startswith("."):
                    continue
                prefix = member.name[: len(member.name) - len(base)]
                stem, ext = base.split(".", 1)
                key = prefix + stem
                if current is not None and key != current:
                    yield current, parts
                    parts = {}
                current = key
                fh = tar.extractfile(member)
                parts[ext.lower()] = fh.read() if fh is not None else b""
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"truncated or corrupt tar shard ({exc})", file=str(shard)) from None
        if current is not None:
            yield current, parts


def parse_sample_meta(key: str, parts: Dict[str, bytes], shard: Path) -> Dict[str, Any]:
    """Captions (and phrases, image id, split) of one sample; raises :class:`DataError` when it has no caption."""
    if "json" in parts:
        try:
            meta = json.loads(parts["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"malformed JSON member ({exc})", file=str(shard), record=key) from None
        if not isinstance(meta, dict):
            raise DataError("JSON member is not an object", file=str(shard), record=key)
        caps = meta.get("captions")
        if caps is None and "caption" in meta:
            caps = [meta["caption"]]
        if caps is None and "txt" in parts:
            caps = [parts["txt"].decode("utf-8", "replace")]
    elif "txt" in parts:
        meta, caps = {}, [parts["txt"].decode("utf-8", "replace")]
    else:
        meta, caps = {}, None
    if not caps:
        raise DataError("sample has no caption (.json 'captions' or .txt)", file=str(shard), record=key)
    if not isinstance(caps, list):
        raise DataError("'captions' is not a list", file=str(shard), record=key)
    meta = dict(meta)
    meta["captions"] = caps
    return meta


@DATASETS.register("webdataset")
class WebDatasetLoader(Loader):
    """webdataset tar shards (<key>.jpg + <key>.json/.txt); local paths, folders and brace patterns."""

    name = "webdataset"
    description = "webdataset tar shards (.jpg + .json captions/phrases or .txt); paths and brace patterns"
    known_splits = KARPATHY_SPLITS

    def _load(self) -> DatasetRecords:
        shards = expand_shards(self.options.get("shards") or self.path)
        if self.split is not None and self.path.is_dir():
            shards = [s for s in shards if s.name.startswith(f"{self.split}-")]
        out = DatasetRecords(name=self.name, source=str(self.path))
        next_sid = 0
        allow_remote = bool(self.options.get("allow_remote", False))
        for shard in shards:
            if is_remote_shard(shard):
                shard_url(shard, allow_remote)  # refused (fatal) unless the user opted in
            elif not shard.is_file():
                self.bad(DataError("shard not found", file=str(shard)))
                continue
            try:
                for key, parts in iter_tar_samples(shard, allow_remote):
                    ok, rec = self.guard(lambda: self._sample(key, parts, shard, next_sid))
                    if ok and rec is not None:
                        out.images.append(rec)
                        next_sid = max(next_sid, max(c.sent_id for c in rec.captions) + 1)
            except DataError as err:
                self.bad(err)
        return out

    def _sample(self, key: str, parts: Dict[str, bytes], shard: Path, next_sid: int) -> Optional[ImageRecord]:
        ext = next((e for e in IMAGE_EXTS if e in parts), None)
        if ext is None:
            raise DataError("sample has no image member", file=str(shard), record=key)
        meta = parse_sample_meta(key, parts, shard)
        split = meta.get("split")
        if split is not None:
            split = self.check_split(split, shard, key)
        if self.split is not None and split is not None and split != self.split:
            return None
        width = height = None
        if self.verify_images:
            width, height = image_size_from_bytes(parts[ext], file=shard, record=key)
        sids = meta.get("sent_ids") or list(range(next_sid, next_sid + len(meta["captions"])))
        phrases = meta.get("phrases") or [[] for _ in meta["captions"]]
        if len(sids) != len(meta["captions"]) or len(phrases) != len(meta["captions"]):
            raise DataError("'sent_ids'/'phrases' do not match 'captions' in length", file=str(shard), record=key)
        caps = []
        for text, sid, plist in zip(meta["captions"], sids, phrases):
            text = check_caption(text, shard, f"{key} caption {sid}")
            caps.append(
                Caption(
                    sent_id=as_int(sid, "sent_id", shard, key),
                    text=text,
                    tokens=tuple(tokenize(text)),
                    phrases=parse_phrases(plist, text, shard, f"{key} caption {sid}", width, height),
                )
            )
        image_id = meta.get("image_id")
        if image_id is None and not key.isdigit():
            raise DataError("sample has no 'image_id' and its key is not a number", file=str(shard), record=key)
        image_id = as_int(image_id if image_id is not None else key, "image_id", shard, key)
        return ImageRecord(
            image_id=image_id,
            file_name=f"{key}.{ext}",
            path=shard,
            split=split,
            width=width,
            height=height,
            captions=tuple(caps),
            label=meta.get("label"),
        )
