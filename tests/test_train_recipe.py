"""Recipes: the shipped ones load, bad values and unknown fields name the file and field, CLI errors are one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loupe_bench.errors import SpecError
from loupe_bench.train import list_recipes, load_recipe
from loupe_bench.train.recipe import Recipe, recipe_from_dict


def test_shipped_recipes_load_and_are_listed():
    names = [n for n, _ in list_recipes()]
    folder = Path(__file__).resolve().parents[1] / "loupe_bench" / "train" / "recipes"
    shipped = {yaml.safe_load(p.read_text())["name"] for p in folder.glob("*.yaml")}
    assert {"tiny-cpu", "proxy-gpu", "paper"} <= set(names) and set(names) == shipped
    tiny = load_recipe("tiny-cpu")
    assert isinstance(tiny, Recipe) and tiny.name == "tiny-cpu" and tiny.device == "cpu"
    paper = load_recipe("paper")
    assert paper.optim.name == "lamb" and paper.data.batch_size == 40960
    assert "not found" in " ".join(paper.notes.values())  # unknowns are marked
    assert load_recipe("proxy-gpu").precision == "bf16"


def test_yaml_round_trip(tmp_path):
    r = load_recipe("tiny-cpu")
    p = tmp_path / "r.yaml"
    p.write_text(r.to_yaml())
    assert load_recipe(p) == r


@pytest.mark.parametrize(
    "patch, field, words",
    [
        ({"optim": {"lr": -1}}, "optim.lr", "must be > 0"),
        ({"optim": {"name": "sgd"}}, "optim.name", "adamw, lamb"),
        ({"precision": "fp8"}, "precision", "fp32, bf16, fp16"),
        ({"data": {"batch_size": 0}}, "data.batch_size", ">= 1"),
        ({"data": {"batch_size": 6.5}}, "data.batch_size", "integer"),
        ({"accum_freq": 3}, "accum_freq", "not divisible"),
        ({"optim": {"warmup_steps": -5}}, "optim.warmup_steps", ">= 0"),
        ({"data": {"augment": {"random_resized_crop": [0.9, 0.2]}}}, "data.augment.random_resized_crop", "a <= b"),
        ({"data": {"augment": {"hflip": "sometimes"}}}, "data.augment.hflip", "auto"),
        ({"grad_checkpointing": "yes"}, "grad_checkpointing", "true or false"),
        ({"optim": {"lrr": 1.0}}, "optim.lrr", "unknown field"),
        ({"stepz": 3}, "stepz", "unknown field"),
    ],
)
def test_bad_values_name_file_and_field(tmp_path, patch, field, words):
    data = yaml.safe_load(load_recipe("tiny-cpu").to_yaml())
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            for k2, v2 in value.items():
                if isinstance(v2, dict):
                    data[key][k2].update(v2)
                else:
                    data[key][k2] = v2
        else:
            data[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert str(path) in msg and f"'{field}'" in msg and words in msg, msg


def test_unknown_recipe_and_missing_file():
    with pytest.raises(SpecError, match="unknown recipe 'nope'.*tiny-cpu"):
        load_recipe("nope")
    with pytest.raises(SpecError, match="recipe file not found"):
        load_recipe("/no/such/recipe.yaml")


def test_steps_or_epochs_required_and_overrides_validated():
    with pytest.raises(SpecError, match="set steps or epochs"):
        recipe_from_dict({"name": "x"})
    r = recipe_from_dict({"steps": 10})
    assert r.replace(**{"optim.lr": 0.5}).optim.lr == 0.5
    with pytest.raises(SpecError, match="'optim.lr'"):
        r.replace(**{"optim.lr": "fast"})


def test_per_rank_batch_arithmetic():
    r = recipe_from_dict({"steps": 10, "accum_freq": 2, "data": {"batch_size": 16}})
    assert r.per_rank_batch(2) == 8
    with pytest.raises(SpecError, match="not divisible by the world size 3"):
        r.per_rank_batch(3)
    with pytest.raises(SpecError, match="accum_freq 2"):
        r.per_rank_batch(16)


def _cli(args):
    from click.testing import CliRunner

    from loupe_bench.cli.main import cli

    return CliRunner().invoke(cli, args, standalone_mode=True)


def _main(args, capsys):
    from loupe_bench.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code, capsys.readouterr().err


def test_cli_unknown_model_recipe_and_bad_set_are_one_line_exit_2(tmp_path, capsys):
    code, err = _main(["train", "--model", "no-such-model", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                       "--recipe", "tiny-cpu"], capsys)
    # the data path is checked first or the model: either way one line naming what is wrong
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    code, err = _main(["train", "--model", "clip-tiny", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                       "--recipe", "nope"], capsys)
    assert code == 2 and "unknown recipe 'nope'" in err and err.count("\n") == 1
    code, err = _main(["train", "--model", "clip-tiny", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                       "--set", "optim.lr=-3"], capsys)
    assert code == 2 and "'optim.lr'" in err and err.count("\n") == 1


def test_cli_unknown_model_spec(tiny_world, tmp_path, capsys):
    code, err = _main(["train", "--model", "no-such-model", "--data", str(tiny_world), "--out", str(tmp_path / "o"),
                       "--steps", "2"], capsys)
    assert code == 2 and "unknown model 'no-such-model'" in err and err.count("\n") == 1


def test_hflip_auto_is_off_when_captions_speak_of_sides(tiny_world):
    from loupe_bench.train.recipe import recipe_from_dict
    from loupe_bench.train.sources import DatasetSource, captions_mention_sides

    assert captions_mention_sides(["a red circle left of a cube"]) and captions_mention_sides(["on the Right"])
    assert not captions_mention_sides(["a bright red circle", "copyright notice"])
    src = DatasetSource(tiny_world, recipe_from_dict({"steps": 1}))
    assert src.format == "karpathy" and len(src.records()) > 0  # the world's Karpathy file, train split only
    assert all(r.split == "train" for r in src.records())
    assert src.hflip() is False  # the synthetic captions say "left of" / "right of"
    forced = DatasetSource(tiny_world, recipe_from_dict({"steps": 1, "data": {"augment": {"hflip": True}}}))
    assert forced.hflip() is True
