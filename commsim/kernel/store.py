"""The kernel's activity store: resources, activity slots and their resource incidences as arrays.

Nothing here knows about time or SimPy. Activities live in slots (a struct of
arrays grown by doubling, slots reused after completion); each activity's
``(resource, coefficient)`` incidences are contiguous in the incidence arrays,
which grow by doubling and are compacted when many are dead. A CSR index of the
incidences grouped by resource lets the solvers read the activities of a few
resources without scanning the whole fabric. The store also keeps the log of
what changed since the last rate recomputation (new incidence ranges, freed
resources), which the fast path of disjoint batches reads.
"""

from __future__ import annotations

import math

import numpy as np

from commsim.kernel.maxmin import UNBOUNDED

__all__ = ["ActivityStore", "DONE_RTOL"]

DONE_RTOL = 1e-12
"""Remaining work below this fraction of the amount counts as done."""


class ActivityStore:
    """Resources, activities and incidences of one kernel (arrays; no Python object per activity)."""

    def __init__(self) -> None:
        # per resource: capacity, carried work, last recorded load, live incidences (views of buffers with room)
        self._res_room = 0
        self._res_buffers = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
        self.capacity = np.zeros(0)
        self.res_names: list[str] = []
        self.carried = np.zeros(0)  # work carried by each resource over completed activities
        self.last_load = np.zeros(0)
        self.res_live = np.zeros(0, dtype=np.int64)  # live incidences per resource
        # activity slots (struct of arrays), grown by doubling
        self.slots = 0
        self.amount = np.zeros(0)
        self.remaining = np.zeros(0)  # as of t_ref
        self.rate = np.zeros(0)
        self.level = np.zeros(0)  # rate / weight, +inf until first solved
        self.bottleneck = np.zeros(0, dtype=np.int64)  # resource that holds it back, -1: its cap
        self.t_ref = np.zeros(0)
        self.finish = np.zeros(0)  # +inf on every slot not running (the completion scan relies on it)
        self.weight = np.zeros(0)
        self.cap = np.zeros(0)
        self.prio = np.zeros(0, dtype=np.int64)
        self.tag = np.zeros(0, dtype=np.int64)
        self.batch = np.zeros(0, dtype=np.int64)
        self.alive = np.zeros(0, dtype=bool)
        self.trip_start = np.zeros(0, dtype=np.int64)
        self.trip_count = np.zeros(0, dtype=np.int64)
        self._free: list[np.ndarray] = []
        self._n_free = 0
        self.high_water = 0
        # incidences: (activity slot, resource, coefficient), contiguous per activity
        self.t_act = np.zeros(0, dtype=np.int64)
        self.t_res = np.zeros(0, dtype=np.int64)
        self.t_coef = np.zeros(0)
        self.t_live = np.zeros(0, dtype=bool)
        self.n_trip = 0
        self.n_dead_trip = 0
        # incidence positions grouped by resource (a CSR built over positions < _index_end; later
        # positions are scanned), so a local update reads the activities of a few resources only
        self._index_order = np.zeros(0, dtype=np.int64)
        self._index_ptr = np.zeros(1, dtype=np.int64)
        self._index_end = -1  # -1: not built
        # what changed since the last recomputation, for the fast path of disjoint batches
        self.new_ranges: list[tuple[np.ndarray, int, int]] = []
        self.freed: list[np.ndarray] = []
        self.moved = False  # incidence positions moved while new ranges were noted: the ranges are gone
        self.caponly: list[np.ndarray] = []  # new activities with no resource, until their first solve

    # ------------------------------------------------------------------ resources
    @property
    def resource_count(self) -> int:
        """Number of resources defined so far."""
        return self.capacity.shape[0]

    def add_resources(self, caps: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Append resources (checked capacities, one name each); return their ids."""
        first = self.resource_count
        end = first + caps.shape[0]
        if end > self._res_room:
            # buffers grow by doubling: devices add their resources one at a time (4,096 GPUs: 4,096 calls)
            self._res_room = max(2 * self._res_room, end, 64)
            self._res_buffers = tuple(_grown(buf, self._res_room) for buf in self._res_buffers)
        capacity, carried, last_load, res_live = self._res_buffers
        capacity[first:end] = caps
        self.capacity, self.carried = capacity[:end], carried[:end]
        self.last_load, self.res_live = last_load[:end], res_live[:end]
        self.res_names.extend(names)
        return np.arange(first, end)

    # ------------------------------------------------------------------ slots
    def alloc_slots(self, n: int) -> np.ndarray:
        """``n`` free slots (reused first, then new ones past the high-water mark)."""
        taken: list[np.ndarray] = []
        need = n
        while need and self._free:
            chunk = self._free.pop()
            if chunk.shape[0] > need:
                self._free.append(chunk[need:])
                chunk = chunk[:need]
            taken.append(chunk)
            need -= chunk.shape[0]
        self._n_free -= n - need
        if need:
            first = self.high_water
            if first + need > self.slots:
                self._grow_slots(max(2 * self.slots, first + need, 64))
            taken.append(np.arange(first, first + need))
            self.high_water = first + need
        return np.concatenate(taken) if len(taken) != 1 else taken[0]

    def release_slots(self, ids: np.ndarray) -> None:
        """Give the slots of retired activities back for reuse."""
        self._free.append(ids.copy())
        self._n_free += ids.size

    def _grow_slots(self, size: int) -> None:
        def grow(arr: np.ndarray, fill: float | int | bool = 0) -> np.ndarray:
            out = np.full(size, fill, dtype=arr.dtype)
            out[: arr.shape[0]] = arr
            return out

        self.amount = grow(self.amount)
        self.remaining = grow(self.remaining)
        self.rate = grow(self.rate)
        self.level = grow(self.level)
        self.bottleneck = grow(self.bottleneck, -1)
        self.t_ref = grow(self.t_ref)
        self.finish = grow(self.finish, math.inf)
        self.weight = grow(self.weight, 1.0)
        self.cap = grow(self.cap, math.inf)
        self.prio = grow(self.prio)
        self.tag = grow(self.tag)
        self.batch = grow(self.batch)
        self.alive = grow(self.alive, False)
        self.trip_start = grow(self.trip_start)
        self.trip_count = grow(self.trip_count)
        self.slots = size

    def settle(self, ids: np.ndarray, now: float) -> None:
        """Bring the remaining work of ``ids`` up to ``now`` (before their rates change)."""
        self.remaining[ids] = np.maximum(self.remaining[ids] - self.rate[ids] * (now - self.t_ref[ids]), 0.0)
        self.t_ref[ids] = now

    def set_rates(self, acts: np.ndarray, rates: np.ndarray, bottleneck: np.ndarray, now: float) -> None:
        """New rates (settled activities): levels, bottlenecks and finish times follow.

        An activity that nothing bounds (rate :data:`~commsim.kernel.maxmin.UNBOUNDED`) completes
        at ``now``; it is kept at rate 0 until then, so no infinity enters the
        work, load and level arithmetic.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            finish = np.where(rates > 0.0, now + self.remaining[acts] / rates, math.inf)
        instant = rates == UNBOUNDED
        if instant.any():
            rates = np.where(instant, 0.0, rates)
            finish[instant] = now
        self.rate[acts] = rates
        self.level[acts] = rates / self.weight[acts]
        self.bottleneck[acts] = bottleneck
        finish[self.remaining[acts] <= self.amount[acts] * DONE_RTOL] = now
        self.finish[acts] = finish

    def fresh_caponly(self) -> np.ndarray:
        """Activities without resources that have not been given their rate yet."""
        if not self.caponly:
            return np.zeros(0, dtype=np.int64)
        slots = np.concatenate(self.caponly).astype(np.int64, copy=False)
        slots = slots[self.alive[slots] & np.isinf(self.finish[slots])]
        self.caponly = [slots] if slots.size else []
        return slots

    # ------------------------------------------------------------------ incidences
    def append_incidences(self, slots: np.ndarray, indptr: np.ndarray, res: np.ndarray, coef: np.ndarray) -> None:
        """Give ``slots`` their incidences (CSR ``indptr`` over ``res``/``coef``)."""
        count = np.diff(indptr)
        nnz = res.shape[0]
        if self.n_trip + nnz > self.t_act.shape[0]:
            self.compact_incidences(extra=nnz)
        start = self.n_trip
        end = start + nnz
        self.t_act[start:end] = np.repeat(slots, count)
        self.t_res[start:end] = res
        self.t_coef[start:end] = coef
        self.t_live[start:end] = True
        self.trip_start[slots] = start + indptr[:-1]
        self.trip_count[slots] = count
        self.n_trip = end
        if nnz:
            self.res_live += np.bincount(res, minlength=self.res_live.shape[0])
        self.new_ranges.append((slots, start, end))

    def compact_incidences(self, extra: int) -> None:
        """Drop dead incidences, leaving room for ``extra`` more."""
        self._index_end = -1  # positions move: the resource index is rebuilt when next needed
        if self.new_ranges:
            self.moved = True  # incidence positions move: the ranges noted for the fast path are gone
        n = self.n_trip
        live = self.t_live[:n]
        n_live = int(np.count_nonzero(live))
        size = max(64, self.t_act.shape[0], 2 * (n_live + extra))
        acts = self.t_act[:n][live]
        new_act = np.zeros(size, dtype=np.int64)
        new_res = np.zeros(size, dtype=np.int64)
        new_coef = np.zeros(size)
        new_live = np.zeros(size, dtype=bool)
        new_act[:n_live] = acts
        new_res[:n_live] = self.t_res[:n][live]
        new_coef[:n_live] = self.t_coef[:n][live]
        new_live[:n_live] = True
        self.t_act, self.t_res, self.t_coef, self.t_live = new_act, new_res, new_coef, new_live
        self.n_trip = n_live
        self.n_dead_trip = 0
        if n_live:
            first = np.flatnonzero(np.concatenate(([True], acts[1:] != acts[:-1])))
            self.trip_start[acts[first]] = first

    def offsets(self, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Positions of the incidences of ``ids`` (``counts`` of each) in the incidence arrays."""
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        return np.repeat(self.trip_start[ids] - np.cumsum(counts) + counts, counts) + np.arange(total)

    def kill_incidences(self, ids: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
        """Mark the incidences of ``ids`` dead; return the resources they used."""
        if offsets is None:
            offsets = self.offsets(ids, self.trip_count[ids])
        total = offsets.shape[0]
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        self.t_live[offsets] = False
        self.n_dead_trip += total
        self.trip_count[ids] = 0
        freed = self.t_res[offsets]
        self.res_live -= np.bincount(freed, minlength=self.res_live.shape[0])
        self.freed.append(freed)
        return freed

    def take_changes(self) -> None:
        """Forget the change log (after a recomputation has used it)."""
        self.new_ranges, self.freed, self.moved = [], [], False

    def resource_index(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The index of live incidence positions grouped by resource, rebuilt when too stale.

        Returns ``(order, ptr, end)``: the positions on resource ``r`` are
        ``order[ptr[r]:ptr[r + 1]]`` (some may have died since: check ``t_live``);
        positions from ``end`` on are not in the index and must be scanned.
        """
        n = self.n_trip
        end = self._index_end
        if end < 0 or n - end > max(1024, end // 8) or self._index_ptr.shape[0] != self.resource_count + 1:
            self._build_index()
        return self._index_order, self._index_ptr, self._index_end

    def _build_index(self) -> None:
        n = self.n_trip
        live = np.flatnonzero(self.t_live[:n])
        res = self.t_res[live]
        self._index_order = live[np.argsort(res, kind="stable")]
        self._index_ptr = np.zeros(self.resource_count + 1, dtype=np.int64)
        np.cumsum(np.bincount(res, minlength=self.resource_count), out=self._index_ptr[1:])
        self._index_end = n

    def resource_mask(self, res_ids: np.ndarray) -> np.ndarray:
        """A boolean per resource, true on ``res_ids``."""
        mark = np.zeros(self.resource_count, dtype=bool)
        mark[res_ids] = True
        return mark


def _grown(buffer: np.ndarray, size: int) -> np.ndarray:
    """``buffer`` copied into a zeroed array of ``size`` entries."""
    out = np.zeros(size, dtype=buffer.dtype)
    out[: buffer.shape[0]] = buffer
    return out
