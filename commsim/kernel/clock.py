"""The kernel's hooks into SimPy's clock: work at the end of an instant, and the next completion.

SimPy has no "after everything else at this time" priority and no way to cancel
a scheduled event. :class:`InstantEndEvent` runs a callback after every event of
the current instant (SimPy's URGENT and NORMAL ones), so every change of an
instant is gathered before rates are recomputed. :class:`CompletionClock` keeps
exactly one SimPy timeout pending for the kernel's next completion and takes
superseded ones out of SimPy's queue when nothing else could pop them harmlessly.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import simpy
from simpy.events import Event

__all__ = ["INSTANT_END_PRIORITY", "CompletionClock", "InstantEndEvent"]

INSTANT_END_PRIORITY = 2
"""SimPy priority of :class:`InstantEndEvent`: after URGENT (0) and NORMAL (1), so every change of an instant is in."""


class InstantEndEvent(Event):
    """An event processed after every other event scheduled for the same instant.

    ``callback(event)`` runs then. The event is triggered at creation; it needs no
    ``succeed()``.
    """

    def __init__(self, env: simpy.Environment, callback: Callable[[Event], None]) -> None:
        super().__init__(env)
        self.callbacks.append(callback)
        self._ok = True
        self._value = None
        env.schedule(self, priority=INSTANT_END_PRIORITY)


class CompletionClock:
    """One pending SimPy wake-up for the earliest finish time (seconds) of a kernel's activities.

    ``on_wake(event)`` is called when the wake-up fires; it must check
    :meth:`is_current` first, because a superseded wake-up can still fire.
    """

    def __init__(self, env: simpy.Environment, on_wake: Callable[[Event], None]) -> None:
        self.env = env
        self._on_wake = on_wake
        self._pending: Event | None = None
        self._pending_time = math.inf
        self._stale: set[Event] = set()

    def wake_at(self, when: float) -> None:
        """Make sure the kernel wakes up at ``when`` (inf: no completion is due)."""
        pending = self._pending
        if pending is not None:
            if self._pending_time == when or self._pending_time < when < math.inf:
                # an early wake-up is harmless: it finds nothing due and sets the next one
                return
            self._stale.add(pending)
            self._pending = None
        if math.isinf(when):
            # nothing can complete: superseded wake-ups must not move the clock past the last real event
            self._drop_stale()
            return
        timeout = self.env.timeout(max(when - self.env.now, 0.0))
        timeout.callbacks.append(self._on_wake)
        self._pending = timeout
        self._pending_time = when

    def is_current(self, event: Event) -> bool:
        """Whether ``event`` is the pending wake-up (then it is consumed), not a superseded one."""
        if event is not self._pending:
            self._stale.discard(event)
            return False
        self._pending = None
        return True

    def _drop_stale(self) -> None:
        """Take superseded completion events out of SimPy's queue (it has no cancel)."""
        if not self._stale:
            return
        queue = self.env._queue
        kept = [item for item in queue if item[3] not in self._stale]
        if len(kept) != len(queue):
            queue[:] = kept
            heapq.heapify(queue)
        self._stale.clear()
