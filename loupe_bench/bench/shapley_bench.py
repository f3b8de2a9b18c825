"""Benchmark: producing LOUPE's interaction targets — exact vs Monte-Carlo vs the trained neural module.

On batches of the synthetic world with the tiny LOUPE spec, for both levels (token level: the patches of each
candidate box in the spec's token game — by default the masked image re-encoded by the tower; semantics level:
region–phrase pairs, late-interaction game), one run measures:

* the time to produce all interaction targets of one batch with exact enumeration (semantics level only: the
  token-level game has one player per patch, 2^64 subsets), with sampling at several ``M``, and with the neural
  predictor ``g_θ`` (features + forward) after training it on Monte-Carlo targets of other batches;
* Spearman ρ of each against a high-sample Monte-Carlo reference.

Target: neural ≥ 20× faster than sampling at the spec's ``M`` with ρ ≥ 0.9. Figures are reported as
measured, met or not. Beside it, the speed-up **at matched accuracy** (:func:`matched_accuracy_speedup`, usable
with any game): against the cheapest Monte-Carlo ``M`` of a ladder whose ρ reaches the neural module's ρ.
"""
from __future__ import annotations

import copy
import statistics
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import torch

from ..utils.provenance import environment_info
from . import BENCHMARKS
from .common import (bench_world, build_tiny, figure, interleaved_times, synced, time_call, to_device,
                     torch_threads, world_batches)


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


class MatchedAccuracy(NamedTuple):
    """Result of :func:`matched_accuracy_speedup`.

    Attributes:
        neural_time_s: median time of one ``neural_predict_fn()`` call.
        mc_time_s: median time of one Monte-Carlo estimate with ``matched_samples`` contexts per coalition.
        neural_rho: Spearman ρ of the neural predictions against the reference.
        mc_rho: ρ of Monte-Carlo at ``matched_samples`` against the reference (mean over ``draws``).
        matched_samples: the cheapest ``M`` of the ladder with ``mc_rho ≥ neural_rho``; the largest ``M`` when none.
        speedup: ``mc_time_s / neural_time_s``.
        matched: False when no ``M`` of the ladder reached ``neural_rho`` (then ``speedup`` is against the largest
            ``M``, a lower bound of the matched-accuracy speed-up).
        ladder_rho: ``{M: ρ_M}`` of every rung tried (the scan stops at the first match).
        reference_samples: contexts per coalition of the reference (as passed, also with a given ``reference``).
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


DEFAULT_LADDER = (2, 4, 8, 16, 32, 64, 128, 256, 512)


def _flat_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``x[valid]`` when ``x`` is ``[G, C]``, else ``x`` flattened (it must then hold one value per valid coalition)."""
    if x.shape == valid.shape:
        return x[valid].float()
    if x.numel() != int(valid.sum()):
        raise ValueError(f"predictions must be [G, C] = {tuple(valid.shape)} or one per valid coalition "
                         f"({int(valid.sum())}), got {tuple(x.shape)}")
    return x.reshape(-1).float()


def matched_accuracy_speedup(game, coalitions: torch.Tensor, neural_predict_fn: Callable[[], torch.Tensor],
                             valid: Optional[torch.Tensor] = None, target: str = "interaction",
                             ladder: Sequence[int] = DEFAULT_LADDER, reference_samples: int = 1024,
                             reference: Optional[torch.Tensor] = None, draws: int = 3, repeat: int = 5,
                             generator: Optional[torch.Generator] = None) -> MatchedAccuracy:
    """Speed-up of a neural predictor over Monte-Carlo **at matched accuracy**, for any game.

    With ``r`` a high-sample Monte-Carlo reference (``reference_samples`` contexts per coalition, or ``reference``
    given) and ``ρ(x) = Spearman(x, r)`` over the valid coalitions:

    * ``ρ_N = ρ(neural_predict_fn())``;
    * ``ρ_M = (1/D) Σ_{d=1..D} ρ(Î_M^{(d)})`` for each ``M`` of the ladder, ``Î_M^{(d)}`` independent estimates with
      ``M`` contexts per coalition (``D = draws``), independent of ``r``;
    * ``M* = min{ M ∈ ladder : ρ_M ≥ ρ_N }`` (``matched = True``); if no rung reaches ``ρ_N`` (or ``ρ_N`` is nan,
      e.g. constant predictions), ``M* = max(ladder)`` and ``matched = False``;
    * ``speedup = t(Î_{M*}) / t(neural_predict_fn)``, medians of ``repeat`` interleaved timed calls (device
      synchronised; one untimed warm-up round).

    Args:
        game: batched game ``v(masks[G, Q, n]) -> [G, Q]``.
        coalitions: ``[G, C, n]`` bool.
        neural_predict_fn: no-argument callable returning the predictions, ``[G, C]`` or one per valid coalition
            in ``coalitions[valid]`` order; it should include whatever the neural path costs (features + forward).
        valid: ``[G, C]`` bool (default: every coalition).
        target: the quantity, ``interaction`` or ``coalition_value`` (Monte-Carlo estimator and reference).
        ladder: Monte-Carlo sample counts to try, scanned cheapest first.
        reference_samples: contexts per coalition of the reference (when ``reference`` is not given).
        reference: a precomputed reference, ``[G, C]`` or one per valid coalition.
        draws: independent Monte-Carlo estimates averaged into each ``ρ_M``.
        repeat: timed calls of each side.
        generator: RNG of the reference and the ladder estimates.
    """
    from ..shapley import spearman
    from ..shapley.estimators import SAMPLED_TARGETS, check_target

    sampler = SAMPLED_TARGETS[check_target(target)]
    if not ladder:
        raise ValueError("matched_accuracy_speedup needs a non-empty ladder")
    if valid is None:
        valid = torch.ones(coalitions.shape[:2], dtype=torch.bool, device=coalitions.device)
    device = str(coalitions.device)
    if reference is None:
        reference = mc_reference(game, coalitions, valid, reference_samples, target, generator=generator)
    ref = _flat_valid(reference, valid)
    neural_rho = spearman(_flat_valid(neural_predict_fn(), valid), ref)
    rungs = sorted(int(m) for m in ladder)
    ladder_rho: Dict[int, float] = {}
    chosen, matched = rungs[-1], False
    with torch.no_grad():
        for m in rungs:
            rhos = [spearman(_flat_valid(sampler(game, coalitions, valid, m, generator).mean, valid), ref)
                    for _ in range(max(1, draws))]
            ladder_rho[m] = sum(rhos) / len(rhos)
            if ladder_rho[m] >= neural_rho:
                chosen, matched = m, True
                break

    def mc_fn():
        with torch.no_grad():
            return sampler(game, coalitions, valid, chosen).mean

    fns = {"mc": synced(mc_fn, device), "neural": synced(neural_predict_fn, device)}
    times = interleaved_times(fns, max(1, repeat), warmup_rounds=1)
    t_mc, t_nn = statistics.median(times["mc"]), statistics.median(times["neural"])
    return MatchedAccuracy(neural_time_s=t_nn, mc_time_s=t_mc, neural_rho=neural_rho, mc_rho=ladder_rho[chosen],
                           matched_samples=chosen, speedup=t_mc / t_nn if t_nn > 0 else float("inf"),
                           matched=matched, ladder_rho=ladder_rho, reference_samples=int(reference_samples))


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
def shapley(repeat: int = 3, device: str = "cpu", spec: str = "loupe-tiny", batch_size: int = 4,
            train_batches: int = 16, samples: Sequence[int] = (8, 32), reference_samples: int = 256,
            fsa_regions: int = 4, train_steps: int = 1500, seed: int = 0, world: Optional[str] = None,
            threads: Optional[int] = 1, num_samples: Optional[int] = None,
            matched_ladder: Sequence[int] = (2, 4, 8, 16, 32, 64, 128), matched_draws: int = 2) -> Dict[str, Any]:
    """Time and accuracy of producing all interaction targets of one batch (see the module docstring).

    The defaults are sized for the tower-evaluated token game (every Monte-Carlo context re-encodes a masked image,
    ~0.3 ms on one CPU thread for the tiny ViT): 4 images per batch, 16 batches of training targets for ``g_θ``,
    a 256-context reference — about 2 minutes on one thread. A 256-context reference carries its own noise, which
    bounds every ρ below 1 (the exact semantics-level targets reach ρ ≈ 0.99 against it).

    ``num_samples`` overrides the spec's ``M`` (the sampling budget the neural module is compared with).
    ``matched_ladder``, ``matched_draws``: the Monte-Carlo ladder of the matched-accuracy speed-up
    (:func:`matched_accuracy_speedup`, against the same reference; empty to skip it).
    ``threads``: ``torch.set_num_threads`` for the whole run on CPU (1 by default: on a shared machine
    oversubscribed threads make small kernels 10-50x slower and the timings meaningless); restored afterwards.
    """
    with torch_threads(threads, device) as n_threads:
        return _shapley(repeat, device, spec, batch_size, train_batches, samples, reference_samples, fsa_regions,
                        train_steps, seed, world, n_threads, num_samples, matched_ladder, matched_draws)


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


def _shapley(repeat, device, spec, batch_size, train_batches, samples, reference_samples, fsa_regions, train_steps,
             seed, world, threads, num_samples=None, matched_ladder=DEFAULT_LADDER, matched_draws=3) -> Dict[str, Any]:
    """The run behind :func:`shapley` (CPU threads already set): the model and its batches, ``g_θ``'s Monte-Carlo
    training targets, one record per level on the held-out batch, the figures."""
    torch.manual_seed(seed)
    world_path = bench_world(world, seed)
    over = {"tsa__target_images": batch_size, "fsa__target_images": batch_size, "fsa__num_regions": fsa_regions}
    if num_samples:
        over["num_samples"] = int(num_samples)
    model = build_tiny(spec, seed, world_path, **over).eval().to(device)
    m_spec = int(model.cfg.num_samples)
    # the token level estimates what ℒ_TSA uses (loupe.tsa.score), the semantics level the pair interaction
    targets = {"tsa": model.cfg.tsa.score, "fsa": "interaction"}
    batches = [to_device(b, device) for b in world_batches(model, train_batches + 1, batch_size, seed, world_path)]
    eval_batch, train = batches[-1], batches[:-1]
    data = _training_targets(model, train, targets, m_spec)
    tsa, fsa, emb = _problems(model, eval_batch)
    opts = _LevelOptions(repeat, device, samples, reference_samples, train_steps, seed, matched_ladder, matched_draws)
    levels = {name: _level_record(model, name, pr, emb, targets[name], data[name], m_spec, opts)
              for name, pr in (("tsa", tsa), ("fsa", fsa))}
    return {"name": "shapley", "spec": spec, "batch_size": batch_size, "num_samples": m_spec, "levels": levels,
            "threads": threads,
            "figures": _shapley_figures(levels, m_spec), "environment": environment_info(device)}


def _training_targets(model, train: List[Dict[str, torch.Tensor]], targets: Dict[str, str], m_spec: int):
    """Per level, ``g_θ``'s training data from the training batches: (features, Monte-Carlo means, their standard
    errors) of every valid coalition, ``m_spec`` contexts each, one list entry per batch."""
    from rich.progress import Progress

    from ..shapley.estimators import SAMPLED_TARGETS

    data: Dict[str, Any] = {"tsa": ([], [], []), "fsa": ([], [], [])}
    with Progress(transient=True) as progress:
        task = progress.add_task("MC targets for training g", total=len(train))
        for b in train:
            tsa, fsa, _ = _problems(model, b)
            for name, pr in (("tsa", tsa), ("fsa", fsa)):
                est = SAMPLED_TARGETS[targets[name]](pr.game, pr.coalitions, pr.valid, m_spec)
                data[name][0].append(pr.feats[pr.valid])
                data[name][1].append(est.mean[pr.valid].float())
                data[name][2].append(est.stderr[pr.valid].float())
            progress.advance(task)
    return data


def _neural_predictor(model, name: str, pr, emb: Dict[str, torch.Tensor], mod) -> Callable[[], torch.Tensor]:
    """``g_θ``'s predictions for the valid coalitions of the level's problem, paying for their features (the token
    level: including the game values among the features, as the spec's ``tsa.features`` says: the ones ``g_θ`` was
    trained on)."""
    from ..models.loupe_heads import fsa_features, tsa_features

    if name == "tsa":
        t_img = pr.coalitions.shape[0]
        toks, text = emb["image_tokens"][:t_img], emb["text_pooled"][:t_img]
        members, cand = pr.coalitions, pr.cand

        def neural():
            with torch.no_grad():
                stats = model.game_stats(pr.game, members, model.cfg.tsa.features)
                return mod.predict(tsa_features(toks, text, members, cand, stats)[pr.valid])[0]

        return neural
    region, phrase, pv = pr.feat_region, pr.feat_phrase, pr.phrase_valid

    def neural():
        with torch.no_grad():
            sim = region @ phrase.transpose(1, 2)
            f2 = fsa_features(sim, region, phrase, pv)
            return mod.predict(f2.reshape(sim.shape[0], -1, f2.shape[-1])[pr.valid])[0]

    return neural


def _level_record(model, name: str, pr, emb, target: str, data, m_spec: int, opts: _LevelOptions) -> Dict[str, Any]:
    """One level's record: sampling at each ``M`` and the trained ``g_θ`` timed in interleaved rounds, their ρ
    against the Monte-Carlo reference, exact enumeration (≤ 16 players), the matched-accuracy speed-up and the
    speed-up over sampling at the spec's ``M``."""
    from ..shapley.estimators import SAMPLED_TARGETS

    sampler = SAMPLED_TARGETS[target]
    ref = mc_reference(pr.game, pr.coalitions, pr.valid, opts.reference_samples, target)[pr.valid].float()
    rec: Dict[str, Any] = {"coalitions": int(pr.valid.sum()), "players": int(pr.coalitions.shape[-1]),
                           "reference_samples": opts.reference_samples, "target": target,
                           "game": type(pr.game).__name__}
    fns: Dict[str, Any] = {}
    for m in opts.samples:
        fns[f"sampling_M{m}"] = synced(
            lambda m=m, sampler=sampler, pr=pr: sampler(pr.game, pr.coalitions, pr.valid, m).mean, opts.device)
    f, y, s = (torch.cat(x) for x in data)
    neural = _neural_predictor(model, name, pr, emb, _train_neural(f, y, s, model.cfg.neural, opts.train_steps,
                                                                   opts.seed))
    fns["neural"] = synced(neural, opts.device)
    rec.update(_timed_estimates(fns, pr.valid, ref, opts.repeat))
    rec["neural"].update({"train_coalitions": int(f.shape[0]), "train_steps": opts.train_steps})
    if pr.coalitions.shape[-1] <= 16:
        rec["exact"] = _exact_record(pr, target, ref, opts.device)
    if opts.matched_ladder:
        ma = matched_accuracy_speedup(pr.game, pr.coalitions, neural, valid=pr.valid, target=target,
                                      ladder=opts.matched_ladder, reference_samples=opts.reference_samples,
                                      reference=ref, draws=opts.matched_draws, repeat=max(opts.repeat, 5))
        rec["matched_accuracy"] = {**ma._asdict(), "ladder_rho": {str(k): v for k, v in ma.ladder_rho.items()}}
    key = f"sampling_M{m_spec}"
    if key in rec:
        rec["speedup_vs_sampling"] = rec[key]["time_s"] / rec["neural"]["time_s"]
        rec["speedup_vs_sampling_best"] = rec[key]["min_time_s"] / rec["neural"]["min_time_s"]
    return rec


def _timed_estimates(fns: Dict[str, Callable[[], torch.Tensor]], valid: torch.Tensor, ref: torch.Tensor,
                     repeat: int) -> Dict[str, Dict[str, float]]:
    """Median and best time of each method over ``max(repeat, 5)`` interleaved rounds (one call of each per round,
    after one untimed round, so load changes on a shared machine hit all alike), and the Spearman ρ of one more
    estimate of each against ``ref`` (sampling methods return ``[G, C]``, the neural one a value per valid
    coalition)."""
    from ..shapley import spearman

    times = interleaved_times(fns, max(repeat, 5), warmup_rounds=1)
    out = {}
    for key, fn in fns.items():
        est = fn()
        est = est[valid].float() if key.startswith("sampling") else est.float()
        out[key] = {"time_s": statistics.median(times[key]), "min_time_s": min(times[key]),
                    "spearman": spearman(est, ref)}
    return out


def _exact_record(pr, target: str, ref: torch.Tensor, device: str) -> Dict[str, float]:
    """Time of one exact enumeration of the level's targets and its Spearman ρ against ``ref``."""
    from ..shapley import spearman
    from ..shapley.estimators import EXACT_TARGETS

    exact = EXACT_TARGETS[target]
    n = pr.coalitions.shape[-1]
    t = time_call(synced(lambda: exact(pr.game, n, pr.coalitions), device), repeat=1, warmup=0)
    ex = exact(pr.game, n, pr.coalitions)[pr.valid].float()
    return {"time_s": t["median_s"], "spearman": spearman(ex, ref)}


def _shapley_figures(levels: Dict[str, Dict[str, Any]], m_spec: int) -> List[Dict[str, Any]]:
    """The printed figures of every level: time and ρ of each method (target ρ ≥ 0.9 for ``g_θ``), the speed-up at
    matched accuracy and over sampling at the spec's ``M`` (target ≥ 20×)."""
    figures = []
    for name, rec in levels.items():
        for key, val in rec.items():
            if isinstance(val, dict) and "time_s" in val:
                figures.append(figure(f"{name} {key} time", val["time_s"] * 1e3, "ms"))
                neural = key == "neural"
                figures.append(figure(f"{name} {key} spearman", val["spearman"], "rho", ">= 0.9" if neural else "",
                                      (val["spearman"] >= 0.9) if neural else None))
        ma = rec.get("matched_accuracy")
        if ma is not None:
            vs = f"M={ma['matched_samples']}"
            how = vs if ma["matched"] else f"no M reached its rho; vs {vs}"
            figures.append(figure(f"{name} neural speed-up at matched accuracy ({how})", ma["speedup"], "x"))
        if rec.get("speedup_vs_sampling") is not None:
            figures.append(figure(f"{name} neural speed-up vs sampling M={m_spec}", rec["speedup_vs_sampling"], "x",
                                  ">= 20", rec["speedup_vs_sampling"] >= 20))
            figures.append(figure(f"{name} neural speed-up vs sampling M={m_spec} (best of rounds)",
                                  rec["speedup_vs_sampling_best"], "x"))
    return figures
