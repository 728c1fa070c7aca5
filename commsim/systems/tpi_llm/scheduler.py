"""The sliding-window memory scheduler: a prefetcher that keeps at most ``w`` blocks in memory.

A device runs its blocks in a fixed order, token after token (use ``k`` of the
sequence is block ``order[k]``). The prefetcher loads use after use from disk,
in order and one at a time; before it starts loading use ``k`` it waits until
fewer than ``w`` windowed blocks are held (loaded, or being loaded, and not yet
released). The runner releases a block when it is done with it, which frees
its memory and a slot. A block the runner reaches before it is loaded is a
*stall*. ``pinned`` blocks are loaded once at the start and never released
(the scheduler turned off pins everything; an Accelerate-style offload pins
what fits its budget). With ``prefetch=False`` a load starts only when the
runner asks for the block (on-demand loading, no overlap).

Memory is taken from the device's :class:`~commsim.devices.MemoryPool` when a
load *starts* (the buffer exists before it is filled), plus an optional
staging copy in the file's dtype held while the load runs (the loader reads
the file, then converts it to the compute dtype).

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

from collections.abc import Callable, Sequence

import numpy as np
import simpy
from simpy.events import Event

from commsim.devices.memory import MemoryPool
from commsim.errors import ConfigError

__all__ = ["SlidingWindow", "loose_condition", "schedule_times", "steady_stall", "tight_condition"]

Loader = Callable[[int, int], Event]
"""``load(block, use) -> event`` that succeeds when the block's bytes are in memory."""


class SlidingWindow:
    """Prefetch ``uses`` block uses (block ``order[k % len(order)]``) into a window of ``window`` blocks.

    Parameters
    ----------
    env:
        The SimPy environment.
    order:
        Block ids in the order one period (one token) uses them.
    uses:
        How many uses to serve in all (periods x ``len(order)``).
    nbytes, staging:
        Bytes held per block while resident, and bytes of the staging copy held
        while it loads (indexed by block id).
    window:
        Blocks held at most (``None``: the scheduler is off, every block is pinned).
    load:
        Starts loading a block; returns its completion event.
    memory:
        The device's memory pool (allocations and frees are tracked there).
    pinned:
        Block ids resident for the whole run (loaded by :meth:`preload`).
    prefetch:
        Load ahead (True) or only when the runner asks (False).
    labels:
        Names of the blocks for the memory pool.
    """

    def __init__(self, env: simpy.Environment, order: Sequence[int], uses: int, nbytes: Sequence[float],
                 staging: Sequence[float], window: int | None, load: Loader, memory: MemoryPool, *,
                 pinned: Sequence[int] = (), prefetch: bool = True, labels: Sequence[str] | None = None) -> None:
        if window is not None and window < 1:
            raise ConfigError(field="window", value=window, rule="must be at least 1 block",
                              fix="give a window of 1 or more blocks (TPI-LLM uses 2), or turn the scheduler off")
        self.env = env
        self.order = np.asarray(order, dtype=np.int64)
        self.uses = int(uses)
        self.nbytes = np.asarray(nbytes, dtype=float)
        self.staging = np.asarray(staging, dtype=float)
        self.window = window
        self.loader = load
        self.memory = memory
        self.prefetch = prefetch
        self.labels = list(labels) if labels is not None else [f"block{b}" for b in range(self.nbytes.shape[0])]
        self.pinned = np.zeros(self.nbytes.shape[0], dtype=bool)
        if window is None:
            self.pinned[np.unique(self.order)] = True
        self.pinned[np.asarray(list(pinned), dtype=np.int64)] = True
        self.held = 0
        self.max_held = 0
        self.loads = 0
        self.bytes_loaded = 0.0
        self.load_busy = 0.0
        self._ready: dict[int, Event] = {}
        self._handles: dict[int, int] = {}
        self._pinned_handles: list[int] = []
        self._slot: Event | None = None
        self._asked: dict[int, Event] = {}
        self._closed = False
        self.process: simpy.Process | None = None

    # ------------------------------------------------------------------ start-up
    def preload(self):
        """A SimPy generator: load every pinned block once, in order (run before :meth:`start`)."""
        for block in dict.fromkeys(self.order.tolist()):
            if not self.pinned[block]:
                continue
            self._pinned_handles.append(self.memory.allocate(float(self.nbytes[block]), self.labels[block]))
            staging = self._stage(block)
            start = self.env.now
            yield self.loader(block, -1)
            self._unstage(staging)
            self.loads += 1
            self.bytes_loaded += float(self.nbytes[block])
            self.load_busy += self.env.now - start

    def start(self) -> None:
        """Start the prefetcher."""
        self.process = self.env.process(self.run())

    # ------------------------------------------------------------------ the runner's side
    def ready(self, use: int) -> Event:
        """An event that succeeds when use ``use`` may run (at once for pinned blocks)."""
        block = int(self.order[use % self.order.shape[0]])
        if self.pinned[block]:
            event = Event(self.env)
            event.succeed()
            return event
        if not self.prefetch:
            asked = self._asked.setdefault(use, Event(self.env))
            if not asked.triggered:
                asked.succeed()
        return self._ready.setdefault(use, Event(self.env))

    def release(self, use: int) -> None:
        """The runner is done with use ``use``: free its memory and its slot (pinned blocks stay)."""
        block = int(self.order[use % self.order.shape[0]])
        if self.pinned[block]:
            return
        handle = self._handles.pop(use, None)
        if handle is None:
            raise ConfigError(field="release", value=use, rule="is not a loaded block use",
                              fix="release each block use once, after it was ready")
        self.memory.free(handle)
        self.held -= 1
        if self._slot is not None and not self._slot.triggered:
            self._slot.succeed()

    def close(self) -> None:
        """Free the pinned blocks (end of the run)."""
        for handle in self._pinned_handles:
            self.memory.free(handle)
        self._pinned_handles.clear()
        self._closed = True

    # ------------------------------------------------------------------ the prefetcher
    def _stage(self, block: int) -> int | None:
        size = float(self.staging[block])
        return self.memory.allocate(size, f"{self.labels[block]} (staging)") if size > 0 else None

    def _unstage(self, handle: int | None) -> None:
        if handle is not None:
            self.memory.free(handle)

    def run(self):
        """A SimPy generator: the prefetcher (what :meth:`start` runs as a process)."""
        period = self.order.shape[0]
        for use in range(self.uses):
            block = int(self.order[use % period])
            if self.pinned[block]:
                continue
            if not self.prefetch:
                yield self._asked.setdefault(use, Event(self.env))
            while self.window is not None and self.held >= self.window:
                self._slot = Event(self.env)
                yield self._slot
            self.held += 1
            self.max_held = max(self.max_held, self.held)
            self._handles[use] = self.memory.allocate(float(self.nbytes[block]), self.labels[block])
            staging = self._stage(block)
            start = self.env.now
            yield self.loader(block, use)
            self._unstage(staging)
            self.loads += 1
            self.bytes_loaded += float(self.nbytes[block])
            self.load_busy += self.env.now - start
            event = self._ready.setdefault(use, Event(self.env))
            event.succeed()


# ---------------------------------------------------------------------- steady-state analysis
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
