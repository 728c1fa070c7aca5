"""The compiled max-min solver against allocations computed by hand and against a plain-Python reference.

The reference (:func:`reference_rates`) is textbook progressive filling: raise
every unfrozen level together, freeze what the lowest resource or cap holds,
repeat. It freezes one level per round where the solver freezes every local
bottleneck at once, so the two agree only if the solver's shortcut is right.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.kernel.maxmin import max_min_rates

INF = math.inf


@pytest.fixture(params=["compiled", "reference"])
def solver(request):
    """Run each hand case on the compiled solver and on the plain-Python reference."""
    return functools.partial(solve, path=request.param)


def reference_rates(uses, capacity, weight, cap, priority):
    """Weighted max-min rates by textbook progressive filling, one global level per round, class by class."""
    n = len(uses)
    residual = {r: float(c) for r, c in enumerate(capacity) if c != INF}
    rates = [0.0] * n
    held_by = [-1] * n
    for level_class in sorted(set(priority), reverse=True):
        unfixed = set()
        for i in range(n):
            if priority[i] != level_class:
                continue
            if not any(r in residual for r, _ in uses[i]):
                rates[i] = cap[i]
            else:
                unfixed.add(i)
        while unfixed:
            demand: dict[int, float] = {}
            for i in unfixed:
                for r, c in uses[i]:
                    if r in residual:
                        demand[r] = demand.get(r, 0.0) + c * weight[i]
            lowest = min(min(residual[r] / d for r, d in demand.items()), min(cap[i] / weight[i] for i in unfixed))
            limit = lowest * (1.0 + 1e-12)
            fixed = {}
            for i in unfixed:
                tight = [r for r, _ in uses[i] if r in demand and residual[r] / demand[r] <= limit]
                if cap[i] / weight[i] <= limit or tight:
                    fixed[i] = -1 if cap[i] / weight[i] <= limit else max(tight)
            for i, held in fixed.items():
                rates[i] = lowest * weight[i]
                held_by[i] = held
                unfixed.discard(i)
                for r, c in uses[i]:
                    if r in residual:
                        residual[r] = max(residual[r] - c * rates[i], 0.0)
    return np.array(rates), np.array(held_by)


def solve(uses, capacity, *, weight=None, cap=None, priority=None, bottleneck=False, path="compiled"):
    """``uses[i]`` lists ``(resource, coefficient)`` of activity ``i``; ``path`` is "compiled" or "reference"."""
    n = len(uses)
    act = np.array([i for i, u in enumerate(uses) for _ in u], dtype=np.int64)
    res = np.array([r for u in uses for r, _ in u], dtype=np.int64)
    coef = np.array([c for u in uses for _, c in u], dtype=float)
    weight = np.ones(n) if weight is None else np.asarray(weight, dtype=float)
    cap = np.full(n, INF) if cap is None else np.asarray(cap, dtype=float)
    priority = np.zeros(n, dtype=np.int64) if priority is None else np.asarray(priority, dtype=np.int64)
    if path == "reference":
        rates, out = reference_rates(uses, capacity, weight.tolist(), cap.tolist(), priority.tolist())
    else:
        out = np.empty(n, dtype=np.int64)
        rates = max_min_rates(act, res, coef, weight, cap, priority, np.asarray(capacity, dtype=float), out)
    return (rates, out) if bottleneck else rates


def assert_rates(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=0)


def test_parking_lot_uneven_links(solver):
    # Flow 0 crosses links 0, 1, 2 (capacities 10, 6, 8); flows 1, 2, 3 use one link each.
    # Fair levels: link 0: 10/2 = 5, link 1: 6/2 = 3, link 2: 8/2 = 4 -> link 1 saturates first:
    # flows 0 and 2 get 3. Then link 0 has 10 - 3 = 7 left for flow 1, link 2 has 8 - 3 = 5 for flow 3.
    uses = [[(0, 1.0), (1, 1.0), (2, 1.0)], [(0, 1.0)], [(1, 1.0)], [(2, 1.0)]]
    rates, held_by = solver(uses, [10.0, 6.0, 8.0], bottleneck=True)
    assert_rates(rates, [3.0, 7.0, 3.0, 5.0])
    assert held_by.tolist() == [1, 0, 1, 2]


@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_parking_lot_equal_links(solver, n):
    # n links of capacity 12, the long flow on all of them, one short flow per link:
    # every link holds 2 flows, so everybody gets 12 / 2 = 6 (for n = 20 the numpy path runs either way).
    uses = [[(j, 1.0) for j in range(n)]] + [[(j, 1.0)] for j in range(n)]
    assert_rates(solver(uses, [12.0] * n), [6.0] * (n + 1))


def test_shared_bottleneck_rates_proportional_to_weights(solver):
    # One resource of 12 shared by weights 1, 2, 3: level 12 / (1 + 2 + 3) = 2 -> rates 2, 4, 6.
    rates = solver([[(0, 1.0)], [(0, 1.0)], [(0, 1.0)]], [12.0], weight=[1.0, 2.0, 3.0])
    assert_rates(rates, [2.0, 4.0, 6.0])


def test_weights_across_two_bottlenecks(solver):
    # Resource 0 (capacity 9) holds flow 0 (weight 2) and flow 1 (weight 1); resource 1 (capacity 4)
    # holds flow 1 and flow 2 (weight 3). Levels: r0 9 / 3 = 3, r1 4 / 4 = 1 -> r1 first:
    # flow 1 = 1 * 1 = 1, flow 2 = 3 * 1 = 3. Then r0 has 9 - 1 = 8 for flow 0 alone.
    rates = solver([[(0, 1.0)], [(0, 1.0), (1, 1.0)], [(1, 1.0)]], [9.0, 4.0], weight=[2.0, 1.0, 3.0])
    assert_rates(rates, [8.0, 1.0, 3.0])


def test_capped_flow_frees_capacity_for_the_others(solver):
    # Capacity 12, three flows; flow 0 may not exceed 1. Fair share would be 4, so the cap binds:
    # flow 0 = 1, and the other two split 12 - 1 = 11 -> 5.5 each.
    rates, held_by = solver([[(0, 1.0)], [(0, 1.0)], [(0, 1.0)]], [12.0], cap=[1.0, INF, INF], bottleneck=True)
    assert_rates(rates, [1.0, 5.5, 5.5])
    assert held_by.tolist() == [-1, 0, 0]


def test_cap_with_weights(solver):
    # Capacity 12, weights 1, 1, 2, flow 2 capped at 3. Level without caps 12 / 4 = 3 would give flow 2
    # a rate of 6; its cap level is 3 / 2 = 1.5 < 3, so it is fixed at 3 first; flows 0 and 1 share 9.
    rates = solver([[(0, 1.0)], [(0, 1.0)], [(0, 1.0)]], [12.0], weight=[1.0, 1.0, 2.0], cap=[INF, INF, 3.0])
    assert_rates(rates, [4.5, 4.5, 3.0])


def test_cap_above_fair_share_does_not_bind(solver):
    # Capacity 10, two flows, flow 0 capped at 7: the fair share 5 is below the cap -> 5 and 5.
    assert_rates(solver([[(0, 1.0)], [(0, 1.0)]], [10.0], cap=[7.0, INF]), [5.0, 5.0])


def test_coefficients(solver):
    # Flow 0 uses 2 units of resource 0 per unit of rate, flow 1 one unit: 2r + r = 12 -> r = 4 each.
    assert_rates(solver([[(0, 2.0)], [(0, 1.0)]], [12.0]), [4.0, 4.0])


def test_coefficients_on_two_resources(solver):
    # As above, but flow 1 also uses resource 1 (capacity 1.5) at 0.5 per unit: its level there is
    # 1.5 / 0.5 = 3 < 4, so flow 1 = 3; flow 0 then has (12 - 3) / 2 = 4.5.
    assert_rates(solver([[(0, 2.0)], [(0, 1.0), (1, 0.5)]], [12.0, 1.5]), [4.5, 3.0])


def test_strict_priority_high_class_first(solver):
    # Resource 0 (capacity 10) and resource 1 (capacity 4). Flow A (priority 1) crosses both;
    # flows B and C (priority 0) use resource 0 only. Class 1 alone: A is limited by resource 1 -> 4.
    # Class 0 then shares 10 - 4 = 6 -> B = C = 3. (Without priorities A, B, C would get 10/3 each.)
    uses = [[(0, 1.0), (1, 1.0)], [(0, 1.0)], [(0, 1.0)]]
    assert_rates(solver(uses, [10.0, 4.0], priority=[1, 0, 0]), [4.0, 3.0, 3.0])
    assert_rates(solver(uses, [10.0, 4.0]), [10 / 3, 10 / 3, 10 / 3])


def test_strict_priority_takes_everything_it_can(solver):
    # An uncapped high-priority flow takes the whole resource; the low one gets 0.
    assert_rates(solver([[(0, 1.0)], [(0, 1.0)]], [10.0], priority=[0, 5]), [0.0, 10.0])


def test_three_priority_classes(solver):
    # Capacity 10: class 2 capped at 2, class 1 capped at 5, class 0 takes the rest 10 - 2 - 5 = 3,
    # split by weight 1 : 2 -> 1 and 2.
    rates = solver([[(0, 1.0)]] * 4, [10.0], priority=[2, 1, 0, 0], cap=[2.0, 5.0, INF, INF],
                  weight=[1.0, 1.0, 1.0, 2.0])
    assert_rates(rates, [2.0, 5.0, 1.0, 2.0])


def test_zero_capacity_gives_rate_zero(solver):
    # Resource 0 has capacity 0 (a failed link): flows 0 and 2 on it get 0; flow 0 therefore takes
    # nothing from resource 1, which goes whole to flow 1.
    rates = solver([[(0, 1.0), (1, 1.0)], [(1, 1.0)], [(0, 1.0)]], [0.0, 10.0])
    assert_rates(rates, [0.0, 10.0, 0.0])


def test_unshared_resources(solver):
    # No resource is shared: each flow gets its own tightest limit (capacity / coefficient, or its cap).
    rates, held_by = solver([[(0, 2.0), (1, 1.0)], [(2, 1.0)], [(3, 1.0)]], [8.0, 3.0, 5.0, 9.0],
                           cap=[INF, INF, 2.0], bottleneck=True)
    assert_rates(rates, [3.0, 5.0, 2.0])  # flow 0: min(8 / 2, 3 / 1) = 3
    assert held_by.tolist() == [1, 2, -1]


def test_activity_without_resources_gets_its_cap(solver):
    assert_rates(solver([[], [(0, 1.0)]], [4.0], cap=[2.5, INF]), [2.5, 4.0])


# ---------------------------------------------------------------------------------------------------------
# Random problems: the compiled solver agrees with the reference, and both pass the max-min optimality test.


@st.composite
def problems(draw, max_activities=10, priorities=False):
    n_res = draw(st.integers(1, 6))
    capacity = draw(st.lists(st.sampled_from([0.0, 1.0, 2.5, 4.0, 10.0, 33.0]), min_size=n_res, max_size=n_res))
    n = draw(st.integers(1, max_activities))
    uses = []
    for _ in range(n):
        resources = draw(st.lists(st.integers(0, n_res - 1), min_size=0, max_size=n_res, unique=True))
        uses.append([(r, draw(st.sampled_from([0.25, 1.0, 1.0, 2.0, 3.0]))) for r in resources])
    weight = draw(st.lists(st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0]), min_size=n, max_size=n))
    cap = [draw(st.sampled_from([INF, INF, 0.5, 2.0, 7.0])) if u else draw(st.sampled_from([0.5, 3.0]))
           for u in uses]
    priority = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)) if priorities else [0] * n
    return uses, capacity, weight, cap, priority


def is_max_min_fair(uses, capacity, weight, cap, priority, rates, rtol=1e-9):
    """Check the optimality certificate of weighted max-min fairness, class by class.

    Feasible, and every activity is either at its cap or has a bottleneck: a resource that is
    saturated (after the classes above) on which no activity of its class has a higher level.
    """
    capacity = np.asarray(capacity, dtype=float)
    for level_class in sorted(set(priority), reverse=True):
        members = [i for i, p in enumerate(priority) if p == level_class]
        higher = [i for i, p in enumerate(priority) if p > level_class]
        # the capacity a class may use is what the classes above left over
        left = capacity.copy()
        for i in higher:
            for r, c in uses[i]:
                left[r] -= c * rates[i]
        load = np.zeros_like(left)
        for i in members:
            for r, c in uses[i]:
                load[r] += c * rates[i]
        tol = rtol * max(1.0, capacity.max())
        assert np.all(load <= left + tol), "infeasible"
        for i in members:
            level = rates[i] / weight[i]
            if rates[i] >= cap[i] * (1 - rtol):
                continue
            ok = False
            for r, _ in uses[i]:
                saturated = load[r] >= left[r] - tol
                top = max(rates[j] / weight[j] for j in members if any(rr == r for rr, _ in uses[j]))
                if saturated and level >= top * (1 - rtol) - tol:
                    ok = True
                    break
            assert ok, f"activity {i} (rate {rates[i]}) has no bottleneck"
    return True


@settings(max_examples=300)
@given(problems(max_activities=30, priorities=True))
def test_compiled_solver_agrees_with_the_reference(problem):
    uses, capacity, weight, cap, priority = problem
    expected, _ = reference_rates(uses, capacity, weight, cap, priority)
    rates = solve(uses, capacity, weight=weight, cap=cap, priority=priority)
    np.testing.assert_allclose(rates, expected, rtol=1e-9, atol=1e-12)
    assert is_max_min_fair(uses, capacity, weight, cap, priority, expected)


@settings(max_examples=200)
@given(problems(max_activities=30, priorities=True))
def test_solution_is_max_min_fair_with_priorities(problem):
    uses, capacity, weight, cap, priority = problem
    rates = solve(uses, capacity, weight=weight, cap=cap, priority=priority)
    assert np.all(rates >= 0)
    assert np.all(rates <= np.asarray(cap) * (1 + 1e-12))
    assert is_max_min_fair(uses, capacity, weight, cap, priority, rates)
