"""FluidKernel: hand-computed timelines, regressions, and random workloads checked against a full solve."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.errors import ConfigError
from commsim.kernel import FluidKernel


def make(capacities, verify=True):
    env = simpy.Environment()
    kernel = FluidKernel(env, verify=verify)
    ids = kernel.add_resources(capacities, [f"r{i}" for i in range(len(capacities))])
    return env, kernel, ids


def finish_times(env, batches):
    """Record when each batch's ``done`` event fires."""
    ends = {}
    for name, batch in batches.items():
        batch.done.callbacks.append(lambda ev, name=name: ends.__setitem__(name, env.now))
    return ends


def test_two_activities_share_then_one_runs_alone():
    # 20 and 40 units on a resource of 10/s: both at 5/s until the first ends at 20/5 = 4 s;
    # the second has 40 - 20 = 20 left at 10/s -> 2 s more -> 6 s.
    env, kernel, (r,) = make([10.0])
    a = kernel.start([20.0], [[r]])
    b = kernel.start([40.0], [[r]])
    ends = finish_times(env, {"a": a, "b": b})
    env.run()
    assert ends == {"a": pytest.approx(4.0, rel=1e-12), "b": pytest.approx(6.0, rel=1e-12)}
    assert kernel.carried()[r] == pytest.approx(60.0, rel=1e-12)


def test_late_start_and_capacity_change():
    # t=0: A (30 units) alone on 10/s. t=1: B (10 units) joins -> 5/s each (A has 20 left).
    # t=2: capacity drops to 4/s -> 2/s each (A 15 left, B 5 left). B ends at 2 + 5/2 = 4.5;
    # A has 15 - 5 = 10 left at 4/s -> ends at 4.5 + 2.5 = 7.
    env, kernel, (r,) = make([10.0])
    ends = {}

    def a():
        batch = kernel.start([30.0], [[r]])
        yield batch.done
        ends["a"] = env.now

    def b():
        yield env.timeout(1.0)
        batch = kernel.start([10.0], [[r]])
        yield batch.done
        ends["b"] = env.now

    def drop():
        yield env.timeout(2.0)
        kernel.set_capacity(r, 4.0)

    for proc in (a(), b(), drop()):
        env.process(proc)
    env.run()
    assert ends["b"] == pytest.approx(4.5, rel=1e-12)
    assert ends["a"] == pytest.approx(7.0, rel=1e-12)


def test_batch_callbacks_and_tags():
    # Three activities in one batch on one resource of 6/s with amounts 6, 12, 18: all at 2/s; the first
    # ends at 3 s; then 3/s each: the second (12 - 6 = 6 left) at 5 s; the last (18 - 6 - 6 = 6) at 6 s.
    env, kernel, (r,) = make([6.0])
    seen = []
    batch = kernel.start([6.0, 12.0, 18.0], [[r], [r], [r]], tags=np.array([10, 11, 12]),
                         on_done=lambda ids, tags: seen.append((env.now, sorted(tags.tolist()))))
    env.run()
    assert [t for t, _ in seen] == pytest.approx([3.0, 5.0, 6.0], rel=1e-12)
    assert [tags for _, tags in seen] == [[10], [11], [12]]
    assert batch.done.value == pytest.approx(6.0)


def test_abort_returns_the_work_left_and_is_not_carried():
    env, kernel, (r,) = make([10.0])
    batch = kernel.start([100.0], [[r]])
    left = {}

    def stop():
        yield env.timeout(2.0)
        left["work"] = float(kernel.abort(batch.ids)[0])

    env.process(stop())
    env.run()
    assert left["work"] == pytest.approx(80.0)
    assert batch.aborted == 1 and batch.done.triggered
    assert kernel.carried()[r] == 0.0
    assert kernel.running().size == 0


def test_reroute_keeps_the_remaining_work():
    # 100 units on r0 (10/s); at t=2 (80 left) moved to r1 (40/s): ends at 2 + 80/40 = 4 s.
    env, kernel, (r0, r1) = make([10.0, 40.0])
    batch = kernel.start([100.0], [[r0]])

    def move():
        yield env.timeout(2.0)
        kernel.reroute(batch.ids, [[r1]])

    env.process(move())
    env.run()
    assert batch.done.value == pytest.approx(4.0, rel=1e-12)
    # each resource is credited with what it carried: 20 units on r0 before the move, 80 on r1 after
    # (regression: all 100 were credited to r1 and none to r0)
    np.testing.assert_allclose(kernel.carried(), [20.0, 80.0], rtol=1e-12)


def test_stalled_activity_is_reported():
    env, kernel, (r,) = make([0.0])
    kernel.start([5.0], [[r]], describe=lambda tag: f"job {tag}")
    env.run()
    stalled = kernel.stalled()
    assert stalled.size == 1
    assert kernel.describe(stalled) == ["job 0"]


def test_zero_amount_completes_at_once():
    env, kernel, (r,) = make([1.0])
    env.run(until=0.5)
    batch = kernel.start([0.0], [[r]])
    env.run()
    assert batch.done.value == 0.5


def test_activity_without_resources_runs_at_its_cap():
    # Regression: an activity with no resource (documented: it gets its cap) crashed the local update.
    env, kernel, (r,) = make([1.0])
    only_cap = kernel.start([2.0], [[]], cap=0.5)
    on_r = kernel.start([3.0], [[r]])
    env.run()
    assert only_cap.done.value == pytest.approx(4.0)
    assert on_r.done.value == pytest.approx(3.0)


def test_activity_without_resources_in_a_kernel_without_resources():
    env = simpy.Environment()
    kernel = FluidKernel(env, verify=True)
    batch = kernel.start([2.0], [[]], cap=1.0, priority=[1])
    env.run()
    assert batch.done.value == pytest.approx(2.0)


def test_low_priority_activity_resumes_when_the_high_one_ends():
    # Regression: resource of 1/s; A (priority 1, 0.5 units) takes everything, B (priority 0, 1 unit)
    # waits at rate 0. A ends at 0.5 s; B must then run at 1/s and end at 1.5 s (it stalled forever
    # when the incremental update skipped activities below the level of the one that ended).
    for verify in (False, True):
        env, kernel, (r,) = make([1.0], verify=verify)
        a = kernel.start([0.5], [[r]], priority=1)
        b = kernel.start([1.0], [[r]], priority=0)
        env.run()
        assert a.done.value == pytest.approx(0.5)
        assert b.done.value == pytest.approx(1.5), f"verify={verify}"


def test_mixed_priorities_component_reaches_every_coupled_activity():
    # Regression: r0 and r1 of 2/s. X and Y (priority 1, 1 unit each) share r0 -> 1/s each, end at 1 s
    # together (so r0 is marked changed twice). W (priority 1, 4 units) holds r1 at 2/s until 2 s.
    # Z (priority 0, 2 units) crosses r0 and r1 and gets nothing while W runs: it may start only at 2 s,
    # at 2/s -> ends at 3 s. (Solving the component of r0 without W gave Z 2/s at 1 s: end at 2 s.)
    for verify in (False, True):
        env, kernel, (r0, r1) = make([2.0, 2.0], verify=verify)
        xy = kernel.start([1.0, 1.0], [[r0], [r0]], priority=1)
        w = kernel.start([4.0], [[r1]], priority=1)
        z = kernel.start([2.0], [[r0, r1]], priority=0)
        env.run()
        assert xy.done.value == pytest.approx(1.0)
        assert w.done.value == pytest.approx(2.0)
        assert z.done.value == pytest.approx(3.0), f"verify={verify}"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"amounts": [-1.0], "resources": [[0]]}, ["amount", "-1.0", ">= 0"]),
        ({"amounts": [1.0], "resources": [[5]]}, ["resource id", "5", "does not exist"]),
        ({"amounts": [1.0], "resources": [[0]], "coefs": [[0.0]]}, ["coefficient", "0.0", "> 0"]),
        ({"amounts": [1.0], "resources": [[0]], "weight": 0.0}, ["weight", "0.0", "> 0"]),
        ({"amounts": [1.0], "resources": [[0]], "cap": -2.0}, ["cap", "-2.0", "> 0"]),
        ({"amounts": [1.0], "resources": [[]]}, ["resources", "resource or a finite cap"]),
    ],
)
def test_bad_activities_are_config_errors(kwargs, words):
    _, kernel, _ = make([1.0])
    with pytest.raises(ConfigError) as info:
        kernel.start(**kwargs)
    for word in words:
        assert word in str(info.value)
    assert "Fix:" in str(info.value)


def test_negative_capacity_is_a_config_error():
    env = simpy.Environment()
    kernel = FluidKernel(env)
    with pytest.raises(ConfigError, match=r"capacity of bad = -1.0: must be >= 0"):
        kernel.add_resources([1.0, -1.0], ["good", "bad"])


# ---------------------------------------------------------------------------------------------------------
# Random workloads: verify=True checks every incremental recomputation against a full solve.


@dataclass
class Workload:
    capacity: list[float]
    batches: list[tuple[float, list[float], list[list[int]], list[list[float]], list[float], list[float], list[int]]]
    changes: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # resource -> (delay, capacity)


@st.composite
def workloads(draw, priorities):
    n_res = draw(st.integers(1, 6))
    capacity = draw(st.lists(st.sampled_from([1.0, 2.0, 3.5, 10.0]), min_size=n_res, max_size=n_res))
    batches = []
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 1.25, 2.0, 3.0]))
        n = draw(st.integers(1, 5))
        amounts, resources, coefs, weights, caps, prios = [], [], [], [], [], []
        for _ in range(n):
            res = draw(st.lists(st.integers(0, n_res - 1), min_size=0, max_size=min(n_res, 4), unique=True))
            resources.append(res)
            coefs.append([draw(st.sampled_from([0.5, 1.0, 1.0, 2.0])) for _ in res])
            amounts.append(draw(st.sampled_from([0.0, 1.0, 2.0, 2.5, 7.0])))
            weights.append(draw(st.sampled_from([0.5, 1.0, 1.0, 2.0])))
            caps.append(draw(st.sampled_from([math.inf, math.inf, 0.7, 3.0])) if res else 1.5)
            prios.append(draw(st.integers(0, 1)) if priorities else 0)
        batches.append((start, amounts, resources, coefs, weights, caps, prios))
    changes = {}
    for r in draw(st.lists(st.integers(0, n_res - 1), max_size=3, unique=True)):
        steps = draw(st.lists(st.tuples(st.sampled_from([0.25, 0.5, 1.0, 1.5]), st.sampled_from([0.0, 0.5, 5.0])),
                              min_size=1, max_size=3))
        changes[r] = [*steps, (draw(st.sampled_from([0.5, 1.0])), capacity[r])]  # always restored
    return Workload(capacity, batches, changes)


def run_workload(w: Workload):
    env = simpy.Environment()
    kernel = FluidKernel(env, verify=True)
    kernel.add_resources(w.capacity, [f"r{i}" for i in range(len(w.capacity))])
    history = {r: [(0.0, c)] for r, c in enumerate(w.capacity)}
    done = []

    def starter(batch):
        start, amounts, resources, coefs, weights, caps, prios = batch
        yield env.timeout(start)
        b = kernel.start(amounts, resources, coefs, weight=np.array(weights), cap=np.array(caps),
                         priority=np.array(prios))
        yield b.done
        done.append(len(amounts))

    def changer(r, steps):
        for delay, cap in steps:
            yield env.timeout(delay)
            kernel.set_capacity(r, cap)
            history[r].append((env.now, cap))

    for batch in w.batches:
        env.process(starter(batch))
    for r, steps in w.changes.items():
        env.process(changer(r, steps))
    env.run()  # raises AssertionError from verify=True if an incremental rate differs from a full solve
    return kernel, history, done


def expected_work(w: Workload) -> np.ndarray:
    out = np.zeros(len(w.capacity))
    for _, amounts, resources, coefs, *_ in w.batches:
        for amount, res, cf in zip(amounts, resources, coefs, strict=True):
            for r, c in zip(res, cf, strict=True):
                out[r] += amount * c
    return out


def piecewise(records):
    """``[(time, value), ...]`` in order -> the value in force at each time (the last record at a time wins)."""
    out = {}
    for t, v in records:
        out[float(t)] = float(v)
    return sorted(out.items())


def value_at(steps, t):
    value = 0.0
    for time, v in steps:
        if time <= t:
            value = v
        else:
            break
    return value


def check_invariants(w: Workload, kernel: FluidKernel, history, done):
    started = sum(len(b[1]) for b in w.batches)
    # every started activity completes (capacities always come back)
    assert kernel.stats.activities_started == started
    assert kernel.stats.activities_completed == started
    assert sum(done) == started and kernel.running().size == 0
    # work carried per resource = sum of amount x coefficient of its activities
    carried = kernel.carried()
    np.testing.assert_allclose(carried, expected_work(w), rtol=1e-9, atol=1e-9)
    times, res, load = kernel.usage_log()
    assert np.all(np.diff(times) >= 0)
    for r in range(len(w.capacity)):
        mine = res == r
        steps = piecewise(zip(times[mine], load[mine], strict=True))
        # the integral of the load over time equals the work carried
        integral = sum(v * (steps[i + 1][0] - t) for i, (t, v) in enumerate(steps[:-1]))
        assert integral == pytest.approx(carried[r], rel=1e-6, abs=1e-9)
        if steps:
            assert steps[-1][1] == pytest.approx(0.0, abs=1e-9), "a load remains after the end"
        # the load never exceeds the capacity in force
        caps = piecewise(history[r])
        for t in sorted({t for t, _ in steps} | {t for t, _ in caps}):
            assert value_at(steps, t) <= value_at(caps, t) * (1 + 1e-9) + 1e-12, (r, t)


@settings(max_examples=150)
@given(workloads(priorities=False))
def test_random_workloads_single_class(w):
    check_invariants(w, *run_workload(w))


@settings(max_examples=150)
@given(workloads(priorities=True))
def test_random_workloads_with_priorities(w):
    check_invariants(w, *run_workload(w))


@settings(max_examples=25)
@given(st.integers(0, 2**32 - 1))
def test_random_large_workloads(seed):
    """Bigger instances (numpy path, local updates growing over several rounds), drawn from a seeded rng."""
    rng = np.random.default_rng(seed)
    n_res = int(rng.integers(4, 16))
    capacity = rng.choice([1.0, 2.0, 3.5, 10.0], size=n_res).tolist()
    batches = []
    for _ in range(int(rng.integers(5, 20))):
        n = int(rng.integers(1, 15))
        resources = [sorted(rng.choice(n_res, size=int(rng.integers(1, 5)), replace=False).tolist()) for _ in range(n)]
        batches.append((float(rng.choice([0.0, 0.5, 1.0, rng.uniform(0, 3)])),
                        rng.choice([0.0, 1.0, 2.5, rng.uniform(0.1, 10)], size=n).tolist(), resources,
                        [rng.choice([0.5, 1.0, 2.0], size=len(r)).tolist() for r in resources],
                        rng.choice([0.5, 1.0, 2.0], size=n).tolist(),
                        rng.choice([math.inf, math.inf, 0.7, 3.0], size=n).tolist(),
                        rng.integers(0, 2, size=n).tolist() if seed % 2 else [0] * n))
    changes = {int(r): [(float(rng.uniform(0.1, 2)), float(rng.choice([0.0, 0.5, 5.0]))), (1.0, capacity[int(r)])]
               for r in rng.choice(n_res, size=int(rng.integers(0, 3)), replace=False)}
    w = Workload(capacity, batches, changes)
    check_invariants(w, *run_workload(w))


@settings(max_examples=60)
@given(workloads(priorities=False), st.lists(st.tuples(st.sampled_from([0.1, 0.5, 1.0, 2.2]), st.integers(0, 50),
                                                       st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True)),
                                             max_size=4))
def test_random_reroutes_keep_work_and_usage_consistent(w, moves):
    """Moving running activities to other resources keeps the usage integral equal to the work carried."""
    env = simpy.Environment()
    kernel = FluidKernel(env, verify=True)
    n_res = len(w.capacity)
    kernel.add_resources(w.capacity, [f"r{i}" for i in range(n_res)])
    for start, amounts, resources, coefs, weights, caps, _prios in w.batches:
        def starter(start=start, args=(amounts, resources, coefs), weights=weights, caps=caps):
            yield env.timeout(start)
            kernel.start(*args, weight=np.array(weights), cap=np.array(caps))
        env.process(starter())

    def mover(at, pick, targets):
        yield env.timeout(at)
        running = [a for a in kernel.running() if kernel.resources_of(a).size]
        if running:
            activity = running[pick % len(running)]
            kernel.reroute([activity], [sorted({t % n_res for t in targets})])

    for move in moves:
        env.process(mover(*move))
    env.run()
    started = sum(len(b[1]) for b in w.batches)
    assert kernel.stats.activities_completed == started and kernel.running().size == 0
    carried = kernel.carried()
    times, res, load = kernel.usage_log()
    for r in range(n_res):
        steps = piecewise(zip(times[res == r], load[res == r], strict=True))
        integral = sum(v * (steps[i + 1][0] - t) for i, (t, v) in enumerate(steps[:-1]))
        assert integral == pytest.approx(carried[r], rel=1e-6, abs=1e-9)
    if not moves:
        np.testing.assert_allclose(carried, expected_work(w), rtol=1e-9, atol=1e-9)


def test_densely_coupled_completions_stay_exact_through_fallbacks_and_back_off():
    """One coupled component where local updates give up: full solves and the back-off are checked by verify.

    Local updates find the activities of a resource both ways: through the
    resource index and by scanning the incidences appended after it was built.
    """
    rng = np.random.default_rng(7)
    env, kernel, ids = make([1.0] * 24)
    sizes = {0.0: 300, 0.3: 50, 0.6: 400}  # later batches land after the index is built, the last one rebuilds it
    resources = [sorted(rng.choice(24, size=3, replace=False).tolist()) for _ in range(sum(sizes.values()))]
    amounts = rng.lognormal(0.0, 1.0, size=len(resources))
    batches = []

    def arrivals():
        first = 0
        for at, n in sizes.items():
            yield env.timeout(at - env.now)
            batches.append(kernel.start(amounts[first:first + n], resources[first:first + n]))
            first += n

    env.process(arrivals())
    env.run()  # verify=True: every recomputation equals a from-scratch solve
    assert all(b.done.triggered for b in batches) and kernel.stats.activities_completed == len(resources)
    assert kernel.stats.local_fallbacks > 0 and kernel.stats.local_skips > 0
    assert kernel.stats.local_rounds > 0  # some changes stayed local
    carried = kernel.carried()
    expected = np.bincount(np.concatenate(resources), weights=np.repeat(amounts, 3), minlength=24)
    assert np.allclose(carried[ids], expected, rtol=1e-9)
