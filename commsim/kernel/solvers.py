"""Rate solvers of the fluid kernel: which activities to solve again after a change, and how.

A recomputation picks the cheapest exact method that applies, in this order:

- *disjoint*: new activities whose resources nobody else uses, and removals that
  left their resources idle, change no other rate;
- *local update*: solve a small set around the change with everybody else held
  at their rates, and grow it until the max-min optimality condition holds;
- *component*: solve what the change can reach (after removals alone, every
  activity at or above the lowest removed level; otherwise the connected
  component) by progressive filling (:func:`commsim.kernel.maxmin.max_min_rates`).

Local updates that keep failing (a densely coupled fabric) back off: after k
failures in a row the next 2^k - 1 removal-only recomputations go straight to
the component solve.
"""

from __future__ import annotations

import math

import numpy as np

from commsim.kernel.maxmin import UNBOUNDED, max_min_rates
from commsim.kernel.store import ActivityStore

__all__ = ["RateSolver"]

_MAX_LOCAL_ROUNDS = 8  # growth rounds of a local update before solving the whole component
# past these rounds only a small set keeps growing: on a densely coupled fabric a set that is still
# wrong after two rounds usually spreads over the component, and failing late costs more than the solve
_CHEAP_LOCAL_ROUNDS = 2
_CHEAP_LOCAL_SET = 64
# after k local updates failed in a row, the next 2^k - 1 removal-only flushes solve at once (k <= this)
_MAX_SKIP_DOUBLINGS = 5
_LOCAL_SET_SHARE = 8  # a local set may grow to 1/8 of the running activities (at least 256)


class RateSolver:
    """Recomputes the rates of a store's activities after changes (see the module docstring).

    ``stats`` is the kernel's :class:`~commsim.kernel.fluid.KernelStats`, updated in place.
    """

    def __init__(self, store: ActivityStore, stats) -> None:
        self.store = store
        self.stats = stats
        self.now = 0.0  # the instant of the recomputation under way (seconds)
        self._local_misses = 0  # local updates that failed in a row
        self._local_skips = 0  # removal-only flushes left that skip the local update
        # scratch marks of the compiled local update (-1 everywhere between calls), sized on first use
        self._res_mark = np.zeros(0, dtype=np.int64)
        self._act_mark = np.zeros(0, dtype=np.int64)
        self._res_ids = np.zeros(0, dtype=np.int64)  # scratch space of the local update
        self._acts = np.zeros(0, dtype=np.int64)
        self._positions = np.zeros(0, dtype=np.int64)

    def recompute(self, seeds: np.ndarray, theta: float, *, now: float, slow: bool, mixed: bool) -> np.ndarray:
        """Give new rates to what the changes at ``now`` can affect; return the touched resources (a mask).

        ``seeds`` are the resources that changed; ``theta`` the lowest level of an
        activity removed at this instant (inf: none; 0: anything may change);
        ``slow`` rules out the disjoint fast path (capacities changed, reroutes);
        ``mixed`` says several priority classes are running.
        """
        s = self.store
        self.now = now
        touched = None
        if not mixed:
            touched = self._disjoint_update(slow or s.moved)
            if touched is None and self._local_skips and not s.new_ranges and 0.0 < theta < math.inf:
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
        only_removals = not s.new_ranges
        s.take_changes()
        if touched is None:
            touched = self._component_update(seeds, theta if only_removals else 0.0, mixed)
        return touched

    def _set_rates(self, acts: np.ndarray, rates: np.ndarray, bottleneck: np.ndarray) -> None:
        self.store.set_rates(acts, rates, bottleneck, self.now)
        self._count_solved(acts.size)

    def _count_solved(self, solved: int) -> None:
        self.stats.solved_activities += solved
        self.stats.largest_component = max(self.stats.largest_component, solved)

    def _disjoint_update(self, slow: bool) -> np.ndarray | None:
        """The common case of a collective step, solved without looking at anything else.

        When the only changes are new activities whose resources nobody else uses
        (each resource used by one of them) and removals that left their resources
        idle, no other rate can change and each new activity simply runs at its
        tightest limit. Returns the touched resources, or None when the case does
        not apply.
        """
        s = self.store
        if slow or not (s.new_ranges or s.freed):
            return None
        touched = np.zeros(s.resource_count, dtype=bool)
        if s.freed:
            freed = np.concatenate(s.freed) if len(s.freed) > 1 else s.freed[0]
            if freed.size and s.res_live[freed].any():
                return None
            touched[freed] = True
        if not s.new_ranges:
            return touched
        slots = [r[0] for r in s.new_ranges]
        acts = np.concatenate(slots) if len(slots) > 1 else slots[0]
        pieces = [slice(a, b) for _, a, b in s.new_ranges]
        if not all(s.t_live[p].all() for p in pieces):
            return None  # some were stopped before their first solve
        res = s.t_res[pieces[0]] if len(pieces) == 1 else np.concatenate([s.t_res[p] for p in pieces])
        if res.size == 0 or np.any(s.res_live[res] != 1):
            return None  # shared by two of them, or with someone else
        counts = s.trip_count[acts]
        if np.any(counts == 0):
            return None  # activities with only a cap go the usual way
        coef = s.t_coef[pieces[0]] if len(pieces) == 1 else np.concatenate([s.t_coef[p] for p in pieces])
        # progressive filling with nothing shared, in global numbering: building the local index arrays
        # max_min_rates needs cost about 20% of a 4,096-GPU ring all-reduce (measured)
        starts = np.cumsum(counts) - counts
        limit = s.capacity[res] / coef
        tightest = np.minimum.reduceat(limit, starts)
        caps = s.cap[acts]
        rates = np.minimum(tightest, caps)
        at_limit = limit <= np.repeat(tightest, counts) * (1.0 + 1e-12)
        held = np.maximum.reduceat(np.where(at_limit, res, -1), starts)
        s.settle(acts, self.now)
        self._set_rates(acts, rates, np.where(caps <= tightest, -1, held))
        touched[res] = True
        return touched

    def _component_update(self, seeds: np.ndarray, theta: float, mixed: bool) -> np.ndarray:
        """Solve again what the changes can reach; return the resources touched.

        With a finite ``theta`` (only removals at this instant, one priority class)
        every activity below it keeps its rate, and solving all the others again,
        on what the kept ones leave, is exact and cheaper than a whole component
        of a densely coupled fabric. Otherwise the connected component is solved.
        """
        from commsim.kernel.compiled import apply_rates, component_problem  # numba: loaded on first use

        s = self.store
        order, ptr, end = s.resource_index()
        acts, res_ids, i_act, i_res, i_coef, capacity = component_problem(
            np.ascontiguousarray(seeds, dtype=np.int64), 0.0 if mixed else float(theta), s.fresh_caponly(),
            s.t_act, s.t_res, s.t_coef, s.t_live, s.n_trip, s.trip_start, s.trip_count, s.level, s.rate, s.capacity,
            s.high_water, order, ptr, end)
        if acts.size:
            bottleneck = np.empty(acts.size, dtype=np.int64)
            rates = max_min_rates(i_act, i_res, i_coef, s.weight[acts], s.cap[acts], s.prio[acts], capacity,
                                  bottleneck)
            apply_rates(acts, rates, _global_ids(res_ids, bottleneck), float(self.now), s.amount, s.remaining, s.t_ref,
                        s.rate, s.level, s.weight, s.bottleneck, s.finish)
            self._count_solved(acts.size)
        return s.resource_mask(res_ids)

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
        from commsim.kernel.compiled import local_update  # numba: loaded on first use

        s = self.store
        n = s.n_trip
        if self._res_mark.shape[0] != s.resource_count:
            self._res_mark = np.full(s.resource_count, -1, dtype=np.int64)
            self._res_ids = np.empty(s.resource_count, dtype=np.int64)
        if self._act_mark.shape[0] != s.slots:
            self._act_mark = np.full(s.slots, -1, dtype=np.int64)
            self._acts = np.empty(s.slots, dtype=np.int64)
        if self._positions.shape[0] < n:
            self._positions = np.empty(s.t_act.shape[0], dtype=np.int64)
        order, ptr, end = s.resource_index()
        # past this size a local solve costs more than solving what the change can reach at once
        limit = max(256, (self.stats.activities_started - self.stats.activities_completed) // _LOCAL_SET_SHARE)
        # one type signature for every call (SimPy's clock starts at int 0, seeds may be views): one compilation
        rounds, solved, res_ids = local_update(
            np.ascontiguousarray(seeds, dtype=np.int64), float(theta), s.fresh_caponly(), float(self.now), s.t_act,
            s.t_res, s.t_coef, s.t_live, n, s.trip_start, s.trip_count, s.amount, s.remaining, s.t_ref, s.rate,
            s.level, s.weight, s.cap, s.bottleneck, s.finish, s.capacity, order, ptr, end, self._res_mark,
            self._act_mark, self._res_ids, self._acts, self._positions, limit, _CHEAP_LOCAL_ROUNDS, _CHEAP_LOCAL_SET,
            _MAX_LOCAL_ROUNDS)
        if rounds == 0:
            return None
        if solved:
            self._count_solved(solved)
            self.stats.local_rounds += rounds
        return s.resource_mask(res_ids)

    def verify(self) -> None:
        """Check the incremental rates against a from-scratch solve (tests only; slow)."""
        s = self.store
        n = s.n_trip
        live = s.t_live[:n]
        acts = np.flatnonzero(s.alive[: s.high_water])
        if acts.size == 0:
            return
        local = np.zeros(s.high_water, dtype=np.int64)
        local[acts] = np.arange(acts.size)
        t_act = s.t_act[:n][live]
        rates = max_min_rates(local[t_act], s.t_res[:n][live], s.t_coef[:n][live], s.weight[acts],
                              s.cap[acts], s.prio[acts], s.capacity)
        rates[rates == UNBOUNDED] = 0.0  # what set_rates keeps for an activity that completes at once
        if not np.allclose(rates, s.rate[acts], rtol=1e-9, atol=1e-12 * max(1.0, float(rates.max()))):
            worst = int(np.argmax(np.abs(rates - s.rate[acts])))
            raise AssertionError(f"incremental rate {s.rate[acts][worst]!r} != full solve {rates[worst]!r} "
                                 f"for activity {int(acts[worst])} at t={self.now}")


def _global_ids(res_ids: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Map local resource indices (-1: none) to resource ids; ``res_ids`` may be empty."""
    if res_ids.size == 0:
        return np.full(local.shape[0], -1, dtype=np.int64)
    return np.where(local >= 0, res_ids[np.maximum(local, 0)], -1)
