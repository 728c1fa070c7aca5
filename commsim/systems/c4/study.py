"""The ``c4`` study: C4D (fault detection and isolation) and C4P (traffic planning) on a cluster.

Reference: Dong et al., "Boosting Large-scale Parallel Training Efficiency with
C4: A Communication-Driven Approach", arXiv 2406.04594 (HPCA 2025). Its claims:
error-induced overhead down about 30 % with C4D, runtime about 15 % better for
jobs with moderate communication with C4P, and a 22B model on 512 GPUs losing
about 30 % of ideal throughput to ECMP hash collisions.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from commsim.faults.injector import accepted_faults
from commsim.network.loader import load_topology
from commsim.network.topology import Topology
from commsim.systems._study import Study, StudyContext, StudyOutput
from commsim.systems.c4 import figures
from commsim.systems.c4.c4d import run_c4d
from commsim.systems.c4.c4p import run_c4p
from commsim.systems.c4.params import C4Params

__all__ = ["C4Study"]


def _topology(params: C4Params, ctx: StudyContext) -> Topology:
    if ctx.topology is not None:
        return ctx.topology
    path = params.topology
    if ctx.scenario is not None:
        path = str(ctx.scenario.resolve_path(path))
    return load_topology(path)


def _fabric_faults(faults: list[Any]) -> list[Any]:
    """The scenario's faults, all link faults (the study simulates the fabric's collectives, not device compute)."""
    return accepted_faults(faults, lambda fault: hasattr(fault, "link"),
                           rule="is not applied by the c4 study: it simulates the fabric's collectives, not the "
                                "devices' compute",
                           fix="use link_down, link_up or link_degraded here, and workload.params.c4d.faults "
                               "(gpu_hang, straggler, ...) for node faults")


class C4Study(Study):
    """C4D versus timeout + manual diagnosis over a long run; C4P versus ECMP on the fabric."""

    name = "c4"
    title = "C4: communication-driven fault isolation (C4D) and traffic planning (C4P)"
    params = C4Params
    accepts_faults = True

    def run(self, params: Any, ctx: StudyContext) -> StudyOutput:
        """Run the parts of the study ``params.part`` selects."""
        topology = _topology(params, ctx)
        fabric = _fabric_faults(ctx.faults)
        step_latency = float(getattr(ctx.collective, "step_latency", 0.0) or 0.0)
        metrics: dict[str, tuple[float, str]] = {}
        tables: dict[str, pd.DataFrame] = {}
        csv: dict[str, pd.DataFrame] = {}
        figs: list[Any] = []
        notes: list[str] = []
        result = None
        if params.part in ("both", "c4p"):
            c4p = run_c4p(topology, params, seed=ctx.seed, step_latency=step_latency, progress=ctx.progress,
                          faults=fabric)
            metrics.update(c4p.metrics)
            tables.update({"c4p_allreduce": c4p.allreduce, "c4p_iteration": c4p.iteration,
                           "c4p_uplinks": c4p.uplinks, "c4p_ports": c4p.ports})
            csv["c4p_allreduce"] = c4p.allreduce
            csv["c4p_iteration"] = c4p.iteration
            variants = [c4p.allreduce["variant"].iloc[0], "planned"]
            if c4p.failed:
                variants += ["planned, link down, no re-plan", "planned, link down, re-planned"]
            figs += [figures.allreduce_bars(c4p.allreduce), figures.iteration_bars(c4p.iteration),
                     figures.uplink_heatmaps(c4p.uplinks, variants)]
            notes += c4p.notes
            result = c4p.representative.result if c4p.representative is not None else None
        if params.part in ("both", "c4d"):
            c4d = run_c4d(topology, params, seed=ctx.seed, step_latency=step_latency, progress=ctx.progress,
                          faults=fabric)
            metrics.update(c4d.metrics)
            faults, breakdown, segments = c4d.faults(), c4d.breakdown(), c4d.segments()
            sens = c4d.sensitivity()
            tables.update({"c4d_faults": faults, "c4d_breakdown": breakdown, "c4d_segments": segments,
                           "c4d_episodes": c4d.episodes, "c4d_sensitivity": sens})
            csv["c4d_breakdown"] = breakdown
            csv["c4d_faults"] = faults
            figs += [figures.fault_timeline(segments, faults, params.c4d.horizon),
                     figures.downtime_breakdown(breakdown), figures.detection_delays(faults),
                     figures.localisation_scores(c4d.episodes), figures.reduction_sensitivity(sens)]
            notes += c4d.notes
            if result is None and c4d.representative is not None:
                result = c4d.representative.rings.result
        if fabric:
            notes.append(f"Scenario faults ({len(fabric)}) hit the fabric of every collective simulated, at their "
                         "times from its start: C4P's variants and C4D's iterations (healthy ones included).")
        return StudyOutput(metrics=metrics, tables=tables, csv=csv, figures=figs, result=result, notes=notes)

    # ------------------------------------------------------------------ validation
    def validation(self) -> list[Any]:
        """The paper's claims and the study's own consistency, each with the inputs that produce it."""
        from commsim.systems.c4.validation import checks

        return checks()

