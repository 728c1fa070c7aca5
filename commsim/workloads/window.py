"""Weights streamed from disk through a sliding window of blocks: a replay plug-in.

The sliding-window memory scheduler: a prefetcher that keeps at most ``w`` blocks in memory.

A device runs its blocks in a fixed order, period after period (a token) (use ``k`` of the
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

:class:`WindowLoader` takes part in a :class:`~commsim.workloads.replay.Replay`
(its plug-in hooks) with a :class:`SlidingWindow` per device:

* ``start``: before the trace starts every pinned block is loaded and each
  windowed device has filled its window (:attr:`WindowLoader.t0`);
* ``before`` an op tagged ``use: k``: hold it until use ``k``'s block is in
  memory (a wait is a *stall*), then fault in the part of it that sits in swap,
  if any, at the device's swap bandwidth (a lower bound: evictions and LRU
  thrashing are not charged);
* ``after`` an op tagged ``release: k``: use ``k``'s block leaves the window.

Loads are disk reads into DRAM on the device's disk and memory resources (the
fluid kernel shares DRAM bandwidth between them and the kernels). Devices that
run one program in lockstep (one replay cohort) may share one window: each load
is then one batch of disk reads, one per device, done when the slowest is, and
every device's pool holds its own copy. An allocation beyond RAM + swap
(``OutOfMemoryError``) is kept in :attr:`WindowLoader.error` and stops the
simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
from simpy.core import StopSimulation
from simpy.events import AllOf, Event

from commsim.devices.memory import MemoryPool
from commsim.errors import CommsimError, ConfigError

__all__ = ["Blocks", "SlidingWindow", "WindowLoader"]

Loader = Callable[[int, int], Event]
"""``load(block, use) -> event`` that succeeds when the block's bytes are in memory."""


@dataclass(frozen=True)
class Blocks:
    """The blocks one device streams, in the order one period uses them (bytes per block)."""

    labels: tuple[str, ...]
    resident: tuple[float, ...]
    """Held in memory while the block is in the window."""
    read: tuple[float, ...]
    """Read from disk to load it."""
    staging: tuple[float, ...]
    """Held besides while it loads (e.g. the file's copy before a dtype conversion)."""


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
        The device's memory pool (allocations and frees are tracked there), or
        anything with its ``allocate``, ``free`` and ``swapped`` (the pools of a
        lockstep group).
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
        """Free the pinned blocks and any block loaded but never released (end of the run)."""
        for handle in [*self._pinned_handles, *self._handles.values()]:
            self.memory.free(handle)
        self._pinned_handles.clear()
        self._handles.clear()
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


class WindowLoader:
    """Sliding-window loading of ``blocks[d]`` on device ``devices[d]`` (trace rank ``d``), a replay plug-in.

    Parameters
    ----------
    sim:
        The simulation the replay runs on.
    devices, blocks:
        Device node and blocks (one period) of each rank that streams weights;
        ranks past them (a parameter server, say) hold none.
    periods:
        Periods of the run (each window serves ``periods x len(blocks[d])`` uses).
    window, pinned, prefetch:
        As for :class:`SlidingWindow` (``pinned`` per rank).
    record:
        Record load, stall and swap spans.
    groups:
        Ranks that run in lockstep with the same blocks and share one window
        (default: every rank alone).
    lookahead:
        Keep prefetching one more period past the trace's last (loaded, never
        run): the last period then sees the disk and the window as every
        period of a longer run does.

    After the run, :attr:`stall` and :attr:`swap` hold, per rank, the seconds
    each use waited for its load and for its swap-in.
    """

    def __init__(self, sim: Any, devices: Sequence[str], blocks: Sequence[Blocks], *, periods: int,
                 window: int | None, pinned: Sequence[Sequence[int]] | None = None, prefetch: bool = True,
                 record: bool = False, groups: Sequence[Sequence[int]] | None = None,
                 lookahead: bool = False) -> None:
        self.sim = sim
        self.env = sim.env
        self.devices = list(devices)
        self.blocks = list(blocks)
        self.prefetch = prefetch
        self.window = window
        self.record = record
        self.stall = [np.zeros(periods * len(b.labels)) for b in self.blocks]
        """Per rank, seconds each use waited for its block."""
        self.swap = [np.zeros(periods * len(b.labels)) for b in self.blocks]
        """Per rank, seconds each use faulted its block in from swap."""
        self.t0 = math.nan
        """When the trace started (pinned blocks and first windows loaded), seconds."""
        self.error: CommsimError | None = None
        self.groups = [list(g) for g in groups] if groups is not None else [[d] for d in range(len(self.devices))]
        self.group_of = np.full(len(self.devices), -1, dtype=np.int64)
        for g, ranks in enumerate(self.groups):
            if any(self.blocks[r] != self.blocks[ranks[0]] for r in ranks) or (self.group_of[ranks] >= 0).any():
                raise ConfigError(field="groups", value=self.groups, rule="must split the ranks into groups of "
                                  "ranks with the same blocks", fix="group only ranks with the same blocks, once each")
            self.group_of[ranks] = g
        if (self.group_of < 0).any():
            raise ConfigError(field="groups", value=self.groups, rule="leaves a rank out",
                              fix="give every rank that streams blocks a group")
        self._cohort_groups: dict[int, tuple[np.ndarray, tuple[int, ...]]] = {}
        self._released: dict[tuple[int, int], int] = {}
        self.windows: list[SlidingWindow] = []
        """One window per group."""
        for g, ranks in enumerate(self.groups):
            nodes = [sim.devices[self.devices[r]] for r in ranks]
            for device in nodes:
                if device.disk_resource is None:
                    raise ConfigError(field=f"devices.{device.name}.disk_read_bandwidth", rule="is not set, so "
                                      "weights cannot be loaded from disk", fix="give the device a disk_read_bandwidth")
            b = self.blocks[ranks[0]]
            self.windows.append(SlidingWindow(
                self.env, range(len(b.labels)), (periods + lookahead) * len(b.labels), b.resident, b.staging, window,
                self._loader(g), _Pools([d.memory for d in nodes]),
                pinned=pinned[ranks[0]] if pinned is not None else (), prefetch=prefetch, labels=b.labels))

    def window_of(self, rank: int) -> SlidingWindow:
        """The window that serves ``rank``."""
        return self.windows[int(self.group_of[rank])]

    # ------------------------------------------------------------------ replay hooks
    def start(self, replay: Any) -> Event:
        """Load the pinned blocks and fill the windows; the trace starts at :attr:`t0`."""
        return self.env.process(self._guard(self._startup()))

    def before(self, replay: Any, ranks: np.ndarray, op: Any) -> Event | None:
        """Hold an op tagged ``use`` until its block is in memory (and out of swap) on every rank."""
        use = op.tags.get("use")
        if use is None:
            return None
        gates = []
        for g in self._groups_in(ranks):
            window = self.windows[g]
            ready = window.ready(int(use))
            if ready.triggered and not window.memory.swapped:
                continue            # resident: no wait, no process
            gates.append(self.env.process(self._guard(self._gate(g, int(use), ready))))
        if not gates:
            return None
        return gates[0] if len(gates) == 1 else AllOf(self.env, gates)

    def after(self, replay: Any, ranks: np.ndarray, op: Any) -> None:
        """Release the block use an op tagged ``release`` was the last to need."""
        use = op.tags.get("release")
        if use is None:
            return
        for g in self._groups_in(ranks):
            # a group's ranks may run as separate cohorts (lockstep off): the block leaves when the last is done
            done = self._released.get((g, int(use)), 0) + int(np.count_nonzero(self.group_of[ranks[ranks < len(
                self.devices)]] == g))
            if done < len(self.groups[g]):
                self._released[(g, int(use))] = done
                continue
            self._released.pop((g, int(use)), None)
            self.windows[g].release(int(use))

    def _groups_in(self, ranks: np.ndarray) -> tuple[int, ...]:
        """The windows of a cohort's ranks (a cohort keeps its rank array: looked up once per cohort)."""
        key = id(ranks)
        found = self._cohort_groups.get(key)
        if found is None or found[0] is not ranks:
            found = (ranks, tuple(dict.fromkeys(self.group_of[ranks[ranks < len(self.devices)]].tolist())))
            self._cohort_groups[key] = found
        return found[1]

    def close(self) -> None:
        """Free the pinned blocks (end of the run)."""
        for window in self.windows:
            window.close()

    # ------------------------------------------------------------------ pieces
    def _loader(self, g: int) -> Loader:
        ranks = self.groups[g]
        nodes = [self.sim.devices[self.devices[r]] for r in ranks]
        blocks = self.blocks[ranks[0]]
        res = [[d.disk_resource, d.memory_resource] for d in nodes]
        coefs = [[1.0, 1.0]] * len(nodes)

        def load(block: int, use: int) -> Event:
            nbytes = blocks.read[block]
            done = self.sim.kernel.start([nbytes] * len(nodes), res, coefs).done
            if self.record:
                start = self.env.now
                done.callbacks.append(lambda _ev: [self.sim.recorder.span(
                    d.name, "io", "disk", f"load {blocks.labels[block]}", start, self.env.now, nbytes=nbytes)
                    for d in nodes])
            return done
        return load

    def _gate(self, g: int, use: int, ready: Event) -> Generator[Event, Any, None]:
        ranks = self.groups[g]
        blocks = self.blocks[ranks[0]]
        block = use % len(blocks.labels)
        start = self.env.now
        yield ready
        for r in ranks:
            self.stall[r][use] += self.env.now - start
        self._span(ranks, "compute", "delay", f"stall: {blocks.labels[block]} not loaded", start)
        swap = self._swap_in(ranks, blocks.labels[block], blocks.resident[block])
        if swap is not None:
            start = self.env.now
            yield swap
            for r in ranks:
                self.swap[r][use] += self.env.now - start
            self._span(ranks, "io", "swap", f"swap-in {blocks.labels[block]}", start)

    def _swap_in(self, ranks: list[int], label: str, resident: float) -> Event | None:
        """Fault in the swapped share of a block on every device of ``ranks`` that swaps (None: none does)."""
        nodes = [self.sim.devices[self.devices[r]] for r in ranks]
        swapping = [d for d in nodes if d.memory.swapped > 0 and d.memory.in_use > 0]
        if not swapping:
            return None
        amounts = [resident * d.memory.swapped / d.memory.in_use for d in swapping]
        rates = [d.spec.swap_bandwidth or d.spec.disk_read_bandwidth or d.spec.memory_bandwidth for d in swapping]
        res = [[d.disk_resource, d.memory_resource] for d in swapping]
        return self.sim.kernel.start(amounts, res, [[1.0, 1.0]] * len(swapping), cap=np.array(rates),
                                     describe=lambda t: f"swap-in of {label} on {swapping[t].name}").done

    def _startup(self) -> Generator[Event, Any, None]:
        yield AllOf(self.env, [self.env.process(self._guard(w.preload())) for w in self.windows])
        for w in self.windows:
            w.process = self.env.process(self._guard(w.run()))
        if self.prefetch and self.window is not None:
            first = []
            for w in self.windows:
                streamed = [k for k in range(min(len(w.order), self.window * 4)) if not w.pinned[int(w.order[k])]]
                first += [w.ready(k) for k in streamed[: self.window]]
            yield AllOf(self.env, first)
        self.t0 = self.env.now

    def _guard(self, body: Generator[Event, Any, None]) -> Generator[Event, Any, None]:
        """Run a process body; a commsim error (e.g. out of memory) is kept and stops the simulation.

        SimPy cannot re-raise errors whose constructors take more than a message,
        so they are caught here and the run ends at once.
        """
        try:
            yield from body
        except CommsimError as exc:
            if self.error is None:
                self.error = exc
                stop = Event(self.env)
                stop.callbacks.append(StopSimulation.callback)
                stop.succeed()

    def _span(self, ranks: list[int], stream: str, kind: str, name: str, start: float) -> None:
        if self.record and self.env.now > start:
            for rank in ranks:
                self.sim.recorder.span(self.devices[rank], stream, kind, name, start, self.env.now)


class _Pools:
    """The memory pools of a lockstep group, as one pool to the window: every allocation is made on each."""

    def __init__(self, pools: list[Any]) -> None:
        self.pools = pools
        self._handles: dict[int, list[int]] = {}
        self._next = 0

    def allocate(self, nbytes: float, label: str = "") -> int:
        """Allocate ``nbytes`` on every pool; one handle for them all."""
        handles = []
        try:
            for pool in self.pools:
                handles.append(pool.allocate(nbytes, label))
        except CommsimError:
            for pool, handle in zip(self.pools, handles, strict=False):
                pool.free(handle)
            raise
        self._next += 1
        self._handles[self._next] = handles
        return self._next

    def free(self, handle: int) -> None:
        """Free what :meth:`allocate` took under ``handle``."""
        for pool, h in zip(self.pools, self._handles.pop(handle), strict=True):
            pool.free(h)

    @property
    def swapped(self) -> float:
        """Bytes in swap on the device that swaps most."""
        return max(pool.swapped for pool in self.pools)
