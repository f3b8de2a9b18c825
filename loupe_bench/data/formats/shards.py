"""webdataset tar shards: ``<key>.jpg`` (or .png/.jpeg) + ``<key>.json`` ({"captions", "phrases", "image_id"})
or ``<key>.txt`` (one caption). Local paths, folders of ``*.tar`` and brace patterns (``train-{000000..000003}.tar``)."""
from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from ...errors import DataError
from ...utils.bounded import LIMITS, json_load
from ..records import Caption, DatasetRecords, ImageRecord, tokenize
from .base import DATASETS, Loader, as_int, check_caption, image_size_from_bytes, user_file
from .karpathy import KARPATHY_SPLITS, parse_phrases

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def expand_shards(spec: Any) -> List[Union[Path, str]]:
    """Shard list from a file, a folder (its ``*.tar``, sorted), a brace pattern or a list of those.

    Local names become :class:`~pathlib.Path`; a remote name (:func:`is_remote_shard`) stays the string it was
    given, so a URL keeps its ``//`` (whether it may be opened is :func:`shard_url`'s decision)."""
    if isinstance(spec, (list, tuple)):
        return [p for s in spec for p in expand_shards(s)]
    text = str(spec)
    if "{" in text:
        from braceexpand import braceexpand

        if _brace_size(text) > MAX_SHARDS:  # braceexpand builds the whole list first
            raise DataError(f"brace pattern expands to more than {MAX_SHARDS:,} shard names", file=text)
        return [_shard_name(p) for p in braceexpand(text)]
    if is_remote_shard(text):
        return [text]
    path = Path(text)
    if path.is_dir():
        found = sorted(path.glob("*.tar"))
        if not found:
            raise DataError("no *.tar shards in folder", file=str(path))
        return found
    return [path]


#: ``scheme:`` prefixes webdataset opens itself (``pipe:`` runs a shell command); see :func:`shard_url`
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


#: most shard names one brace pattern may name
MAX_SHARDS = 100_000
_BRACE_RANGE = re.compile(r"\{(-?\w+)\.\.(-?\w+)(?:\.\.(-?\d+))?\}")


def _brace_size(text: str) -> int:
    """An upper bound of the names a brace pattern expands to: the product of its groups' sizes (a range's length,
    a list's item count), counted without expanding anything."""
    total = 1
    for m in _BRACE_RANGE.finditer(text):
        total = min(total * _range_size(*m.groups()), MAX_SHARDS + 1)
    items: List[int] = []
    for ch in _BRACE_RANGE.sub("", text):
        if ch == "{":
            items.append(1)
        elif ch == "," and items:
            items[-1] += 1
        elif ch == "}" and items:
            total = min(total * items.pop(), MAX_SHARDS + 1)
    return total


def _range_size(first: str, last: str, step: Optional[str]) -> int:
    if any(len(v or "") > 18 for v in (first, last, step)):
        return MAX_SHARDS + 1
    if first.lstrip("-").isdigit() and last.lstrip("-").isdigit():
        return abs(int(last) - int(first)) // max(1, abs(int(step or 1))) + 1
    return abs(ord(last[-1]) - ord(first[0])) + 1


def _shard_name(text: str) -> Union[Path, str]:
    return text if is_remote_shard(text) else Path(text)


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
            raise DataError("shard name is a URL or pipe: command; refusing to open it (only `train "
                            "--allow-remote-shards` lets webdataset fetch one)", file=str(name))
        return str(name)
    return str(Path(str(name)).resolve())


#: compressed shards by suffix; anything else is read as a plain tar (never probed with every decompressor: xz
#: would scan gigabytes of zeros)
_TAR_MODES = {".gz": "r:gz", ".tgz": "r:gz", ".bz2": "r:bz2", ".xz": "r:xz"}


def _open_tar(shard: Any, allow_remote: bool) -> tarfile.TarFile:
    """A local shard with :mod:`tarfile` by path, only when it is a regular file (a FIFO or a link to a device is
    refused, never opened); a remote one (opt-in only) as a stream from webdataset's opener."""
    if is_remote_shard(shard):
        url = shard_url(shard, allow_remote)  # raises unless allowed
        from webdataset.gopen import gopen

        return tarfile.open(fileobj=gopen(url, "rb"), mode="r|*")
    path = user_file(str(shard), None, "shard")
    return tarfile.open(path, mode=_TAR_MODES.get(path.suffix.lower(), "r:"))


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, shard: Any) -> bytes:
    """A member's bytes, refused from its header when it is larger than an image may be."""
    if member.size > LIMITS["image"]:
        raise DataError(f"member {member.name} is {member.size:,} bytes, above the limit of {LIMITS['image']:,}",
                        file=str(shard))
    fh = tar.extractfile(member)
    return fh.read() if fh is not None else b""


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
        done = set()
        try:
            for member in tar:
                named = _member_key(member, shard)
                if named is None:
                    continue
                key, ext = named
                if current is not None and key != current:
                    yield current, parts
                    done.add(current)
                    parts = {}
                if key in done or ext in parts:
                    raise DataError(f"member {member.name} repeats a sample key of the shard", file=str(shard),
                                    record=key)
                current = key
                parts[ext] = _member_bytes(tar, member, shard)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"truncated or corrupt tar shard ({exc})", file=str(shard)) from None
        if current is not None:
            yield current, parts


def _member_key(member: tarfile.TarInfo, shard: Any) -> Optional[Tuple[str, str]]:
    """``(key, extension)`` of a file member (the path up to the first dot of its base name, webdataset's rule);
    ``None`` for links, folders and names without an extension. A name that is absolute or climbs out with ``..``
    is a :class:`DataError`: no sample may claim a path outside the shard."""
    if not member.isfile():
        return None
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise DataError(f"member name {name!r} is absolute or leaves the shard ('..')", file=str(shard))
    base = name.rsplit("/", 1)[-1]
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return name[: len(name) - len(base)] + stem, ext.lower()


def parse_sample_meta(key: str, parts: Dict[str, bytes], shard: Any) -> Dict[str, Any]:
    """Captions (and phrases, image id, split) of one sample; raises :class:`DataError` when it has no caption."""
    if "json" in parts:
        try:
            meta = json_load(parts["json"].decode("utf-8"), str(shard))  # bounded nesting, finite numbers
        except UnicodeDecodeError as exc:
            raise DataError(f"malformed JSON member ({exc})", file=str(shard), record=key) from None
        except DataError as err:
            raise DataError(f"JSON member: {err.message}", file=str(shard), record=key) from None
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
        shards = expand_shards(self.options.get("shards") or self.path_text)
        if self.split is not None and self.path.is_dir():
            shards = [s for s in shards if s.name.startswith(f"{self.split}-")]
        out = DatasetRecords(name=self.name, source=self.path_text)
        next_sid = 0
        allow_remote = bool(self.options.get("allow_remote", False))
        for shard in shards:
            if is_remote_shard(shard):
                shard_url(shard, allow_remote)  # refused (fatal) unless the user opted in
            elif not self.guard(lambda: user_file(shard, None, "shard"))[0]:
                continue
            try:
                next_sid = self._read_shard(shard, allow_remote, out, next_sid)
            except DataError as err:
                self.bad(err)
        return out

    def _read_shard(self, shard: Any, allow_remote: bool, out: DatasetRecords, next_sid: int) -> int:
        """Append the shard's records to ``out``; the next free sentence id. A shard without any sample (empty,
        all zeros) is a :class:`DataError`."""
        count = 0
        for count, (key, parts) in enumerate(iter_tar_samples(shard, allow_remote), start=1):
            ok, rec = self.guard(lambda: self._sample(key, parts, shard, next_sid))
            if ok and rec is not None:
                out.images.append(rec)
                next_sid = max(next_sid, max(c.sent_id for c in rec.captions) + 1)
        if count == 0:
            raise DataError("shard holds no sample (an empty or all-zero tar)", file=str(shard))
        return next_sid

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
