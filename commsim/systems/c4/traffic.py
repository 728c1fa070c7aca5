"""Ring all-reduces of C4's jobs on the fabric as ordinary collectives, with ECMP or C4P paths.

A ring all-reduce of ``S`` bytes over ``n`` ranks moves ``2 (n - 1) / n x S`` bytes
over every ring connection ``i -> i + 1``. NCCL/ACCL carry a connection on
``qps`` queue pairs (QPs), each a flow with its own ECMP hash, and split the
bytes evenly over them. Each ring is the shared ring all-reduce schedule with
``qps`` channels run by :class:`~commsim.collectives.CollectiveRun` in *flows*
mode with one flow per connection and channel (``channel_flows``): every QP's
bytes are one fluid flow after the latency of the ring's ``2 (n - 1)`` steps,
so one QP pinned to a congested port or uplink slows its ring exactly as a hash
collision does.

Rings start when all their members have arrived (``start`` per ring); a
:class:`~commsim.collectives.TransferObserver` keeps per-QP start and delivery
times and paths, which is what C4D's per-connection timing monitor sees. With
``routing="planned"`` a :class:`~commsim.systems.c4.planner.C4PRouter` becomes the
network's router (:meth:`~commsim.network.network.Network.use_router`) and plans
every QP the collectives will send before the first byte moves. Faults
(:mod:`commsim.faults` models) are applied by the simulation's fault injector.

>>> from commsim.network.generators import rail_optimized
>>> topo = rail_optimized(servers=4, gpus_per_server=1, nic_ports=2, port_bandwidth=25e9, spines=1,
...                       link_latency=0.0, switch_latency=0.0, pcie_latency=0.0)
>>> ring = Ring(members=("gpu0", "gpu1", "gpu2", "gpu3"), nbytes=4e9)
>>> one = RingSim(topo, [ring], qps=1).run()       # one QP uses one 25 GB/s port
>>> two = RingSim(topo, [ring], qps=2, routing="planned").run()   # planned: one QP per port
>>> round(float(one.ring_time[0]), 3), round(float(two.ring_time[0]), 3)   # 2 x 3/4 x 4 GB at 25, 50 GB/s
(0.24, 0.12)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from commsim.collectives import CollectiveConfig, CollectiveRun, Schedule, build_schedule
from commsim.collectives.hierarchical import hierarchical_phases
from commsim.errors import ConfigError
from commsim.network.network import TransferBatch
from commsim.network.topology import Topology
from commsim.simulation import Simulation
from commsim.systems.c4.planner import C4PRouter

__all__ = ["Ring", "RingResult", "RingSim", "Routing", "switch_links"]

Routing = Literal["ecmp", "planned"]


@dataclass(frozen=True)
class Ring:
    """One all-reduce of ``nbytes`` over ``members`` (device names in ring order) for job ``job``.

    A ring all-reduce by default; with ``ranks_per_node`` the shared hierarchical
    all-reduce (:func:`~commsim.collectives.hierarchical.hierarchical_phases`: ring
    reduce-scatter in every node, ring all-reduce per rail across nodes, ring
    all-gather), its phases one after another.
    """

    members: tuple[str, ...]
    nbytes: float
    job: int = 0
    label: str = ""
    ranks_per_node: int | None = None

    @property
    def connection_bytes(self) -> float:
        """Bytes every connection of the ring across the fabric carries: ``2 (m - 1) / m x`` its share.

        ``m`` is the ring's length (the nodes, for a hierarchical all-reduce, whose
        rail rings carry ``nbytes / ranks_per_node`` each).
        """
        local = self.ranks_per_node or 1
        m = len(self.members) // local
        return 2.0 * (m - 1) / m * self.nbytes / local if m > 1 else 0.0

    def schedules(self, qps: int) -> list[Schedule]:
        """The shared schedules of this all-reduce, phase by phase, with ``qps`` channels."""
        n = len(self.members)
        if self.ranks_per_node is None:
            return [build_schedule("all_reduce", "ring", n, self.nbytes, channels=qps)]
        return hierarchical_phases(n, self.nbytes, ranks_per_node=self.ranks_per_node, channels=qps)


@dataclass
class RingResult:
    """Per-QP and per-ring timing of a :class:`RingSim` run (seconds, NaN = never finished).

    ``qps`` has one row per QP: ring, job, position, qp, src, dst (device names),
    key, phase, bytes, start, end, path (edge tuple). ``ring_start``/``ring_time``/
    ``ring_latency`` per all-reduce (its latency: what its phases spend before and
    after their bytes move); ``phase_time``/``phase_latency`` per all-reduce and
    phase; ``edge_flows``/``edge_bytes`` count QPs and bytes per directed edge of
    the compiled topology; ``result`` is the simulation's result.
    """

    qps: pd.DataFrame
    ring_start: np.ndarray
    ring_time: np.ndarray
    ring_latency: np.ndarray
    phase_time: list[list[float]]
    phase_latency: list[list[float]]
    edge_flows: np.ndarray
    edge_bytes: np.ndarray
    rings: list[Ring]
    result: object = None
    sim: Simulation | None = None

    def qps_on(self, a: str, b: str) -> int:
        """QPs whose path crossed the link between nodes ``a`` and ``b`` (either direction)."""
        c = self.sim.network.compiled   # type: ignore[union-attr]  # RingSim.run sets sim
        return int(sum(self.edge_flows[c.edge_index[(c.index[u], c.index[v])]] for u, v in ((a, b), (b, a))))

    def check_finished(self, what: str) -> None:
        """Raise :class:`~commsim.errors.ConfigError` when an all-reduce of ``what`` never finished.

        Only the scenario's faults can stall these runs (a link down under QPs that
        keep their paths, or no route left); the study cannot measure anything then.
        """
        stuck = [self.rings[r].label or f"ring {r}" for r in np.flatnonzero(np.isnan(self.ring_time)).tolist()]
        if stuck:
            raise ConfigError(field="faults", value=", ".join(stuck[:3]),
                              rule=f"stall {what}: a link failed under running QPs (which keep their paths) "
                                   "or left no route",
                              fix="fail links at time 0 (the collectives then route around them) or give the "
                                  "outage a duration")


def switch_links(topology: Topology) -> list[tuple[str, str]]:
    """Links between two switches (leaf-spine uplinks), each once as ``(lower tier, upper tier)``."""
    graph = topology.graph
    out = []
    for a, b in graph.edges():
        if topology.kind(a) == "switch" and topology.kind(b) == "switch":
            ta, tb = graph.nodes[a].get("tier", 0), graph.nodes[b].get("tier", 0)
            if (ta, a) < (tb, b):
                out.append((a, b))
    return sorted(out)


class RingSim:
    """Ring all-reduces of many jobs at once, QP by QP, on a fresh :class:`~commsim.simulation.Simulation`.

    Parameters
    ----------
    topology:
        The fabric.
    rings:
        The rings (several jobs may share the fabric).
    qps:
        QPs per ring connection (each its own ECMP hash and planned path).
    routing:
        ``"ecmp"`` (the switches hash each QP) or ``"planned"`` (C4P).
    seed:
        ECMP hash seed.
    replan:
        With ``"planned"``: move flows off failed links (C4P) or hash them (static plan).
    reroute:
        Move running flows off a link that fails mid-run (False: RDMA QPs keep their
        path and stall, as a broken connection does).
    step_latency:
        Software latency of each ring step, seconds (route latency comes from the topology).
    record_usage:
        Keep link-load changes for the dashboard's utilisation view.
    faults:
        Faults (:mod:`commsim.faults` models or mappings) at times from the start of the run.
    """

    def __init__(self, topology: Topology, rings: Sequence[Ring], *, qps: int = 2, routing: Routing = "ecmp",
                 seed: int = 0, replan: bool = True, reroute: bool = False, step_latency: float = 0.0,
                 record_usage: bool = False, faults: Iterable[Any] = ()) -> None:
        if qps < 1:
            raise ConfigError(field="qps", value=qps, rule="must be at least 1", fix="use 1 or more QPs per connection")
        if routing not in ("ecmp", "planned"):
            raise ConfigError(field="routing", value=routing, rule="is not a C4 routing variant",
                              fix="use 'ecmp' or 'planned'")
        self.topology = topology
        self.rings = list(rings)
        self.qps = qps
        self.step_latency = float(step_latency)
        self.sim = Simulation(topology, seed=seed, record_usage=record_usage, reroute=reroute)
        self.network = self.sim.network
        config = CollectiveConfig(mode="flows", channel_flows=True, step_latency=self.step_latency, record="none")
        self.phases: list[list[CollectiveRun]] = []
        self._where: dict[int, tuple[int, int, np.ndarray]] = {}   # id(run) -> (ring, phase, row of each entry)
        columns: dict[str, list[Any]] = {k: [] for k in ("ring", "phase", "pos", "qp", "src", "dst", "bytes", "key",
                                                          "src_node", "dst_node")}
        for r, ring in enumerate(self.rings):
            runs: list[CollectiveRun] = []
            for k, schedule in enumerate(ring.schedules(qps) if len(ring.members) > 1 else []):
                run = CollectiveRun(self.sim, schedule, list(ring.members), config, label=ring.label or "c4 ring",
                                    observer=self)
                if runs:   # the next phase starts when this one is done everywhere
                    run.start_after(runs[-1])
                runs.append(run)
                step = run.schedule.steps[0]   # flows mode: one step, one entry per connection and QP
                s_node, d_node, key = run.flows()
                order = np.lexsort((step.channel, step.src))    # rows by position, then QP
                row = np.empty_like(order)
                row[order] = len(columns["ring"]) + np.arange(order.shape[0])
                self._where[id(run)] = (r, k, row)
                for name, values in (("pos", step.src), ("qp", step.channel), ("bytes", step.nbytes), ("key", key),
                                     ("src_node", s_node), ("dst_node", d_node)):
                    columns[name] += values[order].tolist()
                columns["src"] += [ring.members[i] for i in step.src[order].tolist()]
                columns["dst"] += [ring.members[i] for i in step.dst[order].tolist()]
                columns["ring"] += [r] * order.shape[0]
                columns["phase"] += [k] * order.shape[0]
            self.phases.append(runs)
        self.columns = columns
        """Per QP (row): its ring, phase, position, QP, devices, bytes, ECMP key and route end nodes."""
        self.router: C4PRouter | None = None
        if routing == "planned":
            self.router = C4PRouter(topology, seed=seed, replan=replan)
            self.network.use_router(self.router)
            self.router.plan(columns["src_node"], columns["dst_node"], columns["key"])
        self.sim.schedule_faults(faults)
        self.start_time = np.full(len(columns["ring"]), math.nan)
        self.end_time = np.full(len(columns["ring"]), math.nan)
        self.ring_start = np.full(len(self.rings), math.nan)
        self._latency = [[0.0] * len(runs) for runs in self.phases]
        self._started = False
        self._batches: list[tuple[np.ndarray, TransferBatch]] = []

    # ------------------------------------------------------------------ the collectives' transfers
    def sent(self, run: CollectiveRun, step: int, entries: np.ndarray, batch: TransferBatch) -> None:
        """Observer: QPs of a phase left, after its steps' latency; with their routes', the phase's latency."""
        r, k, row = self._where[id(run)]
        now = self.sim.now
        self.start_time[row[entries]] = now
        self._latency[r][k] = now - run.start_time + float(batch.routes.latency.max(initial=0.0))
        self._batches.append((row[entries], batch))

    def done(self, run: CollectiveRun, step: int, entries: np.ndarray, time: float) -> None:
        """Observer: QPs of a phase delivered their bytes."""
        self.end_time[self._where[id(run)][2][entries]] = time

    # ------------------------------------------------------------------ running
    def start(self, ring_start: Sequence[float] | np.ndarray | None = None) -> None:
        """Start ring ``r`` at ``ring_start[r]`` (default 0; NaN: never -- a member never arrived)."""
        starts = np.zeros(len(self.rings)) if ring_start is None else np.asarray(ring_start, dtype=float)
        if starts.shape != (len(self.rings),):
            raise ConfigError(field="ring_start", value=len(starts), rule=f"needs one time per ring ({len(self.rings)})",
                              fix="give a start time for every ring")
        self.ring_start = starts.copy()
        self._started = True
        for t, runs in zip(starts.tolist(), self.phases, strict=True):
            if runs and not math.isnan(t):
                runs[0].start_at(t)

    def run(self, until: float | None = None) -> RingResult:
        """Run to the end (stalled QPs stay unfinished: ``end`` NaN) and summarise."""
        if not self._started:
            self.start()
        result = self.sim.run(until=until, on_stall="report")
        q = self.columns
        paths: list[tuple[int, ...]] = [()] * len(q["ring"])
        for rows, batch in self._batches:   # the final paths (flows may have been re-routed)
            for j, i in enumerate(rows.tolist()):
                paths[i] = batch.routes.paths[j] or ()
        n_edges = self.network.compiled.edge_src.shape[0]
        flows = np.zeros(n_edges, dtype=np.int64)
        volume = np.zeros(n_edges)
        for i, path in enumerate(paths):
            if path:
                flows[list(path)] += 1
                volume[list(path)] += q["bytes"][i]
        phase_time = [[c.time if c.done.triggered else math.nan for c in runs] for runs in self.phases]
        ring_time = np.array([runs[-1].end_time - start if runs and runs[-1].done.triggered else math.nan
                              for runs, start in zip(self.phases, self.ring_start.tolist(), strict=True)])
        qps = pd.DataFrame({
            "ring": q["ring"], "job": [self.rings[r].job for r in q["ring"]], "phase": q["phase"], "pos": q["pos"],
            "qp": q["qp"], "src": q["src"], "dst": q["dst"], "key": q["key"], "bytes": q["bytes"],
            "start": self.start_time, "end": self.end_time, "path": paths,
        })
        return RingResult(qps=qps, ring_start=self.ring_start.copy(), ring_time=ring_time,
                          ring_latency=np.array([sum(lat) for lat in self._latency]), phase_time=phase_time,
                          phase_latency=[list(lat) for lat in self._latency], edge_flows=flows, edge_bytes=volume,
                          rings=self.rings, result=result, sim=self.sim)
