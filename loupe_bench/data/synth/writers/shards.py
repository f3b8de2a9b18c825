"""webdataset shards: ``shards/<split>-<n:06d>.tar``."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ....utils.io import atomic_write_bytes
from ..language import phrase_entries
from ..scenes import SPLITS, RenderedScene

SHARD_SIZE = 1000


def _tar_bytes(members: Sequence[Tuple[str, bytes]]) -> bytes:
    """A tar archive with fixed metadata (mtime 0, uid/gid 0, mode 0644) so its bytes depend only on content."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_shards(out: Path, rendered: Sequence[RenderedScene]) -> Dict[str, List[str]]:
    """webdataset shards (:mod:`~loupe_bench.data.formats.shards`): ``shards/<split>-<n:06d>.tar`` of at most
    :data:`SHARD_SIZE` samples (one, possibly empty, shard for an empty split), each sample ``<key>.jpg`` and
    ``<key>.json`` (``image_id``, ``split``, ``captions``, ``sent_ids``, ``phrases`` per caption, ``label``; sorted
    keys) with key ``<image_id:06d>``, archived by :func:`_tar_bytes`. Returns each split's shard paths."""
    samples: Dict[str, List[Tuple[str, bytes, bytes]]] = {s: [] for s in SPLITS}
    for r in rendered:
        scene = r.scene
        meta = {
            "image_id": scene.image_id,
            "split": scene.split,
            "captions": [c[0] for c in scene.captions],
            "sent_ids": list(r.sent_ids),
            "phrases": [phrase_entries(text, spans, scene.objects) for text, spans in scene.captions],
            "label": r.label,
        }
        samples[scene.split].append((f"{scene.image_id:06d}", r.jpg, json.dumps(meta, sort_keys=True).encode("utf-8")))
    shard_files: Dict[str, List[str]] = {}
    for split in SPLITS:
        shard_files[split] = []
        for k in range(0, max(len(samples[split]), 1), SHARD_SIZE):
            members = []
            for key, jpg, js in samples[split][k : k + SHARD_SIZE]:
                members += [(f"{key}.jpg", jpg), (f"{key}.json", js)]
            name = f"{split}-{k // SHARD_SIZE:06d}.tar"
            atomic_write_bytes(out / "shards" / name, _tar_bytes(members), fsync=False)
            shard_files[split].append(f"shards/{name}")
    return shard_files
