"""Caption metrics against pycocoevalcap's scorers called directly; SPICE unavailable (never zero); the caption
head's decoding."""
from __future__ import annotations

import pytest
import torch

from loupe_bench.tasks.metrics import captioning as cm

REFS = {
    1: ["a small red circle left of a blue square.", "A red circle and a blue square", "red circle, blue square"],
    2: ["a large green triangle on a noisy background", "there is a green triangle", "a big green triangle"],
    3: ["two stars: a yellow star and a purple star", "a yellow star above a purple star", "yellow and purple stars"],
}
HYPS = {1: "a red circle left of a blue square", 2: "a green triangle", 3: "a purple star above a yellow star"}


def test_python_tokenizer_documented_behaviour():
    assert cm.python_tokenize("A red circle, left of... the Blue square!") == "a red circle left of the blue square"
    assert cm.python_tokenize("the dog's ball -- big") == "the dog's ball big"


def test_bleu_cider_rouge_equal_pycocoevalcap_direct():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    out = cm.caption_metrics(REFS, HYPS, use_java=False, metrics=["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L",
                                                                  "CIDEr-D", "METEOR", "SPICE"])
    gts = {k: [cm.python_tokenize(c) for c in v] for k, v in REFS.items()}
    res = {k: [cm.python_tokenize(v)] for k, v in HYPS.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    for i in range(4):
        assert out.metrics[f"BLEU-{i + 1}"] == pytest.approx(bleu[i])
    assert out.metrics["CIDEr-D"] == pytest.approx(cider)
    assert out.metrics["ROUGE-L"] == pytest.approx(rouge)
    assert out.tokenizer == "python" and out.comparable is False
    assert "METEOR" in out.unavailable and "METEOR" not in out.metrics
    # a perfect hypothesis scores BLEU-1 = 1
    perfect = cm.caption_metrics({1: ["a red circle"]}, {1: "a red circle"}, use_java=False, metrics=["BLEU-1"])
    assert perfect.metrics["BLEU-1"] == pytest.approx(1.0)


def test_spice_unavailable_with_reason_never_zero(monkeypatch):
    reason = cm.spice_status()
    if reason is not None:  # the offline default: CoreNLP models are absent
        out = cm.caption_metrics(REFS, HYPS, use_java=False, metrics=["SPICE"])
        assert "SPICE" not in out.metrics and out.unavailable["SPICE"] == reason
    monkeypatch.setattr(cm.shutil, "which", lambda name: None)
    assert cm.spice_status() == "java not found on PATH"
    out = cm.caption_metrics(REFS, HYPS, metrics=["SPICE", "METEOR", "BLEU-4"])
    assert out.unavailable["SPICE"] == "java not found on PATH"
    assert "java not found" in out.unavailable["METEOR"] and "BLEU-4" in out.metrics and out.tokenizer == "python"


@pytest.mark.skipif(not cm.java_available(), reason="java not installed (METEOR and PTB tokenizer need it)")
def test_java_path_ptb_tokenizer_and_meteor():
    """The one METEOR call of the suite: PTB tokenizer + METEOR 1.5 through the JVM."""
    out = cm.caption_metrics(REFS, HYPS, use_java=True, metrics=["BLEU-4", "METEOR"])
    assert out.tokenizer == "ptb-java" and out.comparable
    assert 0.0 < out.metrics["METEOR"] < 1.0 and len(out.per_image["METEOR"]) == 3
    assert out.gts[1][1] == "a red circle and a blue square"


def test_caption_head_learns_and_beam1_equals_greedy(one_torch_thread):
    from loupe_bench.tasks.caption_head import CaptionHeadConfig, Vocab, train_caption_head

    feats = torch.zeros(4, 3, 8)
    for i in range(4):
        feats[i, :, i] = 1.0
    caps = [["red circle"], ["blue square"], ["green star"], ["red square"]]
    cfg = CaptionHeadConfig(width=32, layers=1, heads=2, steps=60, batch_size=8, lr=2e-2, max_len=6)
    head, vocab, losses = train_caption_head(feats, caps, cfg, seed=0)
    assert losses[-1] < 0.2 * losses[0]
    greedy = [vocab.decode(s) for s in head.greedy(feats)]
    assert greedy == ["red circle", "blue square", "green star", "red square"]
    assert head.beam(feats, 1) == head.greedy(feats)
    assert [vocab.decode(s) for s in head.beam(feats, 3)] == greedy
    head2, _, losses2 = train_caption_head(feats, caps, cfg, seed=0)
    assert losses2 == losses
    v = Vocab(["A red circle."])
    assert v.decode(v.encode("a red circle", 10)) == "a red circle"
