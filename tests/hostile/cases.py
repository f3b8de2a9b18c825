"""The generated cases: seeds x mutations x commands, grouped by surface.

Expected exit codes encode the issue's rule (docs/architecture.md, "Errors"): 2 and one ``error:`` line for bad
input or environment; 1 only for findings of ``data check`` / ``check``; 0 where the hostile input must be handled
cleanly (a planted shard name read as a file, a valid-but-unusual image). Where the rule allows either of two answers
(``data check`` on a file too broken to list records: a finding or an unusable input) the case names both.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import yaml

from . import grammar as g
from .harness import Case, Ctx, Outcome

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--recipe", "tiny-cpu", "--steps", "2", "--set", "threads=1", "--set", "data.batch_size=8",
         "--set", "log.progress=false", "--set", "checkpoint.every=1"]
CLS = "synthetic-classification"  # the cheapest task: 12 test images, zero-shot
E2, E1, E0 = (2,), (1,), (0,)
FINDING_OR_UNUSABLE = (1, 2)
CASES: List[Case] = []


def case(surface: str, name: str, expect: Sequence[int], build: Callable[[Ctx], List[str]], *checks,
         bank: bool = False) -> None:
    CASES.append(Case(surface, name, build, tuple(expect), tuple(checks), needs_bank=bank))


def eval_argv(ctx: Ctx, model, task=CLS, world=None) -> List[str]:
    return ["eval", "--model", model, "--task", task, "--data-root", world or ctx.world(), "--out", ctx.out]


def train_argv(ctx: Ctx, model="clip-tiny", data=None, extra: Sequence[str] = QUICK) -> List[str]:
    return ["train", "--model", model, "--data", data if data is not None else ctx.world(), "--out", ctx.out, *extra]


# -- extra checks -----------------------------------------------------------------------------------------------------
def stderr_has(*words: str):
    def check(ctx: Ctx, res: Outcome) -> None:
        missing = [w for w in words if w not in res.err]
        assert not missing, f"stderr lacks {missing}: {res.err.strip()[:200]}"

    check.__name__ = f"stderr_has{words}"
    return check


def stdout_lacks(*words: str):
    def check(ctx: Ctx, res: Outcome) -> None:
        hits = [w for w in words if w in res.out]
        assert not hits, f"stdout shows {hits}"

    return check


def not_merged(ctx: Ctx, res: Outcome) -> None:
    """Every identity in the bank's results has one seed: a '±' means two identities (or a copy) were averaged."""
    import re

    texts = [res.out] + ([p.read_text(errors="replace") for p in ctx.out.rglob("*.md")] if ctx.out.exists() else [])
    assert not any(re.search(r"\d\s*±\s*\d", t) for t in texts), \
        "results of different identities or a stale copy were averaged (a ± spread over single-seed results)"


def no_raw_markup(ctx: Ctx, res: Outcome) -> None:
    for p in list(ctx.out.rglob("*.md")) + list(ctx.out.rglob("*.html")):
        assert "<script>alert" not in p.read_text(errors="replace"), f"raw markup of a model name in {p.name}"


def no_secret_leak(ctx: Ctx, res: Outcome) -> None:
    assert "root:x:0:0" not in res.out + res.err, "an external entity pulled /etc/passwd into the output"


# -- seeds ----------------------------------------------------------------------------------------------------------
def model_spec_seed(ctx: Ctx, resolved: bool = True, suffix: str = ".yaml") -> Path:
    if resolved:
        from loupe_bench.models import get_spec

        spec = get_spec("clip-tiny")
        spec["name"] = "hostile-spec"
    else:
        spec = yaml.safe_load((ROOT / "baselines" / "clip-tiny.yaml").read_text())
        spec["name"] = "hostile-spec"
    path = ctx.inputs / f"spec{suffix}"
    g.dump(spec, path)
    return path


def recipe_seed(ctx: Ctx) -> Path:
    doc = yaml.safe_load((ROOT / "loupe_bench" / "train" / "recipes" / "tiny-cpu.yaml").read_text())
    doc.update(steps=2, threads=1)
    doc["data"]["batch_size"] = 8
    doc["log"]["progress"] = False
    doc["checkpoint"]["every"] = 1
    path = ctx.inputs / "recipe.yaml"
    g.dump(doc, path)
    return path


def task_seed(ctx: Ctx, name: str = "synthetic-retrieval") -> Path:
    doc = yaml.safe_load((ROOT / "tasks" / f"{name}.yaml").read_text())
    doc["name"] = f"hostile-{name}"
    path = ctx.inputs / "task.yaml"
    g.dump(doc, path)
    return path


def mutated(seed: Callable[[Ctx], Path], kind: str, fn: Callable) -> Callable[[Ctx], Path]:
    def make(ctx: Ctx) -> Path:
        p = seed(ctx)
        g.apply(p, kind, fn)
        return p

    return make


# ==================================================================================================================
# specs: model spec files (eval --model FILE; a few through train)
SPEC_DOC = [
    ("unknown_key", g.at("temprature_init", 0.5)),
    ("unknown_nested_key", g.at("image_tower.kwargs.bogus_option", 1)),
    ("family_unknown", g.at("family", "gpt")),
    ("family_wrong_type", g.at("family", ["clip"])),
    ("embed_dim_negative", g.at("embed_dim", -64)),
    ("embed_dim_zero", g.at("embed_dim", 0)),
    ("embed_dim_string", g.at("embed_dim", "sixty-four")),
    ("embed_dim_float", g.at("embed_dim", 64.5)),
    ("embed_dim_huge", g.at("embed_dim", 10 ** 9)),
    ("embed_dim_nan", g.at("embed_dim", g.NAN)),
    ("temperature_nan", g.at("temperature_init", g.NAN)),
    ("temperature_inf", g.at("temperature_init", g.INF)),
    ("temperature_negative", g.at("temperature_init", -1.0)),
    ("max_logit_scale_nan", g.at("max_logit_scale", g.NAN)),
    ("image_size_huge", g.at("image_size", 10 ** 7)),
    ("image_size_zero", g.at("image_size", 0)),
    ("depth_huge", g.at("image_tower.kwargs.depth", 10 ** 7)),
    ("patch_size_zero", g.at("image_tower.kwargs.patch_size", 0)),
    ("text_layers_huge", g.at("text_tower.config.num_hidden_layers", 10 ** 7)),
    ("text_width_huge", g.at("text_tower.config.hidden_size", 10 ** 9)),
    ("vocab_huge", g.at("tokenizer.vocab_size", 10 ** 12)),
    ("max_length_negative", g.at("tokenizer.max_length", -5)),
    ("tokenizer_kind_unknown", g.at("tokenizer.kind", "sentencepiece-remote")),
    ("tower_kind_unknown", g.at("image_tower.kind", "os.system")),
    ("pretrained_url", g.at("image_tower.pretrained", "https://example.invalid/weights.bin")),
    ("pretrained_traversal", g.at("text_tower.pretrained", "../../../../../../etc/passwd")),
    ("top_level_list", lambda doc: [doc]),
    ("null_document", lambda doc: None),
]


def _spec_planted(ctx: Ctx) -> Path:
    p = model_spec_seed(ctx)
    g.apply(p, "doc", g.at("image_tower.pretrained", ctx.planted))
    return p


def _spec_towers(value: str):
    def make(ctx: Ctx) -> Path:
        p = model_spec_seed(ctx, resolved=False)
        v = value.replace("MARK", str(ctx.marker))
        g.apply(p, "doc", g.at("towers", v))
        return p

    return make


def _specs() -> None:
    case("specs", "valid_seed", E0, lambda c: eval_argv(c, model_spec_seed(c)))
    for name, fn in SPEC_DOC:
        case("specs", name, E2, (lambda fn: lambda c: eval_argv(c, mutated(model_spec_seed, "doc", fn)(c)))(fn))
    for name, kind, fn in g.generic(g.YAML_RAW):
        case("specs", name, E2, (lambda k, fn: lambda c: eval_argv(c, mutated(model_spec_seed, k, fn)(c)))(kind, fn))
    case("specs", "pretrained_pipe", E2, lambda c: eval_argv(c, _spec_planted(c)))
    case("specs", "json_nan_literal", E2, lambda c: eval_argv(c, mutated(
        lambda cc: model_spec_seed(cc, suffix=".json"), "doc", g.at("temperature_init", g.NAN))(c)))
    for name, value in [("towers_traversal", "../../../../../../etc/passwd"), ("towers_absolute", "/etc/passwd"),
                        ("towers_unknown", "no-such-towers"), ("towers_pipe", "pipe:touch MARK"),
                        ("towers_url", "https://example.invalid/towers.yaml")]:
        case("specs", name, E2, (lambda v: lambda c: eval_argv(c, _spec_towers(v)(c)))(value))
    # through train: refused before a run folder is written
    for name, fn in [("unknown_key", g.at("temprature_init", 0.5)), ("embed_dim_negative", g.at("embed_dim", -64)),
                     ("temperature_nan", g.at("temperature_init", g.NAN))]:
        case("specs", f"{name}-train", E2,
             (lambda fn: lambda c: train_argv(c, model=mutated(model_spec_seed, "doc", fn)(c)))(fn))
    case("specs", "alias_bomb-train", E2,
         lambda c: train_argv(c, model=mutated(model_spec_seed, "raw", g.yaml_alias_bomb)(c)))
    # markup and traversal in a model name: evaluated cleanly (or refused), nothing written outside --out
    case("specs", "name_traversal", (0, 2), lambda c: eval_argv(c, mutated(
        model_spec_seed, "doc", g.at("name", "../escaped"))(c)))
    case("specs", "name_absolute", (0, 2), lambda c: eval_argv(c, mutated(
        model_spec_seed, "doc", g.at("name", str(c.root / "abs-escaped")))(c)))


# ==================================================================================================================
# recipes: train --recipe FILE (refused before step 1; a wrongly accepted one trains 2 steps)
RECIPE_DOC = [
    ("steps_negative", g.at("steps", -1)), ("steps_zero", g.at("steps", 0)), ("steps_huge", g.at("steps", g.HUGE_INT)),
    ("steps_string", g.at("steps", "two")), ("steps_float", g.at("steps", 2.5)),
    ("lr_nan", g.at("optim.lr", g.NAN)), ("lr_inf", g.at("optim.lr", g.INF)), ("lr_negative", g.at("optim.lr", -1e-3)),
    ("lr_list", g.at("optim.lr", [1e-3])),
    ("betas_short", g.at("optim.betas", [0.9])), ("betas_nan", g.at("optim.betas", [g.NAN, 0.98])),
    ("betas_out_of_range", g.at("optim.betas", [1.5, 2.0])),
    ("eps_negative", g.at("optim.eps", -1.0)), ("weight_decay_nan", g.at("optim.weight_decay", g.NAN)),
    ("grad_clip_nan", g.at("optim.grad_clip", g.NAN)), ("grad_clip_negative", g.at("optim.grad_clip", -1.0)),
    ("warmup_negative", g.at("optim.warmup_steps", -5)), ("min_lr_ratio_nan", g.at("optim.min_lr_ratio", g.NAN)),
    ("optim_unknown", g.at("optim.name", "sgd-from-the-internet")),
    ("batch_zero", g.at("data.batch_size", 0)), ("batch_negative", g.at("data.batch_size", -8)),
    ("seed_huge", g.at("seed", 2 ** 70)), ("seed_negative", g.at("seed", -1)), ("seed_nan", g.at("seed", g.NAN)),
    ("precision_unknown", g.at("precision", "fp3")), ("device_bogus", g.at("device", "quantum:0")),
    ("threads_zero", g.at("threads", 0)), ("workers_negative", g.at("data.workers", -1)),
    ("accum_zero", g.at("accum_freq", 0)), ("checkpoint_every_negative", g.at("checkpoint.every", -1)),
    ("keep_last_negative", g.at("checkpoint.keep_last", -1)),
    ("crop_range_inverted", g.at("data.augment.random_resized_crop", [1.5, 0.2])),
    ("unknown_key", g.at("stpes", 5)), ("unknown_nested_key", g.at("optim.momentum_of_doom", 1)),
    ("caption_policy_unknown", g.at("data.caption_policy", "all-at-once")),
    ("split_unknown", g.at("data.split", "nosplit")), ("format_pipe", g.at("data.format", "pipe")),
    ("log_every_zero", g.at("log.every", 0)), ("section_wrong_type", g.at("optim", [1, 2])),
]


def _recipes() -> None:
    case("recipes", "valid_seed", E0, lambda c: train_argv(c, extra=["--recipe", recipe_seed(c)]))
    for name, fn in RECIPE_DOC:
        case("recipes", name, E2, (lambda fn: lambda c: train_argv(
            c, extra=["--recipe", mutated(recipe_seed, "doc", fn)(c)]))(fn))
    for name, kind, fn in g.generic(g.YAML_RAW):
        case("recipes", name, E2, (lambda k, fn: lambda c: train_argv(
            c, extra=["--recipe", mutated(recipe_seed, k, fn)(c)]))(kind, fn))


# ==================================================================================================================
# task specs: eval --task FILE and data check --task FILE
def _shards_task(shards, allow_remote=True):
    def make(ctx: Ctx) -> Path:
        p = task_seed(ctx)
        doc = yaml.safe_load(p.read_text())
        value = shards(ctx) if callable(shards) else shards
        options = {"shards": value, **({"allow_remote": True} if allow_remote else {})}
        doc["dataset"] = {"name": "synthetic", "format": "webdataset", "path": "shards", "options": options,
                          "annotations": ["shards"]}
        doc["splits"] = ["test"]
        g.dump(doc, p)
        return p

    return make


TASK_DOC = [
    ("path_traversal", g.at("dataset.path", "../../../../../../../etc/passwd")),
    ("path_absolute", g.at("dataset.path", "/etc/passwd")),
    ("path_url", g.at("dataset.path", "https://example.invalid/dataset.json")),
    ("annotations_traversal", g.at("dataset.annotations", ["../../../../../../../etc/hostname"])),
    ("splits_empty", g.at("splits", [])), ("splits_unknown", g.at("splits", ["nosplit"])),
    ("splits_duplicate", g.at("splits", ["test", "test"])), ("splits_wrong_type", g.at("splits", "test")),
    ("ks_bad", g.at("options.ks", [0, -1, 100000])), ("ks_empty", g.at("options.ks", [])),
    ("ks_nan", g.at("options.ks", [g.NAN])),
    ("metrics_unknown", g.at("metrics", ["i2t_R@1", "accuracy_of_doom"])), ("metrics_empty", g.at("metrics", [])),
    ("type_unknown", g.at("type", "mind-reading")), ("format_unknown", g.at("dataset.format", "pickle")),
    ("bootstrap_negative", g.at("bootstrap.n_resamples", -1)),
    ("bootstrap_huge", g.at("bootstrap.n_resamples", 10 ** 12)),
    ("bootstrap_nan", g.at("bootstrap.n_resamples", g.NAN)),
    ("bootstrap_seed_huge", g.at("bootstrap.seed", 2 ** 70)),
    ("resize_negative", g.at("image.resize", -5)), ("crop_unknown", g.at("image.crop", "random-everything")),
    ("captions_per_image_negative", g.at("options.captions_per_image", -1)),
    ("unknown_key", g.at("bootstrapp", {"n_resamples": 10})), ("unknown_option", g.at("options.bogus", 1)),
    ("dataset_wrong_type", g.at("dataset", "synthetic")),
    ("image_root_absolute", g.at("dataset.options.image_root", "/")),
]


def _tasks() -> None:
    case("task_specs", "valid_seed", E0, lambda c: eval_argv(c, "clip-tiny", task=task_seed(c, CLS)))
    # item 1: a spec can never grant remote or command access; list entries resolve against --data-root
    planted_list = lambda c: [c.planted + " shards/test-000000.tar"]  # noqa: E731
    for cmd in ("eval", "data_check"):
        for name, make in [("shards_list_pipe", _shards_task(planted_list)),
                           ("shards_scalar_pipe", _shards_task(lambda c: c.planted)),
                           ("shards_list_url", _shards_task(["https://example.invalid/s.tar"])),
                           ("shards_list_traversal", _shards_task(["../../../../../../../etc/passwd"], False))]:
            build = ((lambda m: lambda c: eval_argv(c, "clip-tiny", task=m(c))) if cmd == "eval" else
                     (lambda m: lambda c: ["data", "check", "--task", m(c), "--data-root", c.world()]))(make)
            case("task_specs", f"{name}-{cmd}", E2, build)
    case("task_specs", "shards_list_relative-data_check", E0, lambda c: [
        "data", "check", "--task", _shards_task(["shards/test-000000.tar"], False)(c), "--data-root", c.world()])
    case("task_specs", "shards_list_relative-eval", E2,  # evaluation reads image files; shards are for training
         lambda c: eval_argv(c, "clip-tiny", task=_shards_task(["shards/test-000000.tar"], False)(c)))
    for name, fn in TASK_DOC:
        case("task_specs", name, E2,
             (lambda fn: lambda c: eval_argv(c, "clip-tiny", task=mutated(task_seed, "doc", fn)(c)))(fn))
    cls_seed = lambda c: task_seed(c, CLS)  # noqa: E731
    for name, fn in [("templates_empty", g.at("options.templates", [])),
                     ("templates_wrong_type", g.at("options.templates", 42)),
                     ("classnames_traversal", g.at("options.classnames", "../../../../../../etc/passwd"))]:
        case("task_specs", name, E2, (lambda fn: lambda c: eval_argv(c, "clip-tiny", task=mutated(
            cls_seed, "doc", fn)(c)))(fn))
    for name, kind, fn in g.generic(g.YAML_RAW):
        case("task_specs", name, E2,
             (lambda k, fn: lambda c: eval_argv(c, "clip-tiny", task=mutated(task_seed, k, fn)(c)))(kind, fn))
    for name, kind, fn in [("alias_bomb", "raw", g.yaml_alias_bomb), ("deep_nesting", "raw", g.yaml_deep),
                           ("fifo", "file", g.fifo), ("splits_empty", "doc", g.at("splits", []))]:
        case("task_specs", f"{name}-data_check", E2, (lambda k, fn: lambda c: [
            "data", "check", "--task", mutated(task_seed, k, fn)(c), "--data-root", c.world()])(kind, fn))


# ==================================================================================================================
# checkpoints and model folders: eval --model DIR / open_clip:ARCH:FILE / HF folder; train --out a foreign folder
def run_copy(ctx: Ctx) -> Path:
    return ctx.copy_in(ctx.bank.run, "run")


def _run_mut(rel: str, kind: str, fn: Callable):
    def make(ctx: Ctx) -> Path:
        run = run_copy(ctx)
        g.apply(run / rel, kind, fn)
        return run

    return make


def _weights_reshaped(path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    key = sorted(state)[0]
    state[key] = torch.zeros(3, 5, 7)
    save_file(state, path)


def _weights_nan(path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}, path)


def _weights_header_lies(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes((2 ** 62).to_bytes(8, "little") + data[8:])


def _weights_header_huge_shape(path: Path) -> None:
    path.write_bytes(g.safetensors_header({"w": {"dtype": "F32", "shape": [10 ** 6, 10 ** 6],
                                                 "data_offsets": [0, 4 * 10 ** 12]}}, b"\0" * 64))


def _weights_header_non_tensor(path: Path) -> None:
    path.write_bytes(g.safetensors_header({"w": "not a tensor", "__metadata__": {"x": ["y"]}}))


def _pickled_into(name: str):
    def make(ctx: Ctx) -> Path:
        run = run_copy(ctx)
        (run / name).write_bytes(g.planted_pickle(ctx.marker))
        return run

    return make


OC_ARCH = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 32},
           "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1}}


def _oc(arch_mut=None, ckpt: Callable[[Ctx, Path], None] = None, ckpt_name="model.safetensors"):
    def build(ctx: Ctx) -> List[str]:
        arch = ctx.inputs / "arch.json"
        arch.write_text(json.dumps(OC_ARCH))
        if arch_mut is not None:
            g.apply(arch, *arch_mut)
        f = ctx.inputs / ckpt_name
        if ckpt is not None:
            ckpt(ctx, f)
        return eval_argv(ctx, f"open_clip:{arch}:{f}")

    return build


HF_CONFIG = {"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": 16,
             "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 1, "image_size": 32, "patch_size": 8},
             "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                             "num_attention_heads": 1, "max_position_embeddings": 16, "vocab_size": 100,
                             "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}}


def _hf(mut: Callable[[Ctx, Path], None]):
    def build(ctx: Ctx) -> List[str]:
        d = ctx.inputs / "hf"
        d.mkdir()
        (d / "config.json").write_text(json.dumps(HF_CONFIG))
        mut(ctx, d)
        return eval_argv(ctx, d)

    return build


def _foreign_out(files: Dict[str, bytes]):
    def build(ctx: Ctx) -> List[str]:
        ctx.out_is_input = True
        for rel, data in files.items():
            p = ctx.out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return train_argv(ctx)

    return build


def _checkpoints() -> None:
    S = "checkpoints"
    case(S, "valid_run", E0, lambda c: eval_argv(c, run_copy(c)), bank=True)
    weights = [("weights_truncated", "raw", g.truncate), ("weights_empty", "raw", g.empty),
               ("weights_non_utf8", "raw", g.non_utf8), ("weights_header_lies", "file", _weights_header_lies),
               ("weights_huge_shape", "file", _weights_header_huge_shape),
               ("weights_non_tensor", "file", _weights_header_non_tensor),
               ("weights_reshaped", "file", _weights_reshaped), ("weights_nan", "file", _weights_nan),
               ("weights_fifo", "file", g.fifo), ("weights_dev_zero", "file", g.dev_zero),
               ("weights_directory", "file", g.directory), ("weights_oversized", "file", g.sparse_huge)]
    for name, kind, fn in weights:
        case(S, name, E2, (lambda k, fn: lambda c: eval_argv(c, _run_mut("model.safetensors", k, fn)(c)))(kind, fn),
             bank=True)
    case(S, "weights_pickled", E2, lambda c: eval_argv(c, _pickled_into("model.safetensors")(c)), bank=True)
    config = [("config_truncated", "raw", g.truncate), ("config_non_utf8", "raw", g.non_utf8),
              ("config_deep_nesting", "raw", g.json_deep), ("config_family_unknown", "doc", g.at("family", "gpt")),
              ("config_embed_dim_huge", "doc", g.at("embed_dim", 10 ** 9)),
              ("config_temperature_nan", "doc", g.at("temperature_init", g.NAN)),
              ("config_text_width_huge", "doc", g.at("text_tower.config.hidden_size", 10 ** 8)),
              ("config_fifo", "file", g.fifo), ("config_directory", "file", g.directory)]
    for name, kind, fn in config:
        case(S, name, E2, (lambda k, fn: lambda c: eval_argv(c, _run_mut("config.json", k, fn)(c)))(kind, fn),
             bank=True)
    for name, kind, fn in [("tokenizer_truncated", "raw", g.truncate), ("tokenizer_non_utf8", "raw", g.non_utf8),
                           ("tokenizer_dev_zero", "file", g.dev_zero), ("tokenizer_oversized", "file", g.sparse_huge)]:
        case(S, name, E2, (lambda k, fn: lambda c: eval_argv(
            c, _run_mut("tokenizer/tokenizer.json", k, fn)(c)))(kind, fn), bank=True)
    case(S, "text_tower_width_huge", E2, lambda c: eval_argv(c, _run_mut(
        "text_tower/config.json", "doc", g.at("hidden_size", 10 ** 8))(c)), bank=True)

    def latest_outside(target: str):
        def make(c: Ctx) -> Path:
            run = run_copy(c)
            (run / "model.safetensors").unlink()
            (run / "checkpoints" / "latest").write_text(target + "\n")
            return run

        return make

    for name, target in [("latest_traversal", "../../../../../../etc"), ("latest_absolute", "/etc")]:
        case(S, name, E2, (lambda t: lambda c: eval_argv(c, latest_outside(t)(c)))(target), bank=True)
    # open_clip:ARCH:FILE
    def st_file(header_fn):
        return lambda c, f: header_fn(f)

    case(S, "open_clip_truncated", E2, _oc(ckpt=lambda c, f: f.write_bytes(g.safetensors_header(
        {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}, b"\0" * 10))))
    case(S, "open_clip_header_lies", E2, _oc(ckpt=lambda c, f: f.write_bytes(g.safetensors_header({}, b"", 2 ** 60))))
    case(S, "open_clip_non_tensor", E2, _oc(ckpt=st_file(_weights_header_non_tensor)))
    case(S, "open_clip_huge_shape", E2, _oc(ckpt=st_file(_weights_header_huge_shape)))
    case(S, "open_clip_pickle_planted", E2, _oc(ckpt=lambda c, f: f.write_bytes(g.planted_pickle(c.marker)),
                                                ckpt_name="model.pt"), stderr_has("error:"))
    case(S, "open_clip_torch_zip_planted", E2, _oc(ckpt=lambda c, f: g.planted_torch_file(c.marker, f),
                                                   ckpt_name="model.pt"))
    case(S, "open_clip_torch_non_tensor", E2, _oc(ckpt=lambda c, f: __import__("torch").save(
        {"state_dict": {"visual.proj": "a string", "n": 3}}, f), ckpt_name="model.pt"))
    case(S, "open_clip_missing_file", E2, _oc())
    case(S, "open_clip_fifo", E2, _oc(ckpt=lambda c, f: g.fifo(f)))
    case(S, "open_clip_arch_huge_width", E2, _oc(arch_mut=("doc", g.at("vision_cfg.width", 10 ** 7)),
                                                 ckpt=st_file(_weights_header_non_tensor)))
    case(S, "open_clip_arch_huge_layers", E2, _oc(arch_mut=("doc", g.at("text_cfg.layers", 10 ** 6)),
                                                  ckpt=st_file(_weights_header_non_tensor)))
    case(S, "open_clip_arch_nan", E2, _oc(arch_mut=("doc", g.at("embed_dim", g.NAN)),
                                          ckpt=st_file(_weights_header_non_tensor)))
    case(S, "open_clip_arch_deep_nesting", E2, _oc(arch_mut=("raw", g.json_deep)))
    case(S, "open_clip_arch_truncated", E2, _oc(arch_mut=("raw", g.truncate)))
    case(S, "open_clip_arch_fifo", E2, _oc(arch_mut=("file", g.fifo)))
    case(S, "open_clip_ref_without_path", E2, lambda c: eval_argv(c, "open_clip:ViT-B-32"))
    # Hugging Face CLIPModel folders
    case(S, "hf_pickled_bin", E2, _hf(lambda c, d: (d / "pytorch_model.bin").write_bytes(g.planted_pickle(c.marker))))
    case(S, "hf_torch_zip_planted", E2, _hf(lambda c, d: g.planted_torch_file(c.marker, d / "pytorch_model.bin")))
    case(S, "hf_truncated_safetensors", E2, _hf(lambda c, d: (d / "model.safetensors").write_bytes(
        g.safetensors_header({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, b"\0" * 3))))
    case(S, "hf_config_huge", E2, _hf(lambda c, d: ((d / "config.json").write_text(json.dumps(
        {**HF_CONFIG, "projection_dim": 10 ** 9, "vision_config": {**HF_CONFIG["vision_config"], "hidden_size": 10 ** 7}})),
        (d / "model.safetensors").write_bytes(g.safetensors_header({})))))
    case(S, "hf_preprocessor_nan", E2, _hf(lambda c, d: ((d / "preprocessor_config.json").write_text(
        '{"image_mean": [NaN, NaN, NaN], "image_std": [0, 0, 0], "crop_size": {"height": 32, "width": 32}}'),
        (d / "model.safetensors").write_bytes(g.safetensors_header({})))))
    case(S, "hf_config_deep_nesting", E2, _hf(lambda c, d: (
        (d / "config.json").write_bytes(b'{"model_type": "clip", "x": ' + b"[" * g.DEEP + b"]" * g.DEEP + b"}"),
        (d / "model.safetensors").write_bytes(g.safetensors_header({})))))
    # item 2: train --out into another tool's run: refused, nothing replaced
    open_clip_logs = {"checkpoints/epoch_1.pt": b"their checkpoint", "config.json": b'{"model": "ViT-B-32"}',
                      "log.jsonl": b'{"step": 1}\n', "model.safetensors": g.safetensors_header({})}
    case(S, "train_out_open_clip_logs", E2, _foreign_out(open_clip_logs))
    case(S, "train_out_foreign_run_json", E2, _foreign_out({"run.json": b'{"tool": "other", "steps": 10}',
                                                             "checkpoints/latest": b"step_1\n"}))
    case(S, "train_out_is_a_file", E2, lambda c: (c.out.write_text("my notes"), setattr(c, "out_is_input", True),
                                                  train_argv(c))[-1])


# ==================================================================================================================
# data formats: data check PATH (1: findings listed) and train --data PATH (2)
def _karpathy(mut: Callable[[dict], dict] = None, kind="doc"):
    def make(ctx: Ctx) -> Path:
        world = ctx.world(copy=True)
        p = world / "dataset_synthetic.json"
        if mut is not None:
            g.apply(p, kind, mut)
        return p

    return make


def _img0(field, value):
    return g.at(f"images.0.{field}", value)


KARPATHY_RECORD = [
    ("filename_int", _img0("filename", 12)), ("imgid_inf", _img0("imgid", g.INF)),
    ("sentences_not_list", _img0("sentences", "a caption")), ("tokens_int", g.at("images.0.sentences.0.tokens", 3)),
    ("raw_none", g.at("images.0.sentences.0.raw", None)), ("split_unknown", _img0("split", "holdout-of-doom")),
    ("filepath_traversal", _img0("filepath", "../../../../../../../etc")),
    ("filename_absolute", _img0("filename", "/etc/passwd")),
    ("duplicate_image", lambda d: {**d, "images": d["images"] + d["images"][:1]}),
    ("duplicate_sentid", g.at("images.1.sentences.0.sentid", 0)),
    ("huge_imgid", _img0("imgid", 10 ** 30)),
]
#: an id is opaque: a huge one may be read as it is (0) or listed (1)
KARPATHY_OPAQUE = {"huge_imgid": (0, 1)}
KARPATHY_FILE = [("images_empty", "doc", g.at("images", [])), ("images_not_list", "doc", g.at("images", {"a": 1})),
                 ("truncate", "raw", g.truncate), ("non_utf8", "raw", g.non_utf8), ("empty", "raw", g.empty),
                 ("deep_nesting", "raw", g.json_deep), ("binary", "raw", g.binary),
                 ("fifo", "file", g.fifo), ("dev_zero", "file", g.dev_zero), ("directory", "file", g.directory),
                 ("oversized", "file", g.sparse_huge)]


def _coco(mut, kind="doc"):
    def make(ctx: Ctx) -> Path:
        world = ctx.world(copy=True)
        p = world / "annotations" / "instances_test.json"
        g.apply(p, kind, mut)
        return p

    return make


def _csv(rows: Callable[[Ctx], bytes]):
    def make(ctx: Ctx) -> Path:
        world = ctx.world()
        p = ctx.inputs / "pairs.csv"
        p.write_bytes(rows(ctx).replace(b"WORLD", str(world).encode()))
        return p

    return make


GOOD_CSV = b"filepath,caption\nWORLD/images/000001.jpg,a red square\nWORLD/images/000002.jpg,a blue star\n"


def _tar(members: List[Tuple[str, bytes, str]]) -> bytes:
    """A tar of (name, data, type) members; type 'file', 'symlink' (data = target) or 'hardlink'."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data, typ in members:
            info = tarfile.TarInfo(name)
            if typ == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if typ == "symlink" else tarfile.LNKTYPE
                info.linkname = data.decode()
                tf.addfile(info)
    return buf.getvalue()


def _first_sample(world: Path) -> Tuple[str, Dict[str, bytes]]:
    with tarfile.open(world / "shards" / "test-000000.tar") as tf:
        parts: Dict[str, Dict[str, bytes]] = {}
        for m in tf.getmembers():
            key, _, ext = m.name.partition(".")
            parts.setdefault(key, {})[ext] = tf.extractfile(m).read()
    key = sorted(parts)[0]
    return key, parts[key]


def _shard(members: Callable[[Ctx, str, Dict[str, bytes]], List[Tuple[str, bytes, str]]]):
    def make(ctx: Ctx) -> Path:
        key, parts = _first_sample(ctx.world())
        p = ctx.inputs / "shards" / "test-000000.tar"
        p.parent.mkdir(parents=True)
        p.write_bytes(_tar(members(ctx, key, parts)))
        return p

    return make


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>&xxe;</filename><size><width>64</width><height>64</height><depth>3</depth></size>
<object><name>1</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>
"""
LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10))
          + b']>\n<annotation><filename>&lol9;</filename></annotation>\n')


def _flickr(name: str, data: bytes):
    def make(ctx: Ctx) -> Path:
        world = ctx.world(copy=True)
        ann = sorted((world / "flickr30k_entities" / "Annotations").iterdir())[0]
        ann.write_bytes(data)
        return world / "flickr30k_entities"

    return make


def _data_formats() -> None:
    S = "data_formats"
    check = lambda fmt, make, extra=(): lambda c: ["data", "check", "--format", fmt, make(c), *extra]  # noqa: E731
    # the seeds, unmutated: each format's checker answers 0 on them
    case(S, "karpathy_valid_seed", E0, check("karpathy", _karpathy()))
    case(S, "coco_valid_seed", E0, lambda c: ["data", "check", "--format", "coco",
                                              c.world() / "annotations" / "instances_test.json",
                                              "--image-root", c.world() / "images"])
    case(S, "csv_valid_seed", E0, check("csv", _csv(lambda c: GOOD_CSV)))
    case(S, "refer_valid_seed", E0, lambda c: ["data", "check", "--format", "refer", c.world() / "refsynth"])
    case(S, "flickr_valid_seed", E0, lambda c: ["data", "check", "--format", "flickr30k-entities",
                                                c.world() / "flickr30k_entities", "--image-root", c.world() / "images"])
    case(S, "imagefolder_valid_seed", E0, lambda c: ["data", "check", "--format", "imagefolder",
                                                     c.world() / "classification"])
    case(S, "webdataset_valid_seed", E0, lambda c: ["data", "check", "--format", "webdataset",
                                                    c.world() / "shards" / "test-000000.tar"])
    for name, fn in KARPATHY_RECORD:
        case(S, f"karpathy_{name}", KARPATHY_OPAQUE.get(name, E1), check("karpathy", _karpathy(fn)))
    for name in ("filename_int", "split_unknown", "filepath_traversal", "duplicate_image"):
        fn = dict(KARPATHY_RECORD)[name]
        case(S, f"karpathy_{name}-train", E2, (lambda fn: lambda c: train_argv(c, data=_karpathy(fn)(c)))(fn))
    for name, kind, fn in KARPATHY_FILE:
        case(S, f"karpathy_{name}", FINDING_OR_UNUSABLE, check("karpathy", _karpathy(fn, kind)))
    for name in ("truncate", "deep_nesting", "fifo", "dev_zero"):
        kind, fn = {n: (k, f) for n, k, f in KARPATHY_FILE}[name]
        case(S, f"karpathy_{name}-train", E2, (lambda k, fn: lambda c: train_argv(c, data=_karpathy(fn, k)(c)))(kind, fn))
    coco = [("bbox_negative", g.at("annotations.0.bbox", [1, 1, -5, -5])),
            ("bbox_nan", g.at("annotations.0.bbox", [g.NAN, 1, 2, 2])),
            ("bbox_inf", g.at("annotations.0.bbox", [1, 1, g.INF, 2])),
            ("category_unknown", g.at("annotations.0.category_id", 999)),
            ("image_ref_unknown", g.at("annotations.0.image_id", 10 ** 12)),
            ("duplicate_annotation_id", lambda d: {**d, "annotations": d["annotations"] + d["annotations"][:1]}),
            ("duplicate_image_id", lambda d: {**d, "images": d["images"] + d["images"][:1]}),
            ("file_name_traversal", g.at("images.0.file_name", "../../../../../../etc/passwd"))]
    img_root = lambda c: ["--image-root", c.inputs / "world" / "images"]  # noqa: E731
    for name, fn in coco:
        case(S, f"coco_{name}", E1, (lambda fn: lambda c: ["data", "check", "--format", "coco", _coco(fn)(c),
                                                           *img_root(c)])(fn))
    for name, kind, fn in [("truncate", "raw", g.truncate), ("deep_nesting", "raw", g.json_deep),
                           ("fifo", "file", g.fifo)]:
        case(S, f"coco_{name}", FINDING_OR_UNUSABLE, (lambda k, fn: lambda c: [
            "data", "check", "--format", "coco", _coco(fn, k)(c), *img_root(c)])(kind, fn))
    csvs = [("header_missing", lambda c: b"WORLD/images/000001.jpg,a red square\n"),
            ("non_utf8", lambda c: GOOD_CSV + b"WORLD/images/000003.jpg,caf\xe9 \xff\n"),
            ("filepath_traversal", lambda c: GOOD_CSV + b"../../../../../../../etc/passwd,a file\n"),
            ("filepath_absolute_non_image", lambda c: GOOD_CSV + b"/etc/passwd,a file\n"),
            ("nul_byte", lambda c: GOOD_CSV + b"WORLD/images/000003.jpg,a\x00b\n"),
            ("huge_field", lambda c: GOOD_CSV + b"WORLD/images/000003.jpg," + b"x" * 300_000 + b"\n"),
            ("empty_caption", lambda c: GOOD_CSV + b"WORLD/images/000003.jpg,\n"),
            ("planted_filepath", lambda c: GOOD_CSV + c.planted.encode() + b",a caption\n")]
    for name, rows in csvs:
        expect = (0, 1) if name == "nul_byte" else FINDING_OR_UNUSABLE  # a NUL in a caption is text: read or listed
        case(S, f"csv_{name}", expect, check("csv", _csv(rows)))
    case(S, "csv_planted_filepath-train", E2, lambda c: train_argv(
        c, data="csv:" + str(_csv(lambda cc: GOOD_CSV + cc.planted.encode() + b",a caption\n")(c))))

    def refer_planted(c: Ctx) -> Path:
        world = c.world(copy=True)
        (world / "refsynth" / "refs(unc).p").write_bytes(g.planted_pickle(c.marker))
        return world / "refsynth"

    case(S, "refer_pickle_planted", FINDING_OR_UNUSABLE, lambda c: ["data", "check", "--format", "refer",
                                                                    refer_planted(c)])
    case(S, "refer_pickle_planted-eval", E2, lambda c: eval_argv(c, "clip-tiny", task="synthetic-grounding-gt-boxes",
                                                                 world=refer_planted(c).parent))
    case(S, "refer_instances_truncated", FINDING_OR_UNUSABLE, lambda c: ["data", "check", "--format", "refer", (
        lambda w: (g.apply(w / "refsynth" / "instances.json", "raw", g.truncate), w / "refsynth")[1])(c.world(True))])
    flickr = lambda xml: lambda c: ["data", "check", "--format", "flickr30k-entities", _flickr("x", xml)(c),  # noqa
                                    "--image-root", c.inputs / "world" / "images"]
    case(S, "flickr_xxe", FINDING_OR_UNUSABLE, flickr(XXE), no_secret_leak)
    case(S, "flickr_billion_laughs", FINDING_OR_UNUSABLE, flickr(LAUGHS))

    def imagefolder(mut):
        def make(c: Ctx) -> Path:
            world = c.world(copy=True)
            mut(world / "classification")
            return world / "classification"

        return make

    case(S, "imagefolder_classnames_non_utf8", FINDING_OR_UNUSABLE, check("imagefolder", imagefolder(
        lambda d: (d / "classnames.txt").write_bytes(b"circle\n\xff\xfe\n"))))
    case(S, "imagefolder_classnames_fifo", FINDING_OR_UNUSABLE, check("imagefolder", imagefolder(
        lambda d: g.fifo(d / "classnames.txt"))))
    case(S, "imagefolder_image_is_fifo", E1, check("imagefolder", imagefolder(
        lambda d: g.fifo(sorted((d / "test" / "cross").iterdir())[0]))))


# ==================================================================================================================
# images: one image of a world copy replaced (data check: 1; eval / train: 2; valid oddities: 0)
def _bomb_png(w: int = 60000, h: int = 60000) -> bytes:
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _encoded(mode: str, size=(64, 64), fmt="JPEG") -> Callable[[Path], None]:
    def mut(p: Path) -> None:
        from PIL import Image

        img = Image.open(p).convert("RGB").resize(size)
        buf = io.BytesIO()
        if mode == "I;16":
            import numpy as np

            arr = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
            Image.fromarray(arr).save(buf, format="PNG")
        else:
            img.convert(mode).save(buf, format=fmt)
        p.write_bytes(buf.getvalue())

    return mut


IMAGE_BAD = [("truncated", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
             ("zero_bytes", lambda p: p.write_bytes(b"")), ("text", lambda p: p.write_bytes(b"hello, not an image\n")),
             ("bomb_header", lambda p: p.write_bytes(_bomb_png())),
             ("directory", g.directory), ("fifo", g.fifo), ("dev_zero", g.dev_zero),
             ("symlink_outside", lambda p: (p.unlink(), os.symlink("/etc/passwd", p))),
             ("dangling_symlink", g.dangling), ("oversized", g.sparse_huge)]
IMAGE_ODD_BUT_VALID = [("cmyk", _encoded("CMYK")), ("grayscale", _encoded("L")), ("one_pixel", _encoded("RGB", (1, 1))),
                       ("png_palette", _encoded("P", fmt="PNG")), ("png_16bit", _encoded("I;16"))]


def _cls_image(ctx: Ctx, mut) -> Path:
    world = ctx.world(copy=True)
    target = sorted((world / "classification" / "test" / "cross").iterdir())[0]
    mut(target)
    return world


def _train_image(ctx: Ctx, mut) -> Path:
    world = ctx.world(copy=True)
    obj = json.loads((world / "dataset_synthetic.json").read_text())
    im = next(i for i in obj["images"] if i["split"] == "train")
    mut(world / im.get("filepath", "") / im["filename"])
    return world


def _images() -> None:
    S = "images"
    for name, mut in IMAGE_BAD:
        case(S, f"{name}-data_check", E1, (lambda m: lambda c: ["data", "check", _train_image(c, m)])(mut))
        case(S, f"{name}-eval", E2, (lambda m: lambda c: eval_argv(c, "clip-tiny", world=_cls_image(c, m)))(mut))
    for name in ("truncated", "bomb_header", "fifo", "symlink_outside"):
        mut = dict(IMAGE_BAD)[name]
        case(S, f"{name}-train", E2, (lambda m: lambda c: train_argv(c, data=_train_image(c, m)))(mut))
    case(S, "truncated-train_skip", E0, lambda c: train_argv(
        c, data=_train_image(c, dict(IMAGE_BAD)["truncated"]), extra=[*QUICK, "--on-bad-sample", "skip"]),
         stderr_has("skipped 1"))
    for name, mut in IMAGE_ODD_BUT_VALID:
        case(S, f"{name}-eval", E0, (lambda m: lambda c: eval_argv(c, "clip-tiny", world=_cls_image(c, m)))(mut))

    def symlinked_folder(c: Ctx) -> Path:
        world = c.world(copy=True)
        real = c.inputs / "real-images"
        shutil.move(str(world / "classification" / "test"), real)
        os.symlink(real, world / "classification" / "test")
        return world

    case(S, "symlinked_image_folder-eval", (0, 2), lambda c: eval_argv(c, "clip-tiny", world=symlinked_folder(c)))


# ==================================================================================================================
# shards: webdataset tars and shard names
def _shards() -> None:
    S = "shards"
    wd = lambda make: lambda c: ["data", "check", "--format", "webdataset", make(c)]  # noqa: E731

    def planted_name(c: Ctx) -> str:
        name = "pipe:touch PWNED;cat s.tar"  # relative: the marker would land in the working directory
        shutil.copy(c.world() / "shards" / "test-000000.tar", c.cwd / name)
        return name

    case(S, "planted_pipe_file_name", E0, lambda c: ["data", "check", "--format", "webdataset", planted_name(c)])
    case(S, "pipe_name-data_check", E2, lambda c: ["data", "check", "--format", "webdataset", c.planted])
    case(S, "pipe_name-train", E2, lambda c: train_argv(c, data="webdataset:" + c.planted))
    case(S, "url_name-data_check", E2, lambda c: ["data", "check", "--format", "webdataset",
                                                  "https://example.invalid/s-{000..002}.tar"])
    case(S, "url_name-train", E2, lambda c: train_argv(c, data="webdataset:https://example.invalid/s.tar"))
    case(S, "brace_bomb", E2, lambda c: ["data", "check", "--format", "webdataset",
                                         str(c.world() / "shards" / "test-{000000000..999999999}.tar")])
    sample = lambda c, key, parts: [(f"{key}.{ext}", data, "file") for ext, data in parts.items()]  # noqa: E731
    members = [
        ("member_traversal", lambda c, k, p: [(f"../../../escaped.{e}", d, "file") for e, d in p.items()]),
        ("member_absolute", lambda c, k, p: [(f"{c.root}/abs-escaped.{e}", d, "file") for e, d in p.items()]),
        ("member_symlink", lambda c, k, p: [(f"{k}.jpg", b"/etc/passwd", "symlink"), (f"{k}.json", p["json"], "file")]),
        ("member_hardlink", lambda c, k, p: [(f"{k}.jpg", b"/etc/passwd", "hardlink"), (f"{k}.json", p["json"], "file")]),
        ("meta_non_utf8", lambda c, k, p: [(f"{k}.jpg", p["jpg"], "file"), (f"{k}.json", b'{"captions": ["\xff\xfe"]}', "file")]),
        ("meta_deep_nesting", lambda c, k, p: [(f"{k}.jpg", p["jpg"], "file"), (f"{k}.json", g.json_deep(), "file")]),
        ("meta_wrong_types", lambda c, k, p: [(f"{k}.jpg", p["jpg"], "file"), (f"{k}.json", b'{"captions": 5, "phrases": "x"}', "file")]),
        ("meta_nan_boxes", lambda c, k, p: [(f"{k}.jpg", p["jpg"], "file"), (f"{k}.json", json.dumps(
            {**json.loads(p["json"]), "phrases": [[{"start": 0, "end": 1, "bbox": [float("nan"), 0, 1, 1]}]]}).encode(), "file")]),
        ("duplicate_keys", lambda c, k, p: sample(c, k, p) + sample(c, k, p)),
        ("image_truncated", lambda c, k, p: [(f"{k}.jpg", p["jpg"][:100], "file"), (f"{k}.json", p["json"], "file")]),
        ("no_image", lambda c, k, p: [(f"{k}.json", p["json"], "file")]),
    ]
    for name, fn in members:
        # member names are sample keys, never extraction paths: a traversing name is read in memory (0) or listed (1)
        expect = (0, 1) if name in ("member_traversal", "member_absolute") else E1
        case(S, name, expect, wd(_shard(fn)))
    def raw_shard(kind, fn):
        def make(c: Ctx) -> Path:
            p = c.inputs / "shards" / "test-000000.tar"
            p.parent.mkdir(parents=True)
            shutil.copy(c.world() / "shards" / "test-000000.tar", p)
            g.apply(p, kind, fn)
            return p
        return make

    for name, kind, fn in [("truncate", "raw", g.truncate), ("binary", "raw", g.binary), ("empty", "raw", g.empty),
                           ("huge_member_size", "raw", lambda d: d[:124] + b"77777777777\0" + d[136:]),
                           ("fifo", "file", g.fifo), ("dev_zero", "file", g.dev_zero),
                           ("directory", "file", g.directory), ("oversized", "file", g.sparse_huge)]:
        case(S, name, FINDING_OR_UNUSABLE, wd(raw_shard(kind, fn)))

    def shard_folder(kind, fn):
        def make(c: Ctx) -> str:
            d = c.inputs / "shards"
            shutil.copytree(c.world() / "shards", d)
            bad = sorted(d.glob("train-*.tar"))[-1]
            g.apply(bad, kind, fn)
            return f"webdataset:{d}"
        return make

    for name, kind, fn in [("fifo", "file", g.fifo), ("dev_zero", "file", g.dev_zero), ("truncate", "raw", g.truncate)]:
        case(S, f"{name}-train", E2, (lambda m: lambda c: train_argv(c, data=m(c)))(shard_folder(kind, fn)))


# ==================================================================================================================
# paths: --out / --data / --data-root / --model / --task / --recipe pointing where they must not
def _paths() -> None:
    S = "paths"

    def out_under_file(c: Ctx) -> Path:
        f = c.inputs / "a-file"
        f.write_text("x")
        return f / "out"

    case(S, "train_out_under_file", E2, lambda c: ["train", "--model", "clip-tiny", "--data", c.world(),
                                                   "--out", out_under_file(c), *QUICK])
    case(S, "eval_out_under_file", E2, lambda c: ["eval", "--model", "clip-tiny", "--task", CLS, "--data-root",
                                                  c.world(), "--out", out_under_file(c)])
    case(S, "eval_out_read_only", E2, lambda c: ["eval", "--model", "clip-tiny", "--task", CLS, "--data-root",
                                                 c.world(), "--out", _read_only_dir(c)])
    case(S, "train_out_read_only", E2, lambda c: ["train", "--model", "clip-tiny", "--data", c.world(),
                                                  "--out", _read_only_dir(c), *QUICK])
    case(S, "synth_out_read_only", E2, lambda c: ["data", "synth", "--out", _read_only_dir(c), "--size", "tiny"])
    case(S, "report_out_read_only", E2, lambda c: ["report", c.use_bank(c.bank.results), "--out", _read_only_dir(c)],
         bank=True)
    case(S, "export_out_read_only", E2, lambda c: ["export", "--format", "clip_benchmark", c.use_bank(c.bank.results),
                                                   "--out", _read_only_dir(c)], bank=True)
    case(S, "compare_markdown_read_only", E2, lambda c: ["compare", "--paper", c.use_bank(c.bank.results),
                                                         "--markdown", _read_only_dir(c) / "cmp.md"], bank=True)
    for name, argv in [
        ("data_missing", lambda c: train_argv(c, data=c.inputs / "no-such-data")),
        ("data_empty_string", lambda c: train_argv(c, data="")),
        ("data_nul_byte", lambda c: train_argv(c, data=f"{c.world()}\0x")),
        ("data_dev_null", lambda c: train_argv(c, data="/dev/null")),
        ("data_root_missing", lambda c: ["eval", "--model", "clip-tiny", "--task", CLS, "--data-root",
                                         c.inputs / "nope", "--out", c.out]),
        ("data_root_is_file", lambda c: ["eval", "--model", "clip-tiny", "--task", CLS, "--data-root",
                                         c.write("f.txt", "x"), "--out", c.out]),
        ("data_root_nul_byte", lambda c: ["eval", "--model", "clip-tiny", "--task", CLS, "--data-root",
                                          f"{c.world()}\0", "--out", c.out]),
        ("model_empty_string", lambda c: eval_argv(c, "")),
        ("model_nul_byte", lambda c: eval_argv(c, "clip-tiny\0.yaml")),
        ("model_traversal", lambda c: eval_argv(c, "../../../../../../../etc")),
        ("model_dev_null", lambda c: eval_argv(c, "/dev/null")),
        ("model_newline_name", lambda c: eval_argv(c, "clip-tiny\nerror: forged second line")),
        ("task_etc_passwd", lambda c: eval_argv(c, "clip-tiny", task="/etc/passwd")),
        ("task_traversal", lambda c: eval_argv(c, "clip-tiny", task="../../../../../../../etc/hostname.yaml")),
        ("task_dev_zero", lambda c: eval_argv(c, "clip-tiny", task="/dev/zero")),
        ("task_nul_byte", lambda c: eval_argv(c, "clip-tiny", task="synthetic-retrieval\0")),
        ("recipe_directory", lambda c: train_argv(c, extra=["--recipe", "/etc"])),
        ("recipe_dev_zero", lambda c: train_argv(c, extra=["--recipe", "/dev/zero"])),
        ("recipe_url", lambda c: train_argv(c, extra=["--recipe", "https://example.invalid/r.yaml"])),
        ("recipe_planted", lambda c: train_argv(c, extra=["--recipe", c.planted])),
        ("out_nul_byte", lambda c: ["eval", "--model", "clip-tiny", "--task", CLS, "--data-root", c.world(),
                                    "--out", f"{c.out}\0x"]),
        ("resume_nul_byte", lambda c: train_argv(c, extra=[*QUICK, "--resume", "latest\0"])),
        ("report_missing", lambda c: ["report", c.inputs / "no-results", "--out", c.out]),
        ("report_is_file", lambda c: ["report", c.write("r.json", "{}"), "--out", c.out]),
        ("check_reference_etc_passwd", lambda c: ["check", c.use_bank(c.bank.results), "--reference", "/etc/passwd"]),
        ("check_reference_missing", lambda c: ["check", c.use_bank(c.bank.results), "--reference",
                                               c.inputs / "nope.json"]),
        ("check_reference_unknown_name", lambda c: ["check", c.use_bank(c.bank.results), "--reference", "no-such-ref"]),
        ("check_reference_dev_zero", lambda c: ["check", c.use_bank(c.bank.results), "--reference", "/dev/zero"]),
        ("compare_tables_etc", lambda c: ["compare", "--paper", c.use_bank(c.bank.results), "--tables", "/etc"]),
        ("export_format_unknown", lambda c: ["export", "--format", "../../evil", c.use_bank(c.bank.results),
                                             "--out", c.out]),
        ("list_unknown_kind", lambda c: ["list", "secrets"]),
        ("phrases_missing_file", lambda c: ["data", "phrases", c.inputs / "none.json"]),
    ]:
        case(S, name, E2, argv, bank=True)


def _read_only_dir(c: Ctx) -> Path:
    """A folder this process cannot write: mode 0555, or, for root (which ignores modes), a sysfs path."""
    if os.geteuid() == 0:
        return Path("/sys/loupe-bench-hostile-read-only")
    d = c.root / "ro"
    d.mkdir(exist_ok=True)
    d.chmod(0o555)
    return d


# ==================================================================================================================
# numbers: option and --set values
def _numbers() -> None:
    S = "numbers"
    sets = [("set_grad_clip_nan", "optim.grad_clip=.nan"), ("set_lr_nan", "optim.lr=.nan"),
            ("set_lr_inf", "optim.lr=.inf"), ("set_lr_overflow", "optim.lr=1.0e+400"),
            ("set_lr_negative", "optim.lr=-1"), ("set_seed_huge", f"seed={2 ** 70}"), ("set_seed_negative", "seed=-3"),
            ("set_batch_zero", "data.batch_size=0"), ("set_batch_huge", f"data.batch_size={10 ** 12}"),
            ("set_warmup_nan", "optim.warmup_steps=.nan"), ("set_steps_huge", f"steps={10 ** 30}"),
            ("set_steps_negative", "steps=-2"), ("set_betas_nan", "optim.betas=[.nan, .nan]"),
            ("set_alias_bomb", "optim.lr=" + g.yaml_alias_bomb().decode().replace("\n", " ")),
            ("set_deep", "optim.lr=" + "[" * g.DEEP + "]" * g.DEEP), ("set_no_equals", "optim.lr"),
            ("set_empty_key", "=1")]
    no_steps = [a for i, a in enumerate(QUICK) if "--steps" not in QUICK[max(i - 1, 0):i + 1]]
    for name, item in sets:
        extra = no_steps if item.startswith("steps=") else QUICK  # --steps would override a --set steps=...
        case(S, name, E2, (lambda it, ex: lambda c: train_argv(c, extra=[*ex, "--set", it]))(item, extra))
    for name, seed in [("train_seed_huge", str(2 ** 70)), ("train_seed_negative", "-1"), ("train_seed_nan", "nan")]:
        case(S, name, E2, (lambda s: lambda c: train_argv(c, extra=[*QUICK, "--seed", s]))(seed))
    for name, steps in [("train_steps_zero", "0"), ("train_steps_huge", str(10 ** 30))]:
        case(S, name, E2, (lambda s: lambda c: train_argv(c, extra=[*QUICK, "--steps", s]))(steps))
    for name, seed in [("eval_seed_huge", str(2 ** 70)), ("eval_seed_negative", "-5")]:
        case(S, name, E2, (lambda s: lambda c: [*eval_argv(c, "clip-tiny"), "--seed", s])(seed))
    case(S, "eval_device_bogus", E2, lambda c: [*eval_argv(c, "clip-tiny"), "--device", "cuda:99"])
    case(S, "synth_seed_huge", (0, 2), lambda c: ["data", "synth", "--out", c.out, "--size", "tiny", "--seed",
                                                  str(2 ** 70)])  # numpy takes any non-negative seed: 0 is clean
    for name, opts in [("synth_seed_negative", ["--seed", "-1"]),
                       ("synth_image_size_huge", ["--image-size", str(10 ** 6)]),
                       ("synth_image_size_small", ["--image-size", "31"])]:
        case(S, name, E2, (lambda o: lambda c: ["data", "synth", "--out", c.out, "--size", "tiny", *o])(opts))
    case(S, "synth_into_foreign_folder", E2, lambda c: (
        c.out.mkdir(), (c.out / "thesis.tex").write_text("years of work"), setattr(c, "out_is_input", True),
        ["data", "synth", "--out", c.out, "--size", "tiny"])[-1])


# ==================================================================================================================
# results and references: report / check / compare / export over the bank's results, mutated
def _results_copy(c: Ctx, which: str = "results") -> Path:
    return c.copy_in(getattr(c.bank, which), "results")


def _first_result(d: Path) -> Path:
    return sorted(d.glob("*.json"))[0]


def _result_mut(fn: Callable[[Path], None], which="results"):
    def make(c: Ctx) -> Path:
        d = _results_copy(c, which)
        fn(d)
        return d

    return make


def _set_value(value) -> Callable[[Path], None]:
    def fn(d: Path) -> None:
        p = _first_result(d)
        obj = json.loads(p.read_text())
        m = sorted(obj["metrics"])[0]
        obj["metrics"][m]["value"] = value
        p.write_text(json.dumps(obj))

    return fn


def _stale_copy(d: Path) -> None:
    p = _first_result(d)
    obj = json.loads(p.read_text())
    m = sorted(obj["metrics"])[0]
    obj["metrics"][m]["value"] = 0.999  # outside its own interval: an old copy of the file
    old = d / "old"
    old.mkdir()
    (old / p.name).write_text(json.dumps(obj))


def _exact_copy(d: Path) -> None:
    p = _first_result(d)
    shutil.copy(p, d / ("copy-of-" + p.name))


def _name(value: str) -> Callable[[Path], None]:
    def fn(d: Path) -> None:
        for p in d.glob("*.json"):
            obj = json.loads(p.read_text())
            obj["model"]["name"] = value
            p.write_text(json.dumps(obj))

    return fn


def _raw_result(kind, fn) -> Callable[[Path], None]:
    return lambda d: g.apply(_first_result(d), kind, fn)


def _ref(mut=None, kind="doc"):
    def make(c: Ctx) -> Path:
        p = c.copy_in(c.bank.reference, "reference.json")
        if mut is not None:
            g.apply(p, kind, mut)
        return p

    return make


RESULT_MUTS = [
    ("value_nan", _set_value(g.NAN)), ("value_inf", _set_value(g.INF)), ("value_string", _set_value("0.5")),
    ("value_null", _set_value(None)), ("value_outside_interval", _set_value(0.999)),
    ("stale_copy", _stale_copy), ("duplicate_copy", _exact_copy),
    ("truncated", _raw_result("raw", g.truncate)), ("non_utf8", _raw_result("raw", g.non_utf8)),
    ("deep_nesting", _raw_result("raw", g.json_deep)), ("fifo", _raw_result("file", g.fifo)),
    ("dev_zero", _raw_result("file", g.dev_zero)), ("oversized", _raw_result("file", g.sparse_huge)),
    ("schema_unknown", lambda d: g.apply(_first_result(d), "doc", g.at("schema", "someone-else/v9"))),
    ("metrics_not_dict", lambda d: g.apply(_first_result(d), "doc", g.at("metrics", [1, 2]))),
    ("ci_reversed", lambda d: g.apply(_first_result(d), "doc", lambda o: (
        o["metrics"][sorted(o["metrics"])[0]].__setitem__("ci95", [0.9, 0.1]), o)[1])),
    ("seed_huge", lambda d: g.apply(_first_result(d), "doc", g.at("seed", 2 ** 70))),
]


def _results() -> None:
    S = "results"
    report = lambda make: lambda c: ["report", make(c), "--out", c.out]  # noqa: E731
    check = lambda make, ref=None: lambda c: ["check", make(c), "--reference", (ref or _ref())(c)]  # noqa: E731
    export = lambda make: lambda c: ["export", "--format", "clip_benchmark", make(c), "--out", c.out]  # noqa: E731
    compare = lambda make: lambda c: ["compare", "--paper", make(c)]  # noqa: E731
    case(S, "valid-report", E0, report(_result_mut(lambda d: None)), not_merged, bank=True)
    case(S, "valid-check", E0, check(_result_mut(lambda d: None)), bank=True)
    case(S, "valid-export", E0, export(_result_mut(lambda d: None)), bank=True)
    for name, fn in RESULT_MUTS:
        case(S, f"{name}-report", E2, report(_result_mut(fn)), not_merged, bank=True)
    for name in ("value_nan", "value_inf", "stale_copy", "duplicate_copy", "truncated", "fifo", "value_outside_interval"):
        fn = dict(RESULT_MUTS)[name]
        case(S, f"{name}-check", E2, check(_result_mut(fn)), bank=True)
        case(S, f"{name}-export", E2, export(_result_mut(fn)), bank=True)
    for name in ("value_nan", "duplicate_copy", "truncated"):
        case(S, f"{name}-compare", E2, compare(_result_mut(dict(RESULT_MUTS)[name])), bank=True)
    # item 3: two identities with one display name are never averaged
    case(S, "same_name_two_identities-report", (0, 2), report(_result_mut(lambda d: None, "results_merged")),
         not_merged, bank=True)
    case(S, "same_name_two_identities-check", E2, check(_result_mut(lambda d: None, "results_merged")), bank=True)
    case(S, "same_name_two_identities-export", (0, 2), export(_result_mut(lambda d: None, "results_merged")),
         bank=True)
    case(S, "name_markup-report", E0, report(_result_mut(_name("<script>alert(1)</script>"))), no_raw_markup,
         bank=True)
    case(S, "name_traversal-export", (0, 2), export(_result_mut(_name("../../escaped"))), bank=True)
    case(S, "empty_folder-report", E2, report(lambda c: (c.inputs / "empty").mkdir() or c.inputs / "empty"))
    case(S, "empty_folder-check", E2, check(lambda c: (c.inputs / "empty").mkdir() or c.inputs / "empty"), bank=True)
    # references
    refs = [("no_fingerprints", "doc", g.at("fingerprints", g.DELETE)),
            ("fingerprints_empty", "doc", g.at("fingerprints", {})),
            ("rows_duplicated", "doc", lambda o: {**o, "rows": o["rows"] * 2}),
            ("row_value_nan", "doc", g.at("rows.0.value", g.NAN)), ("row_value_inf", "doc", g.at("rows.0.value", g.INF)),
            ("row_tolerance_negative", "doc", g.at("rows.0.abs_tol", -1.0)),
            ("row_tolerance_nan", "doc", g.at("rows.0.rel_tol", g.NAN)),
            ("row_value_string", "doc", g.at("rows.0.value", "high")),
            ("schema_unknown", "doc", g.at("schema", "other/v9")), ("seeds_wrong_type", "doc", g.at("seeds", "all")),
            ("truncated", "raw", g.truncate), ("non_utf8", "raw", g.non_utf8), ("deep_nesting", "raw", g.json_deep),
            ("fifo", "file", g.fifo), ("dev_zero", "file", g.dev_zero), ("directory", "file", g.directory),
            ("oversized", "file", g.sparse_huge)]
    case(S, "reference_rows_empty-check", FINDING_OR_UNUSABLE, check(_result_mut(lambda d: None), _ref(
        g.at("rows", []))), bank=True)  # nothing gated: every result row missing (1) or an unusable reference (2)
    for name, kind, fn in refs:
        case(S, f"reference_{name}-check", E2, check(_result_mut(lambda d: None), _ref(fn, kind)), bank=True)
    # refer pickles with duplicated refs (CI narrows)
    case(S, "refer_duplicated_refs-data_check", E1, lambda c: ["data", "check", "--format", "refer",
                                                               _dup_refs(c)])
    case(S, "paper_table_alias_bomb-compare", E2, lambda c: ["compare", "--paper", c.use_bank(c.bank.results),
                                                             "--tables", _paper_tables(c, g.yaml_alias_bomb)], bank=True)
    case(S, "paper_table_nan-compare", E2, lambda c: ["compare", "--paper", c.use_bank(c.bank.results),
                                                      "--tables", _paper_tables(c, None)], bank=True)


def _dup_refs(c: Ctx) -> Path:
    import pickle

    world = c.world(copy=True)
    p = world / "refsynth" / "refs(unc).p"
    refs = pickle.loads(p.read_bytes())
    p.write_bytes(pickle.dumps(refs + refs[:5], protocol=2))
    return world / "refsynth"


def _paper_tables(c: Ctx, raw) -> Path:
    d = c.copy_in(ROOT / "results" / "paper", "paper")
    p = sorted(d.glob("*.yaml"))[0]
    if raw is not None:
        p.write_bytes(raw(b""))
    else:
        text = p.read_text()
        import re

        p.write_text(re.sub(r"(:\s*)(\d+\.\d+)", r"\1.nan", text, count=3))
    return d


# ==================================================================================================================
# resume: train --resume against the bank's run (copied into --out, which is then an input that must not change)
def _resume(mut: Callable[[Ctx, Path], None] = None, resume="latest", extra: Sequence[str] = (), refused=True):
    def build(c: Ctx) -> List[str]:
        run = c.copy_in(c.bank.run, "x")
        shutil.move(str(run), c.out)
        c.out_is_input = refused  # a refused resume leaves the run exactly as it was
        if mut is not None:
            mut(c, c.out)
        r = resume(c) if callable(resume) else resume
        return ["train", "--model", "clip-tiny", "--data", c.world(), "--out", c.out, "--resume", r, *QUICK,
                "--steps", "3", *extra]

    return build


def _other_run(c: Ctx) -> str:
    other = c.copy_in(c.bank.run, "other-run")
    g.apply(other / "run.json", "doc", g.at("recipe.optim.warmup_steps", 1))
    return str(other / "checkpoints" / "step_1")


def _replaced_images(c: Ctx) -> Path:
    world = c.world(copy=True)
    for p in (world / "images").iterdir():
        _encoded("L")(p)
    return world


def _same_name_other_spec(c: Ctx) -> Path:
    from loupe_bench.models import get_spec

    spec = get_spec("clip-tiny")
    spec["temperature_init"] = 0.5
    p = c.inputs / "clip-tiny.yaml"
    g.dump(spec, p)
    return p


def _resume_cases() -> None:
    S = "resume"
    pointer = lambda text: lambda c, run: (run / "checkpoints" / "latest").write_bytes(text)  # noqa: E731
    case(S, "valid_more_steps", E0, _resume(refused=False), bank=True)
    case(S, "other_runs_checkpoint", E2, _resume(resume=_other_run), bank=True)
    case(S, "latest_traversal", E2, _resume(pointer(b"../../../../../../etc\n")), bank=True)
    case(S, "latest_absolute", E2, _resume(lambda c, run: (run / "checkpoints" / "latest").write_text(
        str(c.bank.run / "checkpoints" / "step_1") + "\n")), bank=True)
    case(S, "latest_empty", E2, _resume(pointer(b"")), bank=True)
    case(S, "latest_non_utf8", E2, _resume(pointer(b"step_\xff\xfe\n")), bank=True)
    case(S, "latest_fifo", E2, _resume(lambda c, run: g.fifo(run / "checkpoints" / "latest")), bank=True)
    case(S, "run_json_truncated", E2, _resume(lambda c, run: g.apply(run / "run.json", "raw", g.truncate)), bank=True)
    case(S, "run_json_deep_nesting", E2, _resume(lambda c, run: g.apply(run / "run.json", "raw", g.json_deep)),
         bank=True)
    case(S, "run_json_schema_unknown", E2, _resume(lambda c, run: g.apply(run / "run.json", "doc",
                                                                         g.at("finished_step", "many"))), bank=True)
    case(S, "state_pickle_planted", E2, _resume(lambda c, run: (run / "checkpoints" / "step_2" / "state.pt").write_bytes(
        g.planted_pickle(c.marker))), bank=True)
    case(S, "state_torch_zip_planted", E2, _resume(lambda c, run: g.planted_torch_file(
        c.marker, run / "checkpoints" / "step_2" / "state.pt")), bank=True)
    case(S, "resume_missing_checkpoint", E2, _resume(resume="step_99"), bank=True)
    case(S, "resume_traversal", E2, _resume(resume="../../../../../../etc"), bank=True)
    case(S, "changed_seed", E2, _resume(extra=["--seed", "7"]), bank=True)
    case(S, "changed_lr", E2, _resume(extra=["--set", "optim.lr=0.5"]), bank=True)

    def with_data(make_world):
        def build(c: Ctx) -> List[str]:
            argv = _resume()(c)
            argv[argv.index("--data") + 1] = str(make_world(c))
            return argv
        return build

    case(S, "images_replaced_same_json", E2, with_data(_replaced_images), bank=True)

    def with_model(c: Ctx) -> List[str]:
        argv = _resume()(c)
        argv[argv.index("--model") + 1] = str(_same_name_other_spec(c))
        return argv

    case(S, "same_name_other_spec", E2, with_model, bank=True)


# ==================================================================================================================
# bench options and reproduce options: refused before anything runs (stand-ins raise if anything would run)
def _bench() -> None:
    S = "bench_options"
    for name, argv in [
        ("unknown_benchmark", ["bench", "no-such-benchmark"]),
        ("unknown_benchmark_traversal", ["bench", "../../etc/passwd"]),
        ("set_no_dot", ["bench", "demo", "--set", "steps=3"]),
        ("set_unknown_benchmark", ["bench", "demo", "--set", "nope.steps=3"]),
        ("set_not_selected", ["bench", "demo", "--set", "gpu-check.steps=3"]),
        ("set_unknown_option", ["bench", "gpu-check", "--set", "gpu-check.bogus=1"]),
        ("set_nan", ["bench", "gpu-check", "--set", "gpu-check.steps=.nan"]),
        ("set_inf", ["bench", "gpu-check", "--set", "gpu-check.steps=.inf"]),
        ("set_negative", ["bench", "gpu-check", "--set", "gpu-check.steps=-1"]),
        ("set_huge", ["bench", "gpu-check", "--set", f"gpu-check.steps={10 ** 30}"]),
        ("set_wrong_type", ["bench", "gpu-check", "--set", "gpu-check.steps=[1, 2]"]),
        ("set_string", ["bench", "gpu-check", "--set", "gpu-check.steps=many"]),
        ("set_alias_bomb", ["bench", "gpu-check", "--set", "gpu-check.steps=" + g.yaml_alias_bomb().decode()]),
        ("set_no_equals", ["bench", "demo", "--set", "demo.steps"]),
        ("repeat_zero", ["bench", "demo", "--repeat", "0"]),
        ("repeat_huge", ["bench", "demo", "--repeat", str(10 ** 9)]),
        ("device_bogus", ["bench", "demo", "--device", "tpu:7"]),
        ("readme_missing", ["bench", "--render-only", "--readme", "/no/such/README.md"]),
        ("reproduce_plan_unknown", ["reproduce", "synthetic", "--plan", "everything"]),
        ("reproduce_seeds_zero", ["reproduce", "synthetic", "--seeds", "0"]),
        ("reproduce_seeds_huge", ["reproduce", "synthetic", "--seeds", str(10 ** 9)]),
        ("reproduce_seeds_nan", ["reproduce", "synthetic", "--seeds", "nan"]),
        ("reproduce_workers_zero", ["reproduce", "synthetic", "--workers", "0"]),
        ("reproduce_workers_huge", ["reproduce", "synthetic", "--workers", "100000"]),
        ("reproduce_seed_negative", ["reproduce", "synthetic", "--seed", "-1"]),
        ("reproduce_quick_and_plan", ["reproduce", "synthetic", "--quick", "--plan", "default"]),
        ("reproduce_paper_missing_root", ["reproduce", "paper", "--data-root", "/no/such/root", "--model", "clip-tiny"]),
    ]:
        case(S, name, E2, (lambda a: lambda c: [*a, *(["--out", c.out] if a[0] in ("bench", "reproduce") and
                                                      "--render-only" not in a else [])])(argv))


for _make in (_specs, _recipes, _tasks, _checkpoints, _data_formats, _images, _shards, _paths, _numbers, _results,
              _resume_cases, _bench):
    _make()

_ids = [c.id for c in CASES]
assert len(_ids) == len(set(_ids)), sorted({i for i in _ids if _ids.count(i) > 1})
