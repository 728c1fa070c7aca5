"""C4D comparison: a long training run with faults, timeout + manual diagnosis versus C4D.

1. The job's healthy iteration is simulated once (:func:`~commsim.systems.c4.episode.build_setup`).
2. A fault history is drawn for the horizon (or taken from the scenario).
3. Every fault's iteration is simulated in detail
   (:func:`~commsim.systems.c4.episode.simulate_episode`): C4D's detector sees
   noisy observations of it and names a component; slow faults give their
   slowed iteration time.
4. Both methods play the same history on the event-driven timeline
   (:func:`~commsim.systems.c4.timeline.run_timeline`).
5. Extra seeded episodes per fault kind (and healthy ones) measure
   localisation precision and recall against the injected truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from commsim.network.topology import Topology
from commsim.systems.c4.detector import Diagnosis, baseline_of, correct, diagnose, probe_with, summarise
from commsim.systems.c4.episode import (
    C4DSetup,
    EpisodeRun,
    Fault,
    build_setup,
    draw_history,
    given_history,
    observe,
    random_fault,
    simulate_episode,
)
from commsim.systems.c4.params import FAULT_KINDS, KIND_INFO, C4Params
from commsim.systems.c4.timeline import CATEGORIES, FaultOutcome, TimelineResult, run_timeline, summary

__all__ = ["C4DResult", "run_c4d", "evaluate_fault", "localisation_episodes", "sensitivity"]

DIAGNOSIS_HOURS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
CHECKPOINT_HOURS = (0.5, 1.0, 2.0, 4.0)

Progress = Callable[[float, float, str], None]


@dataclass
class C4DResult:
    """Everything the C4D comparison produced."""

    setup: C4DSetup
    history: list[Fault]
    outcomes: list[FaultOutcome]
    timelines: dict[str, TimelineResult]
    episodes: pd.DataFrame
    metrics: dict[str, tuple[float, str]]
    notes: list[str]
    representative: EpisodeRun | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def breakdown(self) -> pd.DataFrame:
        """Downtime per method and category (seconds and fraction of the horizon)."""
        rows = []
        for method, tl in self.timelines.items():
            for cat in CATEGORIES:
                rows.append({"method": method, "category": cat, "seconds": tl.breakdown[cat],
                             "fraction": tl.breakdown[cat] / tl.horizon})
        return pd.DataFrame(rows)

    def faults(self) -> pd.DataFrame:
        """Per fault and method: when, what, time to detect and to localise."""
        return pd.concat([tl.faults for tl in self.timelines.values()], ignore_index=True)

    def segments(self) -> pd.DataFrame:
        """The timeline segments of both methods."""
        return pd.concat([tl.segments for tl in self.timelines.values()], ignore_index=True)

    def sensitivity(self) -> pd.DataFrame:
        """The downtime reduction of the same faults for other diagnosis times and checkpoint intervals."""
        return sensitivity(self.outcomes, self.setup.params)


def sensitivity(outcomes: list[FaultOutcome], params: Any) -> pd.DataFrame:
    """Downtime of both methods replayed on the same fault outcomes for a grid of manual diagnosis times
    and checkpoint intervals (the timeline is cheap; the detailed episodes are reused)."""
    rows = []
    for hours in DIAGNOSIS_HOURS:
        for interval in CHECKPOINT_HOURS:
            p = params.model_copy(update={"diagnosis_time": hours * 3600.0, "checkpoint_interval": interval * 3600.0})
            base = run_timeline(outcomes, "baseline", p).downtime
            c4d = run_timeline(outcomes, "c4d", p).downtime
            rows.append({"diagnosis_hours": hours, "checkpoint_hours": interval,
                         "downtime_fraction_baseline": base / p.horizon, "downtime_fraction_c4d": c4d / p.horizon,
                         "reduction": 1.0 - c4d / base if base > 0 else math.nan})
    return pd.DataFrame(rows)


def evaluate_fault(setup: C4DSetup, fault: Fault | None, base: Any, rng: np.random.Generator
                   ) -> tuple[EpisodeRun, Diagnosis, float, float]:
    """Simulate a fault's iteration, let C4D diagnose it; return (run, diagnosis, slowdown, iteration time)."""
    p = setup.params
    run = simulate_episode(setup, fault)
    hangs = fault is not None and fault.hangs
    obs = observe(setup, run, rng, 1 if hangs else p.c4d_slow_iterations)
    diagnosis = diagnose(setup, obs, base, run, probe_with(run, rng))
    if fault is None:
        return run, diagnosis, 1.0, setup.iteration
    if hangs:
        return run, diagnosis, math.inf, math.nan
    if fault.kind == "straggler":
        it = setup.iteration_with(None, compute_scale=p.straggler_slowdown)
        return run, diagnosis, it / setup.iteration, it
    it = setup.iteration_with(run.rings)
    if fault.kind == "link_flap":
        # one iteration in every flap period is stalled; the others run at full speed
        slowdown = 1.0 + (it - setup.iteration) / p.flap_period
        return run, diagnosis, slowdown, setup.iteration * slowdown
    return run, diagnosis, it / setup.iteration, it


def localisation_episodes(setup: C4DSetup, per_class: int, rng: np.random.Generator, base: Any,
                          progress: Progress | None = None) -> pd.DataFrame:
    """``per_class`` seeded episodes of every fault kind the job can have, and healthy ones, diagnosed."""
    kinds = ["healthy"] + [k for k in FAULT_KINDS if KIND_INFO[k][1] == "node" or setup.used_links]
    rows = []
    total = per_class * len(kinds)
    for k, kind in enumerate(kinds):
        for i in range(per_class):
            fault = None if kind == "healthy" else random_fault(setup, kind, 0.0, rng)
            _run, diag, _s, _it = evaluate_fault(setup, fault, base, rng)
            truth = None if fault is None else fault.truth
            rows.append(_episode_row("episodes", kind, fault, diag, truth))
            if progress is not None:
                progress(k * per_class + i + 1, total, f"C4D localisation episodes ({kind})")
    return pd.DataFrame(rows)


def _episode_row(source: str, kind: str, fault: Fault | None, diag: Diagnosis, truth: Any) -> dict[str, Any]:
    return {"source": source, "kind": kind, "where": fault.describe() if fault else "",
            "expected_category": KIND_INFO[kind][0] if kind in KIND_INFO else "healthy",
            "category": diag.category, "truth": str(truth), "localised": str(diag.component),
            "reported": diag.component is not None, "correct": correct(diag, truth),
            "category_correct": diag.category == (KIND_INFO[kind][0] if kind in KIND_INFO else "healthy")}


def run_c4d(topology: Topology, params: C4Params, *, seed: int = 0, step_latency: float = 0.0,
            progress: Progress | None = None, faults: list[Any] | None = None) -> C4DResult:
    """Run the C4D comparison of ``params.c4d`` on ``topology`` (``faults``: the fabric's, see :func:`build_setup`)."""
    p = params.c4d
    setup = build_setup(topology, p, params.job, seed=seed, qps=params.c4p.qps, step_latency=step_latency,
                        faults=faults)
    history_rng = np.random.default_rng([seed, 0xC4D])
    noise_rng = np.random.default_rng([seed, 0xC4D, 1])
    history = given_history(setup, p.faults) if p.faults else draw_history(setup, history_rng)
    healthy = simulate_episode(setup, None)
    base = baseline_of(observe(setup, healthy, noise_rng, 8))
    outcomes, rows = [], []
    representative: EpisodeRun | None = None
    total = len(history) + p.episodes_per_class * (1 + len(FAULT_KINDS))
    for i, fault in enumerate(history):
        run, diag, slowdown, it = evaluate_fault(setup, fault, base, noise_rng)
        ok = correct(diag, fault.truth)
        outcomes.append(FaultOutcome(fault=fault, slowdown=slowdown, iteration=it, diagnosis=diag, correct=ok))
        rows.append(_episode_row("history", fault.kind, fault, diag, fault.truth))
        if representative is None:
            representative = run
        if progress is not None:
            progress(i + 1, total, "C4D faults of the run")
    episodes = pd.DataFrame(rows)
    if p.episodes_per_class:
        done = len(history)

        def step(d: float, _t: float, what: str) -> None:
            if progress is not None:
                progress(done + d, total, what)

        extra = localisation_episodes(setup, p.episodes_per_class, noise_rng, base, step)
        episodes = pd.concat([episodes, extra], ignore_index=True)
    timelines = {m: run_timeline(outcomes, m, p) for m in ("baseline", "c4d")}
    sums = {m: summary(t) for m, t in timelines.items()}
    scores = summarise(episodes.to_dict("records")) if len(episodes) else {"precision": math.nan,
                                                                           "recall": math.nan}
    b, c = timelines["baseline"], timelines["c4d"]
    reduction = 1.0 - c.downtime / b.downtime if b.downtime > 0 else math.nan
    tokens = setup.profile.tokens_per_step / setup.iteration
    metrics: dict[str, tuple[float, str]] = {
        "c4d_faults": (float(len(history)), "count"),
        "c4d_healthy_iteration": (setup.iteration, "s"),
        "c4d_downtime_fraction_baseline": (sums["baseline"]["downtime_fraction"], "fraction"),
        "c4d_downtime_fraction_c4d": (sums["c4d"]["downtime_fraction"], "fraction"),
        "c4d_overhead_reduction": (reduction, "fraction"),
        "c4d_effective_throughput_baseline": (tokens * sums["baseline"]["useful_fraction"], "tokens/s"),
        "c4d_effective_throughput_c4d": (tokens * sums["c4d"]["useful_fraction"], "tokens/s"),
        "c4d_localisation_precision": (scores["precision"], "fraction"),
        "c4d_localisation_recall": (scores["recall"], "fraction"),
    }
    for method, tl in timelines.items():
        if len(tl.faults):
            metrics[f"c4d_median_time_to_detect_{method}"] = (float(tl.faults["time_to_detect"].median()), "s")
            metrics[f"c4d_median_time_to_localise_{method}"] = (float(tl.faults["time_to_localise"].median()), "s")
    rate = p.job_rate(len(setup.devices))
    dp = len(setup.devices) // (params.job.tp * params.job.pp)
    source = ("the given per-GPU rate" if p.rate_per_gpu is not None else
              f"{p.reference_interruptions:g} interruptions in {p.reference_time / 86400:g} days on "
              f"{p.reference_gpus} GPUs, scaled to the job")
    drawn = f"drawn with seed {seed}"
    notes = [
        f"C4D job: {params.job.model}, tp={params.job.tp}, pp={params.job.pp}, dp={dp} on {len(setup.devices)} "
        f"GPUs; healthy iteration {setup.iteration:.3f} s (replayed replica + simulated {p.routing} rings, "
        f"{params.c4p.qps} QPs per connection).",
        (f"C4D faults given by the scenario: {len(history)} in {p.horizon / 86400:g} days." if p.faults else
         f"C4D fault rate {rate * 86400:.3f} per day for the job ({source}); {len(history)} fault(s) in "
         f"{p.horizon / 86400:g} days ({drawn}); kinds drawn with shares {p.mix.weights()}."),
        f"C4D baseline: timeout {p.timeout / 60:g} min, manual diagnosis {p.diagnosis_time / 3600:g} h, slow jobs "
        f"noticed after {p.slow_notice_time / 3600:g} h; C4D: hang timeout {p.c4d_hang_timeout:g} s, "
        f"{p.c4d_slow_iterations} anomalous iterations, {p.c4d_analysis_time:g} s to localise; both restart in "
        f"{p.restart_time / 60:g} min from checkpoints every {p.checkpoint_interval / 3600:g} h, "
        f"{p.spare_nodes} spare server(s) repaired in {p.repair_time / 86400:g} days.",
        "C4D observes the data-parallel all-reduce of every iteration (per-rank entry/exit, per-QP transfer time) "
        f"with {p.entry_jitter:.0%} arrival jitter and {p.measurement_noise:.0%} measurement noise; link candidates "
        "are confirmed by probes that measure a link's usable bandwidth.",
    ]
    return C4DResult(setup=setup, history=history, outcomes=outcomes, timelines=timelines, episodes=episodes,
                     metrics=metrics, notes=notes, representative=representative or healthy, scores=scores)
