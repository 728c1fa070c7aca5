"""Replay plug-ins: a mechanism holds the trace's start and single ops, and hears when ops finish.

A two-rank trace on ``switch:2,50GB/s,1us`` (H100 SXM preset): each rank runs a 1 ms GEMM, then a
second GEMM; a plug-in holds the trace 2 ms at its start and rank 1's second GEMM until 3 ms after it
may start, and logs every op that finishes. Times are derived by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from replay_helpers import R
from simpy.events import Event

from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads.replay import Replay
from commsim.workloads.trace import CollectiveOp, ComputeOp, Program, Trace

MS = 1e-3


class HoldOne:
    """Holds the start by 2 ms and op ``second`` of rank 1 by 3 ms; logs (time, ranks, op id) of finished ops."""

    def __init__(self, sim: Simulation) -> None:
        self.env = sim.env
        self.finished: list[tuple[float, list[int], str]] = []

    def start(self, replay: Replay) -> Event:
        return self.env.timeout(2 * MS)

    def before(self, replay: Replay, ranks: np.ndarray, op) -> Event | None:
        if op.id == "second" and 1 in ranks.tolist():
            return self.env.timeout(3 * MS)
        return None

    def after(self, replay: Replay, ranks: np.ndarray, op) -> None:
        self.finished.append((self.env.now, ranks.tolist(), op.id))


def _trace() -> Trace:
    ops = [ComputeOp(id="first", flops=R * 1 * MS), ComputeOp(id="second", flops=R * 1 * MS)]
    return Trace(ranks=2, programs=[Program(name="p0", ranks=[0], ops=ops), Program(name="p1", ranks=[1], ops=ops)])


def test_a_plugin_holds_the_start_and_an_op_and_hears_every_finish():
    sim = Simulation(load_topology("switch:2,50GB/s,1us"))
    plugin = HoldOne(sim)
    replay = Replay(sim, _trace(), record="none", plugins=[plugin])
    replay.run_to_end()
    index, start, end = replay.op_times(1)
    # rank 1: start held to 2 ms, first GEMM 2-3 ms, second held 3 ms, so 6-7 ms (the wait is not the op's time)
    assert start[index["first"]] == pytest.approx(2 * MS) and end[index["first"]] == pytest.approx(3 * MS)
    assert start[index["second"]] == pytest.approx(6 * MS) and end[index["second"]] == pytest.approx(7 * MS)
    index, start, end = replay.op_times(0)
    assert start[index["second"]] == pytest.approx(3 * MS) and end[index["second"]] == pytest.approx(4 * MS)
    assert [(round(t / MS, 9), r, op) for t, r, op in plugin.finished] == [
        (3.0, [0], "first"), (3.0, [1], "first"), (4.0, [0], "second"), (7.0, [1], "second")]


def test_a_held_collective_starts_when_its_last_member_is_released():
    trace = Trace(ranks=2, communicators={"world": [[0, 1]]}, programs=[
        Program(name="p", ranks="0:2", ops=[
            ComputeOp(id="gemm", flops=R * 1 * MS),
            CollectiveOp(id="second", op="all_reduce", bytes=1e-9, group="world", algorithm="star",
                         deps=["gemm"])])])
    sim = Simulation(load_topology("switch:2,50GB/s,1us"))
    replay = Replay(sim, trace, lockstep=False, record="none", plugins=[HoldOne(sim)])
    replay.run_to_end()
    _, _, end0 = replay.op_times(0)
    index, start1, end1 = replay.op_times(1)
    # rank 1 reaches the star at 3 + 3 ms; the star's 2 routes of 2 links take 4 us; both ranks end together
    assert start1[index["second"]] == pytest.approx(6 * MS)
    assert end0[index["second"]] == pytest.approx(6 * MS + 4e-6, rel=1e-6) == end1[index["second"]]


def test_fast_replay_turns_its_shortcuts_off_for_plugins_and_says_so():
    sim = Simulation(load_topology("switch:2,50GB/s,1us"))
    replay = Replay(sim, _trace(), record="none", fast=True, plugins=[HoldOne(sim)])
    assert replay.shortcuts is None and any("plug-ins" in note for note in replay.notes)


@pytest.mark.parametrize("options, match", [({"kary_tre": {"fanout": 2}}, "not a registered collective algorithm"),
                                            ({"kary_tree": {"fan_out": 2}}, "not a parameter of kary_tree")])
def test_algorithm_options_are_checked(options, match):
    from commsim.errors import ConfigError

    sim = Simulation(load_topology("switch:2,50GB/s,1us"))
    with pytest.raises(ConfigError, match=match) as info:
        Replay(sim, _trace(), algorithm_options=options)
    assert "Fix:" in str(info.value)
