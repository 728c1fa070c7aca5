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
    """

    def __init__(self, sim: Any, devices: Sequence[str], blocks: Sequence[Sequence[Block]], *, tokens: int,
                 window: int | None, pinned: Sequence[Sequence[int]] | None = None, prefetch: bool = True,
                 file_bytes: float = 2.0, staging: bool = True, record: bool = False) -> None:
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
        self.windows: list[SlidingWindow] = []
        for d, (name, seq) in enumerate(zip(self.devices, self.blocks, strict=True)):
            device = sim.devices[name]
            if device.disk_resource is None:
                raise ConfigError(field=f"devices.{name}.disk_read_bandwidth", rule="is not set, so weights "
                                  "cannot be loaded from disk", fix="give the device a disk_read_bandwidth")
            cold = staging and file_bytes < COMPUTE_BYTES
            self.windows.append(SlidingWindow(
                self.env, range(len(seq)), self.tokens * len(seq), [b.nbytes for b in seq],
                [b.params * file_bytes if cold else 0.0 for b in seq], window, self._loader(d), device.memory,
                pinned=pinned[d] if pinned is not None else (), prefetch=prefetch, labels=[b.name for b in seq]))

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
        for rank in ranks.tolist():
            window = self.windows[rank]
            ready = window.ready(int(use))
            pool = window.memory
            if ready.triggered and (pool.swapped <= 0 or pool.in_use <= 0):
                continue            # resident: no wait, no process
            gates.append(self.env.process(self._guard(self._gate(rank, int(use), int(op.tags["token"]), ready))))
        if not gates:
            return None
        return gates[0] if len(gates) == 1 else AllOf(self.env, gates)

    def after(self, replay: Any, ranks: np.ndarray, op: Any) -> None:
        """Release the block use an op tagged ``release`` was the last to need."""
        use = op.tags.get("release")
        if use is not None:
            for rank in ranks.tolist():
                if rank < len(self.windows):
                    self.windows[rank].release(int(use))

    def close(self) -> None:
        """Free the pinned blocks (end of the run)."""
        for window in self.windows:
            window.close()

    # ------------------------------------------------------------------ pieces
    def _loader(self, d: int):
        device = self.sim.devices[self.devices[d]]
        blocks = self.blocks[d]
        res = [device.disk_resource, device.memory_resource]

        def load(block: int, use: int) -> Event:
            b = blocks[block]
            nbytes = b.params * self.file_bytes
            done = device.kernel.start([nbytes], [res], [[1.0, 1.0]]).done
            if self.record:
                start = self.env.now
                done.callbacks.append(lambda _ev: self.sim.recorder.span(
                    device.name, "io", "disk", f"load {b.name}", start, self.env.now, nbytes=nbytes))
            return done
        return load

    def _gate(self, rank: int, use: int, token: int, ready: Event) -> Generator[Event, Any, None]:
        block = self.blocks[rank][use % len(self.blocks[rank])]
        start = self.env.now
        yield ready
        self.stall[rank, token] += self.env.now - start
        self._span(rank, "compute", "delay", f"stall: {block.name} not loaded", start)
        swap = self._swap_in(rank, block)
        if swap is not None:
            start = self.env.now
            yield swap
            self.swap[rank, token] += self.env.now - start
            self._span(rank, "io", "swap", f"swap-in {block.name}", start)

    def _swap_in(self, rank: int, block: Block) -> Event | None:
        device = self.sim.devices[self.devices[rank]]
        pool = device.memory
        if pool.swapped <= 0 or pool.in_use <= 0:
            return None
        nbytes = block.nbytes * pool.swapped / pool.in_use
        rate = device.spec.swap_bandwidth or device.spec.disk_read_bandwidth or device.spec.memory_bandwidth
        res = [device.disk_resource, device.memory_resource]
        return device.kernel.start([nbytes], [res], [[1.0] * len(res)], cap=rate,
                                   describe=lambda _t: f"swap-in of {block.name} on {device.name}").done

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

    def _span(self, rank: int, stream: str, kind: str, name: str, start: float) -> None:
        if self.record and self.env.now > start:
            self.sim.recorder.span(self.devices[rank], stream, kind, name, start, self.env.now)
