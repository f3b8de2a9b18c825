"""The synthetic fine-grained world: deterministic scenes of coloured shapes with captions, gold phrase spans,
boxes, referring expressions and class labels, written in the real data formats.

Design (why it separates region–phrase models from global ones):

* every image holds 1–5 objects (shape × colour × size) on a textured background, exactly one of them large;
* objects come in two kinds: ``flat`` ones (one colour: any single patch of the object carries everything its
  phrase names, the redundant contrast) and ``two-part`` ones (top half one colour, bottom half another, named
  "red-and-blue square", top colour first), whose description needs patches of both halves together; scenes with
  a two-part object often hold a distractor with the same shape that swaps its colours or shares one part, so only
  the joint description picks it out;
* each caption mentions only some of the objects, with bound attributes ("a small red triangle left of a large
  blue circle"), so matching needs the right colour on the right shape in the right place;
* referring expressions single out one object among distractors that share its shape or a colour (a two-part
  object's expression always names both of its colours);
* the ``comptest`` split holds colour–shape combinations that never occur in ``train``/``val``/``test``
  (for a two-part object the combination is its *top* colour with its shape).

Everything is a pure function of ``(seed, size, image_size)``: each image draws from its own
``numpy.random.Generator`` seeded with ``[seed, split_index, image_index]``; files are written with sorted JSON
keys, fixed tar metadata and JPEG quality 95, so two runs give byte-identical folders.

The package, one module per job: :mod:`.sampling` (vocabulary, scenes, object draws), :mod:`.render` (pixels and
image files), :mod:`.language` (relations, captions and gold phrases, referring expressions), :mod:`.scenes` (each
image sampled, rendered, captioned and numbered), :mod:`.writers` (one module per output format, plus
``world.json`` and ``README.md``), :mod:`.matching` (the caption-selection and Winoground analogues),
:mod:`.generate` (:func:`generate_world`) and :mod:`.read` (:func:`load_object_kinds`).
"""
from .generate import WORLD_ENTRIES, generate_world
from .language import TEMPLATES, phrase_entries, referring_expressions, relation
from .read import load_object_kinds
from .render import IMAGE_FORMATS, SUPERSAMPLE, encode_image, render_scene
from .sampling import (
    BACKGROUNDS, COLOURS, HELDOUT_COMBOS, KINDS, SHAPES, SIZE_RANGES, TWO_PART_DISTRACTOR_PROB, TWO_PART_PROB,
    TWO_PART_SIZE_RANGES, Scene, SceneObject, sample_objects,
)
from .scenes import MAX_IMAGE_SIZE, SIZES, SPLITS, WORLD_VERSION, RenderedScene, file_name, make_scene, sample_world
from .writers import (
    F30K_DIR, SHARD_SIZE, categories, coco_instances, entity_sentence, entity_xml, world_record, write_coco,
    write_flickr30k_entities, write_imagefolder, write_images, write_karpathy, write_refer, write_shards,
)

__all__ = [
    "BACKGROUNDS", "COLOURS", "F30K_DIR", "HELDOUT_COMBOS", "IMAGE_FORMATS", "KINDS", "MAX_IMAGE_SIZE", "SHAPES",
    "SHARD_SIZE", "SIZES", "SIZE_RANGES", "SPLITS", "SUPERSAMPLE", "TEMPLATES", "TWO_PART_DISTRACTOR_PROB",
    "TWO_PART_PROB", "TWO_PART_SIZE_RANGES", "WORLD_ENTRIES", "WORLD_VERSION", "RenderedScene", "Scene",
    "SceneObject", "categories", "coco_instances", "encode_image", "entity_sentence", "entity_xml", "file_name",
    "generate_world", "load_object_kinds", "make_scene", "phrase_entries", "referring_expressions", "relation",
    "render_scene", "sample_objects", "sample_world", "world_record", "write_coco", "write_flickr30k_entities",
    "write_imagefolder", "write_images", "write_karpathy", "write_refer", "write_shards",
]
