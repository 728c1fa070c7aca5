"""Weighted max-min fair rates by progressive filling (compiled loops in :mod:`commsim.kernel.compiled`).

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
    from commsim.kernel.compiled import fill  # numba: loaded on the first solve, not by `import commsim`

    act, res, priority = (np.ascontiguousarray(a, dtype=np.int64) for a in (act, res, priority))
    coef, weight, cap = (np.ascontiguousarray(a, dtype=float) for a in (coef, weight, cap))
    n = weight.shape[0]
    rates = cap.astype(float, copy=True)  # what an activity without incidences on bounded resources gets
    residual = capacity.astype(float, copy=True)
    if bottleneck is None:
        bottleneck = np.empty(n, dtype=np.int64)
    bottleneck[:] = -1
    if n == 0 or priority.min() == priority.max():
        fill(act, res, coef, weight, cap, residual, rates, bottleneck)
        return rates
    for level in np.unique(priority)[::-1]:
        keep = (priority == level)[act]
        fill(act[keep], res[keep], coef[keep], weight, cap, residual, rates, bottleneck)
    return rates
