"""Every registered benchmark runs end to end through ``run_benchmarks`` on tiny settings and writes its JSON.

Speed is not asserted here (benchmarks measure it); what is asserted is that each benchmark produces finite figures,
the side-by-side comparisons it promises (equal values where it compares implementations), and a JSON record.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loupe_bench.bench import load_all

ROOT = Path(__file__).resolve().parents[1]

TINY_OPTIONS = {
    "shapley": {"batch_size": 4, "train_batches": 2, "samples": (8,), "reference_samples": 32, "fsa_regions": 3,
                "train_steps": 5, "num_samples": 8},
    "train-step": {"batch_size": 4, "settle_steps": 2, "warmup_steps": 1, "large_batch": 8},
    "train-throughput": {"batch_size": 4, "rounds": 1, "settle_steps": 2, "warmup_steps": 1},
    "late-interaction": {"n_images": 6, "n_texts": 10, "n1": 4, "n2": 6, "d": 8},
    "retrieval-metric": {"n_images": 40, "captions_per_image": 3},
    "eval-throughput": {"size": "tiny", "models": ("clip-tiny", "filip-tiny")},
    "gpu-check": {"tiny": True, "steps": 2, "warmup": 1, "batch": 4},
    "demo": {"full": False, "plan_changes": {"world_size": "tiny", "models": ["clip-tiny"],
                                             "recipe_overrides": {"steps": 2},
                                             "tasks": ["synthetic-retrieval", "synthetic-classification"]}},
    "scale": {"steps": [2], "long_seeds": 1, "workers": 1, "models": ["clip-tiny"], "tasks": ["synthetic-retrieval"],
              "world_size": "tiny"},
    "region-teacher": {"images": 2, "pairs": [1], "thresholds": [1.0], "texts": ["caption"], "iterations": 1},
}


def test_every_benchmark_has_tiny_options():
    assert set(load_all().names()) == set(TINY_OPTIONS)


@pytest.mark.parametrize("name", sorted(TINY_OPTIONS))
def test_benchmark_runs_and_writes_json(name, tiny_world, tmp_path):
    from loupe_bench.bench.runner import run_benchmarks

    if name == "train-throughput":
        pytest.importorskip("open_clip")  # the optional extra it compares with
    opts = dict(TINY_OPTIONS[name])
    if name in ("shapley", "train-step", "train-throughput"):
        opts["world"] = str(tiny_world)
    if name == "region-teacher":  # measured on a trained run only
        from loupe_bench import train_model

        opts["run"] = str(train_model("loupe-tiny", str(tiny_world), "tiny-cpu", tmp_path / "run",
                                      overrides={"steps": 2, "data.batch_size": 4, "log.progress": False}))
    (rec,) = run_benchmarks([name], repeat=1, out_dir=tmp_path, **{name: opts})
    assert rec["figures"] and all(math.isfinite(float(f["value"])) for f in rec["figures"])
    written = json.loads((tmp_path / f"{name.replace('-', '_')}.json").read_text())
    assert written["name"] == name and written["wall_s"] > 0 and "environment" in written
    labels = [f["label"] for f in rec["figures"]]
    if name == "late-interaction":
        err = next(f for f in rec["figures"] if f["label"].startswith("max |chunked - dense|"))
        assert err["value"] <= 1e-5 and any("length-bucketed" in x for x in labels)
    if name == "retrieval-metric":  # the project's implementation and the naive numpy one agree exactly
        assert all(f["value"] == 1.0 for f in rec["figures"] if f["label"].endswith(("equal (6 values)",
                                                                                    "equal (all queries)")))
    if name == "demo":
        assert rec["runs"]["quick"]["models"] == ["clip-tiny"] and rec["runs"]["quick"]["wall_s"] > 0
    if name == "train-step":
        assert any(x.endswith("/ clip-tiny") for x in labels)
        peers = {"siglip-tiny step", "siglip-tiny / clip-tiny", "sparc-tiny step", "sparc-tiny / clip-tiny"}
        assert peers <= set(labels)  # the box-free peers beside CLIP and FILIP
        big = next(f for f in rec["figures"] if f["label"] == "loupe-tiny (neural) / clip-tiny, batch 8")
        times = rec["times_s"]
        assert big["value"] == times["loupe-tiny (neural) step, batch 8"] / times["clip-tiny step, batch 8"]
        assert big["target"] == "" and big["met"] is None  # the target is the recipe's batch's (batch_size)
        from loupe_bench.bench.train_step import FLOOR

        floor_logs = rec["loupe_logs"][FLOOR]  # the floor row samples nothing
        assert floor_logs["tsa_mc_evals"] == 0 and floor_logs["routed_fraction"] == 0
        assert f"{FLOOR} / clip-tiny" in labels
    if name == "gpu-check":  # the layout of the committed GPU record (the README performance block renders it)
        committed = json.loads((ROOT / "results" / "benchmarks" / "gpu_check.json").read_text())
        assert set(written) == set(committed) and set(written["config"]) == set(committed["config"])
        assert set(written["ratios"]) == set(committed["ratios"]) and set(written["models"]) == {"clip", "filip", "loupe"}
        for key, model in written["models"].items():  # peak GPU memory is recorded on CUDA only
            assert set(model) | {"peak_memory_gib"} == set(committed["models"][key]), key
            assert model["timed_steps"] == 2 and model["loss_finite"] and model["params_m"] > 0
        assert labels == [f["label"] for f in committed["figures"]]
        assert written["config"]["specs"] == ["clip-tiny", "filip-tiny", "loupe-tiny"]
        models = written["models"]
        ratio = next(f for f in rec["figures"] if f["label"] == "LOUPE / CLIP step time")
        assert ratio["value"] == models["loupe"]["median_step_s"] / models["clip"]["median_step_s"]
        assert ratio["target"] == "<= 1.3" and ratio["met"] == (ratio["value"] <= 1.3)
    if name == "train-throughput":  # the same backbone in both libraries: same parameters, the same function
        assert rec["params"]["ours"] == rec["params"]["open_clip"] > 0
        assert rec["same_function_max_abs_diff"] <= 1e-5
        assert set(rec["images_per_s"]) == {"ours", "open_clip", "loupe"}
        assert rec["precision"] == "fp32" and rec["batch_size"] == 4 and rec["size"] == "tiny"
        ratios = {f["label"]: f for f in rec["figures"] if f["unit"] == "x"}
        ips = rec["images_per_s"]
        assert ratios["ours / open_clip"]["value"] == pytest.approx(ips["ours"] / ips["open_clip"])
        assert ratios["LOUPE / ours"]["value"] == pytest.approx(ips["loupe"] / ips["ours"])
        targeted = [f for f in ratios.values() if f["target"]]
        assert len(targeted) == 2 and all("GPU target" in f["target"] and f["met"] is None for f in targeted)  # CPU
        assert rec["loupe_logs"].get("routed_fraction", 0) > 0  # LOUPE timed past warm-up: the neural module routes


def test_gpu_check_without_cuda_is_skipped_in_one_line(tmp_path, capsys):
    from loupe_bench.bench.runner import run_benchmarks

    assert run_benchmarks(["gpu-check"], repeat=1, out_dir=tmp_path, device="cpu") == []
    lines = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    assert len(lines) == 1 and "needs a CUDA device" in lines[0] and "gpu-check.tiny=true" in lines[0]
    assert not (tmp_path / "gpu_check.json").exists()  # the committed GPU record is not overwritten by a CPU run


@pytest.mark.parametrize("options, match", [({"shapley": {"train_steps": 1}}, "which is not run"),
                                            ({"gpu-check": {"stepz": 1}}, "no option 'stepz'"),
                                            ({"gpu-check": {"repeat": 2}}, "no option 'repeat'")])
def test_bad_options_fail_before_anything_runs(options, match, tmp_path):
    from loupe_bench.bench.runner import run_benchmarks
    from loupe_bench.errors import SpecError

    with pytest.raises(SpecError, match=match):
        run_benchmarks(["gpu-check"], repeat=1, out_dir=tmp_path, **options)
    assert not any(tmp_path.iterdir())


def test_cli_set_options():
    from loupe_bench.cli.bench import parse_options
    from loupe_bench.errors import SpecError

    got = parse_options(("gpu-check.steps=100", "gpu-check.tiny=true", "gpu-check.specs=a,b,c", "demo.full=false"))
    assert got == {"gpu-check": {"steps": 100, "tiny": True, "specs": "a,b,c"}, "demo": {"full": False}}
    for bad in ("gpu-check.steps", "steps=1", ".steps=1", "gpu-check.=1", "gpu-check.steps=[1"):
        with pytest.raises(SpecError, match="--set"):
            parse_options((bad,))


def test_interleaved_times_blocks_run_each_function_back_to_back():
    """``block`` calls of one function in a row per round, the first untimed; rounds rotate over the functions."""
    from loupe_bench.bench.common import interleaved_times

    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = interleaved_times(fns, rounds=2, warmup_rounds=1, block=3)
    assert calls == (["a"] * 3 + ["b"] * 3) * 3
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}  # 2 timed rounds x (3 - 1) timed calls
    calls.clear()
    times = interleaved_times(fns, rounds=2, warmup_rounds=0)  # block 1: strict round-robin, every call timed
    assert calls == ["a", "b", "a", "b"] and {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}


def test_scale_bench_smoke_and_phrase_matching_against_a_loop(tmp_path):
    """The scale curve on a tiny world (one model, one task, 2 steps): one point with its values; the matching
    quality ``p(phrase | image) · K`` equals a per-pair loop over the model's pooled cosines."""
    import torch

    from loupe_bench.bench.scale import phrase_matching, scale
    from loupe_bench.models import load_model
    from loupe_bench.tasks import load_task
    from loupe_bench.tasks.common import encode_images, encode_texts, load_records

    out = scale(steps=[2], long_seeds=1, out_dir=str(tmp_path), workers=1, models=["clip-tiny", "filip-tiny"],
                tasks=["synthetic-retrieval"], world_size="tiny")
    point = out["points"][0]
    assert point["steps"] == 2 and point["seeds"] == [0]
    vals = point["values"]["clip-tiny"]
    assert set(vals) == {"retrieval RSUM", "p(phrase|image) × K"}
    assert set(point["values"]["filip-tiny"]) == set(vals)  # a model without a global temperature too
    run, world = tmp_path / "steps2" / "runs" / "s0" / "clip-tiny", tmp_path / "steps2" / "world"
    model = load_model(str(run))
    model.eval()
    spec = load_task("synthetic-phrase-grounding-gt-boxes")
    images = [r for r in load_records(spec, world, "test").images if r.captions]
    texts = sorted({p.text for r in images for c in r.captions for p in c.phrases})
    img, txt = encode_images(model, [r.path for r in images], spec), encode_texts(model, texts, spec)
    s = 1.0 / 0.07
    ref = []
    for i, r in enumerate(images):
        v = torch.nn.functional.normalize(img.pooled[i].float(), dim=-1)
        logits = torch.stack([s * (v @ torch.nn.functional.normalize(txt.pooled[k].float(), dim=-1))
                              for k in range(len(texts))])
        for c in r.captions:
            for p in c.phrases:
                ref.append(float(logits.softmax(0)[texts.index(p.text)]) * len(texts))
    assert vals["p(phrase|image) × K"]["mean"] == pytest.approx(sum(ref) / len(ref), rel=1e-4)
    assert phrase_matching(run, world) == pytest.approx(sum(ref) / len(ref), rel=1e-4)
