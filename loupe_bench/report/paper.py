"""Published numbers (``results/paper/*.yaml``): loader, validator and the side-by-side comparison.

Each YAML file is a list of entries ``{model, variant, task, setting, dataset, split, metric, value, units,
source: {paper, table, arxiv, secondary_source, reference_note}, provenance, note}``. Provenance follows the tags of
the reference notes: ``[V: …]`` → ``verified`` (read in the named primary source), ``[S: …]`` → ``secondary`` (a named
third-party source), ``[R-…]`` → ``unverified`` (a recollection). The tables ship in the wheel as
``loupe_bench/_specs/paper`` (found through :func:`loupe_bench.specs.spec_dir`).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple


from ..errors import SpecError
from ..specs import read_spec
from ..registry import Registry
from ..tasks.metric_registry import shown_value
from ..tasks.results import registered_metric
from .escape import console as console_text, md
from .results_io import REFERENCE_ROWS, LoadedResults, MetricRow, load, mean_std
from .table import metric_label

PROVENANCE = ("verified", "secondary", "unverified")
UNITS = ("percent", "fraction")
SETTINGS = ("zero-shot", "linear-probe", "fine-tuned")
REQUIRED = ("model", "task", "dataset", "split", "metric", "value", "units", "source", "provenance")

# Dataset name aliases -> canonical name used in the paper tables.
DATASET_ALIASES: Dict[str, str] = {
    "flickr": "flickr30k", "flickr30k": "flickr30k", "f30k": "flickr30k", "flickr30k-karpathy": "flickr30k",
    "coco": "coco", "mscoco": "coco", "coco-karpathy": "coco", "coco2014": "coco", "coco2017": "coco",
    "refcoco+": "refcoco+", "refcocoplus": "refcoco+", "refcoco_plus": "refcoco+", "refcoco": "refcoco",
    "refcocog": "refcocog", "imagenet": "imagenet", "imagenet-1k": "imagenet", "imagenet1k": "imagenet",
    "aircraft": "fgvc-aircraft", "fgvc-aircraft": "fgvc-aircraft", "fgvc_aircraft": "fgvc-aircraft",
    "voc": "voc", "pascal-voc": "voc", "voc2007": "voc",
}

# Task-type aliases -> canonical task name in the paper tables, and the setting a result of that type has.
TASK_ALIASES: Dict[str, Tuple[str, str]] = {
    "retrieval": ("retrieval", "zero-shot"),
    "classification": ("classification", "zero-shot"),
    "zero-shot-classification": ("classification", "zero-shot"),
    "linear-probe": ("linear-probe", "linear-probe"),
    "linear_probe": ("linear-probe", "linear-probe"),
    "linearprobe": ("linear-probe", "linear-probe"),
    "grounding": ("grounding", "zero-shot"),
    "detection": ("detection", "zero-shot"),
    "captioning": ("captioning", "fine-tuned"),
}

# Reproduced model name prefix -> published model family it reproduces (registry: no if/elif over names).
FAMILIES = Registry("published model family")
for _prefix, _family in (("clip", "CLIP"), ("filip", "FILIP"), ("loupe", "LOUPE"), ("align", "ALIGN")):
    FAMILIES.add(_prefix, _family)


class PaperEntry(NamedTuple):
    """One published number."""

    model: str
    variant: Optional[str]
    task: str
    setting: str
    dataset: str
    split: str
    metric: str
    value: float
    units: str
    source: Dict[str, Any]
    provenance: str
    note: str
    file: str

    @property
    def key(self) -> Tuple[str, str, str, str, str, str, str]:
        return (self.model, self.variant or "", self.task, self.setting, self.dataset, self.split, self.metric)

    @property
    def percent(self) -> float:
        return shown_value(self.value, self.units)

    def source_text(self) -> str:
        """``paper, table, arXiv id; via secondary source`` in one line (``table not identified`` when the entry
        names no table)."""
        s = self.source
        parts = [s.get("paper") or "?"]
        parts.append(str(s["table"]) if s.get("table") else "table not identified")
        if s.get("arxiv"):
            parts.append(f"arXiv {s['arxiv']}")
        text = ", ".join(parts)
        if s.get("secondary_source"):
            text += f"; via {s['secondary_source']}"
        return text


_ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
_URL = re.compile(r"https?://\S+")


def source_is_openable(source: Dict[str, Any]) -> bool:
    """A reader can open the source: an arXiv id (``NNNN.NNNNN``), a URL in any source field, or a named paper with
    its table number."""
    if _ARXIV_ID.match(str(source.get("arxiv") or "")):
        return True
    if any(_URL.search(str(v)) for v in source.values() if v):
        return True
    return bool(source.get("paper")) and bool(re.search(r"\bTable\s+\d+", str(source.get("table") or "")))


def family_of(model_name: str) -> Optional[str]:
    """Published family a reproduced model belongs to (``loupe-tiny`` → ``LOUPE``), or None."""
    head = model_name.lower().split("-")[0].split("_")[0]
    return FAMILIES.get(head) if head in FAMILIES else None


def canonical_dataset(name: str) -> str:
    n = name.strip().lower()
    return DATASET_ALIASES.get(n, n)


def _validate_entry(raw: Any, path: Path, index: int) -> PaperEntry:
    rec = f"entry {index}"
    if not isinstance(raw, dict):
        raise SpecError("entry must be a mapping", file=str(path), record=rec)
    for field in REQUIRED:
        if field not in raw or raw[field] in (None, ""):
            raise SpecError(f"missing field {field!r}", file=str(path), record=rec)
    value = raw["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise SpecError(f"value must be a finite number, got {value!r}", file=str(path), record=rec)
    registered_metric(str(raw["metric"]), str(path), rec)
    units = raw["units"]
    if units not in UNITS:
        raise SpecError(f"units must be one of {UNITS}, got {units!r}", file=str(path), record=rec)
    upper = 100.0 if units == "percent" else 1.0
    if not 0.0 <= float(value) <= upper:
        raise SpecError(f"value {value} outside [0, {upper:g}] for units {units}", file=str(path), record=rec)
    prov = raw["provenance"]
    if prov not in PROVENANCE:
        raise SpecError(f"provenance must be one of {PROVENANCE}, got {prov!r}", file=str(path), record=rec)
    setting = raw.get("setting") or "zero-shot"
    if setting not in SETTINGS:
        raise SpecError(f"setting must be one of {SETTINGS}, got {setting!r}", file=str(path), record=rec)
    source = raw["source"]
    if not isinstance(source, dict) or not source.get("paper"):
        raise SpecError("source must be a mapping naming at least the paper", file=str(path), record=rec)
    if prov == "secondary" and not source.get("secondary_source"):
        raise SpecError("a secondary entry must name its secondary_source", file=str(path), record=rec)
    if prov == "verified" and not (source.get("table") or source.get("arxiv")):
        raise SpecError("a verified entry must name the table or arXiv version it was read in", file=str(path),
                        record=rec)
    return PaperEntry(
        model=str(raw["model"]), variant=raw.get("variant"), task=str(raw["task"]), setting=setting,
        dataset=canonical_dataset(str(raw["dataset"])), split=str(raw["split"]), metric=str(raw["metric"]),
        value=float(value), units=units, source=dict(source), provenance=prov, note=str(raw.get("note") or ""),
        file=str(path),
    )


def load_paper_file(path) -> List[PaperEntry]:
    """Read and validate one paper table (a YAML/JSON list of entries)."""
    path = Path(path)
    data = read_spec(path)
    if isinstance(data, dict) and "entries" in data:
        data = data["entries"]
    if not isinstance(data, list):
        raise SpecError("a paper table is a list of entries", file=str(path))
    return [_validate_entry(raw, path, i) for i, raw in enumerate(data)]


def load_paper_tables(folder=None) -> List[PaperEntry]:
    """All entries of every table in ``folder`` (default: the shipped ``paper`` specs); duplicates are an error."""
    from ..specs import SPEC_KINDS, spec_dir

    root = Path(folder) if folder is not None else spec_dir("paper")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in SPEC_KINDS["paper"].suffixes) \
        if root.is_dir() else []
    if not files:
        raise SpecError("no paper tables (*.yaml) found", file=str(root))
    entries: List[PaperEntry] = []
    seen: Dict[tuple, str] = {}
    for f in files:
        for e in load_paper_file(f):
            if e.key in seen:
                raise SpecError(f"duplicate entry {e.key} (also in {seen[e.key]})", file=str(f))
            seen[e.key] = str(f)
            entries.append(e)
    return entries


# --------------------------------------------------------------------------------------------------- compare
class ComparisonRow(NamedTuple):
    """One reproduced metric beside one published number of the same (task, dataset, split, metric)."""

    task: str
    dataset: str
    split: str
    metric: str
    model: Optional[str]            # reproduced model (None: published number with nothing reproduced)
    reproduced: Optional[float]     # percent
    ci_low: Optional[float]
    ci_high: Optional[float]
    paper_model: str
    paper_variant: Optional[str]
    published: float                # percent
    delta: Optional[float]          # reproduced - published, percentage points
    same_family: bool
    provenance: str
    source: str
    note: str
    split_check: str = ""           # "" (the paper's split) or why the delta is withheld ("not the paper's split ...")


# ------------------------------------------------------------------------------------------------ canonical splits
class CanonicalSplit(NamedTuple):
    """The size of a (dataset, split) the paper tables report on: ``counts`` (result ``extra`` key -> value)."""

    dataset: str
    split: str
    counts: Dict[str, int]
    provenance: str
    source: str


def load_canonical_splits(paper_dir=None) -> Dict[Tuple[str, str], CanonicalSplit]:
    """``(dataset, split) -> CanonicalSplit`` from ``<paper_dir>/splits/*.yaml`` (default: the shipped tables')."""
    from ..specs import spec_dir

    root = (Path(paper_dir) if paper_dir is not None else spec_dir("paper")) / "splits"
    out: Dict[Tuple[str, str], CanonicalSplit] = {}
    for f in sorted(root.glob("*.yaml")) if root.is_dir() else []:
        data = read_spec(f) or []
        for i, raw in enumerate(data if isinstance(data, list) else [None]):
            ok = isinstance(raw, dict) and isinstance(raw.get("counts"), dict) and raw["counts"] and all(
                isinstance(v, int) and not isinstance(v, bool) for v in raw["counts"].values())
            if not ok or not raw.get("source") or raw.get("provenance") not in PROVENANCE:
                raise SpecError("a canonical split needs dataset, split, counts {name: int}, source and provenance",
                                file=str(f), record=f"entry {i}")
            c = CanonicalSplit(canonical_dataset(str(raw["dataset"])), str(raw["split"]), dict(raw["counts"]),
                               raw["provenance"], str(raw["source"]))
            out[(c.dataset, c.split)] = c
    return out


def split_check(extra: Optional[Dict[str, Any]], dataset: str, split: str,
                canonical: Dict[Tuple[str, str], CanonicalSplit]) -> str:
    """``""`` when a result's recorded counts (``extra``) equal every canonical count of its (dataset, split), else
    the label ``"not the paper's split (...)"`` saying why: no canonical size recorded, a count missing from the
    result, or a count that differs. A canonical size whose provenance is not ``verified`` never admits a delta."""
    c = canonical.get((dataset, split))
    if c is None:
        return "not the paper's split (no canonical size recorded for it)"
    if c.provenance != "verified":
        return (f"not the paper's split as far as we can check: the canonical size of {dataset} {split} is "
                f"{c.provenance} (recalled, not read in a source)")
    extra = extra or {}
    problems = []
    for key, want in sorted(c.counts.items()):
        got = extra.get(key)
        if got is None:
            problems.append(f"the result records no {key}; the paper's has {want}")
        elif got != want:
            problems.append(f"{key} {got}, the paper's {want}")
    return f"not the paper's split ({'; '.join(problems)})" if problems else ""


def _result_task(row: MetricRow) -> Tuple[str, str]:
    t = row.task_type.strip().lower()
    return TASK_ALIASES.get(t, (t, "zero-shot"))


def compare_paper(results, *, paper_dir=None, include_unmatched: bool = False) -> List[ComparisonRow]:
    """Reproduced results beside published numbers, matched on (task, setting, dataset, split, metric).

    Reference rows (chance, the attribute oracle) are never set beside a published number.
    ``delta = reproduced − published`` in percentage points (fractions are converted to percent first). Several
    seeds of the same (model, task, split, metric) are averaged first. The delta is given only when every result of
    the group evaluated the paper's split: its recorded counts equal the canonical size of (dataset, split)
    (``<paper_dir>/splits/*.yaml``, :func:`split_check`); otherwise the row keeps the reproduced number, has no
    delta, and ``split_check`` says "not the paper's split (...)".

    Args:
        results: a folder of result JSONs, or results already read (:func:`~loupe_bench.report.results_io.load`).
        paper_dir: folder of paper tables (default: the shipped ones).
        include_unmatched: also list published numbers that no reproduced result matches.
    """
    loaded = results if isinstance(results, LoadedResults) else load(results)
    extras = loaded.extras()
    rows = [r for r in loaded.rows if r.model not in REFERENCE_ROWS]   # chance and oracles are not reproductions
    entries = load_paper_tables(paper_dir)
    canonical = load_canonical_splits(paper_dir)
    # average seeds: (model, task_type, dataset, split, metric, fingerprint) -> rows
    groups: Dict[tuple, List[MetricRow]] = {}
    for r in rows:
        groups.setdefault((r.model, r.task_type, canonical_dataset(r.dataset), r.split, r.metric, r.fingerprint),
                          []).append(r)
    out: List[ComparisonRow] = []
    matched = set()
    for (model, _tt, dataset, split, metric, _fp), grp in sorted(groups.items()):
        task, setting = _result_task(grp[0])
        val, _ = mean_std(shown_value(r.value, r.units) for r in grp)
        lo = hi = None
        if len(grp) == 1 and grp[0].ci_low is not None:
            lo, hi = shown_value(grp[0].ci_low, grp[0].units), shown_value(grp[0].ci_high, grp[0].units)
        fam = family_of(model)
        checks = [split_check(extras.get(r.path), dataset, split, canonical) for r in grp]
        check = next((c for c in checks if c), "")
        for e in entries:
            if (e.task, e.setting, e.dataset, e.split, e.metric) != (task, setting, dataset, split, metric):
                continue
            matched.add(e.key)
            out.append(ComparisonRow(task, dataset, split, metric, model, val, lo, hi, e.model, e.variant,
                                     e.percent, None if check else val - e.percent, fam == e.model, e.provenance,
                                     e.source_text(), e.note, check))
    if include_unmatched:
        for e in entries:
            if e.key not in matched:
                out.append(ComparisonRow(e.task, e.dataset, e.split, e.metric, None, None, None, None, e.model,
                                         e.variant, e.percent, None, False, e.provenance, e.source_text(), e.note))
    return out


def comparison_markdown(rows: Sequence[ComparisonRow]) -> str:
    """A Markdown table of :func:`compare_paper` rows (percent, deltas in points)."""
    head = ("| task | dataset | split | metric | reproduced (model) | 95% CI | published (model) | Δ (pts) | "
            "provenance | source |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        rep = "–" if r.reproduced is None else f"{r.reproduced:.1f} ({md(r.model)})"
        ci = "–" if r.ci_low is None else f"[{r.ci_low:.1f}, {r.ci_high:.1f}]"
        pub_model = md(r.paper_model + (f" {r.paper_variant}" if r.paper_variant else ""))
        delta = md(r.split_check) or ("–" if r.delta is None else f"{r.delta:+.1f}" + (" (same family)"
                                                                                    if r.same_family else ""))
        metric = md(metric_label(r.metric))
        lines.append(f"| {md(r.task)} | {md(r.dataset)} | {md(r.split)} | {metric} | {rep} | {ci} | "
                     f"{r.published:.1f} ({pub_model}) | {delta} | {md(r.provenance)} | {md(r.source)} |")
    lines.append("")
    lines.append("Provenance: `verified` read in the named primary source; `secondary` read in the named third-party "
                 "source; `unverified` a recollection, not a target until checked.")
    return "\n".join(lines) + "\n"


def comparison_table(rows: Sequence[ComparisonRow], title: str = "reproduced vs published"):
    """A rich Table of :func:`compare_paper` rows (every column; for a file or a wide terminal — the CLI prints
    :func:`comparison_console`)."""
    from rich.table import Table

    t = Table(title=title)
    for c in ("task", "dataset", "split", "metric", "reproduced", "95% CI", "published", "Δ pts", "provenance",
              "source"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(console_text(v) for v in (r.task, r.dataset, r.split, metric_label(r.metric))), *_console_cells(r),
                  console_text(r.source))
    return t


_TIER_COLOUR = {"verified": "green", "secondary": "yellow", "unverified": "red"}


def _console_cells(r: ComparisonRow) -> List[str]:
    """reproduced (model), 95% CI, published (model), Δ, provenance as rich markup (names escaped)."""
    pub_model = r.paper_model + (f" {r.paper_variant}" if r.paper_variant else "")
    return ["–" if r.reproduced is None else f"{r.reproduced:.1f} ({console_text(r.model)})",
            "–" if r.ci_low is None else f"[{r.ci_low:.1f}, {r.ci_high:.1f}]",
            f"{r.published:.1f} ({console_text(pub_model)})",
            console_text(r.split_check) or ("–" if r.delta is None else (
                f"[bold]{r.delta:+.1f}[/bold]" if r.same_family else f"{r.delta:+.1f}")),
            f"[{_TIER_COLOUR[r.provenance]}]{r.provenance}[/{_TIER_COLOUR[r.provenance]}]"]


def comparison_console(rows: Sequence[ComparisonRow]) -> List:
    """The comparison for an 80-column terminal: one block per (task, dataset, split) — a heading, a table with
    short headers (metric, ours, 95% CI, paper, Δ, tier, src) whose name cells fold instead of widening the table,
    and the block's sources as numbered notes (``src`` points at them) — so no column is cut and no header breaks."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    groups: Dict[Tuple[str, str, str], List[ComparisonRow]] = {}
    for r in rows:
        groups.setdefault((r.task, r.dataset, r.split), []).append(r)
    out: List = []
    for (task, dataset, split), grp in groups.items():
        sources: List[str] = []
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        t.add_column("metric", no_wrap=True)
        t.add_column("ours", overflow="fold", max_width=18)
        t.add_column("95% CI", no_wrap=True)
        t.add_column("paper", overflow="fold", max_width=22)
        t.add_column("Δ pts", overflow="fold", max_width=14)
        t.add_column("tier", no_wrap=True)
        t.add_column("src", no_wrap=True, justify="right")
        for r in grp:
            if r.source not in sources:
                sources.append(r.source)
            rep, ci, pub, delta, tier = _console_cells(r)
            t.add_row(Text(metric_label(r.metric)), rep, ci, pub, delta, tier, str(sources.index(r.source) + 1))
        out.append(Text(""))
        out.append(Text(f"{task} · {dataset} · {split}", style="bold", overflow="fold"))
        out.append(t)
        out.extend(Text(f"  [{i}] {src}", style="dim", overflow="fold") for i, src in enumerate(sources, 1))
    return out
