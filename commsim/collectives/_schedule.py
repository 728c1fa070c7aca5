"""Collective schedules: rounds of point-to-point transfers with per-transfer dependencies.

A :class:`Schedule` is what an algorithm produces and the executor runs. Each
:class:`Step` is a round of transfers between group positions; each transfer may
wait for transfers of earlier steps (``deps``), so a rank forwards a chunk as
soon as *it* has received it, not when the whole round is over. Steps of a
regular algorithm share their index arrays, so a 4,096-rank ring all-reduce
(8,190 steps) holds O(ranks) numbers, not O(ranks x steps).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from commsim.errors import ConfigError

__all__ = ["Dep", "Schedule", "Step", "aggregate", "depth", "share_waits", "tile"]


@dataclass(frozen=True, eq=False)
class Dep:
    """Entry ``i`` of the owning step waits for entry ``index[i]`` of step ``step`` (-1: no wait)."""

    step: int
    index: np.ndarray


@dataclass(eq=False)
class Step:
    """One round: entry ``i`` sends ``nbytes[i]`` from group position ``src[i]`` to ``dst[i]``.

    ``reduce`` means the receiver adds what it got into its buffer before the
    transfers that wait for this one may start (charged to the device when the
    run models reduction cost). ``channel`` (per entry or one for all) separates
    parallel rings/trees and gives them distinct flow hashes; ``phase`` labels
    the step in results.
    """

    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray
    deps: tuple[Dep, ...] = ()
    reduce: bool = False
    channel: np.ndarray | int = 0
    phase: str = ""
    _waits: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.src.shape[0])

    @property
    def waits(self) -> np.ndarray:
        """How many earlier transfers each entry waits for."""
        if self._waits is None:
            waits = np.zeros(len(self), dtype=np.int64)
            for dep in self.deps:
                waits += dep.index >= 0
            self._waits = waits
        return self._waits


@dataclass(eq=False)
class Schedule:
    """The steps of one collective on a group of ``ranks`` positions.

    ``nbytes`` is the message size in the nccl-tests convention of ``op``.
    """

    op: str
    algorithm: str
    ranks: int
    nbytes: float
    steps: list[Step]
    notes: str = ""

    @property
    def wire_bytes(self) -> float:
        """Bytes all transfers put on the network together."""
        return float(sum(float(np.sum(s.nbytes)) for s in self.steps))

    def check(self) -> None:
        """Check the structural rules (used by tests and when building new algorithms).

        Raises :class:`~commsim.errors.ConfigError` naming the step and the rule it breaks.
        """
        for k, step in enumerate(self.steps):
            n = len(step)
            _require(step.dst.shape == (n,) and step.nbytes.shape == (n,), f"steps[{k}]",
                     (step.src.shape, step.dst.shape, step.nbytes.shape), "has src, dst and nbytes of different lengths",
                     "give one source, destination and size per transfer")
            for name, ends in (("src", step.src), ("dst", step.dst)):
                _require(n == 0 or (ends.min() >= 0 and ends.max() < self.ranks), f"steps[{k}].{name}",
                         (int(ends.min()), int(ends.max())) if n else (), f"has a position outside 0..{self.ranks - 1}",
                         f"use group positions 0..{self.ranks - 1}")
            for dep in step.deps:
                _require(0 <= dep.step < k, f"steps[{k}].deps", dep.step, "names a step that is not an earlier one",
                         f"depend on steps 0..{k - 1} only")
                _require(dep.index.shape == (n,), f"steps[{k}].deps", dep.index.shape,
                         "has an index array of another length than the step", "give one index per transfer")
                _require(dep.index.max(initial=-1) < len(self.steps[dep.step]), f"steps[{k}].deps",
                         int(dep.index.max(initial=-1)), f"indexes past the {len(self.steps[dep.step])} transfers of "
                         f"step {dep.step}", "index transfers of the step depended on")


def _require(holds: bool, field: str, value: object, rule: str, fix: str) -> None:
    if not holds:
        raise ConfigError(field=field, value=value, rule=rule, fix=fix)


def share_waits(schedule: Schedule) -> None:
    """Compute ``waits`` once per distinct set of dependency arrays and share it between the steps.

    Steps of a regular algorithm share their dependency arrays, so a 4,096-rank ring
    all-reduce needs one ``waits`` array, not 8,190 of 4,096 entries each.
    """
    shared: dict[tuple[int, ...], np.ndarray] = {}
    for step in schedule.steps:
        if step._waits is None and step.deps:
            key = tuple(id(dep.index) for dep in step.deps)
            if key not in shared:
                shared[key] = step.waits
            step._waits = shared[key]


def tile(schedule: Schedule, copies: int) -> Schedule:
    """``copies`` independent instances of ``schedule`` side by side, as one schedule.

    Copy ``c`` uses positions ``c * ranks ... (c + 1) * ranks - 1``; steps stay
    aligned, so many groups running the same collective at once (the 16 tensor-
    parallel groups of a pipeline stage) cost one batch per step. Arrays shared by
    several steps stay shared.
    """
    if copies == 1:
        return schedule
    n = schedule.ranks
    memo: dict[tuple[int, int], np.ndarray] = {}

    def offset(arr: np.ndarray, stride: int, keep_negative: bool = False) -> np.ndarray:
        key = (id(arr), stride)
        if key not in memo:
            shifts = (np.arange(copies) * stride)[:, None]
            tiled = arr[None, :] + shifts
            if keep_negative:
                tiled = np.where(arr[None, :] < 0, -1, tiled)
            memo[key] = tiled.reshape(-1)
        return memo[key]

    def repeat(arr: np.ndarray) -> np.ndarray:
        key = (id(arr), -1)
        if key not in memo:
            memo[key] = np.tile(arr, copies)
        return memo[key]

    steps = []
    for step in schedule.steps:
        deps = tuple(Dep(d.step, offset(d.index, len(schedule.steps[d.step]), keep_negative=True))
                     for d in step.deps)
        channel = repeat(step.channel) if isinstance(step.channel, np.ndarray) else step.channel
        steps.append(Step(src=offset(step.src, n), dst=offset(step.dst, n), nbytes=repeat(step.nbytes), deps=deps,
                          reduce=step.reduce, channel=channel, phase=step.phase))
    return Schedule(schedule.op, schedule.algorithm, n * copies, schedule.nbytes, steps,
                    notes=f"{copies} groups of {n}; {schedule.notes}".rstrip("; "))


def depth(schedule: Schedule) -> int:
    """The longest chain of steps that wait for one another (2(n-1) for a ring all-reduce)."""
    level = np.zeros(len(schedule.steps), dtype=np.int64)
    for k, step in enumerate(schedule.steps):
        level[k] = 1 + max((level[d.step] for d in step.deps), default=0)
    return int(level.max(initial=0))


_AGGREGATED: weakref.WeakKeyDictionary[Schedule, tuple[Schedule, int]] = weakref.WeakKeyDictionary()


_AGGREGATED_BY_CHANNEL: weakref.WeakKeyDictionary[Schedule, tuple[Schedule, int]] = weakref.WeakKeyDictionary()


def aggregate(schedule: Schedule, *, by_channel: bool = False) -> tuple[Schedule, int]:
    """One step holding every connection's total bytes, and the depth of the original.

    The *flows* mode of the executor sends each connection's bytes as one flow
    after the latency of ``depth`` steps. On uncongested paths this gives the
    alpha-beta time of ring schedules exactly and treats chains as fully
    pipelined; under contention it shares bandwidth like the steps would on
    average, at a fraction of the cost.
    Reductions are summed per receiving rank. ``by_channel`` keeps one flow per
    connection *and channel* (each channel its own flow hash, as NCCL's channels
    or an RDMA connection's queue pairs are), so a channel hashed onto a busy link
    slows its connection as it would on a real fabric.
    """
    cache = _AGGREGATED_BY_CHANNEL if by_channel else _AGGREGATED
    cached = cache.get(schedule)
    if cached is not None:
        return cached
    n = schedule.ranks
    totals: dict[tuple[int, int, int], np.ndarray] = {}
    arrays: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    reduced = np.zeros(n)
    for step in schedule.steps:
        channel = step.channel if by_channel else 0
        key = (id(step.src), id(step.dst), id(channel) if isinstance(channel, np.ndarray) else -1 - int(channel))
        if key not in totals:
            totals[key] = np.zeros(len(step))
            arrays[key] = (step.src, step.dst, np.broadcast_to(np.asarray(channel, dtype=np.int64), step.src.shape))
        totals[key] += step.nbytes
        if step.reduce:
            reduced += np.bincount(step.dst, weights=step.nbytes, minlength=n)
    empty = np.zeros(0, dtype=np.int64)
    src, dst, chan = (np.concatenate([a[i] for a in arrays.values()]) if arrays else empty for i in range(3))
    size = np.concatenate(list(totals.values())) if totals else np.zeros(0)
    pairs, which = np.unique((chan * n + src) * n + dst, return_inverse=True)
    summed = np.bincount(which, weights=size, minlength=pairs.shape[0])
    step = Step(src=(pairs // n) % n, dst=pairs % n, nbytes=summed, reduce=bool(reduced.any()),
                channel=pairs // (n * n) if by_channel else 0, phase="aggregate")
    merged = Schedule(schedule.op, schedule.algorithm, n, schedule.nbytes, [step] if pairs.size else [],
                      notes=f"aggregated; {schedule.notes}".rstrip("; "))
    cache[schedule] = (merged, depth(schedule))
    return cache[schedule]
