"""The plan registry of ``reproduce synthetic`` and the GPU plan, run on CPU at toy size (same code path).

The GPU plan itself (medium world, ViT-S/16 towers, bf16, CUDA) needs a GPU; here it is built, checked for one tower
size across its models, and run end to end with toy overrides (tiny world, 1-block towers, a few CPU steps, fp32).
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import loupe_bench
from loupe_bench.cli.main import cli
from loupe_bench.errors import SpecError
from loupe_bench.models import get_spec
from loupe_bench import pipeline as R
from loupe_bench.train.recipe import load_recipe

#: each GPU-plan spec and the tiny spec it follows (same keys and values except the tower sizes)
SMALL_TO_TINY = {
    "clip-small": "clip-tiny", "filip-small": "filip-tiny", "loupe-small": "loupe-tiny",
    "loupe-small-no-tsa": "loupe-no-tsa", "loupe-small-no-fsa": "loupe-no-fsa",
    "loupe-small-sampling": "loupe-sampling", "loupe-small-oracle-regions": "loupe-oracle-regions",
    "sparc-small": "sparc-tiny", "siglip-small": "siglip-tiny",
}
TOWER_KEYS = ("image_size", "embed_dim", "image_tower", "text_tower", "tokenizer", "projection")


def test_plan_registry_names_and_unchanged_default_quick():
    assert R.PLANS.names() == ["default", "gpu", "quick"]
    assert R.get_plan("default") == R.default_plan(False)
    assert R.get_plan("quick") == R.default_plan(True)
    assert R.get_plan("gpu") is not R.get_plan("gpu")  # a fresh plan each time: callers may mutate it
    with pytest.raises(SpecError, match="unknown reproduce plan 'nope'"):
        R.get_plan("nope")
    # the default and quick plans compute what they did: their fields are the constants the gate was built with
    d, q = R.default_plan(False), R.default_plan(True)
    assert d.models == list(R.MAIN_MODELS + R.PEERS + R.ABLATIONS + R.BOUNDS) and q.models == list(R.MAIN_MODELS)
    assert "sparc-tiny" in d.models and "siglip-tiny" in R.OPTIONAL_PEERS and "siglip-tiny" not in d.models
    assert (d.world_size, d.image_size, d.recipe, d.workers, d.worker_threads) == ("small", 64, "tiny-cpu", 2, 1)
    assert d.recipe_overrides == {} and q.recipe_overrides == R.QUICK_OVERRIDES
    assert d.task_overrides == R.DEFAULT_TASK_OVERRIDES and q.task_overrides == R.QUICK_TASK_OVERRIDES
    for p in (d, q):
        assert (p.seeds, p.model_overrides, p.eval_device, p.world_workers) == (1, {}, "cpu", None)
        assert all(R.plan_model(p, m) == m for m in p.models)  # trained by spec name, as before


def test_gpu_plan_one_tower_size_one_recipe():
    plan = R.get_plan("gpu")
    assert (plan.world_size, plan.image_size, plan.seeds, plan.eval_device) == ("medium", 128, 3, "cuda")
    assert set(plan.models) == set(SMALL_TO_TINY)
    ref = get_spec("clip-small")
    kw = ref["image_tower"]["kwargs"]
    # ViT-S/16 at 128 px: 8 x 8 patches, 12 x 384, 6 heads; BERT 4 x 384
    assert (kw["img_size"], kw["patch_size"], kw["embed_dim"], kw["depth"], kw["num_heads"]) == (128, 16, 384, 12, 6)
    assert ref["text_tower"]["config"]["num_hidden_layers"] == 4 and ref["image_size"] == plan.image_size
    for m in plan.models:
        spec = get_spec(m)
        for key in TOWER_KEYS:
            assert spec[key] == ref[key], (m, key)
        # otherwise the tiny spec it follows, key for key (LOUPE: tsa.target_images 4 instead of 2, tsa.bucket 16
        # instead of 8: a GPU prefers fewer, larger tower calls)
        tiny = get_spec(SMALL_TO_TINY[m])
        a, b = copy.deepcopy(spec), copy.deepcopy(tiny)
        for s in (a, b):
            for key in TOWER_KEYS + ("name", "description"):
                s.pop(key)
        if "loupe" in a:
            assert (a["loupe"]["tsa"].pop("target_images"), b["loupe"]["tsa"].pop("target_images")) == (4, 2)
            assert (a["loupe"]["tsa"].pop("bucket"), b["loupe"]["tsa"].pop("bucket")) == (16, 8)
        assert a == b, m
    assert get_spec("loupe-small-oracle-regions")["loupe"]["fsa"]["regions"] == "oracle"
    assert get_spec("loupe-small-oracle-regions")["description"].startswith("NOT LOUPE")
    rec = load_recipe(plan.recipe)
    assert (rec.device, rec.precision) == ("cuda", "bf16")
    # every compared model: the same recipe, no per-model recipe overrides; ablations on the default plan's types
    assert plan.recipe_overrides == {} and plan.model_overrides == {}
    assert set(plan.model_task_types) == set(R.GPU_ABLATIONS)
    assert all(v == R.ABLATION_TASK_TYPES for v in plan.model_task_types.values())


def test_model_overrides_general_and_per_model():
    ov = {"image_tower.kwargs.depth": 1, "loupe.tsa.num_samples": 4, "no.such.key": 3,
          "loupe-small:loupe.tsa.last_blocks": 1}
    clip = R.model_spec_mapping("clip-small", ov)
    loupe = R.model_spec_mapping("loupe-small", ov)
    assert clip["image_tower"]["kwargs"]["depth"] == 1 and loupe["image_tower"]["kwargs"]["depth"] == 1
    assert "loupe" not in clip and "no" not in clip  # general keys change only keys a spec has
    assert loupe["loupe"]["tsa"]["num_samples"] == 4 and loupe["loupe"]["tsa"]["last_blocks"] == 1
    assert get_spec("loupe-small")["loupe"]["tsa"]["num_samples"] == 8  # the shipped spec is untouched
    plan = replace(R.get_plan("gpu"), model_overrides=ov)
    assert R.plan_model(plan, "clip-small") == clip


def test_cli_plan_and_quick_alias(monkeypatch, tmp_path):
    seen = {}

    def fake(out, seeds, quick, plan):
        seen.update(seeds=list(seeds), quick=quick, plan=plan)
        return Path(out) / "reproduce.json"

    monkeypatch.setattr(loupe_bench, "reproduce_synthetic", fake, raising=False)  # what the CLI calls
    run = CliRunner()
    res = run.invoke(cli, ["reproduce", "synthetic", "--plan", "gpu", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert seen["seeds"] == [0, 1, 2] and seen["plan"] == R.get_plan("gpu") and seen["quick"] is False
    res = run.invoke(cli, ["reproduce", "synthetic", "--plan", "gpu", "--seeds", "1", "--workers", "1",
                           "--out", str(tmp_path)])
    assert res.exit_code == 0 and seen["seeds"] == [0] and seen["plan"].workers == 1
    res = run.invoke(cli, ["reproduce", "synthetic", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0 and seen["plan"] == R.default_plan(True) and seen["quick"] and seen["seeds"] == [0]
    res = run.invoke(cli, ["reproduce", "synthetic", "--out", str(tmp_path)])
    assert res.exit_code == 0 and seen["plan"] == R.default_plan(False) and seen["seeds"] == [0]
    res = run.invoke(cli, ["reproduce", "synthetic", "--quick", "--plan", "gpu", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--quick is --plan quick" in res.output
    res = run.invoke(cli, ["reproduce", "synthetic", "--plan", "huge", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "huge" in res.output


#: toy size of the GPU plan's towers (1 block each, 32 px / 8 = 4 x 4 patches) and LOUPE schedules that start at once
TOY_MODEL_OVERRIDES = {
    "image_size": 32, "embed_dim": 32,
    "image_tower.kwargs.img_size": 32, "image_tower.kwargs.patch_size": 8, "image_tower.kwargs.embed_dim": 32,
    "image_tower.kwargs.depth": 1, "image_tower.kwargs.num_heads": 2, "image_tower.kwargs.mlp_ratio": 2.0,
    "text_tower.config.hidden_size": 32, "text_tower.config.num_hidden_layers": 1,
    "text_tower.config.num_attention_heads": 2, "text_tower.config.intermediate_size": 64,
    "loupe.region.box_start": 1, "loupe.fsa.start_step": 1, "loupe.fsa.ramp_steps": 1,
    "loupe.neural.warmup_steps": 1, "loupe.tsa.num_samples": 2, "loupe.num_samples": 4,
}
TOY_RECIPE_OVERRIDES = {"device": "cpu", "precision": "fp32", "threads": 1, "steps": 3, "data.batch_size": 8,
                        "data.workers": 0, "optim.warmup_steps": 1, "log.progress": False}
TOY_TASK_OVERRIDES = {
    "bootstrap.n_resamples": 10, "options.bootstrap_resamples": 0,
    "synthetic-captioning:options.head.steps": 4, "synthetic-captioning:options.head.width": 16,
    "synthetic-captioning:options.decoding": "greedy",
    "synthetic-linear-probe:options.l2_grid": [1.0], "synthetic-linear-probe:options.max_iter": 20,
    "synthetic-token-interaction:options.max_images": 2, "synthetic-token-interaction:options.num_samples": 4,
}


def toy_gpu_plan():
    """The GPU plan with every size shrunk and the device set to the CPU; protocol otherwise unchanged."""
    gpu = R.get_plan("gpu")
    return replace(gpu, world_size="tiny", image_size=64, models=["clip-small", "loupe-small"], workers=1,
                   eval_device="cpu", world_workers=1, model_overrides=dict(TOY_MODEL_OVERRIDES),
                   recipe_overrides=dict(TOY_RECIPE_OVERRIDES),
                   task_overrides={**gpu.task_overrides, **TOY_TASK_OVERRIDES})


@pytest.mark.slow
def test_gpu_plan_runs_on_cpu_at_toy_size(tmp_path):
    """The GPU plan's code path end to end on the CPU (~32 CPU s: world, 2 x 3 training steps, 16 tasks, report)."""
    from rich.console import Console

    plan = toy_gpu_plan()
    man_path = R.reproduce_synthetic(tmp_path / "out", seeds=[0], plan=plan, console=Console(quiet=True),
                                     progress=False)
    out = man_path.parent
    man = json.loads(man_path.read_text())
    assert man["plan"] == asdict(plan) and man["plan"]["recipe"] == "gpu-bf16"
    # the runs are the GPU plan's specs and recipe with the toy overrides applied
    for m in plan.models:
        run = out / man["runs"][m]
        spec = json.loads((run / "config.json").read_text())
        assert "device: cpu" in (run / "recipe.yaml").read_text()
        assert spec["name"] == m and spec["image_tower"]["kwargs"]["depth"] == 1 and spec["image_size"] == 32
    # a result for every task of the default plan, for both models, and the report
    tasks = R.synthetic_tasks(quick=False)
    assert man["tasks"] == tasks
    types = {R.task_spec_mapping(t)["type"] for t in tasks}
    assert "token-interaction" in types and "captioning" in types
    seen = {}
    for p in (out / "results").rglob("*.json"):
        r = json.loads(p.read_text())
        seen.setdefault(r["model"]["name"], set()).add(r["task"]["name"])
        assert r["task"]["type"] in types
    for m in plan.models:
        assert seen[m] == set(tasks), m
    assert (out / "report" / "report.html").stat().st_size > 0


@pytest.mark.parametrize("plan_name", R.PLANS.names())
def test_every_plan_compares_models_on_identical_towers(plan_name):
    """The identical-protocol promise, for every registered plan: all its models share the image and text towers,
    tokenizer, image size, projection, special tokens and logit-scale settings (with the plan's model overrides
    applied), and one recipe."""
    plan = R.get_plan(plan_name)
    specs = {m: R.model_spec_mapping(m, plan.model_overrides) for m in plan.models}
    first = plan.models[0]
    for m, spec in specs.items():
        for key in TOWER_KEYS + ("text_special_tokens", "temperature_init", "max_logit_scale"):
            assert spec.get(key) == specs[first].get(key), (plan_name, m, key)
    assert not any(k.split(":", 1)[0] in plan.models for k in plan.recipe_overrides if ":" in k)  # no per-model recipe


def test_cli_set_changes_plan_fields(monkeypatch, tmp_path):
    """``--set models+=NAME`` adds a model to the plan, ``--set FIELD=VALUE`` replaces a field; a typo in a field or
    a model name is one line before anything runs."""
    seen = {}

    def fake(out, seeds, quick, plan):
        seen.update(plan=plan)
        return Path(out) / "reproduce.json"

    monkeypatch.setattr(loupe_bench, "reproduce_synthetic", fake, raising=False)  # what the CLI calls
    run = CliRunner()
    res = run.invoke(cli, ["reproduce", "synthetic", "--set", "models+=siglip-tiny", "--set", "workers=1",
                           "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert seen["plan"].models == R.default_plan(False).models + ["siglip-tiny"] and seen["plan"].workers == 1
    for bad, words in (("workerz=1", "unknown plan field"), ("models+=sigclip-tiny", "sigclip-tiny"),
                       ("workers=0", "workers"), ("models=[]", "at least one model")):
        res = run.invoke(cli, ["reproduce", "synthetic", "--set", bad, "--out", str(tmp_path / "x")])
        assert res.exit_code != 0 and words in str(res.output) + str(res.exception), (bad, res.output)
        assert not (tmp_path / "x").exists()
