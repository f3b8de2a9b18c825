"""refer-style referring expressions: ``refsynth/instances.json`` and ``refsynth/refs(unc).p``."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from ....utils.io import atomic_write_bytes, atomic_write_json
from ...records import tokenize
from ..language import referring_expressions
from ..sampling import SHAPES
from ..scenes import RenderedScene, file_name
from .coco import all_splits


def write_refer(out: Path, rendered: Sequence[RenderedScene], coco: Mapping[str, Mapping[str, Any]],
                image_size: int) -> int:
    """refer-style referring expressions (:mod:`~loupe_bench.data.formats.refer`), returning how many refs.

    ``refsynth/instances.json``: the COCO document of all splits together; ``refsynth/refs(unc).p``: a pickle
    (protocol 2) of one dict per expression (:func:`referring_expressions`) with ``ref_id`` (0, 1, …), ``ann_id``,
    ``image_id``, ``category_id``, ``split``, ``file_name``, ``sent_ids`` and ``sentences`` (``sent``, ``raw``,
    ``sent_id`` 0, 1, … over all refs, ``tokens``, ``head``).
    """
    atomic_write_json(out / "refsynth" / "instances.json", all_splits(coco), indent=None)
    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    refs: List[Dict[str, Any]] = []
    ref_sent_id = 0
    for r in rendered:
        scene = r.scene
        fname = file_name(scene.image_id)  # one string per image: the pickle's bytes depend on shared objects
        for k, texts, heads in referring_expressions(scene, image_size):
            obj = scene.objects[k]
            sents = []
            for t, head in zip(texts, heads):
                sents.append({"sent": t, "raw": t, "sent_id": ref_sent_id, "tokens": tokenize(t), "head": head})
                ref_sent_id += 1
            refs.append({
                "ref_id": len(refs), "ann_id": obj.ann_id, "image_id": scene.image_id,
                "category_id": cat_id[obj.shape], "split": scene.split, "file_name": fname,
                "sent_ids": [s["sent_id"] for s in sents], "sentences": sents,
            })
    atomic_write_bytes(out / "refsynth" / "refs(unc).p", pickle.dumps(refs, protocol=2))
    return len(refs)
