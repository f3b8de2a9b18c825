"""Model-spec inheritance (``base: NAME``): the loader's resolution against a naive reference, the shipped children,
a toy child loaded through the normal path, and the errors (unknown base, cycle)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from loupe_bench.errors import SpecError
from loupe_bench.models import available_specs, create_model, get_spec
from loupe_bench.specs import merge_spec

CAPTIONS = ["a red circle left of a blue square", "two green triangles", "a big blue square", "three circles"]


# -- an independent reference: flatten to leaf paths, overwrite, rebuild -----------------------------------------
def _flatten(d, prefix=()):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat):
    out = {}
    for path, v in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def _naive_resolve(name, files, presets=None):
    """Resolved spec of ``name`` read straight from the YAML files (no loader code): each level's ``towers:`` preset
    under its own keys, then the level over its resolved ``base``."""
    raw = yaml.safe_load(files[name].read_text(encoding="utf-8"))
    raw.setdefault("name", files[name].stem)
    own = {}
    if "towers" in raw:
        preset = _naive_resolve(raw["towers"], presets)
        own = _flatten({k: v for k, v in preset.items() if k not in ("name", "description")})
    own.update(_flatten({k: v for k, v in raw.items() if k not in ("base", "towers")}))
    if "base" not in raw:
        return _unflatten(own)
    parent = {k: v for k, v in _naive_resolve(raw["base"], files, presets).items() if k not in ("name", "description")}
    flat = _flatten(parent)
    flat.update(own)
    return _unflatten(flat)


def _tower_files():
    from loupe_bench.specs import spec_index

    return spec_index("towers")


def _children(files):
    return sorted(n for n, p in files.items() if "base" in yaml.safe_load(p.read_text(encoding="utf-8")))


def test_every_child_resolves_like_the_naive_merge():
    files = available_specs()
    children = _children(files)
    # the ablations and size variants are children (the point of the feature), and nothing resolves to a `base` key
    assert {"loupe-no-fsa", "loupe-no-tsa", "loupe-sampling", "loupe-oracle-regions", "loupe-small",
            "loupe-small-no-fsa", "filip-tiny", "clip-small"} <= set(children)
    for name in files:
        got = get_spec(name)
        assert "base" not in got and got["name"] == name
        assert "towers" not in got
        assert got == _naive_resolve(name, files, _tower_files()), name


def test_ablation_differs_from_its_base_only_where_it_says():
    for child, base, diff in [
        ("loupe-no-fsa", "loupe-tiny", {("loss", "weights", "fsa"): 0.0}),
        ("loupe-no-tsa", "loupe-tiny", {("loss", "weights", "tsa"): 0.0}),
        ("loupe-sampling", "loupe-tiny", {("loss", "weights", "nsi"): 0.0, ("loupe", "shapley"): "sampling"}),
        ("loupe-oracle-regions", "loupe-tiny", {("loupe", "fsa", "regions"): "oracle"}),
        ("loupe-small-no-fsa", "loupe-small", {("loss", "weights", "fsa"): 0.0}),
    ]:
        a, b = _flatten(get_spec(child)), _flatten(get_spec(base))
        assert set(a) == set(b), child
        changed = {k: a[k] for k in a if a[k] != b[k] and k not in (("name",), ("description",))}
        assert changed == diff, child
    # the resolved no-fsa spec, spelled out: loupe-tiny with one weight set to 0
    expected = get_spec("loupe-tiny")
    expected.update(name="loupe-no-fsa", description=get_spec("loupe-no-fsa")["description"])
    expected["loss"]["weights"]["fsa"] = 0.0
    assert get_spec("loupe-no-fsa") == expected


#: what "the same towers" means for compared models of one size (embed_dim is left out: clip-swin-t and
#: clip-vit-b16 keep 512-d embeddings beside FILIP's and LOUPE's 256-d ones, as their descriptions say)
SHARED_KEYS = ("image_size", "image_tower", "text_tower", "tokenizer", "projection", "temperature_init",
               "max_logit_scale", "text_special_tokens")


@pytest.mark.parametrize("size", ["tiny", "small", "paper", "swin-t", "vit-b16"])
def test_compared_models_of_a_size_share_towers_tokenizer_and_image_size(size):
    """Every shipped model of a size (CLIP, FILIP, LOUPE and LOUPE's ablations and bounds) resolves to the tower
    preset ``baselines/towers/SIZE.yaml``: nothing is copied by hand."""
    from loupe_bench.models.factory import tower_preset

    preset = tower_preset(size)
    members = [n for n in available_specs() if n.split("-", 1)[0] in ("clip", "filip", "loupe")
               and (n.split("-", 1)[1] == size or n.split("-", 1)[1].startswith(size + "-"))]
    if size == "tiny":  # the tiny LOUPE ablations are named loupe-<ablation>
        members += [n for n in available_specs() if get_spec(n).get("family") == "loupe"
                    and get_spec(n)["image_size"] == 64]
    members = sorted(set(members))
    assert {f"clip-{size}", f"filip-{size}"} <= set(members), members
    for name in members:
        spec = get_spec(name)
        for key in SHARED_KEYS:
            assert spec[key] == preset[key], (name, key)
        if spec["embed_dim"] != preset["embed_dim"]:
            assert spec["family"] == "clip" and str(spec["embed_dim"]) in spec["description"], name


def test_every_plan_trains_its_models_on_shared_towers_with_one_recipe():
    """The reproduction plans compare their models on one recipe (applied to all alike) and, after the plan's model
    overrides, on the same towers, tokenizer and image size."""
    from loupe_bench.pipeline.overrides import model_spec_mapping
    from loupe_bench.pipeline.plan import PLANS, get_plan
    from loupe_bench.train import load_recipe

    for plan_name in PLANS.names():
        plan = get_plan(plan_name)
        assert isinstance(plan.recipe, str)
        load_recipe(plan.recipe).replace(**plan.recipe_overrides)  # one recipe, valid with its overrides
        specs = [model_spec_mapping(m, plan.model_overrides) for m in plan.models]
        for key in SHARED_KEYS:
            assert all(s[key] == specs[0][key] for s in specs), (plan_name, key)


def test_merge_rules():
    base = {"name": "b", "a": {"x": 1, "y": [1, 2], "z": {"p": 1}}, "s": 1}
    out = merge_spec(base, {"a": {"y": [3], "z": {"q": 2}}, "s": {"now": "mapping"}, "t": 5})
    assert out == {"name": "b", "a": {"x": 1, "y": [3], "z": {"p": 1, "q": 2}}, "s": {"now": "mapping"}, "t": 5}
    assert base["a"]["z"] == {"p": 1}  # inputs untouched
    assert list(out) == ["name", "a", "s", "t"]  # the base's key order, new keys after


def test_name_and_description_are_not_inherited(tmp_path):
    f = tmp_path / "my-clip.yaml"
    f.write_text("base: clip-tiny\nembed_dim: 32\n")
    spec = get_spec(str(f))
    assert spec["name"] == "my-clip" and "description" not in spec and spec["family"] == "clip"
    spec = get_spec({"name": "m", "base": "clip-tiny", "description": "mine"})
    assert spec["description"] == "mine" and spec["image_tower"] == get_spec("clip-tiny")["image_tower"]


def test_toy_child_spec_builds_through_the_normal_path(tmp_path):
    f = tmp_path / "clip-tiny-32.yaml"
    f.write_text("name: clip-tiny-32\nbase: clip-tiny\nembed_dim: 32   # the one override\n")
    model = create_model(str(f), tokenizer_corpus=CAPTIONS, seed=0).eval()
    ref = create_model("clip-tiny", tokenizer_corpus=CAPTIONS, seed=0)
    assert model.spec["embed_dim"] == 32 and model.image_size == ref.image_size == 64
    tb = model.tokenizer(CAPTIONS)
    with torch.no_grad():
        img = model.encode_image(torch.randn(2, 3, 64, 64))
        txt = model.encode_text(tb.input_ids, tb.attention_mask)
    assert img.pooled.shape == (2, 32) and txt.pooled.shape == (4, 32)


def test_unknown_base_and_cycles_are_spec_errors_naming_the_file(tmp_path, monkeypatch):
    f = tmp_path / "orphan.yaml"
    f.write_text("base: no-such-model\n")
    with pytest.raises(SpecError, match=r"orphan\.yaml.*unknown base 'no-such-model'"):
        get_spec(str(f))
    # a cycle among registered specs: a -> b -> a
    (tmp_path / "a.yaml").write_text("base: b\nembed_dim: 1\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    import loupe_bench.specs as specs

    original = specs.spec_files
    monkeypatch.setattr(specs, "spec_files",
                        lambda kind: [tmp_path / "a.yaml", tmp_path / "b.yaml"] if kind == "models" else original(kind))
    with pytest.raises(SpecError, match=r"b\.yaml.*cycle in base specs \(a -> b -> a\)"):
        get_spec("a")
    (tmp_path / "b.yaml").write_text("base: b\n")  # a spec that is its own base
    with pytest.raises(SpecError, match=r"b\.yaml.*cycle in base specs \(b -> b\)"):
        get_spec("b")


def test_a_toy_spec_added_to_the_folder_needs_no_code_change(tmp_path, monkeypatch):
    """Adding a model is one file: a toy spec dropped into (a copy of) the spec folder is listed, resolved by name
    through ``base:`` and ``towers:``, and builds -- no registry line, no code."""
    import shutil

    import loupe_bench.specs as specs
    from loupe_bench.models import list_models

    folder = tmp_path / "baselines"
    shutil.copytree(specs.spec_dir("models"), folder)
    (folder / "toy-clip.yaml").write_text("name: toy-clip\nbase: clip-small\ntowers: tiny\n"
                                          "description: toy CLIP on the tiny towers\nembed_dim: 16\n")
    original = specs.spec_dir
    monkeypatch.setattr(specs, "spec_dir", lambda kind: folder if kind == "models" else original(kind))
    assert "toy-clip" in dict(list_models())
    spec = get_spec("toy-clip")
    assert spec["image_tower"] == get_spec("clip-tiny")["image_tower"] and spec["embed_dim"] == 16
    model = create_model("toy-clip", tokenizer_corpus=CAPTIONS, seed=0).eval()
    with torch.no_grad():
        assert model.encode_image(torch.randn(1, 3, 64, 64)).pooled.shape == (1, 16)


def test_tower_preset_errors_name_the_spec(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("base: clip-tiny\ntowers: huge\n")
    with pytest.raises(SpecError, match=r"m\.yaml.*unknown tower preset 'huge'.*tiny"):
        get_spec(str(f))


def test_list_towers_shows_every_preset_file():
    from click.testing import CliRunner

    from loupe_bench.cli.main import cli
    from loupe_bench.specs import spec_dir

    res = CliRunner().invoke(cli, ["list", "towers"])
    assert res.exit_code == 0, res.output
    names = sorted(p.stem for p in spec_dir("towers").glob("*.yaml"))
    assert names == ["paper", "small", "swin-t", "tiny", "vit-b16"]
    assert all(n in res.output for n in names) and "towers (5)" in res.output
