"""Run a collective schedule on a simulation: transfers as batches, dependencies as arrays.

Each step's ready entries go to the network as one batch; when some arrive, the
entries that waited for them are found through a precomputed reverse index and
launched together. Nothing here is a Python object per transfer, so a step of
4,096 flows costs a handful of numpy calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from simpy.events import Event

from commsim.collectives._lockstep import Lockstep
from commsim.collectives._schedule import Schedule, Step, aggregate, share_waits
from commsim.collectives.hooks import TransferHooks, TransferTerms
from commsim.devices.device import kernel_resources, start_kernels, start_kernels_on
from commsim.errors import ConfigError
from commsim.network.network import RouteSet, TransferBatch

if TYPE_CHECKING:
    from commsim.simulation import Simulation

__all__ = ["CollectiveConfig", "CollectiveRun", "TransferObserver"]

Recording = Literal["rank", "flows", "none"]
_ELEMENT_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1, "fp64": 8}


@dataclass(frozen=True)
class CollectiveConfig:
    """How a collective runs, beyond its schedule.

    Attributes
    ----------
    step_latency:
        Software and protocol latency before every transfer (NCCL's per-step
        latency), seconds; route latency comes on top from the topology.
    bandwidth_efficiency:
        Fraction of the wire that carries payload (e.g. 0.5 for NCCL's LL
        protocol): every transfer puts ``bytes / efficiency`` on the wire.
    reduction:
        Charge each reduction to the receiving device (``bytes / element`` FLOP and
        three times the bytes of memory traffic), so it contends with kernels.
    dtype:
        Element type of the buffer (for reduction cost).
    record:
        ``"rank"``: one span per rank; ``"flows"``: also every transfer; ``"none"``.
    flow_key:
        Salt of the flows' ECMP hash (one communicator keeps its paths across calls).
    priority:
        Kernel priority of the transfers.
    launch_latency:
        Fixed cost paid once before the first transfer (kernel launch and protocol
        set-up, NCCL's base latency), seconds.
    remote_step_latency, remote_efficiency:
        ``step_latency`` and ``bandwidth_efficiency`` of transfers between devices
        of different servers (their ``server`` attribute differs), when the
        network hop costs differ from the local ones (NCCL's NET vs NVLink
        latencies); ``None`` uses the local values.
    mode:
        ``"steps"`` runs every step of the schedule (exact); ``"flows"`` sends each
        connection's total bytes as one flow after the latency of the schedule's
        depth (see :func:`~commsim.collectives._schedule.aggregate`): exact for
        ring reduce-scatter/all-gather/all-reduce on uncongested paths, fully
        pipelined for chains, an approximation under contention, and far cheaper
        for big replays.
    channel_flows:
        In ``"flows"`` mode, one flow per connection *and channel* (each channel
        its own ECMP hash, like an RDMA connection's queue pairs) instead of one
        per connection.
    """

    step_latency: float = 0.0
    bandwidth_efficiency: float = 1.0
    reduction: bool = False
    dtype: str = "bf16"
    record: Recording = "rank"
    flow_key: int = 0
    priority: int = 0
    mode: Literal["steps", "flows"] = "steps"
    launch_latency: float = 0.0
    remote_step_latency: float | None = None
    remote_efficiency: float | None = None
    channel_flows: bool = False

    def __post_init__(self) -> None:
        for name in ("launch_latency", "remote_step_latency"):
            value = getattr(self, name)
            if value is not None and (not value >= 0 or not math.isfinite(value)):
                raise ConfigError(field=name, value=value, rule="must be a finite time >= 0",
                                  fix="give a latency in seconds, e.g. 5e-6")
        if self.remote_efficiency is not None and not 0 < self.remote_efficiency <= 1:
            raise ConfigError(field="remote_efficiency", value=self.remote_efficiency, rule="must be in (0, 1]",
                              fix="give the payload fraction of the network path, e.g. 0.9")
        if self.mode not in ("steps", "flows"):
            raise ConfigError(field="mode", value=self.mode, rule="is not a collective mode",
                              fix="use 'steps' (exact) or 'flows' (fast)")
        if not self.step_latency >= 0 or not math.isfinite(self.step_latency):
            raise ConfigError(field="step_latency", value=self.step_latency, rule="must be a finite time >= 0",
                              fix="give the per-step software latency in seconds, e.g. 5e-6")
        if not 0 < self.bandwidth_efficiency <= 1:
            raise ConfigError(field="bandwidth_efficiency", value=self.bandwidth_efficiency, rule="must be in (0, 1]",
                              fix="give the payload fraction of the wire, e.g. 0.5 for LL")
        if self.dtype not in _ELEMENT_BYTES:
            raise ConfigError(field="dtype", value=self.dtype, rule="is not a buffer element type",
                              fix=f"use one of {', '.join(_ELEMENT_BYTES)}")
        if self.record not in ("rank", "flows", "none"):
            raise ConfigError(field="record", value=self.record, rule="is not a recording level",
                              fix="use 'rank', 'flows' or 'none'")


class TransferObserver(Protocol):
    """Sees every transfer of a :class:`CollectiveRun`: when it leaves (with its routes) and when it is done.

    ``entries`` index the step ``step`` of ``run.schedule`` (the aggregated step in
    ``"flows"`` mode); ``batch.routes.paths`` follow the flows when they are re-routed.
    """

    def sent(self, run: CollectiveRun, step: int, entries: np.ndarray, batch: TransferBatch) -> None:
        """``entries`` of ``step`` went to the network as ``batch`` (its flow ``j`` is ``entries[j]``)."""

    def done(self, run: CollectiveRun, step: int, entries: np.ndarray, time: float) -> None:
        """``entries`` of ``step`` arrived (and were reduced) at ``time``, seconds."""


class CollectiveRun:
    """One collective running on ``group`` (device node names, by group position).

    Start it with :meth:`start`; ``done`` succeeds when every transfer has arrived
    (and been reduced). ``rank_end[i]`` is when position ``i`` finished its part.
    A schedule tiled over ``copies`` groups calls ``on_copy_done(copy, time)`` as
    each group finishes. An ``observer`` sees every transfer (per-flow timing and
    paths, e.g. a per-connection monitor).

    Two extension points serve mechanisms that drive a collective from outside
    (T3's tracker-triggered DMAs): ``gates`` maps a step to how many external
    events each of its entries also waits for (a chunk's DMA waits until its last
    tile is written); :meth:`release` delivers those events. ``hooks``
    (:class:`~commsim.collectives.hooks.TransferHooks`) adds resources, a rate cap
    and a weight to every batch of transfers and is told of their delivery.
    Both need ``mode="steps"``. ``coalesce`` sends the entries of a step that
    become ready at one instant from separate events (arrivals of different
    batches, releases) as one batch, at the end of the instant: fewer, larger
    batches when ranks drift apart (the same times).
    """

    def __init__(self, sim: Simulation, schedule: Schedule, group: list[str], config: CollectiveConfig,
                 *, label: str = "", copies: int = 1, on_copy_done: Callable[[int, float], None] | None = None,
                 observer: TransferObserver | None = None, gates: Mapping[int, np.ndarray] | None = None,
                 hooks: TransferHooks | None = None, coalesce: bool = False) -> None:
        if len(group) != schedule.ranks:
            raise ConfigError(field="group", value=len(group), rule=f"does not match the schedule's {schedule.ranks} "
                              "ranks", fix="build the schedule for the group size")
        if (gates or hooks is not None) and config.mode != "steps":
            raise ConfigError(field="mode", value=config.mode, rule="cannot gate or hook steps that flows mode "
                              "merges away", fix="run a gated or hooked collective with mode='steps'")
        self._gates = _check_gates(gates or {}, schedule)
        self._hooks = hooks
        self.sim = sim
        self._depth = 0
        if config.mode == "flows":
            schedule, self._depth = aggregate(schedule, by_channel=config.channel_flows)
        self.schedule = schedule
        self.group = list(group)
        self.config = config
        self.label = label or f"{schedule.op}/{schedule.algorithm}"
        self.done = Event(sim.env)
        self.start_time = math.nan
        self.end_time = math.nan
        self.rank_end = np.full(schedule.ranks, math.nan)
        self.wire_bytes = 0.0
        self._nodes = np.array([sim.network.router.node(g) for g in group], dtype=np.int64)
        self._devices = [sim.devices[g] for g in group] if config.reduction else []
        self._reducers: tuple[np.ndarray, np.ndarray, np.ndarray] | bool | None = None
        self._left = sum(len(s) for s in schedule.steps)
        # a tiled schedule (see _schedule.tile) runs several independent groups; each may finish on its own
        self._copy_size = schedule.ranks // copies
        self._copy_left = np.full(copies, self._left // copies, dtype=np.int64)
        self._on_copy_done = on_copy_done
        self._observer = observer
        self._counters: dict[int, np.ndarray] = {}
        self._released: dict[int, np.ndarray] = {}
        self._coalesce = coalesce
        self._queued: dict[int, list[np.ndarray]] = {}
        self._begun = False
        self._launched = np.zeros(len(schedule.steps), dtype=np.int64)
        self._dependents: list[list[tuple[int, np.ndarray, np.ndarray]]] = [[] for _ in schedule.steps]
        reverse_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for k, step in enumerate(schedule.steps):
            for dep in step.deps:
                size = len(schedule.steps[dep.step])
                key = (id(dep.index), size)
                if key not in reverse_cache:
                    reverse_cache[key] = _reverse(dep.index, size)
                order, ptr = reverse_cache[key]
                self._dependents[dep.step].append((k, order, ptr))
        self._routes: dict[tuple[int, int, int], RouteSet] = {}
        self._everything: dict[int, np.ndarray] = {}
        self._remote: dict[tuple[int, int], np.ndarray] = {}
        remote = config.remote_step_latency is not None or config.remote_efficiency is not None
        self._servers = _servers(sim, self.group) if remote else None
        # whole steps that would run alone go several at a time; per-transfer records, observers, external
        # gates, transfer hooks and coalescing all need each step's own sends
        plain = observer is None and not self._gates and hooks is None and not coalesce
        lockstep = config.mode == "steps" and config.record != "flows" and self._servers is None and plain
        self._lockstep = Lockstep(self) if lockstep else None

    # ------------------------------------------------------------------ running
    def start(self) -> Event:
        """Launch every entry that waits for nothing; return ``done``."""
        self.start_time = self.sim.env.now
        if self.config.launch_latency > 0:
            self.sim.env.timeout(self.config.launch_latency).callbacks.append(lambda _ev: self._begin())
        else:
            self._begin()
        return self.done

    def start_at(self, time: float) -> Event:
        """Launch at simulated time ``time`` (seconds; at once when it has passed); return ``done``.

        What a driver uses to start a collective at a given time (a job whose members
        arrive then) without touching the simulation's clock itself.
        """
        if not math.isfinite(time):
            raise ConfigError(field="start time", value=time, rule="is not a finite number of seconds",
                              fix="give the simulated time the collective starts at, in seconds")
        delay = time - self.sim.env.now
        if delay > 0:
            self.sim.env.timeout(delay).callbacks.append(lambda _ev: self.start())
        else:
            self.start()
        return self.done

    def start_after(self, other: CollectiveRun) -> Event:
        """Launch when ``other`` is done (phases of a collective run one after another); return ``done``."""
        if other.done.triggered:
            self.start()
        else:
            other.done.callbacks.append(lambda _ev: self.start())
        return self.done

    def _begin(self) -> None:
        self._begun = True
        if self._left == 0:
            self._finish()
            return
        share_waits(self.schedule)
        ready_of: dict[int, np.ndarray] = {}  # by waits array: steps share them
        for k, step in enumerate(self.schedule.steps):
            if len(step) and not step.deps and k not in self._gates:
                self._launch(k, np.arange(len(step)))
            elif len(step):
                if k in self._gates:
                    ready = np.flatnonzero(self._counter(k) == 0)
                else:
                    waits = step.waits
                    ready = ready_of.get(id(waits))
                    if ready is None:
                        ready = ready_of[id(waits)] = np.flatnonzero(waits == 0)
                if ready.size:
                    self._launch(k, ready)

    def _counter(self, k: int) -> np.ndarray:
        """What each entry of step ``k`` still waits for (earlier transfers and external events)."""
        counter = self._counters.get(k)
        if counter is None:
            waits = self.schedule.steps[k].waits
            gate = self._gates.get(k)
            counter = self._counters[k] = waits + gate if gate is not None else waits.copy()
        return counter

    def release(self, k: int, entries: np.ndarray, counts: np.ndarray | int = 1) -> None:
        """``counts`` of the external events that entries ``entries`` of step ``k`` wait for happened.

        Entries left waiting for nothing start at once. Releasing more events than
        an entry's gate holds raises :class:`~commsim.errors.ConfigError`.
        """
        entries = np.asarray(entries, dtype=np.int64)
        gate = self._gates.get(k)
        if gate is None or entries.size == 0:
            if entries.size:
                raise ConfigError(field="release", value=k, rule="names a step without external gates",
                                  fix="gate the step when creating the run (gates={step: counts})")
            return
        counts = np.broadcast_to(np.asarray(counts, dtype=np.int64), entries.shape)
        left = self._released.setdefault(k, gate.copy())
        np.subtract.at(left, entries, counts)
        if left[entries].min() < 0:
            raise ConfigError(field="release", value=f"step {k}, entry {int(entries[np.argmin(left[entries])])}",
                              rule="gets more external events than its gate holds",
                              fix="release each gated entry at most as many times as its gate count")
        counter = self._counter(k)
        np.subtract.at(counter, entries, counts)
        touched = np.unique(entries)
        ready = touched[counter[touched] == 0]
        if ready.size and self._begun:   # before the run begins, _begin launches them
            self._launch(k, ready)

    def _launch(self, k: int, entries: np.ndarray, *, may_chain: bool = True) -> None:
        size = len(self.schedule.steps[k])
        if entries.shape[0] == size:
            if may_chain and self._lockstep is not None and self._lockstep.worth_trying():
                # decided once everything else of this instant is in: it might share the step's links
                self.sim.kernel.at_instant_end(lambda: self._lockstep.launch(k))
                return
            # a whole step, in step order, so it lines up with the step's route set
            entries = self._all(size)
        self._launched[k] += entries.shape[0]
        if self._launched[k] >= len(self.schedule.steps[k]):
            self._counters.pop(k, None)
        latency = self.config.step_latency
        remote = self._remote_mask(k, entries)
        if remote is not None and remote.any() and self.config.remote_step_latency is not None:
            # local and remote entries wait for their own latencies (two batches)
            lat = np.where(remote, self.config.remote_step_latency, latency)
            values, groups = np.unique(lat, return_inverse=True)
            if values.shape[0] > 1 and not self._depth:
                for g, value in enumerate(values.tolist()):
                    part = entries[groups == g]
                    self.sim.env.timeout(value).callbacks.append(lambda _ev, p=part: self._send(k, p))
                return
            latency = float(values.max())
        if self._depth:
            # the aggregated flows stand for `depth` steps: their latencies come first
            routes = self._route_set(self.schedule.steps[k])
            latency = self._depth * latency + (self._depth - 1) * float(routes.latency.max(initial=0.0))
        if latency > 0:
            self.sim.env.timeout(latency).callbacks.append(lambda _ev: self._send(k, entries))
        else:
            self._send(k, entries)

    def _queue(self, k: int, entries: np.ndarray) -> None:
        """Hold ``entries`` of step ``k`` until the end of this instant (``coalesce``)."""
        if not self._queued:
            self.sim.env.timeout(0).callbacks.append(self._flush)
        self._queued.setdefault(k, []).append(entries)

    def _flush(self, _event: Event) -> None:
        queued, self._queued = self._queued, {}
        for k, parts in queued.items():
            entries = parts[0] if len(parts) == 1 else np.sort(np.concatenate(parts))
            if len(parts) > 1 and entries.shape[0] == len(self.schedule.steps[k]):
                entries = self._all(entries.shape[0])   # in step order, to line up with the step's route set
            self._send(k, entries, queued=True)

    def _send(self, k: int, entries: np.ndarray, *, queued: bool = False) -> None:
        if self._coalesce and not queued:
            self._queue(k, entries)
            return
        step = self.schedule.steps[k]
        routes = self._route_set(step)
        if entries.shape[0] != len(step):
            routes = routes.subset(entries)
        wire = step.nbytes[entries] / self.config.bandwidth_efficiency
        remote = self._remote_mask(k, entries)
        if remote is not None and self.config.remote_efficiency is not None:
            wire = np.where(remote, step.nbytes[entries] / self.config.remote_efficiency, wire)
        self.wire_bytes += float(wire.sum())
        hooks = self._hooks
        if hooks is None:
            terms, delivered = _PLAIN, lambda idx: self._arrived(k, entries[idx])
        else:
            terms = hooks.starting(k, entries, wire)

            def delivered(idx: np.ndarray) -> None:
                hooks.delivered(k, entries[idx])
                self._arrived(k, entries[idx])
        sent = self.sim.network.send(routes, wire, label=f"{self.label} step {k}", priority=self.config.priority,
                                     weight=terms.weight, cap=terms.cap, extra=terms.extra, on_delivered=delivered,
                                     record=self.config.record == "flows")
        if sent.routes is not routes and entries.shape[0] == len(step):
            self._routes[self._route_key(step)] = sent.routes  # routed again after a failure: keep the new ones
        if self._observer is not None:
            self._observer.sent(self, k, entries, sent)

    def _all(self, size: int) -> np.ndarray:
        everything = self._everything.get(size)
        if everything is None:
            everything = self._everything[size] = np.arange(size)
        return everything

    @staticmethod
    def _route_key(step: Step) -> tuple[int, int, int]:
        channel = step.channel
        return (id(step.src), id(step.dst), id(channel) if isinstance(channel, np.ndarray) else int(channel))

    def links(self) -> np.ndarray:
        """Kernel resources (directed links) that the transfers of this run would use, sorted and unique.

        Routes are those of the current fabric state, with the same ECMP keys the
        run uses, so a run started now puts its bytes on exactly these links.
        """
        parts = [self._route_set(step).resources for step in self.schedule.steps if len(step)]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def flows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source node, destination node and ECMP key of every distinct flow the run will send.

        A router that plans paths (rather than hashing them) plans these before
        :meth:`start`; the run's transfers then take the planned paths.
        """
        parts = [(self._nodes[step.src], self._nodes[step.dst], self._flow_keys(step))
                 for step in self.schedule.steps if len(step)]
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        src, dst, key = (np.concatenate([p[i] for p in parts]) for i in range(3))
        _, first = np.unique(np.stack([src, dst, key]), axis=1, return_index=True)
        first.sort()
        return src[first], dst[first], key[first]

    def _flow_keys(self, step: Step) -> np.ndarray:
        # the hash follows the endpoints, so one communicator keeps its paths whatever the batching
        n = len(self.sim.network.compiled.names)
        chan = step.channel.astype(np.int64) if isinstance(step.channel, np.ndarray) else step.channel
        keys = (self.config.flow_key * 64 + np.asarray(chan)) * n * n + self._nodes[step.src] * n + self._nodes[step.dst]
        return np.broadcast_to(keys, step.src.shape)

    def _route_set(self, step: Step) -> RouteSet:
        key = self._route_key(step)
        routes = self._routes.get(key)
        if routes is None:
            routes = self.sim.network.routes(self._nodes[step.src], self._nodes[step.dst], self._flow_keys(step))
            self._routes[key] = routes
        return routes

    def _remote_mask(self, k: int, entries: np.ndarray) -> np.ndarray | None:
        """Which of ``entries`` of step ``k`` cross servers (None when the config has no remote costs)."""
        if self._servers is None:
            return None
        step = self.schedule.steps[k]
        key = (id(step.src), id(step.dst))
        mask = self._remote.get(key)
        if mask is None:
            mask = self._servers[step.src] != self._servers[step.dst]
            self._remote[key] = mask
        return mask[entries]

    def _arrived(self, k: int, entries: np.ndarray) -> None:
        step = self.schedule.steps[k]
        if step.reduce and self.config.reduction:
            element = _ELEMENT_BYTES[self.config.dtype]
            size = step.nbytes[entries]
            if self._reducers is None:
                # resources and rates of every rank's device, looked up once, not once per transfer and step
                # (False: calibrated devices, whose compute model times each reduction)
                self._reducers = kernel_resources(self._devices, dtype=self.config.dtype) or False
            dst = step.dst[entries]
            done = lambda _ids, tags: self._complete(k, entries[tags])  # noqa: E731
            describe = lambda tag: f"reduction of {self.label} step {k} on {self._devices[dst[tag]].name}"  # noqa: E731
            if self._reducers is False:
                start_kernels([self._devices[d] for d in dst.tolist()], size / element, 3.0 * size,
                              dtype=self.config.dtype, on_done=done, describe=describe)
            else:
                compute, memory, rate = self._reducers
                start_kernels_on(self.sim.kernel, compute[dst], memory[dst], rate[dst], size / element, 3.0 * size,
                                 on_done=done, describe=describe)
        else:
            self._complete(k, entries)

    def _complete(self, k: int, entries: np.ndarray) -> None:
        step = self.schedule.steps[k]
        now = self.sim.env.now
        self.rank_end[step.dst[entries]] = now
        self.rank_end[step.src[entries]] = np.fmax(self.rank_end[step.src[entries]], now)
        self._left -= entries.shape[0]
        last = self._left == 0   # read now: a transfer delivered at once (no resources) completes inside the loop
        if self._observer is not None:
            self._observer.done(self, k, entries, now)
        if self._on_copy_done is not None:
            copies = self._copy_left.shape[0]
            done = np.bincount(step.dst[entries] // self._copy_size, minlength=copies)
            before = self._copy_left.copy()
            self._copy_left -= done
            for copy in np.flatnonzero((before > 0) & (self._copy_left == 0)).tolist():
                self._on_copy_done(copy, now)
        for k2, order, ptr in self._dependents[k]:
            waiting = _gather(order, ptr, entries)
            if waiting.size == 0:
                continue
            counter = self._counter(k2)
            counter[waiting] -= 1
            ready = waiting[counter[waiting] == 0]
            if ready.size:
                self._launch(k2, ready)
        if last:
            self._finish()

    def _finish(self) -> None:
        now = self.sim.env.now
        self.end_time = now
        self.rank_end = np.where(np.isnan(self.rank_end), now, self.rank_end)
        if self.config.record != "none":
            recorder = self.sim.recorder
            nbytes = self.schedule.nbytes
            for pos, node in enumerate(self.group):
                recorder.span(node, "comm", "collective", self.label, self.start_time, float(self.rank_end[pos]),
                              nbytes=nbytes)
        self.done.succeed(now)

    @property
    def lockstep_steps(self) -> int:
        """Steps that ran in lockstep chains, worked out without sending them (see ``_lockstep``)."""
        return 0 if self._lockstep is None else self._lockstep.steps

    @property
    def time(self) -> float:
        """Duration from start to the last arrival, seconds."""
        return self.end_time - self.start_time


_PLAIN = TransferTerms()


def _check_gates(gates: Mapping[int, np.ndarray], schedule: Schedule) -> dict[int, np.ndarray]:
    """The gates as int64 arrays aligned with their steps, or a ConfigError naming the bad one."""
    out = {}
    for k, counts in gates.items():
        arr = np.asarray(counts, dtype=np.int64)
        if not 0 <= k < len(schedule.steps) or arr.shape != (len(schedule.steps[k]),) or (arr.size and arr.min() < 0):
            raise ConfigError(field="gates", value=k, rule="must map a step of the schedule to one count >= 0 per "
                              "entry", fix="give {step: array of external events each entry waits for}")
        out[k] = arr
    return out


def _servers(sim: Simulation, group: list[str]) -> np.ndarray:
    """Server of each group member (its node's ``server`` attribute; all 0 when absent)."""
    attributes = sim.topology.node_attributes
    return np.array([hash(attributes(g).get("server", 0)) for g in group], dtype=np.int64)


def _reverse(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each entry ``i`` of the earlier step, the entries ``j`` with ``index[j] == i``."""
    valid = np.flatnonzero(index >= 0)
    values = index[valid]
    order = valid[np.argsort(values, kind="stable")]
    ptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(values, minlength=size), out=ptr[1:])
    return order, ptr


def _gather(order: np.ndarray, ptr: np.ndarray, entries: np.ndarray) -> np.ndarray:
    lo = ptr[entries]
    counts = ptr[entries + 1] - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    if total == entries.shape[0] and np.all(counts == 1):
        return order[lo]
    starts = np.cumsum(counts) - counts
    return order[np.repeat(lo - starts, counts) + np.arange(total)]
