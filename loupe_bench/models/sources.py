"""Where ``--model`` / ``load_model(ref)`` finds a model: a registry of model-source resolvers.

Each resolver in :data:`MODEL_SOURCES` answers :meth:`ModelSource.matches` for a reference (a string) and builds the
model. The resolvers' matches are disjoint (the path routes never take an ``open_clip:`` / ``hf-hub:``
reference), so exactly one applies (or none: a :class:`SpecError` /
:class:`CheckpointError` listing what is accepted):

==================  ================================================================================================
``open-clip``       ``open_clip:<ARCH>:<checkpoint .pt / .safetensors>``: a local open_clip checkpoint, converted;
                    ``open_clip:<ARCH>:<TAG>``: the weights of a pretrained tag of open_clip's registry (from the
                    cache, or downloaded by open_clip), converted (:mod:`~loupe_bench.models.pretrained_names`)
``hf-hub``          ``hf-hub:<ORG>/<NAME>``: a Hugging Face ``CLIPModel`` repository, from the HF cache (or fetched),
                    loaded as a Hugging Face ``CLIPModel`` directory
``hf-clip-dir``     a Hugging Face ``CLIPModel`` directory: ``config.json`` with ``model_type: clip`` (or
                    ``architectures`` holding ``CLIPModel``) and ``model.safetensors`` / ``pytorch_model.bin``
``model-dir``       our model or training-run directory: ``config.json`` holding a spec (``family``) and
                    ``model.safetensors`` (a run without final weights: the checkpoint ``checkpoints/latest`` names)
``spec-file``       a model spec file (``.yaml`` / ``.yml`` / ``.json``): a freshly initialised model
``spec-name``       a shipped spec name (``loupe-bench list models``): a freshly initialised model
==================  ================================================================================================

The checkpoint and by-name routes build a ``clip-pretrained`` model
(:class:`~loupe_bench.models.pretrained_clip.PretrainedCLIP`) whose spec's ``pretrained`` is the reference, so
``save_model`` of such a model writes an ordinary model directory.

:func:`load_model` / :func:`load_model_and_transforms` (the public entry points) live here. This module uses the
factory (spec routes) and the model-directory format (:mod:`~loupe_bench.models.checkpoint`); neither imports it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

from torch import nn

from ..errors import CheckpointError, SpecError
from ..registry import Registry
from ..utils.run_files import CONFIG_FILE, WEIGHTS_FILE, run_state
from .checkpoint import is_model_dir, load_model_dir
from .factory import available_specs, create_model, get_spec, read_spec_file

MODEL_SOURCES = Registry("model source")

#: weight files of a Hugging Face model directory (any one of them)
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


@dataclass
class Loaded:
    """A resolved model and what a result record says about it.

    Attributes:
        model: the model (eval mode for checkpoints).
        name: display name (the spec name, or the directory / file name).
        source: where it came from, human-readable.
        weights: the file whose sha256 identifies the weights (``None``: hash the state dict instead).
        spec: the spec as given, for spec routes (``None``: the model's own ``spec``).
        run: a training run's state (:func:`~loupe_bench.utils.run_files.run_state`; ``None``: not a run).
        directory: the folder the model was loaded from (model / run / Hugging Face directory; ``None``: no folder).
    """

    model: nn.Module
    name: str
    source: str
    weights: Optional[Path] = None
    spec: Optional[Dict[str, Any]] = None
    run: Optional[Dict[str, Any]] = None
    directory: Optional[Path] = None


class ModelSource:
    """A way to find a model from a reference string; subclasses register in :data:`MODEL_SOURCES`."""

    #: one line for error messages and the docs
    describes: str = ""

    def matches(self, ref: str) -> bool:
        raise NotImplementedError

    def load(self, ref: str, seed: Optional[int] = None) -> Loaded:
        raise NotImplementedError


def _read_config(path: Path) -> Optional[Dict[str, Any]]:
    """The ``config.json`` object of folder ``path``; ``None`` when there is none. One that is there but not a
    regular file, too large (:data:`~loupe_bench.utils.bounded.LIMITS` ``["config"]``), malformed or not an object
    is a :class:`CheckpointError` naming it."""
    from .untrusted import optional_config

    return optional_config(path / CONFIG_FILE)


def is_hf_clip_config(config: Optional[Dict[str, Any]]) -> bool:
    """A transformers ``CLIPModel`` config: ``model_type == "clip"`` or ``"CLIPModel"`` in ``architectures`` (a
    list)."""
    if not isinstance(config, dict) or "family" in config:
        return False
    archs = config.get("architectures")
    return config.get("model_type") == "clip" or (isinstance(archs, list) and "CLIPModel" in archs)


def _named(ref: str) -> bool:
    """A by-name reference (``open_clip:...`` / ``hf-hub:...``), which no path route takes."""
    return str(ref).startswith(("open_clip:", "hf-hub:"))


def _pretrained_clip(ref: str, name: str) -> nn.Module:
    return create_model({"name": name, "family": "clip-pretrained", "pretrained": ref,
                         "description": f"checkpoint {ref}"}).eval()


@MODEL_SOURCES.register("open-clip")
class OpenClipCheckpoint(ModelSource):
    """open_clip:<ARCH>:<checkpoint>: a local open_clip checkpoint converted to our CLIP model."""

    describes = "open_clip:<ARCH>:<checkpoint .pt/.safetensors> (a local open_clip checkpoint) or " \
                "open_clip:<ARCH>:<TAG> (a pretrained tag: loupe-bench list pretrained)"

    def matches(self, ref: str) -> bool:
        from .open_clip_convert import is_open_clip_ref

        return is_open_clip_ref(ref)

    def load(self, ref: str, seed: Optional[int] = None) -> Loaded:
        from .open_clip_convert import parse_ref
        from .pretrained_names import open_clip_tag, tag_weights

        tagged = open_clip_tag(ref)  # (ARCH, TAG) of a pretrained tag, None for a checkpoint file
        if tagged is not None:
            name = "-".join(tagged)
            return Loaded(_pretrained_clip(ref, name), name, ref, tag_weights(*tagged)[0])
        arch, path = parse_ref(ref)
        return Loaded(_pretrained_clip(ref, f"{arch}-{path.stem}"), f"{arch}-{path.stem}", ref, path)


@MODEL_SOURCES.register("hf-hub")
class HFHubRepository(ModelSource):
    """hf-hub:ORG/NAME: a Hugging Face CLIPModel repository, from the HF cache (or fetched when online)."""

    describes = "hf-hub:<ORG>/<NAME> (a Hugging Face CLIPModel repository, from the HF cache or the Hub)"

    def matches(self, ref: str) -> bool:
        return str(ref).startswith("hf-hub:")

    def load(self, ref: str, seed: Optional[int] = None) -> Loaded:
        from .pretrained_names import hub_repo_id, hub_snapshot, hub_weights

        folder = hub_snapshot(ref)  # validated, fetched or found in the cache, checked to be a CLIPModel repository
        return Loaded(_pretrained_clip(ref, hub_repo_id(ref)), hub_repo_id(ref), ref, hub_weights(folder))


@MODEL_SOURCES.register("hf-clip-dir")
class HFClipDirectory(ModelSource):
    """A Hugging Face CLIPModel directory (config.json model_type clip + weights)."""

    describes = "a Hugging Face CLIPModel directory (config.json with model_type 'clip' + model.safetensors or " \
                "pytorch_model.bin)"

    def matches(self, ref: str) -> bool:
        path = Path(ref).expanduser()
        return not _named(ref) and path.is_dir() and is_hf_clip_config(_read_config(path))

    def load(self, ref: str, seed: Optional[int] = None) -> Loaded:
        path = Path(ref).expanduser()
        if not any(os.path.lexists(path / f) for f in HF_WEIGHT_FILES):  # a special file is refused when read
            raise CheckpointError(f"{path}: Hugging Face CLIP config without weights (expected one of "
                                  f"{', '.join(HF_WEIGHT_FILES)})")
        weights = next((path / f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file()), None)
        return Loaded(_pretrained_clip(str(path), path.name), path.name, str(path), weights, directory=path)


@MODEL_SOURCES.register("model-dir")
class ModelDirectory(ModelSource):
    """Our model directory or training-run directory (config.json spec + model.safetensors)."""

    describes = "a loupe-bench model or training-run directory (config.json spec + model.safetensors)"

    def matches(self, ref: str) -> bool:
        path = Path(ref).expanduser()
        return not _named(ref) and path.is_dir() and not is_hf_clip_config(_read_config(path))

    def load(self, ref: str, seed: Optional[int] = None) -> Loaded:
        path = Path(ref).expanduser()
        config = _read_config(path)
        if config is not None and "family" not in config:
            kind = f"model_type {config['model_type']!r}" if "model_type" in config else "no 'family' key"
            raise CheckpointError(f"{path}: config.json is not a loupe-bench model spec ({kind}); --model accepts "
                                  + "; ".join(MODEL_SOURCES.get(n).describes for n in MODEL_SOURCES
                                              if n != "spec-name"))
        if (path / CONFIG_FILE).is_file():
            state = run_state(path)   # an unfinished run stands for the checkpoint `latest` names, inside the run
            if state["is_run"] and state["weights"] is not None:
                return Loaded(load_model_dir(path, weights=state["weights"]), path.name, str(path), state["weights"],
                              run=state, directory=path)
        if is_model_dir(path):
            return Loaded(load_model_dir(path), path.name, str(path), path / WEIGHTS_FILE, directory=path)
        raise CheckpointError(f"{path}: not a model directory; --model accepts " + "; ".join(
            MODEL_SOURCES.get(n).describes for n in MODEL_SOURCES if n not in ("spec-name",)))


def _seed_note(seed: Optional[int]) -> str:
    return "" if seed is None else f" (initialised with seed {seed})"


@MODEL_SOURCES.register("spec-file")
class SpecFile(ModelSource):
    """A model spec file (.yaml / .yml / .json): a freshly initialised model."""

    describes = "a model spec file (.yaml / .yml / .json)"

    def matches(self, ref: str) -> bool:
        path = Path(ref).expanduser()
        return not _named(ref) and path.is_file() and path.suffix in (".yaml", ".yml", ".json")

    def load(self, ref: str, seed: Optional[int] = None) -> Loaded:
        spec = read_spec_file(Path(ref).expanduser())
        return Loaded(create_model(spec, seed=seed), str(spec["name"]), f"spec {ref}{_seed_note(seed)}",
                      spec=spec)


@MODEL_SOURCES.register("spec-name")
class SpecName(ModelSource):
    """A shipped model spec name: a freshly initialised model."""

    describes = "a shipped model spec name (loupe-bench list models)"

    def matches(self, ref: str) -> bool:
        return ref in available_specs() and not Path(ref).expanduser().exists()  # a folder of that name wins

    def load(self, ref: str, seed: Optional[int] = None) -> Loaded:
        spec = get_spec(ref)
        return Loaded(create_model(spec, seed=seed), str(spec["name"]), f"spec {ref}{_seed_note(seed)}",
                      spec=spec)


def resolve_source(ref: Any) -> ModelSource:
    """The one resolver in :data:`MODEL_SOURCES` that matches ``ref``; none is a :class:`SpecError`."""
    text = str(ref)
    hits = [name for name in MODEL_SOURCES if MODEL_SOURCES.get(name)().matches(text)]
    if len(hits) > 1:  # the matches are disjoint by construction; two hits is a bug
        raise RuntimeError(f"model reference {text!r} matches several sources: {hits}")
    if not hits:
        known = ", ".join(sorted(available_specs())) or "(none)"
        raise SpecError(f"unknown model {text!r}; known spec names: {known}; or give "
                        + "; ".join(MODEL_SOURCES.get(n).describes for n in MODEL_SOURCES if n != "spec-name"))
    return MODEL_SOURCES.get(hits[0])()


def load_source(ref: Any, seed: Optional[int] = None) -> Loaded:
    """Resolve and load ``ref`` (see :data:`MODEL_SOURCES`); ``seed`` seeds freshly initialised spec models."""
    return resolve_source(ref).load(str(Path(ref)) if isinstance(ref, Path) else str(ref), seed)


def load_model(name_or_path: Union[str, Path], seed: Optional[int] = None):
    """Load a model from any reference ``--model`` accepts (see :data:`MODEL_SOURCES`).

    Args:
        name_or_path: one of

            * a shipped spec name or a spec file (``.yaml`` / ``.json``): a freshly initialised model (or a pretrained
              one, as the spec says);
            * our model directory (``model.safetensors`` + ``config.json``) or training-run directory (without final
              weights: the checkpoint ``checkpoints/latest`` names), rebuilt with its weights;
            * a Hugging Face ``CLIPModel`` directory (``config.json`` with ``model_type: clip`` + ``model.safetensors``
              / ``pytorch_model.bin``; its tokenizer when saved there);
            * ``open_clip:<ARCH>:<checkpoint .pt / .safetensors>``: a local open_clip checkpoint, converted;
              ``open_clip:<ARCH>:<TAG>``: a pretrained tag of open_clip's registry (HF cache, or downloaded);
            * ``hf-hub:<ORG>/<NAME>``: a Hugging Face ``CLIPModel`` repository (HF cache, or downloaded).
        seed: seeds the initialisation of spec models (ignored for checkpoints).

    Returns:
        The model (:class:`~loupe_bench.models.base.VLModel`); ``model.preprocess`` is its eval image transform and
        ``model.tokenizer`` its tokenizer (see :func:`load_model_and_transforms`).
    """
    return load_source(name_or_path, seed=seed).model


def load_model_and_transforms(name_or_path: Union[str, Path], seed: Optional[int] = None):
    """``(model, preprocess, tokenizer)``, like open_clip's ``create_model_and_transforms`` + ``get_tokenizer``.

    ``preprocess`` maps a PIL image to the normalised ``[3, S, S]`` tensor the model expects (resize the short side,
    centre crop, normalise with the checkpoint's mean / std); ``tokenizer(texts)`` returns a
    :class:`~loupe_bench.models.base.TokenBatch` (``input_ids``, ``attention_mask``, ``offsets``). Arguments as for
    :func:`load_model`.
    """
    model = load_model(name_or_path, seed=seed)
    return model, model.preprocess, model.tokenizer


__all__ = ["MODEL_SOURCES", "ModelSource", "Loaded", "resolve_source", "load_source", "is_hf_clip_config",
           "HF_WEIGHT_FILES", "load_model", "load_model_and_transforms"]
