"""One writer per output format of the synthetic world, each in the layout of the real data sets read by
:mod:`loupe_bench.data.formats`: the images (:mod:`.images`), ImageFolder classification (:mod:`.imagefolder`),
webdataset shards (:mod:`.shards`), COCO detection (:mod:`.coco`), refer-style referring expressions
(:mod:`.refer`), Flickr30K Entities (:mod:`.flickr30k_entities`) and Karpathy captions with gold phrases
(:mod:`.karpathy`); :mod:`.record` writes the world's description (``world.json``, ``README.md``).

Bulk files (images, shards) are written with :func:`~loupe_bench.utils.io.atomic_write_bytes` without its fsync
(``fsync=False``); the metadata files, written last, are fsynced."""
from .coco import categories, coco_instances, write_coco
from .flickr30k_entities import F30K_DIR, entity_sentence, entity_xml, write_flickr30k_entities
from .imagefolder import write_imagefolder
from .images import write_images
from .karpathy import write_karpathy
from .record import readme_text, world_record
from .refer import write_refer
from .shards import SHARD_SIZE, write_shards

__all__ = [
    "F30K_DIR", "SHARD_SIZE", "categories", "coco_instances", "entity_sentence", "entity_xml", "readme_text",
    "world_record", "write_coco", "write_flickr30k_entities", "write_imagefolder", "write_images", "write_karpathy",
    "write_refer", "write_shards",
]
