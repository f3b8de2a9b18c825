"""`reproduce paper`: the real-benchmark task specs the paper tables use, run on the synthetic world written in the
real layouts (Flickr30K Karpathy JSON + image folder; refer-style RefCOCO+ pickle + instances), rendered beside
the published numbers."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

from click.testing import CliRunner

from loupe_bench.pipeline import paper_task_specs


def _real_layout_root(world: Path, root: Path) -> Path:
    # Flickr30K: dataset_flickr30k.json + flickr30k-images/ (Karpathy layout, the same file format as the world's)
    data = json.loads((world / "dataset_synthetic.json").read_text())
    data["dataset"] = "flickr30k"
    for im in data["images"]:          # the real Flickr30K JSON names only the file (no filepath)
        im.pop("filepath", None)
    root.mkdir(parents=True)
    (root / "dataset_flickr30k.json").write_text(json.dumps(data))
    shutil.copytree(world / "images", root / "flickr30k-images")
    # RefCOCO+ (unc): refer's data/ folder; the world's test / comptest refs play testA / testB
    ref_dir = root / "refcoco+"
    ref_dir.mkdir()
    with open(world / "refsynth" / "refs(unc).p", "rb") as fh:
        refs = pickle.load(fh)
    rename = {"test": "testA", "comptest": "testB"}
    for r in refs:
        r["split"] = rename.get(r["split"], r["split"])
    with open(ref_dir / "refs(unc).p", "wb") as fh:
        pickle.dump(refs, fh, protocol=2)
    shutil.copy(world / "refsynth" / "instances.json", ref_dir / "instances.json")
    shutil.copytree(world / "images", root / "images" / "mscoco" / "images" / "train2014")
    return root


def test_paper_task_specs_follow_the_tables(tiny_world, tmp_path):
    all_specs = paper_task_specs()
    # the paper tables hold Flickr30K / COCO retrieval, ImageNet zero-shot and RefCOCO+ grounding numbers
    assert {"flickr30k-retrieval-1k", "coco-retrieval-5k", "imagenet-zeroshot", "refcoco+-unc"} <= set(all_specs)
    # VOC detection has no published number in the tables
    assert "voc-detection" not in all_specs
    root = _real_layout_root(tiny_world, tmp_path / "data")
    assert paper_task_specs(root) == ["flickr30k-retrieval-1k", "refcoco+-unc"]


def test_reproduce_paper_cli(tiny_world, tmp_path):
    from loupe_bench.cli.main import cli

    root = _real_layout_root(tiny_world, tmp_path / "data")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["reproduce", "paper", "--data-root", str(root), "--model", "clip-tiny",
                                   "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    md = (out / "paper_comparison.md").read_text()
    # reproduced Flickr30K t2i R@1 beside LOUPE's published 76.3 (secondary) and RefCOCO+ testB beside 23.6
    assert "76.3 (LOUPE)" in md and "23.6 (LOUPE)" in md
    # the tiny world is not the paper's split: every row is labelled, no delta is given
    rows = [line for line in md.splitlines() if "(LOUPE)" in line]
    assert rows and all("not the paper's split" in line for line in rows)
    assert not any("chance" in line or "attribute-oracle" in line for line in rows)   # reference rows: not models
    assert (out / "report" / "report.html").is_file()
    results = sorted(p.name for p in (out / "results").glob("*.json"))
    assert any("flickr30k-retrieval-1k" in n for n in results) and any("refcoco+-unc" in n for n in results)
