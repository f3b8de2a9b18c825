"""Reading checkpoint files and architecture configs from a user's folder: every check runs before anything is
allocated, and every refusal is one :class:`~loupe_bench.errors.CheckpointError` line naming the file.

Rules:

* **file type**: weights, configs and tokenizer files are opened only when they are regular files
  (:func:`~loupe_bench.utils.bounded.regular_file`); a FIFO or a device is refused without being opened.
* **safetensors**: the 8-byte header length must fit the file and :data:`~loupe_bench.utils.bounded.LIMITS`
  ``["header"]``; the header must be a JSON object whose every tensor has a known dtype, a shape of non-negative
  integers and ``data_offsets [begin, end]`` inside the data section with ``end - begin = prod(shape) * itemsize``
  (:func:`check_safetensors`). A header claiming more than the file holds (a truncated or lying file) is refused
  before a tensor is read.
* **torch pickles** are read with ``torch.load(weights_only=True)`` only; a refusal is one line saying what was
  refused (:func:`load_torch_file`), and the result must be a mapping of string keys to tensors
  (:func:`tensor_state`).
* **architecture sizes** (open_clip JSON configs, Hugging Face ``config.json``): every size field is an integer in
  its range (:data:`SIZE_RANGES`), and the parameter count estimated from them (:func:`tower_params`) is at most
  :data:`MAX_PARAMS`; the image tower's patch grid holds at most :data:`MAX_PATCHES` patches.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import CheckpointError
from ..utils.bounded import LIMITS, json_load, load_json_file, regular_file

PathLike = os.PathLike

#: most parameters an architecture config may describe
MAX_PARAMS = 2_000_000_000
#: most patches of an image tower's grid (``(image_size / patch_size) ** 2``)
MAX_PATCHES = 1 << 16

#: inclusive ranges of the size fields of architecture configs (open_clip names and transformers names)
SIZE_RANGES: Dict[str, Tuple[int, int]] = {
    "width": (1, 1 << 16), "hidden_size": (1, 1 << 16),
    "layers": (1, 1024), "num_hidden_layers": (1, 1024),
    "heads": (1, 1024), "num_attention_heads": (1, 1024), "head_width": (1, 1 << 13),
    "intermediate_size": (1, 1 << 18),
    "image_size": (1, 1 << 13), "patch_size": (1, 1 << 13),
    "context_length": (1, 1 << 16), "max_position_embeddings": (1, 1 << 16),
    "vocab_size": (1, 1 << 22), "type_vocab_size": (0, 1 << 10),
    "embed_dim": (1, 1 << 16), "projection_dim": (1, 1 << 16),
}
#: range of open_clip's ``mlp_ratio``
MLP_RATIO_RANGE = (0.0, 64.0)

#: bytes per element of the safetensors dtypes torch can hold
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                      "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def _fail(path: Any, message: str) -> CheckpointError:
    return CheckpointError(f"{path}: {message}")


# -- safetensors ------------------------------------------------------------------------------------------------------
def check_safetensors(path: PathLike) -> Path:
    """``path`` when it is a regular safetensors file whose header fits the file (see the module rules); else a
    :class:`CheckpointError` naming it. Reads the header only."""
    p = regular_file(path, what="weights file", error=CheckpointError)
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise _fail(p, f"not a safetensors file ({size} bytes, shorter than its header length)")
        n = int.from_bytes(head, "little")
        if n > LIMITS["header"]:
            raise _fail(p, f"safetensors header of {n:,} bytes is above the limit of {LIMITS['header']:,} bytes")
        if 8 + n > size:
            raise _fail(p, f"truncated safetensors file: header of {n:,} bytes, file of {size:,} bytes")
        raw = fh.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(p, "safetensors header is not UTF-8 JSON") from None
    header = json_load(text, str(p), error=CheckpointError)
    if not isinstance(header, dict):
        raise _fail(p, "safetensors header is not a JSON object")
    data_len = size - 8 - n
    for name, entry in header.items():
        if name != "__metadata__":
            _check_tensor_entry(p, name, entry, data_len)
    return p


def _check_tensor_entry(p: Path, name: str, entry: Any, data_len: int) -> None:
    """One header entry: known dtype, non-negative integer shape, offsets inside the data matching the shape."""
    if not isinstance(entry, dict):
        raise _fail(p, f"safetensors header entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        raise _fail(p, f"tensor {name!r}: unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _fail(p, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise _fail(p, f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
    if offsets[1] > data_len:
        raise _fail(p, f"tensor {name!r}: data ends at byte {offsets[1]:,} of a data section of {data_len:,} bytes "
                       "(truncated file or lying header)")
    expected = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise _fail(p, f"tensor {name!r}: shape {shape} {dtype} needs {expected:,} bytes, its offsets give "
                       f"{offsets[1] - offsets[0]:,}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_safetensors(path: PathLike) -> Dict[str, Any]:
    """The tensors of a safetensors file checked by :func:`check_safetensors`; any read failure is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = check_safetensors(path)
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as exc:
        raise _fail(p, f"unreadable safetensors file ({type(exc).__name__}: {_first_line(exc)})") from None


def check_safetensors_index(path: PathLike) -> Path:
    """A sharded safetensors index: bounded JSON whose ``weight_map`` names shard files of the same folder, each
    checked by :func:`check_safetensors`."""
    p = Path(path)
    index = load_json_file(p, kind="config", error=CheckpointError)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise _fail(p, "weight_map is not an object of tensor name -> shard file name")
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard or shard in (".", ".."):
            raise _fail(p, f"weight_map shard {shard!r} is not a file name in the same folder")
        check_safetensors(p.parent / shard)
    return p


# -- torch pickles ----------------------------------------------------------------------------------------------------
def torch_refusal(exc: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` failed, without torch's advice to load unsafely."""
    text = " ".join(str(exc).split())
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"refused: the pickle holds a Python object ({found.group(1)}) that the safe tensor loader does not "
                "allow; save a state dict of tensors (or a .safetensors file)")
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Unpickler" in text:
        return "refused: not a torch.save file of tensors that the safe tensor loader accepts"
    return f"unreadable checkpoint ({type(exc).__name__}: {_first_line(exc)})"


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0].strip() if lines else ""
    return line if len(line) <= limit else line[:limit] + "..."


def load_torch_file(path: PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU of a regular file; a refusal or a corrupt file is one line
    (:func:`torch_refusal`), and torch's warnings are not printed."""
    import torch

    p = regular_file(path, what="checkpoint file", error=CheckpointError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a refused or corrupt pickle; all are the file's fault
        raise _fail(p, torch_refusal(exc)) from None


def tensor_state(obj: Any, path: PathLike) -> Dict[str, Any]:
    """``obj`` as a state dict: a training checkpoint's ``state_dict`` / ``model`` / ``module`` unwrapped; every key
    a string and every value a tensor, else a :class:`CheckpointError` naming the first offending entry."""
    from torch import Tensor

    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise _fail(path, f"expected a state dict of tensors, got a {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _fail(path, f"not a state dict: key {key!r} is a {type(key).__name__}, not a string")
        if not isinstance(value, Tensor):
            raise _fail(path, f"not a state dict of tensors: {key!r} holds a {type(value).__name__}")
    return obj


# -- architecture sizes -----------------------------------------------------------------------------------------------
def size_field(where: str, section: Mapping[str, Any], key: str, default: int) -> int:
    """``section[key]`` (``default`` when absent or null) as an integer within :data:`SIZE_RANGES` ``[key]``."""
    value = section.get(key)
    if value is None:
        return int(default)
    lo, hi = SIZE_RANGES[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value) or not lo <= value <= hi:
        raise CheckpointError(f"{where}: {key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def ratio_field(where: str, section: Mapping[str, Any], key: str, default: float) -> float:
    """``section[key]`` as a finite number within :data:`MLP_RATIO_RANGE` (exclusive low end)."""
    value = section.get(key, default)
    lo, hi = MLP_RATIO_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi:
        raise CheckpointError(f"{where}: {key} must be a number in ({lo:g}, {hi:g}], got {value!r}")
    return float(value)


def tower_params(width: int, layers: int, mlp: int, positions: int, embed_rows: int) -> int:
    """Parameters of a pre-norm transformer tower: per layer ``4 W² + 2 W M`` weights plus biases and norms, a
    position table of ``positions`` rows and an input table (token or patch embedding) of ``embed_rows`` rows."""
    per_layer = 4 * width * width + 2 * width * mlp + 9 * width + mlp
    return layers * per_layer + (positions + embed_rows) * width


def check_params(where: str, params: int) -> None:
    if params > MAX_PARAMS:
        raise CheckpointError(f"{where}: the architecture has about {params:.3g} parameters, above the limit of "
                              f"{MAX_PARAMS:.3g}")


def check_patch_grid(where: str, image_size: int, patch_size: int) -> int:
    """Patches of the image grid; a patch larger than the image or a grid above :data:`MAX_PATCHES` is refused."""
    if patch_size > image_size:
        raise CheckpointError(f"{where}: patch_size {patch_size} is larger than image_size {image_size}")
    patches = (image_size // patch_size) ** 2
    if patches > MAX_PATCHES:
        raise CheckpointError(f"{where}: image_size {image_size} / patch_size {patch_size} gives {patches:,} patches, "
                              f"above the limit of {MAX_PATCHES:,}")
    return patches


def check_heads(where: str, width: int, heads: int) -> None:
    if width % heads:
        raise CheckpointError(f"{where}: width {width} is not divisible by its {heads} attention heads")


def regular_files_of(folder: Path, names: Optional[Tuple[str, ...]] = None) -> None:
    """Every one of ``names`` present in ``folder`` (``None``: every entry but sub-folders; a link included) is a
    regular file: a FIFO, a device, a dangling link or a folder of such a name is refused without being opened.
    Sizes are checked where a file is read (:func:`read_config_json`, :func:`check_safetensors`)."""
    entries = sorted(p.name for p in folder.iterdir() if not p.is_dir()) if names is None else names
    for name in entries:
        path = Path(folder) / name
        if os.path.lexists(path):
            regular_file(path, what=name, error=CheckpointError)


def read_config_json(path: PathLike) -> Dict[str, Any]:
    """A bounded JSON object file (:data:`~loupe_bench.utils.bounded.LIMITS` ``["config"]``); else one line."""
    data = load_json_file(path, kind="config", error=CheckpointError)
    if not isinstance(data, dict):
        raise _fail(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def optional_config(path: PathLike) -> Optional[Dict[str, Any]]:
    """:func:`read_config_json` of ``path``, or ``None`` when nothing is there (no file, no link)."""
    return read_config_json(path) if os.path.lexists(path) else None
