"""The replay engine: :class:`Replay` drives a trace's ops through the op handlers, the rendezvous and the
collective engine and records when each finished (see :mod:`commsim.workloads.replay`)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from simpy.events import AllOf, Event

from commsim.collectives import CollectiveConfig
from commsim.errors import ConfigError, StallError
from commsim.workloads._index import TraceIndex
from commsim.workloads._shortcuts import Shortcuts
from commsim.workloads._validate import validate_against, validate_trace
from commsim.workloads.replay.communication import DEFAULT_ALGORITHMS, _checked_options, _Communication
from commsim.workloads.replay.matching import _Matching
from commsim.workloads.replay.metrics import _COMM_KINDS, ReplayResult, _Metrics
from commsim.workloads.replay.ops import _OpHandlers
from commsim.workloads.replay.plan import _Cohort, _Plan
from commsim.workloads.trace import Trace

__all__ = ["Replay", "ReplayPlugin", "replay"]


class ReplayPlugin(Protocol):
    """A mechanism that takes part in a replay (see :mod:`commsim.workloads.replay`).

    ``ranks`` are the trace ranks of the cohort that runs ``op`` (device nodes:
    ``replay.devices[rank]``). Each method may do nothing (return None).
    """

    def start(self, replay: Replay) -> Event | None:
        """Called once before any op starts; the trace starts when the returned event fires."""

    def before(self, replay: Replay, ranks: np.ndarray, op: Any) -> Event | None:
        """Called when ``op`` may start on ``ranks``; it starts when the returned event fires."""

    def after(self, replay: Replay, ranks: np.ndarray, op: Any) -> None:
        """Called when ``op`` has finished on ``ranks``, before the ops that wait for it are released."""


class Replay(_OpHandlers, _Matching, _Communication, _Metrics):
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
        Run each program's ranks as one cohort (see :mod:`commsim.workloads.replay`).
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
    validate:
        Check the trace's cross-op rules first (:func:`~commsim.workloads.validate_trace`).
        ``False`` only for traces a generator of this package has just built (a prediction's
        replays), which follow the rules by construction: it skips the checks, not the index.
    """

    def __init__(self, sim: Any, trace: Trace, *, devices: list[str] | None = None, lockstep: bool = True,
                 algorithms: dict[str, str] | None = None, collective: CollectiveConfig | None = None,
                 record: str | None = None, progress: Callable[[int, int], None] | None = None,
                 channels: int = 1, fast: bool = False, algorithm_options: dict[str, dict[str, Any]] | None = None,
                 plugins: Sequence[ReplayPlugin] = (), reuse_collectives: bool = False,
                 collective_timings: dict[tuple[Any, ...], Any] | None = None, validate: bool = True) -> None:
        self.sim = sim
        self.env = sim.env
        self.trace = trace
        self.index: TraceIndex = validate_trace(trace) if validate else TraceIndex(trace)
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


def replay(sim: Any, trace: Trace, **options: Any) -> ReplayResult:
    """Replay ``trace`` on ``sim`` to the end (see :class:`Replay` for the options)."""
    return Replay(sim, trace, **options).run()
