"""Replaying a multi-step trace until it repeats itself, and averaging the repeating pattern.

A training loop whose steps overlap (an asynchronous all-reduce waited for
``tau`` steps later, DiLoCo's outer syncs) settles into a steady state after a
backlog has built up, and the steady state may repeat with a period of a few
steps (syncs of consecutive steps interleave on the streams). The caller gives
``run(steps)``: replay a trace of ``steps`` steps and return every step's start
time, the ``steps + 1``-th being when step ``steps`` could start, and each
step's *settle* time (seconds from its start to when the work it released is
done, e.g. its sync). :func:`replay_until_periodic` replays longer and longer
traces (doubling, up to ``limit`` steps) and looks for the first step ``s``
at which

- the last ``repeats`` patterns of ``p`` step intervals (``p`` = 1 to
  ``max_period``) before ``s`` are equal, and
- so are the settle times of the steps that must have settled by then (up to
  ``s - lag``, where step ``s`` waits for step ``s - lag``): no backlog is
  still building up.

Both depend only on what happened before step ``s`` started, so a longer
trace gives the same answer at ``s``: the result is that of a run stopped at
``s``. The iteration time is the mean of the last ``repeats x p`` intervals;
a run not periodic by ``limit`` averages its last ``repeats x max_period``
intervals and says so.

:class:`StopWhenPeriodic` finds the same step in one replay: a replay plug-in
that watches a trace of ``limit`` steps, checks each step as soon as it has
started everywhere and, once the run repeats, holds every later step's first op
(the steps already begun finish; nothing after them starts). No early step is
replayed twice.

>>> import numpy as np
>>> def run(steps):    # intervals 1, 1, then alternating 2 and 3; every step settles 0.5 s after its start
...     gaps = [1.0, 1.0] + [2.0 + (k % 2) for k in range(steps - 2)]
...     return np.concatenate([[0.0], np.cumsum(gaps)]), np.full(steps, 0.5), None
>>> r = replay_until_periodic(run, lag=1, limit=40)
>>> r.periodic, r.period, r.iteration, r.steps
(True, 2, 2.5, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from commsim.errors import ConfigError

__all__ = ["PeriodicRun", "replay_until_periodic", "period_at", "StopWhenPeriodic"]


@dataclass(frozen=True)
class PeriodicRun:
    """What :func:`replay_until_periodic` found.

    ``starts`` are the step start times (seconds) up to step ``steps``, where the
    measurement ended; ``iteration`` the mean step interval over the last
    ``window`` steps; ``period`` the pattern's length in steps (``periodic``
    false: none found by ``limit``); ``replayed`` the steps of the last trace
    replayed; ``context`` what the last ``run`` returned third.
    """

    starts: np.ndarray
    steps: int
    period: int
    periodic: bool
    window: int
    iteration: float
    replayed: int
    context: Any = None


def period_at(starts: np.ndarray, settle: np.ndarray, s: int, *, lag: int, max_period: int = 4, repeats: int = 3,
              rtol: float = 1e-9, atol: float = 1e-12) -> int | None:
    """The shortest period ``p`` <= ``max_period`` the run repeats with ``repeats`` times before step ``s``, or None.

    ``starts[0..s]`` are step start times, ``settle[j]`` step ``j``'s settle time (seconds
    from its start); steps up to ``s - lag`` must have settled by step ``s``.
    """
    for p in range(1, max_period + 1):
        m = repeats * p
        first = s - lag - m + 1
        if s < m or first < 0:
            return None
        intervals = np.diff(starts[s - m:s + 1]).reshape(repeats, p)
        offsets = np.asarray(settle[first:s - lag + 1]).reshape(repeats, p)
        if np.isnan(offsets).any():
            return None
        if (np.allclose(intervals, intervals[0], rtol=rtol, atol=atol)
                and np.allclose(offsets, offsets[0], rtol=rtol, atol=atol)):
            return p
    return None


def replay_until_periodic(run: Callable[[int], tuple[np.ndarray, np.ndarray, Any]], *, lag: int, limit: int,
                          first: int | None = None, max_period: int = 4, repeats: int = 3, rtol: float = 1e-9,
                          atol: float = 1e-12) -> PeriodicRun:
    """Replay ``run(steps)`` for more and more steps until the run repeats itself (see the module docstring).

    ``run(steps)`` returns ``(starts, settle, context)``: ``steps + 1`` start times and
    ``steps`` settle times, seconds. ``first`` is the first trace length tried (default
    ``lag + repeats + 1``: a period of one step found as early as it can be), ``limit`` the longest.
    """
    if lag < 0 or limit < 1 or max_period < 1 or repeats < 1:
        raise ConfigError(field="replay_until_periodic", value={"lag": lag, "limit": limit, "max_period": max_period,
                                                                "repeats": repeats},
                          rule="needs lag >= 0 and limit, max_period, repeats >= 1",
                          fix="give a non-negative lag and positive counts")
    steps = min(limit, first if first is not None else lag + repeats + 1)
    checked = 0
    while True:
        starts, settle, context = run(steps)
        starts = np.asarray(starts, dtype=float)
        for s in range(checked + 1, steps + 1):
            p = period_at(starts, settle, s, lag=lag, max_period=max_period, repeats=repeats, rtol=rtol, atol=atol)
            if p is not None:
                return _measured(starts, s, p, True, repeats * p, steps, context)
        checked = steps
        if steps >= limit:
            return _measured(starts, steps, max_period, False, repeats * max_period, steps, context)
        steps = min(limit, 2 * steps)


def _measured(starts: np.ndarray, s: int, period: int, periodic: bool, window: int, replayed: int,
              context: Any) -> PeriodicRun:
    window = max(1, min(window, s))
    return PeriodicRun(starts=starts[:s + 1], steps=s, period=period, periodic=periodic, window=window,
                       iteration=float((starts[s] - starts[s - window]) / window), replayed=replayed,
                       context=context)


class StopWhenPeriodic:
    """Replay plug-in: end a replay of many steps once they repeat themselves (the answer of
    :func:`replay_until_periodic`, from one replay).

    ``starts[k]`` is the id of the op that starts step ``k`` (the last, step ``limit``, a
    marker), every later op of the step downstream of it; ``settles[k]`` the ids of the ops
    whose latest end is step ``k``'s settle time (none: NaN). An op's times are the latest
    over the cohorts that hold it. Once step ``s`` is found periodic, the steps begun so far
    (:attr:`begun`) finish and no later one starts; read the result with :meth:`outcome`.
    """

    def __init__(self, starts: Sequence[str], settles: Sequence[Sequence[str]], *, lag: int, max_period: int = 4,
                 repeats: int = 3, rtol: float = 1e-9, atol: float = 1e-12) -> None:
        self._step_of = {op_id: k for k, op_id in enumerate(starts)}
        self._settles = [list(ids) for ids in settles]
        self._options = {"lag": lag, "max_period": max_period, "repeats": repeats, "rtol": rtol, "atol": atol}
        self.starts = np.full(len(starts), np.nan)
        self.settle = np.full(len(settles), np.nan)
        self.begun = -1
        self.found: tuple[int, int] | None = None
        self._stop_after: int | None = None
        self._finished = np.zeros(len(starts), dtype=np.int64)
        self._where: dict[str, list[tuple[np.ndarray, np.ndarray, int]]] = {}
        self._never: Any = None

    def start(self, replay: Any) -> None:
        """Index where the watched ops are (cohort arrays filled in place as the replay runs)."""
        from simpy.events import Event

        watched = set(self._step_of) | {i for ids in self._settles for i in ids}
        for c in range(len(replay.cohorts)):
            index, start, end = replay.op_times(c)
            for op_id in watched & index.keys():
                self._where.setdefault(op_id, []).append((start, end, index[op_id]))
        self._never = Event(replay.env)  # the event a held step's first op waits for
        return None

    def before(self, replay: Any, ranks: np.ndarray, op: Any) -> Any:
        """Hold the first op of a step past the stop; note the steps begun."""
        k = self._step_of.get(op.id)
        if k is None:
            return None
        if self._stop_after is not None and k > self._stop_after:
            return self._never
        self.begun = max(self.begun, k)
        return None

    def after(self, replay: Any, ranks: np.ndarray, op: Any) -> None:
        """When a step's first op has ended everywhere, check whether the run repeats by that step."""
        k = self._step_of.get(op.id)
        if k is None:
            return
        self._finished[k] += 1
        holders = self._where[op.id]
        if self._finished[k] < len(holders):
            return
        self.starts[k] = max(float(start[i]) for start, _, i in holders)
        if self.found is not None:
            return
        for j in range(max(0, k - self._options["lag"] - self._options["repeats"] * self._options["max_period"]),
                       k - self._options["lag"] + 1):
            if np.isnan(self.settle[j]):
                ends = [float(end[i]) for op_id in self._settles[j] for _, end, i in self._where.get(op_id, [])]
                self.settle[j] = max(ends) - self.starts[j] if ends and not np.isnan(ends).any() else np.nan
        p = period_at(self.starts, self.settle, k, **self._options)
        if p is not None:
            self.found = (k, p)
            self._stop_after = self.begun

    def outcome(self, context: Any = None) -> PeriodicRun:
        """The periodic run found, or (none by the last step) the mean of the last intervals, as
        :func:`replay_until_periodic` gives them; ``replayed`` is the steps begun."""
        repeats, max_period = self._options["repeats"], self._options["max_period"]
        if self.found is not None:
            s, p = self.found
            return _measured(self.starts, s, p, True, repeats * p, self.begun + 1, context)
        last = len(self.starts) - 1
        return _measured(self.starts, last, max_period, False, repeats * max_period, last, context)
