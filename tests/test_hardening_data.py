"""Hostile or careless data and task specs are refused with one line (exit 2) or reported by `data check` (exit 1):
a spec never grants remote or command access, every file read from a user's folder is a regular file of bounded
size, duplicated refs are found, high-bit-depth images keep their values, URLs stay intact, synth writes clean up."""
from __future__ import annotations

import os
import pickle
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from loupe_bench.errors import DataError
from cli_run import one_line_error as _one_line_error, run_cli as _cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MARK = "PWNED"





def _task_with(tmp_path: Path, task: str, dotted: str, value) -> Path:
    """The shipped task spec ``task`` with ``dotted`` (e.g. ``options.ks``) set to ``value``, written to a file."""
    spec = yaml.safe_load(Path(f"tasks/{task}.yaml").read_text())
    node = spec
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _shard_task(tmp_path: Path, shards, **dataset_options) -> Path:
    """A retrieval task spec over webdataset shards (``shards`` given as the loader option)."""
    spec = {
        "name": "shard-retrieval", "type": "retrieval",
        "dataset": {"name": "s", "format": "webdataset", "path": "shards",
                    "options": {"shards": shards, **dataset_options}, "annotations": ["world.json"]},
        "splits": ["val"], "metrics": ["i2t_R@1"], "bootstrap": {"n_resamples": 10},
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# -- 1: a task spec never runs a command or grants remote access ----------------------------------------------------
@pytest.mark.parametrize("extra", [{"allow_remote": True}, {}])
def test_item1_task_spec_shard_list_runs_no_command(tiny_world, tmp_path, monkeypatch, capsys, extra):
    monkeypatch.chdir(tmp_path)
    planted = f"pipe:touch {tmp_path / MARK}; cat {tiny_world / 'shards' / 'val-000000.tar'}"
    task = _shard_task(tmp_path, [planted], **extra)
    for argv in (["data", "check", "--task", task, "--data-root", tiny_world],
                 ["eval", "--model", "clip-tiny", "--task", task, "--data-root", tiny_world, "--out", tmp_path / "r"]):
        code, out, err = _cli(argv, capsys)
        _one_line_error(code, err)
        assert str(task) in err
        assert not (tmp_path / MARK).exists()


def test_item1_task_spec_allow_remote_refused(tiny_world, tmp_path, capsys):
    task = _shard_task(tmp_path, "shards/val-000000.tar", allow_remote=True)
    code, out, err = _cli(["data", "check", "--task", task, "--data-root", tiny_world], capsys)
    _one_line_error(code, err)
    assert "allow_remote" in err and str(task) in err


def test_item1_task_spec_shard_list_resolves_under_data_root(tiny_world, tmp_path, monkeypatch, capsys):
    from loupe_bench.tasks import load_task

    monkeypatch.chdir(tmp_path)  # a relative entry must not be read from the working folder
    task = _shard_task(tmp_path, ["shards/val-000000.tar"])
    opts = load_task(str(task)).loader_options(tiny_world, "val")
    assert opts["shards"] == [str(tiny_world / "shards" / "val-000000.tar")]
    code, out, err = _cli(["data", "check", "--task", task, "--data-root", tiny_world], capsys)
    assert code == 0 and "no problems" in out, out + err


def test_item1_loader_options_never_carry_allow_remote(tiny_world):
    from loupe_bench.tasks.spec import DatasetConfig, TaskSpec

    spec = TaskSpec(name="t", type="retrieval", splits=["val"], metrics=["m"],
                    dataset=DatasetConfig("s", "webdataset", "shards", {"allow_remote": True, "shards": "x.tar"}))
    assert "allow_remote" not in spec.loader_options(tiny_world, "val")


# -- 3: duplicated refs, bad splits / ks, 16-bit images ----------------------------------------------------------------
def _refer_copy(tiny_world: Path, tmp_path: Path, mutate) -> Path:
    folder = tmp_path / "refer"
    shutil.copytree(tiny_world / "refsynth", folder)
    refs_file = folder / "refs(unc).p"
    refs = pickle.loads(refs_file.read_bytes())
    refs_file.write_bytes(pickle.dumps(mutate(refs), protocol=2))
    return folder


def _dup_sentence(refs):
    refs[1]["sentences"][0]["sent_id"] = refs[0]["sentences"][0]["sent_id"]
    return refs


@pytest.mark.parametrize("mutate", [lambda refs: refs + [dict(refs[0])], _dup_sentence], ids=["ref_id", "sent_id"])
def test_item3_duplicate_refer_refs_refused(tiny_world, tmp_path, capsys, mutate):
    from loupe_bench.data import DATASETS

    folder = _refer_copy(tiny_world, tmp_path, mutate)
    img_root = tiny_world / "images"
    with pytest.raises(DataError, match="duplicate (ref_id|sent_id)") as info:
        DATASETS.get("refer")(folder, image_root=img_root, verify_images=False).load()
    assert "refs(unc).p" in str(info.value) and info.value.record
    code, out, err = _cli(["data", "check", "--format", "refer", "--image-root", img_root, folder], capsys)
    assert code == 1 and "duplicate" in out and "Traceback" not in err, out + err


def test_item3_clean_refer_refs_still_load(tiny_world):
    from loupe_bench.data import DATASETS

    recs = DATASETS.get("refer")(tiny_world / "refsynth", image_root=tiny_world / "images").load()
    assert recs.refs and not recs.skipped


@pytest.mark.parametrize("field,value", [("splits", []), ("splits", ["test", "test"]), ("ks", [0, -1, 100000]),
                                         ("ks", []), ("ks", [1, 1]), ("ks", [True])])
def test_item3_task_spec_splits_and_ks_validated(tiny_world, tmp_path, capsys, field, value):
    spec = yaml.safe_load(Path("tasks/synthetic-retrieval.yaml").read_text())
    if field == "splits":
        spec["splits"] = value
    else:
        spec["options"]["ks"] = value
    task = tmp_path / "t.yaml"
    task.write_text(yaml.safe_dump(spec))
    code, out, err = _cli(["data", "check", "--task", task, "--data-root", tiny_world], capsys)
    _one_line_error(code, err)
    assert str(task) in err and field in err


def _png16(path: Path) -> Path:
    from PIL import Image

    arr = np.full((8, 8), 40000, dtype=np.uint16)
    arr[0, 0] = 65535
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    return path


def test_item3_16bit_png_scaled_not_clipped(tmp_path):
    from loupe_bench.data.training import open_rgb
    from loupe_bench.data.transforms import _to_rgb
    from PIL import Image

    img = open_rgb(_png16(tmp_path / "deep.png"))
    px = np.asarray(img)
    assert img.mode == "RGB" and px[1, 1].tolist() == [156, 156, 156] and px[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(_to_rgb(Image.open(tmp_path / "deep.png")))[1, 1, 0] == 156


def test_item3_float_and_32bit_images_refused(tmp_path):
    from PIL import Image

    from loupe_bench.data.formats.base import to_rgb

    with pytest.raises(DataError, match="mode F"):
        to_rgb(Image.fromarray(np.zeros((4, 4), np.float32)), "f.tif")
    with pytest.raises(DataError, match="0..65535"):
        to_rgb(Image.fromarray(np.full((4, 4), 1 << 20, np.int32)), "i.tif")


# -- 7: only regular files of bounded size are read --------------------------------------------------------------------
def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_item7_fifo_or_device_shard_is_refused_not_read(tiny_world, tmp_path, capsys, kind):
    folder = tmp_path / "shards"
    folder.mkdir()
    shard = folder / "val-000009.tar"
    _fifo(shard) if kind == "fifo" else shard.symlink_to("/dev/zero")
    code, out, err = _cli(["data", "check", "--format", "webdataset", shard], capsys)
    assert code == 1 and "not a regular file" in out and "Traceback" not in err, out + err
    from loupe_bench.data.formats.shards import iter_tar_samples

    with pytest.raises(DataError, match="not a regular file"):
        list(iter_tar_samples(shard))


@pytest.mark.parametrize("target", ["refs(unc).p", "instances.json"])
def test_item7_fifo_refer_files_refused(tiny_world, tmp_path, target):
    from loupe_bench.data import DATASETS

    folder = tmp_path / "refer"
    shutil.copytree(tiny_world / "refsynth", folder)
    (folder / target).unlink()
    _fifo(folder / target)
    with pytest.raises(DataError, match="not a regular file"):
        DATASETS.get("refer")(folder, image_root=tiny_world / "images", verify_images=False).load()


def test_item7_fifo_image_and_text_files_refused(tiny_world, tmp_path):
    from loupe_bench.data import DATASETS
    from loupe_bench.data.formats.base import check_image_header, image_size
    from loupe_bench.data.training import open_rgb

    img = _fifo(tmp_path / "x.jpg")
    for fn in (image_size, check_image_header, open_rgb):
        with pytest.raises(DataError, match="not a regular file"):
            fn(img, record=7)
    csv_file = _fifo(tmp_path / "t.csv")
    with pytest.raises(DataError, match="not a regular file"):
        DATASETS.get("csv")(csv_file).load()
    cls = tmp_path / "cls"
    shutil.copytree(tiny_world / "classification", cls)
    first = sorted(cls.glob("*/*/*.jpg"))[0]
    first.unlink()
    first.symlink_to("/dev/zero")
    loader = DATASETS.get("imagefolder")(cls, on_bad_sample="skip")
    loader.load()
    assert [e.file for e in loader.skipped] == [str(first)] and "not a regular file" in str(loader.skipped[0])


def test_item7_fifo_flickr30k_entities_files_refused(tiny_world, tmp_path):
    from loupe_bench.data import DATASETS

    root = tmp_path / "f30k"
    shutil.copytree(tiny_world / "flickr30k_entities", root)
    sentence = sorted((root / "Sentences").iterdir())[0]
    sentence.unlink()
    _fifo(sentence)
    loader = DATASETS.get("flickr30k-entities")(root, image_root=tiny_world / "images", verify_images=False,
                                                on_bad_sample="skip")
    loader.load()
    assert any("not a regular file" in str(e) for e in loader.skipped)


def test_item7_task_fingerprint_refuses_fifo_annotation(tiny_world, tmp_path):
    from loupe_bench.tasks import load_task

    root = tmp_path / "root"
    root.mkdir()
    _fifo(root / "dataset_synthetic.json")
    with pytest.raises(DataError, match="not a regular file"):
        load_task("synthetic-retrieval").fingerprint(root)


def test_item7_oversized_shard_member_refused(tmp_path, monkeypatch):
    import io
    import tarfile

    from loupe_bench.data.formats import shards
    from loupe_bench.utils import bounded

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("0.txt")
        info.size = 64
        tar.addfile(info, io.BytesIO(b"x" * 64))
    monkeypatch.setitem(bounded.LIMITS, "image", 10)
    with pytest.raises(DataError, match="above the limit"):
        list(shards.iter_tar_samples(shard))


# -- 9: URLs stay strings; synth writes leave usual permissions and no temp files --------------------------------------
URL = "https://example.com/data/train-000000.tar"


def test_item9_https_shard_url_kept_intact(capsys):
    from loupe_bench.data.formats.shards import expand_shards
    from loupe_bench.data.training import ShardPairs

    assert expand_shards(URL) == [URL]
    assert expand_shards("https://h.org/x-{0..1}.tar") == ["https://h.org/x-0.tar", "https://h.org/x-1.tar"]
    with pytest.raises(DataError) as info:
        ShardPairs(URL, lambda img: torch.zeros(1))
    assert info.value.file == URL
    assert ShardPairs(URL, lambda img: torch.zeros(1), allow_remote=True).urls == [URL]
    for fmt in ("auto", "webdataset"):
        code, out, err = _cli(["data", "check", "--format", fmt, URL], capsys)
        _one_line_error(code, err)
        assert URL in err and "--allow-remote-shards" in err


def test_item9_loader_keeps_url_for_opt_in(monkeypatch):
    from loupe_bench.data import DATASETS
    from loupe_bench.data.formats import shards

    seen = []
    monkeypatch.setattr(shards, "iter_tar_samples", lambda shard, allow: seen.append(shard) or iter(()))
    DATASETS.get("webdataset")(URL, allow_remote=True, on_bad_sample="skip").load()
    assert seen == [URL]


def test_item9_synth_writes_umask_permissions_and_cleans_temps(tmp_path, monkeypatch):
    from loupe_bench.utils.io import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a" / "x.bin", b"data", fsync=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "x.bin").stat().st_mode) == 0o644

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "a" / "y.bin", b"data", fsync=False)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.bin"]


# -- 7 (shards): bounded names, members and expansion -------------------------------------------------------------------
def _tar_of(path: Path, members) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _first_sample(tiny_world: Path):
    from loupe_bench.data.formats.shards import iter_tar_samples

    key, parts = next(iter_tar_samples(tiny_world / "shards" / "val-000000.tar"))
    return [(f"{key}.{ext}", data) for ext, data in parts.items()]


@pytest.mark.parametrize("case", ["traversal", "absolute", "duplicate_keys", "deep_json", "all_zero"])
def test_item7_hostile_shard_contents_reported(tiny_world, tmp_path, capsys, case):
    sample = _first_sample(tiny_world)
    shard = tmp_path / "val-000000.tar"
    if case == "all_zero":
        with open(shard, "wb") as fh:
            fh.truncate(1 << 30)  # sparse: a plain tar read stops at the first zero block
    elif case == "deep_json":
        _tar_of(shard, [sample[0] if not sample[0][0].endswith(".json") else sample[1],
                        (sample[0][0].split(".")[0] + ".json", b"[" * 5000 + b"]" * 5000)])
    else:
        prefix = {"traversal": "../../", "absolute": "/tmp/", "duplicate_keys": ""}[case]
        members = [(prefix + name, data) for name, data in sample]
        _tar_of(shard, members * (2 if case == "duplicate_keys" else 1))
    code, out, err = _cli(["data", "check", "--format", "webdataset", shard], capsys)
    assert code == 1 and "Traceback" not in err and "no problems" not in out, out + err


def test_item7_brace_bomb_refused_without_expanding(tiny_world, capsys):
    pattern = str(tiny_world / "shards" / "val-{000000000..999999999}.tar")
    code, out, err = _cli(["data", "check", "--format", "webdataset", pattern], capsys)
    _one_line_error(code, err)
    assert "more than 100,000 shard names" in err
    from loupe_bench.data.formats.shards import expand_shards

    assert len(expand_shards(str(tiny_world / "shards" / "val-{000000..000001}.tar"))) == 2


def test_item7_synth_image_size_bounded(tmp_path, capsys):
    code, out, err = _cli(["data", "synth", "--out", tmp_path / "w", "--image-size", 10 ** 6], capsys)
    _one_line_error(code, err)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("where,value", [("dataset.path", "../../../../etc/passwd"),
                                         ("dataset.path", "/etc/passwd"),
                                         ("dataset.annotations", ["../../../../etc/hostname"]),
                                         ("dataset.options.shards", ["../../../../etc/passwd"]),
                                         ("dataset.options.image_root", "/"),
                                         ("image.resize", -5), ("splits", "test")])
def test_item1_task_spec_paths_under_data_root_and_fields_validated(tiny_world, tmp_path, capsys, where, value):
    task = _task_with(tmp_path, "synthetic-retrieval", where, value)
    leaf = where.split(".")[-1]
    code, out, err = _cli(["data", "check", "--task", task, "--data-root", tiny_world], capsys)
    _one_line_error(code, err)
    assert str(task) in err and leaf in err


def test_item8_synth_negative_seed_is_one_line(tmp_path, capsys):
    code, out, err = _cli(["data", "synth", "--out", tmp_path / "w", "--seed", -1], capsys)
    _one_line_error(code, err)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("case", ["karpathy_empty", "csv_no_header", "classnames_fifo"])
def test_item7_empty_or_unreadable_data_sets_are_findings(tiny_world, tmp_path, capsys, case):
    if case == "karpathy_empty":
        path, fmt = tmp_path / "dataset_x.json", "karpathy"
        path.write_text('{"images": []}')
    elif case == "csv_no_header":
        path, fmt = tmp_path / "pairs.csv", "csv"
        path.write_text(f"{tiny_world / 'images' / '000001.jpg'},a red square\n")
    else:
        path, fmt = tmp_path / "cls", "imagefolder"
        shutil.copytree(tiny_world / "classification", path)
        (path / "classnames.txt").unlink()
        _fifo(path / "classnames.txt")
    code, out, err = _cli(["data", "check", "--format", fmt, path], capsys)
    assert code == 1 and "Traceback" not in err and "no problems" not in out, out + err


@pytest.mark.parametrize("task,key,value,words", [
    ("synthetic-retrieval", "metrics", ["i2t_R@1", "accuracy_of_doom"], "accuracy_of_doom"),
    ("synthetic-retrieval", "options.captions_per_image", -1, "captions_per_image"),
    ("synthetic-classification", "options.templates", 42, "templates"),
    ("synthetic-classification", "options.classnames", "../../../../etc/passwd", "classnames"),
    ("synthetic-classification", "metrics", ["top3"], "top3"),
])
def test_task_spec_metrics_and_option_types_checked(tiny_world, tmp_path, capsys, task, key, value, words):
    """A metric the adapter never computes and an option of the wrong type are refused when the spec loads."""
    path = _task_with(tmp_path, task, key, value)
    code, _, err = _cli(["eval", "--model", "clip-tiny", "--task", path, "--data-root", tiny_world,
                         "--out", tmp_path / "res"], capsys)
    _one_line_error(code, err)
    assert words in err and not (tmp_path / "res").exists()
