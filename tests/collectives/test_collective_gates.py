"""The executor's extension points: external triggers (gates + release) and per-transfer hooks.

A ring reduce-scatter on 4 GPUs (75 GB/s per direction, 500 ns per link) is the
subject: its alpha-beta time is known, so a gate or an extra resource shows up
as an exact shift or stretch of it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from commsim.collectives import CollectiveConfig, CollectiveRun, Dep, Schedule, Step, TransferTerms
from commsim.collectives.ring import ring_reduce_scatter
from commsim.errors import ConfigError
from commsim.network.generators import ring
from commsim.simulation import Simulation

N, BW, LAT, SIZE = 4, 75e9, 5e-7, 64e6
CHUNK = SIZE / N
STEP = CHUNK / BW + LAT
GROUP = [f"gpu{i}" for i in range(N)]


def _run(*, gates=None, hooks=None, mode="steps", schedule=None) -> tuple[Simulation, CollectiveRun]:
    sim = Simulation(ring(n=N, bandwidth=BW, latency=LAT), record_usage=False)
    run = CollectiveRun(sim, schedule or ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig(mode=mode),
                        gates=gates, hooks=hooks)
    run.start()
    return sim, run


def test_without_gates_or_hooks_the_ring_takes_its_alpha_beta_time() -> None:
    sim, run = _run()
    sim.run()
    assert run.time == pytest.approx((N - 1) * STEP, rel=1e-9)


def test_a_gated_step_starts_when_its_external_events_are_released() -> None:
    gates = {0: np.array([2, 1, 1, 1])}     # entry 0 waits for two events, the others for one
    sim, run = _run(gates=gates)
    sim.env.timeout(1e-3).callbacks.append(lambda _ev: run.release(0, np.array([0, 1, 2, 3])))
    sim.env.timeout(2e-3).callbacks.append(lambda _ev: run.release(0, np.array([0])))
    sim.run()
    # GPU 0's first send waits for the second event; the chain through it sets the end
    assert run.end_time == pytest.approx(2e-3 + (N - 1) * STEP, rel=1e-9)


def test_an_entry_short_of_its_events_never_starts() -> None:
    sim, run = _run(gates={0: np.array([2, 1, 1, 1])})
    sim.env.timeout(1e-3).callbacks.append(lambda _ev: run.release(0, np.arange(N)))
    sim.run()
    assert not run.done.triggered and np.isnan(run.end_time)


def test_releases_before_the_run_begins_count() -> None:
    sim = Simulation(ring(n=N, bandwidth=BW, latency=LAT), record_usage=False)
    run = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig(launch_latency=1e-4),
                        gates={0: np.ones(N, dtype=np.int64)})
    run.start()
    run.release(0, np.arange(N))       # during the launch latency: the entries start when the run begins
    sim.run()
    assert run.end_time == pytest.approx(1e-4 + (N - 1) * STEP, rel=1e-9)


def test_a_gate_on_a_later_step_delays_only_what_waits_for_it() -> None:
    gates = {1: np.array([1, 0, 0, 0])}     # GPU 0's step-1 send also waits for an event at 1 ms
    sim, run = _run(gates=gates)
    sim.env.timeout(1e-3).callbacks.append(lambda _ev: run.release(1, np.array([0])))
    sim.run()
    assert run.end_time == pytest.approx(1e-3 + 2 * STEP, rel=1e-9)   # GPU 0 -> 1 at step 1, then GPU 1's step 2
    assert run.rank_end[3] == pytest.approx((N - 1) * STEP, rel=1e-9)  # GPU 3's chain never passes GPU 0's step 1


@pytest.mark.parametrize(("gates", "field"), [
    ({5: np.ones(N)}, "gates"),
    ({0: np.ones(N + 1)}, "gates"),
    ({0: -np.ones(N)}, "gates"),
])
def test_bad_gates_are_refused(gates, field) -> None:
    with pytest.raises(ConfigError) as info:
        _run(gates=gates)
    assert info.value.field == field and "Fix:" in str(info.value)


def test_gates_and_hooks_need_steps_mode() -> None:
    with pytest.raises(ConfigError, match="mode = 'flows'"):
        _run(gates={0: np.ones(N)}, mode="flows")


def test_releasing_too_often_or_an_ungated_step_is_refused() -> None:
    _sim, run = _run(gates={0: np.ones(N)})
    run.release(0, np.array([1]))
    with pytest.raises(ConfigError, match="more external events than its gate holds"):
        run.release(0, np.array([1]))
    with pytest.raises(ConfigError, match="without external gates"):
        run.release(1, np.array([0]))


class _Recorder:
    """Hooks that add one extra resource per transfer and log every call."""

    def __init__(self, resources: np.ndarray, coef: float, cap: float = np.inf) -> None:
        self.resources, self.coef, self.cap = resources, coef, cap
        self.started: list[tuple[int, int, float]] = []
        self.arrived: list[tuple[int, int, float]] = []
        self.now = None

    def starting(self, k: int, entries: np.ndarray, nbytes: np.ndarray) -> TransferTerms:
        self.started += [(k, int(e), self.now()) for e in entries]
        return TransferTerms(extra=[([int(self.resources[e])], [self.coef]) for e in entries], cap=self.cap)

    def delivered(self, k: int, entries: np.ndarray) -> None:
        self.arrived += [(k, int(e), self.now()) for e in entries]


def test_hooks_add_resources_to_every_transfer_and_see_each_once() -> None:
    sim = Simulation(ring(n=N, bandwidth=BW, latency=LAT), record_usage=False)
    # a memory resource per sender of 60 GB/s that each byte sent uses twice: 30 GB/s binds, not the link
    memory = sim.kernel.add_resources(np.full(N, 60e9), [f"mem{i}" for i in range(N)])
    hooks = _Recorder(memory, 2.0)
    hooks.now = lambda: sim.env.now
    run = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig(), hooks=hooks)
    run.start()
    sim.run()
    assert run.time == pytest.approx((N - 1) * (CHUNK / 30e9 + LAT), rel=1e-9)
    every = sorted((k, e) for k in range(N - 1) for e in range(N))
    assert sorted((k, e) for k, e, _t in hooks.started) == every
    assert sorted((k, e) for k, e, _t in hooks.arrived) == every
    assert float(sim.kernel.carried()[memory].sum()) == pytest.approx(2.0 * (N - 1) * SIZE, rel=1e-9)


def test_a_hooks_rate_cap_limits_each_transfer() -> None:
    sim = Simulation(ring(n=N, bandwidth=BW, latency=LAT), record_usage=False)
    hooks = _Recorder(sim.kernel.add_resources(np.full(N, 1e15), [f"m{i}" for i in range(N)]), 1.0, cap=25e9)
    hooks.now = lambda: sim.env.now
    run = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig(), hooks=hooks)
    run.start()
    sim.run()
    assert run.time == pytest.approx((N - 1) * (CHUNK / 25e9 + LAT), rel=1e-9)


def test_a_local_step_without_resources_completes_at_once_and_the_run_ends_once() -> None:
    base = ring_reduce_scatter(N, SIZE)
    own = np.arange(N)
    local = Step(src=own, dst=own, nbytes=np.zeros(N), deps=(Dep(N - 2, own), Dep(N - 2, (own - 1) % N)))
    schedule = Schedule("reduce_scatter", "ring", N, SIZE, [*base.steps, local])
    sim, run = _run(schedule=schedule)
    sim.run()
    assert run.done.triggered and run.end_time == pytest.approx((N - 1) * STEP, rel=1e-9)


@pytest.mark.parametrize("coalesce", [False, True])
def test_coalesce_sends_what_one_instant_readies_as_one_batch_at_the_same_times(coalesce: bool) -> None:
    sim = Simulation(ring(n=N, bandwidth=BW, latency=LAT), record_usage=False)
    run = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig(),
                        gates={0: np.ones(N, dtype=np.int64)}, coalesce=coalesce)
    batches: list[int] = []
    send = sim.network.send
    sim.network.send = lambda routes, nbytes, **kw: batches.append(len(routes)) or send(routes, nbytes, **kw)
    run.start()
    for gpu in range(N):            # four separate events at t = 1 ms
        sim.env.timeout(1e-3).callbacks.append(lambda _ev, g=gpu: run.release(0, np.array([g])))
    sim.run()
    assert run.end_time == pytest.approx(1e-3 + (N - 1) * STEP, rel=1e-12)
    assert batches == ([N] * (N - 1) if coalesce else [1] * (N * (N - 1)))   # separate events stay separate


# ---------------------------------------------------------------------- starting at a time, after another run
def test_start_at_shifts_the_run_to_that_time_and_a_past_time_starts_it_at_once() -> None:
    sim = Simulation(ring(n=N, bandwidth=BW, latency=LAT), record_usage=False)
    late = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig())
    late.start_at(3e-3)
    sim.run()
    assert late.start_time == pytest.approx(3e-3) and late.end_time == pytest.approx(3e-3 + (N - 1) * STEP, rel=1e-9)
    again = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig())
    again.start_at(0.0)     # the clock is past 0: it starts now
    assert again.start_time == pytest.approx(late.end_time)


@pytest.mark.parametrize("when", [math.nan, math.inf])
def test_start_at_refuses_a_time_that_is_not_finite(when: float) -> None:
    sim = Simulation(ring(n=N, bandwidth=BW, latency=LAT), record_usage=False)
    run = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig())
    with pytest.raises(ConfigError, match=r"start time = (nan|inf): is not a finite number of seconds"):
        run.start_at(when)


def test_start_after_runs_a_second_phase_when_the_first_is_done() -> None:
    sim = Simulation(ring(n=N, bandwidth=BW, latency=LAT), record_usage=False)
    first = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig())
    second = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig())
    second.start_after(first)
    first.start_at(1e-3)
    sim.run()
    assert second.start_time == pytest.approx(first.end_time)
    assert second.end_time == pytest.approx(1e-3 + 2 * (N - 1) * STEP, rel=1e-9)
    third = CollectiveRun(sim, ring_reduce_scatter(N, SIZE), GROUP, CollectiveConfig())
    third.start_after(first)     # already done: starts at once
    assert third.start_time == sim.now
