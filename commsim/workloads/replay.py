"""Replay a trace on a simulation: streams, dependencies, rendezvous, contention.

Each stream of a program is an in-order queue; an op starts when the op before
it on its stream and all its ``deps`` have finished. Collectives start when every
member of the group has reached them and run on the collective engine;
send/recv pairs start when both sides are posted. Compute, memory traffic and
communication contend through the fluid kernel.

**Cohorts.** The ranks of one program run its ops together as a *cohort* (the
default, ``lockstep=True``): op ``i`` starts on all of them at once, as one batch
for the kernel, and each rank's own finish time is recorded. This is exact when
the ranks of a program behave alike (the SPMD case) and keeps a 1,024-GPU step
to thousands of batches instead of millions of events. It is a stated
assumption: when ranks of one program differ (a straggler among them), an op
waits for the slowest before the next one starts on all of them.
``lockstep=False`` runs every rank as its own cohort (exact per rank, slower).

**Plug-ins.** A mechanism the trace does not spell out (a memory scheduler that
loads weights from disk into a window, a cache, a rate limiter) joins the replay
as a :class:`ReplayPlugin`: it may hold the start of the whole trace
(``start``), hold each op before it begins (``before``: the op starts when the
returned event fires; the wait is not part of the op's time) and learn when an
op has finished (``after``, before its dependents are released).

>>> from commsim.simulation import Simulation
>>> from commsim.network.loader import load_topology
>>> from commsim.workloads.trace import Trace, Program, ComputeOp, CollectiveOp
>>> trace = Trace(ranks=2, communicators={"world": [[0, 1]]}, programs=[
...     Program(name="step", ranks="0:2", ops=[
...         ComputeOp(id="gemm", flops=989e12 * 0.7 * 1e-3),
...         CollectiveOp(id="ar", op="all_reduce", bytes=50e6, group="world", algorithm="ring", deps=["gemm"]),
...     ])])
>>> sim = Simulation(load_topology("switch:2,50GB/s,1us"))
>>> out = replay(sim, trace)
>>> round(out.step_time * 1e3, 4)     # 1 ms of compute, then 2 steps of 25 MB at 50 GB/s (+2 us each)
2.004
"""

from __future__ import annotations

import functools
import inspect
import math
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from simpy.events import AllOf, Event

from commsim.collectives._executor import CollectiveConfig, CollectiveRun
from commsim.collectives._registry import ALGORITHMS, build_schedule
from commsim.collectives._schedule import tile
from commsim.collectives.hierarchical import ranks_per_node_of
from commsim.devices.device import launch_delay, start_kernels
from commsim.errors import ConfigError, OutOfMemoryError, SimulationError, StallError
from commsim.kernel.fluid import _LateEvent
from commsim.workloads._index import TraceIndex
from commsim.workloads._shortcuts import Shortcuts
from commsim.workloads._validate import validate_against, validate_trace
from commsim.workloads.trace import CollectiveOp, Trace

__all__ = ["Replay", "ReplayPlugin", "ReplayResult", "replay", "DEFAULT_ALGORITHMS"]

DEFAULT_ALGORITHMS: dict[str, str] = {
    "all_reduce": "ring",
    "reduce_scatter": "ring",
    "all_gather": "ring",
    "all_to_all": "direct",
    "broadcast": "ring",
    "reduce": "ring",
}
"""What ``algorithm: auto`` runs, per collective, unless the replay is told otherwise."""

# trace-format names of algorithms the collective engine registers under another name, used when the
# engine has no algorithm of the trace's name for that op: the pipelined chain is the ring module's
# broadcast/reduce, and an all-reduce "tree" is NCCL's double binary tree
_ALIASES = {"pipeline": "ring", "tree": "double_binary_tree"}
_COMM_KINDS = frozenset({"collective", "send", "recv"})


class ReplayPlugin(Protocol):
    """A mechanism that takes part in a replay (see the module docstring).

    ``ranks`` are the trace ranks of the cohort that runs ``op`` (device nodes:
    ``replay.devices[rank]``). Each method may do nothing (return None).
    """

    def start(self, replay: Replay) -> Event | None:
        """Called once before any op starts; the trace starts when the returned event fires."""

    def before(self, replay: Replay, ranks: np.ndarray, op: Any) -> Event | None:
        """Called when ``op`` may start on ``ranks``; it starts when the returned event fires."""

    def after(self, replay: Replay, ranks: np.ndarray, op: Any) -> None:
        """Called when ``op`` has finished on ``ranks``, before the ops that wait for it are released."""


@dataclass
class _Plan:
    """What never changes about a program: op order, dependencies, stream predecessors."""

    ops: list[Any]
    waits: np.ndarray
    dependents: list[list[int]]
    predecessors: list[list[int]]
    issue: dict[int, tuple[Any, int]]
    """Collective op -> (its channel: communicator name or rank tuple, its position among the
    program's collectives on that channel): the rendezvous key, as the trace rules match collectives
    per group in list order (not in the order they happen to arrive)."""
    p2p: list[int]
    """Indices of the send and recv ops, in list order."""

    @classmethod
    def of(cls, program: Any) -> _Plan:
        ops = list(program.ops)
        ids = {op.id: i for i, op in enumerate(ops)}
        last_on: dict[str, int] = {}
        predecessors: list[list[int]] = []
        issue: dict[int, tuple[Any, int]] = {}
        issued: dict[Any, int] = defaultdict(int)
        for i, op in enumerate(ops):
            if op.kind == "collective":
                channel = op.group if isinstance(op.group, str) else tuple(op.group)
                issue[i] = (channel, issued[channel])
                issued[channel] += 1
            before = {ids[d] for d in op.deps}
            if op.stream in last_on:
                before.add(last_on[op.stream])
            last_on[op.stream] = i
            predecessors.append(sorted(before))
        dependents: list[list[int]] = [[] for _ in ops]
        for i, before in enumerate(predecessors):
            for j in before:
                dependents[j].append(i)
        waits = np.array([len(p) for p in predecessors], dtype=np.int64)
        p2p = [i for i, op in enumerate(ops) if op.kind in ("send", "recv")]
        return cls(ops, waits, dependents, predecessors, issue, p2p)


@dataclass(eq=False)
class _Cohort:
    """Ranks that run one program's ops together."""

    index: int
    program: int
    ranks: np.ndarray
    devices: list[str]
    plan: _Plan
    waits: np.ndarray
    start: np.ndarray
    end: np.ndarray
    released_by: list[tuple[int, int] | None]
    pending_parts: np.ndarray
    launched: np.ndarray
    """When each communication op's transfers began (its group complete, its peer posted); NaN otherwise."""
    rank_end: dict[int, np.ndarray] = field(default_factory=dict)
    rank_began: dict[int, np.ndarray] = field(default_factory=dict)
    buffers: dict[str, list[list[int]]] = field(default_factory=dict)


@dataclass
class ReplayResult:
    """Timing of a replayed trace.

    ``step_time`` is the time of the whole trace (seconds). ``cohorts`` has one
    row per cohort (program and ranks) with busy times per activity class,
    exposed communication (communication not overlapped by compute) and the
    overlap fraction; ``ops`` one row per op and cohort; ``critical_path`` the
    chain of ops that set the step time, last one first; ``streams`` the busy
    time of every stream of every cohort (the union of its ops' intervals).
    """

    step_time: float
    cohorts: pd.DataFrame
    ops: pd.DataFrame
    critical_path: pd.DataFrame
    result: Any
    streams: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def exposed_communication(self) -> float:
        """Exposed communication of the slowest cohort, seconds."""
        slowest = self.cohorts.sort_values("end", ascending=False).iloc[0]
        return float(slowest["exposed_comm"])

    @property
    def overlap_fraction(self) -> float:
        """Share of communication time hidden behind compute, over all cohorts (time-weighted)."""
        comm = float(self.cohorts["comm_busy"].sum())
        return 0.0 if comm == 0 else 1.0 - float(self.cohorts["exposed_comm"].sum()) / comm


class Replay:
    """Runs a :class:`~commsim.workloads.trace.Trace` on a :class:`~commsim.simulation.Simulation`.

    Parameters
    ----------
    sim:
        The simulation (its topology's devices are the ranks, in order, unless
        ``devices`` maps them).
    trace:
        A trace; it is validated first.
    devices:
        Device node per rank (default: the first ``trace.ranks`` devices).
    lockstep:
        Run each program's ranks as one cohort (see the module docstring).
    algorithms:
        What ``algorithm: auto`` means per collective (default :data:`DEFAULT_ALGORITHMS`).
    collective:
        Latency, protocol efficiency and reduction-cost settings of collectives.
    record:
        ``"all"`` ranks' spans, ``"first"`` rank of each cohort, or ``"none"``
        (no spans, and no flows of sends either); default ``"all"`` up to 64
        ranks, else ``"first"``.
    progress:
        Called as ``progress(ops_done, ops_total)`` now and then.
    channels:
        Parallel rings/trees per collective, for the algorithms that take them.
    algorithm_options:
        Extra parameters of a collective algorithm's schedule builder, per
        algorithm (``{"kary_tree": {"fanout": 3}}``).
    plugins:
        Mechanisms that take part in the replay (:class:`ReplayPlugin`), asked in order.
    fast:
        Skip the fluid kernel where its answer cannot depend on anything else:
        compute on devices nothing else uses, collectives on links no other
        traffic can use (see :mod:`commsim.workloads._shortcuts` for the
        conditions, checked before the run). Exact: the results equal the full
        replay's up to rounding; what the analysis cannot prove private runs as
        usual, and ``notes`` says which shortcut is off and why.
    reuse_collectives:
        With ``fast``: every group's later runs of a collective take the timing of
        its first run, private links or not (an approximation, noted; see
        :mod:`commsim.workloads._shortcuts`).
    collective_timings:
        With ``fast``: a dict the remembered collective timings are kept in, to share
        them with other replays on the same system (and the same collective settings).
    """

    def __init__(self, sim: Any, trace: Trace, *, devices: list[str] | None = None, lockstep: bool = True,
                 algorithms: dict[str, str] | None = None, collective: CollectiveConfig | None = None,
                 record: str | None = None, progress: Callable[[int, int], None] | None = None,
                 channels: int = 1, fast: bool = False, algorithm_options: dict[str, dict[str, Any]] | None = None,
                 plugins: Sequence[ReplayPlugin] = (), reuse_collectives: bool = False,
                 collective_timings: dict[tuple[Any, ...], Any] | None = None) -> None:
        self.sim = sim
        self.env = sim.env
        self.trace = trace
        self.index: TraceIndex = validate_trace(trace)
        self.devices = list(devices) if devices is not None else sim.topology.devices[: trace.ranks]
        validate_against(trace, len(self.devices) if devices is not None else len(sim.topology.devices))
        self.algorithms = {**DEFAULT_ALGORITHMS, **(algorithms or {})}
        self.algorithm_options = _checked_options(algorithm_options or {})
        self.plugins = list(plugins)
        self._schedules: dict[tuple[Any, ...], Any] = {}
        self._check_algorithms()
        self.collective = collective or CollectiveConfig(record="none")
        if self.collective.record != "none":
            self.collective = CollectiveConfig(**{**self.collective.__dict__, "record": "none"})
        record = record or ("all" if trace.ranks <= 64 else "first")
        if record not in ("all", "first", "none"):
            raise ConfigError(field="record", value=record, rule="is not a recording level",
                              fix="use 'all', 'first' or 'none'")
        self.cohorts: list[_Cohort] = []
        for p, program in enumerate(trace.programs):
            plan = _Plan.of(program)
            ranks = program.rank_list()
            groups = [ranks] if lockstep else [[r] for r in ranks]
            for members in groups:
                n = len(plan.ops)
                self.cohorts.append(_Cohort(
                    index=len(self.cohorts), program=p, ranks=np.array(members, dtype=np.int64),
                    devices=[self.devices[r] for r in members], plan=plan, waits=plan.waits.copy(),
                    start=np.full(n, math.nan), end=np.full(n, math.nan), released_by=[None] * n,
                    pending_parts=np.zeros(n, dtype=np.int64), launched=np.full(n, math.nan)))
        self._record_flows = record != "none"
        self._recorded = {c.index: (list(range(len(c.ranks))) if record == "all" else [0] if record == "first" else [])
                          for c in self.cohorts}
        self._rendezvous: dict[tuple[Any, tuple[int, ...], int], dict[str, Any]] = {}
        self._ready_groups: list[dict[str, Any]] = []
        self._p2p_order: dict[tuple[int, int], dict[int, int]] = {}
        self._posted: dict[tuple[str, int, int, int, int], tuple[int, int, int, float]] = {}
        self._ready_pairs: list[tuple[int, int, int, int, int, int, float, int]] = []
        self._flush_pending = False
        self._groups_of: dict[tuple[int, Any], list[tuple[int, ...]]] = {}
        self._peers_of: dict[tuple[int, Any], list[int]] = {}
        self._member_positions: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}
        self.done = Event(self.env)
        self._ops_left = sum(len(c.plan.ops) for c in self.cohorts)
        self._runnable: deque[tuple[_Cohort, int]] = deque()
        self._draining = False
        self._progress = progress
        self.channels = channels
        self._ops_total = self._ops_left
        self._progress_every = max(1, self._ops_total // 200)
        # a plug-in may use devices and links the shortcut analysis cannot see: no shortcut is then provably exact
        self.shortcuts: Shortcuts | None = (Shortcuts(self, self._schedule_of, reuse_collectives, collective_timings)
                                            if fast and not self.plugins else None)
        self.notes: list[str] = [] if self.shortcuts is None else list(self.shortcuts.notes)
        if fast and self.plugins:
            self.notes.append("fast is off: plug-ins take part in the replay, which the shortcut analysis cannot see")

    # ------------------------------------------------------------------ driving
    def start(self) -> Event:
        """Start every op that waits for nothing; ``done`` fires when the trace is over."""
        gates = [gate for plugin in self.plugins if (gate := plugin.start(self)) is not None]
        if gates:
            AllOf(self.env, gates).callbacks.append(lambda _ev: self._start_ops())
        else:
            self._start_ops()
        return self.done

    def _start_ops(self) -> None:
        if self._ops_left == 0:
            self.done.succeed(self.env.now)
        for cohort in self.cohorts:
            for i in np.flatnonzero(cohort.waits == 0).tolist():
                self._begin(cohort, i)

    def run(self) -> ReplayResult:
        """Start, run the simulation to the end and summarise.

        Raises :class:`~commsim.errors.StallError` when ops remain that can never
        run (a collective a member never reaches, a send without its receive).
        """
        return self.summary(self.run_to_end())

    def run_to_end(self) -> Any:
        """Start and run the simulation to the end without building the summary tables.

        Returns the simulation's result; read the times with :meth:`op_times`. For
        callers that replay one trace many times (sweeps) and need only a few times.
        """
        self.start()
        try:
            result = self.sim.run()
        except StallError as exc:
            raise StallError(exc.time, exc.stalled + self._unfinished(), exc.result, exc.causes) from None
        unfinished = self._unfinished()
        if unfinished:
            raise StallError(self.env.now, unfinished, result, self.sim.failed_components())
        return result

    def op_times(self, cohort: int = 0) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
        """Of cohort ``cohort``'s ops: id -> index, start times and end times (seconds; NaN if not run)."""
        c = self.cohorts[cohort]
        return {op.id: i for i, op in enumerate(c.plan.ops)}, c.start, c.end

    def _unfinished(self) -> list[str]:
        out = []
        for cohort in self.cohorts:
            for i in np.flatnonzero(np.isnan(cohort.end)).tolist():
                op = cohort.plan.ops[i]
                state = "never started" if math.isnan(cohort.start[i]) else self._stuck_on(cohort, i)
                out.append(f"op {op.id!r} ({op.kind}) of program {self.trace.programs[cohort.program].name!r} on "
                           f"rank {int(cohort.ranks[0])}{'+' if len(cohort.ranks) > 1 else ''}: {state}")
                if len(out) >= 20:
                    return out
        return out

    def _stuck_on(self, cohort: _Cohort, i: int) -> str:
        """What a started, unfinished op waits for: its group, its peer, or its own activities."""
        kind = cohort.plan.ops[i].kind
        me = (cohort.index, i)
        if kind == "collective":
            for state in self._rendezvous.values():
                if me in state["waiting"]:
                    return "waiting for its group"
        elif kind in ("send", "recv"):
            if any(posted[:2] == me for posted in self._posted.values()):
                return f"waiting for its {'recv' if kind == 'send' else 'send'}"
            return "in flight"
        return "running"

    # ------------------------------------------------------------------ ops
    def _begin(self, cohort: _Cohort, i: int) -> None:
        if self.plugins:
            op = cohort.plan.ops[i]
            gates = [gate for plugin in self.plugins if (gate := plugin.before(self, cohort.ranks, op)) is not None]
            if gates:
                gate = gates[0] if len(gates) == 1 else AllOf(self.env, gates)
                gate.callbacks.append(lambda _ev: self._run_op(cohort, i))
                return
        self._run_op(cohort, i)

    def _run_op(self, cohort: _Cohort, i: int) -> None:
        op = cohort.plan.ops[i]
        cohort.start[i] = self.env.now
        kind = op.kind
        if kind == "compute":
            self._compute(cohort, i, op)
        elif kind == "delay":
            self.env.timeout(op.seconds).callbacks.append(lambda _ev: self._finish(cohort, i))
        elif kind in ("alloc", "free"):
            self._memory(cohort, i, op)
        elif kind == "disk_read":
            self._disk(cohort, i, op)
        elif kind == "collective":
            self._arrive(cohort, i, op)
        elif kind in ("send", "recv"):
            self._post(cohort, i, op)
        else:  # the trace model admits no other kind
            raise SimulationError(f"op kind {kind!r} cannot be replayed")

    def _per_rank(self, cohort: _Cohort, i: int) -> tuple[np.ndarray, Any]:
        """Per-rank end times of op ``i`` and the kernel callback that fills them and finishes the op."""
        n = len(cohort.devices)
        cohort.pending_parts[i] = n
        ends = np.full(n, math.nan)
        cohort.rank_end[i] = ends

        def parts_done(_ids: np.ndarray, tags: np.ndarray) -> None:
            ends[tags] = self.env.now
            cohort.pending_parts[i] -= tags.shape[0]
            if cohort.pending_parts[i] == 0:
                self._finish(cohort, i)

        return ends, parts_done

    def _compute(self, cohort: _Cohort, i: int, op: Any) -> None:
        if self.shortcuts is not None and self.shortcuts.compute and (op.flops or op.bytes):
            self._compute_alone(cohort, i, op)
            return
        devices = [self.sim.devices[d] for d in cohort.devices]
        n = len(devices)
        ends, parts_done = self._per_rank(cohort, i)
        shape = op.kernel_shape()
        overhead = launch_delay(devices[0].spec, shape)

        def launch(_ev: Any = None) -> None:
            start_kernels(devices, np.full(n, op.flops), np.full(n, op.bytes), dtype=op.dtype,
                          efficiency=op.efficiency, on_done=parts_done, kernel=shape,
                          describe=lambda tag: f"compute {op.id!r} on {cohort.devices[tag]}")

        if op.flops == 0 and op.bytes == 0:
            ends[:] = self.env.now
            self._finish(cohort, i)
        elif overhead > 0:
            self.env.timeout(overhead).callbacks.append(launch)
        else:
            launch()

    def _compute_alone(self, cohort: _Cohort, i: int, op: Any) -> None:
        """A compute op on devices nothing else uses: its roofline time, without the kernel (see ``fast``)."""
        assert self.shortcuts is not None
        longest, times = self.shortcuts.compute_times(cohort.index, [self.sim.devices[d] for d in cohort.devices]
                                                      if cohort.index not in self.shortcuts.known else None, op)
        begun = self.env.now
        if times is not None or self._recorded[cohort.index]:
            ends = np.full(len(cohort.ranks), begun + longest) if times is None else begun + times
            cohort.rank_end[i] = ends
        self.env.timeout(longest).callbacks.append(lambda _ev: self._finish(cohort, i))

    def _memory(self, cohort: _Cohort, i: int, op: Any) -> None:
        held = cohort.buffers.setdefault(op.buffer, [[] for _ in cohort.devices])
        if op.kind == "alloc":
            for k, (rank, node) in enumerate(zip(cohort.ranks.tolist(), cohort.devices, strict=True)):
                try:
                    held[k].append(self.sim.devices[node].memory.allocate(op.bytes, op.buffer))
                except OutOfMemoryError as exc:
                    raise OutOfMemoryError(f"{node} (rank {rank}, op {op.id!r})", exc.requested, exc.in_use,
                                           exc.capacity) from None
        else:
            for node, handles in zip(cohort.devices, cohort.buffers.pop(op.buffer), strict=True):
                for handle in handles:
                    self.sim.devices[node].memory.free(handle)
        self._finish(cohort, i)

    def _disk(self, cohort: _Cohort, i: int, op: Any) -> None:
        devices = [self.sim.devices[d] for d in cohort.devices]
        for device in devices:
            if device.disk_resource is None:
                raise ConfigError(field=f"devices.{device.name}.disk_read_bandwidth", rule="is not set",
                                  fix=f"give the device a disk to replay disk_read op {op.id!r}")
        n = len(devices)
        res = np.array([(d.disk_resource, d.memory_resource) for d in devices], dtype=np.int64).reshape(-1)
        indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
        _, parts_done = self._per_rank(cohort, i)
        self.sim.kernel.start(np.full(n, op.bytes), (indptr, res), tags=np.arange(n), on_done=parts_done,
                              describe=lambda tag: f"disk read {op.id!r} on {cohort.devices[tag]}")

    # ------------------------------------------------------------------ collectives
    def _groups(self, cohort: _Cohort, i: int, op: CollectiveOp) -> list[tuple[int, ...]]:
        # the groups follow from the cohort and the group spec alone, which thousands of ops share
        key = (cohort.index, op.group if isinstance(op.group, str) else tuple(op.group))
        found = self._groups_of.get(key)
        if found is None:
            seen: dict[tuple[int, ...], None] = {}
            for rank in cohort.ranks.tolist():
                seen[tuple(self.index.resolve_group(rank, op.group))] = None
            found = self._groups_of[key] = list(seen)
        return found

    def _arrive(self, cohort: _Cohort, i: int, op: CollectiveOp) -> None:
        groups = self._groups(cohort, i, op)
        cohort.pending_parts[i] = len(groups)
        members = set(cohort.ranks.tolist())
        channel, seq = cohort.plan.issue[i]
        for group in groups:
            arriving = [r for r in group if r in members]
            key = (channel, group, seq)
            state = self._rendezvous.setdefault(key, {"arrived": 0, "waiting": [], "op": op,
                                                      "last": (cohort.index, i)})
            state["arrived"] += len(arriving)
            state["waiting"].append((cohort.index, i))
            state["last"] = (cohort.index, i)
            if state["arrived"] == len(group):
                del self._rendezvous[key]
                state["group"] = group
                self._ready_groups.append(state)
                self._request_flush()

    def algorithm_of(self, op: CollectiveOp) -> str:
        """The engine algorithm a trace collective runs (``auto`` and aliases resolved)."""
        algorithm = op.algorithm if op.algorithm != "auto" else self.algorithms[op.op]
        if (op.op, algorithm) not in ALGORITHMS:
            algorithm = _ALIASES.get(algorithm, algorithm)
        return algorithm

    def _check_algorithms(self) -> None:
        """Every collective of the trace must have its algorithm: say so before the run, not in it."""
        for program in self.trace.programs:
            for i, op in enumerate(program.ops):
                if op.kind == "collective" and (op.op, self.algorithm_of(op)) not in ALGORITHMS:
                    available = sorted(a for o, a in ALGORITHMS if o == op.op)
                    raise ConfigError(field=f"programs[{program.name}].ops[{i}].algorithm", value=op.algorithm,
                                      rule=f"is not an algorithm for {op.op}",
                                      fix=f"use auto or one of {', '.join(available)}")

    def _launch_groups(self, ready: list[dict[str, Any]]) -> None:
        batches: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
        remembered: dict[float, list[tuple[dict[str, Any], np.ndarray]]] = defaultdict(list)
        for state in ready:
            op = state["op"]
            key = (op.op, self.algorithm_of(op), float(op.bytes), len(state["group"]), op.root_index)
            timing = None if self.shortcuts is None else self.shortcuts.timing(_private_key(key, state["group"]))
            if timing is not None:
                remembered[timing[0]].append((state, timing[1]))
            else:
                batches[key].append(state)
        for done, states in remembered.items():
            self._replay_timing(done, states)
        for (kind, algorithm, nbytes, size, root), batch in batches.items():
            self._launch_batch(kind, algorithm, nbytes, size, root, batch)

    def _replay_timing(self, done: float, states: list[tuple[dict[str, Any], np.ndarray]]) -> None:
        """Finish collectives on private links as their remembered runs did (see ``fast``): all that take
        ``done`` seconds on one event, each member at its remembered end."""
        begun = self.env.now

        def finished(_ev: Any) -> None:
            for state, ends in states:
                self._group_finished(state, self.env.now, begun + ends, begun)

        self.env.timeout(done).callbacks.append(finished)

    def _schedule_of(self, kind: str, algorithm: str, nbytes: float, size: int, root: int,
                     nodes: list[str]) -> Any:
        """The schedule of one group's collective (``nodes``: its members' device nodes)."""
        params: dict[str, Any] = {"root": root} if kind in ("broadcast", "reduce") else {}
        accepted = _parameters(kind, algorithm)
        if self.channels > 1 and "channels" in accepted:
            params["channels"] = self.channels
        if "ranks_per_node" in accepted:
            params["ranks_per_node"] = ranks_per_node_of(self.sim.topology, nodes[:size])
        params.update(self.algorithm_options.get(algorithm, {}))
        return build_schedule(kind, algorithm, size, nbytes, **params)

    def _launch_batch(self, kind: str, algorithm: str, nbytes: float, size: int, root: int,
                      states: list[dict[str, Any]]) -> None:
        """Run the same collective for several ready groups as one tiled schedule."""
        nodes = [self.devices[r] for state in states for r in state["group"]]
        key = (kind, algorithm, nbytes, size, root, len(states))
        schedule = self._schedules.get(key)
        if schedule is None:
            # the same collective recurs every layer and micro-batch: build (and tile) it once
            schedule = tile(self._schedule_of(kind, algorithm, nbytes, size, root, nodes), len(states))
            self._schedules[key] = schedule
        begun = self.env.now
        run: CollectiveRun | None = None

        def copy_done(copy: int, now: float) -> None:
            assert run is not None
            ends = run.rank_end[copy * size:(copy + 1) * size]
            if self.shortcuts is not None:
                self.shortcuts.remember(_private_key(key[:5], states[copy]["group"]), now - begun, ends - begun)
            self._group_finished(states[copy], now, ends, begun)

        run = CollectiveRun(self.sim, schedule, nodes, self.collective, label=f"{kind}/{algorithm}",
                            copies=len(states), on_copy_done=copy_done)
        run.start()

    def _group_finished(self, state: dict[str, Any], now: float, ends: np.ndarray, begun: float) -> None:
        group = state["group"]
        for cohort_index, i in state["waiting"]:
            cohort = self.cohorts[cohort_index]
            if self._recorded[cohort_index]:
                # per-rank times only matter for the spans recorded (the summary uses the cohort's own times)
                mine, theirs = self._members(cohort, group)
                ends_c = cohort.rank_end.setdefault(i, np.full(len(cohort.ranks), math.nan))
                # a cohort may hold members of several groups, each beginning when its own members are there
                began_c = cohort.rank_began.setdefault(i, np.full(len(cohort.ranks), math.nan))
                ends_c[mine] = ends[theirs]
                began_c[mine] = begun
            if not cohort.launched[i] >= begun:
                cohort.launched[i] = begun
            if state["last"] != (cohort_index, i):
                cohort.released_by[i] = state["last"]
            cohort.pending_parts[i] -= 1
            if cohort.pending_parts[i] == 0:
                self._finish(cohort, i)

    def _members(self, cohort: _Cohort, group: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Positions in ``cohort`` and in ``group`` of the ranks they share."""
        key = (cohort.index, group)
        found = self._member_positions.get(key)
        if found is None:
            where = {rank: k for k, rank in enumerate(cohort.ranks.tolist())}
            pairs = [(where[rank], g) for g, rank in enumerate(group) if rank in where]
            found = (np.array([k for k, _ in pairs], dtype=np.int64), np.array([g for _, g in pairs], dtype=np.int64))
            self._member_positions[key] = found
        return found

    # ------------------------------------------------------------------ send / recv
    def _post(self, cohort: _Cohort, i: int, op: Any) -> None:
        n = len(cohort.ranks)
        cohort.pending_parts[i] = n
        cohort.rank_end[i] = np.full(n, math.nan)
        key = (cohort.index, op.peer)
        peers = self._peers_of.get(key)
        if peers is None:
            peers = self._peers_of[key] = [self.index.resolve_peer(rank, op.peer) for rank in cohort.ranks.tolist()]
        for k, rank in enumerate(cohort.ranks.tolist()):
            peer = peers[k]
            src, dst = (rank, peer) if op.kind == "send" else (peer, rank)
            seq = self._p2p_position(cohort, rank)[i]
            other = "recv" if op.kind == "send" else "send"
            partner = self._posted.pop((other, src, dst, op.tag, seq), None)
            if partner is None:
                self._posted[(op.kind, src, dst, op.tag, seq)] = (cohort.index, i, k, float(op.bytes))
                continue
            mine = (cohort.index, i, k)
            send_side, recv_side = (mine, partner[:3]) if op.kind == "send" else (partner[:3], mine)
            self._ready_pairs.append((*send_side, *recv_side, float(op.bytes), src * self.trace.ranks + dst))
            self._request_flush()

    def _p2p_position(self, cohort: _Cohort, rank: int) -> dict[int, int]:
        """Send/recv op -> its position among ``rank``'s ops of the same kind, peer and tag, in list order.

        The trace rules match the n-th send from s to d with tag t with the n-th such recv in list
        order, whatever order the streams post them in.
        """
        key = (cohort.program, rank)
        table = self._p2p_order.get(key)
        if table is None:
            table = {}
            count: dict[tuple[str, int, int], int] = defaultdict(int)
            ops = cohort.plan.ops
            peers: dict[Any, int] = {}
            for j in cohort.plan.p2p:
                peer = peers.get(ops[j].peer)
                if peer is None:
                    peer = peers[ops[j].peer] = self.index.resolve_peer(rank, ops[j].peer)
                channel = (ops[j].kind, peer, ops[j].tag)
                table[j] = count[channel]
                count[channel] += 1
            self._p2p_order[key] = table
        return table

    def _launch_pairs(self, pairs: list[tuple[int, int, int, int, int, int, float, int]]) -> None:
        srcs = [self.cohorts[p[0]].devices[p[2]] for p in pairs]
        dsts = [self.cohorts[p[3]].devices[p[5]] for p in pairs]
        routes = self.sim.network.routes(srcs, dsts, [p[7] for p in pairs])
        sizes = np.array([p[6] for p in pairs])
        now = self.env.now
        for c, i in {(p[0], p[1]) for p in pairs} | {(p[3], p[4]) for p in pairs}:
            self.cohorts[c].launched[i] = now

        def delivered(idx: np.ndarray) -> None:
            now = self.env.now
            for j in idx.tolist():
                sc, si, sk, rc, ri, rk, _, _ = pairs[j]
                for c, i, k, partner in ((sc, si, sk, (rc, ri)), (rc, ri, rk, (sc, si))):
                    cohort = self.cohorts[c]
                    cohort.rank_end[i][k] = now
                    if self.cohorts[partner[0]].start[partner[1]] > cohort.start[i]:
                        cohort.released_by[i] = partner
                    cohort.pending_parts[i] -= 1
                    if cohort.pending_parts[i] == 0:
                        self._finish(cohort, i)

        self.sim.network.send(routes, sizes, label="p2p", on_delivered=delivered,
                              record=len(pairs) <= 64 and self._record_flows)

    def _request_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            _LateEvent(self.env, self._flush)

    def _flush(self, _event: Any = None) -> None:
        """Start every group and pair that became ready at this instant, batched."""
        self._flush_pending = False
        groups, self._ready_groups = self._ready_groups, []
        pairs, self._ready_pairs = self._ready_pairs, []
        if groups:
            self._launch_groups(groups)
        if pairs:
            self._launch_pairs(pairs)

    # ------------------------------------------------------------------ completion
    def _finish(self, cohort: _Cohort, i: int) -> None:
        now = self.env.now
        cohort.end[i] = now
        self._ops_left -= 1
        if self._progress is not None and self._ops_left % self._progress_every == 0:
            self._progress(self._ops_total - self._ops_left, self._ops_total)
        self._record(cohort, i)
        plan = cohort.plan
        for plugin in self.plugins:
            plugin.after(self, cohort.ranks, plan.ops[i])
        if cohort.released_by[i] is None and plan.predecessors[i]:
            last = max(plan.predecessors[i], key=lambda j: cohort.end[j])
            cohort.released_by[i] = (cohort.index, last)
        for j in plan.dependents[i]:
            cohort.waits[j] -= 1
            if cohort.waits[j] == 0:
                self._runnable.append((cohort, j))
        if not self._draining:
            # ops that finish at once (alloc, free, zero work) would otherwise recurse without bound
            self._draining = True
            while self._runnable:
                self._begin(*self._runnable.popleft())
            self._draining = False
        if self._ops_left == 0 and not self.done.triggered:
            self.done.succeed(now)

    def _record(self, cohort: _Cohort, i: int) -> None:
        positions = self._recorded[cohort.index]
        began = cohort.rank_began.pop(i, None)
        if not positions:
            cohort.rank_end.pop(i, None)
            return
        op = cohort.plan.ops[i]
        ends = cohort.rank_end.pop(i, None)
        kind = "comm" if op.kind in _COMM_KINDS else op.kind
        flops = float(getattr(op, "flops", 0.0))
        nbytes = float(getattr(op, "bytes", 0.0))
        start = float(cohort.start[i])
        for k in positions:
            end = float(ends[k]) if ends is not None and not math.isnan(ends[k]) else cohort.end[i]
            tags = op.tags
            if began is not None and began[k] > start:
                tags = {**op.tags, "began": float(began[k])}
            self.sim.recorder.span(cohort.devices[k], op.stream, kind, op.name or op.id, start, end,
                                   flops=flops, nbytes=nbytes, op_id=op.id, tags=dict(tags))

    # ------------------------------------------------------------------ metrics
    def summary(self, result: Any = None) -> ReplayResult:
        """Per-cohort metrics, per-op timings and the critical path."""
        rows = []
        op_rows = []
        for cohort in self.cohorts:
            ops = cohort.plan.ops
            compute = [(cohort.start[i], cohort.end[i]) for i, op in enumerate(ops) if op.kind == "compute"]
            comm = [(cohort.start[i], cohort.end[i]) for i, op in enumerate(ops) if op.kind in _COMM_KINDS]
            comm_busy = _union_length(comm)
            exposed = comm_busy - _overlap_length(comm, compute)
            rows.append({
                "cohort": cohort.index, "program": self.trace.programs[cohort.program].name,
                "ranks": len(cohort.ranks), "first_rank": int(cohort.ranks[0]),
                "end": float(np.nanmax(cohort.end)) if len(ops) else 0.0,
                "compute_busy": _union_length(compute), "comm_busy": comm_busy, "exposed_comm": exposed,
                "overlap_fraction": 0.0 if comm_busy == 0 else 1.0 - exposed / comm_busy,
            })
            for i, op in enumerate(ops):
                op_rows.append((cohort.index, op.id, op.kind, op.stream, float(cohort.start[i]), float(cohort.end[i])))
        cohorts = pd.DataFrame(rows)
        op_table = pd.DataFrame(op_rows, columns=["cohort", "op_id", "kind", "stream", "start", "end"])
        streams = pd.DataFrame(
            [(c, stream, _union_length(list(zip(part["start"], part["end"], strict=True))))
             for (c, stream), part in op_table.groupby(["cohort", "stream"], sort=True)],
            columns=["cohort", "stream", "busy"])
        step_time = float(cohorts["end"].max()) if len(cohorts) else 0.0
        path = self._critical_path()
        out = ReplayResult(step_time=step_time, cohorts=cohorts, ops=op_table, critical_path=path, result=result,
                           streams=streams)
        if result is not None:
            result.metrics["step_time"] = (step_time, "s")
            if len(cohorts):
                # the same numbers as the ReplayResult properties (overlap over all cohorts, time-weighted)
                result.metrics["exposed_communication"] = (out.exposed_communication, "s")
                result.metrics["overlap_fraction"] = (out.overlap_fraction, "fraction")
            result.extra.update({"replay_cohorts": cohorts, "critical_path": path})
        return out

    def _critical_path(self) -> pd.DataFrame:
        best: tuple[float, int, int] | None = None
        for cohort in self.cohorts:
            if len(cohort.plan.ops) and not np.all(np.isnan(cohort.end)):
                i = int(np.nanargmax(cohort.end))
                if best is None or cohort.end[i] > best[0]:
                    best = (float(cohort.end[i]), cohort.index, i)
        rows = []
        seen = set()
        node = None if best is None else (best[1], best[2])
        while node is not None and node not in seen:
            seen.add(node)
            cohort = self.cohorts[node[0]]
            op = cohort.plan.ops[node[1]]
            rows.append((cohort.index, int(cohort.ranks[0]), op.id, op.kind, op.stream, float(cohort.start[node[1]]),
                         float(cohort.end[node[1]])))
            node = cohort.released_by[node[1]]
        return pd.DataFrame(rows, columns=["cohort", "rank", "op_id", "kind", "stream", "start", "end"])


def replay(sim: Any, trace: Trace, **options: Any) -> ReplayResult:
    """Replay ``trace`` on ``sim`` to the end (see :class:`Replay` for the options)."""
    return Replay(sim, trace, **options).run()


def _checked_options(options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``algorithm_options`` after checking that each names a registered algorithm and parameters it takes."""
    for name, given in options.items():
        builders = [(kind, algorithm) for kind, algorithm in ALGORITHMS if algorithm == name]
        if not builders:
            raise ConfigError(field="algorithm_options", value=name, rule="is not a registered collective algorithm",
                              fix=f"use one of {', '.join(sorted({a for _, a in ALGORITHMS}))}")
        for key in given:
            accepted = {p for kind, algorithm in builders for p in _parameters(kind, algorithm)} - {"n", "nbytes"}
            if key not in accepted:
                raise ConfigError(field=f"algorithm_options.{name}", value=key, rule=f"is not a parameter of {name}",
                                  fix=f"use one of {', '.join(sorted(accepted)) or '(none)'}")
    return {name: dict(given) for name, given in options.items()}


@functools.cache
def _parameters(kind: str, algorithm: str) -> Any:
    """The parameters a registered schedule builder accepts (looked up once per algorithm)."""
    return inspect.signature(ALGORITHMS[(kind, algorithm)]).parameters


def _private_key(key: tuple[Any, ...], group: tuple[int, ...]) -> tuple[Any, ...]:
    """(kind, algorithm, bytes, size, root) and the group: what a remembered private collective is found by."""
    return (*key, group)


def _union_length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in _merge(intervals))


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _overlap_length(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of the intersection of two unions of intervals."""
    left, right = _merge(a), _merge(b)
    i = j = 0
    total = 0.0
    while i < len(left) and j < len(right):
        lo = max(left[i][0], right[j][0])
        hi = min(left[i][1], right[j][1])
        if hi > lo:
            total += hi - lo
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return total

