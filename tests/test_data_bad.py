"""Bad input: each defect gives one DataError naming file and record, or is skipped and counted; check_dataset
finds all of them in one pass."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from loupe_bench.data import check_dataset, load_dataset
from loupe_bench.data.training import ShardPairs
from loupe_bench.errors import DataError


@pytest.fixture()
def world(tiny_world, tmp_path):
    dst = tmp_path / "world"
    shutil.copytree(tiny_world, dst)
    return dst


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _both_modes(fmt, path, file_part, record, message, keep=None, **kw):
    """Error mode raises one DataError naming file and record; skip mode skips it, counts it, keeps the rest."""
    with pytest.raises(DataError) as info:
        load_dataset(fmt, path, **kw)
    err = info.value
    assert file_part in err.file and err.record == record and message in err.message, str(err)
    assert str(err).startswith(err.file)
    recs = load_dataset(fmt, path, on_bad_sample="skip", **kw)
    assert [str(e) for e in recs.skipped] == [str(err)]
    if keep is not None:
        assert keep(recs)
    return recs


KARPATHY = "dataset_synthetic.json"


def test_missing_image(world):
    (world / "images" / "000003.jpg").unlink()
    _both_modes("karpathy", world / KARPATHY, "000003.jpg", "image 3", "not found", keep=lambda r: len(r.images) == 75)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_unreadable_or_truncated_image(world, damage):
    p = world / "images" / "000004.jpg"
    p.write_bytes(p.read_bytes()[:400] if damage == "truncate" else b"this is not an image")
    _both_modes("karpathy", world / KARPATHY, "000004.jpg", "image 4", "unreadable", keep=lambda r: len(r.images) == 75)


def test_malformed_json(world):
    (world / KARPATHY).write_text('{"images": [')
    for mode in ("error", "skip"):
        with pytest.raises(DataError, match="malformed JSON") as info:
            load_dataset("karpathy", world / KARPATHY, on_bad_sample=mode)
        assert info.value.file == str(world / KARPATHY)


def test_annotation_unknown_image(world):
    path = world / "annotations" / "instances_val.json"
    _edit_json(path, lambda d: d["annotations"][0].update(image_id=99999))
    aid = json.loads(path.read_text())["annotations"][0]["id"]
    recs = _both_modes("coco", path, "instances_val.json", f"annotation {aid}", "unknown image id 99999")
    assert sum(len(r.boxes) for r in recs.images) == len(json.loads(path.read_text())["annotations"]) - 1


@pytest.mark.parametrize("bbox,message", [([3, 4, -5, 10], "non-positive size"), ([50, 50, 30, 30], "outside")])
def test_bad_box(world, bbox, message):
    path = world / "annotations" / "instances_test.json"
    _edit_json(path, lambda d: d["annotations"][2].update(bbox=bbox))
    aid = json.loads(path.read_text())["annotations"][2]["id"]
    _both_modes("coco", path, "instances_test.json", f"annotation {aid}", message)


def test_empty_caption(world):
    def blank(d):
        d["images"][1]["sentences"][2]["raw"] = "  "
    _edit_json(world / KARPATHY, blank)
    sid = json.loads((world / KARPATHY).read_text())["images"][1]["sentences"][2]["sentid"]
    recs = _both_modes("karpathy", world / KARPATHY, KARPATHY, f"sentence {sid}", "empty caption")
    assert len(recs.images) == 76 and len(recs.images[1].captions) == 4


def test_unknown_split(world):
    _edit_json(world / KARPATHY, lambda d: d["images"][5].update(split="trian"))
    _both_modes("karpathy", world / KARPATHY, KARPATHY, "image 6", "unknown split 'trian'", keep=lambda r: len(r.images) == 75)


def _drop_caption(shard: Path, key: str) -> None:
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for m, data in members:
            if m.name == f"{key}.json":
                meta = json.loads(data)
                del meta["captions"]
                data = json.dumps(meta).encode()
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    shard.write_bytes(out.getvalue())


def test_shard_sample_missing_caption(world):
    shard = world / "shards" / "val-000000.tar"
    _drop_caption(shard, "000043")
    _both_modes("webdataset", shard, "val-000000.tar", "000043", "no caption", keep=lambda r: len(r.images) == 11)
    # the training iterable reports it the same way
    ident = lambda img: 0  # noqa: E731
    with pytest.raises(DataError, match="no caption"):
        list(ShardPairs(shard, transform=ident))
    it = ShardPairs(shard, transform=ident, on_bad_sample="skip")
    assert len(list(it)) == 11 and len(it.skipped) == 1 and it.skipped[0].record == "000043"


def test_csv_and_voc_defects(world, tmp_path):
    from loupe_bench.data.export import write_csv, write_voc

    csv_path = write_csv(world, tmp_path / "c" / "caps.csv")
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",,1,train,2"
    csv_path.write_text("\n".join(lines) + "\n")
    _both_modes("csv", csv_path, "caps.csv", "line 4", "empty caption")
    voc = write_voc(world, tmp_path / "voc")
    xml = voc / "Annotations" / "000002.xml"
    text = xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    xml.write_text(text[:start] + "0" + text[text.index("</xmax>"):])
    _both_modes("voc", voc, "000002.xml", "000002 object 0", "non-positive size")


def test_check_finds_every_planted_defect(world, tiny_world):
    assert check_dataset(tiny_world) == []
    (world / "images" / "000003.jpg").unlink()
    (world / "images" / "000004.jpg").write_bytes((world / "images" / "000004.jpg").read_bytes()[:400])
    _edit_json(world / KARPATHY, lambda d: (d["images"][5].update(split="trian"),
                                            d["images"][1]["sentences"][2].update(raw="")))
    _edit_json(world / "annotations" / "instances_val.json", lambda d: d["annotations"][0].update(image_id=99999))
    _edit_json(world / "annotations" / "instances_test.json", lambda d: (d["annotations"][2].update(bbox=[3, 4, -5, 10]),
                                                                          d["annotations"][3].update(bbox=[60, 60, 30, 30])))
    (world / "annotations" / "instances_comptest.json").write_text("{not json")
    _drop_caption(world / "shards" / "val-000000.tar", "000043")
    errors = check_dataset(world)
    text = "\n".join(str(e) for e in errors)
    expected = [
        ("000003.jpg", "not found"),
        ("000004.jpg", "unreadable"),
        ("dataset_synthetic.json: record image 6", "unknown split 'trian'"),
        ("dataset_synthetic.json: record sentence", "empty caption"),
        ("instances_val.json: record annotation", "unknown image id 99999"),
        ("instances_test.json: record annotation", "non-positive size"),
        ("instances_test.json: record annotation", "outside"),
        ("instances_comptest.json", "malformed JSON"),
        ("val-000000.tar: record 000043", "no caption"),
    ]
    for where, what in expected:
        assert any(where in str(e) and what in str(e) for e in errors), (where, what, text)
    assert all(e.file for e in errors)
