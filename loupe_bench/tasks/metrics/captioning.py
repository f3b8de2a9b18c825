"""Captioning metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE.

* Tokenisation: the Stanford PTB tokenizer of pycocoevalcap (Java) when ``java`` is on ``PATH``; otherwise
  :func:`python_tokenize`, a documented approximation (lower-case, split into word runs and single punctuation
  marks, drop the punctuation PTBTokenizer drops). Results tokenised in Python are marked
  ``"not comparable to COCO-server numbers"``.
* BLEU: corpus BLEU, closest reference length (``Bleu(4)``). ROUGE-L: mean of per-image ROUGE-L (beta 1.2).
  CIDEr-D: pycocoevalcap's ``Cider(n=4, sigma=6.0)`` (clipped counts, Gaussian length penalty, x10), IDF from the
  evaluated references.
* METEOR 1.5 needs Java (JVM subprocess); without Java it is reported unavailable.
* SPICE needs Java and Stanford CoreNLP 3.6.0, which pycocoevalcap downloads on first use. We never let it
  download: when the CoreNLP jars are not already in pycocoevalcap's ``spice/lib`` the metric is reported as
  unavailable with the reason, never as zero.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

from ..metric_catalog import CAPTION_METRICS

# the tokens PTBTokenizer's wrapper removes after tokenising
_PTB_PUNCT = {"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|\.\.\.|--|[^\sa-z0-9]")


class CaptionScores(NamedTuple):
    """Output of :func:`caption_metrics`.

    Attributes:
        metrics: name -> corpus value (only metrics that were computed).
        unavailable: name -> reason.
        per_image: name -> ``{image_id: score}`` where the scorer gives per-image values.
        tokenizer: ``"ptb-java"`` or ``"python"``.
        comparable: False when the Python tokenizer was used (not comparable to COCO-server numbers).
        gts, res: the tokenised references / hypotheses (for bootstrap replicates).
    """

    metrics: Dict[str, float]
    unavailable: Dict[str, str]
    per_image: Dict[str, Dict[object, float]]
    tokenizer: str
    comparable: bool
    gts: Dict[object, List[str]]
    res: Dict[object, List[str]]


def java_available() -> bool:
    """True when a ``java`` executable is on ``PATH``."""
    return shutil.which("java") is not None


def python_tokenize(text: str) -> str:
    """Python stand-in for PTBTokenizer + punctuation removal: lower-case; tokens are runs of letters/digits
    (keeping a trailing apostrophe suffix such as ``'s``), ``...``, ``--`` or one other non-space character; the
    punctuation set PTBTokenizer's wrapper removes is dropped; tokens joined by one space."""
    toks = _TOKEN_RE.findall(text.lower().replace("\n", " "))
    return " ".join(t for t in toks if t not in _PTB_PUNCT)


def _tokenize(captions: Mapping[object, Sequence[str]], use_java: bool) -> Dict[object, List[str]]:
    if use_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        data = {k: [{"caption": c} for c in v] for k, v in captions.items()}
        with contextlib.redirect_stdout(io.StringIO()):
            return PTBTokenizer().tokenize(data)
    return {k: [python_tokenize(c) for c in v] for k, v in captions.items()}


def spice_status() -> Optional[str]:
    """``None`` when SPICE can run, else the reason it cannot (checked without downloading anything)."""
    if not java_available():
        return "java not found on PATH"
    try:
        import pycocoevalcap.spice as spice_pkg
    except ImportError:
        return "pycocoevalcap not installed"
    lib = Path(list(spice_pkg.__path__)[0]) / "lib"
    needed = [lib / "stanford-corenlp-3.6.0.jar", lib / "stanford-corenlp-3.6.0-models.jar"]
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        return "Stanford CoreNLP 3.6.0 models missing (" + ", ".join(missing) + "); they are not fetched offline"
    return None


def metric_status(metrics: Sequence[str] = CAPTION_METRICS) -> Dict[str, str]:
    """Which of ``metrics`` cannot be computed here, and why (with the remedy); ``{}`` when all can.

    Checked without running anything heavy: pycocoevalcap importable (every metric), ``java`` on ``PATH`` (METEOR,
    SPICE), the CoreNLP jars SPICE needs (:func:`spice_status`).
    """
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return {m: "pycocoevalcap is not installed (pip install pycocoevalcap)" for m in metrics}
    out: Dict[str, str] = {}
    if "METEOR" in metrics and not java_available():
        out["METEOR"] = "java not found on PATH (install a Java runtime, e.g. openjdk-17-jre-headless)"
    if "SPICE" in metrics:
        reason = spice_status()
        if reason is not None:
            out["SPICE"] = reason
    return out


def bleu_cider(gts: Mapping[object, List[str]], res: Mapping[object, List[str]]) -> Dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr-D of already tokenised captions (used for bootstrap replicates)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(dict(gts), dict(res), verbose=0)
        cider, _ = Cider().compute_score(dict(gts), dict(res))
    out = {f"BLEU-{i + 1}": float(bleu[i]) for i in range(4)}
    out["CIDEr-D"] = float(cider)
    return out


def caption_metrics(
    references: Mapping[object, Sequence[str]],
    hypotheses: Mapping[object, str],
    use_java: Optional[bool] = None,
    metrics: Sequence[str] = CAPTION_METRICS,
) -> CaptionScores:
    """Score one generated caption per image against its references.

    Args:
        references: image id -> reference captions (raw text).
        hypotheses: image id -> generated caption (raw text); must cover the same ids.
        use_java: force the Java parts on/off; ``None`` = use Java when available.
        metrics: which metrics to compute (subset of :data:`CAPTION_METRICS`).
    """
    if set(references) != set(hypotheses):
        raise ValueError("references and hypotheses must cover the same images")
    try:
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        reason = "pycocoevalcap not installed (pip install pycocoevalcap)"
        return CaptionScores({}, {m: reason for m in metrics}, {}, "none", False, {}, {})
    java = java_available() if use_java is None else (use_java and java_available())
    keys = sorted(references, key=str)
    gts = _tokenize({k: list(references[k]) for k in keys}, java)
    res = _tokenize({k: [hypotheses[k]] for k in keys}, java)
    out: Dict[str, float] = {}
    unavailable: Dict[str, str] = {}
    per_image: Dict[str, Dict[object, float]] = {}
    wanted = set(metrics)
    if wanted & {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D"}:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider

        with contextlib.redirect_stdout(io.StringIO()):
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            cider, cider_each = Cider().compute_score(gts, res)
        for i in range(4):
            if f"BLEU-{i + 1}" in wanted:
                out[f"BLEU-{i + 1}"] = float(bleu[i])
        if "CIDEr-D" in wanted:
            out["CIDEr-D"] = float(cider)
            per_image["CIDEr-D"] = {k: float(s) for k, s in zip(gts.keys(), cider_each)}
    if "ROUGE-L" in wanted:
        rouge, rouge_each = Rouge().compute_score(gts, res)
        out["ROUGE-L"] = float(rouge)
        per_image["ROUGE-L"] = {k: float(s) for k, s in zip(gts.keys(), rouge_each)}
    if "METEOR" in wanted:
        if java:
            scorer = _shared_meteor()
            try:
                meteor, meteor_each = scorer.compute_score(gts, res)
            except Exception:
                close_meteor()
                raise
            out["METEOR"] = float(meteor)
            per_image["METEOR"] = {k: float(s) for k, s in zip(gts.keys(), meteor_each)}
        else:
            unavailable["METEOR"] = ("java not found on PATH" if use_java is None or use_java else
                                     "Java parts disabled (use_java: false)") + "; METEOR 1.5 is a Java program"
    if "SPICE" in wanted:
        reason = spice_status()
        if reason is None:
            from pycocoevalcap.spice.spice import Spice

            with contextlib.redirect_stdout(io.StringIO()):
                spice, _ = Spice().compute_score(gts, res)
            out["SPICE"] = float(spice)
        else:
            unavailable["SPICE"] = reason
    return CaptionScores(out, unavailable, per_image, "ptb-java" if java else "python", bool(java), gts, res)


_METEOR = None


def _shared_meteor():
    """One METEOR JVM per process, started on first use and reused: its first call loads the paraphrase tables
    (~11 s on 2 cores), later calls take well under a second. Scoring is stateless between calls (each
    ``EVAL`` line carries its own statistics), so sharing it changes no number."""
    global _METEOR
    proc = getattr(_METEOR, "meteor_p", None)
    if _METEOR is None or proc is None or proc.poll() is not None:
        import atexit

        from pycocoevalcap.meteor.meteor import Meteor

        if _METEOR is None:
            atexit.register(close_meteor)
        _METEOR = Meteor()
    return _METEOR


def close_meteor() -> None:
    """Stop the shared METEOR JVM (pycocoevalcap only does it in ``__del__``)."""
    global _METEOR
    scorer, _METEOR = _METEOR, None
    proc = getattr(scorer, "meteor_p", None)
    if proc is None:
        return
    with contextlib.suppress(Exception):
        proc.stdin.close()
    with contextlib.suppress(Exception):
        proc.kill()
        proc.wait(timeout=5)
