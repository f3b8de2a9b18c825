"""Benchmark: producing LOUPE's interaction targets — exact vs Monte-Carlo vs the neural module ``g_θ``.

On one batch of a synthetic world, for both levels (token level: the patches of each candidate box in the spec's
token game — by default the masked image re-encoded by the tower; semantics level: region–phrase pairs), one run
measures:

* the time to produce all interaction targets of the batch with exact enumeration (semantics level only: the
  token-level game has one player per patch), with Monte-Carlo sampling, and with ``g_θ`` (features + forward);
* the Spearman ρ of each against a reference ``r`` — the exact targets where the game has at most
  :data:`EXACT_MAX_PLAYERS` players (the semantics level), else a high-sample Monte-Carlo estimate — **pooled** (one
  ρ over every valid coalition of the batch) and **within image** (:func:`within_image_rho`: the mean over images
  of the ρ over one image's coalitions — what ℒ_TSA / ℒ_FSA use, since both compare targets within an image).

**Model state.** ``run=RUN_DIR`` loads a trained LOUPE run (``loupe-bench train`` / ``reproduce synthetic``) through
the normal model loading path, with the ``g_θ`` it trained (``tsa_estimator`` / ``fsa_estimator``); the batches come
from the run's recorded training data (``run.json``), else ``world``. Every figure then says ``model_state:
"trained (RUN, step N)"``. Without ``run`` the spec is freshly initialised and ``g_θ`` is trained here on Monte-Carlo
targets of other batches: every figure says ``model_state: "untrained"`` (its games are a random network's).

**Which M.** Each level is compared with sampling at the ``M`` its training uses: the token level at
``loupe.tsa.num_samples`` (else ``loupe.num_samples``), the semantics level at ``loupe.num_samples``. Targets: ρ ≥
0.9 and ≥ 20× faster than sampling at that ``M``. Beside it, the speed-up **at matched accuracy**
(:func:`matched_accuracy_speedup`): against the cheapest ``M`` of a ladder whose ρ reaches ``g_θ``'s, with an
interval on that ``M`` from ``draws`` independent estimates per rung.

**Cost of ``g_θ``.** Untrained: the seconds this bench spends on its Monte-Carlo training targets and its fit.
Trained: none here; the ℒ_NSI share of the training step when the run's ``log.jsonl`` times it (a per-step field
:data:`NSI_TIME_KEY`), else "not measured"; and the speed-up with the routing the run logged
(:func:`routing_speedup`).
"""
from __future__ import annotations

import copy
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch

from ..errors import DataError, SpecError
from ..utils.run_files import RUN_FILE, read_log, run_record
from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import (bench_world, build_tiny, figure, interleaved_times, synced, time_call, to_device,
                     torch_threads, world_batches)

LEVELS = ("tsa", "fsa")
#: the two accuracies every comparison reports: pooled over the batch, and the mean within-image ρ
KINDS = ("pooled", "image")
DEFAULT_SPEC = "loupe-tiny"
#: a per-step field of a run's ``log.jsonl``: seconds of the step spent on ℒ_NSI (routing, the routed sampling,
#: ``g_θ``'s forward and backward); the training engine does not write it today
NSI_TIME_KEY = "nsi_time_s"
#: phrase slots of the batches :func:`~loupe_bench.bench.common.world_batches` builds (the collator's default)
BENCH_PHRASE_SLOTS = 8
#: the fraction of a run's last logged steps whose routing and monitor values are averaged
LOG_TAIL = 0.1


@torch.no_grad()
def _problems(model, batch):
    emb = model.embed(batch)
    boxes, logits = model.regions_all(emb["image_tokens"])
    return model.tsa_problem(emb, boxes, logits, batch), model.fsa_problem(emb, batch, boxes, logits), emb


def mc_reference(game, coalitions: torch.Tensor, valid: torch.Tensor, total: int, target: str = "interaction",
                 chunk: int = 128, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """High-sample Monte-Carlo reference ``[G, C]`` (0 at invalid coalitions): the mean of ``R`` independent
    estimates of ``min(chunk, total)`` samples each, ``R = max(1, total // chunk)`` (bounded memory per call).

    ``ref = (1/R) Σ_r Î_r``, each ``Î_r`` from :data:`~loupe_bench.shapley.estimators.SAMPLED_TARGETS` ``[target]``.
    """
    from ..shapley.estimators import SAMPLED_TARGETS, check_target

    sampler = SAMPLED_TARGETS[check_target(target)]
    reps = max(1, total // chunk)
    acc = None
    for _ in range(reps):
        m = sampler(game, coalitions, valid, min(chunk, total), generator).mean
        acc = m if acc is None else acc + m
    return acc / reps


# -- accuracy: pooled and within-image ρ, intervals over draws, the crossing M ------------------------------------
def _flat_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``x[valid]`` when ``x`` is ``[G, C]``, else ``x`` flattened (it must then hold one value per valid coalition)."""
    if x.shape == valid.shape:
        return x[valid].float()
    if x.numel() != int(valid.sum()):
        raise ValueError(f"predictions must be [G, C] = {tuple(valid.shape)} or one per valid coalition "
                         f"({int(valid.sum())}), got {tuple(x.shape)}")
    return x.reshape(-1).float()


def _grid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``x`` as a ``[G, C]`` float grid: as it is when ``[G, C]``, else its values (one per valid coalition, in
    ``valid`` order) placed at the valid coalitions, 0 elsewhere."""
    if x.shape == valid.shape:
        return x.float()
    out = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
    out[valid] = _flat_valid(x, valid).to(valid.device)
    return out


def within_image_rho(pred: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor, min_coalitions: int = 4) -> float:
    """Mean within-game Spearman ρ: ``ρ_img = (1/|R|) Σ_{g∈R} ρ(pred[g, V_g], ref[g, V_g])``.

    ``V_g`` are the valid coalitions of game row ``g`` (in the bench one row is one image), ``R`` the rows with
    ``|V_g| ≥ min_coalitions`` whose ρ is defined (neither side constant on ``V_g``); ``nan`` when ``R`` is empty.
    ``ρ`` is Pearson's correlation of average ranks (ties share their mean rank), computed for all rows at once:
    invalid entries are ranked after every valid one, so a valid entry's rank is its rank within its row's ``V_g``.

    Args:
        pred, ref: ``[G, C]``, or one value per valid coalition in ``valid`` order.
        valid: ``[G, C]`` bool.
    """
    from scipy.stats import rankdata

    v = valid.detach().cpu().bool()
    if v.numel() == 0:
        return float("nan")

    def ranks(x: torch.Tensor) -> torch.Tensor:
        a = _grid(x, valid).detach().cpu().double().masked_fill(~v, float("inf"))
        return torch.as_tensor(rankdata(a.numpy(), axis=1))

    w = v.double()
    n = w.sum(1, keepdim=True)
    da, db = ((r - (r * w).sum(1, keepdim=True) / n.clamp_min(1)) * w for r in (ranks(pred), ranks(ref)))
    den = ((da**2).sum(1) * (db**2).sum(1)).sqrt()
    keep = (n[:, 0] >= min_coalitions) & (den > 0)
    if not bool(keep.any()):
        return float("nan")
    return float(((da * db).sum(1)[keep] / den[keep]).mean())


def rho_pair(pred: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor) -> Dict[str, float]:
    """``{"pooled": ρ over every valid coalition, "image": within_image_rho}`` of ``pred`` against ``ref``."""
    from ..shapley import spearman

    return {"pooled": spearman(_flat_valid(pred, valid), _flat_valid(ref, valid)),
            "image": within_image_rho(pred, ref, valid)}


def mean_interval(values: Sequence[float], level: float = 0.95) -> Tuple[float, float, float]:
    """``(m, m − h, m + h)``: the mean of ``D`` values and its Student-t confidence interval,
    ``h = t_{(1+level)/2, D−1} · s / √D`` (``s`` the sample standard deviation). Undefined values (nan) are left
    out; with ``D = 1`` no spread is measurable and ``h = 0``; with none, all three are nan."""
    from scipy.stats import t as student_t

    x = [float(v) for v in values if v == v]
    if not x:
        return float("nan"), float("nan"), float("nan")
    m = sum(x) / len(x)
    if len(x) < 2:
        return m, m, m
    h = float(student_t.ppf((1 + level) / 2, len(x) - 1)) * statistics.stdev(x) / math.sqrt(len(x))
    return m, m - h, m + h


class Crossing(NamedTuple):
    """Where Monte-Carlo reaches a target ρ on a ladder (each ``None`` when no rung does).

    Attributes:
        low: the smallest ``M`` whose interval's upper bound reaches the target (the optimistic crossing).
        point: the smallest ``M`` whose mean reaches it.
        high: the smallest ``M`` whose interval's lower bound reaches it (the conservative crossing).
    """

    low: Optional[int]
    point: Optional[int]
    high: Optional[int]


def crossing(summary: Mapping[int, Tuple[float, float, float]], target: float) -> Crossing:
    """The crossing ``M`` of a ladder ``{M: (mean, lower, upper)}`` (:func:`mean_interval`) at ``target``:

    ``low = min{M : upper_M ≥ target}``, ``point = min{M : mean_M ≥ target}``,
    ``high = min{M : lower_M ≥ target}``. Since ``lower ≤ mean ≤ upper``, ``low ≤ point ≤ high`` whenever they
    exist; a nan target is never reached."""

    def first(i: int) -> Optional[int]:
        return next((m for m in sorted(summary) if summary[m][i] >= target), None)

    return Crossing(first(2), first(0), first(1))


def _ratio(t: float, t_neural: float) -> float:
    return t / t_neural if t_neural > 0 else float("inf")


def crossing_speedup(cross: Crossing, times: Mapping[int, float], neural_time: float,
                     largest: int) -> Dict[str, Any]:
    """The matched-accuracy speed-up of one crossing, with its interval.

    ``speedup = t(M_point) / t_N``; ``interval = [t(M_low) / t_N, t(M_high) / t_N]`` (sampling is cheaper at the
    optimistic crossing). A crossing beyond the ladder is replaced by the ``largest`` rung — a lower bound: then
    ``matched`` is false (no ``M_point``) and the upper end is ``None`` (no ``M_high``: unbounded above).
    """
    at = {k: (m if m is not None else largest) for k, m in cross._asdict().items()}
    return {"matched": cross.point is not None, "matched_samples": at["point"],
            "samples_interval": [cross.low, cross.high], "speedup": _ratio(times[at["point"]], neural_time),
            "speedup_interval": [_ratio(times[at["low"]], neural_time),
                                 None if cross.high is None else _ratio(times[cross.high], neural_time)]}


# -- the matched-accuracy speed-up ------------------------------------------------------------------------------
class MatchedAccuracy(NamedTuple):
    """Result of :func:`matched_accuracy_speedup`; the first nine fields are the pooled crossing's point.

    Attributes:
        neural_time_s: median time of one ``neural_predict_fn()`` call.
        mc_time_s: median time of one Monte-Carlo estimate with ``matched_samples`` contexts per coalition.
        neural_rho: pooled Spearman ρ of the neural predictions against the reference.
        mc_rho: mean pooled ρ over the draws of Monte-Carlo at ``matched_samples``.
        matched_samples: the pooled crossing's ``M_point``; the largest rung scanned when there is none.
        speedup: ``mc_time_s / neural_time_s``.
        matched: whether a rung's mean pooled ρ reached ``neural_rho`` (else ``speedup`` is a lower bound).
        ladder_rho: ``{M: mean pooled ρ}`` of every rung scanned.
        reference_samples: contexts per coalition of the reference (as passed, also with a given ``reference``).
        draws: independent Monte-Carlo estimates per rung.
        neural_rho_image: the neural predictions' within-image ρ (:func:`within_image_rho`).
        ladder: ``{M: {"pooled": [mean, lower, upper], "image": [...]}}`` (:func:`mean_interval` over the draws).
        kinds: ``{"pooled" | "image": {"neural_rho", "crossing": {low, point, high}}`` + :func:`crossing_speedup`
            (``speedup`` ``None`` when the neural ρ of that kind is undefined).
        mc_times: ``{M: median seconds}`` of the rungs timed (the crossings, and the largest rung scanned).
    """

    neural_time_s: float
    mc_time_s: float
    neural_rho: float
    mc_rho: float
    matched_samples: int
    speedup: float
    matched: bool
    ladder_rho: Dict[int, float]
    reference_samples: int
    draws: int
    neural_rho_image: float
    ladder: Dict[int, Dict[str, List[float]]]
    kinds: Dict[str, Dict[str, Any]]
    mc_times: Dict[int, float]

    def to_json(self) -> Dict[str, Any]:
        """The fields as JSON (``M`` keys as text)."""
        out = self._asdict()
        for key in ("ladder_rho", "ladder", "mc_times"):
            out[key] = {str(k): v for k, v in out[key].items()}
        return out


DEFAULT_LADDER = (2, 4, 8, 16, 32, 64, 128, 256, 512)


def _scan_ladder(sampler, game, coalitions, valid, ref, rungs: Sequence[int], draws: int,
                 neural: Mapping[str, float], generator, level: float) -> Dict[int, Dict[str, List[float]]]:
    """``{M: {"pooled": [ρ per draw], "image": [...]}}`` of ``draws`` independent estimates per rung, cheapest
    first, stopping after the first rung at which every kind with a defined neural ρ has reached its conservative
    crossing (some rung's lower bound ≥ that ρ); every rung when no kind has a defined ρ."""
    out: Dict[int, Dict[str, List[float]]] = {}
    live = [k for k in KINDS if neural[k] == neural[k]]
    with torch.no_grad():
        for m in rungs:
            pairs = [rho_pair(sampler(game, coalitions, valid, m, generator).mean, ref, valid)
                     for _ in range(max(1, draws))]
            out[m] = {k: [p[k] for p in pairs] for k in KINDS}
            if live and all(any(mean_interval(out[r][k], level)[1] >= neural[k] for r in out) for k in live):
                break
    return out


def matched_accuracy_speedup(game, coalitions: torch.Tensor, neural_predict_fn: Callable[[], torch.Tensor],
                             valid: Optional[torch.Tensor] = None, target: str = "interaction",
                             ladder: Sequence[int] = DEFAULT_LADDER, reference_samples: int = 1024,
                             reference: Optional[torch.Tensor] = None, draws: int = 5, repeat: int = 5,
                             generator: Optional[torch.Generator] = None, level: float = 0.95) -> MatchedAccuracy:
    """Speed-up of a neural predictor over Monte-Carlo **at matched accuracy**, for any game.

    With ``r`` a high-sample Monte-Carlo reference (``reference_samples`` contexts per coalition, or ``reference``
    given), for each kind of ρ (pooled Spearman over the valid coalitions; :func:`within_image_rho`):

    * ``ρ_N = ρ(neural_predict_fn(), r)``;
    * per rung ``M`` of the ladder (cheapest first), ``ρ_M^{(d)} = ρ(Î_M^{(d)}, r)`` for ``d = 1..D`` independent
      estimates (``D = draws``; independent of ``r``), summarised as their mean and Student-t interval
      (:func:`mean_interval` at ``level``); the scan stops once every kind with a defined ``ρ_N`` has a rung whose
      lower bound reaches it;
    * the crossing (:func:`crossing`): ``M_low ≤ M_point ≤ M_high``, the smallest ``M`` whose upper bound, mean,
      lower bound reaches ``ρ_N``;
    * ``speedup = t(Î_{M_point}) / t(neural_predict_fn)`` with interval ``[t(M_low), t(M_high)] / t_N``
      (:func:`crossing_speedup`); times are medians of ``repeat`` interleaved timed calls (device synchronised; one
      untimed warm-up round).

    Args:
        game: batched game ``v(masks[G, Q, n]) -> [G, Q]``.
        coalitions: ``[G, C, n]`` bool; one game row per image for the within-image ρ.
        neural_predict_fn: no-argument callable returning the predictions, ``[G, C]`` or one per valid coalition
            in ``coalitions[valid]`` order; it should include whatever the neural path costs (features + forward).
        valid: ``[G, C]`` bool (default: every coalition).
        target: the quantity, ``interaction`` or ``coalition_value`` (Monte-Carlo estimator and reference).
        ladder: Monte-Carlo sample counts to try.
        reference_samples: contexts per coalition of the reference (when ``reference`` is not given).
        reference: a precomputed reference, ``[G, C]`` or one per valid coalition.
        draws: independent Monte-Carlo estimates per rung.
        repeat: timed calls of each side.
        generator: RNG of the reference and the ladder estimates.
        level: confidence level of the intervals over draws.
    """
    from ..shapley.estimators import SAMPLED_TARGETS, check_target

    sampler = SAMPLED_TARGETS[check_target(target)]
    if not ladder:
        raise ValueError("matched_accuracy_speedup needs a non-empty ladder")
    if valid is None:
        valid = torch.ones(coalitions.shape[:2], dtype=torch.bool, device=coalitions.device)
    if reference is None:
        reference = mc_reference(game, coalitions, valid, reference_samples, target, generator=generator)
    ref = _grid(reference, valid)
    neural = rho_pair(neural_predict_fn(), ref, valid)
    scanned = _scan_ladder(sampler, game, coalitions, valid, ref, sorted({int(m) for m in ladder}), draws, neural,
                           generator, level)
    summary = {k: {m: mean_interval(d[k], level) for m, d in scanned.items()} for k in KINDS}
    cross = {k: crossing(summary[k], neural[k]) for k in KINDS}
    timed = sorted({m for c in cross.values() for m in c if m is not None} | {max(scanned)})
    mc_times, t_nn = _time_rungs(sampler, game, coalitions, valid, timed, neural_predict_fn, repeat)
    return _matched_result(summary, neural, cross, mc_times, t_nn, int(reference_samples), max(1, int(draws)))


def _matched_result(summary, neural, cross, mc_times, t_nn, reference_samples, draws) -> MatchedAccuracy:
    """The :class:`MatchedAccuracy` of a scanned ladder: each kind's crossing speed-up (``None`` where its neural
    ρ is undefined) and the pooled crossing's point in the first fields."""
    rungs = sorted(summary["pooled"])
    kinds = {}
    for k in KINDS:
        kinds[k] = {"neural_rho": neural[k], "crossing": cross[k]._asdict(),
                    **crossing_speedup(cross[k], mc_times, t_nn, rungs[-1])}
        if neural[k] != neural[k]:
            kinds[k].update(speedup=None, speedup_interval=[None, None])
    m_star = kinds["pooled"]["matched_samples"]
    return MatchedAccuracy(
        neural_time_s=t_nn, mc_time_s=mc_times[m_star], neural_rho=neural["pooled"],
        mc_rho=summary["pooled"][m_star][0], matched_samples=m_star, speedup=_ratio(mc_times[m_star], t_nn),
        matched=kinds["pooled"]["matched"], ladder_rho={m: summary["pooled"][m][0] for m in rungs},
        reference_samples=reference_samples, draws=draws, neural_rho_image=neural["image"],
        ladder={m: {k: list(summary[k][m]) for k in KINDS} for m in rungs}, kinds=kinds, mc_times=mc_times)


def _time_rungs(sampler, game, coalitions, valid, rungs: Sequence[int], neural_predict_fn,
                repeat: int) -> Tuple[Dict[int, float], float]:
    """``({M: median s}, neural median s)``: one Monte-Carlo estimate at each rung and one neural call, timed in
    ``repeat`` interleaved rounds after one untimed round (device synchronised)."""
    device = str(coalitions.device)
    fns = {f"M{m}": synced(lambda m=m: sampler(game, coalitions, valid, m).mean, device) for m in rungs}
    fns["neural"] = synced(neural_predict_fn, device)
    with torch.no_grad():
        times = interleaved_times(fns, max(1, repeat), warmup_rounds=1)
    return {m: statistics.median(times[f"M{m}"]) for m in rungs}, statistics.median(times["neural"])


# -- a trained run: its model, its g_θ, its data, its log ---------------------------------------------------------
def _neural_modules(model) -> Optional[Dict[str, Any]]:
    """``{level: g_θ}`` of a LOUPE model whose both estimators hold a neural module, else ``None``."""
    from ..shapley import NeuralInteraction

    mods = {lvl: getattr(getattr(model, f"{lvl}_estimator", None), "module", None) for lvl in LEVELS}
    ok = all(isinstance(m, NeuralInteraction) for m in mods.values())
    return mods if ok and callable(getattr(model, "tsa_problem", None)) else None


def load_run(run: Any) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """A trained LOUPE run folder, loaded as ``loupe-bench eval --model RUN_DIR`` loads it
    (:func:`~loupe_bench.models.sources.load_source`: the final weights, or the checkpoint ``checkpoints/latest``
    names), with what the bench needs from its record: ``(model, info)``.

    ``info``: ``run`` (the folder as given), ``step``, ``finished``, ``model_state`` (``"trained (RUN, step N)"``),
    ``data`` (``run.json``'s ``data``), ``max_phrases`` (the recipe's ``data.max_phrases``: ``g_θ``'s semantics-level
    features depend on the phrase slots).

    Raises:
        DataError: no such folder; not a training run of loupe-bench; a run of a model without LOUPE's neural
            interaction module (e.g. CLIP, or ``loupe.shapley: sampling``).
    """
    from ..models.sources import load_source

    path = Path(str(run)).expanduser()
    if not path.is_dir():
        raise DataError("no such run folder (--run takes the output folder of `loupe-bench train`)", file=str(path))
    record = run_record(path)
    if record is None:
        raise DataError(f"not a loupe-bench training run (no {RUN_FILE} of ours)", file=str(path))
    loaded = load_source(str(path))
    if _neural_modules(loaded.model) is None:
        raise DataError(f"a run of {loaded.name!r} ({type(loaded.model).__name__}), not of a LOUPE model with a "
                        "neural interaction module (loupe.shapley: neural); bench shapley --run needs one",
                        file=str(path))
    state = loaded.run or {}
    step = state.get("checkpoint_step")
    recipe_data = (record.get("recipe") or {}).get("data") or {}
    return loaded.model, {"run": str(run), "step": step, "finished": bool(state.get("finished")),
                          "model_state": f"trained ({run}, step {step})", "data": record.get("data") or {},
                          "max_phrases": recipe_data.get("max_phrases", 8)}


def _run_world(info: Dict[str, Any], world: Optional[str]) -> Tuple[str, str]:
    """``(data reference, where it came from)``: the run's recorded training data (``run.json``'s
    ``data.source``, read when its ``data.path`` exists here), else ``world``; neither is a :class:`DataError`."""
    data = info["data"]
    source, path = data.get("source"), data.get("path")
    if isinstance(source, str) and isinstance(path, str) and Path(path).exists():
        if world is not None and Path(str(world)).resolve() != Path(path).resolve().parent:
            sys.stderr.write(f"warning: bench shapley: using the run's own training data {source}; --world "
                             f"{world} is not used\n")
        return source, "run.json"
    if world is not None:
        return str(world), "--world (the run's recorded data is not readable here)"
    raise DataError(f"the run's training data ({source or 'not recorded'}) is not readable here; pass --world",
                    file=info["run"])


def _phrase_slots(batch: Dict[str, Any], slots: int) -> Dict[str, Any]:
    """The batch with ``slots`` phrase slots, as the training collator builds it with ``max_phrases = slots``
    (it keeps a caption's first phrases in order, so this is the first ``slots`` slots)."""
    out = dict(batch)
    for key in ("phrase_token_mask", "phrase_mask", "phrase_boxes"):
        if key in out:
            out[key] = out[key][:, :slots]
    return out


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


#: the training log's figures of ``g_θ``'s accuracy (per level; :meth:`NeuralEstimator._monitor
#: <loupe_bench.shapley.estimators.NeuralEstimator._monitor>`)
LOGGED_ACCURACY = ("nsi_rho", "nsi_rho_image", "nsi_spearman", "nsi_r", "nsi_r_corrected")


def read_training_log(run_dir: Any) -> Dict[str, Any]:
    """What the run's ``log.jsonl`` says about ``g_θ`` in training (``{}`` without a log).

    * ``nsi_step_share``: ``mean_t nsi_time_s_t / step_time_s_t`` over the rows holding both (:data:`NSI_TIME_KEY`),
      ``None`` when no row times ℒ_NSI;
    * per level, ``{level}_routed_fraction`` (coalitions sent to sampling) and each of :data:`LOGGED_ACCURACY`
      (``{level}_nsi_rho`` ...): means over the rows of the last :data:`LOG_TAIL` of the
      logged steps that hold them (at least one row).

    Read with :func:`~loupe_bench.utils.run_files.read_log`; rows that are not a JSON object of finite numbers (a
    row cut by a kill, a nan) are left out and counted in ``skipped_rows``.
    """
    log = read_log(Path(str(run_dir)))
    if log is None:
        return {}
    rows, skipped = log
    shares = [r[NSI_TIME_KEY] / r["step_time_s"] for r in rows
              if _number(r.get(NSI_TIME_KEY)) and _number(r.get("step_time_s")) and r["step_time_s"] > 0]
    out: Dict[str, Any] = {"rows": len(rows), "skipped_rows": skipped,
                           "nsi_step_share": sum(shares) / len(shares) if shares else None}
    tail = rows[-max(1, int(math.ceil(LOG_TAIL * len(rows)))):] if rows else []
    for lvl in LEVELS:
        for key in ("routed_fraction",) + LOGGED_ACCURACY:
            vals = [r[f"{lvl}_{key}"] for r in tail if _number(r.get(f"{lvl}_{key}"))]
            out[f"{lvl}_{key}"] = sum(vals) / len(vals) if vals else None
    return out


def routing_speedup(t_sampling: float, t_neural: float, routed_fraction: float) -> float:
    """The speed-up over sampling every coalition when a fraction ``f`` of them is still sampled, as the neural
    estimator routes in training: ``t_M / (t_N + f · t_M)`` (sampling cost taken as proportional to the coalitions
    sampled; the monitor's held-out samples are left out)."""
    return _ratio(t_sampling, t_neural + routed_fraction * t_sampling)


# -- the benchmark ----------------------------------------------------------------------------------------------
def _train_neural(feats: torch.Tensor, targets: torch.Tensor, stderr: torch.Tensor, cfg, steps: int, seed: int):
    from ..shapley import NeuralInteraction

    torch.manual_seed(seed)
    cfg = copy.deepcopy(cfg)
    cfg.buffer_size = max(cfg.buffer_size, feats.shape[0])
    mod = NeuralInteraction(feats.shape[1], cfg).to(feats.device)
    mod.add(feats, targets, stderr)
    opt = torch.optim.Adam(mod.parameters(), lr=3e-3)
    g = torch.Generator(device=feats.device).manual_seed(seed)
    for _ in range(steps):
        x, y, s = mod.replay(g)
        loss = mod.nll(x, y, s)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return mod.eval()


@BENCHMARKS.register("shapley", help="interaction targets: exact vs sampling vs neural (time ratio, Spearman rho)")
def shapley(repeat: int = 3, device: str = "cpu", spec: Optional[str] = None, batch_size: int = 4,
            train_batches: int = 16, samples: Optional[Sequence[int]] = None, reference_samples: int = 256,
            fsa_regions: Optional[int] = None, train_steps: int = 1500, seed: int = 0, world: Optional[str] = None,
            threads: Optional[int] = 1, num_samples: Optional[int] = None,
            matched_ladder: Sequence[int] = (2, 4, 8, 16, 32, 64, 128), matched_draws: int = 5,
            run: Optional[str] = None) -> Dict[str, Any]:
    """Time and accuracy of producing all interaction targets of one batch (see the module docstring).

    The defaults are sized for the tower-evaluated token game on one CPU thread (every Monte-Carlo context
    re-encodes a masked image, ~0.3 ms for the tiny ViT): 4 images per batch, a 256-context token-level reference
    (its own noise bounds every ρ there below 1; the semantics level's reference is exact). On loupe-tiny trained
    300 steps: about 25 s.

    Args:
        run: a trained LOUPE run folder; its model, its ``g_θ`` and its training data (else ``world``) are measured.
            Without it: ``spec`` (default ``loupe-tiny``) freshly initialised, ``g_θ`` trained here for
            ``train_steps`` on the Monte-Carlo targets of ``train_batches`` batches (``model_state: untrained``).
        world: the data of the batches (a synthetic world folder or a data reference; default: a tiny world
            generated here, or the run's own).
        batch_size: images per batch, all of them getting both levels' problems (``tsa/fsa.target_images``).
        fsa_regions: regions per image of the semantics level (default the spec's; not with ``run``: ``g_θ``'s
            features depend on it).
        samples: sampling ``M`` timed besides each level's own (:func:`level_samples`).
        num_samples: overrides both levels' ``M``.
        matched_ladder, matched_draws: the ladder and the independent draws per rung of the matched-accuracy
            speed-up (:func:`matched_accuracy_speedup`, against the same reference; an empty ladder skips it).
        threads: ``torch.set_num_threads`` for the whole run on CPU (1: on a shared machine oversubscribed threads
            make small kernels 10-50x slower and the timings meaningless); restored afterwards.
    """
    with torch_threads(threads, device) as n_threads:
        setup = _setup(spec, run, world, seed, batch_size, fsa_regions, num_samples, train_batches, device)
        opts = _LevelOptions(repeat, device, tuple(samples or ()), reference_samples, train_steps, seed,
                             tuple(matched_ladder or ()), matched_draws)
        rec = _shapley(setup, opts)
    rec.update(threads=n_threads, environment=environment_info(device))
    return rec


class _LevelOptions(NamedTuple):
    """What every level of one :func:`shapley` run is measured with (its arguments)."""

    repeat: int
    device: str
    samples: Sequence[int]
    reference_samples: int
    train_steps: int
    seed: int
    matched_ladder: Sequence[int]
    matched_draws: int


class _Setup(NamedTuple):
    """The model measured, its batches (the last one is measured; the others train an untrained ``g_θ``) and what
    the record says about them (``model_state``, ``spec``, ``world`` ...); ``g`` holds a trained run's ``g_θ``."""

    model: Any
    batches: List[Dict[str, Any]]
    info: Dict[str, Any]
    g: Optional[Dict[str, Any]]


def level_samples(cfg) -> Dict[str, int]:
    """The ``M`` each level's training uses (a LOUPE model's ``cfg``): ``tsa`` ``loupe.tsa.num_samples`` (else
    ``loupe.num_samples``), ``fsa`` ``loupe.num_samples``."""
    return {"tsa": int(cfg.tsa.num_samples or cfg.num_samples), "fsa": int(cfg.num_samples)}


def _setup(spec, run, world, seed, batch_size, fsa_regions, num_samples, train_batches, device) -> _Setup:
    """The model, the batches and the record's description of them (see :func:`shapley`)."""
    torch.manual_seed(seed)
    if run is None:
        if train_batches < 1:
            raise SpecError("bench shapley: train_batches must be >= 1 without --run (g_θ is trained on them)")
        world_path = bench_world(world, seed)
        over = {"tsa__target_images": batch_size, "fsa__target_images": batch_size}
        if fsa_regions:
            over["fsa__num_regions"] = int(fsa_regions)
        if num_samples:
            over.update(num_samples=int(num_samples), tsa__num_samples=int(num_samples))
        model = build_tiny(spec or DEFAULT_SPEC, seed, world_path, **over)
        info = {"model_state": "untrained", "spec": spec or DEFAULT_SPEC, "world": str(world_path)}
        batches = world_batches(model, train_batches + 1, batch_size, seed, world_path)
        return _Setup(model.eval().to(device), [to_device(b, device) for b in batches], info, None)
    if spec is not None or fsa_regions is not None:
        raise SpecError("bench shapley: spec and fsa_regions come from the run with --run (the trained g_θ's "
                        "features depend on them); leave them unset")
    model, info = load_run(run)
    data, where = _run_world(info, world)
    cfg = copy.deepcopy(model.cfg)
    cfg.tsa.target_images = cfg.fsa.target_images = batch_size
    if num_samples:
        cfg.num_samples = cfg.tsa.num_samples = int(num_samples)
    model.cfg = cfg
    slots = info["max_phrases"]
    if type(slots) is not int:
        raise DataError(f"run.json: recipe.data.max_phrases must be an integer, got {slots!r:.40}", file=info["run"])
    slots = max(1, slots)
    if slots > BENCH_PHRASE_SLOTS:
        raise DataError(f"the run was trained with data.max_phrases = {slots}; the bench's batches hold "
                        f"{BENCH_PHRASE_SLOTS} phrase slots, and g_θ's features depend on the count", file=info["run"])
    batch = world_batches(model, train_batches + 1, batch_size, seed, Path(data))[-1]
    info.update(spec=str(model.spec.get("name")), world=data, world_from=where)
    return _Setup(model.eval().to(device), [to_device(_phrase_slots(batch, slots), device)], info,
                  _neural_modules(model))


def _shapley(setup: _Setup, opts: _LevelOptions) -> Dict[str, Any]:
    """The run behind :func:`shapley`: ``g_θ`` (the run's, or trained here on Monte-Carlo targets of the other
    batches), one record per level on the last batch, the figures."""
    model, info = setup.model, setup.info
    m_level = level_samples(model.cfg)
    # the token level estimates what ℒ_TSA uses (loupe.tsa.score), the semantics level the pair interaction
    targets = {"tsa": model.cfg.tsa.score, "fsa": "interaction"}
    eval_batch, train = setup.batches[-1], setup.batches[:-1]
    if setup.g is None:
        g, cost = _fit_neural(model, train, targets, m_level, opts)
    else:
        g, cost = setup.g, _run_cost(info["run"])
    tsa, fsa, emb = _problems(model, eval_batch)
    levels = {}
    for name, pr in (("tsa", tsa), ("fsa", fsa)):
        if pr is None:
            raise DataError("the batch has no phrases: the semantics level needs captions with phrase spans",
                            file=info["world"])
        levels[name] = _level_record(model, name, pr, emb, targets[name], g[name], m_level[name], opts)
        levels[name]["g_training"] = cost[name]
    state = info["model_state"]
    figures = _shapley_figures(levels)
    for fig in figures:
        fig["model_state"] = state
    return {"name": "shapley", "model_state": state, "model": info, "spec": info["spec"],
            "batch_size": int(eval_batch["pixels"].shape[0]), "num_samples": m_level, "levels": levels,
            "figures": figures}


def _fit_neural(model, train, targets, m_level, opts: _LevelOptions):
    """An untrained model's ``g_θ`` per level, fitted here on Monte-Carlo targets (``M`` of the level) of the
    training batches, and the seconds spent: ``({level: g_θ}, {level: cost})``."""
    data, target_s = _training_targets(model, train, targets, m_level)
    mods, cost = {}, {}
    for name in LEVELS:
        f, y, s = (torch.cat(x) for x in data[name])
        t0 = time.perf_counter()
        mods[name] = _train_neural(f, y, s, model.cfg.neural, opts.train_steps, opts.seed)
        fit_s = time.perf_counter() - t0
        cost[name] = {"source": "trained by this bench", "targets_s": target_s[name], "fit_s": fit_s,
                      "bench_s": target_s[name] + fit_s, "train_coalitions": int(f.shape[0]),
                      "train_batches": len(train), "train_steps": opts.train_steps, "nsi_step_share": None,
                      "nsi_step_share_note": "no training run"}
    return mods, cost


def _run_cost(run: str) -> Dict[str, Dict[str, Any]]:
    """A trained run's ``g_θ`` cost per level: nothing spent here; the ℒ_NSI share of its training step and the
    routing it logged (:func:`read_training_log`)."""
    log = read_training_log(run)
    share = log.get("nsi_step_share")
    note = ("mean of nsi_time_s / step_time_s over the logged steps (all of ℒ_NSI, both levels)" if share is not None
            else f"not measured: the run's log.jsonl has no per-term timing ({NSI_TIME_KEY})")
    return {lvl: {"source": f"trained in the run {run}", "bench_s": 0.0, "nsi_step_share": share,
                  "nsi_step_share_note": note, "log_rows": log.get("rows", 0),
                  "routed_fraction": log.get(f"{lvl}_routed_fraction"),
                  **{f"logged_{k}": log.get(f"{lvl}_{k}") for k in LOGGED_ACCURACY}}
            for lvl in LEVELS}


def _training_targets(model, train: List[Dict[str, torch.Tensor]], targets: Dict[str, str], m_level: Dict[str, int]):
    """Per level, ``g_θ``'s training data from the training batches — (features, Monte-Carlo means, their standard
    errors) of every valid coalition, ``m_level[level]`` contexts each, one list entry per batch — and the seconds
    spent sampling them."""
    from rich.progress import Progress

    from ..shapley.estimators import SAMPLED_TARGETS

    data: Dict[str, Any] = {"tsa": ([], [], []), "fsa": ([], [], [])}
    spent = {"tsa": 0.0, "fsa": 0.0}
    with Progress(transient=True) as progress:
        task = progress.add_task("MC targets for training g", total=len(train))
        for b in train:
            tsa, fsa, _ = _problems(model, b)
            for name, pr in (("tsa", tsa), ("fsa", fsa)):
                t0 = time.perf_counter()
                est = SAMPLED_TARGETS[targets[name]](pr.game, pr.coalitions, pr.valid, m_level[name])
                spent[name] += time.perf_counter() - t0
                data[name][0].append(pr.feats[pr.valid])
                data[name][1].append(est.mean[pr.valid].float())
                data[name][2].append(est.stderr[pr.valid].float())
            progress.advance(task)
    return data, spent


def _neural_predictor(model, name: str, pr, emb: Dict[str, torch.Tensor], mod) -> Callable[[], torch.Tensor]:
    """``g_θ``'s predictions for the valid coalitions of the level's problem, paying for their features (the token
    level: including the game values among the features, as the spec's ``tsa.features`` says: the ones ``g_θ`` was
    trained on). The function's ``features`` attribute computes those features alone."""
    from ..models.loupe_heads import fsa_features, tsa_features

    if name == "tsa":
        t_img = pr.coalitions.shape[0]
        toks, text = emb["image_tokens"][:t_img], emb["text_pooled"][:t_img]
        members, cand = pr.coalitions, pr.cand

        def features():
            stats = model.game_stats(pr.game, members, model.cfg.tsa.features)
            return tsa_features(toks, text, members, cand, stats)[pr.valid]
    else:
        region, phrase, pv = pr.feat_region, pr.feat_phrase, pr.phrase_valid

        def features():
            sim = region @ phrase.transpose(1, 2)
            f2 = fsa_features(sim, region, phrase, pv)
            return f2.reshape(sim.shape[0], -1, f2.shape[-1])[pr.valid]

    def neural():
        with torch.no_grad():
            return mod.predict(features())[0]

    neural.features = features
    return neural


def _level_record(model, name: str, pr, emb, target: str, mod, m_level: int, opts: _LevelOptions) -> Dict[str, Any]:
    """One level's record: sampling at the level's ``M`` (and ``opts.samples``) and ``g_θ`` timed in interleaved
    rounds, their ρ (pooled, within image) against the reference (:func:`_reference`), the matched-accuracy
    speed-up and the speed-up over sampling at the level's ``M``."""
    from ..shapley.estimators import SAMPLED_TARGETS

    sampler = SAMPLED_TARGETS[target]
    ref, rec = _reference(pr, target, opts)
    rec.update(coalitions=int(pr.valid.sum()), images=int(pr.valid.shape[0]), players=int(pr.coalitions.shape[-1]),
               target=target, game=type(pr.game).__name__, num_samples=m_level)
    fns: Dict[str, Any] = {}
    for m in sorted({m_level, *map(int, opts.samples)}):
        fns[f"sampling_M{m}"] = synced(
            lambda m=m, sampler=sampler, pr=pr: sampler(pr.game, pr.coalitions, pr.valid, m).mean, opts.device)
    neural = _neural_predictor(model, name, pr, emb, mod)
    fns["neural"] = synced(neural, opts.device)
    rec.update(_timed_estimates(fns, pr.valid, ref, opts.repeat))
    if opts.matched_ladder:
        ma = matched_accuracy_speedup(pr.game, pr.coalitions, neural, valid=pr.valid, target=target,
                                      ladder=opts.matched_ladder, reference_samples=opts.reference_samples,
                                      reference=ref, draws=opts.matched_draws, repeat=max(opts.repeat, 5))
        rec["matched_accuracy"] = ma.to_json()
    rec["monitor_check"] = monitor_check(sampler, pr, neural, ref, m_level, max(2, opts.matched_draws or 5), mod)
    key = f"sampling_M{m_level}"
    rec["speedup_vs_sampling"] = rec[key]["time_s"] / rec["neural"]["time_s"]
    rec["speedup_vs_sampling_best"] = rec[key]["min_time_s"] / rec["neural"]["min_time_s"]
    return rec


def monitor_check(sampler, pr, neural_fn: Callable[[], torch.Tensor], ref: torch.Tensor, m: int,
                  draws: int, mod=None) -> Dict[str, Any]:
    """Does the training monitor's figure say how accurate ``g_θ`` is? Pooled Pearson r of ``g_θ``'s predictions
    against the reference (``r_reference``, the figure it stands for) beside, over ``draws`` Monte-Carlo estimates at
    the training ``M`` (what training compares with), the raw r against them and the attenuation-corrected r̂
    (:func:`~loupe_bench.shapley.neural.attenuation_corrected_r`, from each estimate's standard errors):
    ``[mean, lower, upper]`` (:func:`mean_interval`) of each. With ``g_θ``'s module ``mod``, also the r against the
    reference on the coalitions its routing leaves to ``μ`` (predicted standardised variance ≤ γ: where it
    supervises; ``r_reference_unrouted``, ``unrouted_fraction``)."""
    from ..shapley import attenuation_corrected_r

    mu = _flat_valid(neural_fn(), pr.valid)
    ref_v = _flat_valid(ref, pr.valid)
    r_ref, _ = attenuation_corrected_r(mu, ref_v, torch.zeros(mu.shape))
    extra: Dict[str, Any] = {}
    if mod is not None and hasattr(neural_fn, "features"):
        with torch.no_grad():
            keep = mod(neural_fn.features())[1].exp() <= mod.cfg.gamma
        r_kept = attenuation_corrected_r(mu[keep], ref_v[keep], torch.zeros(int(keep.sum())))[0]
        extra = {"unrouted_fraction": float(keep.float().mean()), "r_reference_unrouted": r_kept if _finite(r_kept)
                 else None}
    raw, corrected = [], []
    for _ in range(draws):
        est = sampler(pr.game, pr.coalitions, pr.valid, m)
        r, r_hat = attenuation_corrected_r(mu, est.mean[pr.valid].float(), est.stderr[pr.valid].float())
        raw.append(r)
        corrected.append(r_hat)
    corrected = [r for r in corrected if r == r]       # nan: the estimates at this M were mostly noise
    return {"num_samples": m, "draws": draws, "r_reference": r_ref, "r_sampled": list(mean_interval(raw)),
            "r_corrected": list(mean_interval(corrected)) if corrected else None, **extra}


def _timed_estimates(fns: Dict[str, Callable[[], torch.Tensor]], valid: torch.Tensor, ref: torch.Tensor,
                     repeat: int) -> Dict[str, Dict[str, float]]:
    """Median and best time of each method over ``max(repeat, 5)`` interleaved rounds (one call of each per round,
    after one untimed round, so load changes on a shared machine hit all alike), and the Spearman ρ (pooled and
    within image, :func:`rho_pair`) of one more estimate of each against ``ref`` (``[G, C]``)."""
    times = interleaved_times(fns, max(repeat, 5), warmup_rounds=1)
    out = {}
    for key, fn in fns.items():
        rho = rho_pair(fn(), ref, valid)
        out[key] = {"time_s": statistics.median(times[key]), "min_time_s": min(times[key]),
                    "spearman": rho["pooled"], "spearman_image": rho["image"]}
    return out


#: games of at most this many players are enumerated exactly (the semantics level: K regions + P phrase slots)
EXACT_MAX_PLAYERS = 16


def _reference(pr, target: str, opts: _LevelOptions) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """The level's reference ``[G, C]`` and what the record says of it.

    A game of at most :data:`EXACT_MAX_PLAYERS` players: the exact targets (a Monte-Carlo reference would cap
    every ρ with its own noise); the record's ``exact`` holds the time of one enumeration and the ρ of a
    ``reference_samples``-context Monte-Carlo reference against it. Larger games (the token level): the
    Monte-Carlo reference (:func:`mc_reference`)."""
    from ..shapley.estimators import EXACT_TARGETS

    mc = mc_reference(pr.game, pr.coalitions, pr.valid, opts.reference_samples, target)
    n = pr.coalitions.shape[-1]
    info: Dict[str, Any] = {"reference_samples": opts.reference_samples}
    if n > EXACT_MAX_PLAYERS:
        return _grid(mc, pr.valid), {**info, "reference": f"monte-carlo ({opts.reference_samples} contexts)"}
    exact = EXACT_TARGETS[target]
    t = time_call(synced(lambda: exact(pr.game, n, pr.coalitions), opts.device), repeat=1, warmup=0)
    ref = exact(pr.game, n, pr.coalitions).float() * pr.valid
    rho = rho_pair(mc, ref, pr.valid)
    info["exact"] = {"time_s": t["median_s"], "monte_carlo_reference_spearman": rho["pooled"],
                     "monte_carlo_reference_spearman_image": rho["image"]}
    return ref, {**info, "reference": "exact"}


_KIND_LABEL = {"pooled": "pooled rho", "image": "within-image rho"}


def _matched_label(name: str, kind: str, res: Dict[str, Any], ma: Dict[str, Any]) -> str:
    """``tsa neural speed-up at matched accuracy (pooled rho 0.93: M=16 in [8, 32] over 5 draws; 4.1-17x)``;
    ``≤2``: a crossing at the cheapest rung (it may lie below), ``>128``: none up to the largest rung."""
    rungs = sorted(int(m) for m in ma["ladder"])

    def at(m: Optional[int]) -> str:
        return f">{rungs[-1]}" if m is None else (f"≤{m}" if m == rungs[0] else str(m))

    c = res["crossing"]
    if c["low"] is None:
        where = f"no M up to {rungs[-1]} reached it; vs M={rungs[-1]}"
    else:
        point = at(c["point"])
        where = f"M{'' if point[0] in '≤>' else '='}{point} in [{at(c['low'])}, {at(c['high'])}]"
        where += "" if res["matched"] else f"; vs M={rungs[-1]}"
    a, b = res["speedup_interval"]
    span = f">={a:.3g}x" if b is None else f"{a:.3g}-{b:.3g}x"
    return (f"{name} neural speed-up at matched accuracy ({_KIND_LABEL[kind]} {res['neural_rho']:.3g}: {where} "
            f"over {ma['draws']} draws; {span})")


def _level_figures(name: str, rec: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One level's figures (see :func:`_shapley_figures`)."""
    figures = []
    for key, val in rec.items():
        if isinstance(val, dict) and "time_s" in val:
            figures.append(figure(f"{name} {key} time", val["time_s"] * 1e3, "ms"))
            if "spearman" not in val:  # the exact targets are the reference
                continue
            neural = key == "neural"
            for field, what in (("spearman", "spearman"), ("spearman_image", "spearman within image")):
                figures.append(figure(f"{name} {key} {what}", val[field], "rho", ">= 0.9" if neural else "",
                                      (val[field] >= 0.9) if neural else None))
    ma = rec.get("matched_accuracy")
    for kind, res in (ma or {}).get("kinds", {}).items():
        if res["speedup"] is not None:
            figures.append(figure(_matched_label(name, kind, res, ma), res["speedup"], "x"))
    m = rec["num_samples"]
    figures.append(figure(f"{name} neural speed-up vs sampling M={m}", rec["speedup_vs_sampling"], "x", ">= 20",
                          rec["speedup_vs_sampling"] >= 20))
    figures.append(figure(f"{name} neural speed-up vs sampling M={m} (best of rounds)",
                          rec["speedup_vs_sampling_best"], "x"))
    cost = rec["g_training"]
    figures += _monitor_figures(name, rec.get("monitor_check"), cost)
    if cost.get("routed_fraction") is not None:
        f = cost["routed_fraction"]
        t_m, t_n = rec[f"sampling_M{m}"]["time_s"], rec["neural"]["time_s"]
        figures.append(figure(f"{name} neural speed-up vs sampling M={m} with the run's routing ({f:.1%} of "
                              "coalitions still sampled)", routing_speedup(t_m, t_n, f), "x"))
    if "targets_s" in cost:
        figures.append(figure(f"{name} g_θ training in this bench (targets {cost['targets_s']:.3g} s + fit "
                              f"{cost['fit_s']:.3g} s)", cost["bench_s"], "s"))
    return figures


def _finite(x: Any) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def _monitor_figures(name: str, mc: Optional[Dict[str, Any]], cost: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The training monitor checked against the reference (:func:`monitor_check`) and, for a trained run, what its
    log says (the last steps' means)."""
    if not mc:
        return []
    m = mc["num_samples"]
    out = [figure(f"{name} g_θ Pearson r vs reference", mc["r_reference"], "r", ">= 0.8", mc["r_reference"] >= 0.8)
           if _finite(mc["r_reference"]) else None,
           figure(f"{name} g_θ r vs one M={m} estimate (the monitor's raw figure), mean of {mc['draws']}",
                  mc["r_sampled"][0], "r") if _finite(mc["r_sampled"][0]) else None]
    out = [f for f in out if f is not None]
    if mc["r_corrected"] is not None:
        out.append(figure(f"{name} g_θ r corrected for the M={m} noise (the monitor's figure), mean of "
                          f"{mc['draws']}", mc["r_corrected"][0], "r"))
    if _finite(mc.get("r_reference_unrouted")):
        out.insert(1, figure(f"{name} g_θ Pearson r vs reference where it supervises (the "
                             f"{mc['unrouted_fraction']:.0%} of coalitions its σ² leaves unrouted)",
                             mc["r_reference_unrouted"], "r", ">= 0.8", mc["r_reference_unrouted"] >= 0.8))
    for key, what, unit in (("logged_nsi_r_corrected", "corrected r (held-out coalitions)", "r"),
                            ("logged_nsi_rho", "Spearman ρ vs samples (routed and held-out)", "rho")):
        if cost.get(key) is not None:
            out.append(figure(f"{name} g_θ {what} logged in training (last steps)", cost[key], unit))
    return out


def _shapley_figures(levels: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The printed figures: per level the time and ρ (pooled, within image) of each method (target ρ ≥ 0.9 for
    ``g_θ``), the speed-up at matched accuracy for each ρ, over sampling at the level's ``M`` (target ≥ 20×) and,
    for a trained run, with the routing it logged; ``g_θ``'s training cost (in this bench, or the ℒ_NSI share of
    the run's training step: "not measured" when its log does not time it)."""
    figures = [f for name, rec in levels.items() for f in _level_figures(name, rec)]
    cost = next(iter(levels.values()))["g_training"]
    if "targets_s" not in cost:
        share = cost["nsi_step_share"]
        figures.append(figure("g_θ: ℒ_NSI share of the run's training step", "not measured" if share is None
                              else 100.0 * share, "" if share is None else "%"))
    return figures
