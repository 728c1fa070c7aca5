"""Weighted max-min fair rates by progressive filling, vectorised with numpy.

The problem: activities ``i`` consume resources ``j`` at ``coef[i, j] * rate[i]``;
the consumption of each resource may not exceed its capacity; each rate may not
exceed its cap. The weighted max-min fair allocation raises every rate in
proportion to its weight until a resource (or a cap) saturates, freezes the
activities held back by it and continues with the rest (as SimGrid's linear
max-min model does). Strict priority classes are filled one after the other,
highest first, each on what the classes above left over.

Instead of freezing one bottleneck per round, every round freezes all *local*
bottlenecks at once: a resource whose fair level is not above the level any of
its activities could reach anywhere else. Levels only rise as activities are
frozen below them, so such a resource saturates at exactly its current level.
The global bottleneck is always one of them, so every round makes progress, and
the number of rounds is the depth of the bottleneck chain rather than the number
of distinct rates.

A resource of capacity :data:`UNBOUNDED` never binds: its incidences are left
out of the filling (no huge-number stand-in, no arithmetic on infinities). An
activity that nothing bounds (no bounded resource, cap :data:`UNBOUNDED`) gets
the rate :data:`UNBOUNDED`.

>>> import numpy as np
>>> # a "parking lot": flow 0 crosses links 0 and 1, flows 1 and 2 one link each
>>> act = np.array([0, 0, 1, 2]); res = np.array([0, 1, 0, 1])
>>> max_min_rates(act, res, np.ones(4), np.ones(3), np.full(3, np.inf),
...               np.zeros(3, int), np.array([10.0, 10.0]))
array([5., 5., 5.])
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TIE_TOLERANCE", "UNBOUNDED", "max_min_rates"]

UNBOUNDED: float = math.inf
"""The capacity of a resource that never limits, and the cap of an activity without one.

Say so with this constant rather than a large number: the solvers leave such
resources out and never compute with the value.
"""

TIE_TOLERANCE = 1e-12
"""Relative difference below which two fair levels count as equal."""

_SMALL = 12  # below this many activities plain Python beats numpy's per-call overhead


def max_min_rates(
    act: np.ndarray,
    res: np.ndarray,
    coef: np.ndarray,
    weight: np.ndarray,
    cap: np.ndarray,
    priority: np.ndarray,
    capacity: np.ndarray,
    bottleneck: np.ndarray | None = None,
) -> np.ndarray:
    """Return the weighted max-min fair rate of each activity.

    Parameters
    ----------
    act, res, coef:
        One entry per (activity, resource) incidence: the activity index
        (``0..n-1``), the resource index (``0..R-1``) and the amount of resource
        consumed per unit of rate (> 0). The incidences of one activity must be
        contiguous.
    weight:
        Per activity, > 0: rates at a shared bottleneck are proportional to it.
    cap:
        Per activity upper bound on the rate (:data:`UNBOUNDED` for none).
    priority:
        Per activity integer; higher classes are served first (strict priority).
    capacity:
        Per resource capacity (>= 0, or :data:`UNBOUNDED`), in resource units per second.
    bottleneck:
        Optional output array (one int per activity): the resource that held the
        activity back, or -1 when its cap did.

    Activities without incidences on bounded resources get their cap.
    """
    if capacity.size and capacity.max() == UNBOUNDED:  # capacities are >= 0: the max finds any
        bounded = capacity[res] != UNBOUNDED
        act, res, coef = act[bounded], res[bounded], coef[bounded]
    n = weight.shape[0]
    one_class = n == 0 or priority.min() == priority.max()
    if 0 < n <= _SMALL and act.shape[0] <= 8 * _SMALL and one_class:
        return _small(act, res, coef, weight, cap, capacity, bottleneck)
    rates = np.zeros(n)
    residual = capacity.astype(float, copy=True)
    has_incidence = np.zeros(n, dtype=bool)
    has_incidence[act] = True
    rates[~has_incidence] = cap[~has_incidence]
    if bottleneck is None:
        bottleneck = np.empty(n, dtype=np.int64)
    bottleneck[:] = -1
    if one_class:
        if res.size and np.bincount(res, minlength=residual.shape[0]).max() == 1:
            _unshared(act, res, coef, weight, cap, residual, rates, bottleneck)
        else:
            _fill(act, res, coef, weight, cap, residual, rates, bottleneck)
        return rates
    for level in np.unique(priority)[::-1]:
        keep = (priority == level)[act]
        _fill(act[keep], res[keep], coef[keep], weight, cap, residual, rates, bottleneck)
    return rates


def _unshared(
    t_act: np.ndarray,
    t_res: np.ndarray,
    t_coef: np.ndarray,
    weight: np.ndarray,
    cap: np.ndarray,
    residual: np.ndarray,
    rates: np.ndarray,
    bottleneck: np.ndarray,
) -> None:
    """No resource is shared (an uncongested collective step): each rate is its own tightest limit."""
    starts = np.flatnonzero(np.concatenate(([True], t_act[1:] != t_act[:-1])))
    a_ids = t_act[starts]
    limit = residual[t_res] / t_coef
    a_min = np.minimum.reduceat(limit, starts)
    by_cap = cap[a_ids] <= a_min * (1.0 + TIE_TOLERANCE)
    rates[a_ids] = np.where(by_cap, cap[a_ids], a_min)
    counts = np.diff(np.append(starts, t_act.size))
    tight = limit <= np.repeat(a_min, counts) * (1.0 + TIE_TOLERANCE)
    a_res = np.maximum.reduceat(np.where(tight, t_res, -1), starts)
    bottleneck[a_ids] = np.where(by_cap, -1, a_res)
    residual[t_res] -= t_coef * np.repeat(rates[a_ids], counts)
    np.maximum(residual, 0.0, out=residual)


def _fill(
    t_act: np.ndarray,
    t_res: np.ndarray,
    t_coef: np.ndarray,
    weight: np.ndarray,
    cap: np.ndarray,
    residual: np.ndarray,
    rates: np.ndarray,
    bottleneck: np.ndarray,
) -> None:
    """Progressive filling of one priority class; updates ``rates``, ``residual`` and ``bottleneck``."""
    n_res = residual.shape[0]
    t_cw = t_coef * weight[t_act]
    low = 1.0 - TIE_TOLERANCE
    high = 1.0 + TIE_TOLERANCE
    if not t_act.size:
        return
    # per activity (in incidence order): its id, incidence count and cap level; filtered as they freeze
    starts = np.flatnonzero(np.concatenate(([True], t_act[1:] != t_act[:-1])))
    counts = np.diff(np.append(starts, t_act.size))
    a_ids = t_act[starts]
    a_cap = cap[a_ids] / weight[a_ids]
    while t_res.size:
        demand = np.bincount(t_res, weights=t_cw, minlength=n_res)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_level = (residual / demand)[t_res]  # divided per resource: the same quotients, fewer of them
        a_min = np.minimum.reduceat(t_level, starts)
        a_level = np.minimum(a_min, a_cap)
        # A resource is a local bottleneck when none of its activities can settle lower elsewhere.
        t_a_level = np.repeat(a_level, counts)
        blocked = np.bincount(t_res[t_a_level < t_level * low], minlength=n_res)
        on_bottleneck = blocked[t_res] == 0
        a_res = np.maximum.reduceat(np.where(on_bottleneck, t_res, -1), starts)
        by_cap = a_cap <= a_min * high
        a_fix = (a_res >= 0) | by_cap
        fixed = a_ids[a_fix]
        rates[fixed] = a_level[a_fix] * weight[fixed]
        bottleneck[fixed] = np.where(by_cap[a_fix], -1, a_res[a_fix])
        t_fix = np.repeat(a_fix, counts)
        used = np.bincount(t_res[t_fix], weights=t_cw[t_fix] * t_a_level[t_fix], minlength=n_res)
        np.subtract(residual, used, out=residual)
        np.maximum(residual, 0.0, out=residual)
        keep = ~t_fix
        t_res, t_cw = t_res[keep], t_cw[keep]
        a_open = ~a_fix
        a_ids, a_cap, counts = a_ids[a_open], a_cap[a_open], counts[a_open]
        starts = np.cumsum(counts) - counts


def _small(
    act: np.ndarray,
    res: np.ndarray,
    coef: np.ndarray,
    weight: np.ndarray,
    cap: np.ndarray,
    capacity: np.ndarray,
    bottleneck: np.ndarray | None,
) -> np.ndarray:
    """The same filling for a handful of activities (one priority class), in plain Python."""
    n = weight.shape[0]
    w = weight.tolist()
    caps = cap.tolist()
    residual = dict(enumerate(capacity.tolist()))
    uses: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for a, r, c in zip(act.tolist(), res.tolist(), coef.tolist(), strict=True):
        uses[a].append((r, c))
    rates = [0.0] * n
    held_by = [-1] * n
    unfixed = set(range(n))
    for i in range(n):
        if not uses[i]:
            rates[i] = caps[i]
            unfixed.discard(i)
    high = 1.0 + TIE_TOLERANCE
    while unfixed:
        demand: dict[int, float] = {}
        for i in unfixed:
            for r, c in uses[i]:
                demand[r] = demand.get(r, 0.0) + c * w[i]
        level = {r: residual[r] / d for r, d in demand.items()}
        lowest = min(level.values())
        lowest = min(lowest, min(caps[i] / w[i] for i in unfixed))
        limit = lowest * high
        fixed = []
        for i in unfixed:
            if caps[i] / w[i] <= limit:
                fixed.append((i, -1))
                continue
            for r, _ in uses[i]:
                if level[r] <= limit:
                    fixed.append((i, r))
                    break
        for i, r in fixed:
            rates[i] = lowest * w[i]
            held_by[i] = r
            unfixed.discard(i)
            for rr, c in uses[i]:
                residual[rr] = max(residual[rr] - c * rates[i], 0.0)
    if bottleneck is not None:
        bottleneck[:] = held_by
    return np.array(rates)
