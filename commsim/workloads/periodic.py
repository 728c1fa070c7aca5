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

>>> import numpy as np
>>> def run(steps):    # intervals 1, 1, then alternating 2 and 3; every step settles 0.5 s after its start
...     gaps = [1.0, 1.0] + [2.0 + (k % 2) for k in range(steps - 2)]
...     return np.concatenate([[0.0], np.cumsum(gaps)]), np.full(steps, 0.5), None
>>> r = replay_until_periodic(run, lag=1, limit=40)
>>> r.periodic, r.period, r.iteration, r.steps
(True, 2, 2.5, 8)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from commsim.errors import ConfigError

__all__ = ["PeriodicRun", "replay_until_periodic", "period_at"]


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
