"""Pretrained models by name, found through the libraries' own registries and caches.

Two reference forms (``--model`` on the CLI, ``load_model`` in Python, ``pretrained:`` of a ``clip-pretrained``
spec):

* ``open_clip:ARCH:TAG``: ``TAG`` a pretrained tag of open_clip's registry for architecture ``ARCH``
  (``open_clip:ViT-B-32:laion2b_s34b_b79k``; ``loupe-bench list pretrained ARCH`` lists them). The tag's weights file
  comes from open_clip's pretrained cfg (``open_clip.pretrained.get_pretrained_cfg``) and open_clip's download and
  cache logic (``download_pretrained``, into the Hugging Face cache); it is then converted like a local open_clip
  checkpoint (:func:`~loupe_bench.models.open_clip_convert.load_open_clip`: safetensors, or ``weights_only``).
  The third part is a tag when it is no existing file, has no checkpoint suffix (``.pt`` ...) and is tag-shaped
  (letters, digits, ``_ . + -``); an existing file is always the file.
* ``hf-hub:ORG/NAME``: a Hugging Face ``CLIPModel`` repository, fetched with ``huggingface_hub.snapshot_download``
  (its config, tokenizer and processor files and the safetensors weights, else the pickled ones) into the Hugging
  Face cache, then loaded from that folder exactly as a local Hugging Face CLIP directory (all of its checks).
  Remote code is never run.

Cache and network: the Hugging Face cache is ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else huggingface_hub's default
(read when a name is resolved). With ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, only the cache is looked
at, never the network; a name missing from it is one :class:`CheckpointError` line saying what is missing and how
to fetch it. Names are validated (:func:`hub_repo_id`, :func:`open_clip_tag`) before any library sees them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..errors import CheckpointError, SpecError
from .hf_folder import PREPROCESSOR_FILE, PROCESSOR_FILE
from .open_clip_convert import PREFIX as OPEN_CLIP_PREFIX
from .open_clip_convert import _import_open_clip, parse_ref
from .towers import hub_offline

HF_HUB_PREFIX = "hf-hub:"

#: one part of a Hub repository id (HF's rule, ASCII only): word characters, ``-`` and ``.``, starting and ending
#: with a letter, digit or ``_``, at most 96 characters, no ``--`` or ``..``
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
#: an open_clip architecture name or pretrained tag
_OPEN_CLIP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")
#: suffixes that make the third part of ``open_clip:ARCH:X`` a checkpoint file, never a tag
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar")

#: files of a Hugging Face CLIP repository fetched besides the weights
HUB_META_FILES = ("config.json", PREPROCESSOR_FILE, PROCESSOR_FILE, "tokenizer.json", "tokenizer_config.json",
                  "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json")
HUB_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")
HUB_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin")

#: resolved names of this process: (kind, name, cache, offline) -> file or folder
_RESOLVED: Dict[Tuple[str, str, str, bool], Path] = {}


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache: ``HF_HUB_CACHE`` (or the older ``HUGGINGFACE_HUB_CACHE``), else
    ``HF_HOME/hub``, else huggingface_hub's default; read from the environment at each call."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return Path(os.environ[key]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def _offline_note() -> str:
    return "HF_HUB_OFFLINE is set, so only the cache was searched"


# -- hf-hub:ORG/NAME -----------------------------------------------------------------------------------------------
def is_hf_hub_ref(text: Any) -> bool:
    return str(text).startswith(HF_HUB_PREFIX)


def hub_repo_id(ref: str) -> str:
    """``ORG/NAME`` of ``hf-hub:ORG/NAME``, checked before any library sees it: two parts of letters, digits, ``_``,
    ``-`` and ``.`` (no URL, no ``..``, no leading ``/``, no revision); else one :class:`SpecError` line."""
    text = str(ref)[len(HF_HUB_PREFIX):]
    parts = text.split("/")
    if len(parts) != 2 or not all(_REPO_PART.fullmatch(p) and ".." not in p and "--" not in p for p in parts):
        raise SpecError(f"model {str(ref)[:200]!r}: expected hf-hub:ORG/NAME, a Hugging Face repository id (two "
                        "names of letters, digits, '_', '-' and '.', e.g. hf-hub:openai/clip-vit-base-patch32)")
    return text


def _hub_failure(ref: str, repo: str, cache: Path, offline: bool, exc: BaseException) -> str:
    """One line for a failed ``snapshot_download``."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    fetch = (f"fetch it once online: run this command without HF_HUB_OFFLINE=1, or hf download {repo} --include "
             "'*.json' --include '*.txt' --include 'model*.safetensors'")
    if isinstance(exc, GatedRepoError):
        return f"{ref}: the repository is gated; accept its terms on huggingface.co and log in (hf auth login)"
    if isinstance(exc, RepositoryNotFoundError):
        return f"{ref}: no such repository on the Hugging Face Hub (or it is private: log in with hf auth login)"
    if isinstance(exc, LocalEntryNotFoundError) or offline:
        why = _offline_note() if offline else "the Hub could not be reached"
        return f"{ref}: not in the Hugging Face cache {cache} ({why}); {fetch}"
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "no detail"
    return f"{ref}: cannot fetch {repo} from the Hugging Face Hub ({type(exc).__name__}: {detail})"


def _snapshot(repo: str, cache: Path, offline: bool, patterns: Iterable[str]) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo, cache_dir=str(cache), local_files_only=offline,
                                  allow_patterns=list(patterns)))


def hub_snapshot(ref: str) -> Path:
    """The local folder (a snapshot of the Hugging Face cache) of ``hf-hub:ORG/NAME``: fetched when online (config,
    tokenizer, processor files and safetensors weights, else the pickled weights), the cached snapshot of ``main``
    when offline. Checked to be a ``CLIPModel`` repository with weights; any failure is one line."""
    repo = hub_repo_id(ref)
    offline, cache = hub_offline(), hub_cache_dir()
    key = ("hf-hub", repo, str(cache), offline)
    if key in _RESOLVED and _RESOLVED[key].is_dir():
        return _RESOLVED[key]
    try:
        folder = _snapshot(repo, cache, offline, HUB_META_FILES + HUB_SAFE_WEIGHTS)
        if not offline and not _weight_files(folder):
            folder = _snapshot(repo, cache, offline, HUB_META_FILES + HUB_PICKLED_WEIGHTS)
    except Exception as exc:  # the hub library raises many types (HTTP, cache, offline); each is one line here
        raise CheckpointError(_hub_failure(ref, repo, cache, offline, exc)) from None
    _require_clip_repo(ref, folder)
    _RESOLVED[key] = folder
    return folder


def _weight_files(folder: Path) -> List[str]:
    return [f for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json") if os.path.lexists(folder / f)]


def _require_clip_repo(ref: str, folder: Path) -> None:
    """A ``CLIPModel`` config (``model_type: clip`` or ``CLIPModel`` in ``architectures``) and a weights file."""
    from .untrusted import optional_config

    config = optional_config(folder / "config.json")
    if config is None:
        hint = "; for an open_clip repository use open_clip:ARCH:TAG" if \
            os.path.lexists(folder / "open_clip_config.json") else ""
        raise CheckpointError(f"{ref}: the repository has no config.json, so it is not a transformers CLIPModel "
                              f"repository{hint}")
    archs = config.get("architectures")
    if config.get("model_type") != "clip" and not (isinstance(archs, list) and "CLIPModel" in archs):
        raise CheckpointError(f"{ref}: not a CLIPModel repository (model_type {config.get('model_type')!r}); "
                              "hf-hub: takes Hugging Face CLIPModel repositories")
    if not _weight_files(folder):
        raise CheckpointError(f"{ref}: the cached snapshot {folder} holds no model.safetensors or "
                              "pytorch_model.bin; fetch it once online (without HF_HUB_OFFLINE=1)")


def hub_weights(folder: Path) -> Optional[Path]:
    """The single weights file of a snapshot whose sha256 identifies it (``None``: sharded weights)."""
    return next((folder / f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()), None)


# -- open_clip:ARCH:TAG --------------------------------------------------------------------------------------------
def open_clip_tag(ref: str) -> Optional[Tuple[str, str]]:
    """``(ARCH, TAG)`` when ``open_clip:ARCH:X`` names a pretrained tag, ``None`` when ``X`` is a checkpoint file
    (an existing file, or a name with a checkpoint suffix, :data:`CHECKPOINT_SUFFIXES`). Anything else (a missing
    path such as ``../../x``) is one :class:`CheckpointError` line, before any library is called."""
    arch, path = parse_ref(ref)
    raw = str(ref)[len(OPEN_CLIP_PREFIX):].split(":", 1)[1]
    if (os.path.lexists(path) and not path.is_dir()) or path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return None
    if not (_OPEN_CLIP_NAME.fullmatch(raw) and ".." not in raw):
        if path.is_dir():
            return None  # a folder: the file route says it is not a checkpoint file
        raise CheckpointError(f"open_clip model {str(ref)[:200]!r}: {raw[:120]!r} is neither an existing checkpoint "
                              "file nor a pretrained tag (letters, digits, '_', '.', '+', '-'); the tags: "
                              "loupe-bench list pretrained")
    if not _OPEN_CLIP_NAME.fullmatch(arch):
        raise CheckpointError(f"open_clip model {str(ref)[:200]!r}: a pretrained tag needs an open_clip architecture "
                              f"name, not {arch[:120]!r} (loupe-bench list pretrained)")
    return arch, raw


def tag_cfg(arch: str, tag: str) -> Dict[str, Any]:
    """open_clip's pretrained cfg of ``(arch, tag)``; an unknown architecture or tag is one line listing some
    known ones."""
    from .open_clip_convert import architecture_config

    open_clip = _import_open_clip(f"pretrained tag {tag!r}")
    cfg = open_clip.pretrained.get_pretrained_cfg(arch, tag)
    if cfg:
        return dict(cfg)
    architecture_config(arch)  # an unknown architecture: its own error
    tags = open_clip.pretrained.list_pretrained_tags_by_model(arch)
    known = ", ".join(tags[:10]) + (f" (+{len(tags) - 10} more)" if len(tags) > 10 else "") if tags else "none"
    raise SpecError(f"unknown pretrained tag {tag!r} for open_clip architecture {arch!r}; its tags: {known} "
                    f"(loupe-bench list pretrained {arch})")


def _weight_candidates(open_clip: Any, filename: str) -> List[str]:
    """The files open_clip's ``download_pretrained_from_hf`` tries, in its order: safetensors alternatives first."""
    alternatives = getattr(open_clip.pretrained, "_get_safe_alternatives", lambda f: ())
    return [*alternatives(filename), filename]


def _hub_entry(open_clip: Any, cfg: Dict[str, Any]) -> Tuple[str, str]:
    """``(repo id, weights file name)`` of a pretrained cfg's ``hf_hub`` entry (``org/name/`` + default file)."""
    repo, filename = os.path.split(str(cfg["hf_hub"]))
    return repo, filename or open_clip.pretrained.HF_WEIGHTS_NAME


def cached_tag_file(arch: str, tag: str, cfg: Optional[Dict[str, Any]] = None) -> Optional[Path]:
    """The cached weights file of a tag, looked up without any network access (``None``: not cached): the Hugging
    Face cache (:func:`hub_cache_dir`) for an ``hf_hub`` entry, open_clip's ``~/.cache/clip`` for a URL entry."""
    from huggingface_hub import try_to_load_from_cache

    open_clip = _import_open_clip(f"pretrained tag {tag!r}")
    cfg = tag_cfg(arch, tag) if cfg is None else cfg
    if cfg.get("hf_hub"):
        repo, filename = _hub_entry(open_clip, cfg)
        for name in _weight_candidates(open_clip, filename):
            found = try_to_load_from_cache(repo, name, cache_dir=str(hub_cache_dir()))
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
        return None
    target = Path("~/.cache/clip").expanduser() / os.path.basename(str(cfg.get("url", "")))
    return target if cfg.get("url") and target.is_file() else None


def _tag_fetch_hint(open_clip: Any, arch: str, tag: str, cfg: Dict[str, Any]) -> str:
    """Where the tag's weights were looked for, and how to fetch them."""
    if cfg.get("hf_hub"):
        repo, filename = _hub_entry(open_clip, cfg)
        where = f"looked for {'/'.join(_weight_candidates(open_clip, filename))} of {repo} in {hub_cache_dir()}"
    else:
        where = f"looked for {os.path.basename(str(cfg.get('url', '')))} in ~/.cache/clip"
    return (f"{where}; fetch it once online: run this command without HF_HUB_OFFLINE=1, or python -c 'import "
            f"open_clip; open_clip.create_model_and_transforms(\"{arch}\", pretrained=\"{tag}\")'")


def tag_weights(arch: str, tag: str) -> Tuple[Path, Dict[str, Any]]:
    """``(weights file, pretrained cfg)`` of ``open_clip:ARCH:TAG``: the cached file when offline (a missing one is
    one line saying how to fetch it), else open_clip's ``download_pretrained`` (which uses the cache)."""
    open_clip = _import_open_clip(f"pretrained tag {tag!r}")
    cfg = tag_cfg(arch, tag)
    offline, cache = hub_offline(), hub_cache_dir()
    key = ("open_clip", f"{arch}:{tag}", str(cache), offline)
    if key in _RESOLVED and _RESOLVED[key].is_file():
        return _RESOLVED[key], cfg
    if offline:
        found = cached_tag_file(arch, tag, cfg)
        if found is None:
            raise CheckpointError(f"open_clip:{arch}:{tag}: pretrained weights not in the local cache "
                                  f"({_offline_note()}; {_tag_fetch_hint(open_clip, arch, tag, cfg)})")
    else:
        try:
            found = Path(open_clip.pretrained.download_pretrained(cfg, cache_dir=str(cache) if cfg.get("hf_hub")
                                                                  else None))
        except Exception as exc:  # hub, HTTP and file errors of the download: one line each
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"open_clip:{arch}:{tag}: cannot fetch the pretrained weights ({detail}; "
                                  f"{_tag_fetch_hint(open_clip, arch, tag, cfg)})") from None
    _RESOLVED[key] = found
    return found, cfg


def load_open_clip_ref(ref: str):
    """``open_clip:ARCH:FILE`` or ``open_clip:ARCH:TAG`` -> the parts
    :func:`~loupe_bench.models.open_clip_convert.load_open_clip` returns."""
    from .open_clip_convert import load_open_clip

    tagged = open_clip_tag(ref)
    if tagged is None:
        return load_open_clip(ref)
    weights, cfg = tag_weights(*tagged)
    return load_open_clip(ref, weights=weights, tag_cfg=cfg)


# -- listing -------------------------------------------------------------------------------------------------------
def _converts(arch: str) -> str:
    from .open_clip_convert import _check_supported, architecture_config

    try:
        _check_supported(arch, architecture_config(arch))
    except (CheckpointError, SpecError):
        return "no"
    return "yes"


def list_pretrained(arch: Optional[str] = None) -> List[Tuple[str, str, str, str, str]]:
    """``(arch, tag, converts, in cache, weights)`` for every pretrained tag of open_clip's registry (of ``arch``
    only when given): ``converts`` says whether the architecture converts to ``CLIPModel`` (standard ViT CLIPs),
    ``in cache`` whether the weights are in the local cache (looked up without network), ``weights`` the Hugging
    Face repository (or URL) they come from."""
    open_clip = _import_open_clip("loupe-bench list pretrained")
    pairs = open_clip.list_pretrained()
    if arch is not None:
        if not _OPEN_CLIP_NAME.fullmatch(arch) or arch not in {a for a, _ in pairs}:
            known = sorted({a for a, _ in pairs})
            raise SpecError(f"no pretrained tags for open_clip architecture {arch[:120]!r}; architectures with tags "
                            f"include: {', '.join(known[:12])}, ... (loupe-bench list pretrained)")
        pairs = [(a, t) for a, t in pairs if a == arch]
    converts: Dict[str, str] = {}
    rows = []
    for a, t in pairs:
        cfg = dict(open_clip.pretrained.get_pretrained_cfg(a, t))
        cached = cached_tag_file(a, t, cfg) is not None
        source = _hub_entry(open_clip, cfg)[0] if cfg.get("hf_hub") else str(cfg.get("url", ""))
        rows.append((a, t, converts.setdefault(a, _converts(a)), "yes" if cached else "no", source))
    return rows


__all__ = ["HF_HUB_PREFIX", "hub_cache_dir", "is_hf_hub_ref", "hub_repo_id", "hub_snapshot", "hub_weights",
           "open_clip_tag", "tag_cfg", "tag_weights", "cached_tag_file", "load_open_clip_ref", "list_pretrained"]
