"""Model-spec inheritance (``base: NAME``): the loader's resolution against a naive reference, the shipped children,
a toy child loaded through the normal path, and the errors (unknown base, cycle)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from loupe_bench.errors import SpecError
from loupe_bench.models import available_specs, create_model, get_spec
from loupe_bench.models.factory import merge_spec

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


def _naive_resolve(name, files):
    """Resolved spec of ``name`` read straight from the YAML files (no loader code)."""
    raw = yaml.safe_load(files[name].read_text(encoding="utf-8"))
    raw.setdefault("name", files[name].stem)
    if "base" not in raw:
        return raw
    child = {k: v for k, v in raw.items() if k != "base"}
    parent = {k: v for k, v in _naive_resolve(raw["base"], files).items() if k not in ("name", "description")}
    flat = _flatten(parent)
    flat.update(_flatten(child))
    return _unflatten(flat)


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
        assert got == _naive_resolve(name, files), name


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


def test_compared_tiny_models_share_towers_through_their_bases():
    keys = ("image_size", "embed_dim", "image_tower", "text_tower", "tokenizer", "projection")
    for size in ("tiny", "small"):
        specs = [get_spec(f"{fam}-{size}") for fam in ("clip", "filip", "loupe")]
        for k in keys:
            assert specs[0][k] == specs[1][k] == specs[2][k], (size, k)


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
    import loupe_bench.models.factory as factory

    monkeypatch.setattr(factory, "_spec_paths", lambda: [tmp_path / "a.yaml", tmp_path / "b.yaml"])
    with pytest.raises(SpecError, match=r"b\.yaml.*cycle in base specs \(a -> b -> a\)"):
        get_spec("a")
    (tmp_path / "b.yaml").write_text("base: b\n")  # a spec that is its own base
    with pytest.raises(SpecError, match=r"b\.yaml.*cycle in base specs \(b -> b\)"):
        get_spec("b")
