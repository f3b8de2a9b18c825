"""Task protocol specs (``tasks/*.yaml``): parsing, validation, normalisation and the protocol fingerprint.

A spec is a YAML mapping::

    name: synthetic-retrieval
    type: retrieval                  # a key of TASK_TYPES
    description: one line for `loupe-bench list tasks`
    dataset:
      name: synthetic                # recorded in results
      format: karpathy               # a key of loupe_bench.data.DATASETS
      path: dataset_synthetic.json   # relative to --data-root
      options: {}                    # loader options; values ending in a path are relative to --data-root
      annotations: [dataset_synthetic.json]   # files whose sha256 enters the fingerprint (default: path)
    splits: [test]                   # one result per split
    metrics: [i2t_R@1, ...]
    image: {resize: model, crop: center, interpolation: bicubic}
    bootstrap: {n_resamples: 1000, seed: 0, alpha: 0.05}
    options: {...}                   # type-specific (prompts, templates, proposals, caption head, ...)
    layout:                          # cosmetic: what --data-root must hold and where each part comes from
      dataset_synthetic.json: "Karpathy-style caption JSON (loupe-bench data synth --out DIR)"

The **protocol fingerprint** is ``sha256(normalised spec JSON + sorted (file, sha256) of the annotation files)``,
truncated to 16 hex characters. Normalisation fills in every default and drops the cosmetic keys ``name``,
``description`` and ``layout``, so reformatting a YAML file or spelling out a default does not change it; any change of data,
split, metric, prompt, image handling, proposals or bootstrap settings does.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Sequence

from ..errors import DataError, SpecError
from ..specs import from_mapping
from ..utils.bounded import LIMITS, regular_file
from ..utils.io import sha256_file

COSMETIC_KEYS = ("name", "description", "layout")
#: loader option keys whose values are paths relative to --data-root (a string, or a list of strings)
PATH_OPTIONS = ("image_root", "phrases", "shards", "instances")
#: loader keywords only the command sets (which split, whether to verify, whether shards may be fetched or run):
#: a spec file naming one is refused
COMMAND_OPTIONS = ("allow_remote", "split", "on_bad_sample", "verify_images")
#: largest K of ``options.ks`` (retrieval R@K) and ``options.recall_k``
MAX_K = 1000
#: largest ``image.resize`` side (pixels)
MAX_IMAGE_SIDE = 4096
CROPS = ("center", "none")
#: ``scheme:`` prefix of a URL or a ``pipe:`` command: never a data path of a spec
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass
class ImageConfig:
    """How images are prepared. ``resize: model`` uses the model's ``image_size``; ``crop: none`` resizes the whole
    image to a square (needed by box tasks so that normalised boxes keep their meaning)."""

    resize: Any = "model"
    crop: str = "center"
    interpolation: str = "bicubic"


@dataclass
class BootstrapConfig:
    """Percentile bootstrap: ``n_resamples`` replicates of the images/queries, fixed ``seed``, ``1 - alpha`` CI."""

    n_resamples: int = 1000
    seed: int = 0
    alpha: float = 0.05


@dataclass
class DatasetConfig:
    name: str
    format: str
    path: str
    options: Dict[str, Any] = field(default_factory=dict)
    annotations: List[str] = field(default_factory=list)


@dataclass
class TaskSpec:
    """A parsed task protocol."""

    name: str
    type: str
    dataset: DatasetConfig
    splits: List[str]
    metrics: List[str]
    description: str = ""
    image: ImageConfig = field(default_factory=ImageConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    batch_size: int = 64
    chunk_size: int = 1024
    options: Dict[str, Any] = field(default_factory=dict)
    layout: Dict[str, str] = field(default_factory=dict)
    source: Optional[str] = None
    #: ``options`` converted once into the adapter's ``Options`` (set with ``options`` by
    #: :func:`~loupe_bench.tasks.load_task`; not part of the spec's data or fingerprint)
    parsed_options: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("source", None)
        d.pop("parsed_options", None)
        return d

    def normalised(self) -> Dict[str, Any]:
        """The spec with defaults filled in and cosmetic keys dropped (what the fingerprint hashes)."""
        d = self.to_dict()
        for k in COSMETIC_KEYS:
            d.pop(k, None)
        return d

    def resolve_path(self, data_root: Optional[Path], rel: str, split: Optional[str] = None) -> Path:
        """``data_root / rel`` with ``{split}`` substituted (an absolute ``rel`` or no ``data_root``: ``rel``)."""
        rel = rel.replace("{split}", split) if split is not None else rel
        p = Path(rel)
        return p if p.is_absolute() or data_root is None else Path(data_root) / p

    def loader_options(self, data_root: Optional[Path], split: Optional[str] = None) -> Dict[str, Any]:
        """The dataset's loader options with the path-valued ones (:data:`PATH_OPTIONS`) resolved against
        ``data_root`` (a list entry by entry) — what the task's loader, and ``data check --task``, read the data
        with. ``allow_remote`` never comes from a spec: only the command line may let shards be fetched."""
        opts = {k: v for k, v in self.dataset.options.items() if k != "allow_remote"}
        for k in PATH_OPTIONS:
            if isinstance(opts.get(k), str):
                opts[k] = str(self.resolve_path(data_root, opts[k], split))
            elif isinstance(opts.get(k), list):
                opts[k] = [str(self.resolve_path(data_root, str(v), split)) for v in opts[k]]
        return opts

    def layout_text(self) -> str:
        """One line: what ``--data-root`` must hold. The spec's ``layout`` (path -> what it is and where it comes
        from) when given, else the files the spec names (dataset path, annotations, path-valued loader options)."""
        if self.layout:
            return "; ".join(f"{path} ({what})" for path, what in self.layout.items())
        names = [self.dataset.path, *self.dataset.annotations]
        for k in PATH_OPTIONS:
            value = self.dataset.options.get(k)
            if isinstance(value, (str, list)):
                names += [value] if isinstance(value, str) else [str(v) for v in value]
        return "; ".join(dict.fromkeys(names))

    def missing_data(self, path: Path, data_root: Optional[Path], what: str = "not found") -> DataError:
        """The error for a missing data file or folder of this task: names the file, says that ``--data-root`` is
        required (when none was given) and what it must hold (:meth:`layout_text`), in one line."""
        if data_root is None:
            head = f"{what}; task {self.name} needs --data-root DIR (required: its data paths are relative to it)"
        else:
            head = f"{what} under --data-root {data_root}; task {self.name} expects it"
        return DataError(f"{head}, laid out as DIR/ {self.layout_text()}", file=str(path))

    def data_splits(self) -> List[str]:
        """The splits the task reads: its ``splits`` and any ``*_split`` option (a linear probe's train / val)."""
        extra = [str(v) for k, v in sorted(self.options.items()) if k.endswith("_split") and isinstance(v, str)]
        return list(dict.fromkeys([*self.splits, *extra]))

    def require_data(self, data_root: Optional[Path], splits: Optional[Sequence[str]] = None) -> None:
        """Raise :meth:`missing_data` for the first missing annotation file, dataset path or image folder of
        ``splits`` (default: the spec's), before any model is built."""
        for split in splits or self.splits:
            paths = [*self.annotation_files(data_root), self.resolve_path(data_root, self.dataset.path, split)]
            image_root = self.loader_options(data_root, split).get("image_root")
            if image_root:
                paths.append(Path(image_root))
            for p in paths:
                if not p.exists():
                    raise self.missing_data(p, data_root)

    def annotation_files(self, data_root: Optional[Path]) -> List[Path]:
        files = self.dataset.annotations or [self.dataset.path]
        root = Path(data_root) if data_root is not None else Path(".")
        return [root / f for f in files]

    def fingerprint(self, data_root: Optional[Path] = None) -> str:
        """``sha256`` of the normalised spec plus the sha256 of each annotation file (16 hex characters).

        Raises:
            DataError: an annotation file is missing, not a regular file or too large.
        """
        parts = {"spec": self.normalised(), "files": []}
        for f in self.annotation_files(data_root):
            if f.is_dir():
                digest = _dir_digest(f)
            elif f.exists():  # a regular file within the annotation limit: a FIFO or device is never read
                digest = sha256_file(regular_file(f, what="annotation file", limit=LIMITS["annotation"]))
            else:
                raise self.missing_data(f, data_root, "annotation file not found (needed for the protocol fingerprint)")
            parts["files"].append([f.name, digest])
        blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]


def _dir_digest(folder: Path) -> str:
    """Digest of a folder's file list (relative names and sizes); image folders are too large to hash fully."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(folder).as_posix()}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()


def _require(d: Dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise SpecError(f"{where}: missing field {key!r}")
    return d[key]


def _known(d: Dict[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def parse_task_spec(data: Dict[str, Any], source: Optional[str] = None) -> TaskSpec:
    """Validate a spec mapping and build a :class:`TaskSpec` (errors are :class:`SpecError` naming the file)."""
    where = source or data.get("name", "task spec")
    data = copy.deepcopy(data)
    _known(
        data,
        ["name", "type", "description", "dataset", "splits", "split", "metrics", "image", "bootstrap", "batch_size",
         "chunk_size", "options", "layout"],
        where,
    )
    ds = _require(data, "dataset", where)
    if not isinstance(ds, dict):
        raise SpecError(f"{where}: dataset must be a mapping")
    _known(ds, ["name", "format", "path", "options", "annotations"], f"{where}: dataset")
    ann = ds.get("annotations", [])
    if isinstance(ann, str):
        ann = [ann]
    options = ds.get("options") or {}
    if not isinstance(options, dict) or not isinstance(ann, list):
        raise SpecError(f"{where}: dataset.options must be a mapping and dataset.annotations a list of paths")
    dataset = DatasetConfig(
        name=str(ds.get("name", ds.get("format", ""))),
        format=str(_require(ds, "format", f"{where}: dataset")),
        path=str(_require(ds, "path", f"{where}: dataset")),
        options=dict(options),
        annotations=[str(a) for a in ann],
    )
    _check_dataset_options(dataset, where)
    splits = _splits(data, where)
    image_cfg = _image_config(data.get("image"), where)
    boot_cfg = from_mapping(BootstrapConfig, data.get("bootstrap"), str(where), "bootstrap")
    if boot_cfg.n_resamples < 0 or not 0 < boot_cfg.alpha < 1:
        raise SpecError(f"{where}: bootstrap needs n_resamples >= 0 and 0 < alpha < 1")
    metrics = data.get("metrics") or []
    if not isinstance(metrics, list) or not metrics:
        raise SpecError(f"{where}: metrics must be a non-empty list")
    _check_ks(data.get("options") or {}, where)
    spec = TaskSpec(
        name=str(_require(data, "name", where)),
        type=str(_require(data, "type", where)),
        dataset=dataset,
        splits=[str(s) for s in splits],
        metrics=[str(m) for m in metrics],
        description=str(data.get("description", "")),
        image=image_cfg,
        bootstrap=boot_cfg,
        batch_size=int(data.get("batch_size", 64)),
        chunk_size=int(data.get("chunk_size", 1024)),
        options=dict(data.get("options") or {}),
        layout=_layout(data.get("layout"), where),
        source=source,
    )
    return spec


def _splits(data: Dict[str, Any], where: str) -> List[str]:
    """``splits``: a non-empty list of distinct split names (a result is written per split); ``split``: one name."""
    raw = data.get("splits", data.get("split"))
    if raw is None:
        raise SpecError(f"{where}: missing field 'splits'")
    splits = [raw] if isinstance(raw, str) and "splits" not in data else raw
    if (not isinstance(splits, list) or not splits or not all(isinstance(s, str) and s.strip() for s in splits)
            or len(set(splits)) != len(splits)):
        raise SpecError(f"{where}: splits must be a non-empty list of distinct split names, got {raw!r}")
    return splits


def _image_config(raw: Any, where: str) -> ImageConfig:
    """``image``: ``resize`` is ``model`` or a side of 1 to :data:`MAX_IMAGE_SIDE` pixels, ``crop`` one of
    :data:`CROPS`."""
    cfg = from_mapping(ImageConfig, raw, str(where), "image")
    if cfg.crop not in CROPS:
        raise SpecError(f"{where}: image.crop must be one of {', '.join(CROPS)}, got {cfg.crop!r}")
    side = cfg.resize
    if side not in (None, "model") and not (isinstance(side, int) and not isinstance(side, bool)
                                            and 1 <= side <= MAX_IMAGE_SIDE):
        raise SpecError(f"{where}: image.resize must be 'model' or a side of 1 to {MAX_IMAGE_SIDE} pixels, "
                        f"got {side!r}")
    return cfg


def _check_ks(options: Any, where: str) -> None:
    """``options.ks`` (retrieval R@K): a non-empty list of distinct whole numbers in ``1..MAX_K``;
    ``options.recall_k``: one such number."""
    if not isinstance(options, dict):
        return  # the adapter's options check reports it

    def is_k(k: Any) -> bool:
        return isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_K

    ks = options.get("ks", [1])
    if not isinstance(ks, (list, tuple)) or not ks or not all(is_k(k) for k in ks) or len(set(ks)) != len(ks):
        raise SpecError(f"{where}: options.ks must be a non-empty list of distinct whole numbers from 1 to {MAX_K}, "
                        f"got {ks!r}")
    if "recall_k" in options and not is_k(options["recall_k"]):
        raise SpecError(f"{where}: options.recall_k must be a whole number from 1 to {MAX_K}, "
                        f"got {options['recall_k']!r}")


def _check_dataset_options(ds: DatasetConfig, where: str) -> None:
    """The dataset's data paths are local paths under --data-root: a URL or ``pipe:`` name is refused, as is a
    loader keyword only the command sets (:data:`COMMAND_OPTIONS`) — a spec file never lets the loader fetch or
    run anything (only ``--allow-remote-shards`` on the command line can)."""
    for key in COMMAND_OPTIONS:
        if key in ds.options:
            why = "only --allow-remote-shards on the command line" if key == "allow_remote" else "the command"
            raise SpecError(f"{where}: dataset.options.{key} is not allowed in a task spec ({why} sets it)")
    named = [("dataset.path", ds.path)] + [("dataset.annotations", a) for a in ds.annotations]
    for key in PATH_OPTIONS:
        value = ds.options.get(key)
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            raise SpecError(f"{where}: dataset.options.{key} must be a path or a list of paths (strings)")
        named += [(f"dataset.options.{key}", v) for v in (value if isinstance(value, list) else [value])
                  if isinstance(v, str)]
    for name, value in named:
        if _SCHEME.match(value):
            raise SpecError(f"{where}: {name} {value!r} is a URL or command, not a path under --data-root (a task "
                            "spec names local files only)")
        if PurePosixPath(value).is_absolute() or ".." in PurePosixPath(value).parts:
            raise SpecError(f"{where}: {name} {value!r} leaves --data-root (an absolute path or '..'); a task spec "
                            "names paths under it")


def _layout(raw: Any, where: str) -> Dict[str, str]:
    """``layout``: a mapping of paths (relative to --data-root) to what each one is and where it comes from."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise SpecError(f"{where}: layout must map paths to descriptions (strings)")
    return {str(k): v for k, v in raw.items()}
