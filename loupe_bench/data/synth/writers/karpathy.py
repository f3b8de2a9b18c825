"""Karpathy captions: ``dataset_synthetic.json`` and the gold phrases ``phrases.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from ....utils.io import atomic_write_json
from ...records import tokenize
from ..language import phrase_entries
from ..scenes import RenderedScene, file_name


def write_karpathy(out: Path, rendered: Sequence[RenderedScene]) -> None:
    """Karpathy captions (:mod:`~loupe_bench.data.formats.karpathy`) and their gold phrases.

    ``dataset_synthetic.json``: ``{"dataset": "synthetic", "images": [...]}`` with per image ``imgid``
    (image_id − 1), ``cocoid``, ``filename``, ``filepath`` (``images``), ``split``, ``sentids`` and ``sentences``
    (``raw``, ``tokens``, ``imgid``, ``sentid``); ``phrases.json``: ``{sentid: [phrase entry, ...]}``
    (:func:`phrase_entries`).
    """
    images: List[Dict[str, Any]] = []
    phrases: Dict[str, List[Dict[str, Any]]] = {}
    for r in rendered:
        scene = r.scene
        sentences = []
        for (text, spans), sid in zip(scene.captions, r.sent_ids):
            phrases[str(sid)] = phrase_entries(text, spans, scene.objects)
            sentences.append({"raw": text, "tokens": tokenize(text), "imgid": scene.image_id - 1, "sentid": sid})
        images.append({"imgid": scene.image_id - 1, "cocoid": scene.image_id, "filename": file_name(scene.image_id),
                       "filepath": "images", "split": scene.split, "sentids": list(r.sent_ids),
                       "sentences": sentences})
    atomic_write_json(out / "phrases.json", phrases, indent=None)
    atomic_write_json(out / "dataset_synthetic.json", {"dataset": "synthetic", "images": images}, indent=None)
