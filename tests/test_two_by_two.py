"""Two-by-two matching (Winoground, MMVP-VLM): the two loaders on hand-written files in the benchmarks' real layouts,
the text / image / group scores and MMVP's pair accuracy against a naive loop and closed-form cases (ties under each
rule), the ``first-wins`` rule against CLIP_benchmark 1.6.2's own ``image_caption_selection`` code, end-to-end
parity with CLIP_benchmark on a tiny random ``transformers.CLIPModel`` loaded from its folder, shared vs native
scoring, bad inputs and the CLI."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli_run import one_line_error, run_cli
from loupe_bench.data import DATASETS
from loupe_bench.errors import DataError, SpecError
from loupe_bench.specs import load_yaml, spec_files
from loupe_bench.tasks import load_task
from loupe_bench.tasks.two_by_two import TIE_RULES, TwoByTwoTask, two_by_two_hits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Winoground-style captions: the same words in a different order (letters only: the tiny HF tokenizer knows a-z)
CAPTIONS = [
    ("an old person kisses a young person", "a young person kisses an old person"),
    ("the dog chases the cat", "the cat chases the dog"),
    ("a red cup on a blue plate", "a blue cup on a red plate"),
    ("there is more milk than coffee", "there is more coffee than milk"),
    ("the person on the left is taller", "the person on the right is taller"),
    ("a plant in a mug", "a mug in a plant"),
]


def spec_of(name: str, **options) -> dict:
    """A shipped spec as a mapping, cheap for tests (few bootstrap replicates), with option overrides."""
    d = load_yaml(next(p for p in spec_files("tasks") if p.stem == name))
    d["bootstrap"] = {"n_resamples": 50, "seed": 0}
    d["options"].update(options)
    return d


def image(path: Path, seed: int, size=(40, 32)) -> None:
    """A random solid colour with a darker square (PNG or JPEG by the suffix): a random tiny model gives such images
    far more varied embeddings than noise."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size[1], size[0], 3)).copy()
    pixels[4:12, 4:12] //= 2
    Image.fromarray(pixels).save(path)


def winoground_folder(root: Path, n: int = len(CAPTIONS), captions=CAPTIONS) -> Path:
    """``root/examples.jsonl`` (real field names, names without extension) and ``root/images/*.png``."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        a, b = captions[i % len(captions)]
        rows.append({"id": i, "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1", "caption_0": a, "caption_1": b,
                     "tag": ["Object", "Relation", "Both"][i % 3], "secondary_tag": "Symbolic" if i % 4 == 0 else "",
                     "num_main_preds": 1 + i % 2, "collapsed_tag": ["Object", "Relation", "Both"][i % 3]})
        for k in (0, 1):
            image(root / "images" / f"ex_{i}_img_{k}.png", seed=10 * i + k)
    (root / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def mmvp_folder(root: Path, pairs=(("Orientation", 2), ("Color", 3)), header="Question ID,Type,Statement") -> Path:
    """``root/Questions.csv`` (consecutive ids 2k-1, 2k per pair) and ``root/MLLM_VLM Images/<Type>/<id>.jpg``."""
    root.mkdir(parents=True, exist_ok=True)
    lines, qid = [header], 1
    for pattern, count in pairs:
        for _ in range(count):
            a, b = CAPTIONS[(qid // 2) % len(CAPTIONS)]
            for q, statement in ((qid, a), (qid + 1, b)):
                lines.append(f'{q},{pattern},"{statement}"')
                image(root / "MLLM_VLM Images" / pattern / f"{q}.jpg", seed=1000 + q)
            qid += 2
    (root / "Questions.csv").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------------------------------------- loaders
def test_winoground_loader_reads_the_real_layout_and_the_hub_snapshot(tmp_path):
    root = winoground_folder(tmp_path / "wino", n=3)
    recs = DATASETS.get("winoground")(root / "examples.jsonl", split="test").load()
    g = recs.groups[1]
    assert [x.group_id for x in recs.groups] == ["0", "1", "2"]
    assert g.images == (root / "images" / "ex_1_img_0.png", root / "images" / "ex_1_img_1.png")
    assert g.texts == CAPTIONS[1] and g.kind == "Relation" and g.split == "test"
    assert g.tags == (("secondary_tag", ""), ("collapsed_tag", "Relation"), ("num_main_preds", "2"))
    assert recs.groups[0].tags[0] == ("secondary_tag", "Symbolic")
    # snapshot_download layout: data/examples.jsonl + data/images/ (unzipped); the loader finds it from the root
    snap = tmp_path / "snapshot"
    winoground_folder(snap / "data", n=2)
    got = DATASETS.get("winoground")(snap).load()
    assert len(got.groups) == 2 and got.source == str(snap / "data" / "examples.jsonl")
    # images.zip not unzipped: the error says so
    bare = tmp_path / "zipped" / "data"
    bare.mkdir(parents=True)
    (bare / "examples.jsonl").write_text((snap / "data" / "examples.jsonl").read_text())
    (bare / "images.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="unzip images.zip"):
        DATASETS.get("winoground")(bare.parent).load()


def test_mmvp_loader_reads_the_real_layout_and_column_options(tmp_path):
    root = mmvp_folder(tmp_path / "mmvp")
    recs = DATASETS.get("mmvp-vlm")(root / "Questions.csv", split="test").load()
    assert [g.group_id for g in recs.groups] == ["1-2", "3-4", "5-6", "7-8", "9-10"]
    g = recs.groups[2]
    assert g.kind == "Color" and g.images == (root / "MLLM_VLM Images" / "Color" / "5.jpg",
                                              root / "MLLM_VLM Images" / "Color" / "6.jpg")
    assert g.texts == CAPTIONS[2]  # statement i describes image i, raw (the task adds "a photo of ")
    # another header spelled through the column options, and a byte-order mark before it
    other = mmvp_folder(tmp_path / "cols", pairs=(("Texts", 1),), header="qid,pattern,text")
    (other / "Questions.csv").write_text("\ufeff" + (other / "Questions.csv").read_text())
    got = DATASETS.get("mmvp-vlm")(other, id_column="qid", type_column="pattern", statement_column="text").load()
    assert len(got.groups) == 1 and got.groups[0].kind == "Texts"
    with pytest.raises(DataError, match="lacks column.*'Question ID'"):
        DATASETS.get("mmvp-vlm")(other).load()


# ---------------------------------------------------------------------------------------------------- metrics
def naive_hits(s: np.ndarray, rule: str):
    """Winoground's definitions written as loops over the four choices of an item (a choice picks the candidate
    with the highest score; an exact tie goes to candidate 0, to candidate 1, or is lost)."""
    def picks(values, right):  # values: the two candidates' scores, right: the right candidate's index
        if values[0] != values[1]:
            return int(values[1] > values[0]) == right
        return {"first-wins": right == 0, "last-wins": right == 1, "strict": False}[rule]

    text = picks([s[0, 0], s[0, 1]], 0) and picks([s[1, 0], s[1, 1]], 1)
    image = picks([s[0, 0], s[1, 0]], 0) and picks([s[0, 1], s[1, 1]], 1)
    return float(text), float(image), float(text and image)


@pytest.mark.parametrize("rule", ["first-wins", "last-wins", "strict"])
def test_hits_equal_a_naive_loop_with_many_ties(rule):
    rng = np.random.default_rng(0)
    s = np.round(rng.uniform(size=(400, 2, 2)), 1).astype(np.float32)  # one decimal: many exact ties
    hits = two_by_two_hits(torch.from_numpy(s), rule)
    ref = np.array([naive_hits(x, rule) for x in s])
    for col, name in enumerate(("text_score", "image_score", "group_score")):
        assert hits[name].tolist() == ref[:, col].tolist(), name
    assert 0 < hits["group_score"].sum() < len(s)


@pytest.mark.parametrize("matrix,expected", [
    ([[0.9, 0.1], [0.3, 0.5]], {"first-wins": (1, 1, 1), "last-wins": (1, 1, 1), "strict": (1, 1, 1)}),
    # each image picks its caption, but image 1 beats image 0 for caption 0: text right, image wrong
    ([[0.5, 0.4], [0.6, 0.7]], {"first-wins": (1, 0, 0), "last-wins": (1, 0, 0), "strict": (1, 0, 0)}),
    ([[0.5, 0.6], [0.4, 0.7]], {"first-wins": (0, 1, 0), "last-wins": (0, 1, 0), "strict": (0, 1, 0)}),
    # image 0 ties between its captions (right one: candidate 0)
    ([[0.5, 0.5], [0.1, 0.9]], {"first-wins": (1, 1, 1), "last-wins": (0, 1, 0), "strict": (0, 1, 0)}),
    # image 1 ties between its captions (right one: candidate 1)
    ([[0.9, 0.1], [0.5, 0.5]], {"first-wins": (0, 1, 0), "last-wins": (1, 1, 1), "strict": (0, 1, 0)}),
    # caption 1 ties between the images (right one: candidate 1)
    ([[0.9, 0.6], [0.1, 0.6]], {"first-wins": (1, 0, 0), "last-wins": (1, 1, 1), "strict": (1, 0, 0)}),
    ([[0.3, 0.3], [0.3, 0.3]], {"first-wins": (0, 0, 0), "last-wins": (0, 0, 0), "strict": (0, 0, 0)}),
])
def test_closed_form_cases(matrix, expected):
    for rule, want in expected.items():
        hits = two_by_two_hits(torch.tensor([matrix]), rule)
        assert tuple(int(hits[k][0]) for k in ("text_score", "image_score", "group_score")) == want, rule


class PlantedModel(torch.nn.Module):
    """A CLIP_benchmark model whose 'images' are their own embeddings (``[2, 1, 1]`` pixels) and whose texts are
    ``t0`` / ``t1``: the basis vectors. CLIP_benchmark normalises both, so ``s(i, j) = e_i[j] / |e_i|``."""

    def encode_image(self, x):
        return x.flatten(1)

    def encode_text(self, tokens):
        return F.one_hot(tokens, 2).float()


def test_first_wins_is_clip_benchmarks_own_winoground_metric():
    """CLIP_benchmark 1.6.2's ``image_caption_selection.evaluate`` (the code its ``winoground`` dataset is scored
    with) on planted embeddings with exact ties, item by item, equals ``first-wins`` on the same scores."""
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics import image_caption_selection

    rows = [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (1.0, 2.0)]
    for e0 in rows:
        for e1 in rows:
            imgs = torch.tensor([e0, e1]).reshape(2, 2, 1, 1)
            loader = torch.utils.data.DataLoader([(imgs, ["t0", "t1"])], batch_size=1,
                                                 collate_fn=image_captions_collate_fn)
            cb = image_caption_selection.evaluate(PlantedModel(), loader, lambda ts: torch.tensor(
                [int(t[1]) for t in ts]), "cpu", amp=False)
            s = F.normalize(imgs.flatten(1), dim=-1) @ torch.eye(2)
            ours = two_by_two_hits(s[None], "first-wins")
            assert (ours["text_score"][0], ours["image_score"][0], ours["group_score"][0]) == (
                cb["text_acc"], cb["image_acc"], cb["acc"]), (e0, e1)


def test_last_wins_is_mmvps_decision_rule():
    """MMVP's ``evaluate_vlm.py`` rule written out: per statement, image 1 when ``softmax(100 s)[image 1] > 0.5``
    else image 2; ground truth image 1 for the odd question id; a pair counts when both statements are right."""
    rng = np.random.default_rng(1)
    s = torch.from_numpy(np.round(rng.uniform(size=(300, 2, 2)), 1).astype(np.float32))
    p1 = torch.softmax(100 * s.transpose(1, 2), dim=-1)[..., 0]  # [N, statement]: probability of image 1
    pred_is_1 = p1 > 0.5
    mmvp = (pred_is_1[:, 0] & ~pred_is_1[:, 1]).numpy().astype(float)
    assert two_by_two_hits(s, "last-wins")["image_score"].tolist() == mmvp.tolist()
    assert two_by_two_hits(s, "first-wins")["image_score"].tolist() != mmvp.tolist()  # ties matter here


def test_pair_accuracy_is_the_mean_over_kinds(tmp_path):
    from loupe_bench.data.records import MatchGroup

    spec = load_task(spec_of("mmvp-vlm"))
    task = TwoByTwoTask(spec)
    kinds = ["A"] * 4 + ["B"] * 2
    groups = [MatchGroup(str(i), (Path(f"{i}a"), Path(f"{i}b")), ("x", "y"), kind=k) for i, k in enumerate(kinds)]
    right, wrong_image = [[0.9, 0.1], [0.1, 0.9]], [[0.5, 0.4], [0.6, 0.7]]  # the second: text right, image wrong
    scores = torch.tensor([right, right, right, wrong_image, right, wrong_image])
    res = task.output("test", groups, scores, two_by_two_hits(scores, spec.options["tie_rule"]))
    assert res.metrics["pair_acc:A"].value == 0.75 and res.metrics["pair_acc:B"].value == 0.5
    assert res.metrics["pair_acc"].value == pytest.approx((0.75 + 0.5) / 2)  # not the pooled 4/6
    lo, hi = res.metrics["pair_acc"].ci95
    assert lo <= res.metrics["pair_acc"].value <= hi
    assert res.per_item["pair_acc"] == [1, 1, 1, 0, 1, 0] and "text_score" not in res.metrics
    assert res.extra["kind_counts"] == {"A": 4, "B": 2} and res.extra["tie_rule"].startswith("last-wins")


# ---------------------------------------------------------------------------------------------------- models
def tiny_hf_clip(root: Path) -> Path:
    """A tiny random ``transformers.CLIPModel`` saved with a letter-level tokenizer and its image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": 26 + i for i, c in enumerate(letters)})
    vocab.update({"<|startoftext|>": 52, "<|endoftext|>": 53})
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    cfg = CLIPConfig(
        text_config=dict(vocab_size=54, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=48, bos_token_id=52, eos_token_id=53,
                         pad_token_id=53),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    d = root / "tiny-hf-clip"
    CLIPModel(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32}).save_pretrained(str(d))
    return d


def clip_benchmark_winoground(folder: Path, model_dir: Path):
    """CLIP_benchmark 1.6.2's own code on the same files: its ``WinoGround`` dataset class (items built from the
    rows it would get from ``datasets``: PIL images and captions), its collate function and its
    ``image_caption_selection.evaluate``, with OpenAI CLIP's preprocessing and the transformers model. One call per
    item, so the hits are compared item by item."""
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.datasets.winoground import WinoGround
    from clip_benchmark.metrics import image_caption_selection
    from PIL import Image
    from torchvision import transforms as T
    from transformers import CLIPModel, CLIPTokenizer

    hf = CLIPModel.from_pretrained(str(model_dir)).eval()
    tok = CLIPTokenizer.from_pretrained(str(model_dir))

    class Wrapped(torch.nn.Module):
        def encode_image(self, x):
            out = hf.get_image_features(pixel_values=x)
            return getattr(out, "pooler_output", out)

        def encode_text(self, ids):
            out = hf.get_text_features(input_ids=ids)
            return getattr(out, "pooler_output", out)

    transform = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32),
                           T.Lambda(lambda im: im.convert("RGB")), T.ToTensor(),
                           T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    out = []
    for line in (folder / "examples.jsonl").read_text().splitlines():
        ex = json.loads(line)
        row = {k: ex[k] for k in ("caption_0", "caption_1")}
        row.update({k: Image.open(folder / "images" / f"{ex[k]}.png") for k in ("image_0", "image_1")})
        ds = WinoGround.__new__(WinoGround)  # its __init__ would fetch the gated repository
        ds.ds, ds.transform = [row], transform
        loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=image_captions_collate_fn)
        m = image_caption_selection.evaluate(Wrapped(), loader, lambda ts: tok(
            list(ts), padding="max_length", max_length=48, truncation=True, return_tensors="pt").input_ids, "cpu",
            amp=False)
        out.append((m["text_acc"], m["image_acc"], m["acc"]))
    return np.array(out)


def test_parity_with_clip_benchmark_on_a_tiny_hf_clip_folder(tmp_path, monkeypatch):
    """The model loaded from a saved ``CLIPModel`` folder (``--model DIR``) scores every item as CLIP_benchmark's
    own winoground code does with the transformers model itself."""
    from loupe_bench.models import load_model
    from loupe_bench.tasks.evaluate import evaluate
    from loupe_bench.tasks.results import validate_result

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(0)  # captions of unrelated letters: a random model tells them apart
    words = [["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(1, 8)))
              for _ in range(rng.integers(1, 6))] for _ in range(48)]
    captions = [(" ".join(words[2 * i]), " ".join(words[2 * i + 1])) for i in range(24)]
    folder = winoground_folder(tmp_path / "wino", n=24, captions=captions)
    model_dir = tiny_hf_clip(tmp_path)
    [res] = evaluate([load_model(model_dir)], [spec_of("winoground")], data_root=folder, out_dir=tmp_path / "out")
    cb = clip_benchmark_winoground(folder, model_dir)
    for col, name in enumerate(("text_score", "image_score", "group_score")):
        assert res["per_item"][name] == cb[:, col].astype(int).tolist(), name
        assert res["metrics"][name]["value"] == pytest.approx(cb[:, col].mean())
    # the hits are not all alike, and no comparison is within float noise of a tie (the parity is not luck)
    assert 0 < sum(res["per_item"]["text_score"]) < 24 and 0 < sum(res["per_item"]["image_score"]) < 24
    s = np.array(res["extra"]["scores"])
    margins = np.abs(np.stack([s[:, 0, 0] - s[:, 0, 1], s[:, 1, 1] - s[:, 1, 0], s[:, 0, 0] - s[:, 1, 0],
                               s[:, 1, 1] - s[:, 0, 1]]))
    assert margins.min() > 1e-5
    assert res["extra"]["tie_rule"].startswith("first-wins")
    both = res["extra"]["breakdown"]["kind"]["Both"]  # items 2, 5, 8, ... carry the tag "Both"
    assert both["n"] == 8 and both["image_score"] == pytest.approx(np.mean(cb[2::3, 1]))
    symbolic = res["extra"]["breakdown"]["secondary_tag"]["Symbolic"]  # items 0, 4, 8, ...; "" is not a value
    assert symbolic["n"] == 6 and symbolic["text_score"] == pytest.approx(np.mean(cb[0::4, 0]))
    assert set(res["extra"]["breakdown"]) == {"kind", "secondary_tag", "collapsed_tag", "num_main_preds"}
    validate_result(res)


def test_native_scoring_differs_from_shared_for_filip_not_for_clip(tmp_path):
    from loupe_bench.models import create_model
    from loupe_bench.tasks.evaluate import evaluate

    folder = winoground_folder(tmp_path / "wino", n=6)
    specs = [spec_of("winoground"), spec_of("winoground-native")]
    for name, same in (("filip-tiny", False), ("clip-tiny", True)):
        shared, native = evaluate([create_model(name, seed=0)], specs, data_root=folder, out_dir=tmp_path / name)
        a, b = np.array(shared["extra"]["scores"]), np.array(native["extra"]["scores"])
        assert np.allclose(a, b, atol=1e-6) == same, name
        assert shared["task"]["fingerprint"] != native["task"]["fingerprint"]
        assert (shared["extra"]["scoring"], native["extra"]["scoring"]) == ("shared", "native")


def test_each_unique_image_and_text_is_encoded_once(tmp_path):
    from loupe_bench.models import create_model
    from loupe_bench.tasks.evaluate import evaluate

    folder = winoground_folder(tmp_path / "wino", n=4)
    lines = (folder / "examples.jsonl").read_text().splitlines()
    reuse = dict(json.loads(lines[0]), id=9, image_1="ex_2_img_1", caption_1=CAPTIONS[3][0])  # all seen before
    (folder / "examples.jsonl").write_text("\n".join(lines + [json.dumps(reuse)]) + "\n")
    model = create_model("clip-tiny", seed=0)
    seen = {"images": 0, "texts": 0}
    encode_image, encode_text = model.encode_image, model.encode_text

    def count_images(x):
        seen["images"] += len(x)
        return encode_image(x)

    def count_texts(ids, mask):
        seen["texts"] += len(ids)
        return encode_text(ids, mask)

    model.encode_image, model.encode_text = count_images, count_texts
    [res] = evaluate([model], [spec_of("winoground")], data_root=folder, out_dir=tmp_path / "out")
    assert seen == {"images": 8, "texts": 8} and res["extra"]["n_items"] == 5
    assert (res["extra"]["n_images"], res["extra"]["n_texts"]) == (8, 8)


def test_mmvp_spec_runs_with_its_prompt_and_per_pattern_accuracy(tmp_path):
    from loupe_bench.models import create_model
    from loupe_bench.tasks.evaluate import evaluate

    folder = mmvp_folder(tmp_path / "mmvp")
    [res] = evaluate([create_model("clip-tiny", seed=0)], [spec_of("mmvp-vlm")], data_root=folder,
                     out_dir=tmp_path / "out")
    assert set(res["metrics"]) == {"pair_acc", "pair_acc:Color", "pair_acc:Orientation"}
    per = {k: res["metrics"][f"pair_acc:{k}"]["value"] for k in ("Color", "Orientation")}
    assert res["metrics"]["pair_acc"]["value"] == pytest.approx(np.mean(list(per.values())))
    hits = res["per_item"]["pair_acc"]
    assert per["Orientation"] == pytest.approx(np.mean(hits[:2])) and per["Color"] == pytest.approx(np.mean(hits[2:]))
    assert res["extra"]["template"] == "a photo of {}" and res["extra"]["n_texts"] == 10


# ---------------------------------------------------------------------------------------------------- bad input
WINO_BAD = [
    (lambda r: "{not json", "line 2", "malformed JSON"),
    (lambda r: json.dumps({k: v for k, v in r.items() if k != "caption_1"}), "line 2", "missing field 'caption_1'"),
    (lambda r: json.dumps(dict(r, image_0="../secret")), "line 2", "not a plain file name"),
    (lambda r: json.dumps(dict(r, image_1="sub/ex_1_img_1")), "line 2", "not a plain file name"),
    (lambda r: json.dumps(dict(r, image_0="ex_9_img_0")), "line 2", "image file not found"),
    (lambda r: json.dumps(dict(r, id=0)), "line 2", "duplicate id 0"),
    (lambda r: json.dumps([r]), "line 2", "not a JSON object"),
    (lambda r: json.dumps(dict(r, caption_0="  ")), "line 2", "empty caption"),
    (lambda r: json.dumps(dict(r, secondary_tag=3)), "line 2", "secondary_tag 3 is not a string"),
]


@pytest.mark.parametrize("mutate,record,message", WINO_BAD, ids=[m for _, _, m in WINO_BAD])
def test_winoground_bad_lines_name_file_and_line_and_can_be_skipped(tmp_path, mutate, record, message):
    root = winoground_folder(tmp_path / "wino", n=3)
    lines = (root / "examples.jsonl").read_text().splitlines()
    lines[1] = mutate(json.loads(lines[1]))
    (root / "examples.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as err:
        DATASETS.get("winoground")(root).load()
    assert err.value.record.startswith(record)
    assert "examples.jsonl" in err.value.file or "examples.jsonl" in err.value.message
    recs = DATASETS.get("winoground")(root, on_bad_sample="skip").load()
    assert [g.group_id for g in recs.groups] == ["0", "2"] and len(recs.skipped) == 1


def test_jsonl_reading_is_bounded(tmp_path, monkeypatch):
    from loupe_bench.data.formats import winoground

    root = winoground_folder(tmp_path / "wino", n=3)
    monkeypatch.setattr(winoground, "MAX_LINE_BYTES", 100)
    recs = winoground.WinogroundLoader(root, on_bad_sample="skip").load()
    assert not recs.groups and all("longer than 100 bytes" in e.message for e in recs.skipped)
    monkeypatch.setattr(winoground, "MAX_LINES", 2)
    with pytest.raises(DataError, match="3 lines, above the limit of 2"):
        winoground.WinogroundLoader(root).load()


MMVP_BAD = [
    (lambda rows: rows[:3] + [rows[3].replace("3,", "x,", 1)] + rows[4:], "lines 4-5", "not an integer"),
    (lambda rows: rows[:3] + [rows[3].replace("3,", "5,", 1)] + rows[4:], "lines 4-5", "not a pair 2k-1, 2k"),
    (lambda rows: rows[:4] + [rows[4].replace("Orientation", "Color")] + rows[5:], "lines 4-5", "different types"),
    (lambda rows: rows[:3] + [r.replace("Orientation", "..") for r in rows[3:5]] + rows[5:], "lines 4-5",
     "not a plain file name"),
    (lambda rows: rows[:3] + [rows[3].replace('"', "").rsplit(",", 1)[0] + ","] + rows[4:], "lines 4-5",
     "empty caption"),
    (lambda rows: rows[:-1], "line 10", "unpaired last row"),
]


@pytest.mark.parametrize("mutate,record,message", MMVP_BAD, ids=[m for _, _, m in MMVP_BAD])
def test_mmvp_bad_pairs_name_file_and_lines_and_can_be_skipped(tmp_path, mutate, record, message):
    root = mmvp_folder(tmp_path / "mmvp")
    rows = (root / "Questions.csv").read_text().splitlines()
    (root / "Questions.csv").write_text("\n".join(mutate(rows)) + "\n")
    with pytest.raises(DataError, match=message) as err:
        DATASETS.get("mmvp-vlm")(root).load()
    assert err.value.file.endswith("Questions.csv") and err.value.record.startswith(record)
    recs = DATASETS.get("mmvp-vlm")(root, on_bad_sample="skip").load()
    assert len(recs.groups) == 4 and len(recs.skipped) == 1


def test_mmvp_missing_image_names_the_image_and_the_pair(tmp_path):
    root = mmvp_folder(tmp_path / "mmvp")
    (root / "MLLM_VLM Images" / "Color" / "8.jpg").unlink()
    with pytest.raises(DataError, match="image file not found.*Questions.csv") as err:
        DATASETS.get("mmvp-vlm")(root).load()
    assert err.value.file.endswith("8.jpg") and err.value.record == "lines 8-9 (questions 7, 8)"


def test_spec_options_are_checked():
    base = spec_of("winoground")
    for key, value, what in [("tie_rule", "random", "tie_rule must be one of first-wins, last-wins, strict"),
                             ("scoring", "mine", "scoring must be one of"),
                             ("template", "a photo of", "one '{}'"), ("template", "{} {x}", "braces")]:
        d = copy.deepcopy(base)
        d["options"][key] = value
        with pytest.raises(SpecError, match=what):
            load_task(d)
    d = copy.deepcopy(base)
    d["metrics"] = ["text_acc"]
    with pytest.raises(SpecError, match="unknown metric.*'text_acc'"):
        load_task(d)
    assert TIE_RULES.names() == ["first-wins", "last-wins", "strict"]


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_eval_sample_and_broken_sample(tmp_path, capsys):
    import yaml

    folder = winoground_folder(tmp_path / "wino", n=4)
    spec_path = tmp_path / "wino.yaml"
    spec_path.write_text(yaml.safe_dump(spec_of("winoground")))
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", spec_path, "--data-root", folder, "--out",
                            tmp_path / "out"], capsys)
    assert code == 0, err
    record = json.loads(next((tmp_path / "out").glob("*winoground__test.json")).read_text())
    assert set(record["metrics"]) == {"text_score", "image_score", "group_score"}
    # export under CLIP_benchmark's names: dataset winoground, text_acc / image_acc / acc = text / image / group
    code, _, err = run_cli(["export", "--format", "clip_benchmark", tmp_path / "out", "--out", tmp_path / "cb"], capsys)
    assert code == 0, err
    (cb_file,) = list((tmp_path / "cb").glob("winoground_*_image_caption_selection.json"))
    cb = json.loads(cb_file.read_text())
    assert cb["dataset"] == "winoground" and cb["task"] == "image_caption_selection"
    assert cb["metrics"] == {"text_acc": record["metrics"]["text_score"]["value"],
                             "image_acc": record["metrics"]["image_score"]["value"],
                             "acc": record["metrics"]["group_score"]["value"]}
    lines = (folder / "examples.jsonl").read_text().splitlines()
    (folder / "examples.jsonl").write_text("\n".join(lines[:2] + ['{"id": 7, "image_0": "ex_0_img_0"'] + lines[3:]))
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", spec_path, "--data-root", folder, "--out",
                            tmp_path / "out2"], capsys)
    one_line_error(code, err, "examples.jsonl", "line 3", "malformed JSON")
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", "winoground", "--data-root", tmp_path / "empty",
                            "--out", tmp_path / "out3"], capsys)
    one_line_error(code, err, "examples.jsonl", "images/", "facebook/winoground")
    import shutil

    shutil.rmtree(folder / "images")
    code, _, err = run_cli(["eval", "--model", "clip-tiny", "--task", "winoground", "--data-root", folder, "--out",
                            tmp_path / "out4"], capsys)
    one_line_error(code, err, str(folder / "images"), "not found under --data-root", "unzip data/images.zip")
