"""The world's images: its splits and sizes, and each image sampled, rendered and captioned from its own generator,
then numbered (image, annotation and sentence ids)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

import numpy as np

from .language import make_captions
from .render import encode_image, render_scene
from .sampling import BACKGROUNDS, SHAPES, Scene, sample_objects

# 2: refs record each sentence's head noun phrase; the Flickr30K Entities layout.
# 3: two-part objects (kind ``two-part``: top half / bottom half in two colours, "red-and-blue square", drawn with
#    probability TWO_PART_PROB, small ones slightly larger) with swapped-colour / shared-part distractors; COCO
#    annotations and phrase entries record ``kind`` (and annotations ``colour2``); world.json the kind settings.
# 4: synthetic matching benchmarks (:mod:`.matching`): ``captionsel/`` (SugarCrepe) and ``winoground/``.
WORLD_VERSION = 4
SPLITS: Tuple[str, ...] = ("train", "val", "test", "comptest")
#: largest image side of the synthetic world (pixels)
MAX_IMAGE_SIZE = 1024
SIZES: Dict[str, Dict[str, int]] = {
    "tiny": {"train": 40, "val": 12, "test": 12, "comptest": 12},
    "small": {"train": 1800, "val": 200, "test": 300, "comptest": 200},
    "medium": {"train": 20000, "val": 1000, "test": 1000, "comptest": 1000},
}


def make_scene(seed: int, split_index: int, split: str, index: int, image_size: int) -> Tuple[Scene, List[float], bytes]:
    """Sample, render and caption image ``index`` of ``split`` from its own generator ``[seed, split_index, index]``.

    Returns the scene (``image_id`` 0; assigned by the caller), each object's pixel area and the JPEG bytes.
    """
    rng = np.random.default_rng([seed, split_index, index])
    objects = sample_objects(rng, image_size, comp=split == "comptest")
    scene = Scene(0, split, BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], objects)
    pixels, areas = render_scene(rng, scene, image_size)
    make_captions(rng, scene, image_size)
    return scene, areas, encode_image(pixels, "JPEG")


def _make_scene_job(job: Tuple[int, int, str, int, int]) -> Tuple[Scene, List[float], bytes]:
    return make_scene(*job)


def _map_scenes(jobs: List[Tuple[int, int, str, int, int]], workers: int):
    """Yield :func:`make_scene` results in job order (a spawned process pool when ``workers > 1``)."""
    if workers <= 1:
        for job in jobs:
            yield make_scene(*job)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        yield from pool.map(_make_scene_job, jobs, chunksize=64)


def file_name(image_id: int) -> str:
    """An image's file name, the same in every format: ``<image_id:06d>.jpg``."""
    return f"{image_id:06d}.jpg"


@dataclass
class RenderedScene:
    """One image of the world after sampling: its scene (``image_id`` and every object's ``ann_id`` assigned), each
    object's pixel area (same order as ``scene.objects``), the JPEG bytes and the global ids of its captions."""

    scene: Scene
    areas: List[float]
    jpg: bytes
    sent_ids: List[int]

    @property
    def label(self) -> int:
        """Class label: index in :data:`SHAPES` of the large object's shape (object 0)."""
        return SHAPES.index(self.scene.objects[0].shape)


def sample_world(seed: int, counts: Mapping[str, int], image_size: int, workers: int = 1,
                 progress: bool = False) -> List[RenderedScene]:
    """Sample, render and caption every image (:func:`make_scene`), splits in :data:`SPLITS` order, and number them.

    Ids, in that order: ``image_id`` 1, 2, …; ``ann_id`` 1, 2, … over the objects of all images in drawing order;
    sentence ids 0, 1, … over the captions of all images. Writes nothing; the output does not depend on ``workers``.
    """
    jobs = [(seed, k, split, i, image_size) for k, split in enumerate(SPLITS) for i in range(counts[split])]
    bar = _progress(progress, len(jobs))
    rendered: List[RenderedScene] = []
    ann_id, sent_id = 1, 0
    for image_id, (scene, areas, jpg) in enumerate(_map_scenes(jobs, workers), start=1):
        scene.image_id = image_id
        for obj in scene.objects:
            obj.ann_id = ann_id
            ann_id += 1
        rendered.append(RenderedScene(scene, areas, jpg, list(range(sent_id, sent_id + len(scene.captions)))))
        sent_id += len(scene.captions)
        if bar is not None:
            bar[0].advance(bar[1])
    if bar is not None:
        bar[0].stop()
    return rendered


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import Progress

    prog = Progress(transient=True)
    prog.start()
    return prog, prog.add_task("synthetic world", total=total)
