"""What a report says before its numbers: the run's metadata and what the numbers are (and are not).

:func:`run_metadata` lists date, code version, recipe(s), seeds, machine, wall time per stage and the world's size,
read from the ``reproduce.json`` manifest when there is one (plan, seeds, timings, environment) and from the result
JSONs (timestamp, code_version, packages, device, seed, timings) otherwise. :func:`scope_statement` says that the
synthetic world is not the paper's benchmark when the results are on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..utils.run_files import read_recipe

#: dataset names of the synthetic world start with this (``synthetic``, ``synthetic-refsynth``, ...)
SYNTHETIC_PREFIX = "synthetic"

SYNTHETIC_STATEMENT = (
    "These numbers are on loupe-bench's synthetic world (generated shapes, colours and captions), not on the paper's "
    "benchmarks (Flickr30K, COCO, RefCOCO, ...): they are not comparable to the paper's numbers. For runs on the real "
    "datasets, set the results beside the published tables with `loupe-bench compare --paper RESULTS_DIR`.")


def scope_statement(datasets: Sequence[str]) -> Optional[str]:
    """:data:`SYNTHETIC_STATEMENT` when any result is on a dataset whose name starts with :data:`SYNTHETIC_PREFIX`,
    else ``None`` (real-data results get no such statement)."""
    return SYNTHETIC_STATEMENT if any(str(d).startswith(SYNTHETIC_PREFIX) for d in datasets) else None


class MetaSource(NamedTuple):
    """What the metadata fields are read from."""

    manifest: Optional[Dict[str, Any]]       # reproduce.json, or None
    results: List[Dict[str, Any]]            # the parsed result objects
    runs: Dict[str, Path]                    # run name -> run directory
    world: Optional[Path]                    # the synthetic world directory, or None


def _distinct(values) -> List[str]:
    return sorted({str(v) for v in values if v not in (None, "")})


def _date(src: MetaSource) -> Optional[str]:
    stamps = _distinct(r.get("timestamp") for r in src.results)
    if not stamps:
        return None
    return stamps[0] if len(stamps) == 1 else f"{stamps[0]} – {stamps[-1]} (results evaluated)"


def _code_version(src: MetaSource) -> Optional[str]:
    env = (src.manifest or {}).get("environment") or {}
    versions = _distinct([env.get("code_version")] + [r.get("code_version") for r in src.results])
    return ", ".join(versions) or None


def _recipes(src: MetaSource) -> Optional[str]:
    plan = (src.manifest or {}).get("plan") or {}
    if plan.get("recipe"):
        text = str(plan["recipe"])
        if plan.get("recipe_overrides"):
            text += " with " + ", ".join(f"{k}={v}" for k, v in sorted(plan["recipe_overrides"].items()))
        if (src.manifest or {}).get("quick"):
            text += " (quick plan)"
        return text
    recipes = [read_recipe(run) for run in src.runs.values()]
    return ", ".join(_distinct([r.get("name") for r in recipes if r is not None])) or None


def _seeds(src: MetaSource) -> Optional[str]:
    seeds = (src.manifest or {}).get("seeds")
    if not seeds:
        seeds = sorted({int(r["seed"]) for r in src.results if isinstance(r.get("seed"), int)})
    return ", ".join(str(s) for s in seeds) or None


def _machine(src: MetaSource) -> Optional[str]:
    env = (src.manifest or {}).get("environment") or {}
    mach = env.get("machine") or {}
    parts = [str(mach[k]) for k in ("platform", "processor") if mach.get(k)]
    if mach.get("cpu_count"):
        parts.append(f"{mach['cpu_count']} CPUs")
    devices = _distinct([env.get("device_name") or env.get("device")] + [r.get("device") for r in src.results])
    if devices:
        parts.append("device " + ", ".join(devices))
    torch_v = _distinct([(env.get("packages") or {}).get("torch")] +
                        [(r.get("packages") or {}).get("torch") for r in src.results])
    if torch_v:
        parts.append("torch " + ", ".join(torch_v))
    return "; ".join(parts) or None


def _wall_times(src: MetaSource) -> Optional[str]:
    timings = (src.manifest or {}).get("timings") or {}
    stages = [(k.split("/", 1)[1], v) for k, v in timings.items() if k.startswith("stage/")]
    if stages:
        text = ", ".join(f"{name} {float(v):.1f} s" for name, v in stages)
        if "total" in timings:
            text += f"; total {float(timings['total']):.1f} s"
        return text
    if "total" in timings:
        return f"total {float(timings['total']):.1f} s"
    evals = [float((r.get("timings") or {}).get("total_s", 0.0)) for r in src.results]
    return f"evaluation {sum(evals):.1f} s (sum over {len(evals)} result files)" if evals else None


def _world(src: MetaSource) -> Optional[str]:
    from ..utils.io import read_json

    plan = (src.manifest or {}).get("plan") or {}
    info: Dict[str, Any] = {}
    if src.world is not None and (Path(src.world) / "world.json").is_file():
        info = read_json(Path(src.world) / "world.json")
    size = info.get("size") or plan.get("world_size")
    if not size:
        return None
    text = f"{size}"
    image_size = info.get("image_size") or plan.get("image_size")
    if image_size:
        text += f", {image_size}×{image_size} px images"
    seed = info.get("seed", plan.get("world_seed"))
    if seed is not None:
        text += f", world seed {seed}"
    if info.get("splits"):
        text += " (" + ", ".join(f"{k} {v}" for k, v in info["splits"].items()) + " images)"
    return text


#: the metadata fields a report lists, in order: (label, reader); a field whose reader finds nothing is left out
META_FIELDS: Tuple[Tuple[str, Callable[[MetaSource], Optional[str]]], ...] = (
    ("date", _date),
    ("code version", _code_version),
    ("recipe", _recipes),
    ("seeds", _seeds),
    ("machine", _machine),
    ("wall time per stage", _wall_times),
    ("world size", _world),
)


def run_metadata(results: Sequence[Mapping[str, Any]], manifest: Optional[Mapping[str, Any]] = None,
                 runs: Optional[Mapping[str, Path]] = None, world: Optional[Path] = None) -> List[Tuple[str, str]]:
    """``[(label, text)]`` for each field of :data:`META_FIELDS` that the manifest or the results record.

    The manifest (``reproduce.json``: plan, seeds, timings, environment) is preferred; without one the result JSONs
    give date (their timestamps), code version, seeds, device and evaluation time, the run directories' ``recipe.yaml``
    the recipe names and the world's ``world.json`` its size.
    """
    src = MetaSource(dict(manifest) if manifest else None, [dict(r) for r in results], dict(runs or {}),
                     Path(world) if world is not None else None)
    out = []
    for label, read in META_FIELDS:
        text = read(src)
        if text:
            out.append((label, text))
    return out
