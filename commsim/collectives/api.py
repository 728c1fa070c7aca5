"""Running collectives: on a live simulation, or alone on a topology with nccl-tests metrics.

>>> from commsim.network.loader import load_topology
>>> result = simulate_collective("switch:8,50GB/s,500ns", "all_reduce", 2**30, algorithm="ring")
>>> round(result.busbw / 1e9, 2)  # GB/s, approaches the 50 GB/s link rate
49.98
>>> abs(result.time / result.closed_form - 1) < 1e-9
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from commsim.collectives._executor import CollectiveConfig, CollectiveRun
from commsim.collectives._registry import build_schedule
from commsim.collectives.closed_form import CLOSED_FORMS, bus_factor, closed_form_time
from commsim.errors import ConfigError
from commsim.network.loader import load_topology
from commsim.network.topology import Topology

__all__ = [
    "estimate_collective","CollectiveResult", "run_collective", "simulate_collective", "resolve_group", "ring_path_parameters",
           "path_parameters"]


@dataclass(frozen=True)
class CollectiveResult:
    """One collective measured the way nccl-tests reports hardware.

    ``time`` in seconds; ``algbw = size / time`` and ``busbw = algbw x bus factor``
    in bytes/s; ``closed_form`` is the alpha-beta time for the same path
    parameters (NaN when the algorithm has none).
    """

    op: str
    algorithm: str
    ranks: int
    size: float
    time: float
    algbw: float
    busbw: float
    closed_form: float
    wire_bytes: float
    rank_end: np.ndarray


def resolve_group(topology: Topology, ranks: Any = None) -> list[str]:
    """Device names of a group: all devices, the first ``n``, or explicit ranks/names."""
    devices = topology.devices
    if ranks is None:
        return devices
    if isinstance(ranks, (int, np.integer)):
        if not 1 <= int(ranks) <= len(devices):
            raise ConfigError(field="ranks", value=int(ranks),
                              rule=f"does not fit the topology's {len(devices)} devices",
                              fix=f"use 1..{len(devices)} ranks or a larger topology")
        return devices[: int(ranks)]
    group = []
    for item in ranks:
        if isinstance(item, (int, np.integer)):
            if not 0 <= int(item) < len(devices):
                raise ConfigError(field="ranks", value=int(item), rule="is not a device rank of the topology",
                                  fix=f"use ranks 0..{len(devices) - 1}")
            group.append(devices[int(item)])
        elif topology.has_node(item) and topology.kind(item) == "device":
            group.append(item)
        else:
            raise ConfigError(field="ranks", value=item, rule="is not a device of the topology",
                              fix="name device nodes or give rank numbers")
    if len(set(group)) != len(group):
        raise ConfigError(field="ranks", value=list(ranks), rule="names a device twice",
                          fix="list each rank once")
    return group


def run_collective(sim: Any, op: str, group: list[str], nbytes: float, *, algorithm: str = "ring",
                   config: CollectiveConfig | None = None, label: str = "", **params: Any) -> CollectiveRun:
    """Start ``op`` on ``group`` inside a running simulation; ``.done`` fires at the end."""
    if algorithm == "hierarchical" and "ranks_per_node" not in params:
        from commsim.collectives.hierarchical import ranks_per_node_of

        params["ranks_per_node"] = ranks_per_node_of(sim.topology, group)
    schedule = build_schedule(op, algorithm, len(group), nbytes, **params)
    run = CollectiveRun(sim, schedule, group, config or CollectiveConfig(), label=label)
    run.start()
    return run


def ring_path_parameters(topology: Topology, group: list[str], step_latency: float = 0.0) -> tuple[float, float]:
    """``(alpha, bandwidth)`` of a ring over ``group``: the slowest neighbour route's latency
    (plus ``step_latency``) and the narrowest link on any neighbour route."""
    from commsim.network.routing import Router

    router = Router(topology, policy="shortest")
    compiled = topology.compile()
    alpha = 0.0
    bandwidth = np.inf
    n = len(group)
    for i in range(n if n > 1 else 0):
        path = router.path(group[i], group[(i + 1) % n])
        alpha = max(alpha, router.latency(path))
        if path:
            bandwidth = min(bandwidth, float(compiled.edge_bandwidth[list(path)].min()))
    return alpha + step_latency, float(bandwidth)


def path_parameters(topology: Topology, group: list[str], src: np.ndarray, dst: np.ndarray,
                    step_latency: float = 0.0, router: Any = None) -> tuple[float, float]:
    """``(alpha, bandwidth)`` over the transfers ``group[src[i]] -> group[dst[i]]``: the slowest route's
    latency (plus ``step_latency``) and the narrowest link on any of the routes (shortest paths; pass a
    simulation's ``router`` to reuse its distance tables)."""
    from commsim.network.routing import Router

    router = router or Router(topology, policy="shortest")
    edge_bandwidth = topology.compile().edge_bandwidth
    pairs = np.unique(np.stack([np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)], axis=1), axis=0)
    alpha, bandwidth = 0.0, np.inf
    for a, b in pairs.tolist():
        path = router.path(group[a], group[b])
        if path:
            alpha = max(alpha, router.latency(path))
            bandwidth = min(bandwidth, float(edge_bandwidth[list(path)].min()))
    return alpha + step_latency, float(bandwidth)


def _closed_form_parameters(topology: Topology, group: list[str], schedule: Any, step_latency: float,
                            params: dict[str, Any], router: Any = None) -> dict[str, float]:
    """Path parameters of the pairs the schedule uses (intra- and inter-node apart for ``hierarchical``)."""
    arrays = {(id(s.src), id(s.dst)): (s.src, s.dst) for s in schedule.steps}  # steps share their index arrays
    src = np.concatenate([a for a, _ in arrays.values()] or [np.zeros(0, dtype=np.int64)])
    dst = np.concatenate([b for _, b in arrays.values()] or [np.zeros(0, dtype=np.int64)])
    if schedule.algorithm != "hierarchical":
        alpha, bandwidth = path_parameters(topology, group, src, dst, step_latency, router)
        return {"alpha": alpha, "bandwidth": bandwidth}
    local = params["ranks_per_node"]
    same = src // local == dst // local
    alpha, bandwidth = path_parameters(topology, group, src[same], dst[same], step_latency, router)
    alpha2, bandwidth2 = path_parameters(topology, group, src[~same], dst[~same], step_latency, router)
    return {"alpha": alpha, "bandwidth": bandwidth, "alpha_inter": alpha2, "bandwidth_inter": bandwidth2}


def _prepare(topology: Any, ranks: Any, algorithm: str, params: dict[str, Any]) -> tuple[Topology, list[str]]:
    topo = load_topology(topology)
    group = resolve_group(topo, ranks)
    if algorithm == "hierarchical" and "ranks_per_node" not in params:
        from commsim.collectives.hierarchical import ranks_per_node_of

        params["ranks_per_node"] = ranks_per_node_of(topo, group)
    return topo, group


def estimate_collective(topology: Any, op: str, nbytes: float, *, algorithm: str = "ring", ranks: Any = None,
                        config: CollectiveConfig | None = None, **params: Any) -> CollectiveResult:
    """The closed-form time of one collective on ``topology``, without simulating it.

    Instant at any scale and exact on uncongested fabrics (the tests hold the
    simulation to it); congestion, failures and other traffic need
    :func:`simulate_collective`.

    >>> r = estimate_collective("switch:4096,50GB/s,500ns", "all_reduce", 2**30)
    >>> round(r.busbw / 1e9, 1)
    42.0
    """
    topo, group = _prepare(topology, ranks, algorithm, params)
    config = config or CollectiveConfig()
    schedule = build_schedule(op, algorithm, len(group), nbytes, **params)  # names a bad op or algorithm
    if (op, algorithm) not in CLOSED_FORMS:
        closed_form_time(op, algorithm, len(group), nbytes, alpha=0.0, bandwidth=1.0)  # raises the clear error
    paths = _closed_form_parameters(topo, group, schedule, config.step_latency, params)
    time = closed_form_time(op, algorithm, len(group), nbytes, efficiency=config.bandwidth_efficiency, **paths,
                            **params)
    algbw = nbytes / time if time > 0 else float("inf")
    return CollectiveResult(op=op, algorithm=algorithm, ranks=len(group), size=nbytes, time=time, algbw=algbw,
                            busbw=algbw * bus_factor(op, len(group)), closed_form=time,
                            wire_bytes=schedule.wire_bytes / config.bandwidth_efficiency,
                            rank_end=np.full(len(group), time))


def simulate_collective(topology: Any, op: str, nbytes: float, *, algorithm: str = "ring", ranks: Any = None,
                        config: CollectiveConfig | None = None, seed: int = 0, routing: str = "ecmp",
                        faults: Any = None, **params: Any) -> CollectiveResult:
    """Simulate one collective alone on ``topology`` (a Topology, file or shorthand).

    ``faults`` (fault models or mappings, see :mod:`commsim.faults`) happen at their
    times counted from the collective's start; a stall raises :class:`~commsim.errors.StallError`.
    """
    from commsim.simulation import Simulation

    topo, group = _prepare(topology, ranks, algorithm, params)
    config = config or CollectiveConfig()
    sim = Simulation(topo, seed=seed, routing=routing, record_usage=False)
    if faults:
        sim.schedule_faults(faults)
    run = run_collective(sim, op, group, nbytes, algorithm=algorithm, config=config, **params)
    sim.advance()
    time = run.time
    algbw = nbytes / time if time > 0 else float("inf")
    closed = float("nan")
    if (op, algorithm) in CLOSED_FORMS:
        paths = _closed_form_parameters(topo, group, run.schedule, config.step_latency, params, sim.network.router)
        closed = closed_form_time(op, algorithm, len(group), nbytes, efficiency=config.bandwidth_efficiency,
                                  **paths, **params)
    return CollectiveResult(op=op, algorithm=algorithm, ranks=len(group), size=nbytes, time=time, algbw=algbw,
                            busbw=algbw * bus_factor(op, len(group)), closed_form=closed,
                            wire_bytes=run.wire_bytes, rank_end=run.rank_end - run.start_time)
