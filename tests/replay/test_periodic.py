"""Replaying until periodic: the pattern is found where a run stopped at that step would find it."""

from __future__ import annotations

import numpy as np
import pytest

from commsim.errors import ConfigError
from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads.periodic import period_at, replay_until_periodic
from commsim.workloads.replay import Replay
from commsim.workloads.trace import CollectiveOp, DelayOp, Program, Trace

STEP = 1e-3  # compute per step, seconds
SYNC = 4e6   # bytes all-reduced per step: 2 steps of 2 MB at 1 GB/s + 2 x 2 us latency on 2 ranks


def _co2(steps: int, lag: int, compute: float) -> Trace:
    """Each step computes ``compute`` seconds then all-reduces; step s waits for the all-reduce of step s - lag."""
    ops = []
    for s in range(steps + 1):
        deps = [f"ar{s - lag}"] if 0 <= s - lag < steps else []
        ops.append(DelayOp(id=f"c{s}", seconds=0.0 if s == steps else compute, deps=deps))
        if s < steps:
            ops.append(CollectiveOp(id=f"ar{s}", op="all_reduce", bytes=SYNC, group="world", algorithm="ring",
                                    stream="comm", deps=[f"c{s}"]))
    return Trace(ranks=2, communicators={"world": [[0, 1]]}, programs=[Program(name="p", ranks="0:2", ops=ops)])


def _runner(lag: int, lengths: list[int], compute: float = STEP):
    def run(steps: int):
        lengths.append(steps)
        replay = Replay(Simulation(load_topology("switch:2,1GB/s,1us")), _co2(steps, lag, compute), record="none")
        replay.run_to_end()
        index, start, end = replay.op_times()
        starts = np.array([start[index[f"c{s}"]] for s in range(steps + 1)])
        settle = np.array([end[index[f"ar{s}"]] for s in range(steps)]) - starts[:steps]
        return starts, settle, replay
    return run


def test_communication_bound_overlap_settles_at_the_communication_pace() -> None:
    lengths: list[int] = []
    found = replay_until_periodic(_runner(2, lengths), lag=2, limit=40)
    comm = 2 * (2e6 / 1e9 + 2e-6)  # ring all-reduce on 2 ranks: 2 steps of S/2, two 1 us hops each
    assert found.periodic and found.period == 1
    assert found.iteration == pytest.approx(comm, rel=1e-9)  # slower than the 1 ms of compute: it sets the pace
    assert lengths[0] == 2 + 3 + 1 and found.replayed == lengths[-1]  # lag + repeats + 1 steps first
    # a trace stopped at the step where the pattern was found gives the same start times
    again, _, _ = _runner(2, [])(found.steps)
    assert np.array_equal(again, found.starts)


def test_a_hidden_sync_runs_at_the_compute_pace() -> None:
    found = replay_until_periodic(_runner(2, [], compute=5 * STEP), lag=2, limit=40)
    assert found.periodic and found.iteration == pytest.approx(5 * STEP, rel=1e-9)  # the 4 ms sync is hidden


def test_a_series_that_never_repeats_is_averaged_over_its_last_steps_and_said_so() -> None:
    def run(steps: int):
        starts = np.cumsum(np.concatenate([[0.0], 1.0 + np.arange(steps) ** 2 * 1e-3]))
        return starts, np.zeros(steps), None

    found = replay_until_periodic(run, lag=1, limit=30, max_period=2, repeats=3)
    assert not found.periodic and found.steps == 30 and found.window == 6
    assert found.iteration == pytest.approx((found.starts[30] - found.starts[24]) / 6)


def test_a_backlog_still_building_up_is_not_periodic_yet() -> None:
    starts = np.arange(10.0)  # equal intervals ...
    growing = np.arange(10.0) * 0.1  # ... but each sync settles later than the one before
    assert period_at(starts, growing, 9, lag=1) is None
    assert period_at(starts, np.full(10, 0.5), 9, lag=1) == 1


def test_bad_arguments_get_clear_errors() -> None:
    with pytest.raises(ConfigError, match="lag"):
        replay_until_periodic(lambda n: (np.zeros(n + 1), np.zeros(n), None), lag=-1, limit=5)
