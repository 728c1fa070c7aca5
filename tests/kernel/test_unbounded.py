"""An explicitly unbounded capacity (``UNBOUNDED``): it never limits, and the solvers never compute with it."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.kernel import UNBOUNDED, FluidKernel, max_min_rates


def kernel_with(capacities):
    env = simpy.Environment()
    kernel = FluidKernel(env, verify=True)
    ids = kernel.add_resources(capacities, [f"r{i}" for i in range(len(capacities))])
    return env, kernel, [int(i) for i in ids]


def test_unbounded_resource_never_binds_but_counts_its_work():
    # Two flows share a 10/s link; both also cross an unbounded resource: 5/s each, as without it.
    env, kernel, (link, free) = kernel_with([10.0, UNBOUNDED])
    a = kernel.start([20.0, 40.0], [[link, free], [link, free]])
    env.run()
    assert a.done.value == pytest.approx(6.0)
    assert kernel.carried()[free] == pytest.approx(60.0)


def test_activity_on_unbounded_resources_only_completes_as_it_starts():
    env, kernel, (free,) = kernel_with([UNBOUNDED])

    def later():
        yield env.timeout(2.5)
        batch = kernel.start([7.0, 3.0], [[free], [free]])
        yield batch.done
        assert env.now == 2.5 and kernel.rate(batch.ids).tolist() == [0.0, 0.0]

    proc = env.process(later())
    env.run()
    assert proc.ok and kernel.carried()[free] == pytest.approx(10.0)
    assert kernel.stats.activities_completed == 2


def test_capacity_set_to_unbounded_lifts_the_limit_and_back():
    # 10 units on a 1/s resource; at t=2 it becomes unbounded while the flow also crosses a 4/s one:
    # 2 units done, the remaining 8 take 2 s at 4/s.
    env, kernel, (slow, fast) = kernel_with([1.0, 4.0])
    batch = kernel.start([10.0], [[slow, fast]])

    def lift():
        yield env.timeout(2.0)
        kernel.set_capacity(slow, UNBOUNDED)

    env.process(lift())
    env.run()
    assert batch.done.value == pytest.approx(4.0)


def test_capacity_lifted_from_the_only_resource_completes_the_activity_at_once():
    env, kernel, (slow,) = kernel_with([1.0])
    batch = kernel.start([10.0], [[slow]])

    def lift():
        yield env.timeout(3.0)
        kernel.set_capacity([slow], [UNBOUNDED])

    env.process(lift())
    env.run()
    assert batch.done.value == pytest.approx(3.0)
    assert kernel.carried()[slow] == pytest.approx(10.0)


def test_unbounded_only_batch_does_not_run_alone():
    _env, kernel, (free, link) = kernel_with([UNBOUNDED, 5.0])
    indptr = np.array([0, 1])
    assert kernel.solo_rates(indptr, np.array([free]), np.ones(1)) is None
    assert kernel.solo_rates(indptr, np.array([link]), np.ones(1)).tolist() == [5.0]


@st.composite
def problems(draw):
    n_res = draw(st.integers(1, 6))
    n = draw(st.integers(1, 30))
    uses = [sorted(draw(st.sets(st.integers(0, n_res - 1), min_size=1, max_size=n_res))) for _ in range(n)]
    capacity = draw(st.lists(st.floats(0.5, 20.0), min_size=n_res, max_size=n_res))
    weight = draw(st.lists(st.floats(0.5, 3.0), min_size=n, max_size=n))
    prio = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    extra = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return uses, capacity, weight, prio, extra


@settings(max_examples=150, deadline=None)
@given(problems())
def test_incidences_on_unbounded_resources_change_no_rate(problem):
    # The same problem with an extra unbounded resource on some activities: identical rates and bottlenecks.
    uses, capacity, weight, prio, extra = problem
    n_res = len(capacity)

    def solve(with_free):
        act, res = [], []
        for i, u in enumerate(uses):
            rs = [*u, n_res] if with_free and extra[i] else u
            act += [i] * len(rs)
            res += rs
        held = np.empty(len(uses), dtype=np.int64)
        rates = max_min_rates(np.array(act), np.array(res), np.ones(len(res)), np.array(weight),
                              np.full(len(uses), UNBOUNDED), np.array(prio), np.array([*capacity, UNBOUNDED]), held)
        return rates, held

    plain, with_free = solve(False), solve(True)
    np.testing.assert_array_equal(plain[0], with_free[0])
    np.testing.assert_array_equal(plain[1], with_free[1])
    assert np.all(np.isfinite(plain[0]))


@pytest.mark.parametrize("seed", range(4))
def test_random_workload_with_unbounded_resources_matches_full_solves(seed):
    # verify=True checks every recomputation against a from-scratch solve while capacities toggle
    # between bounded and unbounded, and some activities have only unbounded resources.
    rng = np.random.default_rng(seed)
    caps = np.where(rng.random(12) < 0.25, UNBOUNDED, rng.uniform(1.0, 5.0, 12))
    env, kernel, _ids = kernel_with(caps)
    amounts = rng.lognormal(0.0, 1.0, 300)
    resources = [sorted(rng.choice(12, size=int(rng.integers(1, 4)), replace=False).tolist()) for _ in range(300)]

    def script():
        for k in range(10):
            kernel.start(amounts[30 * k:30 * (k + 1)], resources[30 * k:30 * (k + 1)])
            yield env.timeout(float(rng.exponential(0.5)))
            r = int(rng.integers(12))
            kernel.set_capacity(r, UNBOUNDED if rng.random() < 0.5 else float(rng.uniform(1.0, 5.0)))

    env.process(script())
    env.run()
    assert kernel.stats.activities_completed == 300
    expected = np.bincount(np.concatenate(resources), weights=np.repeat(amounts, [len(r) for r in resources]),
                           minlength=12)
    np.testing.assert_allclose(kernel.carried(), expected, rtol=1e-9)
