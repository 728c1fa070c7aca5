"""Memory capacity with allocate/free, peak tracking, optional swap and a timeline.

>>> pool = MemoryPool("gpu0", capacity=10e9)
>>> a = pool.allocate(6e9, "weights")
>>> b = pool.allocate(3e9, "activations")
>>> pool.free(b)
3000000000.0
>>> pool.in_use, pool.peak
(6000000000.0, 9000000000.0)
>>> pool.allocate(5e9, "too much")
Traceback (most recent call last):
...
commsim.errors.OutOfMemoryError: out of memory on gpu0: allocating 4.657 GiB with 5.588 GiB in use exceeds the capacity of 9.313 GiB. Fix: free memory first, use a device with more memory or swap, or shard the workload over more devices.

An unbounded pool (``capacity=None``) never refuses; its peak says what a workload needs:

>>> roomy = MemoryPool("gpu0", capacity=None)
>>> _ = roomy.allocate(1e15, "everything")
>>> roomy.peak, roomy.swapped
(1000000000000000.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable

from commsim.errors import ConfigError, OutOfMemoryError

__all__ = ["MemoryPool"]


class MemoryPool:
    """Bytes held on one device.

    Allocations beyond ``capacity`` (bytes) spill into ``swap`` (bytes, when there
    is any); beyond both they raise :class:`~commsim.errors.OutOfMemoryError`.
    ``capacity=None`` is an unbounded pool: it holds anything, never swaps, and
    its peak is what the workload needs. ``clock`` gives the current simulated
    time for the timeline.
    """

    def __init__(self, name: str, capacity: float | None, swap: float = 0.0,
                 clock: Callable[[], float] | None = None):
        if capacity is None and swap:
            raise ConfigError(field="swap", value=swap, rule="is given to an unbounded memory pool",
                              fix="give a capacity with swap, or no swap to an unbounded pool")
        self.name = name
        self.capacity = None if capacity is None else float(capacity)
        self.swap = float(swap)
        self._clock = clock or (lambda: 0.0)
        self._held: dict[int, tuple[float, str]] = {}
        self._next = 0
        self.in_use = 0.0
        self.peak = 0.0
        self.peak_swapped = 0.0
        self.allocated_total = 0.0
        self.freed_total = 0.0
        self.timeline: list[tuple[float, float]] = [(self._clock(), 0.0)]

    @property
    def swapped(self) -> float:
        """Bytes currently held in swap."""
        return 0.0 if self.capacity is None else max(0.0, self.in_use - self.capacity)

    @property
    def resident(self) -> float:
        """Bytes currently held in memory proper."""
        return self.in_use if self.capacity is None else min(self.in_use, self.capacity)

    def allocate(self, nbytes: float, label: str = "") -> int:
        """Hold ``nbytes`` more; return a handle for :meth:`free`."""
        if not nbytes >= 0:
            raise ConfigError(field="bytes", value=nbytes, rule="must be >= 0", fix="allocate a non-negative size")
        if self.capacity is not None and self.in_use + nbytes > self.capacity + self.swap:
            raise OutOfMemoryError(self.name, nbytes, self.in_use, self.capacity + self.swap)
        handle = self._next
        self._next += 1
        self._held[handle] = (float(nbytes), label)
        self.in_use += nbytes
        self.allocated_total += nbytes
        self.peak = max(self.peak, self.in_use)
        self.peak_swapped = max(self.peak_swapped, self.swapped)
        self.timeline.append((self._clock(), self.in_use))
        return handle

    def free(self, handle: int) -> float:
        """Release an allocation; return its size."""
        try:
            nbytes, _ = self._held.pop(handle)
        except KeyError:
            raise ConfigError(field="memory handle", value=handle, rule="is not held (freed twice or never allocated)",
                              fix="free each allocation exactly once") from None
        self.in_use -= nbytes
        if abs(self.in_use) < 1e-6:
            self.in_use = 0.0
        self.freed_total += nbytes
        self.timeline.append((self._clock(), self.in_use))
        return nbytes

    def holdings(self) -> dict[str, float]:
        """Bytes held per label."""
        out: dict[str, float] = {}
        for nbytes, label in self._held.values():
            out[label] = out.get(label, 0.0) + nbytes
        return out
