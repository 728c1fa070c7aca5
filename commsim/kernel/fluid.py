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

This module is the facade; the parts live beside it: the activity store
(:mod:`commsim.kernel.store`), the rate solvers (:mod:`commsim.kernel.solvers`,
over :mod:`commsim.kernel.maxmin`) and the hooks into SimPy's clock
(:mod:`commsim.kernel.clock`).

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

import math
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
from simpy.events import Event

from commsim.errors import ConfigError
from commsim.kernel.clock import CompletionClock, InstantEndEvent
from commsim.kernel.maxmin import UNBOUNDED
from commsim.kernel.solvers import RateSolver
from commsim.kernel.store import DONE_RTOL, ActivityStore

__all__ = ["ActivityBatch", "FluidKernel", "KernelStats"]

DoneCallback = Callable[[np.ndarray, np.ndarray], None]
"""Called as ``on_done(ids, tags)`` with the activities of a batch that just completed."""

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
        self._store = ActivityStore()
        self._solver = RateSolver(self._store, self.stats)
        self._clock = CompletionClock(env, self._complete)
        self._batches: dict[int, ActivityBatch] = {}
        self._next_batch_id = 0
        self._classes: dict[int, int] = {}  # running activities per priority class
        # pending changes of this instant
        self._dirty: list[np.ndarray] = []
        self._slow = False  # capacities changed or activities were rerouted: no disjoint fast path
        self._theta = math.inf  # lowest fair level the pending changes can affect
        self._flush_pending = False
        self._usage_times: list[float] = []
        self._usage_res: list[np.ndarray] = []
        self._usage_load: list[np.ndarray] = []

    # ------------------------------------------------------------------ resources
    @property
    def resource_count(self) -> int:
        """Number of resources defined so far."""
        return self._store.capacity.shape[0]

    @property
    def resource_names(self) -> list[str]:
        """Names of the resources, indexed by resource id."""
        return self._store.res_names

    def add_resources(self, capacities: Sequence[float] | np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Add resources with the given capacities (units of work per second); return their ids.

        A capacity of :data:`~commsim.kernel.maxmin.UNBOUNDED` never limits (the resource only
        counts the work it carries and its load).
        """
        caps = np.asarray(capacities, dtype=float).reshape(-1)
        if len(names) != caps.shape[0]:
            raise ConfigError(field="names", value=len(names), rule=f"does not match the {caps.shape[0]} capacities",
                              fix="give add_resources one name per capacity")
        if np.any(caps < 0) or np.any(np.isnan(caps)):
            bad = int(np.flatnonzero((caps < 0) | np.isnan(caps))[0])
            raise ConfigError(field=f"capacity of {names[bad]}", value=float(caps[bad]), rule="must be >= 0",
                              fix="give a non-negative capacity")
        return self._store.add_resources(caps, names)

    def capacity(self, resources: np.ndarray | int) -> np.ndarray:
        """Current capacity of the given resources."""
        return self._store.capacity[resources]

    def set_capacity(self, resources: np.ndarray | Sequence[int] | int, capacities: np.ndarray | float) -> None:
        """Change capacities now (faults, degradation); rates are recomputed at this instant.

        :data:`~commsim.kernel.maxmin.UNBOUNDED` lifts a resource's limit; an activity then left
        with no bounded resource and no cap completes at this instant.
        """
        ids = np.atleast_1d(np.asarray(resources, dtype=np.int64))
        caps = np.broadcast_to(np.asarray(capacities, dtype=float), ids.shape)
        if np.any(caps < 0) or np.any(np.isnan(caps)):
            raise ConfigError(field="capacity", value=float(caps.min()), rule="must be >= 0",
                              fix="give a non-negative capacity (0 models a failed resource)")
        self._store.capacity[ids] = caps
        self._theta = 0.0
        self._slow = True
        self._mark_dirty(ids)

    def carried(self) -> np.ndarray:
        """Work each resource carried for activities completed so far (e.g. bytes per link).

        A rerouted activity counts on its old resources for the work done before the reroute.
        """
        return self._store.carried.copy()

    # ------------------------------------------------------------------ activities
    def start(
        self,
        amounts: Sequence[float] | np.ndarray,
        resources: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
        coefs: Sequence[Sequence[float]] | np.ndarray | None = None,
        *,
        weight: float | np.ndarray = 1.0,
        priority: int | np.ndarray = 0,
        cap: float | np.ndarray = UNBOUNDED,
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
            Scalars or one value per activity (see :func:`max_min_rates`); the cap
            :data:`~commsim.kernel.maxmin.UNBOUNDED` (the default) is none. An activity
            whose resources are all unbounded and that has no cap completes as it starts.
        tags:
            An integer per activity handed back to ``on_done`` and ``describe``
            (defaults to the position in the batch).
        on_done:
            Called with ``(ids, tags)`` each time some activities of the batch complete.
        describe:
            Turns a tag into a human-readable description for stall reports.
        """
        store = self._store
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
        slots = store.alloc_slots(n)
        now = self.env.now
        store.amount[slots] = amount
        store.remaining[slots] = amount
        store.rate[slots] = 0.0
        store.level[slots] = math.inf
        store.t_ref[slots] = now
        store.finish[slots] = math.inf
        store.weight[slots] = weights
        store.cap[slots] = caps
        store.prio[slots] = prios
        store.tag[slots] = tag_arr
        store.batch[slots] = batch_id
        store.alive[slots] = True
        store.append_incidences(slots, indptr, flat_res, flat_coef)
        batch = ActivityBatch(ids=slots, done=Event(self.env), on_done=on_done, describe=describe, pending=n)
        self.stats.activities_started += n
        if n == 0:
            batch.done.succeed(now)
            return batch
        self._batches[batch_id] = batch
        self._count_classes(np.asarray(prios), +1)
        if empty.any():
            store.caponly.append(slots[empty])
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
        store = self._store
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return
        if not np.all(store.alive[ids]):
            raise ConfigError(field="ids", value=ids[~store.alive[ids]].tolist()[:5], rule="names activities that are "
                              "not running", fix="reroute only running activities")
        indptr, flat_res = _as_csr(resources, ids.shape[0])
        flat_coef = np.ones(flat_res.shape[0]) if coefs is None else _flatten(coefs, flat_res.shape[0])
        if flat_res.size and (flat_res.min() < 0 or flat_res.max() >= store.resource_count):
            raise ConfigError(field="resources", value=int(flat_res.max()), rule="names a resource id that does not "
                              "exist", fix=f"use ids 0..{store.resource_count - 1}")
        store.settle(ids, self.env.now)
        # the work done so far was carried by the resources left behind; the new ones carry the rest
        counts = store.trip_count[ids]
        offsets = store.offsets(ids, counts)
        done = np.repeat(store.amount[ids] - store.remaining[ids], counts) * store.t_coef[offsets]
        store.carried += np.bincount(store.t_res[offsets], weights=done, minlength=store.resource_count)
        store.amount[ids] = store.remaining[ids]
        self._theta = 0.0
        self._slow = True
        self._mark_dirty(store.kill_incidences(ids))
        store.append_incidences(ids, indptr, flat_res, flat_coef)
        self._mark_dirty(flat_res)

    def abort(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Stop running activities without completing them; return the work they had left.

        Their batches count them in ``aborted`` (``on_done`` is not called);
        the caller is responsible for reporting the loss.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = ids[self._store.alive[ids]]
        left = self.remaining(ids)
        self._store.settle(ids, self.env.now)
        self._retire(ids, completed=False)
        return left

    def rate(self, ids: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Current rates of running activities (work per second)."""
        return self._store.rate[np.asarray(ids, dtype=np.int64)]

    def remaining(self, ids: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Work left now for running activities."""
        store = self._store
        ids = np.asarray(ids, dtype=np.int64)
        left = store.remaining[ids] - store.rate[ids] * (self.env.now - store.t_ref[ids])
        return np.maximum(left, 0.0)

    def running(self) -> np.ndarray:
        """Ids of activities that have started and not yet completed."""
        return np.flatnonzero(self._store.alive[: self._store.high_water])

    def batch_of(self, activity: int) -> ActivityBatch:
        """The batch a running activity belongs to."""
        return self._batches[int(self._store.batch[activity])]

    def tag_of(self, activity: int) -> int:
        """The tag a running activity was started with."""
        return int(self._store.tag[activity])

    def resources_of(self, activity: int) -> np.ndarray:
        """Resource ids consumed by one running activity."""
        store = self._store
        start = store.trip_start[activity]
        return store.t_res[start : start + store.trip_count[activity]].copy()

    def activities_on(self, resources: np.ndarray | Sequence[int]) -> np.ndarray:
        """Running activities that consume any of ``resources``."""
        store = self._store
        mark = np.zeros(store.resource_count, dtype=bool)
        mark[np.asarray(resources, dtype=np.int64)] = True
        n = store.n_trip
        hit = store.t_live[:n] & mark[store.t_res[:n]]
        return np.unique(store.t_act[:n][hit])

    def describe(self, ids: np.ndarray | Sequence[int]) -> list[str]:
        """Human-readable descriptions of running activities (for stall reports)."""
        store = self._store
        out = []
        for slot in np.asarray(ids, dtype=np.int64):
            batch = self._batches.get(int(store.batch[slot]))
            tag = int(store.tag[slot])
            if batch is not None and batch.describe is not None:
                out.append(batch.describe(tag))
            else:
                names = [store.res_names[r] for r in self.resources_of(int(slot))]
                out.append(f"activity {int(slot)} on {', '.join(names) or 'no resource'}")
        return out

    def stalled(self) -> np.ndarray:
        """Running activities whose rate is zero and that have work left."""
        ids = self.running()
        return ids[(self._store.rate[ids] <= 0.0) & (self.remaining(ids) > 0.0)]

    # ------------------------------------------------------------------ activities that run alone
    @property
    def changes_pending(self) -> bool:
        """Whether changes made at this instant still wait for their rate recomputation."""
        return self._flush_pending

    def at_instant_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every event already scheduled for the current instant."""
        InstantEndEvent(self.env, lambda _event: callback())

    def solo_rates(self, indptr: np.ndarray, resources: np.ndarray, coefs: np.ndarray, *,
                   priority: int = 0) -> np.ndarray | None:
        """Rates (work per second) a batch started now would get, if it would run alone.

        "Alone" means: no change waits for a recomputation, every activity has a
        resource, and none of its resources is used by a running activity or by
        another activity of the batch (``indptr``/``resources`` in the CSR form of
        :meth:`start`, weight 1, no cap, priority ``priority``). Then each rate is
        its tightest ``capacity / coef``, computed exactly as :meth:`start` would
        compute it, and no rate elsewhere changes. Returns None otherwise, and when
        a rate would be 0 (the batch would stall) or unbounded (it would complete as it starts).
        """
        if self._flush_pending or resources.size == 0 or (self._classes and set(self._classes) != {priority}):
            return None
        counts = np.diff(indptr)
        if counts.min() == 0 or self._store.res_live[resources].any():
            return None
        if np.unique(resources).shape[0] != resources.shape[0]:
            return None
        rates = np.minimum.reduceat(self._store.capacity[resources] / coefs, indptr[:-1])
        return rates if rates.min() > 0.0 and rates.max() < UNBOUNDED else None

    def solo_completion(self, start: float, shortest: float, longest: float) -> float | None:
        """When activities started alone at ``start`` (seconds) complete, given their shortest and
        longest ``amount / rate``: the time of the kernel's completion event, exactly as a run of
        :meth:`start` would give it, or None when they would not all complete in that one event."""
        first = start + shortest  # as start() computes each finish time: now + left / rate
        event = start + max(first - start, 0.0)  # SimPy schedules the wake-up at now + delay
        last = start + longest
        return event if last <= event + max(abs(event) * DONE_RTOL, 1e-300) else None

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
        carried = self._store.carried[ids]
        for _ in range(repeats):  # added once per batch, as completions add it (identical rounding)
            np.add(carried, per_batch, out=carried)
        self._store.carried[ids] = carried
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
        if flat_res.size and (flat_res.min() < 0 or flat_res.max() >= self._store.resource_count):
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
            InstantEndEvent(self.env, self._flush)

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
        slow, self._slow = self._slow, False
        touched = self._solver.recompute(seeds, theta, now=self.env.now, slow=slow, mixed=self._mixed_priorities())
        store = self._store
        n = store.n_trip
        live, t_act, t_res, t_coef = store.t_live[:n], store.t_act[:n], store.t_res[:n], store.t_coef[:n]
        if self.record_usage:
            mark = touched[t_res] & live
            load = np.bincount(t_res[mark], weights=t_coef[mark] * store.rate[t_act[mark]],
                               minlength=store.resource_count)
            ids = np.flatnonzero(touched)
            self._record_usage(ids, load[ids])
        if self.verify:
            self._solver.verify()
        self.stats.solve_seconds += _time.perf_counter() - tic
        if store.n_dead_trip > max(1024, store.n_trip // 4):
            store.compact_incidences(extra=0)
        self._schedule_completion()

    def _record_usage(self, res_ids: np.ndarray, load: np.ndarray, when: float | None = None) -> None:
        changed = np.abs(load - self._store.last_load[res_ids]) > 1e-12 * np.maximum(np.abs(load), 1.0)
        if not np.any(changed):
            return
        res_ids = res_ids[changed]
        load = load[changed]
        self._store.last_load[res_ids] = load
        self._usage_times.append(self.env.now if when is None else when)
        self._usage_res.append(res_ids)
        self._usage_load.append(load)

    def _schedule_completion(self) -> None:
        # finish is +inf on every slot that is not running (the store keeps it so): no mask needed
        self._clock.wake_at(float(self._store.finish[: self._store.high_water].min(initial=math.inf)))

    def _complete(self, event: Event) -> None:
        store = self._store
        if not self._clock.is_current(event):
            return
        now = self.env.now
        tolerance = max(abs(now) * DONE_RTOL, 1e-300)
        done = np.flatnonzero(store.finish[: store.high_water] <= now + tolerance)  # +inf unless running
        if done.size == 0:
            self._schedule_completion()
            return
        self.stats.completion_events += 1
        self._retire(done, completed=True)

    def _retire(self, ids: np.ndarray, *, completed: bool) -> None:
        """Remove activities; tell their batches; mark their resources for recomputation."""
        store = self._store
        counts = store.trip_count[ids]
        offsets = store.offsets(ids, counts)
        if completed:
            if offsets.size:
                work = np.repeat(store.amount[ids], counts) * store.t_coef[offsets]
                store.carried += np.bincount(store.t_res[offsets], weights=work, minlength=store.resource_count)
            self.stats.activities_completed += ids.size
            store.remaining[ids] = 0.0
        # Levels below theta only stay valid when one priority class was filled: with several,
        # a low class sits below a high one's level and gains from its removal.
        self._theta = 0.0 if self._mixed_priorities() else min(self._theta, float(store.level[ids].min()))
        self._count_classes(store.prio[ids], -1)
        self._mark_dirty(store.kill_incidences(ids, offsets))
        store.alive[ids] = False
        store.rate[ids] = 0.0
        store.finish[ids] = math.inf
        batch_of = store.batch[ids]
        tags = store.tag[ids]
        store.release_slots(ids)
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
