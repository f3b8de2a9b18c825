"""Shared pieces of the adapters: data loading through the dataset registry, image preprocessing, batched
encoding with progress bars, prompt ensembles, and the per-split output with bootstrap intervals."""
from __future__ import annotations

import contextlib
import dataclasses
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, SpecError
from .metrics.bootstrap import bootstrap_ci
from .spec import TaskSpec

# ------------------------------------------------------------------------------------------------- outputs
@dataclass
class MetricValue:
    """One reported number: ``value`` with its bootstrap ``ci95`` (``None`` when not computed) and ``units``."""

    value: float
    ci95: Optional[List[float]] = None
    units: str = "fraction"

    def to_dict(self) -> Dict[str, Any]:
        return {"value": self.value, "ci95": self.ci95, "units": self.units}


@dataclass
class SplitOutput:
    """What an adapter returns for one split.

    Attributes:
        split: split name.
        metrics: metric name -> :class:`MetricValue`.
        unavailable: metric name -> reason it was not computed.
        extra: protocol details (proposal source, scoring mode, tokenizer, counts ...).
        per_item: metric name -> per-image/per-query values (for paired bootstrap between models).
        reference_rows: rows that are not the model's but belong beside it in a table (chance, an oracle):
            row name -> metric name -> :class:`MetricValue`; identical for every model under one protocol.
    """

    split: str
    metrics: Dict[str, MetricValue] = field(default_factory=dict)
    unavailable: Dict[str, str] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    per_item: Dict[str, List[float]] = field(default_factory=dict)
    reference_rows: Dict[str, Dict[str, MetricValue]] = field(default_factory=dict)


def mean_metric(values: Sequence[float], spec: TaskSpec, units: str = "fraction") -> MetricValue:
    """A metric that is the mean of per-item values, with its percentile bootstrap interval."""
    b = spec.bootstrap
    if b.n_resamples > 0:
        iv = bootstrap_ci(values, n_resamples=b.n_resamples, seed=b.seed, alpha=b.alpha)
        return MetricValue(iv.value, [iv.low, iv.high], units)
    v = np.asarray(values, dtype=np.float64)
    return MetricValue(float(v.mean()) if v.size else float("nan"), None, units)


# ------------------------------------------------------------------------------------------------- data
#: data formats whose images live inside archives: streamed by training, never indexed by an evaluation protocol
TRAINING_ONLY_FORMATS = ("webdataset",)


def load_records(spec: TaskSpec, data_root: Optional[Path], split: str):
    """Read the task's data set for ``split`` through :data:`loupe_bench.data.DATASETS`, with the spec's loader
    options (:meth:`TaskSpec.loader_options`). A missing data set or image folder is
    :meth:`TaskSpec.missing_data`: the file, that --data-root is required, and the layout the task expects."""
    from ..data import DATASETS

    if spec.dataset.format in TRAINING_ONLY_FORMATS:
        raise SpecError(f"{spec.source or spec.name}: dataset format {spec.dataset.format!r} is read by `train` and "
                        "`data check` only; evaluation reads image files (karpathy, coco, refer, imagefolder, csv, ...)")
    loader_cls = DATASETS.get(spec.dataset.format)
    opts = spec.loader_options(data_root, split)
    path = spec.resolve_path(data_root, spec.dataset.path, split)
    if not path.exists():
        raise spec.missing_data(path, data_root, "data set not found")
    if isinstance(opts.get("image_root"), str) and not Path(opts["image_root"]).is_dir():
        raise spec.missing_data(Path(opts["image_root"]), data_root, "image folder not found")
    key = _records_key(spec.dataset.format, path, split, opts)
    hit = _RECORDS_CACHE.get(key) if key is not None else None
    if hit is None:
        hit = loader_cls(path, split=split, verify_images=False, **opts).load()
        if key is not None:
            _RECORDS_CACHE[key] = hit
            while len(_RECORDS_CACHE) > RECORDS_CACHE_SIZE:
                _RECORDS_CACHE.pop(next(iter(_RECORDS_CACHE)))
    # a fresh container each call (the records themselves are frozen dataclasses of tuples)
    return dataclasses.replace(hit, images=list(hit.images), refs=list(hit.refs), samples=list(hit.samples),
                               categories=dict(hit.categories), classnames=list(hit.classnames),
                               skipped=list(hit.skipped), notes=dict(hit.notes))


#: parsed data sets kept in this process: the tasks of one evaluation often read the same annotation file and split
#: (the eight grounding protocols read one refer file), and parsing it is most of their data time
RECORDS_CACHE_SIZE = 8
_RECORDS_CACHE: Dict[Tuple[Any, ...], Any] = {}


def _records_key(fmt: str, path: Path, split: str, opts: Dict[str, Any]) -> Optional[Tuple[Any, ...]]:
    """Cache key of one ``load_records`` call: the format, split and loader options, and the name, size and mtime of
    every file beside (or in) the data set path — a rewritten annotation file is read again. ``None`` (no caching)
    when an option cannot be keyed."""
    try:
        folder = path if path.is_dir() else path.parent
        files = sorted((f.name, st.st_size, st.st_mtime_ns) for f in folder.iterdir()
                       if f.is_file() and (st := f.stat()))
        frozen = tuple(sorted((k, repr(v)) for k, v in opts.items()))
        # option values naming files elsewhere (e.g. a refer data set's instances file): their size and mtime too
        named = tuple(sorted((str(v), Path(v).stat().st_size, Path(v).stat().st_mtime_ns) for v in opts.values()
                             if isinstance(v, (str, Path)) and Path(v).is_file()))
    except OSError:
        return None
    if len(files) > 10_000:
        return None
    return (fmt, str(path.resolve()), split, frozen, tuple(files), named)


# ------------------------------------------------------------------------------------------------- images
def image_transform(model, spec: TaskSpec) -> Callable:
    """PIL image -> normalised ``[3, S, S]`` tensor for ``model``.

    ``crop: center`` resizes the shorter side to ``S`` then centre-crops (CLIP); ``crop: none`` resizes the whole
    image to ``S x S`` (box tasks: normalised box coordinates keep their meaning).
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    size = int(model.image_size if spec.image.resize in (None, "model") else spec.image.resize)
    try:
        interp = InterpolationMode(spec.image.interpolation)
    except ValueError:
        raise SpecError(f"unknown interpolation {spec.image.interpolation!r}") from None
    mean, std = list(model.image_mean), list(model.image_std)

    from ..data.formats.base import to_rgb

    def tf(img) -> Tensor:
        img = to_rgb(img)
        if spec.image.crop == "center":
            img = TF.resize(img, size, interpolation=interp)
            img = TF.center_crop(img, [size, size])
        else:
            img = TF.resize(img, [size, size], interpolation=interp)
        t = TF.pil_to_tensor(img).float().div_(255.0)
        return TF.normalize(t, mean, std)

    return tf


def open_image(path: Path, record: Any = None):
    """The image at ``path`` loaded into memory; only a regular file within the image size limit is opened."""
    from PIL import Image

    from ..data.formats.base import user_file

    user_file(path, "image", "image file", record)
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise DataError("image file not found", file=str(path), record=record) from None
    except Image.DecompressionBombError as exc:
        from ..data.formats.base import bomb_error

        raise bomb_error(exc, path, record) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"unreadable image ({exc})", file=str(path), record=record) from None


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (transient; silent when not a terminal). Yields ``advance(n)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda n=1: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(task, n)


def _cat_features(parts: List[Any]):
    first = parts[0]
    cls = type(first)
    out = []
    for name in first._fields:
        vals = [getattr(p, name) for p in parts]
        out.append(torch.cat(vals, 0) if isinstance(vals[0], Tensor) else vals[0])
    return cls(*out)


_FEATURE_CACHE: Optional[Dict[Any, Any]] = None


# ------------------------------------------------------------------------------------------------- encoding options
#: ``eval --precision``: ``fp32`` (default), ``amp`` (autocast: float16 on CUDA, bfloat16 on the CPU) or ``bf16``
#: (bfloat16 autocast on either); only the encoders run under autocast, their features are returned as float32
PRECISIONS = ("fp32", "amp", "bf16")
MAX_BATCH_SIZE = 65536
MAX_NUM_WORKERS = 64


@dataclass(frozen=True)
class EncodeOptions:
    """How :func:`encode_images` / :func:`encode_texts` run (CLIP_benchmark's ``--batch_size``, ``--num_workers``,
    ``--precision``).

    Attributes:
        batch_size: images per encoder batch (texts: four times as many); ``None`` keeps the task spec's
            ``batch_size``. Does not change numbers beyond float rounding, so it is not part of the fingerprint.
        num_workers: threads loading and preprocessing images ahead of the encoder (0: in the calling thread).
        precision: one of :data:`PRECISIONS`.
    """

    batch_size: Optional[int] = None
    num_workers: int = 0
    precision: str = "fp32"

    def image_batch(self, spec: TaskSpec) -> int:
        return max(1, self.batch_size if self.batch_size is not None else spec.batch_size)


def check_encode_options(batch_size: Optional[int] = None, num_workers: int = 0, precision: str = "fp32"
                         ) -> EncodeOptions:
    """Validated :class:`EncodeOptions`; a bad value is one :class:`SpecError` line."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if batch_size is not None and (not whole(batch_size) or not 1 <= batch_size <= MAX_BATCH_SIZE):
        raise SpecError(f"batch size {batch_size!r}: use a whole number in 1..{MAX_BATCH_SIZE}")
    if not whole(num_workers) or not 0 <= num_workers <= MAX_NUM_WORKERS:
        raise SpecError(f"num workers {num_workers!r}: use a whole number in 0..{MAX_NUM_WORKERS}")
    if precision not in PRECISIONS:
        raise SpecError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return EncodeOptions(batch_size, num_workers, precision)


def autocast_dtype(precision: str, device) -> Optional[torch.dtype]:
    """The dtype the encoders autocast to for ``precision`` on ``device`` (``None``: fp32, no autocast).

    Raises:
        SpecError: this torch build or GPU cannot autocast to that dtype on that device.
    """
    if precision == "fp32":
        return None
    kind = torch.device(device).type
    dtype = torch.float16 if (precision == "amp" and kind == "cuda") else torch.bfloat16
    if kind == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise SpecError(f"--precision {precision}: this GPU does not support bfloat16; use --precision amp or fp32")
    try:
        with torch.autocast(kind, dtype=dtype):
            pass
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise SpecError(f"--precision {precision}: torch cannot autocast to {str(dtype).replace('torch.', '')} on "
                        f"{kind} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); use --precision "
                        "fp32") from None
    return dtype


_ENCODE = EncodeOptions()


def current_encode_options() -> EncodeOptions:
    """The options :func:`encode_images` / :func:`encode_texts` use now (set by :func:`encode_options`)."""
    return _ENCODE


@contextlib.contextmanager
def encode_options(options: EncodeOptions) -> Iterator[EncodeOptions]:
    """Within the block the encoders use ``options`` (:func:`~loupe_bench.tasks.evaluate.evaluate` sets them)."""
    global _ENCODE
    outer = _ENCODE
    _ENCODE = options
    try:
        yield options
    finally:
        _ENCODE = outer


def _autocast(device):
    dtype = autocast_dtype(_ENCODE.precision, device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(torch.device(device).type, dtype=dtype)


def _to_cpu_float(feats):
    """Features on the CPU, floating tensors as float32 (autocast may hand back half precision)."""
    return type(feats)(*[(f.float() if f.is_floating_point() else f).cpu() if isinstance(f, Tensor) else f
                         for f in feats])


@contextlib.contextmanager
def feature_cache() -> Iterator[None]:
    """Within the block, :func:`encode_images` encodes a given (model, image list, preprocessing, batch size,
    precision, device) once and hands the same features to every later task (detection, grounding and retrieval
    share their test images). The caller promises not to change the model's weights inside the block."""
    global _FEATURE_CACHE
    outer = _FEATURE_CACHE
    _FEATURE_CACHE = {} if outer is None else outer
    try:
        yield
    finally:
        _FEATURE_CACHE = outer


@torch.no_grad()
def encode_images(model, paths: Sequence[Path], spec: TaskSpec, device: str = "cpu", desc: str = "images"):
    """Encode image files in batches (:func:`encode_options`: batch size, loader threads, precision); returns one
    concatenated float32 ``ImageFeatures`` on the CPU (cached inside a :func:`feature_cache` block)."""
    if not paths:
        raise DataError("no images to encode")
    if _FEATURE_CACHE is not None:
        key = (id(model), repr(spec.image), _ENCODE.image_batch(spec), _ENCODE.precision, str(device),
               tuple(str(p) for p in paths))
        hit = _FEATURE_CACHE.get(key)
        if hit is None:
            hit = _FEATURE_CACHE[key] = _encode_images(model, paths, spec, device, desc)
        return hit
    return _encode_images(model, paths, spec, device, desc)


def _image_batches(paths: Sequence[Path], tf: Callable, bs: int, workers: int) -> Iterator[Tensor]:
    """``[B, 3, S, S]`` batches in path order; with ``workers`` threads the next batch is read while one encodes."""
    starts = range(0, len(paths), bs)
    if workers <= 0:
        for s in starts:
            yield torch.stack([tf(open_image(p)) for p in paths[s : s + bs]])
        return
    from concurrent.futures import ThreadPoolExecutor

    def load(p):
        return tf(open_image(p))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loupe-images") as pool:
        pending = [pool.submit(load, p) for p in paths[0:bs]]
        for s in starts:
            current = pending
            pending = [pool.submit(load, p) for p in paths[s + bs : s + 2 * bs]]
            try:
                yield torch.stack([f.result() for f in current])
            except BaseException:
                for f in pending:
                    f.cancel()
                raise


def _encode_images(model, paths: Sequence[Path], spec: TaskSpec, device: str, desc: str):
    tf = image_transform(model, spec)
    parts = []
    with progress_bar(f"encode {desc}", len(paths)) as advance:
        for batch in _image_batches(paths, tf, _ENCODE.image_batch(spec), _ENCODE.num_workers):
            with _autocast(device):
                feats = model.encode_image(batch.to(device))
            parts.append(_to_cpu_float(feats))
            advance(len(batch))
    return _cat_features(parts)


@torch.no_grad()
def encode_texts(model, texts: Sequence[str], spec: TaskSpec, device: str = "cpu", desc: str = "texts"):
    """Tokenise with the model's tokenizer and encode in batches of four times the image batch size
    (:func:`encode_options`); one concatenated float32 ``TextFeatures`` on the CPU.

    Token tensors of different batches may have different lengths; they are right-padded (mask False) to the
    longest before concatenation.
    """
    if not texts:
        raise DataError("no texts to encode")
    bs = _ENCODE.image_batch(spec) * 4
    if getattr(model, "training", False):  # dropout on: every call draws anew, nothing to share
        return _encode_texts(model, texts, bs, device, desc)
    try:
        per_model = _TEXT_CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        return _encode_texts(model, texts, bs, device, desc)
    key = (tuple(texts), bs, _ENCODE.precision, str(device), _weights_version(model))
    out = per_model.get(key)
    if out is None:
        out = per_model[key] = _encode_texts(model, texts, bs, device, desc)
        while len(per_model) > TEXT_CACHE_SIZE:
            per_model.pop(next(iter(per_model)))
    # copies: a caller may normalise or edit its features in place
    return type(out)(*[f.clone() if isinstance(f, Tensor) else f for f in out])


#: text features kept per model object (weakly: they go with the model): the tasks of one evaluation encode the same
#: query lists again (the grounding protocols of one split share their queries). Keyed by the exact texts, batch
#: size, precision, device and the parameters' in-place version counters, so a cached answer is the one a fresh call
#: would give.
TEXT_CACHE_SIZE = 16
_TEXT_CACHE: "weakref.WeakKeyDictionary[Any, Dict[Tuple[Any, ...], Any]]" = weakref.WeakKeyDictionary()


def _weights_version(model) -> Tuple[Any, ...]:
    """Changes whenever a parameter or buffer is modified in place or replaced (an optimiser step, ``load_state_dict``)."""
    try:
        tensors = list(model.parameters()) + list(model.buffers())
    except AttributeError:
        return (id(model),)
    return tuple((id(t), t._version) for t in tensors)


def _encode_texts(model, texts: Sequence[str], bs: int, device: str, desc: str):
    parts = []
    with progress_bar(f"encode {desc}", len(texts)) as advance:
        for s in range(0, len(texts), bs):
            tok = model.tokenizer(list(texts[s : s + bs]))
            with _autocast(device):
                feats = model.encode_text(tok.input_ids.to(device), tok.attention_mask.to(device))
            parts.append(_to_cpu_float(feats))
            advance(len(texts[s : s + bs]))
    length = max(p.tokens.shape[1] for p in parts)
    padded = []
    for p in parts:
        extra = length - p.tokens.shape[1]
        if extra:
            p = type(p)(p.pooled, torch.nn.functional.pad(p.tokens, (0, 0, 0, extra)),
                        torch.nn.functional.pad(p.mask, (0, extra), value=False))
        padded.append(p)
    return _cat_features(padded)


def select_features(feats, index):
    """Rows ``index`` of every batched tensor of a features NamedTuple."""
    idx = torch.as_tensor(index, dtype=torch.long)
    return type(feats)(*[f[idx] if isinstance(f, Tensor) else f for f in feats])


def to_device(feats, device: str):
    """A features NamedTuple with every tensor moved to ``device`` (features are kept on the CPU between steps)."""
    return type(feats)(*[f.to(device) if isinstance(f, Tensor) else f for f in feats])


def is_token_level(model) -> bool:
    """True when the model overrides :meth:`VLModel.similarity` (token-wise scoring such as FILIP / LOUPE)."""
    from ..models.base import VLModel

    return type(model).similarity is not VLModel.similarity


# ------------------------------------------------------------------------------------------------- prompts
def build_prompts(classnames: Sequence[str], templates: Sequence[str]) -> List[str]:
    """Class-major list of prompts: ``templates[t].format(c)`` for each class ``c`` then each template ``t``."""
    if not templates:
        raise SpecError("at least one prompt template is needed")
    for t in templates:
        if "{}" not in t:
            raise SpecError(f"prompt template {t!r} has no '{{}}' slot for the class name")
    return [t.format(c) for c in classnames for t in templates]


def ensemble_classifier(text_pooled: Tensor, n_classes: int, n_templates: int) -> Tensor:
    """CLIP prompt ensemble: ``w_c = normalize( (1/T) sum_t normalize(e_{c,t}) )`` -> ``[C, D]``."""
    e = torch.nn.functional.normalize(text_pooled.float(), dim=-1).reshape(n_classes, n_templates, -1)
    return torch.nn.functional.normalize(e.mean(1), dim=-1)


def template_mean(scores: Tensor, n_classes: int, n_templates: int) -> Tensor:
    """``[..., C*T] -> [..., C]`` mean over the templates of each class (class-major prompt order)."""
    return scores.reshape(*scores.shape[:-1], n_classes, n_templates).mean(-1)
