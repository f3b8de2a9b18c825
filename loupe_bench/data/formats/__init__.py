"""Format loaders; importing this package registers every loader in :data:`DATASETS`."""
from .base import DATASETS, Loader, check_bbox, image_size, image_size_from_bytes, read_xml
from . import karpathy, coco, refer, voc, flickr30k_entities, shards, tabular, folders  # noqa: F401  (registration)
from . import sugarcrepe, aro  # noqa: F401  (registration: caption selection)
from . import winoground, mmvp  # noqa: F401  (registration: two-by-two matching)

__all__ = ["DATASETS", "Loader", "check_bbox", "image_size", "image_size_from_bytes", "read_xml"]
