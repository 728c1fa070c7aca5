"""The sliding-window memory scheduler as a plug-in of the shared replay engine.

:class:`WindowLoader` gives every device a :class:`~.scheduler.SlidingWindow`
and takes part in :class:`~commsim.workloads.replay.Replay` through its plug-in
hooks:

* ``start``: before the prompt arrives every pinned block is loaded and each
  windowed device has filled its window (``t0``; a model loaded once is not
  charged its load time per request);
* ``before`` a compute op tagged with a block ``use``: hold it until the block
  is loaded (a wait is a *stall*), then fault in the part of it that sits in
  swap, if any, at the device's swap bandwidth;
* ``after`` an op tagged ``release``: the block leaves the window (memory and
  a slot freed; pinned blocks stay).

**Lockstep groups.** Devices that run the same program in lockstep (the
workers of an even split, one replay cohort) share one window: each load is one
batch of disk reads, one per device, done when the slowest is (the replay's
lockstep assumption), and every device's memory pool holds its own copy.

Loads are disk reads into DRAM on the device's disk and memory resources (the
fluid kernel shares DRAM bandwidth between them and the kernels); memory is
the device's :class:`~commsim.devices.MemoryPool`, which raises
``OutOfMemoryError`` beyond RAM + swap: the loader keeps that error and stops
the simulation (:attr:`error`).

**Swap.** A device whose allocations exceed its RAM holds the excess in swap;
each block it runs first reads ``swapped / in_use`` of its bytes at the swap
bandwidth (a lower bound: evictions and LRU thrashing are not charged).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
from simpy.core import StopSimulation
from simpy.events import AllOf, Event

from commsim.errors import CommsimError, ConfigError
from commsim.systems.tpi_llm.partition import COMPUTE_BYTES, Block
from commsim.systems.tpi_llm.scheduler import SlidingWindow

__all__ = ["WindowLoader"]


class WindowLoader:
    """Sliding-window weight loading for ``blocks[d]`` on device ``devices[d]`` (trace rank ``d``).

    Parameters
    ----------
    sim:
        The simulation the replay runs on.
    devices, blocks:
        Device node and block sequence (one token) of each rank that holds blocks.
    tokens:
        Tokens of the run (the window serves ``tokens x len(blocks[d])`` uses).
    window, pinned, prefetch:
        As for :class:`~.scheduler.SlidingWindow` (``pinned`` per device).
    file_bytes:
        Bytes per parameter read from disk.
    staging:
        Hold the file-dtype copy of a block while it loads.
    record:
        Record load, stall and swap spans.
    groups:
        Ranks that run in lockstep with the same blocks and share one window
        (default: every rank alone).
    """

    def __init__(self, sim: Any, devices: Sequence[str], blocks: Sequence[Sequence[Block]], *, tokens: int,
                 window: int | None, pinned: Sequence[Sequence[int]] | None = None, prefetch: bool = True,
                 file_bytes: float = 2.0, staging: bool = True, record: bool = False,
                 groups: Sequence[Sequence[int]] | None = None) -> None:
        self.sim = sim
        self.env = sim.env
        self.devices = list(devices)
        self.blocks = [list(b) for b in blocks]
        self.file_bytes = float(file_bytes)
        self.prefetch = prefetch
        self.window = window
        self.record = record
        self.tokens = int(tokens)
        self.stall = np.zeros((len(self.devices), self.tokens))
        """Seconds each device waited for a load, per token."""
        self.swap = np.zeros((len(self.devices), self.tokens))
        """Seconds each device faulted blocks in from swap, per token."""
        self.t0 = math.nan
        self.error: CommsimError | None = None
        self.groups = [list(g) for g in groups] if groups is not None else [[d] for d in range(len(self.devices))]
        self.group_of = np.full(len(self.devices), -1, dtype=np.int64)
        for g, ranks in enumerate(self.groups):
            if any(self.blocks[r] != self.blocks[ranks[0]] for r in ranks) or (self.group_of[ranks] >= 0).any():
                raise ConfigError(field="groups", value=self.groups, rule="must split the ranks into groups of "
                                  "ranks with the same blocks", fix="group only ranks with the same block sequence")
            self.group_of[ranks] = g
        if (self.group_of < 0).any():
            raise ConfigError(field="groups", value=self.groups, rule="leaves a rank out",
                              fix="give every rank that holds blocks a group")
        self.windows: list[SlidingWindow] = []
        """One window per group."""
        for g, ranks in enumerate(self.groups):
            nodes = [sim.devices[self.devices[r]] for r in ranks]
            for device in nodes:
                if device.disk_resource is None:
                    raise ConfigError(field=f"devices.{device.name}.disk_read_bandwidth", rule="is not set, so "
                                      "weights cannot be loaded from disk", fix="give the device a disk_read_bandwidth")
            seq = self.blocks[ranks[0]]
            cold = staging and file_bytes < COMPUTE_BYTES
            self.windows.append(SlidingWindow(
                self.env, range(len(seq)), self.tokens * len(seq), [b.nbytes for b in seq],
                [b.params * file_bytes if cold else 0.0 for b in seq], window, self._loader(g),
                _Pools([d.memory for d in nodes]), pinned=pinned[ranks[0]] if pinned is not None else (),
                prefetch=prefetch, labels=[b.name for b in seq]))

    def window_of(self, rank: int) -> SlidingWindow:
        """The window that serves ``rank``."""
        return self.windows[int(self.group_of[rank])]

    # ------------------------------------------------------------------ replay hooks
    def start(self, replay: Any) -> Event:
        """Load the pinned blocks and fill the windows; the trace starts at :attr:`t0`."""
        return self.env.process(self._guard(self._startup()))

    def before(self, replay: Any, ranks: np.ndarray, op: Any) -> Event | None:
        """Hold a compute op of a block use until the block is in memory (and out of swap) on every rank."""
        use = op.tags.get("use") if op.kind == "compute" else None
        if use is None:
            return None
        gates = []
        for g in dict.fromkeys(self.group_of[ranks].tolist()):
            window = self.windows[g]
            ready = window.ready(int(use))
            if ready.triggered and not window.memory.swapped:
                continue            # resident: no wait, no process
            gates.append(self.env.process(self._guard(self._gate(g, int(use), int(op.tags["token"]), ready))))
        if not gates:
            return None
        return gates[0] if len(gates) == 1 else AllOf(self.env, gates)

    def after(self, replay: Any, ranks: np.ndarray, op: Any) -> None:
        """Release the block use an op tagged ``release`` was the last to need."""
        use = op.tags.get("release")
        if use is not None:
            for g in dict.fromkeys(self.group_of[ranks[ranks < len(self.devices)]].tolist()):
                self.windows[g].release(int(use))

    def close(self) -> None:
        """Free the pinned blocks (end of the run)."""
        for window in self.windows:
            window.close()

    # ------------------------------------------------------------------ pieces
    def _loader(self, g: int):
        ranks = self.groups[g]
        nodes = [self.sim.devices[self.devices[r]] for r in ranks]
        blocks = self.blocks[ranks[0]]
        res = [[d.disk_resource, d.memory_resource] for d in nodes]
        coefs = [[1.0, 1.0]] * len(nodes)

        def load(block: int, use: int) -> Event:
            b = blocks[block]
            nbytes = b.params * self.file_bytes
            done = self.sim.kernel.start([nbytes] * len(nodes), res, coefs).done
            if self.record:
                start = self.env.now
                done.callbacks.append(lambda _ev: [self.sim.recorder.span(
                    d.name, "io", "disk", f"load {b.name}", start, self.env.now, nbytes=nbytes) for d in nodes])
            return done
        return load

    def _gate(self, g: int, use: int, token: int, ready: Event) -> Generator[Event, Any, None]:
        ranks = self.groups[g]
        seq = self.blocks[ranks[0]]
        block = seq[use % len(seq)]
        start = self.env.now
        yield ready
        self.stall[ranks, token] += self.env.now - start
        self._span(ranks, "compute", "delay", f"stall: {block.name} not loaded", start)
        swap = self._swap_in(ranks, block)
        if swap is not None:
            start = self.env.now
            yield swap
            self.swap[ranks, token] += self.env.now - start
            self._span(ranks, "io", "swap", f"swap-in {block.name}", start)

    def _swap_in(self, ranks: list[int], block: Block) -> Event | None:
        """Fault in the swapped share of ``block`` on every device of ``ranks`` that swaps (None: none does)."""
        nodes = [self.sim.devices[self.devices[r]] for r in ranks]
        swapping = [d for d in nodes if d.memory.swapped > 0 and d.memory.in_use > 0]
        if not swapping:
            return None
        amounts = [block.nbytes * d.memory.swapped / d.memory.in_use for d in swapping]
        rates = [d.spec.swap_bandwidth or d.spec.disk_read_bandwidth or d.spec.memory_bandwidth for d in swapping]
        res = [[d.disk_resource, d.memory_resource] for d in swapping]
        return self.sim.kernel.start(amounts, res, [[1.0, 1.0]] * len(swapping), cap=np.array(rates),
                                     describe=lambda t: f"swap-in of {block.name} on {swapping[t].name}").done

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
