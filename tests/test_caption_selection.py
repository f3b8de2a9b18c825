"""Caption selection (``caption-selection``: SugarCrepe, ARO VG-Relation / VG-Attribution) on hand-written samples in
the benchmarks' real layouts, with tiny PNGs generated here.

References: CLIP_benchmark 1.6.2's own ``image_caption_selection.evaluate`` over its own ``SugarCrepe`` dataset
class (exact per-subset parity), and a naive per-item loop (PIL crop, the model's own preprocess, one image and one
text at a time) for accuracy, per-kind accuracy, the macro rules and both tie rules."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli_run import one_line_error, run_cli
from loupe_bench.errors import DataError
from loupe_bench.specs import load_yaml, spec_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUBSETS = ("add_obj", "add_att", "replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")
COLOURS = ("red", "green", "blue", "yellow", "white", "black")
SHAPES = ("cube", "ball", "cone", "ring", "star", "box")


# -- sample data in the real layouts --------------------------------------------------------------------------------
def _png(path: Path, seed: int, size=(48, 40)) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    arr[: size[1] // 2, :, seed % 3] = 255  # a block of one colour: images differ beyond noise
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _sugarcrepe_json(subset_index: int):
    """``{id: {filename, caption, negative_caption}}`` with non-contiguous ids (``4 j + subset index``); ``swap_att``
    item ``10`` is an exact tie (the negative equals the caption)."""
    out = {}
    for j in range(4):
        k = subset_index + j
        cap = f"a {COLOURS[k % 6]} {SHAPES[(k + 1) % 6]} left of a {COLOURS[(k + 2) % 6]} {SHAPES[(k + 3) % 6]}"
        neg = f"a {COLOURS[(k + 4) % 6]} {SHAPES[(k + 5) % 6]} on top of {j + 2} {SHAPES[k % 6]}s"
        out[str(j * 4 + subset_index)] = {"filename": f"{(k % 5) + 1:012d}.png", "caption": cap,
                                          "negative_caption": neg}
    if SUBSETS[subset_index] == "swap_att":
        out["10"]["negative_caption"] = out["10"]["caption"]
    return out


def write_sugarcrepe(root: Path) -> Path:
    """``root/sugar_crepe/<subset>.json`` (all seven) + ``root/coco/val2017/<12-digit id>.png``."""
    for i in range(1, 6):
        _png(root / "coco" / "val2017" / f"{i:012d}.png", i)
    for s, name in enumerate(SUBSETS):
        (root / "sugar_crepe").mkdir(parents=True, exist_ok=True)
        (root / "sugar_crepe" / f"{name}.json").write_text(json.dumps(_sugarcrepe_json(s), indent=1))
    return root


RELATIONS = [("on", 3), ("left of", 2), ("behind", 1), ("near", 2)]      # "near": in ARO's macro exclusion list
ATTRIBUTES = [(["white", "black"], 3), (["red", "blue"], 2), (["small", "large"], 1)]


def _aro_case(i: int, kind_key: str, kind, true: str, false: str):
    box = {"bbox_x": 3 + i % 4, "bbox_y": 2 + i % 3, "bbox_w": 30 - i % 5, "bbox_h": 25 + i % 4}
    return {"image_path": f"{2315370 + i % 4}.png", **box, "true_caption": true, "false_caption": false,
            kind_key: kind}


def write_aro(root: Path) -> Path:
    """``root/aro/visual_genome_{relation,attribution}.json`` + ``root/aro/images/``; the last relation case is an
    exact tie (false caption = true caption)."""
    for i in range(4):
        _png(root / "aro" / "images" / f"{2315370 + i}.png", 10 + i, size=(64, 48))
    rel, att = [], []
    for name, n in RELATIONS:
        for j in range(n):
            a, b = f"{COLOURS[j]} {SHAPES[len(rel) % 6]}", f"{COLOURS[(j + 3) % 6]} {SHAPES[(len(rel) + 2) % 6]}"
            rel.append(_aro_case(len(rel), "relation_name", name, f"the {a} is {name} the {b}",
                                 f"the {b} is {name} the {a}"))
    rel[-1]["false_caption"] = rel[-1]["true_caption"]
    for pair, n in ATTRIBUTES:
        for j in range(n):
            s1, s2 = SHAPES[j], SHAPES[(j + 2) % 6]
            att.append(_aro_case(len(att), "attributes", pair, f"the {pair[0]} {s1} and the {pair[1]} {s2}",
                                 f"the {pair[1]} {s1} and the {pair[0]} {s2}"))
    (root / "aro" / "visual_genome_relation.json").write_text(json.dumps(rel))
    (root / "aro" / "visual_genome_attribution.json").write_text(json.dumps(att))
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cs")
    return write_aro(write_sugarcrepe(root))


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory) -> Path:
    """A tiny random ``transformers.CLIPModel`` folder (open_clip's BPE tokenizer, its image-processor settings)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from loupe_bench.models.open_clip_convert import open_clip_bpe_tokenizer

    d, vocab = tmp_path_factory.mktemp("hf-clip"), 49408
    conf = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=32, bos_token_id=vocab - 2,
                         eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(conf).save_pretrained(str(d))
    open_clip_bpe_tokenizer(32).hf.save_pretrained(str(d))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def clip_model(hf_clip):
    from loupe_bench.models import load_model

    return load_model(hf_clip).eval()


def task_dict(name: str, **options):
    """A shipped caption-selection spec as a mapping, with few bootstrap replicates and ``options`` overridden."""
    d = load_yaml(next(p for p in spec_files("tasks") if load_yaml(p).get("name") == name))
    d["bootstrap"] = {"n_resamples": 20, "seed": 0}
    d.setdefault("options", {}).update(options)
    return d


# -- loaders --------------------------------------------------------------------------------------------------------
def test_sugarcrepe_loader_reads_the_real_layout(data_root):
    from loupe_bench.data import DATASETS

    folder = data_root / "sugar_crepe"
    recs = DATASETS.get("sugarcrepe")(folder, image_root=str(data_root / "coco" / "val2017")).load()
    expected = []
    for s, name in enumerate(SUBSETS):
        for key, e in json.loads((folder / f"{name}.json").read_text()).items():
            expected.append((key, (data_root / "coco" / "val2017" / e["filename"],),
                             (e["caption"], e["negative_caption"]), name, name))
    got = [(g.group_id, g.images, g.texts, g.kind, g.split) for g in recs.groups]
    assert sorted(got) == sorted(expected) and len(got) == 28 and not recs.skipped
    one = DATASETS.get("sugarcrepe")(folder, split="swap_att", image_root=str(data_root / "coco" / "val2017")).load()
    assert [g.group_id for g in one.groups] == ["6", "10", "14", "18"] and {g.kind for g in one.groups} == {"swap_att"}
    # one subset file given directly; the image folder found as CLIP_benchmark lays it out (val2017/ beside)
    direct = DATASETS.get("sugarcrepe")(folder / "add_att.json", image_root=str(data_root / "coco" / "val2017"))
    assert [g.group_id for g in direct.load().groups] == list(json.loads((folder / "add_att.json").read_text()))


def test_aro_loader_reads_the_real_layout(data_root):
    from loupe_bench.data import DATASETS

    for fname, kind_key in (("visual_genome_relation.json", "relation_name"),
                            ("visual_genome_attribution.json", "attributes")):
        raw = json.loads((data_root / "aro" / fname).read_text())
        recs = DATASETS.get("aro")(data_root / "aro" / fname, split="test").load()  # images/ beside: the default
        assert len(recs.groups) == len(raw)
        for i, (g, e) in enumerate(zip(recs.groups, raw)):
            kind = e[kind_key] if kind_key == "relation_name" else f"{e[kind_key][0]}_{e[kind_key][1]}"
            assert g.group_id == str(i) and g.kind == kind and g.split == "test"
            assert g.images == (data_root / "aro" / "images" / e["image_path"],)
            assert g.texts == (e["true_caption"], e["false_caption"])
            assert g.crops == ((e["bbox_x"], e["bbox_y"], e["bbox_w"], e["bbox_h"]),)


# -- parity with CLIP_benchmark -------------------------------------------------------------------------------------
class _CBModel:
    """What CLIP_benchmark calls: ``encode_image(pixels)`` / ``encode_text(tokens)`` giving pooled embeddings."""

    def __init__(self, model):
        self.model = model

    def encode_image(self, pixels):
        return self.model.encode_image(pixels).pooled

    def encode_text(self, tok):
        return self.model.encode_text(tok.input_ids, tok.attention_mask).pooled


class _CBTokens:
    def __init__(self, batch):
        self.input_ids, self.attention_mask = batch.input_ids, batch.attention_mask

    def to(self, device):
        return self


def test_sugarcrepe_accuracy_equals_clip_benchmark(data_root, hf_clip, clip_model):
    """Through the HF folder route, every subset's ``acc`` is exactly CLIP_benchmark's ``acc`` (its SugarCrepe
    dataset class, its collate function, its evaluate), tie item included (the true caption wins it)."""
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.datasets.sugar_crepe import SugarCrepe
    from clip_benchmark.metrics import image_caption_selection

    from loupe_bench.tasks.evaluate import evaluate

    results = evaluate(str(hf_clip), task_dict("sugarcrepe"), data_root=data_root, out_dir=None)
    assert [r["task"]["split"] for r in results] == list(SUBSETS)
    for r in results:
        ds = SugarCrepe(root=str(data_root / "coco" / "val2017"),
                        ann_file=str(data_root / "sugar_crepe" / f"{r['task']['split']}.json"),
                        transform=clip_model.preprocess)
        loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=image_captions_collate_fn)
        theirs = image_caption_selection.evaluate(_CBModel(clip_model), loader,
                                                  lambda t: _CBTokens(clip_model.tokenizer(t)), "cpu", amp=False)
        assert r["metrics"]["acc"]["value"] == theirs["acc"], r["task"]["split"]
        assert r["extra"]["tie_rule"].startswith("positive-wins")
    swap = next(r for r in results if r["task"]["split"] == "swap_att")
    assert swap["per_item"]["acc"][swap["extra"]["item_ids"].index("10")] == 1  # the exact tie: positive wins
    assert len({r["metrics"]["acc"]["value"] for r in results}) > 1  # not a constant


# -- naive reference ------------------------------------------------------------------------------------------------
def _naive_correct(model, image, texts, rule):
    """One item by hand: the model's own preprocess, one image, one text at a time, cosine of pooled embeddings."""
    with torch.no_grad():
        v = F.normalize(model.encode_image(model.preprocess(image).unsqueeze(0)).pooled, dim=-1)[0]
        s = []
        for t in texts:
            tok = model.tokenizer([t])
            s.append(float(F.normalize(model.encode_text(tok.input_ids, tok.attention_mask).pooled, dim=-1)[0] @ v))
    if texts[0] != texts[1]:
        assert abs(s[0] - s[1]) > 1e-5  # a decision float rounding cannot flip
    return int(s[0] >= max(s[1:])) if rule == "positive-wins" else int(s[0] > max(s[1:]))


def _naive_aro(model, root: Path, fname: str, rule: str, min_count: int, exclude):
    from PIL import Image

    per_kind, items = {}, []
    for e in json.loads((root / "aro" / fname).read_text()):
        img = Image.open(root / "aro" / "images" / e["image_path"]).convert("RGB")
        img = img.crop((e["bbox_x"], e["bbox_y"], e["bbox_x"] + e["bbox_w"], e["bbox_y"] + e["bbox_h"]))
        c = _naive_correct(model, img, [e["true_caption"], e["false_caption"]], rule)
        kind = e.get("relation_name") or "_".join(e["attributes"])
        per_kind.setdefault(kind, []).append(c)
        items.append(c)
    kept = [k for k in per_kind if len(per_kind[k]) >= min_count and k not in exclude]
    macro = sum(sum(per_kind[k]) / len(per_kind[k]) for k in kept) / len(kept) if kept else None
    return items, {k: sum(v) / len(v) for k, v in per_kind.items()}, macro


@pytest.mark.parametrize("task,rule,min_count", [("aro-vg-relation", "strict", 0),
                                                 ("aro-vg-relation", "positive-wins", 0),
                                                 ("aro-vg-attribution", "strict", 2)])
def test_aro_matches_a_naive_loop(data_root, clip_model, task, rule, min_count):
    """Accuracy, per-kind accuracy and the macro mean (min-count and exclusion rules) against a per-item loop with
    ARO's own crop; the relation sample's last case is an exact tie: wrong under ``strict``, right otherwise."""
    from loupe_bench.tasks.evaluate import evaluate

    spec = task_dict(task, tie_rule=rule, min_count=min_count)
    res = evaluate(clip_model, spec, data_root=data_root, out_dir=None)[0]
    fname = spec["dataset"]["path"].split("/")[-1]
    items, kinds, macro = _naive_aro(clip_model, data_root, fname, rule, min_count, spec["options"]["macro_exclude"])
    assert res["per_item"]["acc"] == items
    assert res["metrics"]["acc"]["value"] == pytest.approx(np.mean(items), abs=1e-12)
    assert set(res["metrics"]) == {"acc", "macro_acc"}
    assert {k: m["value"] for k, m in res["extra"]["kind_acc"].items()} == pytest.approx(kinds)
    assert {k: m["n"] for k, m in res["extra"]["kind_acc"].items()} == \
        {k: n for k, n in (RELATIONS if task == "aro-vg-relation" else [("_".join(p), n) for p, n in ATTRIBUTES])}
    assert res["metrics"]["macro_acc"]["value"] == pytest.approx(macro, abs=1e-12)
    if task == "aro-vg-relation":
        assert items[-1] == (rule == "positive-wins")  # the tie
        assert "near" in res["extra"]["macro_left_out"] and "near" not in res["extra"]["macro_kinds"]
    else:
        assert res["extra"]["macro_left_out"] == {"small_large": "fewer than 2 items"}
    lo, hi = res["metrics"]["macro_acc"]["ci95"]
    assert lo <= res["metrics"]["macro_acc"]["value"] <= hi


def test_attribution_min_count_25_leaves_no_kind_on_a_small_sample(data_root, clip_model):
    from loupe_bench.tasks.evaluate import evaluate

    res = evaluate(clip_model, task_dict("aro-vg-attribution"), data_root=data_root, out_dir=None)[0]
    assert "macro_acc" not in res["metrics"] and "no kind is left" in res["unavailable"]["macro_acc"]
    assert set(res["extra"]["macro_left_out"]) == {"white_black", "red_blue", "small_large"}


# -- scorers --------------------------------------------------------------------------------------------------------
def _scores(model, data_root, scoring, task="aro-vg-relation"):
    from loupe_bench.tasks import load_task
    from loupe_bench.tasks.caption_selection import CaptionSelectionTask
    from loupe_bench.tasks.common import load_records

    spec = load_task(task_dict(task, scoring=scoring))
    split = spec.splits[0]
    groups = load_records(spec, data_root, split).groups
    return CaptionSelectionTask(spec).item_scores(model, groups, split, "cpu"), groups, spec


def test_native_differs_from_shared_for_filip_but_not_for_clip(data_root, clip_model, monkeypatch):
    """FILIP's native scorer (token-wise late interaction) gives other scores than the pooled cosine; a global CLIP
    gives the same. Scored in chunks of two items, each item's scores are the entries of the one full
    ``fine_grained_scores`` matrix over every unique view and text."""
    from loupe_bench.models import create_model
    from loupe_bench.tasks import caption_selection as cs

    monkeypatch.setattr(cs, "ITEMS_PER_CALL", 2)
    captions = [c for e in json.loads((data_root / "aro" / "visual_genome_relation.json").read_text())
                for c in (e["true_caption"], e["false_caption"])]
    filip = create_model("filip-tiny", tokenizer_corpus=captions, seed=0).eval()
    native, groups, spec = _scores(filip, data_root, "native")
    shared, _, _ = _scores(filip, data_root, "shared")
    assert not torch.allclose(torch.stack(native), torch.stack(shared), atol=1e-4)
    views = sorted({(g.images[0], g.crops[0]) for g in groups})
    texts = sorted({t for g in groups for t in g.texts})
    img = cs.encode_views(filip, views, spec)
    txt = cs.encode_texts(filip, texts, spec)
    with torch.no_grad():
        full = filip.fine_grained_scores(img, txt)
    for g, s in zip(groups, native):
        ref = full[views.index((g.images[0], g.crops[0])), [texts.index(t) for t in g.texts]]
        assert torch.allclose(s, ref, atol=1e-6)
    c_native, _, _ = _scores(clip_model, data_root, "native")
    c_shared, _, _ = _scores(clip_model, data_root, "shared")
    assert torch.allclose(torch.stack(c_native), torch.stack(c_shared), atol=1e-6)


def test_bad_options_are_spec_errors():
    from loupe_bench.errors import SpecError
    from loupe_bench.tasks import load_task

    for opts, needle in [({"scoring": "pooled"}, "scoring must be one of"), ({"tie_rule": "coin"}, "tie_rule"),
                         ({"min_count": -1}, "min_count"), ({"macro_exclude": "on"}, "macro_exclude")]:
        with pytest.raises(SpecError, match=needle):
            load_task(task_dict("sugarcrepe", **opts))
    with pytest.raises(SpecError, match="unknown metric"):
        load_task(dict(task_dict("sugarcrepe"), metrics=["acc", "top1"]))


# -- bad input ------------------------------------------------------------------------------------------------------
def _bad_copy(data_root: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "root"
    shutil.copytree(data_root, dst)
    return dst


SUGAR_BAD = [  # (subset, id, mutation, words of the message)
    ("add_obj", "4", lambda e: e.pop("negative_caption"), "missing field 'negative_caption'"),
    ("add_att", "5", lambda e: e.update(caption=123), "caption 123 is not a non-empty string"),
    ("replace_obj", "2", lambda e: e.update(filename="../../sugar_crepe/add_obj.json"), "leaves the image folder"),
    ("replace_att", "3", lambda e: e.update(filename="/etc/passwd"), "is absolute"),
    ("replace_rel", "8", lambda e: e.update(filename="000000000099.png"), "image file not found"),
]


@pytest.mark.parametrize("subset,key,mutate,words", SUGAR_BAD, ids=[b[0] for b in SUGAR_BAD])
def test_bad_sugarcrepe_record_names_file_and_record(data_root, tmp_path, subset, key, mutate, words):
    from loupe_bench.data import DATASETS

    root = _bad_copy(data_root, tmp_path)
    f = root / "sugar_crepe" / f"{subset}.json"
    data = json.loads(f.read_text())
    mutate(data[key])
    f.write_text(json.dumps(data))
    opts = {"image_root": str(root / "coco" / "val2017")}
    with pytest.raises(DataError) as info:
        DATASETS.get("sugarcrepe")(root / "sugar_crepe", split=subset, **opts).load()
    assert info.value.record == key and words in info.value.message
    assert str(f) in str(info.value)  # the JSON is named (as the file, or as the list the missing image is in)
    # skip: the bad record is counted, the others kept
    recs = DATASETS.get("sugarcrepe")(root / "sugar_crepe", split=subset, on_bad_sample="skip", **opts).load()
    assert len(recs.skipped) == 1 and len(recs.groups) == 3 and key not in {g.group_id for g in recs.groups}


def test_malformed_json_and_bad_aro_records(data_root, tmp_path):
    from loupe_bench.data import DATASETS

    root = _bad_copy(data_root, tmp_path)
    f = root / "sugar_crepe" / "swap_obj.json"
    f.write_text(f.read_text()[:-5])
    with pytest.raises(DataError) as info:
        DATASETS.get("sugarcrepe")(root / "sugar_crepe", split="swap_obj").load()
    assert info.value.file == str(f)
    rel = root / "aro" / "visual_genome_relation.json"
    cases = json.loads(rel.read_text())
    del cases[1]["bbox_h"]
    cases[2]["image_path"] = "../visual_genome_relation.json"
    cases[3].pop("relation_name")
    cases[4]["bbox_w"] = 0
    rel.write_text(json.dumps(cases))
    with pytest.raises(DataError, match="missing field 'bbox_h'") as info:
        DATASETS.get("aro")(rel).load()
    assert info.value.file == str(rel) and info.value.record == "#1"
    recs = DATASETS.get("aro")(rel, on_bad_sample="skip").load()
    assert [e.record for e in recs.skipped] == ["#1", "#2", "#3", "#4"] and len(recs.groups) == len(cases) - 4
    msgs = [e.message for e in recs.skipped]
    assert "leaves the image folder" in msgs[1] and "'relation_name'" in msgs[2] and "non-positive size" in msgs[3]
    att = root / "aro" / "visual_genome_attribution.json"
    cases = json.loads(att.read_text())
    cases[0]["attributes"] = ["white"]
    att.write_text(json.dumps(cases))
    with pytest.raises(DataError, match="not a list of two strings"):
        DATASETS.get("aro")(att).load()


# -- command line ---------------------------------------------------------------------------------------------------
def _spec_file(tmp_path: Path, name: str, **options) -> Path:
    import yaml

    d = task_dict(name, **options)
    if name.startswith("sugarcrepe"):
        d["splits"] = ["add_obj", "swap_att"]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_cli_eval_export_and_data_check(data_root, tmp_path, capsys):
    """``eval`` exits 0 and writes one result per subset; ``export --format clip_benchmark`` names SugarCrepe the
    way CLIP_benchmark does (ARO and the native scorer have no counterpart); ``data check --task`` passes the
    sample and finds a broken image."""
    specs = [_spec_file(tmp_path, "sugarcrepe"), _spec_file(tmp_path, "sugarcrepe-native"),
             _spec_file(tmp_path, "aro-vg-relation")]
    out = tmp_path / "res"
    argv = ["eval", "--model", "clip-tiny", "--data-root", data_root, "--out", out]
    for s in specs:
        argv += ["--task", s]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    from loupe_bench.tasks.results import load_results

    results = load_results(out)
    assert len(results) == 5
    code, _, err = run_cli(["export", "--format", "clip_benchmark", out, "--out", tmp_path / "cb"], capsys)
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "cb").glob("*.json"))
    assert len(files) == 2 and all(f.endswith("_en_image_caption_selection.json") for f in files)
    for subset in ("add_obj", "swap_att"):
        f = next(tmp_path.joinpath("cb").glob(f"sugar_crepe_{subset}_*.json"))
        obj = json.loads(f.read_text())
        ours = next(r for r in results if r["task"]["split"] == subset and r["task"]["spec"]["options"]["scoring"]
                    == "shared")
        assert obj["dataset"] == f"sugar_crepe/{subset}" and obj["task"] == "image_caption_selection"
        assert obj["metrics"] == {"acc": ours["metrics"]["acc"]["value"]}
    readme = (tmp_path / "cb" / "README.md").read_text()
    for ds, n in (("aro-vg-relation", 1), ("sugarcrepe", 2)):  # ARO; SugarCrepe under the native scorer
        assert f"on data set '{ds}' with these options has no CLIP_benchmark counterpart: {n} file(s)" in readme
    for task in ("sugarcrepe", "aro-vg-relation", "aro-vg-attribution"):  # the shipped specs, every split
        code, out_text, err = run_cli(["data", "check", "--task", task, "--data-root", data_root], capsys)
        assert code == 0 and "no problems found" in out_text, out_text + err


def test_cli_bad_sample_and_missing_data_are_one_line(data_root, tmp_path, capsys):
    root = _bad_copy(data_root, tmp_path)
    f = root / "sugar_crepe" / "swap_att.json"
    data = json.loads(f.read_text())
    data["14"]["filename"] = "../x.png"
    f.write_text(json.dumps(data))
    spec = _spec_file(tmp_path, "sugarcrepe")
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", spec, "--data-root", root, "--out",
                            tmp_path / "r"], capsys)
    one_line_error(code, err, str(f), "record 14", "leaves the image folder")
    code, out_text, _ = run_cli(["data", "check", "--task", spec, "--data-root", root], capsys)
    assert code == 1 and "record 14" in out_text and "1 problem" in out_text
    (tmp_path / "empty").mkdir()
    for task in ("sugarcrepe", "aro-vg-attribution"):
        code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", task, "--data-root", tmp_path / "empty",
                                "--out", tmp_path / "r"], capsys)
        words = ["sugar_crepe/", "coco/val2017/", "RAIVNLab/sugar-crepe"] if task == "sugarcrepe" else \
            ["aro/visual_genome_attribution.json", "aro/images/", "vision-language-models-are-bows"]
        one_line_error(code, err, *words)
