"""Run what the NCCL model chose on the simulator.

The tuner's pick (:func:`commsim.collectives.nccl.tune`) becomes

* a schedule from the registry (``ring``; any other algorithm with an NCCL time
  model the same way), its channels relabelled so that each channel is its own
  ring: the ranks of a server are visited together and a channel enters and
  leaves a server on the same rail (NIC ``r`` of one server talks to NIC ``r`` of
  the next), one rail per channel, as NCCL's ring search arranges them; and
* a :class:`~commsim.collectives.CollectiveConfig` holding the protocol's costs:
  launch latency, local and remote per-step latency, and the bandwidth
  efficiencies (link-class efficiency x protocol factor).

A one-rank collective is a copy on the device (a kernel of ``2 x bytes`` of memory
traffic), as NCCL does for an out-of-place call on one rank.

>>> r = simulate_nccl("nvswitch_node:8,300GB/s,350ns", "all_reduce", 2.0**30, protocol="Simple")
>>> r.protocol, r.channels, round(r.time * 1e6, 1), round(r.predicted * 1e6, 1)
('Simple', 1, 6287.2, 6287.2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from simpy.events import Event

from commsim.collectives._executor import CollectiveConfig, CollectiveRun
from commsim.collectives._registry import build_schedule
from commsim.collectives._schedule import Dep, Schedule, Step
from commsim.collectives.closed_form import bus_factor
from commsim.collectives.nccl import (
    Choice,
    Cluster,
    NcclParameters,
    describe_cluster,
    nvls_chunks,
    p2p_rates,
    p2p_remote_hop_latency,
    p2p_serial_latency,
    resolve_parameters,
    ring_latency,
    schedule_of,
    tree_remote_hop_latency,
    tune,
)
from commsim.collectives.nvls import nvls_schedule
from commsim.devices.device import start_kernels
from commsim.errors import ConfigError
from commsim.network.topology import Topology

__all__ = ["PXN_CHUNKS", "STEP_LIMIT", "NcclResult", "channel_orders", "collective_config", "nccl_schedule",
           "rail_local", "run_nccl", "simulate_nccl", "simulate_nccl_sizes", "spread_group"]


def channel_orders(cluster: Cluster, channels: int) -> np.ndarray:
    """Ring order (group positions) of each channel, shape ``(channels, ranks)``.

    Inside a server the ring runs from the rank it entered at to the rank it
    leaves from; consecutive servers hand over on the same local index (rail).
    Entry ranks alternate between ``a = c`` and ``b = c + 1`` (mod ranks per
    server) for channel ``c``, and an odd server count ends on ``c + 2``, so no
    hand-over crosses rails when a server has 3 or more ranks. When GPUs share
    NICs (fewer rails than ranks per server), channel ``c`` enters every server at
    the first GPU behind NIC ``c mod rails`` and leaves from the last one.

    >>> from commsim.network.loader import load_topology
    >>> topo = load_topology("rail_optimized:2,4,50GB/s")
    >>> channel_orders(describe_cluster(topo, topo.devices), 2).tolist()
    [[0, 2, 3, 1, 5, 6, 7, 4], [1, 3, 0, 2, 6, 7, 4, 5]]
    """
    n, m, per = cluster.ranks, cluster.servers, cluster.ranks_per_server
    counts = np.bincount(cluster.server, minlength=m)
    if m == 1 or per == 1 or np.any(counts != per):
        # one server, one rank per server, or uneven servers: servers in order, ranks in order
        base = np.argsort(cluster.server * n + np.arange(n), kind="stable")
        return np.tile(base, (channels, 1))
    position = np.full((m, per), -1, dtype=np.int64)
    position[cluster.server, cluster.local] = np.arange(n)
    orders = np.empty((channels, n), dtype=np.int64)
    if cluster.rails < per and per % cluster.rails == 0:
        # GPUs share NICs (GPUs r g .. r g + g - 1 behind NIC r): channel c enters every server at the first GPU of
        # NIC c mod rails and leaves from the last, so each channel crosses between servers on one NIC of its own
        group = per // cluster.rails
        for c in range(channels):
            first = (c % cluster.rails) * group
            last = first + group - 1
            locals_ = [first, *[x for x in range(per) if x not in (first, last)]] + ([last] if last != first else [])
            orders[c] = position[:, locals_].ravel()
        return orders
    for c in range(channels):
        a, b, d = c % per, (c + 1) % per, (c + 2) % per
        entry = [a if k % 2 == 0 else b for k in range(m)]
        if m % 2 == 1 and per >= 3:
            entry[-1] = d
        ring: list[int] = []
        for k in range(m):
            first, last = entry[k], entry[(k + 1) % m]
            middle = [(first + j) % per for j in range(1, per)]
            middle = [x for x in middle if x != last] if last != first else middle
            locals_ = [first, *middle] + ([last] if last != first else [])
            ring.extend(int(position[k, x]) for x in locals_)
        orders[c] = ring
    return orders


def _relabel(schedule: Schedule, orders: np.ndarray) -> Schedule:
    """Move channel ``c``'s position ``p`` to ``orders[c, p]`` (arrays shared by steps stay shared)."""
    memo: dict[tuple[int, int], np.ndarray] = {}

    def move(arr: np.ndarray, channel: np.ndarray | int) -> np.ndarray:
        key = (id(arr), id(channel) if isinstance(channel, np.ndarray) else -1 - int(channel))
        if key not in memo:
            memo[key] = orders[channel, arr] if isinstance(channel, np.ndarray) else orders[int(channel)][arr]
        return memo[key]

    steps = [Step(src=move(s.src, s.channel), dst=move(s.dst, s.channel), nbytes=s.nbytes, deps=s.deps,
                  reduce=s.reduce, channel=s.channel, phase=s.phase) for s in schedule.steps]
    return Schedule(schedule.op, schedule.algorithm, schedule.ranks, schedule.nbytes, steps,
                    notes=f"{orders.shape[0]} channel rings; {schedule.notes}".rstrip("; "))


def nccl_schedule(cluster: Cluster, choice: Choice, nbytes: float) -> Schedule:
    """The schedule of ``choice`` on ``cluster``, channels laid on their rails."""
    if choice.algorithm == "ring":
        schedule = build_schedule(choice.op, "ring", cluster.ranks, nbytes, channels=choice.channels)
        return _relabel(schedule, channel_orders(cluster, choice.channels))
    if choice.algorithm == "tree":
        # hierarchical wants servers as consecutive blocks of positions: server k, local l at k L + l
        per = cluster.ranks_per_server
        schedule = build_schedule(choice.op, schedule_of("tree"), cluster.ranks, nbytes, ranks_per_node=per,
                                  inter="tree", channels=choice.channels)
        position = np.empty(cluster.ranks, dtype=np.int64)
        position[cluster.server * per + cluster.local] = np.arange(cluster.ranks)
        return _relabel(schedule, np.tile(position, (choice.channels, 1)))
    if choice.algorithm == "p2p":
        return rail_local(build_schedule(choice.op, "direct", cluster.ranks, nbytes), cluster)
    if choice.algorithm in ("nvls", "nvls_tree"):
        # positions n.. are the servers' NVLink switches (run_nccl appends them to the group)
        return nvls_schedule(cluster.server, cluster.local, nbytes, chunks=nvls_chunks(nbytes))
    raise ConfigError(field="algorithm", value=choice.algorithm, rule="has no schedule mapping",
                      fix="use 'ring', 'tree', 'nvls', 'nvls_tree' or 'p2p'")


STEP_LIMIT = 20_000
"""Transfers above which a schedule runs in the executor's ``flows`` mode (one flow per connection)."""

PXN_CHUNKS = 8
"""Chunks a PXN send is forwarded in (the NVLink hop of one overlaps the rail hop of the previous)."""


def rail_local(schedule: Schedule, cluster: Cluster) -> Schedule:
    """NCCL's PXN: a send to another server on another rail first crosses NVLink to the sender's peer on the
    receiver's rail, which sends it on that rail, so no transfer leaves its rail (no spine hop).

    Applies to one-step schedules (point-to-point collectives) on servers with one
    NIC per GPU; anything else is returned unchanged.
    """
    counts = np.bincount(cluster.server)
    rails_per_gpu = cluster.servers > 1 and cluster.rails == cluster.ranks_per_server > 1
    if not rails_per_gpu or np.any(counts != cluster.ranks_per_server) or len(schedule.steps) != 1:
        return schedule
    (step,) = schedule.steps
    position = np.empty((cluster.servers, cluster.ranks_per_server), dtype=np.int64)
    position[cluster.server, cluster.local] = np.arange(cluster.ranks)
    src, dst = step.src, step.dst
    cross = (cluster.server[src] != cluster.server[dst]) & (cluster.local[src] != cluster.local[dst])
    if not cross.any():
        return schedule
    proxy = position[cluster.server[src], cluster.local[dst]]
    moved = np.flatnonzero(cross)
    k = PXN_CHUNKS
    # the proxy forwards chunk j while the next one crosses NVLink: a pipeline of k chunks per moved send
    sizes = np.where(cross, step.nbytes / k, step.nbytes)
    steps = [Step(src=src, dst=np.where(cross, proxy, dst), nbytes=sizes, phase=f"{step.phase} (to rail 0)")]
    whole = np.arange(moved.size)
    first = [0]
    for j in range(1, k):
        first.append(len(steps))
        steps.append(Step(src=src[moved], dst=proxy[moved], nbytes=step.nbytes[moved] / k,
                          deps=(Dep(first[j - 1], moved if j == 1 else whole),), phase=f"{step.phase} (to rail {j})"))
    for j in range(k):
        deps = (Dep(first[j], moved if j == 0 else whole),) + ((Dep(len(steps) - 1, whole),) if j else ())
        steps.append(Step(src=proxy[moved], dst=dst[moved], nbytes=step.nbytes[moved] / k, deps=deps,
                          phase=f"{step.phase} (on rail {j})"))
    return Schedule(schedule.op, schedule.algorithm, schedule.ranks, schedule.nbytes, steps,
                    notes=f"PXN: {moved.size} sends moved to the receiver's rail in {k} chunks; "
                          f"{schedule.notes}".rstrip("; "))


def collective_config(params: NcclParameters, protocol: str, *, algorithm: str = "ring", op: str = "all_reduce",
                      cluster: Cluster | None = None, nbytes: float | None = None,
                      **options: Any) -> CollectiveConfig:
    """The protocol's costs as an executor configuration (``options`` go to CollectiveConfig).

    A ring (given ``cluster`` and the buffer's ``nbytes``) waits per step only on
    the latency its slices do not hide (:func:`~commsim.collectives.nccl.ring_latency`).
    NVLS runs its reduce and multicast at ``nvls_efficiency`` of NVLink after
    ``nvls_latency``; point-to-point runs at the NIC share of
    :func:`~commsim.collectives.nccl.p2p_rates` across servers (needs ``cluster``) and, given the
    buffer's ``nbytes``, inside a server at most what its point-to-point channels move; its
    network messages pay the rendezvous above the NIC's eager limit
    (:func:`~commsim.collectives.nccl.p2p_remote_hop_latency`) and its remote peers their
    serial cost before the data flows (:func:`~commsim.collectives.nccl.p2p_serial_latency`).
    """
    costs = params.protocols[protocol]
    options.setdefault("record", "none")
    local = params.local_efficiency * costs.bandwidth_factor
    remote = params.remote_efficiency * costs.bandwidth_factor
    launch, step, remote_step = costs.launch, costs.hop_latency, costs.remote_hop_latency
    if algorithm in ("nvls", "nvls_tree"):
        # chunks pipeline: the protocol latencies are paid once (launch and the two hops between servers), not per
        # chunk; the routes' own latencies stay on every transfer
        local, step, remote_step = params.nvls_efficiency, 0.0, 0.0
        hops = 2 * costs.remote_hop_latency if cluster is not None and cluster.servers > 1 else 0.0
        launch = costs.launch + params.nvls_latency + hops
    elif algorithm == "ring" and cluster is not None and nbytes is not None:
        # a step's slices hide part of its latency; the hidden part is paid once (see ring_latency)
        exposed = ring_latency(cluster, nbytes, params, protocol)
        step, remote_step, launch = float(exposed.local), float(exposed.remote), costs.launch + float(exposed.once)
    elif algorithm == "tree" and cluster is not None and nbytes is not None:
        # a tree step's network message pays its rendezvous above the NIC's eager limit
        remote_step = tree_remote_hop_latency(cluster, params, protocol, nbytes)
    elif algorithm == "p2p" and cluster is not None:
        rates = p2p_rates(cluster, op, params, costs)
        own = params.local_efficiency if params.p2p_local_efficiency is None else params.p2p_local_efficiency
        # a small send runs on few channels: the same links, a smaller share of them
        capped = rates[0] if nbytes is None else p2p_rates(cluster, op, params, costs, nbytes)[0]
        local = own * costs.bandwidth_factor * (capped / rates[0] if math.isfinite(rates[0]) else 1.0)
        if cluster.servers > 1:
            shared = min(1.0, cluster.rails / cluster.ranks_per_server) if op == "all_to_all" else 1.0
            remote = min(1.0, rates[1] / (cluster.remote_bandwidth * shared))
            if nbytes is not None:
                # a network message above the NIC's eager limit pays its rendezvous, as ring and tree steps do
                remote_step = float(p2p_remote_hop_latency(cluster, params, op, nbytes))
        # the host's proxy thread serves the remote peers one after another before their data flows
        launch = costs.launch + p2p_serial_latency(cluster, op, params)
    return CollectiveConfig(step_latency=step, remote_step_latency=remote_step,
                            bandwidth_efficiency=local, remote_efficiency=remote, launch_latency=launch, **options)


@dataclass(frozen=True)
class NcclResult:
    """One simulated NCCL call, reported as nccl-tests does (SI units: s, bytes, bytes/s).

    ``predicted`` is the model's closed-form time of the same choice.
    """

    op: str
    algorithm: str
    protocol: str
    channels: int
    ranks: int
    servers: int
    size: float
    time: float
    algbw: float
    busbw: float
    predicted: float
    wire_bytes: float


class _Copy:
    """A one-rank collective: launch, then a device copy (read and write of the buffer)."""

    def __init__(self, sim: Any, device: str, nbytes: float, params: NcclParameters) -> None:
        self.sim = sim
        self.done = Event(sim.env)
        self.start_time = sim.env.now
        self.end_time = math.nan
        self.wire_bytes = 0.0
        amount = 2.0 * nbytes / params.copy_efficiency

        def launch(_ev: Any) -> None:
            start_kernels([sim.devices[device]], 0.0, amount, on_done=lambda _ids, _tags: self._finish(),
                          describe=lambda _tag: f"one-rank copy on {device}")

        sim.env.timeout(params.copy_launch).callbacks.append(launch)

    def _finish(self) -> None:
        self.end_time = self.sim.env.now
        self.done.succeed(self.end_time)

    @property
    def time(self) -> float:
        return self.end_time - self.start_time


def run_nccl(sim: Any, op: str, group: list[str], nbytes: float, params: Any = None, *, algorithm: str = "auto",
             protocol: str = "auto", cluster: Cluster | None = None, label: str = "",
             **options: Any) -> tuple[Any, Choice]:
    """Start ``op`` on ``group`` in a running simulation the way the NCCL model would run it.

    Returns the run (its ``done`` event fires at the end, ``time`` is its
    duration) and the tuner's choice. ``options`` go to the CollectiveConfig;
    ``mode="auto"`` (the default) runs schedules of more than ``STEP_LIMIT``
    transfers as one flow per connection.
    """
    params = resolve_parameters(params)
    cluster = cluster or describe_cluster(sim.topology, group)
    choice = tune(cluster, op, nbytes, params, algorithm=algorithm, protocol=protocol)
    if cluster.ranks == 1:
        return _Copy(sim, group[0], nbytes, params), choice
    schedule = nccl_schedule(cluster, choice, nbytes)
    if options.get("mode", "auto") == "auto":
        # big schedules run as one flow per connection (exact for rings on uncongested paths, see CollectiveConfig)
        options["mode"] = "flows" if sum(len(step) for step in schedule.steps) > STEP_LIMIT else "steps"
    config = collective_config(params, choice.protocol, algorithm=choice.algorithm, op=op, cluster=cluster,
                               nbytes=nbytes, **options)
    members = list(group) + (list(cluster.switches) if choice.algorithm in ("nvls", "nvls_tree") else [])
    run = CollectiveRun(sim, schedule, members, config, label=label or f"{op}/{choice.algorithm}/{choice.protocol}")
    run.start()
    return run, choice


def spread_group(topology: Topology, ranks: int, servers: int | None = None) -> list[str]:
    """``ranks`` devices over the first ``servers`` servers, the same count on each, in rank order.

    Without ``servers`` (or on a topology without ``server`` attributes) the first
    ``ranks`` devices.
    """
    devices = topology.devices
    if not 1 <= ranks <= len(devices):
        raise ConfigError(field="ranks", value=ranks, rule=f"does not fit the topology's {len(devices)} devices",
                          fix=f"use 1..{len(devices)} ranks or a topology with more servers")
    if servers is None or servers <= 1:
        return devices[:ranks]
    by_server: dict[Any, list[str]] = {}
    for d in devices:
        by_server.setdefault(topology.node_attributes(d).get("server", 0), []).append(d)
    if ranks % servers or len(by_server) < servers:
        raise ConfigError(field="ranks", value=ranks, rule=f"cannot be spread evenly over {servers} servers of a "
                          f"topology with {len(by_server)}", fix="give a rank count divisible by the server count, "
                          "on a topology with enough servers")
    per = ranks // servers
    chosen = list(by_server.values())[:servers]
    if any(len(s) < per for s in chosen):
        raise ConfigError(field="ranks", value=ranks, rule=f"needs {per} devices per server",
                          fix="use fewer ranks per server")
    return [d for s in chosen for d in s[:per]]


def simulate_nccl(topology: Any, op: str, nbytes: float, *, ranks: Any = None, servers: int | None = None,
                  calibration: Any = None, algorithm: str = "auto", protocol: str = "auto", seed: int = 0,
                  overrides: dict[str, Any] | None = None) -> NcclResult:
    """Simulate one NCCL call alone on ``topology`` (a Topology, file or shorthand).

    ``ranks``: all devices (default), a count (spread over ``servers`` servers if
    given) or explicit ranks; ``calibration``: a calibration file or
    :class:`NcclParameters` (default: NCCL's constants); ``overrides`` go to the
    topology generator (``{"servers": 4}``).
    """
    return simulate_nccl_sizes(topology, op, [nbytes], ranks=ranks, servers=servers, calibration=calibration,
                               algorithm=algorithm, protocol=protocol, seed=seed, overrides=overrides)[0]


def simulate_nccl_sizes(topology: Any, op: str, sizes: list[float], *, ranks: Any = None,
                        servers: int | None = None, calibration: Any = None, algorithm: str = "auto",
                        protocol: str = "auto", seed: int = 0,
                        overrides: dict[str, Any] | None = None) -> list[NcclResult]:
    """:func:`simulate_nccl` for every size in ``sizes`` (bytes), one call after another in one simulation.

    Each call starts when the previous one ends, so none shares the fabric with
    another and each is timed alone, as nccl-tests times its sizes; the routes
    found for one size serve the next (what makes thousands of ranks affordable).
    """
    from commsim.collectives.api import resolve_group
    from commsim.network.loader import load_topology
    from commsim.simulation import Simulation

    topo = load_topology(topology, overrides=overrides)
    if isinstance(ranks, (int, np.integer)) and servers:
        group = spread_group(topo, int(ranks), servers)
    else:
        group = resolve_group(topo, ranks)
    params = resolve_parameters(calibration)
    cluster = describe_cluster(topo, group)
    sim = Simulation(topo, seed=seed, record_usage=False)
    runs: list[tuple[Any, Choice]] = []

    def start(index: int) -> None:
        run, choice = run_nccl(sim, op, group, sizes[index], params, algorithm=algorithm, protocol=protocol,
                               cluster=cluster)
        runs.append((run, choice))
        if index + 1 < len(sizes):
            run.done.callbacks.append(lambda _ev: start(index + 1))

    if sizes:
        start(0)
    sim.run()
    results = []
    for nbytes, (run, choice) in zip(sizes, runs, strict=True):
        time = run.time
        algbw = nbytes / time if time > 0 else math.inf
        results.append(NcclResult(op=op, algorithm=choice.algorithm, protocol=choice.protocol,
                                  channels=choice.channels, ranks=cluster.ranks, servers=cluster.servers, size=nbytes,
                                  time=time, algbw=algbw, busbw=algbw * bus_factor(op, cluster.ranks),
                                  predicted=choice.time, wire_bytes=run.wire_bytes))
    return results
