"""Steady state of the sliding-window memory scheduler (:class:`~commsim.workloads.window.SlidingWindow`).

**When the window hides the disk.** Let block ``i`` of a period of ``n``
blocks occupy the runner for ``c_i`` (its compute plus its all-reduce: with
the default release policy a block is held until its output is reduced) and
take ``l_i`` to load. With ``w = 2`` the load of block ``i + 1`` can only start
when block ``i - 1`` is released, i.e. when block ``i`` starts, and must end
before block ``i + 1`` starts, so there is no stall in steady state iff the
*tight* condition holds: ``l_{i+1} <= c_i`` for every ``i``; otherwise block
``i + 1`` waits ``l_{i+1} - c_i`` (when the disk is free). A larger window lets
the disk run ahead on blocks that load faster than they run; the disk keeps
up in steady state iff the *loose* condition holds: ``sum(l) <= sum(c)`` over a
period, and then a window deep enough to bank the slack of the fast blocks
(``w >= 3`` for an attention/FFN pair) removes the stall.

>>> c, l = [25e-3, 31e-3], [18e-3, 30e-3]   # attention 11 + 14 ms, FFN 17 + 14 ms; loads 18 / 30 ms
>>> tight_condition(c, l), loose_condition(c, l)
(False, True)
>>> [round(x * 1e3, 6) for x in steady_stall(c, l, window=2)]   # the FFN waits 30 - 25 ms
[0.0, 5.0]
>>> [round(x * 1e3, 6) for x in steady_stall(c, l, window=3)]
[0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from commsim.errors import ConfigError

__all__ = ["loose_condition", "schedule_times", "steady_stall", "tight_condition"]


def tight_condition(busy: Sequence[float], load: Sequence[float]) -> bool:
    """Every block's load fits in the previous block's busy time (``l[i+1] <= c[i]``, cyclically)."""
    c = np.asarray(busy, dtype=float)
    lo = np.asarray(load, dtype=float)
    return bool(np.all(np.roll(lo, -1) <= c + 1e-15))


def loose_condition(busy: Sequence[float], load: Sequence[float]) -> bool:
    """The disk keeps up over a period (``sum(l) <= sum(c)``)."""
    return bool(float(np.sum(load)) <= float(np.sum(busy)) + 1e-15)


def schedule_times(busy: Sequence[float], load: Sequence[float], window: int, periods: int,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Start times and stalls of ``periods`` periods of the window scheduler (the recurrence the DES follows).

    Load of use ``k`` starts at ``max(end of load k-1, release of use k-w)``;
    use ``k`` starts at ``max(release of use k-1, end of its load)`` and is
    released ``c[k]`` later. Returns ``(start, stall)`` per use.
    """
    if window < 1:
        raise ConfigError(field="window", value=window, rule="must be at least 1 block", fix="give a window >= 1")
    c = np.tile(np.asarray(busy, dtype=float), periods)
    lo = np.tile(np.asarray(load, dtype=float), periods)
    n = c.shape[0]
    start = np.zeros(n)
    release = np.zeros(n)
    stall = np.zeros(n)
    load_end = 0.0
    for k in range(n):
        slot = release[k - window] if k >= window else 0.0
        load_end = max(load_end, slot) + lo[k]
        previous = release[k - 1] if k else 0.0
        start[k] = max(previous, load_end)
        stall[k] = start[k] - previous
        release[k] = start[k] + c[k]
    return start, stall


def steady_stall(busy: Sequence[float], load: Sequence[float], window: int, periods: int = 64) -> list[float]:
    """Stall before each block of the period once the scheduler has settled (the last period's stalls)."""
    _, stall = schedule_times(busy, load, window, periods)
    return stall[-len(busy):].tolist()
