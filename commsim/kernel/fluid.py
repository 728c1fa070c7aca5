"""The fluid kernel: activities share resource capacity on top of a SimPy clock.

Everything that takes time in commsim and competes for something is an
*activity*: an amount of work (bytes, FLOP, ...) that consumes one or more
*resources* (a directed link, a device's compute, its HBM, a disk) at a rate.
Rates follow the weighted max-min fair allocation of :mod:`commsim.kernel.maxmin`.

The kernel stores activities as arrays (no Python object per activity) and
recomputes rates only when something changes: activities start, finish, are
rerouted or resources change capacity. All changes that fall on one simulated
instant are gathered and handled by one *flush* that runs after every other
event of that instant; the flush recomputes only the connected part of the
activity/resource graph that the changes touch. A single SimPy event is kept
pending for the next completion.

>>> import simpy
>>> env = simpy.Environment()
>>> kernel = FluidKernel(env)
>>> link = kernel.add_resources([10.0], ["link"])[0]
>>> batch = kernel.start([20.0, 40.0], [[link], [link]])
>>> env.run()
>>> env.now   # both share 10 units/s: the first ends at 4 s, the second gets it all after
6.0
"""

from __future__ import annotations

import heapq
import math
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
from simpy.events import Event

from commsim.errors import ConfigError
from commsim.kernel.maxmin import max_min_rates

__all__ = ["ActivityBatch", "FluidKernel", "KernelStats"]

DoneCallback = Callable[[np.ndarray, np.ndarray], None]
"""Called as ``on_done(ids, tags)`` with the activities of a batch that just completed."""

_FLUSH_PRIORITY = 2  # after SimPy's URGENT (0) and NORMAL (1): every change of an instant is in
_DONE_RTOL = 1e-12  # remaining work below this fraction of the amount counts as done
_MAX_LOCAL_ROUNDS = 8  # growth rounds of a local update before solving the whole component
# past these rounds only a small set keeps growing: on a densely coupled fabric a set that is still
# wrong after two rounds usually spreads over the component, and failing late costs more than the solve
_CHEAP_LOCAL_ROUNDS = 2
_CHEAP_LOCAL_SET = 64
# after k local updates failed in a row, the next 2^k - 1 removal-only flushes solve at once (k <= this)
_MAX_SKIP_DOUBLINGS = 5
_SCAN_INCIDENCES = 4096  # below this many incidences a local update scans them instead of using the index


@dataclass
class KernelStats:
    """Counters that explain where a run spent its time."""

    flushes: int = 0
    completion_events: int = 0
    activities_started: int = 0
    activities_completed: int = 0
    solved_activities: int = 0
    local_rounds: int = 0
    local_fallbacks: int = 0  # local updates that grew too large and handed over to a full solve
    local_skips: int = 0  # removal-only recomputations that went straight to the solve (back-off)
    largest_component: int = 0
    solve_seconds: float = 0.0


@dataclass(eq=False)
class ActivityBatch:
    """A group of activities started together.

    ``ids`` are kernel slot numbers, valid until each activity completes.
    ``done`` is a SimPy event that succeeds when every activity of the batch has
    completed or been aborted (its value is that time); ``aborted`` counts the
    activities stopped by :meth:`FluidKernel.abort`. ``owner`` is free for the
    layer that started the batch (the network keeps its transfer batch there).
    """

    ids: np.ndarray
    done: Event
    on_done: DoneCallback | None = None
    describe: Callable[[int], str] | None = None
    pending: int = 0
    aborted: int = 0
    owner: Any = None


class _LateEvent(Event):
    """An event processed after every other event scheduled for the same instant."""

    def __init__(self, env: simpy.Environment, callback: Callable[[Event], None]) -> None:
        super().__init__(env)
        self.callbacks.append(callback)
        self._ok = True
        self._value = None
        env.schedule(self, priority=_FLUSH_PRIORITY)


class FluidKernel:
    """Resources with capacities and activities that share them by weighted max-min fairness.

    Parameters
    ----------
    env:
        The SimPy environment that provides the clock.
    record_usage:
        Keep a log of every change of a resource's load (``usage_log()``), for
        link-utilisation tables and dashboards. Large studies may turn it off.
    verify:
        After every recomputation, check all rates against a from-scratch solve
        (for tests; slow).
    """

    def __init__(self, env: simpy.Environment, *, record_usage: bool = True, verify: bool = False) -> None:
        self.env = env
        self.record_usage = record_usage
        self.verify = verify
        self.stats = KernelStats()
        # resources
        # per resource: capacity, carried work, last recorded load, live incidences (views of buffers with room)
        self._res_room = 0
        self._res_buffers = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
        self._capacity = np.zeros(0)
        self._res_names: list[str] = []
        self._carried = np.zeros(0)  # work carried by each resource over completed activities
        self._last_load = np.zeros(0)
        # activity slots (struct of arrays), grown by doubling
        self._slots = 0
        self._amount = np.zeros(0)
        self._remaining = np.zeros(0)  # as of _t_ref
        self._rate = np.zeros(0)
        self._level = np.zeros(0)  # rate / weight, +inf until first solved
        self._bottleneck = np.zeros(0, dtype=np.int64)  # resource that holds it back, -1: its cap
        self._t_ref = np.zeros(0)
        self._finish = np.zeros(0)
        self._weight = np.zeros(0)
        self._cap = np.zeros(0)
        self._prio = np.zeros(0, dtype=np.int64)
        self._tag = np.zeros(0, dtype=np.int64)
        self._batch = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._trip_start = np.zeros(0, dtype=np.int64)
        self._trip_count = np.zeros(0, dtype=np.int64)
        self._free: list[np.ndarray] = []
        self._n_free = 0
        self._high_water = 0
        # incidences: (activity slot, resource, coefficient), contiguous per activity
        self._t_act = np.zeros(0, dtype=np.int64)
        self._t_res = np.zeros(0, dtype=np.int64)
        self._t_coef = np.zeros(0)
        self._t_live = np.zeros(0, dtype=bool)
        self._n_trip = 0
        self._n_dead_trip = 0
        # batches and pending changes
        self._batches: dict[int, ActivityBatch] = {}
        self._next_batch_id = 0
        self._dirty: list[np.ndarray] = []
        self._classes: dict[int, int] = {}  # running activities per priority class
        self._res_live = np.zeros(0, dtype=np.int64)  # live incidences per resource
        # incidence positions grouped by resource (a CSR built over positions < _index_end; later
        # positions are scanned), so a local update reads the activities of a few resources only
        self._index_order = np.zeros(0, dtype=np.int64)
        self._index_ptr = np.zeros(1, dtype=np.int64)
        self._index_end = -1  # -1: not built
        # what changed since the last flush, for the fast path of disjoint batches
        self._new_ranges: list[tuple[np.ndarray, int, int]] = []
        self._freed: list[np.ndarray] = []
        self._slow = False
        self._caponly: list[np.ndarray] = []  # new activities with no resource, until their first solve
        self._theta = math.inf  # lowest fair level the pending changes can affect
        self._local_misses = 0  # local updates that failed in a row
        self._local_skips = 0  # removal-only flushes left that skip the local update
        self._flush_pending = False
        self._pending: Event | None = None  # the one wake-up for the next completion
        self._pending_time = math.inf
        self._stale: set[Event] = set()
        self._usage_times: list[float] = []
        self._usage_res: list[np.ndarray] = []
        self._usage_load: list[np.ndarray] = []

    # ------------------------------------------------------------------ resources
    @property
    def resource_count(self) -> int:
        """Number of resources defined so far."""
        return self._capacity.shape[0]

    @property
    def resource_names(self) -> list[str]:
        """Names of the resources, indexed by resource id."""
        return self._res_names

    def add_resources(self, capacities: Sequence[float] | np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Add resources with the given capacities (units of work per second); return their ids."""
        caps = np.asarray(capacities, dtype=float).reshape(-1)
        if len(names) != caps.shape[0]:
            raise ConfigError(field="names", value=len(names), rule=f"does not match the {caps.shape[0]} capacities",
                              fix="give add_resources one name per capacity")
        if np.any(caps < 0) or np.any(np.isnan(caps)):
            bad = int(np.flatnonzero((caps < 0) | np.isnan(caps))[0])
            raise ConfigError(field=f"capacity of {names[bad]}", value=float(caps[bad]), rule="must be >= 0",
                              fix="give a non-negative capacity")
        first = self.resource_count
        end = first + caps.shape[0]
        if end > self._res_room:
            # buffers grow by doubling: devices add their resources one at a time (4,096 GPUs: 4,096 calls)
            self._res_room = max(2 * self._res_room, end, 64)
            self._res_buffers = tuple(_grown(buf, self._res_room) for buf in self._res_buffers)
        capacity, carried, last_load, res_live = self._res_buffers
        capacity[first:end] = caps
        self._capacity, self._carried = capacity[:end], carried[:end]
        self._last_load, self._res_live = last_load[:end], res_live[:end]
        self._res_names.extend(names)
        return np.arange(first, first + caps.shape[0])

    def capacity(self, resources: np.ndarray | int) -> np.ndarray:
        """Current capacity of the given resources."""
        return self._capacity[resources]

    def set_capacity(self, resources: np.ndarray | Sequence[int] | int, capacities: np.ndarray | float) -> None:
        """Change capacities now (faults, degradation); rates are recomputed at this instant."""
        ids = np.atleast_1d(np.asarray(resources, dtype=np.int64))
        caps = np.broadcast_to(np.asarray(capacities, dtype=float), ids.shape)
        if np.any(caps < 0):
            raise ConfigError(field="capacity", value=float(caps.min()), rule="must be >= 0",
                              fix="give a non-negative capacity (0 models a failed resource)")
        self._capacity[ids] = caps
        self._theta = 0.0
        self._slow = True
        self._mark_dirty(ids)

    def carried(self) -> np.ndarray:
        """Work each resource carried for activities completed so far (e.g. bytes per link).

        A rerouted activity counts on its old resources for the work done before the reroute.
        """
        return self._carried.copy()

    # ------------------------------------------------------------------ activities
    def start(
        self,
        amounts: Sequence[float] | np.ndarray,
        resources: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
        coefs: Sequence[Sequence[float]] | np.ndarray | None = None,
        *,
        weight: float | np.ndarray = 1.0,
        priority: int | np.ndarray = 0,
        cap: float | np.ndarray = math.inf,
        tags: np.ndarray | None = None,
        on_done: DoneCallback | None = None,
        describe: Callable[[int], str] | None = None,
    ) -> ActivityBatch:
        """Start a batch of activities now.

        Parameters
        ----------
        amounts:
            Work of each activity (>= 0), in the unit its rate is measured in.
        resources:
            The resources each activity consumes: a list of id lists, or a CSR
            pair ``(indptr, indices)``.
        coefs:
            Consumption per unit of rate, aligned with ``resources`` (flat for
            the CSR form); 1 when omitted.
        weight, priority, cap:
            Scalars or one value per activity (see :func:`max_min_rates`).
        tags:
            An integer per activity handed back to ``on_done`` and ``describe``
            (defaults to the position in the batch).
        on_done:
            Called with ``(ids, tags)`` each time some activities of the batch complete.
        describe:
            Turns a tag into a human-readable description for stall reports.
        """
        amount = np.asarray(amounts, dtype=float).reshape(-1)
        n = amount.shape[0]
        indptr, flat_res = _as_csr(resources, n)
        flat_coef = np.ones(flat_res.shape[0]) if coefs is None else _flatten(coefs, flat_res.shape[0])
        weights = np.broadcast_to(np.asarray(weight, dtype=float), (n,))
        prios = np.broadcast_to(np.asarray(priority, dtype=np.int64), (n,))
        caps = np.broadcast_to(np.asarray(cap, dtype=float), (n,))
        tag_arr = np.arange(n, dtype=np.int64) if tags is None else np.asarray(tags, dtype=np.int64).reshape(-1)
        empty = self._check_start(amount, indptr, flat_res, flat_coef, weights, caps, tag_arr)

        batch_id = self._next_batch_id
        self._next_batch_id += 1
        slots = self._alloc_slots(n)
        now = self.env.now
        self._amount[slots] = amount
        self._remaining[slots] = amount
        self._rate[slots] = 0.0
        self._level[slots] = math.inf
        self._t_ref[slots] = now
        self._finish[slots] = math.inf
        self._weight[slots] = weights
        self._cap[slots] = caps
        self._prio[slots] = prios
        self._tag[slots] = tag_arr
        self._batch[slots] = batch_id
        self._alive[slots] = True
        self._append_incidences(slots, indptr, flat_res, flat_coef)
        batch = ActivityBatch(ids=slots, done=Event(self.env), on_done=on_done, describe=describe, pending=n)
        self.stats.activities_started += n
        if n == 0:
            batch.done.succeed(now)
            return batch
        self._batches[batch_id] = batch
        self._count_classes(np.asarray(prios), +1)
        if empty.any():
            self._caponly.append(slots[empty])
        self._mark_dirty(flat_res)
        if flat_res.shape[0] == 0:
            self._request_flush()
        return batch

    def reroute(
        self,
        ids: np.ndarray | Sequence[int],
        resources: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
        coefs: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> None:
        """Replace the resources of running activities (remaining work is kept)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return
        if not np.all(self._alive[ids]):
            raise ConfigError(field="ids", value=ids[~self._alive[ids]].tolist()[:5], rule="names activities that are "
                              "not running", fix="reroute only running activities")
        indptr, flat_res = _as_csr(resources, ids.shape[0])
        flat_coef = np.ones(flat_res.shape[0]) if coefs is None else _flatten(coefs, flat_res.shape[0])
        if flat_res.size and (flat_res.min() < 0 or flat_res.max() >= self.resource_count):
            raise ConfigError(field="resources", value=int(flat_res.max()), rule="names a resource id that does not "
                              "exist", fix=f"use ids 0..{self.resource_count - 1}")
        self._settle(ids)
        # the work done so far was carried by the resources left behind; the new ones carry the rest
        counts = self._trip_count[ids]
        offsets = np.repeat(self._trip_start[ids] - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        done = np.repeat(self._amount[ids] - self._remaining[ids], counts) * self._t_coef[offsets]
        self._carried += np.bincount(self._t_res[offsets], weights=done, minlength=self.resource_count)
        self._amount[ids] = self._remaining[ids]
        self._theta = 0.0
        self._slow = True
        self._mark_dirty(self._kill_incidences(ids))
        self._append_incidences(ids, indptr, flat_res, flat_coef)
        self._mark_dirty(flat_res)

    def abort(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Stop running activities without completing them; return the work they had left.

        Their batches count them in ``aborted`` (``on_done`` is not called);
        the caller is responsible for reporting the loss.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = ids[self._alive[ids]]
        left = self.remaining(ids)
        self._settle(ids)
        self._retire(ids, completed=False)
        return left

    def rate(self, ids: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Current rates of running activities (work per second)."""
        return self._rate[np.asarray(ids, dtype=np.int64)]

    def remaining(self, ids: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Work left now for running activities."""
        ids = np.asarray(ids, dtype=np.int64)
        left = self._remaining[ids] - self._rate[ids] * (self.env.now - self._t_ref[ids])
        return np.maximum(left, 0.0)

    def running(self) -> np.ndarray:
        """Ids of activities that have started and not yet completed."""
        return np.flatnonzero(self._alive[: self._high_water])

    def batch_of(self, activity: int) -> ActivityBatch:
        """The batch a running activity belongs to."""
        return self._batches[int(self._batch[activity])]

    def tag_of(self, activity: int) -> int:
        """The tag a running activity was started with."""
        return int(self._tag[activity])

    def resources_of(self, activity: int) -> np.ndarray:
        """Resource ids consumed by one running activity."""
        start = self._trip_start[activity]
        return self._t_res[start : start + self._trip_count[activity]].copy()

    def activities_on(self, resources: np.ndarray | Sequence[int]) -> np.ndarray:
        """Running activities that consume any of ``resources``."""
        mark = np.zeros(self.resource_count, dtype=bool)
        mark[np.asarray(resources, dtype=np.int64)] = True
        n = self._n_trip
        hit = self._t_live[:n] & mark[self._t_res[:n]]
        return np.unique(self._t_act[:n][hit])

    def describe(self, ids: np.ndarray | Sequence[int]) -> list[str]:
        """Human-readable descriptions of running activities (for stall reports)."""
        out = []
        for slot in np.asarray(ids, dtype=np.int64):
            batch = self._batches.get(int(self._batch[slot]))
            tag = int(self._tag[slot])
            if batch is not None and batch.describe is not None:
                out.append(batch.describe(tag))
            else:
                names = [self._res_names[r] for r in self.resources_of(int(slot))]
                out.append(f"activity {int(slot)} on {', '.join(names) or 'no resource'}")
        return out

    def stalled(self) -> np.ndarray:
        """Running activities whose rate is zero and that have work left."""
        ids = self.running()
        return ids[(self._rate[ids] <= 0.0) & (self.remaining(ids) > 0.0)]

    # ------------------------------------------------------------------ activities that run alone
    @property
    def changes_pending(self) -> bool:
        """Whether changes made at this instant still wait for their rate recomputation."""
        return self._flush_pending

    def at_instant_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every event already scheduled for the current instant."""
        _LateEvent(self.env, lambda _event: callback())

    def solo_rates(self, indptr: np.ndarray, resources: np.ndarray, coefs: np.ndarray, *,
                   priority: int = 0) -> np.ndarray | None:
        """Rates (work per second) a batch started now would get, if it would run alone.

        "Alone" means: no change waits for a recomputation, every activity has a
        resource, and none of its resources is used by a running activity or by
        another activity of the batch (``indptr``/``resources`` in the CSR form of
        :meth:`start`, weight 1, no cap, priority ``priority``). Then each rate is
        its tightest ``capacity / coef``, computed exactly as :meth:`start` would
        compute it, and no rate elsewhere changes. Returns None otherwise, and when
        a rate would be 0 (the batch would stall).
        """
        if self._flush_pending or resources.size == 0 or (self._classes and set(self._classes) != {priority}):
            return None
        counts = np.diff(indptr)
        if counts.min() == 0 or self._res_live[resources].any():
            return None
        if np.unique(resources).shape[0] != resources.shape[0]:
            return None
        rates = np.minimum.reduceat(self._capacity[resources] / coefs, indptr[:-1])
        return rates if rates.min() > 0.0 else None

    def solo_completion(self, start: float, shortest: float, longest: float) -> float | None:
        """When activities started alone at ``start`` (seconds) complete, given their shortest and
        longest ``amount / rate``: the time of the kernel's completion event, exactly as a run of
        :meth:`start` would give it, or None when they would not all complete in that one event."""
        first = start + shortest  # as start() computes each finish time: now + left / rate
        event = start + max(first - start, 0.0)  # SimPy schedules the wake-up at now + delay
        last = start + longest
        return event if last <= event + max(abs(event) * _DONE_RTOL, 1e-300) else None

    def account_solo(self, resources: np.ndarray, incidence_work: np.ndarray, incidence_load: np.ndarray,
                     activities: int, spans: Sequence[tuple[float, float]]) -> None:
        """Count batches that ran alone without being started here (see :meth:`solo_rates`).

        One batch of ``activities`` activities ran in each ``(start, end)`` span (seconds,
        in time order, all before now); ``incidence_work`` is the work each incidence on
        ``resources`` carried per batch and ``incidence_load`` its load while running.
        Carried work, statistics and the usage log end as if each batch had been started
        and completed by the kernel.
        """
        repeats = len(spans)
        if repeats == 0:
            return
        ids, where = np.unique(resources, return_inverse=True)
        per_batch = np.bincount(where, weights=incidence_work, minlength=ids.shape[0])
        carried = self._carried[ids]
        for _ in range(repeats):  # added once per batch, as completions add it (identical rounding)
            np.add(carried, per_batch, out=carried)
        self._carried[ids] = carried
        stats = self.stats
        stats.activities_started += activities * repeats
        stats.activities_completed += activities * repeats
        stats.solved_activities += activities * repeats
        stats.flushes += 2 * repeats
        stats.completion_events += repeats
        stats.largest_component = max(stats.largest_component, activities)
        if self.record_usage:
            load = np.bincount(where, weights=incidence_load, minlength=ids.shape[0])
            idle = np.zeros(ids.shape[0])
            for i, (begin, end) in enumerate(spans):
                if i == 0 or spans[i - 1][1] != begin:
                    self._record_usage(ids, load, begin)
                if i + 1 == repeats or spans[i + 1][0] != end:  # a batch that starts as one ends: one record
                    self._record_usage(ids, idle, end)

    # ------------------------------------------------------------------ usage log
    def usage_log(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every recorded change of load: ``(time, resource, load)`` arrays in time order.

        A resource's load holds from its recorded time until its next record.
        Within one instant the last record wins.
        """
        if not self._usage_times:
            return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0)
        sizes = [len(r) for r in self._usage_res]
        times = np.repeat(np.asarray(self._usage_times), sizes)
        return times, np.concatenate(self._usage_res), np.concatenate(self._usage_load)

    # ------------------------------------------------------------------ internals
    def _check_start(self, amount, indptr, flat_res, flat_coef, weights, caps, tags) -> np.ndarray:
        """Raise on bad input; return which activities have no resource."""
        # min/max and a finite sum are a few passes for a batch of thousands (this runs every step)
        n = amount.shape[0]
        if n and (amount.min() < 0 or not np.isfinite(amount.sum())):
            raise ConfigError(field="amount", value=float(amount[~(np.isfinite(amount) & (amount >= 0))][0]),
                              rule="must be a finite number >= 0", fix="give a non-negative, finite amount of work")
        if flat_res.size and (flat_res.min() < 0 or flat_res.max() >= self.resource_count):
            raise ConfigError(field="resource id", value=int(flat_res.max()), rule="does not exist",
                              fix="use ids returned by add_resources()")
        if flat_coef.size and (flat_coef.min() <= 0 or not np.isfinite(flat_coef.sum())):
            raise ConfigError(field="coefficient", value=float(flat_coef.min()), rule="must be finite and > 0",
                              fix="drop a resource the activity does not consume instead of giving it 0")
        if n and not weights.min() > 0:
            raise ConfigError(field="weight", value=float(weights.min()), rule="must be > 0",
                              fix="give a positive weight (1 is the default)")
        if n and not caps.min() > 0:
            raise ConfigError(field="cap", value=float(caps.min()), rule="must be > 0",
                              fix="give a positive rate cap or leave it unbounded")
        empty = np.diff(indptr) == 0
        if empty.any() and np.any(empty & np.isinf(caps)):
            raise ConfigError(field="resources", value=[], rule="an activity needs a resource or a finite cap",
                              fix="give each activity at least one resource or a rate cap")
        if tags.shape[0] != n:
            raise ConfigError(field="tags", value=tags.shape[0], rule=f"does not match the {n} activities",
                              fix="give start one tag per activity")
        return empty

    def _alloc_slots(self, n: int) -> np.ndarray:
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
            first = self._high_water
            if first + need > self._slots:
                self._grow_slots(max(2 * self._slots, first + need, 64))
            taken.append(np.arange(first, first + need))
            self._high_water = first + need
        return np.concatenate(taken) if len(taken) != 1 else taken[0]

    def _grow_slots(self, size: int) -> None:
        def grow(arr: np.ndarray, fill: float | int | bool = 0) -> np.ndarray:
            out = np.full(size, fill, dtype=arr.dtype)
            out[: arr.shape[0]] = arr
            return out

        self._amount = grow(self._amount)
        self._remaining = grow(self._remaining)
        self._rate = grow(self._rate)
        self._level = grow(self._level)
        self._bottleneck = grow(self._bottleneck, -1)
        self._t_ref = grow(self._t_ref)
        self._finish = grow(self._finish, math.inf)
        self._weight = grow(self._weight, 1.0)
        self._cap = grow(self._cap, math.inf)
        self._prio = grow(self._prio)
        self._tag = grow(self._tag)
        self._batch = grow(self._batch)
        self._alive = grow(self._alive, False)
        self._trip_start = grow(self._trip_start)
        self._trip_count = grow(self._trip_count)
        self._slots = size

    def _append_incidences(self, slots: np.ndarray, indptr: np.ndarray, res: np.ndarray, coef: np.ndarray) -> None:
        count = np.diff(indptr)
        nnz = res.shape[0]
        if self._n_trip + nnz > self._t_act.shape[0]:
            self._compact_incidences(extra=nnz)
        start = self._n_trip
        end = start + nnz
        self._t_act[start:end] = np.repeat(slots, count)
        self._t_res[start:end] = res
        self._t_coef[start:end] = coef
        self._t_live[start:end] = True
        self._trip_start[slots] = start + indptr[:-1]
        self._trip_count[slots] = count
        self._n_trip = end
        if nnz:
            self._res_live += np.bincount(res, minlength=self._res_live.shape[0])
        self._new_ranges.append((slots, start, end))

    def _compact_incidences(self, extra: int) -> None:
        self._index_end = -1  # positions move: the resource index is rebuilt when next needed
        if self._new_ranges:
            self._slow = True  # incidence positions move: the ranges noted for the fast path are gone
        n = self._n_trip
        live = self._t_live[:n]
        n_live = int(np.count_nonzero(live))
        size = max(64, self._t_act.shape[0], 2 * (n_live + extra))
        acts = self._t_act[:n][live]
        new_act = np.zeros(size, dtype=np.int64)
        new_res = np.zeros(size, dtype=np.int64)
        new_coef = np.zeros(size)
        new_live = np.zeros(size, dtype=bool)
        new_act[:n_live] = acts
        new_res[:n_live] = self._t_res[:n][live]
        new_coef[:n_live] = self._t_coef[:n][live]
        new_live[:n_live] = True
        self._t_act, self._t_res, self._t_coef, self._t_live = new_act, new_res, new_coef, new_live
        self._n_trip = n_live
        self._n_dead_trip = 0
        if n_live:
            first = np.flatnonzero(np.concatenate(([True], acts[1:] != acts[:-1])))
            self._trip_start[acts[first]] = first

    def _offsets(self, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Positions of the incidences of ``ids`` (``counts`` of each) in the incidence arrays."""
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        return np.repeat(self._trip_start[ids] - np.cumsum(counts) + counts, counts) + np.arange(total)

    def _kill_incidences(self, ids: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
        """Mark the incidences of ``ids`` dead; return the resources they used."""
        if offsets is None:
            offsets = self._offsets(ids, self._trip_count[ids])
        total = offsets.shape[0]
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        self._t_live[offsets] = False
        self._n_dead_trip += total
        self._trip_count[ids] = 0
        freed = self._t_res[offsets]
        self._res_live -= np.bincount(freed, minlength=self._res_live.shape[0])
        self._freed.append(freed)
        return freed

    def _count_classes(self, prios: np.ndarray, sign: int) -> None:
        """Keep how many running activities each priority class has."""
        if prios.size == 0:
            return
        if prios[0] == prios[-1] and prios.min() == prios.max():
            values, counts = prios[:1], np.array([prios.size])
        else:
            values, counts = np.unique(prios, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            left = self._classes.get(value, 0) + sign * count
            if left:
                self._classes[value] = left
            else:
                self._classes.pop(value, None)

    def _mixed_priorities(self) -> bool:
        return len(self._classes) > 1

    def _mark_dirty(self, resources: np.ndarray) -> None:
        self._dirty.append(np.asarray(resources, dtype=np.int64).reshape(-1))
        self._request_flush()

    def _request_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            _LateEvent(self.env, self._flush)

    def _settle(self, ids: np.ndarray) -> None:
        """Bring the remaining work of ``ids`` up to now (before their rates change)."""
        now = self.env.now
        self._remaining[ids] = np.maximum(self._remaining[ids] - self._rate[ids] * (now - self._t_ref[ids]), 0.0)
        self._t_ref[ids] = now

    def _flush(self, _event: Event | None = None) -> None:
        self._flush_pending = False
        if not self._dirty:
            return
        seeds = np.concatenate(self._dirty) if len(self._dirty) > 1 else self._dirty[0]
        self._dirty = []
        theta = self._theta
        self._theta = math.inf
        tic = _time.perf_counter()
        self.stats.flushes += 1
        n = self._n_trip
        live = self._t_live[:n]
        t_act = self._t_act[:n]
        t_res = self._t_res[:n]
        t_coef = self._t_coef[:n]
        touched = None
        if not self._mixed_priorities():
            touched = self._disjoint_update()
            if touched is None and self._local_skips and not self._new_ranges and 0.0 < theta < math.inf:
                # local updates of removals kept failing (a densely coupled fabric): go straight to the solve
                self._local_skips -= 1
                self.stats.local_skips += 1
            elif touched is None:
                touched = self._local_update(seeds, theta)
                if touched is None:
                    self.stats.local_fallbacks += 1
                    self._local_misses = min(self._local_misses + 1, _MAX_SKIP_DOUBLINGS)
                    self._local_skips = (1 << self._local_misses) - 1
                else:
                    self._local_misses = 0
        # the level rule holds for removals alone: a new activity can slow anybody it meets
        only_removals = not self._new_ranges
        self._new_ranges, self._freed, self._slow = [], [], False
        if touched is None:
            touched = self._component_update(seeds, theta if only_removals else 0.0, live, t_act, t_res, t_coef)
        if self.record_usage:
            mark = touched[t_res] & live
            load = np.bincount(t_res[mark], weights=t_coef[mark] * self._rate[t_act[mark]],
                               minlength=self.resource_count)
            ids = np.flatnonzero(touched)
            self._record_usage(ids, load[ids])
        if self.verify:
            self._verify_rates()
        self.stats.solve_seconds += _time.perf_counter() - tic
        if self._n_dead_trip > max(1024, self._n_trip // 4):
            self._compact_incidences(extra=0)
        self._schedule_completion()

    def _disjoint_update(self) -> np.ndarray | None:
        """The common case of a collective step, solved without looking at anything else.

        When the only changes are new activities whose resources nobody else uses
        (each resource used by one of them) and removals that left their resources
        idle, no other rate can change and each new activity simply runs at its
        tightest limit. Returns the touched resources, or None when the case does
        not apply.
        """
        if self._slow or not (self._new_ranges or self._freed):
            return None
        touched = np.zeros(self.resource_count, dtype=bool)
        if self._freed:
            freed = np.concatenate(self._freed) if len(self._freed) > 1 else self._freed[0]
            if freed.size and self._res_live[freed].any():
                return None
            touched[freed] = True
        if not self._new_ranges:
            return touched
        slots = [r[0] for r in self._new_ranges]
        acts = np.concatenate(slots) if len(slots) > 1 else slots[0]
        pieces = [slice(a, b) for _, a, b in self._new_ranges]
        if not all(self._t_live[p].all() for p in pieces):
            return None  # some were stopped before their first solve
        res = self._t_res[pieces[0]] if len(pieces) == 1 else np.concatenate([self._t_res[p] for p in pieces])
        if res.size == 0 or np.any(self._res_live[res] != 1):
            return None  # shared by two of them, or with someone else
        counts = self._trip_count[acts]
        if np.any(counts == 0):
            return None  # activities with only a cap go the usual way
        coef = self._t_coef[pieces[0]] if len(pieces) == 1 else np.concatenate([self._t_coef[p] for p in pieces])
        # maxmin._unshared in global numbering: calling it would need local index arrays, which cost
        # about 20% of a 4,096-GPU ring all-reduce (measured), so the few lines are kept here
        starts = np.cumsum(counts) - counts
        limit = self._capacity[res] / coef
        tightest = np.minimum.reduceat(limit, starts)
        caps = self._cap[acts]
        rates = np.minimum(tightest, caps)
        at_limit = limit <= np.repeat(tightest, counts) * (1.0 + 1e-12)
        held = np.maximum.reduceat(np.where(at_limit, res, -1), starts)
        self._settle(acts)
        self._set_rates(acts, rates, np.where(caps <= tightest, -1, held))
        touched[res] = True
        return touched

    def _set_rates(self, acts: np.ndarray, rates: np.ndarray, bottleneck: np.ndarray) -> None:
        now = self.env.now
        self._rate[acts] = rates
        self._level[acts] = rates / self._weight[acts]
        self._bottleneck[acts] = bottleneck
        left = self._remaining[acts]
        with np.errstate(divide="ignore", invalid="ignore"):
            finish = np.where(rates > 0.0, now + left / rates, math.inf)
        finish[left <= self._amount[acts] * _DONE_RTOL] = now
        self._finish[acts] = finish
        self.stats.solved_activities += acts.size
        self.stats.largest_component = max(self.stats.largest_component, int(acts.size))

    def _component_update(self, seeds, theta, live, t_act, t_res, t_coef) -> np.ndarray:
        """Solve again what the changes can reach; return the resources touched.

        With a finite ``theta`` (only removals at this instant, one priority class)
        every activity below it keeps its rate, and solving all the others again,
        on what the kept ones leave, is exact and cheaper than a whole component
        of a densely coupled fabric. Otherwise the connected component is solved.
        """
        hw = self._high_water
        if 0.0 < theta < math.inf and not self._mixed_priorities():
            trip_in = live & (self._level[t_act] >= theta * (1.0 - 1e-9))
            act_in = np.zeros(self._slots, dtype=bool)
            act_in[t_act[trip_in]] = True
            res_in = np.zeros(self.resource_count, dtype=bool)
            res_in[seeds] = True
            res_in[t_res[trip_in]] = True
        else:
            act_in, trip_in, res_in = self._component(seeds, t_act, t_res, live)
        acts = np.flatnonzero(act_in[:hw])
        self._settle(acts)
        if acts.size:
            local_act = np.cumsum(act_in[:hw]) - 1
            res_ids = np.flatnonzero(res_in)
            local_res = np.cumsum(res_in) - 1
            capacity = self._capacity[res_ids]
            kept = live & ~trip_in & res_in[t_res]
            if kept.any():
                held = np.bincount(local_res[t_res[kept]], weights=t_coef[kept] * self._rate[t_act[kept]],
                                   minlength=res_ids.shape[0])
                capacity = np.maximum(capacity - held, 0.0)
            bottleneck = np.empty(acts.size, dtype=np.int64)
            rates = max_min_rates(local_act[t_act[trip_in]], local_res[t_res[trip_in]], t_coef[trip_in],
                                  self._weight[acts], self._cap[acts], self._prio[acts], capacity, bottleneck)
            self._set_rates(acts, rates, _global_ids(res_ids, bottleneck))
        return res_in

    def _positions_on(self, resources: np.ndarray) -> np.ndarray:
        """Positions of the live incidences on ``resources`` (unique, sorted ids), in position order.

        Reads the resource index for positions it covers and scans only the
        incidences appended since it was built, so the cost follows the
        activities on those resources, not every incidence of the run.
        """
        n = self._n_trip
        if n <= _SCAN_INCIDENCES:
            # few incidences: one scan is cheaper than keeping an index
            mark = np.zeros(self.resource_count, dtype=bool)
            mark[resources] = True
            return np.flatnonzero(mark[self._t_res[:n]] & self._t_live[:n])
        end = self._index_end
        if end < 0 or n - end > max(1024, end // 8) or self._index_ptr.shape[0] != self.resource_count + 1:
            self._build_index()
            end = n
        ptr = self._index_ptr
        lo = ptr[resources]
        counts = ptr[resources + 1] - lo
        total = int(counts.sum())
        pos = self._index_order[np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(total)]
        if end < n:
            mark = np.zeros(self.resource_count, dtype=bool)
            mark[resources] = True
            pos = np.concatenate((pos, end + np.flatnonzero(mark[self._t_res[end:n]])))
        pos = pos[self._t_live[pos]]
        pos.sort()
        return pos

    def _build_index(self) -> None:
        n = self._n_trip
        live = np.flatnonzero(self._t_live[:n])
        res = self._t_res[live]
        self._index_order = live[np.argsort(res, kind="stable")]
        self._index_ptr = np.zeros(self.resource_count + 1, dtype=np.int64)
        np.cumsum(np.bincount(res, minlength=self.resource_count), out=self._index_ptr[1:])
        self._index_end = n

    def _local_update(self, seeds: np.ndarray, theta: float) -> np.ndarray | None:
        """Solve a small set of activities again and grow it until the result is provably exact.

        Most changes move the rates of a handful of activities. Starting from the
        activities on the changed resources, the set is solved with everybody
        else held at their rates; then the max-min optimality condition is
        checked around it: every activity must be capped, or be among the
        highest-level activities of a saturated resource (its bottleneck). The
        weighted max-min allocation is the only one meeting that condition, so a
        pass means the rates are exact; a failure adds the activities involved
        and solves again. Activities below ``theta`` (the lowest level of an
        activity removed at this instant) cannot change: progressive filling is
        the same below that level, so they are left out of the starting set.
        Everything here reads the incidences of the set and of its resources
        only (through the resource index), never the whole fabric.

        Returns the resources whose load may have changed, or None when the set
        grew too often (the caller then solves the whole component).
        """
        level = self._level
        low = 1.0 - 1e-9
        res_ids = np.unique(seeds)
        start = self._positions_on(res_ids)
        first = self._t_act[start]
        if 0.0 < theta < math.inf:
            first = first[level[first] >= theta * low]
        fresh = self._fresh_caponly()
        if first.size == 0 and fresh.size == 0:
            return self._resource_mask(res_ids)  # only removals that left their resources idle
        acts = np.unique(np.concatenate((first, fresh)))
        # past this size a local solve costs more than solving what the change can reach at once
        limit = max(256, (self.stats.activities_started - self.stats.activities_completed) // 8)
        member = np.zeros(self._slots, dtype=bool)
        for done_rounds in range(1, _MAX_LOCAL_ROUNDS + 1):
            if acts.size > limit or (done_rounds > _CHEAP_LOCAL_ROUNDS and acts.size > _CHEAP_LOCAL_SET):
                return None
            counts = self._trip_count[acts]
            ipos = self._offsets(acts, counts)
            ipos.sort()  # position order, as a scan of the incidence arrays meets them
            res_ids = np.union1d(res_ids, self._t_res[ipos])
            if acts.size == 0:
                return self._resource_mask(res_ids)
            i_res = np.searchsorted(res_ids, self._t_res[ipos])
            i_act = np.searchsorted(acts, self._t_act[ipos])
            i_coef = self._t_coef[ipos]
            # everybody else on these resources keeps its rate and its share
            opos = self._positions_on(res_ids)
            member[acts] = True
            opos = opos[~member[self._t_act[opos]]]
            member[acts] = False
            o_res = np.searchsorted(res_ids, self._t_res[opos])
            o_act = self._t_act[opos]
            o_coef = self._t_coef[opos]
            held = np.bincount(o_res, weights=o_coef * self._rate[o_act], minlength=res_ids.shape[0])
            capacity = np.maximum(self._capacity[res_ids] - held, 0.0)
            bneck = np.empty(acts.size, dtype=np.int64)
            rates = max_min_rates(i_act, i_res, i_coef, self._weight[acts], self._cap[acts], self._prio[acts],
                                  capacity, bneck)
            if o_act.size == 0:
                # nobody outside the set shares its resources: it is whole components, solved exactly
                self._settle(acts)
                self._set_rates(acts, rates, _global_ids(res_ids, bneck))
                self.stats.local_rounds += done_rounds
                return self._resource_mask(res_ids)
            new_level = rates / self._weight[acts]
            # the highest level of the activities held at their rates, per resource
            other_max = np.full(res_ids.shape[0], -math.inf)
            np.maximum.at(other_max, o_res, level[o_act])
            # members: their bottleneck must not hold an outsider at a higher level
            bad_in = (bneck >= 0) & (new_level < other_max[np.maximum(bneck, 0)] * low)
            # outsiders whose bottleneck is here: it must still be saturated with them on top
            load = held + np.bincount(i_res, weights=i_coef * rates[i_act], minlength=res_ids.shape[0])
            top = other_max.copy()
            np.maximum.at(top, i_res, new_level[i_act])
            saturated = load >= self._capacity[res_ids] * low
            outsiders = np.unique(o_act)
            b = self._bottleneck[outsiders]
            lb = np.minimum(np.searchsorted(res_ids, b), res_ids.shape[0] - 1)
            here = (b >= 0) & (res_ids[lb] == b)
            bad_out = here & ~(saturated[lb] & (level[outsiders] >= top[lb] * low))
            if not bad_in.any() and not bad_out.any():
                self._settle(acts)
                self._set_rates(acts, rates, _global_ids(res_ids, bneck))
                self.stats.local_rounds += done_rounds
                return self._resource_mask(res_ids)
            grow = np.zeros(res_ids.shape[0], dtype=bool)
            grow[bneck[bad_in]] = True
            grow[lb[bad_out]] = True
            acts = np.union1d(acts, np.concatenate((o_act[grow[o_res]], outsiders[bad_out])))
        return None

    def _resource_mask(self, res_ids: np.ndarray) -> np.ndarray:
        mark = np.zeros(self.resource_count, dtype=bool)
        mark[res_ids] = True
        return mark

    def _fresh_caponly(self) -> np.ndarray:
        """Activities without resources that have not been given their rate yet."""
        if not self._caponly:
            return np.zeros(0, dtype=np.int64)
        slots = np.concatenate(self._caponly)
        slots = slots[self._alive[slots] & np.isinf(self._finish[slots])]
        self._caponly = [slots] if slots.size else []
        return slots

    def _verify_rates(self) -> None:
        """Check the incremental rates against a from-scratch solve (tests only; slow)."""
        n = self._n_trip
        live = self._t_live[:n]
        acts = np.flatnonzero(self._alive[: self._high_water])
        if acts.size == 0:
            return
        local = np.zeros(self._high_water, dtype=np.int64)
        local[acts] = np.arange(acts.size)
        t_act = self._t_act[:n][live]
        rates = max_min_rates(local[t_act], self._t_res[:n][live], self._t_coef[:n][live], self._weight[acts],
                              self._cap[acts], self._prio[acts], self._capacity)
        if not np.allclose(rates, self._rate[acts], rtol=1e-9, atol=1e-12 * max(1.0, float(rates.max()))):
            worst = int(np.argmax(np.abs(rates - self._rate[acts])))
            raise AssertionError(f"incremental rate {self._rate[acts][worst]!r} != full solve {rates[worst]!r} "
                                 f"for activity {int(acts[worst])} at t={self.env.now}")

    def _component(self, seeds: np.ndarray, t_act: np.ndarray, t_res: np.ndarray, eligible: np.ndarray):
        """Eligible activities, incidences and resources connected to the ``seeds`` resources."""
        res_in = np.zeros(self.resource_count, dtype=bool)
        res_in[seeds] = True
        act_in = np.zeros(self._slots, dtype=bool)
        # activities without any resource (cap only) join while they have no rate yet
        act_in[self._fresh_caponly()] = True
        idx = np.flatnonzero(eligible)
        e_act = t_act[idx]
        e_res = t_res[idx]
        n_res = int(np.count_nonzero(res_in))  # seeds may repeat
        while True:
            act_in[e_act[res_in[e_res]]] = True
            e_in = act_in[e_act]
            res_in[e_res[e_in]] = True
            grown = int(np.count_nonzero(res_in))
            if grown == n_res:
                trip_in = np.zeros(t_act.shape[0], dtype=bool)
                trip_in[idx[e_in]] = True
                return act_in, trip_in, res_in
            n_res = grown

    def _record_usage(self, res_ids: np.ndarray, load: np.ndarray, when: float | None = None) -> None:
        changed = np.abs(load - self._last_load[res_ids]) > 1e-12 * np.maximum(np.abs(load), 1.0)
        if not np.any(changed):
            return
        res_ids = res_ids[changed]
        load = load[changed]
        self._last_load[res_ids] = load
        self._usage_times.append(self.env.now if when is None else when)
        self._usage_res.append(res_ids)
        self._usage_load.append(load)

    def _schedule_completion(self) -> None:
        hw = self._high_water
        finish = np.where(self._alive[:hw], self._finish[:hw], math.inf) if hw else np.zeros(0)
        nxt = float(finish.min(initial=math.inf))
        pending = self._pending
        if pending is not None:
            if self._pending_time == nxt or self._pending_time < nxt < math.inf:
                # an early wake-up is harmless: it finds nothing due and sets the next one
                return
            self._stale.add(pending)
            self._pending = None
        if math.isinf(nxt):
            # nothing can complete: superseded wake-ups must not move the clock past the last real event
            self._drop_stale()
            return
        timeout = self.env.timeout(max(nxt - self.env.now, 0.0))
        timeout.callbacks.append(self._complete)
        self._pending = timeout
        self._pending_time = nxt

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

    def _complete(self, event: Event) -> None:
        if event is not self._pending:
            self._stale.discard(event)
            return
        self._pending = None
        now = self.env.now
        hw = self._high_water
        alive = self._alive[:hw]
        tolerance = max(abs(now) * _DONE_RTOL, 1e-300)
        done = np.flatnonzero(alive & (self._finish[:hw] <= now + tolerance))
        if done.size == 0:
            self._schedule_completion()
            return
        self.stats.completion_events += 1
        self._retire(done, completed=True)

    def _retire(self, ids: np.ndarray, *, completed: bool) -> None:
        """Remove activities; tell their batches; mark their resources for recomputation."""
        counts = self._trip_count[ids]
        offsets = self._offsets(ids, counts)
        if completed:
            if offsets.size:
                work = np.repeat(self._amount[ids], counts) * self._t_coef[offsets]
                self._carried += np.bincount(self._t_res[offsets], weights=work, minlength=self.resource_count)
            self.stats.activities_completed += ids.size
            self._remaining[ids] = 0.0
        # Levels below theta only stay valid when one priority class was filled: with several,
        # a low class sits below a high one's level and gains from its removal.
        self._theta = 0.0 if self._mixed_priorities() else min(self._theta, float(self._level[ids].min()))
        self._count_classes(self._prio[ids], -1)
        self._mark_dirty(self._kill_incidences(ids, offsets))
        self._alive[ids] = False
        self._rate[ids] = 0.0
        self._finish[ids] = math.inf
        batch_of = self._batch[ids]
        tags = self._tag[ids]
        self._free.append(ids.copy())
        self._n_free += ids.size
        now = self.env.now
        if batch_of[0] == batch_of[-1] and np.all(batch_of == batch_of[0]):
            parts: list[np.ndarray | None] = [None]  # one batch: no regrouping needed
        else:
            order = np.argsort(batch_of, kind="stable")
            parts = np.split(order, np.flatnonzero(np.diff(batch_of[order])) + 1)
        for part in parts:
            part_ids, part_tags = (ids, tags) if part is None else (ids[part], tags[part])
            batch_id = int(batch_of[0 if part is None else part[0]])
            batch = self._batches[batch_id]
            batch.pending -= part_ids.size
            if not completed:
                batch.aborted += part_ids.size
            elif batch.on_done is not None:
                batch.on_done(part_ids, part_tags)
            if batch.pending == 0:
                del self._batches[batch_id]
                batch.done.succeed(now)


def _grown(buffer: np.ndarray, size: int) -> np.ndarray:
    """``buffer`` copied into a zeroed array of ``size`` entries."""
    out = np.zeros(size, dtype=buffer.dtype)
    out[: buffer.shape[0]] = buffer
    return out


def _global_ids(res_ids: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Map local resource indices (-1: none) to resource ids; ``res_ids`` may be empty."""
    if res_ids.size == 0:
        return np.full(local.shape[0], -1, dtype=np.int64)
    return np.where(local >= 0, res_ids[np.maximum(local, 0)], -1)


def _as_csr(resources, n: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(resources, tuple) and len(resources) == 2 and isinstance(resources[0], np.ndarray):
        indptr = np.asarray(resources[0], dtype=np.int64)
        flat = np.asarray(resources[1], dtype=np.int64)
        if indptr.shape[0] != n + 1 or indptr[-1] != flat.shape[0]:
            raise ConfigError(field="resources", value=indptr.shape[0], rule="(CSR indptr) must have one entry per "
                              "activity plus one, ending at the number of incidences", fix=f"give {n + 1} entries")
        return indptr, flat
    if len(resources) != n:
        raise ConfigError(field="resources", value=len(resources), rule=f"does not give the {n} resource lists expected",
                          fix="give one resource list per activity")
    counts = np.fromiter((len(r) for r in resources), dtype=np.int64, count=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    flat = np.fromiter((r for rs in resources for r in rs), dtype=np.int64, count=int(indptr[-1]))
    return indptr, flat


def _flatten(coefs, nnz: int) -> np.ndarray:
    if isinstance(coefs, np.ndarray) and coefs.ndim == 1:
        flat = coefs.astype(float, copy=False)  # start() copies it into the incidence arrays
    else:
        flat = np.fromiter((c for cs in coefs for c in cs), dtype=float)
    if flat.shape[0] != nnz:
        raise ConfigError(field="coefs", value=flat.shape[0], rule=f"does not match the {nnz} resource incidences",
                          fix="give one coefficient per resource of each activity")
    return flat
