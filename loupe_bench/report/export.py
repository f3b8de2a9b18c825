"""Export result JSONs into the layouts other tools read (``loupe-bench export --format NAME RESULTS_DIR --out DIR``).

Formats are found through :data:`EXPORT_FORMATS` (a :class:`~loupe_bench.registry.Registry`); each one is a function
``(results, out_dir) -> [written paths]``. Add a format by registering another function.

``clip_benchmark`` follows the conventions of CLIP_benchmark 1.6.2 (``clip_benchmark eval`` / ``clip_benchmark
build``):

* one JSON per (dataset, split, model, task) named ``{dataset}_{pretrained}_{model}_{language}_{task}.json`` (its
  ``--output`` template), holding ``dataset`` (the data set's name; CLIP_benchmark evaluates one split per run,
  ``--split`` defaulting to ``test``, and its template has no split field, so a result on another split — e.g.
  ``comptest`` — carries it as a dataset-name suffix, ``{dataset}_{split}``, in the file name and in ``dataset``;
  a ``test`` result keeps the plain name), ``model`` (the architecture:
  our model spec's name), ``pretrained`` (the weights: a checkpoint directory's path, or ``random-init-seed<N>`` for
  a freshly initialised spec), ``task``, ``metrics`` (fractions) and ``language`` (``en``); extra keys
  ``pretrained_sha256`` (the weights hash), ``split``, ``loupe_task`` and ``fingerprint`` (the protocol) —
  CLIP_benchmark's ``build`` copies extra keys into its CSV columns as it does with its own;
* task and metric names: ``zeroshot_retrieval`` (``image_retrieval_recall@k`` = our ``t2i_R@k``,
  ``text_retrieval_recall@k`` = our ``i2t_R@k``), ``zeroshot_classification`` (``acc1``, ``acc5``,
  ``mean_per_class_recall``), ``linear_probe`` (``lp_acc1``, ``lp_acc5``, ``lp_mean_per_class_recall``),
  ``image_caption_selection`` under CLIP_benchmark's protocol only: SugarCrepe (``scoring: shared``, ``tie_rule:
  positive-wins``; ``acc``; dataset ``sugar_crepe/<subset>``, file name ``sugar_crepe_<subset>_...``) and Winoground
  (``scoring: shared``, ``tie_rule: first-wins``; dataset ``winoground``; ``text_acc`` / ``image_acc`` / ``acc`` =
  our text / image / group scores);
* ``benchmark.csv``: what ``build`` makes of those JSONs (metrics flattened into columns, the other keys beside them,
  ``model_fullname = model + " " + pretrained``);
* ``README.md``: what was exported and what was left out (and why), including each metric of an exported result
  that CLIP_benchmark has no field for, with its registered unit
  (:func:`~loupe_bench.tasks.metric_registry.metric_info`); only fractions are ever renamed into CLIP_benchmark's
  metrics (its metrics are fractions).
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .escape import csv_cell
from ..errors import DataError
from ..registry import Registry
from ..tasks.metric_registry import metric_info
from ..utils.io import atomic_write_json, atomic_write_text

#: format name -> ``fn(results, out_dir) -> List[Path]``
EXPORT_FORMATS = Registry("export format")

PathLike = Union[str, os.PathLike]


def mean_per_class_recall(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Balanced accuracy: the mean over the classes present in ``labels`` of the fraction of their samples
    predicted as that class (CLIP_benchmark's ``mean_per_class_recall``, sklearn's ``balanced_accuracy_score``)."""
    pred, lab = np.asarray(predictions), np.asarray(labels)
    if pred.shape != lab.shape or lab.size == 0:
        raise DataError(f"{pred.size} predictions for {lab.size} labels")
    return float(np.mean([np.mean(pred[lab == c] == c) for c in np.unique(lab)]))


def _per_class_recall(result: Dict[str, Any]) -> Optional[float]:
    """From a result's ``extra.predictions`` / ``extra.labels`` (None when the result does not record them)."""
    extra = result.get("extra") or {}
    if not isinstance(extra.get("predictions"), list) or not isinstance(extra.get("labels"), list):
        return None
    return mean_per_class_recall(extra["predictions"], extra["labels"])


def _recall_names(metric: str) -> Optional[str]:
    """``i2t_R@k`` (image queries, texts retrieved) -> ``text_retrieval_recall@k``; ``t2i_R@k`` ->
    ``image_retrieval_recall@k``."""
    for ours, theirs in (("i2t_R@", "text_retrieval_recall@"), ("t2i_R@", "image_retrieval_recall@")):
        if metric.startswith(ours):
            return theirs + metric[len(ours):]
    return None


class _CBTask:
    """How one of our task types maps onto a CLIP_benchmark task: its name, metric renaming, the per-class
    recall key (None: the task has none) and, for a task CLIP_benchmark has for some data sets and one protocol
    only, ``datasets`` (our dataset name -> ``fn(split)`` giving CLIP_benchmark's dataset name; None: every data set,
    named by :func:`cb_dataset_name`) and ``options`` (spec options a result must have been run with)."""

    def __init__(self, name: str, rename: Callable[[str], Optional[str]], per_class: Optional[str],
                 datasets: Optional[Dict[str, Callable[[str], str]]] = None, options: Optional[Dict[str, Any]] = None):
        self.name, self.rename, self.per_class = name, rename, per_class
        self.datasets, self.options = datasets, dict(options or {})

    def dataset_name(self, task: Dict[str, Any]) -> Optional[str]:
        """CLIP_benchmark's dataset name for a result's ``task`` record (None: CLIP_benchmark has no counterpart)."""
        opts = (task.get("spec") or {}).get("options") or {}
        if any(opts.get(k) != v for k, v in self.options.items()):
            return None
        dataset, split = str(task["dataset"]), str(task["split"])
        if self.datasets is None:
            return cb_dataset_name(dataset, split)
        fn = self.datasets.get(dataset)
        return None if fn is None else fn(split)


#: CLIP_benchmark's default split (``clip_benchmark eval --split``): results on it keep the plain dataset name
CB_DEFAULT_SPLIT = "test"


def cb_dataset_name(dataset: str, split: str) -> str:
    """The dataset name a result exports under: ``dataset`` on CLIP_benchmark's default split, else
    ``{dataset}_{split}`` (its file-name template has no split field)."""
    return dataset if split == CB_DEFAULT_SPLIT else f"{dataset}_{split}"


#: our task type -> CLIP_benchmark task (types not listed have no CLIP_benchmark counterpart)
CB_TASKS = Registry("CLIP_benchmark task")
CB_TASKS.add("retrieval", _CBTask("zeroshot_retrieval", _recall_names, None))
CB_TASKS.add("classification", _CBTask("zeroshot_classification", {"top1": "acc1", "top5": "acc5"}.get,
                                       "mean_per_class_recall"))
CB_TASKS.add("linear-probe", _CBTask("linear_probe", {"top1": "lp_acc1", "top5": "lp_acc5"}.get,
                                     "lp_mean_per_class_recall"))
# SugarCrepe: one split per subset, CLIP_benchmark's dataset ``sugar_crepe/<subset>``; its ``acc`` is our ``acc``
# under its protocol only (pooled cosine, the true caption winning ties)
CB_TASKS.add("caption-selection", _CBTask("image_caption_selection", {"acc": "acc"}.get, None,
                                          {"sugarcrepe": lambda split: f"sugar_crepe/{split}"},
                                          {"scoring": "shared", "tie_rule": "positive-wins"}))
# Winoground: CLIP_benchmark runs it as ``image_caption_selection`` on dataset ``winoground``; its ``text_acc``,
# ``image_acc`` and ``acc`` are our text, image and group scores under its protocol (pooled cosine, argmax ties)
CB_TASKS.add("two-by-two", _CBTask("image_caption_selection",
                                   {"text_score": "text_acc", "image_score": "image_acc", "group_score": "acc"}.get,
                                   None, {"winoground": lambda split: "winoground"},
                                   {"scoring": "shared", "tie_rule": "first-wins"}))


def pretrained_tag(result: Dict[str, Any]) -> str:
    """CLIP_benchmark's ``pretrained`` for a result: the checkpoint directory's path when the model was loaded from
    one, ``random-init-seed<seed>`` for a spec initialised with the evaluation seed, else the recorded source."""
    model = result["model"]
    source = str(model.get("source", ""))
    if source.startswith("spec "):
        return f"random-init-seed{result.get('seed', 0)}"
    return source or "unknown"


def _slug(text: str) -> str:
    """File-name form as CLIP_benchmark builds it: a path becomes its basename, ``/`` becomes ``_``."""
    return (os.path.basename(text.rstrip("/")) or text).replace("/", "_").replace(" ", "-")


class CBExport(NamedTuple):
    """One result in CLIP_benchmark's layout: the JSON object, the CLIP_benchmark metrics the result lacks, and our
    metrics CLIP_benchmark has no field for."""

    obj: Dict[str, Any]
    lacking: List[str]
    unexported: List[str]


def to_clip_benchmark(result: Dict[str, Any]) -> Optional[CBExport]:
    """One result as a CLIP_benchmark JSON object (:class:`CBExport`); ``None`` for task types CLIP_benchmark does
    not have. See the module docstring for the mapping: a metric is renamed into CLIP_benchmark's only when it is
    a fraction (its registered unit), as CLIP_benchmark's metrics are."""
    ttype = result["task"]["type"]
    if ttype not in CB_TASKS:
        return None
    cb = CB_TASKS.get(ttype)
    dataset = cb.dataset_name(result["task"])
    if dataset is None:
        return None
    metrics: Dict[str, float] = {}
    unexported: List[str] = []
    for name, m in result["metrics"].items():
        theirs = cb.rename(name) if metric_info(name).unit == "fraction" else None
        if theirs is None:
            unexported.append(name)
        else:
            metrics[theirs] = float(m["value"])
    lacking: List[str] = []
    if cb.per_class is not None:
        value = _per_class_recall(result)
        if value is None:
            lacking.append(cb.per_class)
        else:
            metrics[cb.per_class] = value
    model = result["model"]
    spec = model.get("spec") if isinstance(model.get("spec"), dict) else {}
    obj = {
        "dataset": dataset,
        "model": str(spec.get("name") or model["name"]),
        "pretrained": pretrained_tag(result),
        "task": cb.name,
        "metrics": metrics,
        "language": "en",
        "pretrained_sha256": str(model.get("checkpoint_sha256", "")),
        "split": str(result["task"]["split"]),
        "loupe_task": str(result["task"]["name"]),
        "fingerprint": str(result["task"]["fingerprint"]),
    }
    return CBExport(obj, lacking, unexported)


def clip_benchmark_filename(obj: Dict[str, Any]) -> str:
    """``{dataset}_{pretrained}_{model}_{language}_{task}.json`` (CLIP_benchmark's ``--output`` template, with its
    slugs: ``/`` -> ``_`` (the dataset: ``sugar_crepe/add_att`` -> ``sugar_crepe_add_att``), a path -> its
    basename)."""
    parts = [obj["pretrained"], obj["model"], obj["language"], obj["task"]]
    dataset = str(obj["dataset"]).replace("/", "_").replace(" ", "-")
    return "_".join([dataset] + [_slug(str(p)) for p in parts]) + ".json"


def build_rows(objs: Sequence[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """CLIP_benchmark ``build``'s rows: metrics flattened into the row, then every other key, and
    ``model_fullname = model + " " + pretrained``; columns: identity keys first, the rest sorted."""
    rows = []
    for obj in objs:
        row = dict(obj["metrics"])
        row.update({k: v for k, v in obj.items() if k != "metrics"})
        row["model_fullname"] = f"{obj['model']} {obj['pretrained']}"
        rows.append(row)
    head = ["dataset", "model", "pretrained", "model_fullname", "task", "language"]
    cols = head + sorted({k for r in rows for k in r} - set(head))
    return rows, cols


@EXPORT_FORMATS.register("clip_benchmark")
def export_clip_benchmark(results: Sequence[Dict[str, Any]], out_dir: PathLike) -> List[Path]:
    """CLIP_benchmark 1.6.2 layout (module docstring): one JSON per retrieval / classification / linear-probe result,
    ``benchmark.csv`` and ``README.md``. Returns the written paths.

    Raises:
        DataError: two results map to one file name (same dataset, split, weights, model and task: e.g. two seeds
            of one checkpoint); export them into separate folders.
    """
    out_dir = Path(out_dir)
    objs: Dict[str, Dict[str, Any]] = {}
    sources: Dict[str, str] = {}
    skipped: Dict[str, List[str]] = {}
    lacking: Dict[str, List[str]] = {}
    unexported: Dict[str, List[str]] = {}
    for r in results:
        where = str(r.get("_path", r["task"]["name"]))
        if (r.get("extra") or {}).get("skipped"):
            skipped.setdefault("skipped by the evaluation", []).append(where)
            continue
        conv = to_clip_benchmark(r)
        if conv is None:
            what = f"task type {r['task']['type']!r}" if r["task"]["type"] not in CB_TASKS else \
                f"task type {r['task']['type']!r} on data set {r['task']['dataset']!r} with these options"
            skipped.setdefault(f"{what} has no CLIP_benchmark counterpart", []).append(where)
            continue
        name = clip_benchmark_filename(conv.obj)
        if name in objs:
            raise DataError(f"this result and {sources[name]} both export to {name} (CLIP_benchmark's file name has "
                            f"no seed); export each seed's results folder separately", file=where)
        objs[name], sources[name] = conv.obj, where
        for m in conv.lacking:
            lacking.setdefault(m, []).append(where)
        for m in conv.unexported:
            unexported.setdefault(m, []).append(where)
    paths = [atomic_write_json(out_dir / name, obj) for name, obj in sorted(objs.items())]
    if objs:
        rows, cols = build_rows([objs[n] for n in sorted(objs)])
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: csv_cell(v) for k, v in row.items()})
        paths.append(atomic_write_text(out_dir / "benchmark.csv", buf.getvalue()))
    paths.append(atomic_write_text(out_dir / "README.md", _readme(len(objs), skipped, lacking, unexported)))
    return paths


def _readme(n: int, skipped: Dict[str, List[str]], lacking: Dict[str, List[str]],
            unexported: Dict[str, List[str]]) -> str:
    """The export's README: the layout, then the metrics left out (CLIP_benchmark's that a result lacks, ours that
    CLIP_benchmark has no field for, with their units) and the results not exported."""
    lines = ["# loupe-bench results in CLIP_benchmark 1.6.2 layout", "",
             f"{n} result file(s) `{{dataset}}_{{pretrained}}_{{model}}_{{language}}_{{task}}.json` and "
             "`benchmark.csv` (what `clip_benchmark build` makes of them, with `model_fullname`).", "",
             f"A result on a split other than CLIP_benchmark's default `{CB_DEFAULT_SPLIT}` carries the split as a "
             "dataset-name suffix (`{dataset}_{split}`, e.g. `_comptest`) in its file name and `dataset` field; "
             "`split` names it too.", "",
             "Metrics are fractions; `pretrained` is the checkpoint directory (or `random-init-seed<N>` for a freshly "
             "initialised spec) and `pretrained_sha256` the weights hash; `split`, `loupe_task` and `fingerprint` "
             "name the protocol. Bootstrap intervals and per-item values are not exported (CLIP_benchmark has no "
             "field for them); see the loupe-bench result JSONs.", ""]
    if lacking:
        lines += ["## Metrics left out", ""]
        for metric, files in sorted(lacking.items()):
            lines.append(f"- `{metric}`: the result records no per-sample predictions and labels to compute it from "
                         f"(re-evaluate with this version): {', '.join(files)}")
        lines.append("")
    if unexported:
        lines += ["## Metrics CLIP_benchmark has no field for", ""]
        for metric, files in sorted(unexported.items()):
            info = metric_info(metric)
            lines.append(f"- `{metric}` ({info.unit}, {info.direction} is better): in {len(files)} exported "
                         "result(s), kept in the loupe-bench result JSONs")
        lines.append("")
    if skipped:
        lines += ["## Results not exported", ""]
        for why, files in sorted(skipped.items()):
            lines.append(f"- {why}: {len(files)} file(s)")
        lines.append("")
    return "\n".join(lines)


def export_results(results_dir: PathLike, fmt: str, out_dir: PathLike, split: Optional[str] = None) -> List[Path]:
    """Read every result JSON under ``results_dir`` (only those on ``split`` when given) and write them in format
    ``fmt`` (a name of :data:`EXPORT_FORMATS`) into ``out_dir``; returns the written paths.

    Raises:
        SpecError: unknown format. DataError: no results, no result on ``split``, or a result the format cannot
            hold.
    """
    from ..tasks.results import load_results

    writer = EXPORT_FORMATS.get(fmt)
    results = load_results(results_dir)
    if not results:
        raise DataError("no result JSON (schema loupe-bench/result/v1) found", file=str(results_dir))
    if split is not None:
        splits = sorted({str(r["task"]["split"]) for r in results})
        results = [r for r in results if str(r["task"]["split"]) == split]
        if not results:
            raise DataError(f"no result on split {split!r} (the results hold: {', '.join(splits)})",
                            file=str(results_dir))
    return writer(results, out_dir)
