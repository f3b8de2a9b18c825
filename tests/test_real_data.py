"""Real-data task specs: a missing --data-root or data file says the layout the task expects and where the files
come from (one line, exit 2); ``data check --task`` reads the data set with the spec's loader options."""
from __future__ import annotations

import json
import shutil

import pytest

from loupe_bench.cli.main import main
from loupe_bench.tasks import load_task


def _run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


# task -> (first file it looks for, words of the layout / where the files come from)
REAL = {
    "flickr30k-retrieval-1k": ("dataset_flickr30k.json", ["flickr30k-images/", "Karpathy splits", "DenotationGraph"]),
    "coco-retrieval-5k": ("dataset_coco.json", ["train2014/", "val2014/", "Karpathy splits", "cocodataset.org"]),
    "refcoco-unc": ("refs(unc).p", ["refcoco/", "images/mscoco/images/train2014/", "lichengunc/refer"]),
    "flickr30k-entities-phrase-grounding": ("Sentences", ["flickr30k_entities/", "flickr30k-images/",
                                                          "Flickr30K Entities", "BryanPlummer"]),
    "coco-detection": ("instances_val2017.json", ["val2017/", "COCO 2017"]),
}


@pytest.mark.parametrize("task", sorted(REAL))
def test_missing_data_root_says_layout(task, tmp_path, capsys):
    first, words = REAL[task]
    code, _, err = _run(["eval", "--model", "clip-tiny", "--task", task, "--out", str(tmp_path / "r")], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert first in lines[0] and "needs --data-root DIR" in lines[0] and "required" in lines[0]
    assert all(w in lines[0] for w in words), lines[0]
    (tmp_path / "empty").mkdir()
    code, _, err = _run(["eval", "--model", "clip-tiny", "--task", task, "--data-root", str(tmp_path / "empty"),
                         "--out", str(tmp_path / "r")], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(tmp_path / "empty") in lines[0] and first in lines[0] and all(w in lines[0] for w in words)
    assert not (tmp_path / "r").exists()  # nothing evaluated


def _flickr_layout(tiny_world, root):
    """The tiny world's Karpathy file as a real Flickr30K root: ``dataset_flickr30k.json`` without ``filepath``
    entries, images in ``flickr30k-images/``."""
    root.mkdir()
    data = json.loads((tiny_world / "dataset_synthetic.json").read_text())
    for im in data["images"]:
        im.pop("filepath", None)
    (root / "dataset_flickr30k.json").write_text(json.dumps(data))
    shutil.copytree(tiny_world / "images", root / "flickr30k-images")
    return root


def test_missing_image_folder_says_layout(tiny_world, tmp_path):
    from loupe_bench.errors import DataError
    from loupe_bench.tasks.common import load_records

    root = _flickr_layout(tiny_world, tmp_path / "f30k")
    shutil.rmtree(root / "flickr30k-images")
    spec = load_task("flickr30k-retrieval-1k")
    with pytest.raises(DataError, match=r"flickr30k-images: image folder not found under --data-root") as info:
        load_records(spec, root, "test")
    assert "Karpathy splits" in str(info.value) and "\n" not in str(info.value)


def test_data_check_task_uses_the_spec_image_root(tiny_world, tmp_path, capsys):
    root = _flickr_layout(tiny_world, tmp_path / "f30k")
    # the file alone: its images are not beside it, every test image is "not found"
    code, out, _ = _run(["data", "check", str(root / "dataset_flickr30k.json")], capsys)
    assert code == 1 and "image file not found" in out
    # read as the task reads it: the spec's image_root (flickr30k-images/) and split
    code, out, err = _run(["data", "check", "--task", "flickr30k-retrieval-1k", "--data-root", str(root)], capsys)
    assert code == 0 and "no problems found" in out, out + err
    # a broken image of the test split is found through the spec's layout
    test_image = next(im["filename"] for im in json.loads((root / "dataset_flickr30k.json").read_text())["images"]
                      if im["split"] == "test")
    (root / "flickr30k-images" / test_image).write_bytes(b"not a jpeg")
    code, out, _ = _run(["data", "check", "--task", "flickr30k-retrieval-1k", "--data-root", str(root)], capsys)
    assert code == 1 and test_image in out and "1 problem" in out
    # without --data-root: one line naming the layout, exit 2
    code, _, err = _run(["data", "check", "--task", "flickr30k-retrieval-1k"], capsys)
    assert code == 2 and "needs --data-root" in err and "flickr30k-images/" in err and len(err.splitlines()) == 1


def test_layout_is_cosmetic():
    """``layout`` does not enter the protocol fingerprint."""
    import copy

    from loupe_bench.specs import load_yaml, spec_files
    from loupe_bench.tasks.spec import parse_task_spec

    path = next(p for p in spec_files("tasks") if p.stem == "flickr30k-retrieval-1k")
    d = load_yaml(path)
    assert d["layout"]
    bare = copy.deepcopy(d)
    del bare["layout"]
    assert parse_task_spec(d).normalised() == parse_task_spec(bare).normalised()
    assert "layout" not in parse_task_spec(d).normalised()
