"""``eval --batch-size / --num-workers / --precision / --device`` (CLIP_benchmark's conventions): the options reach
the encoders, batch size and loader threads change neither numbers nor the protocol fingerprint, precision is
recorded (and fingerprinted when not fp32), bad values are one line, and ``--device`` defaults to ``auto``."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from cli_run import one_line_error, run_cli
from test_tasks import fast

from loupe_bench.tasks import common

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _eval(tiny_world, tasks=("synthetic-retrieval",), out_dir=None, **options):
    from loupe_bench.models import create_model
    from loupe_bench.tasks.evaluate import evaluate

    specs = [fast(t, splits=["test"]) for t in tasks]
    return evaluate([create_model("clip-tiny", seed=0)], specs, data_root=tiny_world, out_dir=out_dir, **options)


def _values(result):
    return {k: (m["value"], m["ci95"]) for k, m in result["metrics"].items()}


def test_options_reach_the_encoders(tiny_world, monkeypatch):
    """The batch size splits the encoder calls, loader threads are used, and the encoders run under autocast."""
    seen = {"images": [], "texts": [], "autocast": [], "threads": set()}
    real_images, real_open = common._encode_images, common.open_image

    def spy_images(model, paths, spec, device, desc):
        enc = model.encode_image

        def encode_image(batch):
            seen["images"].append(len(batch))
            seen["autocast"].append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
            return enc(batch)

        model.encode_image = encode_image
        try:
            return real_images(model, paths, spec, device, desc)
        finally:
            del model.encode_image

    def spy_open(path, record=None):
        import threading

        seen["threads"].add(threading.current_thread().name)
        return real_open(path, record)

    def spy_texts(model, texts, bs, device, desc):
        seen["texts"].append(bs)
        return real_texts(model, texts, bs, device, desc)

    real_texts = common._encode_texts
    monkeypatch.setattr(common, "_encode_images", spy_images)
    monkeypatch.setattr(common, "open_image", spy_open)
    monkeypatch.setattr(common, "_encode_texts", spy_texts)
    res = _eval(tiny_world, batch_size=3, num_workers=2, precision="bf16")[0]
    n = res["extra"]["n_images"]
    assert seen["images"] == [3] * (n // 3) + ([n % 3] if n % 3 else [])
    assert seen["texts"] == [12]
    assert set(seen["autocast"]) == {torch.bfloat16}
    assert seen["threads"] and all(t.startswith("loupe-images") for t in seen["threads"])
    assert res["encoding"] == {"batch_size": 3, "num_workers": 2, "precision": "bf16", "autocast": "bfloat16"}
    assert common.current_encode_options() == common.EncodeOptions()  # restored after the evaluation


def test_batch_size_and_workers_change_neither_numbers_nor_fingerprint(tiny_world):
    tasks = ("synthetic-retrieval", "synthetic-classification")
    default = _eval(tiny_world, tasks)
    other = _eval(tiny_world, tasks, batch_size=5, num_workers=3)
    one = _eval(tiny_world, tasks[:1], batch_size=1)
    for a, b in zip(default, other):
        assert a["task"]["fingerprint"] == b["task"]["fingerprint"]
        assert a["metrics"].keys() == b["metrics"].keys()
        for name in a["metrics"]:
            assert a["metrics"][name]["value"] == pytest.approx(b["metrics"][name]["value"], abs=1e-9), name
        assert a["encoding"] == {"batch_size": fast(a["task"]["name"]).get("batch_size", 64), "num_workers": 0,
                                 "precision": "fp32", "autocast": None}
        assert b["encoding"] == {"batch_size": 5, "num_workers": 3, "precision": "fp32", "autocast": None}
    assert one[0]["task"]["fingerprint"] == default[0]["task"]["fingerprint"]
    assert _values(one[0]).keys() == _values(default[0]).keys()
    for name, (value, _) in _values(one[0]).items():
        assert value == pytest.approx(_values(default[0])[name][0], abs=1e-9), name


def test_precision_is_recorded_and_fingerprinted(tiny_world, tmp_path):
    fp32 = _eval(tiny_world, out_dir=tmp_path / "fp32")[0]
    assert fp32["encoding"]["precision"] == "fp32" and fp32["encoding"]["autocast"] is None
    from loupe_bench.tasks import load_task

    spec = load_task(fast("synthetic-retrieval", splits=["test"]))
    assert fp32["task"]["fingerprint"] == spec.fingerprint(tiny_world)  # fp32 keeps the spec's own fingerprint
    amp = _eval(tiny_world, out_dir=tmp_path / "amp", precision="amp")[0]
    bf16 = _eval(tiny_world, precision="bf16")[0]
    assert amp["encoding"]["autocast"] == "bfloat16" == bf16["encoding"]["autocast"]  # amp on the CPU: bfloat16
    assert amp["task"]["fingerprint"] != fp32["task"]["fingerprint"]
    assert amp["task"]["fingerprint"] == bf16["task"]["fingerprint"]  # same arithmetic, same protocol
    written = json.loads(next((tmp_path / "amp").glob("*.json")).read_text())
    assert written["encoding"]["precision"] == "amp" and written["task"]["fingerprint"] == amp["task"]["fingerprint"]
    from loupe_bench.tasks.results import validate_result

    validate_result(written)
    for r in (amp, bf16):  # features come back as float32; metrics stay finite
        assert all(m["value"] == m["value"] for m in r["metrics"].values())


@pytest.mark.parametrize("options, needle", [
    ({"batch_size": 0}, "batch size 0"), ({"batch_size": 65537}, "batch size 65537"),
    ({"batch_size": 2.5}, "batch size 2.5"), ({"num_workers": -1}, "num workers -1"),
    ({"num_workers": 65}, "num workers 65"), ({"precision": "fp16"}, "precision 'fp16'"),
])
def test_api_bad_values_are_one_spec_error(options, needle, tiny_world):
    from loupe_bench.errors import SpecError

    with pytest.raises(SpecError, match=needle.replace("(", r"\(").replace(".", r"\.")) as info:
        _eval(tiny_world, **options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("argv, needle", [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "65537"], "--batch-size"),
    (["--batch-size", "x"], "--batch-size"), (["--num-workers", "-1"], "--num-workers"),
    (["--num-workers", "65"], "--num-workers"), (["--precision", "fp16"], "--precision"),
])
def test_cli_bad_values_are_one_line(argv, needle, capsys, tmp_path):
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", "synthetic-retrieval", "--out", tmp_path,
                            *argv], capsys)
    one_line_error(code, err, needle)
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", "synthetic-retrieval", "--out", tmp_path,
                            "--device", "cuda"], capsys)
    one_line_error(code, err, "CUDA is not available")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_default_device_is_auto_and_resolves_to_cpu(tiny_world, tmp_path, capsys):
    import inspect

    import loupe_bench
    from loupe_bench.cli.bench import bench_cmd
    from loupe_bench.cli.evaluate import eval_cmd
    from loupe_bench.cli.reproduce import paper_cmd
    from loupe_bench.pipeline.paper import reproduce_paper
    from loupe_bench.tasks.evaluate import evaluate

    for cmd in (eval_cmd, paper_cmd, bench_cmd):
        assert next(p for p in cmd.params if p.name == "device").default == "auto", cmd.name
    for fn in (loupe_bench.evaluate, evaluate, reproduce_paper):
        assert inspect.signature(fn).parameters["device"].default == "auto"
    spec_path = tmp_path / "ret.yaml"
    spec_path.write_text(yaml.safe_dump(fast("synthetic-retrieval", splits=["test"])))
    out = tmp_path / "out"
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", spec_path, "--data-root", tiny_world,
                            "--out", out, "--batch-size", "7", "--precision", "bf16"], capsys)
    assert code == 0, err
    written = json.loads((out / "clip-tiny__synthetic-retrieval__test.json").read_text())
    assert written["device"] == "cpu"
    assert written["encoding"] == {"batch_size": 7, "num_workers": 0, "precision": "bf16", "autocast": "bfloat16"}
