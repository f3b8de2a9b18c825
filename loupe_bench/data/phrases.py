"""Noun-phrase spans for real captions (the phrases LOUPE grounds): spaCy noun chunks -> ``phrases.json`` sidecar.

spaCy is an optional dependency; without it (or without an English pipeline) :func:`load_parser` raises a
one-line :class:`~loupe_bench.errors.DataError` that says how to install one.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..errors import DataError
from ..utils.io import atomic_write_json, read_json

PathLike = Union[str, os.PathLike]
INSTALL_HINT = "pip install spacy && python -m spacy download {model}"


def load_parser(model: str = "en_core_web_sm") -> Callable[[str], List[Tuple[int, int]]]:
    """A function ``text -> [(start, end), ...]`` of noun-chunk character spans.

    Raises:
        DataError: spaCy or the English pipeline is not importable.
    """
    try:
        spacy = importlib.import_module("spacy")
    except ImportError:
        raise DataError(
            f"no phrase parser available: spaCy is not installed (install one with: {INSTALL_HINT.format(model=model)})"
        ) from None
    try:
        nlp = spacy.load(model, disable=["ner", "lemmatizer"])
    except (OSError, ImportError):
        raise DataError(
            f"no phrase parser available: spaCy English pipeline {model!r} is missing "
            f"(install it with: python -m spacy download {model})"
        ) from None

    def parse(text: str) -> List[Tuple[int, int]]:
        return [(c.start_char, c.end_char) for c in nlp(text).noun_chunks]

    return parse


def extract_phrases(
    karpathy_json: PathLike,
    out: Optional[PathLike] = None,
    model: str = "en_core_web_sm",
    parser: Optional[Callable[[str], List[Tuple[int, int]]]] = None,
) -> Path:
    """Write ``{str(sentid): [{start, end, text}]}`` for every caption of a Karpathy JSON.

    Args:
        karpathy_json: the caption file.
        out: sidecar path (default ``phrases.json`` beside the JSON).
        model: spaCy pipeline name.
        parser: span function (tests / other parsers); default :func:`load_parser`.
    """
    path = Path(karpathy_json)
    parse = parser or load_parser(model)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError("expected an object with an 'images' list (Karpathy layout)", file=str(path))
    sidecar: Dict[str, List[Dict[str, Any]]] = {}
    for im in data["images"]:
        for s in im.get("sentences", []):
            raw = s.get("raw") or ""
            sidecar[str(s["sentid"])] = [{"start": a, "end": b, "text": raw[a:b]} for a, b in parse(raw) if b > a]
    target = Path(out) if out else path.parent / "phrases.json"
    atomic_write_json(target, sidecar)
    return target
