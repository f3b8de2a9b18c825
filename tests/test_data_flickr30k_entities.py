"""Flickr30K Entities: the loader on the synthetic world (against the world's own ground truth) and on a hand-written
sample of the real layout; bad input; the world's other files do not depend on the new folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from loupe_bench.data import check_dataset, list_datasets, load_dataset, load_world
from loupe_bench.data.formats.flickr30k_entities import ENTITY_TYPES, parse_entity_sentence
from loupe_bench.data.records import BoxAnnotation, Phrase
from loupe_bench.errors import DataError

FMT = "flickr30k-entities"


# ------------------------------------------------------------------------------------------------ synthetic world
def test_world_round_trip_every_split(tiny_world):
    world = load_world(tiny_world)
    f30k = world.path("flickr30k_entities")
    phrases = json.loads((tiny_world / "phrases.json").read_text())
    karpathy = {im["cocoid"]: im for im in json.loads((tiny_world / "dataset_synthetic.json").read_text())["images"]}
    for split in world.splits:
        coco = json.loads(world.path("coco", split).read_text())
        recs = load_dataset(FMT, f30k, split=split, image_root=world.root / "images")
        assert recs.skipped == [] and recs.notes["phrases_without_box"] == dict.fromkeys(recs.notes["phrases_without_box"], 0)
        assert [im.image_id for im in recs.images] == [im["id"] for im in coco["images"]]
        coco_box = {a["id"]: a for a in coco["annotations"]}
        for im in recs.images:
            assert im.split == split and (im.width, im.height) == (world.image_size,) * 2
            assert im.path == world.root / "images" / karpathy[im.image_id]["filename"]
            sents = karpathy[im.image_id]["sentences"]
            assert [c.text for c in im.captions] == [s["raw"] for s in sents]
            for cap, sent in zip(im.captions, sents):
                assert list(cap.tokens) == sent["tokens"]
                gold = phrases[str(sent["sentid"])]
                assert [(p.start, p.end, p.text, p.ann_id) for p in cap.phrases] == [
                    (g["start"], g["end"], g["text"], g["ann_id"]) for g in gold
                ]
                assert all(cap.text[p.start:p.end] == p.text for p in cap.phrases)
                assert [list(p.bbox) for p in cap.phrases] == [g["bbox"] for g in gold]
            mine = [a for a in coco["annotations"] if a["image_id"] == im.image_id]
            assert [b.ann_id for b in im.boxes] == [a["id"] for a in mine]
            mentioned = {p.ann_id for c in im.captions for p in c.phrases}
            for b in im.boxes:
                assert list(b.bbox) == coco_box[b.ann_id]["bbox"] and b.image_id == im.image_id
                # typed by the phrase (= shape = COCO category) when some caption mentions the object, else 0
                assert b.category_id == (coco_box[b.ann_id]["category_id"] if b.ann_id in mentioned else 0)
        assert {k: v for k, v in recs.categories.items() if k} == {c["id"]: c["name"] for c in coco["categories"]}


def test_world_files_do_not_depend_on_the_flickr30k_folder(tiny_world, tmp_path, monkeypatch):
    """Writing flickr30k_entities/ uses no random numbers and changes no other file: a world written with the writer
    replaced by a no-op is byte-identical in every other file (images, Karpathy JSON, phrases, COCO, refsynth,
    shards, classification, world.json, README.md)."""
    from loupe_bench.data.synth import generate as synth

    monkeypatch.setattr(synth, "write_flickr30k_entities", lambda root, scenes, image_size: root)
    bare = synth.generate_world(tmp_path / "bare", seed=0, size="tiny", image_size=64)

    def tree(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    full = tree(tiny_world)
    assert any(k.startswith("flickr30k_entities/") for k in full)
    others = {k: v for k, v in full.items() if not k.startswith("flickr30k_entities/")}
    without = tree(bare)
    assert sorted(others) == sorted(without)
    assert [k for k in others if others[k] != without[k]] == []
    assert {"images/000001.jpg", "dataset_synthetic.json", "phrases.json", "annotations/instances_train.json",
            "refsynth/instances.json", "refsynth/refs(unc).p"} <= set(without)
    assert json.loads(full["world.json"])["files"]["flickr30k_entities"] == "flickr30k_entities"


def test_world_check_covers_flickr30k_folder(tiny_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    assert check_dataset(world) == []
    assert check_dataset(world / "flickr30k_entities", image_root=str(world / "images")) == []
    sent = world / "flickr30k_entities" / "Sentences" / "000005.txt"
    sent.write_text(sent.read_text().replace("]", "", 1))
    errors = check_dataset(world)
    assert [(Path(e.file).name, e.record) for e in errors] == [("000005.txt", "line 1")]


def test_listed():
    assert dict(list_datasets())[FMT].startswith("Flickr30K Entities")


# ------------------------------------------------------------------------------------------------ real layout
SENT_1001 = (
    "[/EN#5/people/other Two men] hold [/EN#7/other a rope] near [/EN#9/scene the lake] .\n"
    "\n"
    "[/EN#5/people The men] feel [/EN#0/notvisual each other] 's [/EN#8/other tension] .\n"
)
XML_1001 = """<annotation>
<filename>1001.jpg</filename>
<size><width>500</width><height>333</height><depth>3</depth></size>
<object><name>5</name><bndbox><xmin>1</xmin><ymin>11</ymin><xmax>100</xmax><ymax>333</ymax></bndbox></object>
<object><name>5</name><bndbox><xmin>201</xmin><ymin>21</ymin><xmax>300</xmax><ymax>320</ymax></bndbox></object>
<object><name>7</name><name>12</name><bndbox><xmin>90</xmin><ymin>150</ymin><xmax>210</xmax><ymax>170</ymax></bndbox></object>
<object><name>9</name><nobndbox>1</nobndbox><scene>1</scene></object>
<object><name>8</name><nobndbox>1</nobndbox><scene>0</scene></object>
</annotation>
"""
SENT_1002 = "[/EN#3/animals A dog] runs after [/EN#4/other a ball] .\n"
XML_1002 = """<annotation>
<size><width>100</width><height>80</height><depth>3</depth></size>
<object><name>3</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>60</xmax><ymax>80</ymax></bndbox></object>
<object><name>6</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>100</xmax><ymax>80</ymax></bndbox></object>
</annotation>
"""


@pytest.fixture()
def sample(tmp_path):
    root = tmp_path / "flickr30k_entities"
    for sub in ("Sentences", "Annotations"):
        (root / sub).mkdir(parents=True)
    images = tmp_path / "flickr30k-images"  # the default image root: <root>/../flickr30k-images
    images.mkdir()
    for stem, sent, xml, size in (("1001", SENT_1001, XML_1001, (500, 333)), ("1002", SENT_1002, XML_1002, (100, 80))):
        (root / "Sentences" / f"{stem}.txt").write_text(sent)
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
        Image.new("RGB", size, (90, 120, 150)).save(images / f"{stem}.jpg")
    (root / "train.txt").write_text("1001\n")
    (root / "val.txt").write_text("")
    (root / "test.txt").write_text("1002\n")
    return root


MEN_A, MEN_B, ROPE = (0.0, 10.0, 100.0, 323.0), (200.0, 20.0, 100.0, 300.0), (89.0, 149.0, 121.0, 21.0)
DOG, WHOLE = (10.0, 20.0, 50.0, 60.0), (0.0, 0.0, 100.0, 80.0)


def test_real_layout_sample(sample):
    recs = load_dataset(FMT, sample)
    assert recs.name == FMT and recs.skipped == []
    assert recs.categories == {**{k + 1: t for k, t in enumerate(ENTITY_TYPES)}, 0: "untyped"}
    a, b = recs.images
    assert (a.image_id, a.split, a.width, a.height, a.file_name) == (1001, "train", 500, 333, "1001.jpg")
    assert a.path == sample.parent / "flickr30k-images" / "1001.jpg"
    c1, c3 = a.captions
    assert (c1.sent_id, c1.text) == (100100, "Two men hold a rope near the lake .")
    assert c1.tokens == ("two", "men", "hold", "a", "rope", "near", "the", "lake")
    assert c1.phrases == (
        Phrase(0, 7, "Two men", ann_id=5, bbox=MEN_A),
        Phrase(13, 19, "a rope", ann_id=7, bbox=ROPE),
        Phrase(25, 33, "the lake", ann_id=9, bbox=None),
    )
    assert (c3.sent_id, c3.text) == (100101, "The men feel each other 's tension .")  # blank line 2 skipped
    assert c3.phrases == (
        Phrase(0, 7, "The men", ann_id=5, bbox=MEN_A),
        Phrase(13, 23, "each other", ann_id=0, bbox=None),
        Phrase(27, 34, "tension", ann_id=8, bbox=None),
    )
    people, other, animals = (ENTITY_TYPES.index(t) + 1 for t in ("people", "other", "animals"))
    assert a.boxes == (
        BoxAnnotation(5, 1001, people, MEN_A, area=100.0 * 323.0),
        BoxAnnotation(5, 1001, people, MEN_B, area=100.0 * 300.0),
        BoxAnnotation(7, 1001, other, ROPE, area=121.0 * 21.0),
        BoxAnnotation(12, 1001, 0, ROPE, area=121.0 * 21.0),  # shares the object; no phrase names entity 12
    )
    assert (b.image_id, b.split, b.width, b.height) == (1002, "test", 100, 80)
    (c,) = b.captions
    assert (c.sent_id, c.text) == (100200, "A dog runs after a ball .")
    assert c.phrases == (Phrase(0, 5, "A dog", ann_id=3, bbox=DOG), Phrase(17, 23, "a ball", ann_id=4, bbox=None))
    assert b.boxes == (BoxAnnotation(3, 1002, animals, DOG, area=3000.0), BoxAnnotation(6, 1002, 0, WHOLE, area=8000.0))
    assert recs.notes == {
        "phrases": 8,
        "phrases_with_box": 4,
        "phrases_without_box": {"notvisual": 1, "scene": 1, "nobndbox": 1, "unannotated": 1},
    }
    test = load_dataset(FMT, sample, split="test", verify_images=False)
    assert [im.image_id for im in test.images] == [1002] and (test.images[0].width, test.images[0].height) == (100, 80)
    assert test.notes["phrases"] == 2 and 0 in test.categories
    assert load_dataset(FMT, sample, split="val").images == []
    with pytest.raises(DataError, match="no split file"):
        load_dataset(FMT, sample, split="restval")


def test_image_root_option_and_types_file(sample, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.move(str(sample.parent / "flickr30k-images"), moved)
    with pytest.raises(DataError, match="image file not found"):
        load_dataset(FMT, sample)
    (sample / "types.txt").write_text("animals\nother\npeople\nscene\nnotvisual\n")
    recs = load_dataset(FMT, sample, image_root=moved)
    assert recs.categories == {1: "animals", 2: "other", 3: "people", 4: "scene", 5: "notvisual", 0: "untyped"}
    assert [b.category_id for b in recs.images[0].boxes] == [3, 3, 2, 0]


def test_sentence_grammar():
    assert parse_entity_sentence("[/EN#18/people A man] in [/EN#19/clothing an orange hat] starring at something .") == (
        "A man in an orange hat starring at something .",
        [(0, 5, 18, ("people",)), (9, 22, 19, ("clothing",))],
    )
    text, spans = parse_entity_sentence("  [/EN#5/people/other two  men ]  talk\n")
    assert text == "two  men   talk" and spans == [(0, 8, 5, ("people", "other"))]  # trailing space not in the span
    for bad, why in [
        ("a man ] walks", "closes no phrase"),
        ("[/EN#1/people a [/EN#2/other b]]", "nesting"),
        ("[/EN#1/people a man", "never closed"),
        ("[/EN#x/people a man]", "is not"),
        ("[/EN#1 a man]", "is not"),
        ("[/EN#1/people]", "no words"),
        ("[/EN#1/people  ]", "no words"),
        ("a [man] walks", "is not"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_entity_sentence(bad)


# ------------------------------------------------------------------------------------------------ bad input
def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


BAD_CASES = {
    # name: (edit, file name, record, message, images kept in skip mode, captions kept in skip mode)
    "stray-bracket": (lambda r: _edit(r / "Sentences" / "1001.txt", "The men] feel", "The men] feel]"),
                      "1001.txt", "line 3", "closes no phrase", 2, 2),
    "nested": (lambda r: _edit(r / "Sentences" / "1001.txt", "Two men]", "Two men"),
               "1001.txt", "line 1", "(nesting)", 2, 2),
    "unclosed": (lambda r: _edit(r / "Sentences" / "1001.txt", "the lake]", "the lake"),
                 "1001.txt", "line 1", "never closed", 2, 2),
    "unknown-type": (lambda r: _edit(r / "Sentences" / "1001.txt", "/notvisual", "/notvisul"),
                     "1001.txt", "line 3", "unknown phrase type 'notvisul'", 2, 2),
    "no-usable-caption": (lambda r: (r / "Sentences" / "1002.txt").write_text("\n"),
                          "1002.txt", "image 1002", "no usable caption", 1, 2),
    "non-numeric-coordinate": (lambda r: _edit(r / "Annotations" / "1001.xml", "<xmin>201<", "<xmin>2O1<"),
                               "1001.xml", "object 1", "non-numeric <xmin>", 1, 1),
    "box-outside": (lambda r: _edit(r / "Annotations" / "1002.xml", "<xmax>60<", "<xmax>102<"),
                    "1002.xml", "object 0", "outside the 100x80 image", 1, 2),
    "box-inverted": (lambda r: _edit(r / "Annotations" / "1002.xml", "<xmax>60<", "<xmax>9<"),
                     "1002.xml", "object 0", "non-positive size", 1, 2),
    "no-box-no-flag": (lambda r: _edit(r / "Annotations" / "1001.xml", "<nobndbox>1</nobndbox><scene>0</scene>", ""),
                       "1001.xml", "object 4", "neither <bndbox> nor <nobndbox>", 1, 1),
    "bad-entity-name": (lambda r: _edit(r / "Annotations" / "1002.xml", "<name>6<", "<name>six<"),
                        "1002.xml", "object 1", "entity id 'six'", 1, 2),
    "missing-annotations": (lambda r: (r / "Annotations" / "1002.xml").unlink(),
                            "Annotations/1002.xml", "image 1002", "missing file for the image listed in test.txt line 1",
                            1, 2),
    "missing-sentences": (lambda r: (r / "Sentences" / "1001.txt").unlink(),
                          "Sentences/1001.txt", "image 1001", "missing file", 1, 1),
    "malformed-xml": (lambda r: _edit(r / "Annotations" / "1001.xml", "</annotation>", "</annotatio>"),
                      "1001.xml", "image 1001", "malformed XML (mismatched tag at line 9", 1, 1),
    "dtd-refused": (lambda r: _edit(r / "Annotations" / "1002.xml", "<annotation>",
                                    '<!DOCTYPE a [<!ENTITY big "xxxxxxxx">]>\n<annotation><filename>&big;</filename>'),
                    "1002.xml", "image 1002", "document type declaration", 1, 2),
    "not-utf8": (lambda r: (r / "Sentences" / "1001.txt").write_bytes(SENT_1001.encode("utf-8") + b"caf\xe9\n"),
                 "1001.txt", "image 1001", "not UTF-8 text", 1, 1),
    "bad-split-line": (lambda r: (r / "test.txt").write_text("10O2\n"), "test.txt", "line 1", "not a number", 1, 2),
    "size-mismatch": (lambda r: _edit(r / "Annotations" / "1002.xml", "<width>100<", "<width>101<"),
                      "1002.xml", "size", "differs from the image file's 100x80", 1, 2),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_and_record(sample, case):
    edit, file_part, record, message, n_images, n_captions = BAD_CASES[case]
    edit(sample)
    with pytest.raises(DataError) as info:
        load_dataset(FMT, sample)
    err = info.value
    assert file_part in err.file and err.record == record and message in err.message, str(err)
    assert str(err).startswith(err.file)
    recs = load_dataset(FMT, sample, on_bad_sample="skip")
    assert [str(e) for e in recs.skipped] == [str(err)]
    assert len(recs.images) == n_images and recs.num_captions == n_captions


def test_cli_data_check_with_image_root(sample, tmp_path, capsys):
    from loupe_bench.cli.main import main

    moved = tmp_path / "pictures"
    shutil.move(str(sample.parent / "flickr30k-images"), moved)

    def run(*argv):
        with pytest.raises(SystemExit) as info:
            main(["data", "check", str(sample), *argv])
        return info.value.code, capsys.readouterr().out

    code, out = run("--image-root", str(moved))
    assert code == 0 and "no problems found" in out
    code, out = run("--format", FMT)
    assert code == 1 and "2 problem(s)" in out and "image file not found" in out
