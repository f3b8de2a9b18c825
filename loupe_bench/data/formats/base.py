"""The dataset registry, the loader base class and the validators every loader shares."""
from __future__ import annotations

import contextlib
import io
import numbers
import os
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, Union

from ...errors import DataError, SpecError
from ...registry import Registry
from ...utils.bounded import LIMITS, read_bytes, regular_file
from ..records import BBox, DatasetRecords

DATASETS = Registry("dataset")

PathLike = Union[str, os.PathLike]
ON_BAD_SAMPLE = ("error", "skip")
#: pixels a box may exceed the image by (real annotations carry rounding of this order)
BOX_TOLERANCE = 1.0


class Loader:
    """Base class of the format loaders.

    Args:
        path: the file or folder to read (what it is depends on the format).
        split: keep only this split (None: all).
        on_bad_sample: ``"error"`` raises the first :class:`DataError`; ``"skip"`` skips the bad record, keeps
            going and appends the error to :attr:`skipped`.
        verify_images: open and fully decode every image (finds missing, unreadable and truncated files, and
            fills in width/height). Turn off for very large real data sets; bad files then fail at use time.

    Subclasses set :attr:`name` and :attr:`description` and implement :meth:`_load`.
    """

    name: str = ""
    description: str = ""
    known_splits: Optional[Tuple[str, ...]] = None

    def __init__(
        self,
        path: PathLike,
        split: Optional[str] = None,
        on_bad_sample: str = "error",
        verify_images: bool = True,
        **options: Any,
    ):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise SpecError(f"on_bad_sample must be one of {', '.join(ON_BAD_SAMPLE)}, got {on_bad_sample!r}")
        self.path = Path(path) if not isinstance(path, Path) else path
        self.path_text = str(path)  # as given: a URL keeps its ``//`` (``Path`` would fold it)
        self.split = split
        self.on_bad_sample = on_bad_sample
        self.verify_images = verify_images
        self.options = options
        self.skipped: List[DataError] = []

    # -- API --------------------------------------------------------------------------------------------------------
    def load(self) -> DatasetRecords:
        """Read the data set. Fatal problems (unreadable top-level file) always raise :class:`DataError`."""
        self.skipped = []
        out = self._load()
        out.skipped = list(self.skipped)
        return out

    def _load(self) -> DatasetRecords:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------------------------------------
    def bad(self, err: DataError) -> None:
        """Report a bad record: raise it, or count it as skipped."""
        if self.on_bad_sample == "error":
            raise err
        self.skipped.append(err)

    def guard(self, fn: Callable[[], Any]) -> Tuple[bool, Any]:
        """Run ``fn``; on :class:`DataError` report it via :meth:`bad` and return ``(False, None)``."""
        try:
            return True, fn()
        except DataError as err:
            self.bad(err)
            return False, None

    def check_split(self, split: Any, file: PathLike, record: Any) -> str:
        if not isinstance(split, str) or (self.known_splits is not None and split not in self.known_splits):
            known = ", ".join(self.known_splits or ())
            raise DataError(f"unknown split {split!r} (known: {known})", file=str(file), record=record)
        return split


def image_size(path: PathLike, record: Any = None) -> Tuple[int, int]:
    """Open and fully decode an image; return ``(width, height)``.

    Raises:
        DataError: the file is missing, unreadable or truncated (names the image file and the record).
    """
    data = user_bytes(path, "image", "image file", record)
    return image_size_from_bytes(data, file=path, record=record)


# -- files from a user's folder ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _with_record(record: Any):
    """Add ``record`` to a :class:`DataError` raised inside that names none."""
    try:
        yield
    except DataError as err:
        if record is None or err.record is not None:
            raise
        raise DataError(err.message, file=err.file, record=record) from None


def user_file(path: PathLike, kind: Optional[str], what: str = "file", record: Any = None) -> Path:
    """``path`` when it is a regular file (symlinks followed) within ``LIMITS[kind]`` bytes (``kind`` None: any
    size); a FIFO, device, socket or folder is refused from ``stat`` alone, never opened. Every file a loader reads
    from a user's folder passes here (or :func:`user_bytes` / :func:`user_text`) first.

    Raises:
        DataError: naming the file and ``record``.
    """
    with _with_record(record):
        return regular_file(path, what=what, limit=None if kind is None else LIMITS[kind])


def user_bytes(path: PathLike, kind: str = "annotation", what: str = "file", record: Any = None) -> bytes:
    """The bytes of a regular file within ``LIMITS[kind]`` (:func:`user_file`'s rule)."""
    with _with_record(record):
        return read_bytes(path, kind=kind, what=what)


def user_text(path: PathLike, kind: str = "annotation", what: str = "file", record: Any = None) -> str:
    """The UTF-8 text of a regular file within ``LIMITS[kind]`` (:func:`user_file`'s rule)."""
    data = user_bytes(path, kind, what, record)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path),
                        record=record) from None


def to_rgb(img: Any, file: PathLike = "<image>", record: Any = None) -> Any:
    """``img`` as an 8-bit RGB PIL image, high bit depths scaled rather than clipped.

    16-bit grey (``I;16*``, or ``I`` holding values in ``0..65535`` as PIL gives for 16-bit PNG) is mapped
    ``v -> round(v * 255 / 65535)``; an ``I`` image with values outside ``0..65535`` and a floating-point (``F``)
    image have no agreed 8-bit meaning and are refused. Every other mode goes through PIL's ``convert``.

    Raises:
        DataError: naming the file and record.
    """
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode == "F":
        raise DataError("floating-point image (mode F) has no 8-bit meaning; convert it to 8 or 16 bit",
                        file=str(file), record=record)
    if not (img.mode == "I" or img.mode.startswith("I;16")):
        return img.convert("RGB")
    import numpy as np

    arr = np.asarray(img).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DataError(f"{img.mode} image holds values outside 0..65535; not an image of 16 bits or fewer",
                        file=str(file), record=record)
    grey = ((arr * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")  # uint8 [H, W]: mode L


@contextlib.contextmanager
def image_errors(file: PathLike, record: Any = None):
    """Turn what PIL raises on a bad image into one :class:`DataError` naming the file and record: missing,
    unrecognised format, decompression bomb (:func:`bomb_error`), unreadable or truncated data."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except FileNotFoundError:
        raise DataError("image file not found", file=str(file), record=record) from None
    except UnidentifiedImageError:
        raise DataError("unreadable image (not a recognised image format)", file=str(file), record=record) from None
    except Image.DecompressionBombError as exc:
        raise bomb_error(exc, file, record) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"unreadable or truncated image ({reason})", file=str(file), record=record) from None


def check_image_header(path: PathLike, record: Any = None, full: bool = False) -> None:
    """The check of an image file made once before training: it exists, PIL recognises its format, its header's
    size passes the decompression-bomb limit, ``Image.verify`` (PNG structure and checksums) finds no damage and a
    JPEG ends with its end-of-image marker ``FF D9`` (trailing zero padding allowed); with ``full`` the image is
    also decoded completely. Raises :class:`DataError` naming the file and record."""
    from PIL import Image

    user_file(path, "image", "image file", record)
    with image_errors(path, record):
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        if full:
            with Image.open(path) as im:
                im.load()
        elif fmt == "JPEG":
            with open(path, "rb") as fh:
                fh.seek(max(0, Path(path).stat().st_size - 64))
                if not fh.read().rstrip(b"\x00").endswith(b"\xff\xd9"):
                    raise OSError("JPEG has no end-of-image marker")


def image_size_from_bytes(data: bytes, file: PathLike, record: Any = None) -> Tuple[int, int]:
    """Decode image bytes fully; return ``(width, height)`` or raise :class:`DataError`."""
    from PIL import Image

    with image_errors(file, record):
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return int(im.size[0]), int(im.size[1])


def bomb_error(exc: Exception, file: PathLike, record: Any = None) -> DataError:
    """PIL's ``DecompressionBombError`` (a header claiming more than twice ``Image.MAX_IMAGE_PIXELS`` pixels) as a
    :class:`DataError` naming the image."""
    reason = str(exc).split(" could be")[0].rstrip(", ")
    return DataError(f"image header claims an implausibly large image, refused as a decompression bomb ({reason})",
                     file=str(file), record=record)


def check_bbox(
    bbox: Any, width: Optional[float], height: Optional[float], file: PathLike, record: Any
) -> BBox:
    """Validate a pixel ``xywh`` box: four finite numbers, positive size, inside the image (± 1 px).

    Raises:
        DataError: naming the file and record.
    """
    try:
        if not isinstance(bbox, (list, tuple)) or any(isinstance(v, (bool, str)) for v in bbox):
            raise TypeError
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"box {bbox!r} is not four numbers x, y, w, h", file=str(file), record=record) from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in (x, y, w, h)):
        raise DataError(f"box {bbox!r} has a non-finite value", file=str(file), record=record)
    if w <= 0 or h <= 0:
        raise DataError(f"box {bbox!r} has non-positive size (w={w:g}, h={h:g})", file=str(file), record=record)
    if width is not None and height is not None:
        tol = BOX_TOLERANCE
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            raise DataError(
                f"box {bbox!r} lies outside the {int(width)}x{int(height)} image", file=str(file), record=record
            )
    return (x, y, w, h)


def check_caption(text: Any, file: PathLike, record: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"empty caption ({text!r})", file=str(file), record=record)
    return text


def as_int(value: Any, what: str, file: PathLike, record: Any) -> int:
    """An integer field: an int, an integral float or a decimal string (``Infinity``/NaN/booleans are refused)."""
    try:
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
            raise TypeError
        out = int(value)
        if isinstance(value, float) and out != value:
            raise ValueError
        return out
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{what} {value!r} is not an integer", file=str(file), record=record) from None


def as_float(value: Any, what: str, file: PathLike, record: Any) -> float:
    """A finite number field (int or float, not a boolean or a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{what} {value!r} is not a number", file=str(file), record=record)
    try:
        out = float(value)
    except OverflowError:
        out = float("inf")
    if out != out or out in (float("inf"), float("-inf")):
        raise DataError(f"{what} {value!r} is not a finite number", file=str(file), record=record)
    return out


def as_str(value: Any, what: str, file: PathLike, record: Any) -> str:
    """A non-empty string field (a number where a file name belongs is refused, not joined into a path)."""
    if not isinstance(value, str) or not value:
        raise DataError(f"{what} {value!r} is not a non-empty string", file=str(file), record=record)
    if "\x00" in value:
        raise DataError(f"{what} {value!r} holds a NUL character", file=str(file), record=record)
    return value


def require(obj: Any, key: str, file: PathLike, record: Any) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"missing field {key!r}", file=str(file), record=record)
    return obj[key]


def read_xml(path: PathLike, record: Any = None):
    """Parse an XML file into an :class:`xml.etree.ElementTree.Element`, safely.

    The document is fed to expat through an :class:`~xml.etree.ElementTree.TreeBuilder`; a document type
    declaration (``<!DOCTYPE ...>``, where entities are declared) is refused, so no entity is ever expanded or
    fetched (no "billion laughs", no external entities, no network or file access). Annotation XML (PASCAL VOC,
    Flickr30K Entities) never carries a DTD.

    Raises:
        DataError: the file is missing, malformed (with line and column), or declares a DTD.
    """
    import xml.etree.ElementTree as ET
    from xml.parsers import expat

    path = Path(path)
    data = user_bytes(path, "annotation", "file", record)

    def refuse(*_: Any) -> None:
        raise DataError("XML with a document type declaration (DTD) is refused (entities are never expanded)",
                        file=str(path), record=record)

    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        reason = expat.errors.messages.get(exc.code, str(exc)) if hasattr(exc, "code") else str(exc)
        raise DataError(f"malformed XML ({reason} at line {exc.lineno} column {exc.offset + 1})", file=str(path),
                        record=record) from None
    return builder.close()
