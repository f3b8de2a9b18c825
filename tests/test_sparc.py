"""SPARC (Bica et al., ICML 2024): the fine-grained loss against a naive per-caption loop, the sparse grouping on a
planted case, the native region scorer against a per-box loop, the specs, and a CLI train + native-scorer eval."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from loupe_bench.errors import SpecError
from loupe_bench.models.sparc import (
    SPARC, sparc_alignment_weights, sparc_fine_loss, sparc_grouped_embeddings, sparc_region_scores,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- a naive reference: Python loops over one caption's real tokens and its image's patches ---------------------------
def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _unit(a):
    n = math.sqrt(_dot(a, a))
    return [x / n for x in a]


def naive_weights(token, patches, threshold=None):
    """Eqs. (2)-(4) for one token over a list of patches (plain floats)."""
    s = [_dot(token, v) for v in patches]
    lo, hi = min(s), max(s)
    if hi == lo:
        return [1.0 / len(patches)] * len(patches)
    sigma = 1.0 / len(patches) if threshold is None else threshold
    kept = [(x - lo) / (hi - lo) for x in s]
    kept = [x if x >= sigma else 0.0 for x in kept]
    return [x / sum(kept) for x in kept]


def naive_grouped(token, patches, threshold=None):
    a = naive_weights(token, patches, threshold)
    return _unit([sum(a[j] * patches[j][d] for j in range(len(patches))) for d in range(len(token))])


def naive_caption_loss(patches, tokens, scale, threshold=None):
    """Eq. (6) for one caption: its real tokens only, both directions, mean over its tokens."""
    c = [naive_grouped(t, patches, threshold) for t in tokens]
    n = len(tokens)
    total = 0.0
    for j in range(n):
        c2t = [scale * _dot(c[j], tokens[k]) for k in range(n)]
        t2c = [scale * _dot(tokens[j], c[k]) for k in range(n)]
        total += -(c2t[j] - math.log(sum(math.exp(x) for x in c2t)))
        total += -(t2c[j] - math.log(sum(math.exp(x) for x in t2c)))
    return total / (2 * n)


def naive_fine_loss(img, txt, lengths, scale, threshold=None):
    losses = [naive_caption_loss(img[i].tolist(), txt[i, :lengths[i]].tolist(), scale, threshold)
              for i in range(img.shape[0]) if lengths[i] > 0]
    return sum(losses) / len(losses)


def random_case(seed=0, b=4, p=6, length=7, d=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, p, d, generator=g, dtype=dtype), dim=-1)
    txt = F.normalize(torch.randn(b, length, d, generator=g, dtype=dtype), dim=-1)
    lengths = [length, 1] + [int(x) for x in torch.randint(2, length, (b - 2,), generator=g)]
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    # garbage in the padding: it must not reach any softmax or mean
    txt = torch.where(mask[..., None], txt, torch.full_like(txt, 3.0))
    return img, txt, mask, lengths


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_fine_loss_equals_naive_per_caption_loop(dtype, threshold):
    img, txt, mask, lengths = random_case(dtype=dtype)
    scale = torch.tensor(7.5, dtype=dtype)
    got = sparc_fine_loss(img, txt, mask, scale, threshold)
    ref = naive_fine_loss(img.double(), txt.double(), lengths, 7.5, threshold)
    assert abs(float(got) - ref) <= 1e-6, (float(got), ref)


def test_fine_loss_is_per_caption_and_padding_invariant():
    img, txt, mask, lengths = random_case(seed=3)
    scale = torch.tensor(10.0, dtype=torch.float64)
    full = sparc_fine_loss(img, txt, mask, scale)
    # other padding values, and each caption alone: no caption sees another (no batch negatives)
    other = torch.where(mask[..., None], txt, -txt)
    assert torch.allclose(sparc_fine_loss(img, other, mask, scale), full, atol=1e-12, rtol=0)
    per = [sparc_fine_loss(img[i:i + 1], txt[i:i + 1, :lengths[i]], mask[i:i + 1, :lengths[i]], scale)
           for i in range(len(lengths))]
    assert torch.allclose(full, torch.stack(per).mean(), atol=1e-12, rtol=0)
    assert float(per[1]) == 0.0  # a one-token caption: a softmax over itself
    # a caption with no real token is left out of the mean, not counted as 0
    empty = mask.clone()
    empty[1] = False
    assert torch.allclose(sparc_fine_loss(img, txt, empty, scale), torch.stack([per[0], *per[2:]]).mean(),
                          atol=1e-12, rtol=0)


def test_fine_loss_gradients_are_finite_with_flat_rows_and_empty_captions():
    img = F.normalize(torch.randn(3, 4, 8), dim=-1)
    img[0] = img[0, :1].expand(4, 8)  # every patch the same: a flat row (0/0 in the paper's formula)
    img.requires_grad_(True)
    txt = F.normalize(torch.randn(3, 5, 8), dim=-1).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    loss = sparc_fine_loss(img, txt, mask, torch.tensor(20.0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()
    weights = sparc_alignment_weights(txt.detach()[0] @ img.detach()[0].T)
    torch.testing.assert_close(weights, torch.full((5, 4), 0.25))  # flat rows: uniform weights


# -- a planted case: the grouping comes from exactly the patches that match -------------------------------------------
def _planted(d=8):
    """A 3x3 grid. Token 0 ("red", direction e0) matches patches {0, 1, 3}, token 1 ("square", e1) matches {7, 8}; each
    object points away from the other's token, and the background (the other patches) away from both. Small
    perturbations keep the patches of one kind unequal."""
    e = torch.eye(d, dtype=torch.float64)
    patches = torch.stack([e[2] - 0.7 * e[0] - 0.7 * e[1] + 0.1 * j * e[5] for j in range(9)])
    for j, bump in zip((0, 1, 3), (0.0, 0.1, 0.2)):
        patches[j] = e[0] - 0.7 * e[1] + bump * e[6]
    for j, bump in zip((7, 8), (0.0, 0.15)):
        patches[j] = e[1] - 0.7 * e[0] + bump * e[7]
    tokens = torch.stack([e[0], e[1]])
    return F.normalize(patches, dim=-1), tokens


def test_planted_token_is_grouped_from_exactly_its_patches():
    patches, tokens = _planted()
    weights = sparc_alignment_weights(tokens @ patches.T)
    assert set(torch.nonzero(weights[0]).flatten().tolist()) == {0, 1, 3}
    assert set(torch.nonzero(weights[1]).flatten().tolist()) == {7, 8}
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, dtype=torch.float64))
    grouped = sparc_grouped_embeddings(patches[None], tokens[None])[0]
    for t, members in ((0, [0, 1, 3]), (1, [7, 8])):
        from_members = F.normalize((weights[t, members, None] * patches[members]).sum(0), dim=0)
        torch.testing.assert_close(grouped[t], from_members)
        assert float(grouped[t] @ tokens[t]) > 0.8 > 0 > float(grouped[t] @ tokens[1 - t])  # the token's object
    # the same values through the naive reference
    for t in range(2):
        torch.testing.assert_close(grouped[t], torch.tensor(naive_grouped(tokens[t].tolist(), patches.tolist()),
                                                            dtype=torch.float64))


def test_planted_region_scores_prefer_the_box_holding_the_token():
    patches, tokens = _planted()
    member = torch.zeros(3, 9, dtype=torch.bool)
    member[0, [0, 1, 3, 4]] = True  # the "red" object and one background patch
    member[1, [7, 8]] = True  # the "square" object
    member[2, [2, 5, 6]] = True  # background only
    text = torch.stack([tokens[:1], tokens[1:]])  # two one-token texts: "red", "square"
    mask = torch.ones(2, 1, dtype=torch.bool)
    scores = sparc_region_scores(patches, member, text, mask)
    assert scores.shape == (3, 2)
    assert scores[:, 0].argmax() == 0 and scores[:, 1].argmax() == 1
    assert float(scores[2].max()) < 0  # the background box matches neither


# -- the native scorer: equal to a per-box loop, any chunking --------------------------------------------------------
@pytest.mark.parametrize("max_elements", [None, 1])
def test_region_scores_equal_a_per_box_loop(max_elements):
    img, txt, mask, lengths = random_case(seed=5, b=3, p=9, length=5)
    tokens = img[0]
    member = torch.rand(6, 9, generator=torch.Generator().manual_seed(1)) < 0.5
    member[:, 4] = True  # every box holds a patch
    member[0] = False
    member[0, 2] = True  # a one-patch box
    got = sparc_region_scores(tokens, member, txt, mask, max_elements=max_elements)
    ref = torch.zeros(6, 3, dtype=torch.float64)
    for k in range(6):
        box = [tokens[j].tolist() for j in range(9) if member[k, j]]
        for n in range(3):
            toks = txt[n, :lengths[n]].tolist()
            ref[k, n] = sum(_dot(naive_grouped(t, box), t) for t in toks) / len(toks)
    torch.testing.assert_close(got, ref, atol=1e-9, rtol=0)


# -- specs -------------------------------------------------------------------------------------------------------------
SIZES = {"sparc-tiny": "clip-tiny", "sparc-small": "clip-small", "sparc-paper": "clip-paper",
         "sparc-swin-t": "clip-swin-t", "sparc-vit-b16": "clip-vit-b16"}


def test_every_sparc_spec_is_its_clip_spec_with_sparc_loss():
    from loupe_bench.models import get_spec

    for name, base in SIZES.items():
        spec, clip = get_spec(name), get_spec(base)
        assert spec["family"] == "sparc" and spec["loss"]["weights"] == {"clip": 0.5, "fine": 0.5}, name
        assert spec["sparc"] == {"temperature_init": 0.07, "shared_temperature": False, "threshold": None}, name
        same = {k: v for k, v in spec.items() if k not in ("name", "description", "family", "loss", "sparc")}
        assert same == {k: v for k, v in clip.items() if k not in ("name", "description", "family", "loss")}, name
        assert {k: v for k, v in spec["loss"].items() if k != "weights"} == \
            {k: v for k, v in clip["loss"].items() if k != "weights"}, name


def test_bad_sparc_blocks_are_spec_errors():
    from loupe_bench.models import get_spec

    for bad, match in (({"threshold": 0}, r"sparc\.threshold"), ({"threshold": "1/P"}, r"sparc\.threshold"),
                       ({"temperature_init": -1}, r"sparc\.temperature_init"), ({"sigma": 0.1}, r"sparc\.sigma")):
        with pytest.raises(SpecError, match=match):
            get_spec({"name": "bad", "base": "sparc-tiny", "sparc": bad})
    with pytest.raises(SpecError, match=r"loss\.weights.*unknown loss terms \['filip'\]"):
        get_spec({"name": "bad", "base": "sparc-tiny", "loss": {"weights": {"filip": 1.0}}})


def test_model_loss_terms_temperatures_and_shared_option():
    from loupe_bench.models import create_model

    captions = ["a red circle left of a blue square", "two green triangles", "a big blue square"]
    model = create_model("sparc-tiny", tokenizer_corpus=captions, seed=0)
    assert isinstance(model, SPARC)
    tb = model.tokenizer(captions)
    batch = {"pixels": torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
             "input_ids": tb.input_ids, "attention_mask": tb.attention_mask}
    emb = model.embed(batch)
    out = model.loss_from_embeddings(emb, batch)
    assert set(out.terms) == {"clip", "fine"} and set(out.logs) == {"logit_scale", "sparc_logit_scale"}
    torch.testing.assert_close(out.total, 0.5 * out.terms["clip"] + 0.5 * out.terms["fine"])
    ref = sparc_fine_loss(emb["image_tokens"], emb["text_tokens"], emb["text_mask"], model.fine_scale())
    torch.testing.assert_close(out.terms["fine"], ref)
    out.total.backward()
    assert model.sparc_logit_scale.grad is not None and model.logit_scale.grad is not None
    shared = create_model({"name": "s", "base": "sparc-tiny", "sparc": {"shared_temperature": True}}, seed=0,
                          tokenizer_corpus=captions)
    assert not hasattr(shared, "sparc_logit_scale") and shared.fine_scale() is not None


# -- the command line: train 2 steps, evaluate grounding with the native scorer ----------------------------------------
def test_cli_trains_sparc_and_grounds_with_its_native_scorer(tiny_world, tmp_path, capsys, monkeypatch):
    from loupe_bench.cli.main import main
    from loupe_bench.specs import load_yaml, spec_files

    def cli(argv):
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert info.value.code == 0, err

    run = tmp_path / "run"
    cli(["train", "--model", "sparc-tiny", "--data", tiny_world, "--out", run, "--recipe", "tiny-cpu", "--steps", "2",
         "--set", "threads=1", "--set", "data.batch_size=8", "--set", "log.progress=false"])
    assert json.loads((run / "config.json").read_text())["family"] == "sparc"

    task = next(load_yaml(p) for p in spec_files("tasks") if load_yaml(p).get("name") ==
                "synthetic-grounding-native-scorer")
    task.update(splits=["test"], bootstrap={"n_resamples": 20, "seed": 0})
    assert task["options"]["region_scoring"] == "native"
    task_file = tmp_path / "grounding.yaml"
    task_file.write_text(yaml.safe_dump(task))
    calls = []
    original = SPARC.score_regions

    def spy(self, image_features, boxes, text_features):
        out = original(self, image_features, boxes, text_features)
        calls.append([o.shape for o in out])
        return out

    monkeypatch.setattr(SPARC, "score_regions", spy)
    cli(["eval", "--model", run, "--task", task_file, "--data-root", tiny_world, "--out", tmp_path / "res"])
    (result,) = list((tmp_path / "res").glob("*.json"))
    r = json.loads(result.read_text())
    assert r["model"]["spec"]["family"] == "sparc" and r["task"]["spec"]["options"]["region_scoring"] == "native"
    assert 0.0 <= r["metrics"]["acc@0.5"]["value"] <= 1.0
    assert calls  # the grounding went through SPARC's own scorer
