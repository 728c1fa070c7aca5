"""Where a replay may skip the fluid kernel and stay exact: the analysis behind ``Replay(fast=True)``.

A replay spends most of its time asking the fluid kernel how long an op takes
while other activities share its resources. Two kinds of op cannot share
anything, and for them the answer is known without asking:

**Compute on a private device.** A device's compute and memory-bandwidth
resources are used only by the replay's compute ops when collectives charge no
reduction to devices, the trace reads no disk and no fault is scheduled. If every
program keeps its compute ops on one stream and no two ranks share a device,
at most one kernel runs on a device at a time, alone: it takes its roofline time
``launch overhead + max(F / (peak · efficiency), B / bandwidth)`` at the
device's current capacities — what the kernel would compute, without the kernel.

**Collectives on private links.** The links a collective's transfers use follow
from its schedule and the routes (:meth:`~commsim.collectives.CollectiveRun.links`).
A group whose links no other group of the trace and no send/recv pair can use,
and whose collectives come from a single stream in each program (so they never
overlap each other), always sees the same empty fabric: its first run of a
given collective and size is simulated, later ones reuse that run's timing
(each member's end relative to the launch).

Both are equalities, not approximations: the results equal the full replay's up
to floating-point rounding. Anything the analysis cannot prove private takes the
ordinary path.

**Reused collectives** (``Replay(reuse_collectives=True)``, an approximation that
says so): every group's first run of a given collective and size is simulated in
the kernel, in whatever traffic there is at the time, and later runs reuse its
timing whether or not the group's links are private — later runs ignore (and
cause) no contention. A layout search uses it: a data-parallel gradient
reduction is hundreds of identical buckets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from commsim.collectives import CollectiveRun
from commsim.devices.device import kernel_activity, launch_delay

__all__ = ["Shortcuts"]

_KNOWN_LINKS: dict[tuple[Any, ...], tuple[Any, dict[tuple[Any, ...], list[int]]]] = {}
"""Links of collectives and send/recv pairs per fabric (see :func:`_known_links`)."""


def _known_links(replay: Any) -> dict[tuple[Any, ...], list[int]]:
    """The links already found for ``replay``'s fabric, by collective (kind, algorithm, bytes, root, nodes) or pairs.

    Routes at the start of a replay without faults follow from the topology, the links down, the routing policy
    and seed and the flows' ECMP keys alone, and a collective's schedule from its arguments, the channels, the algorithm
    options and the collective model: replays of the same topology with them equal (the probe and the periodic
    replays of a layout, the layouts of a search) find the same links, so they are found once. The topology
    object itself is kept with its entry, so an entry never outlives it under a reused ``id``.
    """
    sim = replay.sim
    resources = sim.network.link_resources()
    router = sim.network.router
    context = (id(sim.topology), sim.seed, router.policy, tuple(sorted(router.failed)),
               int(resources[0]) if resources.size else 0, int(resources.size), replay.channels, repr(replay.algorithm_options), repr(replay.collective))
    entry = _KNOWN_LINKS.get(context)
    if entry is None or entry[0] is not sim.topology:
        if len(_KNOWN_LINKS) >= 8:
            _KNOWN_LINKS.clear()
        entry = _KNOWN_LINKS[context] = (sim.topology, {})
    if len(entry[1]) > 1 << 14:
        entry[1].clear()
    return entry[1]


Timing = tuple[float, np.ndarray]
"""A remembered collective run: (time from launch to the group's completion, each member's end - launch)."""


class Shortcuts:
    """The exact shortcuts a :class:`~commsim.workloads.replay.Replay` may take (see the module docstring).

    ``compute`` says whether compute ops skip the kernel; ``private`` holds the
    groups whose collectives are remembered; ``notes`` says why a shortcut is off.
    """

    def __init__(self, replay: Any, schedule_of: Callable[[str, str, float, int, int, list[str]], Any],
                 reuse_all: bool = False, store: dict[tuple[Any, ...], Timing] | None = None) -> None:
        self.notes: list[str] = []
        self.compute = self._compute_allowed(replay)
        self.reuse_all = reuse_all and not replay.sim.faults.scheduled
        self.private = self._private_groups(replay, schedule_of)
        if self.reuse_all:
            self.notes.append("reused collectives: each group's first run of a collective is simulated, later "
                              "identical runs take its timing (approximate where the group's links are shared)")
        # remembered timings; a store shared by replays of one system keeps reused timings alike between them
        self._timings: dict[tuple[Any, ...], Timing] = {} if store is None else store
        self._durations: dict[tuple[Any, ...], float] = {}
        self._kernel = replay.sim.kernel
        self.known: dict[int, list[tuple[Any, np.ndarray]]] = {}
        """Per cohort: one device of each spec it holds, and the positions of the devices of that spec."""
        self.owners: dict[int, set[Any]]
        """Per link: the groups (rank tuples) and ``"p2p"`` (send/recv pairs) of the trace that can use it."""
        self.links_of: dict[tuple[int, ...], set[int]]
        """Per group: the links its collectives use."""

    # ------------------------------------------------------------------ analysis
    def _compute_allowed(self, replay: Any) -> bool:
        sim, trace = replay.sim, replay.trace
        reasons = []
        if replay.collective.reduction:
            reasons.append("collectives charge reductions to devices")
        if sim.faults.scheduled:
            reasons.append("faults are scheduled")
        if len(set(replay.devices[: trace.ranks])) < trace.ranks:
            reasons.append("ranks share a device")
        for program in trace.programs:
            streams = {op.stream for op in program.ops if op.kind == "compute"}
            if any(op.kind == "disk_read" for op in program.ops):
                reasons.append(f"program {program.name!r} reads disk")
            if len(streams) > 1:
                reasons.append(f"program {program.name!r} computes on several streams ({', '.join(sorted(streams))})")
        if reasons:
            self.notes.append("fast replay: compute runs in the kernel because " + "; ".join(reasons[:3]))
        return not reasons

    def _private_groups(self, replay: Any, schedule_of: Callable[..., Any]) -> frozenset[tuple[int, ...]]:
        sim, trace, index = replay.sim, replay.trace, replay.index
        self.owners, self.links_of = {}, {}
        if sim.faults.scheduled:
            self.notes.append("fast replay: collectives run in the kernel because faults are scheduled")
            return frozenset()
        # the distinct collective kinds per (program, group spec) first, then each rank's group: a trace
        # repeats the same few collectives thousands of times
        kinds: dict[tuple[int, Any], dict[tuple[str, str, int], float]] = defaultdict(dict)
        streams: dict[tuple[int, Any], set[str]] = defaultdict(set)
        p2p: set[tuple[int, Any]] = set()
        for p, program in enumerate(trace.programs):
            for op in program.ops:
                if op.kind == "collective":
                    spec = op.group if isinstance(op.group, str) else tuple(op.group)
                    kinds[(p, spec)].setdefault((op.op, replay.algorithm_of(op), op.root_index), float(op.bytes))
                    streams[(p, spec)].add(op.stream)
                elif op.kind in ("send", "recv"):
                    p2p.add((p, op.peer))
        group_kinds: dict[tuple[int, ...], dict[tuple[str, str, int], float]] = defaultdict(dict)
        group_streams: dict[tuple[int, ...], set[tuple[int, str]]] = defaultdict(set)
        for (p, spec), used in kinds.items():
            for rank in trace.programs[p].rank_list():
                group = tuple(index.resolve_group(rank, spec if isinstance(spec, str) else list(spec)))
                group_kinds[group].update(used)
                group_streams[group].update((p, s) for s in streams[(p, spec)])
        owners: dict[int, set[Any]] = defaultdict(set)
        links_of: dict[tuple[int, ...], set[int]] = defaultdict(set)
        known = _known_links(replay)
        for group, used in group_kinds.items():
            nodes = [replay.devices[r] for r in group]
            for (kind, algorithm, root), nbytes in used.items():
                key = (kind, algorithm, nbytes, root, tuple(nodes))
                links = known.get(key)
                if links is None:
                    schedule = schedule_of(kind, algorithm, nbytes, len(group), root, nodes)
                    links = known[key] = CollectiveRun(sim, schedule, nodes, replay.collective).links().tolist()
                links_of[group].update(links)
            for link in links_of[group]:
                owners[link].add(group)
        pairs: set[tuple[int, int]] = set()
        for p, peer in p2p:
            for rank in trace.programs[p].rank_list():
                other = index.resolve_peer(rank, peer)
                pairs.update({(rank, other), (other, rank)})
        if pairs:
            ordered = sorted(pairs)
            key = ("p2p", trace.ranks, tuple((replay.devices[s], replay.devices[d]) for s, d in ordered))
            links = known.get(key)
            if links is None:
                routes = sim.network.routes([replay.devices[s] for s, _ in ordered],
                                            [replay.devices[d] for _, d in ordered],
                                            [s * trace.ranks + d for s, d in ordered])
                links = known[key] = np.unique(routes.resources).tolist()
            for link in links:
                owners[link].add("p2p")
        self.owners, self.links_of = dict(owners), dict(links_of)
        private = set()
        for group, links in links_of.items():
            programs = {q for q, _ in group_streams[group]}
            one_stream = all(len({s for q, s in group_streams[group] if q == p}) == 1 for p in programs)
            if one_stream and all(len(owners[link]) == 1 for link in links):
                private.add(group)
        if group_kinds and not private:
            self.notes.append("fast replay: no communicator group has links of its own; collectives run in the kernel")
        return frozenset(private)

    # ------------------------------------------------------------------ compute
    def compute_times(self, cohort: int, devices: list[Any] | None, op: Any) -> tuple[float, np.ndarray | None]:
        """Time of compute ``op`` alone on each device of ``cohort`` (launch overhead included), seconds.

        Returns the longest time and the per-device times, or ``None`` for them
        when every device of the cohort has the same spec and capacities (taken
        when the cohort's first compute op starts; no fault changes them later). ``devices`` (the
        cohort's, in rank order) is needed the first time a cohort is seen only.
        """
        kinds = self.known.get(cohort)
        if kinds is None:
            assert devices is not None
            # devices alike: the same spec at the same capacities (a straggler slowed before the run differs)
            alike: dict[tuple[Any, ...], list[int]] = defaultdict(list)
            for k, device in enumerate(devices):
                caps = self._kernel.capacity(np.array([device.compute_resource, device.memory_resource]))
                alike[(id(device.spec), *caps.tolist())].append(k)
            kinds = self.known[cohort] = [(devices[ks[0]], np.array(ks)) for ks in alike.values()]
        if len(kinds) == 1:
            return self._alone(kinds[0][0], op), None
        times = np.empty(sum(len(ks) for _, ks in kinds))
        for device, ks in kinds:
            times[ks] = self._alone(device, op)
        return float(times.max()), times

    def _alone(self, device: Any, op: Any) -> float:
        shape = op.kernel_shape()
        key = (device.compute_resource, op.flops, op.bytes, op.dtype, op.efficiency, shape)
        value = self._durations.get(key)
        if value is None:
            amount, (c_compute, c_memory) = kernel_activity(device.spec, op.flops, op.bytes, op.dtype, op.efficiency,
                                                            kernel=shape)
            caps = self._kernel.capacity(np.array([device.compute_resource, device.memory_resource]))
            rate = min(caps[0] / c_compute if c_compute > 0 else math.inf,
                       caps[1] / c_memory if c_memory > 0 else math.inf)
            value = launch_delay(device.spec, shape) + amount / rate
            if len(self._durations) < 1 << 16:
                self._durations[key] = value
        return value

    # ------------------------------------------------------------------ collectives
    def timing(self, key: tuple[Any, ...]) -> Timing | None:
        """The remembered timing of collective ``key`` = (kind, algorithm, bytes, size, root, group), if private and known."""
        return self._timings.get(key)

    def remember(self, key: tuple[Any, ...], done: float, ends: np.ndarray) -> None:
        """Keep a private group's run of ``key``: completion and member ends, relative to its launch."""
        if (self.reuse_all or key[-1] in self.private) and key not in self._timings:
            self._timings[key] = (done, ends.copy())
