"""One method at one WAN bandwidth: a per-layer training trace replayed on a WAN of M replicas.

:func:`sync_trace` writes the paper's DAG as a commsim trace. Each replica is
one rank (its data-parallel group inside the data centre runs in lockstep; only
the cross-data-centre link is modelled). Every inner step is, per layer, a
forward op, then from the last layer down a backward-for-activations and a
backward-for-weights op, all on the ``compute`` stream; each layer's sync is an
all-reduce (all-gather for quantised payloads) over the replicas that depends on
that layer's backward-for-weights op, and the layer's forward op ``1 + tau``
steps later depends on it. :func:`simulate` replays the trace with the shared
replay engine (:mod:`commsim.workloads.replay`) on a :func:`~commsim.network.generators.wan`
topology: the collectives are the collective library's rings over the WAN
links, sharing each link max-min fairly (``sharing="fair"``, each layer's syncs
on their own stream) or one at a time in release order (``"fifo"``, one WAN
stream). Chains of compute ops that no sync observes are merged before the
replay (:func:`~commsim.workloads.steady_state.coalesce_delays`), which is exact.

Compute utilisation ``CU = compute time / wall time`` in the steady state, from
its periodicity (a period is H inner steps, one for data-parallel):

- ``period`` mode (when :func:`~.schedule.independent_periods` holds, as for
  every method at the paper's setting): the syncs of one period, replayed up to
  their last deadline; ``CU = period·T / (period·T + stalls)``, exactly;
- ``periodic`` mode (syncs of one period reach past the next period's first
  release, so a backlog may build up): traces of more and more periods are
  replayed until the periods repeat themselves
  (:func:`commsim.workloads.periodic.replay_until_periodic`: a pattern of 1 to
  :data:`MAX_PERIOD` periods seen :data:`REPEATS` times, the syncs' completions
  measured from their periods' starts repeating too); ``CU = period·T / mean
  period length`` over the pattern. A period starts with the first forward op
  of its first step. A run that has not repeated by :data:`MAX_PERIODS` periods
  averages its last periods and says so (``periodic`` false, mode ``aperiodic``).

>>> from commsim.systems.streaming_diloco.params import ModelCase
>>> from commsim.systems.streaming_diloco.layout import build_layout
>>> from commsim.systems.streaming_diloco.schedule import Payload, build_plan
>>> lay = build_layout(ModelCase(model="diloco-1b", step_time=0.1), backward_to_forward=2.0)
>>> plan = build_plan("diloco", lay, inner_steps=100, tau=0, fragment_layers=3, assignment="strided",
...                   remainder="reject", dense=Payload(16, None), quantised=Payload(4, None), replicas=2)
>>> stats = simulate(plan, lay, bandwidth=1.25e9, latency=0.0)      # 10 Gbit/s
>>> stats.mode, round(stats.cu, 4), round(stats.stall, 3)   # 2 GB at 1.25 GB/s from 0.0361 s, due at 0.1 s
('period', 0.8668, 1.536)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from commsim.collectives import CollectiveConfig
from commsim.errors import ConfigError
from commsim.faults.injector import accepted_faults
from commsim.kernel import UNBOUNDED
from commsim.network.generators import wan
from commsim.network.topology import Topology
from commsim.simulation import Simulation
from commsim.systems.streaming_diloco.schedule import SyncPlan, independent_periods
from commsim.workloads.data_parallel import LayerLayout, forward_id, step_times, training_trace
from commsim.workloads.periodic import replay_until_periodic
from commsim.workloads.replay import Replay, ReplayResult
from commsim.workloads.steady_state import coalesce_delays
from commsim.workloads.trace import CollectiveOp, Trace

__all__ = ["RunStats", "sync_trace", "simulate", "forward_id", "sync_id", "wan_of", "check_wan_faults", "REPEATS",
           "MAX_PERIOD", "MAX_PERIODS"]

SHARING = ("fair", "fifo")
REPEATS = 3
"""Times a ``periodic`` run's repeating pattern must be seen (and is averaged over)."""
MAX_PERIOD = 4
"""Longest pattern (periods) a ``periodic`` run is recognised to repeat with."""
MAX_PERIODS = 32
"""Periods after the first wait at which a ``periodic`` run stops even if it has not repeated."""
_COLLECTIVE = CollectiveConfig(record="none", mode="flows")
"""Each connection of a ring sync as one flow of its total bytes: exact on the WAN's uncongested ring (at
M = 2 both directions carry the same bytes, so its steps end together), and half the events of step mode."""


def sync_id(step: int, layer: int) -> str:
    """Id of layer ``layer``'s sync released in inner step ``step``."""
    return f"s{step}.sync{layer}"


def sync_trace(plan: SyncPlan, layout: LayerLayout, *, steps: int, release_before: int | None = None,
               sharing: str = "fair", quiet_steps: str = "layers", marker: bool = False) -> Trace:
    """The per-layer trace of ``steps`` inner steps; syncs released before step ``release_before`` (default all).

    Syncs due in a step past the trace are left without a deadline. ``quiet_steps="merged"``
    writes a step that releases no sync and owes none as one op of the step time (what
    :func:`~commsim.workloads.steady_state.coalesce_delays` makes of its per-layer ops anyway).
    ``marker`` adds the start of step ``steps`` and each step's join of its syncs
    (:func:`commsim.workloads.data_parallel.training_trace`), for :func:`~commsim.workloads.data_parallel.step_times`.
    """
    if sharing not in SHARING:
        raise ConfigError(field="sharing", value=sharing, rule="is not a sharing rule", fix=f"use one of {SHARING}")
    release_before = steps if release_before is None else release_before
    syncing = set(plan.layer_offset.tolist())
    busy = {s for s in range(min(steps, release_before)) if s % plan.period in syncing}
    busy |= {s + 1 + plan.tau for s in busy}
    kind, nbytes, offsets = plan.collective, plan.collective_bytes.tolist(), plan.layer_offset.tolist()

    def sync(s: int, layer: int, after: str, rank: int) -> list[Any]:
        if s % plan.period != offsets[layer]:
            return []
        return [CollectiveOp.model_construct(
            id=sync_id(s, layer), stream="wan" if sharing == "fifo" else f"wan{layer}", deps=[after],
            tags={"step": s, "layer": layer}, op=kind, bytes=nbytes[layer], group="wan", algorithm="ring", root=None,
            name=f"sync layer {layer}")]

    ranks = plan.replicas
    return training_trace(layout, sync, steps=steps, ranks=ranks, communicators={"wan": [list(range(ranks))]},
                          programs=[("replica", f"0:{ranks}")], overlap=plan.tau, release_before=release_before,
                          quiet=(lambda s: s not in busy) if quiet_steps == "merged" else None, marker=marker,
                          joins=marker, name=f"{layout.label} {plan.method}")


@dataclass
class RunStats:
    """What one run measured per measured window (seconds, bytes per replica).

    ``window_steps`` inner steps are measured (a period; the whole trace in ``steps``
    mode); ``periodic`` is false when a ``periodic`` run had not repeated by
    :data:`MAX_PERIODS` periods (its CU is then the mean of its last periods).
    """

    method: str
    bandwidth: float
    latency: float
    window_steps: int
    compute: float
    wall: float
    stall: float
    syncs: int
    mode: str
    replay: ReplayResult | None = None
    periodic: bool = True

    @property
    def cu(self) -> float:
        """Compute utilisation: compute time over wall time in the window."""
        return self.compute / self.wall if self.wall > 0 else 1.0


@dataclass(frozen=True)
class Prepared:
    """What :func:`replay_at` replays: one trace of ``steps`` steps (``period`` and ``steps`` modes), or none in
    ``periodic`` mode (it writes traces of more and more periods, with ``sharing`` and ``coalesce``)."""

    mode: str
    steps: int
    measured: int
    trace: Trace | None = None
    sharing: str = "fair"
    coalesce: bool = True


def prepare_trace(plan: SyncPlan, layout: LayerLayout, *, sharing: str = "fair", steady: str = "auto",
                  steps: int | None = None, coalesce: bool = True) -> Prepared:
    """What :func:`replay_at` replays: one period, periods until they repeat, or the first ``steps`` steps."""
    if steady not in ("auto", "period", "periodic"):
        raise ConfigError(field="steady", value=steady, rule="is not a steady-state mode",
                          fix="use auto, period or periodic")
    if sharing not in SHARING:
        raise ConfigError(field="sharing", value=sharing, rule="is not a sharing rule", fix=f"use one of {SHARING}")
    if steps is not None:
        mode, n, release, measured = "steps", int(steps), int(steps), int(steps)
    elif steady == "period" or (steady == "auto" and independent_periods(plan, layout)):
        if not independent_periods(plan, layout):
            raise ConfigError(field="steady", value=steady, rule=f"needs independent periods, and {plan.method}'s "
                              "syncs reach into the next period", fix="use steady='periodic' (or 'auto')")
        mode, release = "period", plan.period
        n = int(plan.layer_offset.max()) + 2 + plan.tau  # up to the step holding the last deadline
        measured = plan.period
    else:
        return Prepared(mode="periodic", steps=0, measured=plan.period, sharing=sharing, coalesce=coalesce)
    trace = sync_trace(plan, layout, steps=n, release_before=release, sharing=sharing,
                       quiet_steps="merged" if coalesce else "layers")
    if coalesce:
        trace = coalesce_delays(trace)
    return Prepared(mode=mode, steps=n, measured=measured, trace=trace)


def wan_of(replicas: int, bandwidth: float, latency: float) -> Topology:
    """The replicas' WAN: one device per data centre (the links inside it are made unbounded in each run)."""
    return wan(datacenters=replicas, devices_per_dc=1, local_latency=0.0,
               wan_bandwidth=bandwidth if math.isfinite(bandwidth) else 1.0, wan_latency=latency)


def _wan_simulation(replicas: int, bandwidth: float, latency: float, *, record: bool, name: str) -> Simulation:
    """A simulation of the WAN whose links inside the data centres never bind (every link, at infinite
    ``bandwidth``): their capacity is :data:`commsim.kernel.UNBOUNDED`, nominal too (faults degrade from it)."""
    topology = wan_of(replicas, bandwidth, latency)
    sim = Simulation(topology, record_usage=record, name=name)
    unbounded = [sim.network.link_resource(a, b) for a, b, data in topology.links()
                 if data.get("tier") != "wan" or not math.isfinite(bandwidth)]
    resources = sim.network.link_resources()
    edges = np.flatnonzero(np.isin(resources, unbounded))
    sim.network.nominal_bandwidth[edges] = UNBOUNDED
    sim.kernel.set_capacity(resources[edges], UNBOUNDED)
    return sim


def check_wan_faults(faults: Sequence[Any], replicas: int) -> list[Any]:
    """The scenario's faults, checked to be faults of the WAN links between the ``replicas`` data centres.

    Only the WAN is modelled (each replica is one rank whose compute is a fixed
    step time), so a device fault or a link inside a data centre has nothing to act
    on: both are refused rather than silently ignored.
    """
    wan_links = {frozenset((a, b)) for a, b, data in wan_of(replicas, 1.0, 0.0).links() if data.get("tier") == "wan"}
    return accepted_faults(faults, lambda fault: frozenset(getattr(fault, "link", ())) in wan_links,
                           rule="is not a fault of a WAN link between data centres: the streaming_diloco study "
                                "models only the WAN (each replica is one rank with a fixed step time)",
                           fix="use link_down, link_up or link_degraded on a WAN link such as ['dc0.gw', 'dc1.gw']")


def replay_at(prepared: Prepared, plan: SyncPlan, layout: LayerLayout, *, bandwidth: float, latency: float,
              record: bool = False, faults: Sequence[Any] = ()) -> RunStats:
    """Replay a prepared trace on a WAN of ``bandwidth`` bytes/s per direction and ``latency`` s per link.

    ``faults`` (:mod:`commsim.faults` models of WAN links) are applied by the simulation's
    fault injector at their times from the start of the replay.
    """
    def replay_of(trace: Trace) -> Replay:
        sim = _wan_simulation(plan.replicas, bandwidth, latency, record=record, name=f"{layout.label} {plan.method}")
        sim.schedule_faults(faults)
        return Replay(sim, trace, record="all" if record else "none", collective=_COLLECTIVE)

    stats = dict(method=plan.method, bandwidth=bandwidth, latency=latency, window_steps=prepared.measured,
                 compute=prepared.measured * layout.step_time, mode=prepared.mode)
    if prepared.trace is None:
        return _periodic(prepared, plan, layout, replay_of, stats)
    replay = replay_of(prepared.trace)
    if record:
        result = replay.run()
        end = result.step_time
    else:
        replay.run_to_end()
        result = None
        end = float(np.nanmax(replay.op_times()[2]))
    # every stall of the trace belongs to the measured steps
    stall = max(0.0, end - prepared.steps * layout.step_time)
    syncs = sum(1 for op in prepared.trace.programs[0].ops if op.kind == "collective")
    return RunStats(**stats, wall=stats["compute"] + stall, stall=stall, syncs=syncs, replay=result)


def _periodic(prepared: Prepared, plan: SyncPlan, layout: LayerLayout, replay_of: Any,
              stats: dict[str, Any]) -> RunStats:
    """Replay more and more periods until they repeat themselves (see the module docstring)."""
    period = plan.period
    # the syncs of period j are due by step j·P + offset + 1 + tau, so done when the step after it starts
    lag = -(-(int(plan.layer_offset.max()) + plan.tau + 2) // period)
    syncs: list[int] = []

    def run(periods: int) -> tuple[np.ndarray, np.ndarray, None]:
        steps = periods * period
        trace = sync_trace(plan, layout, steps=steps, sharing=prepared.sharing, marker=True)
        if prepared.coalesce:
            trace = coalesce_delays(trace, keep=[forward_id(j * period, 0) for j in range(periods + 1)])
        replay = replay_of(trace)
        replay.run_to_end()
        times = step_times(replay, layout, steps, every=period)
        syncs[:] = [sum(1 for op in trace.programs[0].ops if op.kind == "collective") // periods]
        return times.starts, times.settle, None

    found = replay_until_periodic(run, lag=lag, limit=lag + MAX_PERIODS, max_period=MAX_PERIOD, repeats=REPEATS)
    wall = found.iteration
    stats["mode"] = "periodic" if found.periodic else "aperiodic"
    return RunStats(**stats, wall=wall, stall=wall - stats["compute"], syncs=syncs[0], periodic=found.periodic)


def simulate(plan: SyncPlan, layout: LayerLayout, *, bandwidth: float, latency: float, sharing: str = "fair",
             steady: str = "auto", steps: int | None = None, record: bool = False, coalesce: bool = True,
             faults: Sequence[Any] = ()) -> RunStats:
    """Prepare the trace of ``plan`` and replay it at ``bandwidth`` (see the module docstring)."""
    prepared = prepare_trace(plan, layout, sharing=sharing, steady=steady, steps=steps, coalesce=coalesce)
    return replay_at(prepared, plan, layout, bandwidth=bandwidth, latency=latency, record=record, faults=faults)
