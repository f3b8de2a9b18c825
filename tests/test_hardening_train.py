"""Issue 29 hardening of `train`: another tool's run is never overwritten (items 2), non-finite or out-of-range
numbers are refused and never train into NaN weights (item 4), and a resume refuses other images, another spec or
another run's checkpoint (item 6). Every refusal is one line, exit 2, with nothing written."""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

from loupe_bench.errors import CheckpointError, SpecError
from cli_run import one_line_error as _one_line_error, run_cli as _cli

QUICK = ["--recipe", "tiny-cpu", "--steps", "2", "--set", "threads=1", "--set", "data.batch_size=8",
         "--set", "log.progress=false", "--set", "checkpoint.every=1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")





def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _train_cli(model, data, out, capsys, *extra):
    return _cli(["train", "--model", model, "--data", data, "--out", out, *QUICK, *extra], capsys)


# -- item 2: ours is proven by our run.json, never by folder or file names ---------------------------------------------
def _open_clip_folder(root: Path) -> Path:
    """An open_clip log folder: checkpoints/epoch_1.pt, config.json, log.jsonl, model.safetensors."""
    folder = root / "openclip-run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "epoch_1.pt").write_bytes(b"PK\x03\x04 someone's checkpoint")
    (folder / "config.json").write_text(json.dumps({"model": "ViT-B-32", "lr": 5e-4}))
    (folder / "log.jsonl").write_text('{"step": 1, "loss": 3.2}\n')
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return folder


def test_item2_train_refuses_foreign_run_folder(tiny_world, tmp_path, capsys):
    foreign = _open_clip_folder(tmp_path)
    before = _snapshot(foreign)
    for extra in ([], ["--resume", "latest"]):
        code, _, err = _train_cli("clip-tiny", tiny_world, foreign, capsys, *extra)
        _one_line_error(code, err)
        assert "not a loupe-bench run" in err and str(foreign) in err
        assert _snapshot(foreign) == before


@pytest.mark.parametrize("marker", [
    {"recipe.yaml": "steps: 2\n"},                                    # a file name of ours, without a run record
    {"run.json": json.dumps({"schema": "other-tool/run/v3", "recipe": {}})},
    {"run.json": json.dumps({"recipe": {"steps": 2}})},               # no schema
    {"run.json": "not json"},
])
def test_item2_names_or_foreign_run_json_do_not_make_a_run_ours(marker, tiny_world, tmp_path, capsys):
    from loupe_bench.utils.run_files import run_state

    foreign = _open_clip_folder(tmp_path)
    for name, text in marker.items():
        (foreign / name).write_text(text)
    before = _snapshot(foreign)
    code, _, err = _train_cli("clip-tiny", tiny_world, foreign, capsys)
    _one_line_error(code, err)
    assert _snapshot(foreign) == before
    assert run_state(foreign)["is_run"] is False


def test_item2_a_run_of_ours_is_continued_and_marked_first(tiny_world, tmp_path, capsys):
    from loupe_bench.utils.run_files import RUN_SCHEMA, run_record, run_state

    run = tmp_path / "run"
    code, _, err = _train_cli("clip-tiny", tiny_world, run, capsys)
    assert code == 0, err
    assert run_record(run)["schema"] == RUN_SCHEMA and run_state(run)["is_run"] is True
    code, _, err = _train_cli("clip-tiny", tiny_world, run, capsys, "--resume", "latest", "--steps", "3")
    assert code == 0, err
    # run.json is the first file a run writes: a run killed before anything else still counts as ours
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "run.json").write_text((run / "run.json").read_text())
    (killed / "log.jsonl").write_text('{"step": 1}\n')
    code, _, err = _train_cli("clip-tiny", tiny_world, killed, capsys)
    assert code == 0, err


# -- item 4: non-finite and out-of-range numbers -----------------------------------------------------------------------
@pytest.mark.parametrize("extra, words", [
    (["--set", "optim.grad_clip=.nan"], ["NaN"]),
    (["--set", "optim.lr=.nan"], ["NaN"]),
    (["--set", "optim.lr=.inf"], ["optim.lr", "finite"]),
    (["--set", "optim.grad_clip=-.inf"], ["optim.grad_clip"]),
    (["--set", "seed=100000000000000000000"], ["seed"]),
    (["--set", "seed=4294967296"], ["seed", "4294967295"]),      # numpy's global seed takes < 2**32
    (["--set", "seed=-1"], ["seed"]),
    (["--seed", "100000000000000000000"], ["--seed"]),
    (["--seed", "-1"], ["--seed"]),
    (["--steps", "-5"], ["--steps"]),
    (["--steps", "0"], ["--steps"]),
    (["--steps", "100000000000000000000"], ["--steps"]),
    (["--set", "steps=100000000000000000000"], ["steps"]),
    (["--set", "steps=10000000000"], ["steps"]),
    (["--set", "data.workers=100000"], ["data.workers"]),
    (["--set", "threads=100000000000"], ["threads"]),
    (["--set", "data.max_phrases=100000000"], ["data.max_phrases"]),
])
def test_item4_bad_numbers_are_one_line(extra, words, tiny_world, tmp_path, capsys):
    out = tmp_path / "r"
    quick = [a for a in QUICK if a not in ("--steps", "2")]  # --steps would override a --set steps=...
    code, _, err = _cli(["train", "--model", "clip-tiny", "--data", tiny_world, "--out", out, *quick, *extra],
                        capsys)
    _one_line_error(code, err)
    assert all(w in err for w in words), err
    assert not out.exists()


def test_item4_api_refuses_unchecked_recipe_objects(tmp_path):
    import dataclasses

    from loupe_bench.train.engine import train_model

    from test_train_support import TensorSource, TinyVL, tiny_recipe

    base = tiny_recipe(steps=2)
    nan_clip = dataclasses.replace(base, optim=dataclasses.replace(base.optim, grad_clip=float("nan")))
    with pytest.raises(SpecError, match="grad_clip"):
        train_model(TinyVL(), TensorSource(), nan_clip, tmp_path / "a")
    with pytest.raises(SpecError, match="seed"):
        train_model(TinyVL(), TensorSource(), base, tmp_path / "b", seed=2**40)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_item4_nan_scaled_update_stops_training_and_saves_no_nan_weights(tmp_path, monkeypatch):
    """The loop's own stop: an update scaled by NaN while the measured gradient norm is finite (what
    clip_grad_norm_ does with max_norm NaN) stops training before anything of that step is saved."""
    from safetensors.torch import load_file

    from loupe_bench.train.engine import NonFiniteParamError, train_model

    from test_train_support import TensorSource, TinyVL, tiny_recipe

    real = torch.nn.utils.clip_grad_norm_
    calls = []

    def clip_with_nan_from_step_3(params, max_norm, *a, **kw):
        calls.append(1)
        return real(params, float("nan") if len(calls) >= 3 else max_norm, *a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_with_nan_from_step_3)
    torch.manual_seed(0)
    run = tmp_path / "r"
    with pytest.raises(NonFiniteParamError, match=r"step 3: parameter .* not finite.*step_2"):
        train_model(TinyVL(), TensorSource(), tiny_recipe(steps=4, **{"checkpoint.every": 1}), run)
    assert not (run / "model.safetensors").exists()
    saved = sorted((run / "checkpoints").glob("step_*"))
    assert [d.name for d in saved] == ["step_1", "step_2"]
    for d in saved:
        assert all(bool(torch.isfinite(t).all()) for t in load_file(str(d / "model.safetensors")).values())


def test_item4_check_params_finite_names_the_parameter(tmp_path):
    from loupe_bench.train.engine import NonFiniteParamError, check_params_finite

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    check_params_finite(model, list(model.parameters()), 1, tmp_path, False)
    with torch.no_grad():
        model[1].bias[0] = float("inf")
    with pytest.raises(NonFiniteParamError, match=r"step 5: parameter 1\.bias"):
        check_params_finite(model, list(model.parameters()), 5, tmp_path, False)


# -- item 6: resume refuses other images, another spec, another run's checkpoint ---------------------------------------
def test_item6a_resume_refuses_replaced_training_images(tiny_world, tmp_path, capsys):
    from PIL import Image

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    run = tmp_path / "run"
    code, _, err = _train_cli("clip-tiny", world, run, capsys)
    assert code == 0, err
    before = _snapshot(run)
    json_before = {p: p.read_bytes() for p in world.glob("*.json")}
    for img in sorted((world / "images").glob("*.jpg")):  # every image replaced, the Karpathy JSON unchanged
        with Image.open(img) as im:
            flipped = im.transpose(Image.Transpose.FLIP_TOP_BOTTOM).convert("RGB")
        flipped.save(img, quality=95)
    assert {p: p.read_bytes() for p in world.glob("*.json")} == json_before
    code, _, err = _train_cli("clip-tiny", world, run, capsys, "--resume", "latest", "--steps", "3")
    _one_line_error(code, err)
    assert "data" in err and "--allow-changed" in err
    assert _snapshot(run) == before


def test_item6a_images_fingerprint_rule(tmp_path):
    from types import SimpleNamespace

    from loupe_bench.train.runinfo import images_fingerprint

    def recs(folder):
        return [SimpleNamespace(file_name=p.name, path=p) for p in sorted(folder.iterdir())]

    a = tmp_path / "a"
    a.mkdir()
    (a / "1.jpg").write_bytes(b"x" * 40000)
    (a / "2.jpg").write_bytes(b"y" * 100)
    fp = images_fingerprint(recs(a))
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert images_fingerprint(recs(b)) == fp                    # a copy elsewhere: same data
    (b / "1.jpg").write_bytes(b"x" * 39999 + b"z")             # same size, other last bytes
    assert images_fingerprint(recs(b)) != fp
    (b / "1.jpg").unlink()
    os.mkfifo(b / "1.jpg")                                      # never opened
    assert images_fingerprint(recs(b)) != fp


def test_item6a_folder_fingerprint_never_reads_a_fifo(tmp_path):
    from loupe_bench.train.runinfo import path_fingerprint

    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.tar").write_bytes(b"data")
    os.mkfifo(folder / "b.tar")
    (folder / "zero.tar").symlink_to("/dev/zero")
    result = []
    t = threading.Thread(target=lambda: result.append(path_fingerprint(folder)), daemon=True)
    t.start()
    t.join(20)
    assert result and isinstance(result[0], str)


def test_item6b_resume_refuses_another_spec_with_the_same_name(tiny_world, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = _train_cli("clip-tiny", tiny_world, run, capsys)
    assert code == 0, err
    rec = json.loads((run / "run.json").read_text())
    assert isinstance(rec["model_spec_digest"], str)
    before = _snapshot(run)
    from loupe_bench.models import get_spec

    spec = get_spec("clip-tiny")
    spec["temperature_init"] = 0.05  # same name, same architecture, another model
    other = tmp_path / "clip-tiny.json"
    other.write_text(json.dumps(spec))
    code, _, err = _train_cli(other, tiny_world, run, capsys, "--resume", "latest", "--steps", "3")
    _one_line_error(code, err)
    assert rec["model_spec_digest"] in err and "temperature_init" in err, err
    assert _snapshot(run) == before
    code, _, err = _train_cli("clip-tiny", tiny_world, run, capsys, "--resume", "latest", "--steps", "3")
    assert code == 0, err


def test_item6b_spec_check_without_recorded_digest_uses_config_json(tmp_path):
    from loupe_bench.train.runinfo import RunMismatchError, check_model_spec, spec_digest

    (tmp_path / "config.json").write_text(json.dumps({"name": "m", "dim": 8}))
    check_model_spec({}, {"name": "m", "dim": 8}, tmp_path)
    with pytest.raises(RunMismatchError, match=r"differs in dim"):
        check_model_spec({}, {"name": "m", "dim": 16}, tmp_path)
    with pytest.raises(RunMismatchError, match=spec_digest({"name": "m", "dim": 8})):
        check_model_spec({"model_spec_digest": spec_digest({"name": "m", "dim": 8})}, {"name": "m", "dim": 9},
                         tmp_path)


def test_item6c_resume_refuses_another_runs_checkpoint(tmp_path, tiny_world, capsys):
    from loupe_bench.train.engine import train_model

    from test_train_support import TensorSource, TinyVL, tiny_recipe

    torch.manual_seed(0)
    a = train_model(TinyVL(), TensorSource(), tiny_recipe(steps=4), tmp_path / "a", stop_after=2)
    b = train_model(TinyVL(), TensorSource(), tiny_recipe(steps=8), tmp_path / "b", stop_after=4)
    before_a, before_b = _snapshot(a), _snapshot(b)
    for other in (b / "checkpoints" / "step_4", b):
        with pytest.raises(CheckpointError, match="does not belong to the run being resumed"):
            train_model(TinyVL(), TensorSource(), tiny_recipe(steps=4), a, resume=other)
        assert _snapshot(a) == before_a and _snapshot(b) == before_b
    train_model(TinyVL(), TensorSource(), tiny_recipe(steps=4), a, resume=a / "checkpoints" / "step_2")  # its own: fine
    assert json.loads((a / "run.json").read_text())["finished_step"] == 4


def test_item6c_cli_resume_from_another_run_is_one_line(tmp_path, tiny_world, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        code, _, err = _train_cli("clip-tiny", tiny_world, run, capsys)
        assert code == 0, err
    before = _snapshot(a)
    code, _, err = _train_cli("clip-tiny", tiny_world, a, capsys, "--resume", b / "checkpoints" / "step_2",
                              "--steps", "3")
    _one_line_error(code, err)
    assert "does not belong" in err
    assert _snapshot(a) == before


# -- issue 29: special files, malformed run records, empty --data, bad specs before the first write ------------------
def _special(kind: str, path: Path) -> None:
    """Replace ``path`` by a FIFO, a link to /dev/zero, a folder or a dangling link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
        (path / "x").write_text("x")
    else:
        path.symlink_to(path.parent / "does-not-exist")


def _standin_run(tmp_path: Path, finished: bool) -> Path:
    from loupe_bench.train.engine import train_model

    from test_train_support import TensorSource, TinyVL, tiny_recipe

    torch.manual_seed(0)
    return train_model(TinyVL(), TensorSource(), tiny_recipe(steps=4), tmp_path / "run", stop_after=None if finished else 2)


def _resume_standin(run: Path):
    from loupe_bench.train.engine import train_model

    from test_train_support import TensorSource, TinyVL, tiny_recipe

    return train_model(TinyVL(), TensorSource(), tiny_recipe(steps=6), run, resume="latest")


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory", "dangling"])
def test_latest_pointer_that_is_not_a_regular_file_is_refused(kind, tmp_path):
    from loupe_bench.utils.run_files import latest_pointer_target, run_state

    run = _standin_run(tmp_path, finished=False)
    pointer = run / "checkpoints" / "latest"
    _special(kind, pointer)
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="checkpoint pointer") as info:
        latest_pointer_target(run)
    assert str(pointer) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match=str(pointer)):
        _resume_standin(run)
    assert _snapshot(run) == before
    with pytest.raises(CheckpointError, match=str(pointer)):
        run_state(run)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory", "dangling"])
def test_final_weights_that_are_not_a_regular_file_are_refused_never_a_fallback(kind, tmp_path):
    from loupe_bench.utils.run_files import run_state

    run = _standin_run(tmp_path, finished=True)
    assert run_state(run)["finished"] is True
    _special(kind, run / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors") as info:
        run_state(run)
    assert "final weights" in str(info.value)


def test_latest_checkpoint_with_a_special_weights_file_is_refused(tmp_path):
    from loupe_bench.utils.run_files import latest_checkpoint

    run = _standin_run(tmp_path, finished=False)
    _special("fifo", run / "checkpoints" / "step_2" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"step_2/model\.safetensors"):
        latest_checkpoint(run)


@pytest.mark.parametrize("field, value", [
    ("finished_step", "many"), ("finished_step", -1), ("finished_step", True), ("finished_step", 2.5),
    ("recipe", [1, 2]), ("changes", "none"), ("changes", [1]), ("data", "tensors"), ("model", 7),
    ("model_spec_digest", {"a": 1}), ("recipe.steps", "two"),
])
def test_run_json_is_checked_field_by_field_before_anything_is_written(field, value, tmp_path):
    from loupe_bench.utils.run_files import run_record, run_state
    from loupe_bench.train.engine import train_model

    from test_train_support import TensorSource, TinyVL, tiny_recipe

    run = _standin_run(tmp_path, finished=False)
    rec = json.loads((run / "run.json").read_text())
    if field == "recipe.steps":
        rec["recipe"]["steps"] = value
    else:
        rec[field] = value
    (run / "run.json").write_text(json.dumps(rec))
    before = _snapshot(run)
    for call in (lambda: _resume_standin(run), lambda: run_record(run), lambda: run_state(run),
                 lambda: train_model(TinyVL(), TensorSource(), tiny_recipe(steps=4), run)):
        with pytest.raises(CheckpointError, match=rf"run\.json: malformed run record: field '{field}'"):
            call()
    assert _snapshot(run) == before


def test_run_json_of_another_schema_is_not_ours_and_a_valid_one_resumes(tmp_path):
    from loupe_bench.utils.run_files import run_record

    run = _standin_run(tmp_path, finished=False)
    assert run_record(run)["finished_step"] is None
    _resume_standin(run)
    assert run_record(run)["finished_step"] == 6
    rec = json.loads((run / "run.json").read_text())
    rec["schema"] = "loupe-bench/run/v999"
    (run / "run.json").write_text(json.dumps(rec))
    assert run_record(run) is None


@pytest.mark.parametrize("data", ["", "   ", "karpathy:"])
def test_empty_data_is_one_line_and_never_the_current_folder(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code, _, err = _train_cli("clip-tiny", data, out, capsys)
    _one_line_error(code, err)
    assert "data path" in err and "empty" in err
    assert not out.exists()


def test_checkpoint_every_zero_means_the_final_checkpoint_only(tmp_path):
    from loupe_bench.utils.run_files import run_state
    from loupe_bench.train.engine import train_model
    from loupe_bench.train.recipe import load_recipe

    from test_train_support import TensorSource, TinyVL, tiny_recipe

    assert load_recipe("gpu-bf16").checkpoint.every == 0  # a shipped recipe relies on it
    run = train_model(TinyVL(), TensorSource(), tiny_recipe(steps=4, **{"checkpoint.every": 0}), tmp_path / "run")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_4"]
    assert run_state(run)["finished"] is True and run_state(run)["checkpoint_step"] == 4


def test_a_model_not_finite_at_initialisation_is_refused_before_the_first_write(tmp_path):
    from loupe_bench.train.engine import train_model

    from test_train_support import TensorSource, TinyVL, tiny_recipe

    model = TinyVL()
    with torch.no_grad():
        model.logit_scale.fill_(float("nan"))
    with pytest.raises(SpecError, match=r"'tiny-standin': logit_scale is not finite after initialisation"):
        train_model(model, TensorSource(), tiny_recipe(steps=4), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_train_with_a_bad_model_spec_writes_nothing(value, tiny_world, tmp_path, capsys):
    from loupe_bench.models import get_spec

    spec = get_spec("clip-tiny")
    spec["name"] = "bad-temperature"
    spec["temperature_init"] = value
    path = tmp_path / "spec.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = _train_cli(path, tiny_world, out, capsys)
    _one_line_error(code, err)
    assert list(out.iterdir()) == []
