"""A task spec's type-specific options are converted by one function, the adapter's ``parse_options``: ``load_task``
keeps its result's fields as the normalised options, and an adapter built from any spec gets the same checks."""
from __future__ import annotations

import copy
from dataclasses import asdict

import pytest

from loupe_bench.errors import SpecError
from loupe_bench.specs import load_named
from loupe_bench.tasks import load_adapters, load_task
from loupe_bench.tasks.spec import parse_task_spec


@pytest.mark.parametrize("name", ["synthetic-retrieval", "synthetic-detection-grid", "synthetic-captioning"])
def test_load_task_keeps_the_parsed_options_and_the_adapter_sees_the_same(name):
    spec = load_task(name)
    adapter_cls = load_adapters().get(spec.type)
    raw, _ = load_named("tasks", name)
    expected = adapter_cls.Options(**(raw.get("options") or {}))   # the dataclass itself, built by hand
    assert spec.options == asdict(expected)                           # defaults filled in, values normalised
    assert adapter_cls(spec).opts == expected


def test_a_hand_built_spec_gets_the_same_conversion_as_a_loaded_one():
    raw, _ = load_named("tasks", "synthetic-retrieval")
    data = copy.deepcopy(raw)
    data["options"] = {"ks": [1, 5, 10], "captions_per_image": 2}
    spec = parse_task_spec(data, "hand-built")
    adapter_cls = load_adapters().get(spec.type)
    opts = adapter_cls(spec).opts
    assert (opts.ks, opts.captions_per_image) == ((1, 5, 10), 2)
    assert asdict(opts) == load_task(data).options
    for options, message in [({"kss": [1]}, "hand-built: unknown field 'options.kss'"),
                             ({"captions_per_image": "2"}, "hand-built: field 'options.captions_per_image'")]:
        data["options"] = options
        with pytest.raises(SpecError, match=message):
            adapter_cls(parse_task_spec(data, "hand-built"))


def test_options_are_converted_once_per_loaded_spec(monkeypatch):
    """``load_task`` converts the options; the adapter made from that spec reuses the result (no second
    conversion), and the converted object is not part of the spec's data or fingerprint."""
    import loupe_bench.tasks.base as base

    calls = []
    real = base.from_mapping
    monkeypatch.setattr(base, "from_mapping", lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1])
    for name in ("synthetic-retrieval", "synthetic-grounding-native", "synthetic-token-interaction"):
        calls.clear()
        spec = load_task(name)
        adapter = load_adapters().get(spec.type)(spec)
        assert len(calls) == 1, (name, calls)
        assert adapter.opts is spec.parsed_options
        assert "parsed_options" not in spec.to_dict() and "parsed_options" not in spec.normalised()
