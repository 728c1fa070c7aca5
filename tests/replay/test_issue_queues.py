"""Issue-order queues: queued ops run one at a time in the order they become ready, ranks in lockstep.

Delay ops on ``switch:2,1GB/s,1us``; every time is derived by hand.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads.issue_order import IssueQueues
from commsim.workloads.replay import replay
from commsim.workloads.trace import DelayOp, Program, Trace


def _run(programs: list[Program], ranks: int = 1) -> tuple[dict[tuple[int, str], tuple[float, float]], IssueQueues]:
    queues = IssueQueues()
    out = replay(Simulation(load_topology("switch:2,1GB/s,1us")), Trace(ranks=ranks, programs=programs),
                 plugins=[queues])
    times = {(int(r.cohort), r.op_id): (float(r.start), float(r.end)) for r in out.ops.itertuples(index=False)}
    return times, queues


def test_a_queue_runs_its_ops_in_the_order_they_become_ready_not_in_list_order() -> None:
    ops = [DelayOp(id="gate_a", seconds=3.0, stream="a"), DelayOp(id="gate_b", seconds=1.0, stream="b"),
           DelayOp(id="first_listed", seconds=2.0, stream="qa", deps=["gate_a"], tags={"queue": "q"}),
           DelayOp(id="second_listed", seconds=4.0, stream="qb", deps=["gate_b"], tags={"queue": "q"})]
    times, queues = _run([Program(name="p", ranks=[0], ops=ops)])
    assert queues.issued == ["second_listed", "first_listed"]
    assert times[(0, "second_listed")] == (1.0, 5.0)
    assert times[(0, "first_listed")] == (5.0, 7.0)  # ready at 3, waits for the queue until 5


def test_ops_of_different_queues_and_untagged_ops_overlap() -> None:
    ops = [DelayOp(id="x", seconds=2.0, stream="a", tags={"queue": "q1"}),
           DelayOp(id="y", seconds=2.0, stream="b", tags={"queue": "q2"}),
           DelayOp(id="z", seconds=2.0, stream="c")]
    times, _ = _run([Program(name="p", ranks=[0], ops=ops)])
    assert times[(0, "x")] == times[(0, "y")] == times[(0, "z")] == (0.0, 2.0)


def test_an_op_of_two_programs_starts_when_both_are_ready_and_the_next_waits_for_both_ends() -> None:
    slow = Program(name="slow", ranks=[0], ops=[
        DelayOp(id="prep", seconds=2.0, stream="a"),
        DelayOp(id="shared", seconds=3.0, stream="q1", deps=["prep"], tags={"queue": "q"}),
        DelayOp(id="after", seconds=1.0, stream="q2", deps=["shared"], tags={"queue": "q"})])
    fast = Program(name="fast", ranks=[1], ops=[
        DelayOp(id="shared", seconds=1.0, stream="q1", tags={"queue": "q"}),
        DelayOp(id="after", seconds=1.0, stream="q2", deps=["shared"], tags={"queue": "q"})])
    times, _ = _run([slow, fast], ranks=2)
    assert times[(0, "shared")] == (2.0, 5.0) and times[(1, "shared")] == (2.0, 3.0)   # lockstep start
    assert times[(0, "after")][0] == times[(1, "after")][0] == 5.0  # the queue waits for the slower rank


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(1, 4)), min_size=1, max_size=6))
def test_queued_ops_never_overlap_and_start_in_ready_order(ops: list[tuple[int, int]]) -> None:
    trace_ops = []
    for i, (ready, length) in enumerate(ops):
        trace_ops.append(DelayOp(id=f"g{i}", seconds=float(ready), stream=f"g{i}"))
        trace_ops.append(DelayOp(id=f"q{i}", seconds=float(length), stream=f"l{i}", deps=[f"g{i}"],
                                 tags={"queue": "q"}))
    times, queues = _run([Program(name="p", ranks=[0], ops=trace_ops)])
    spans = [times[(0, op_id)] for op_id in queues.issued]
    assert sorted(queues.issued) == sorted(f"q{i}" for i in range(len(ops)))
    readiness = [ops[int(op_id[1:])][0] for op_id in queues.issued]
    assert readiness == sorted(readiness)  # in the order they became ready
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start == pytest.approx(end) or start > end
    for op_id, (start, _) in zip(queues.issued, spans, strict=True):
        assert start >= ops[int(op_id[1:])][0]
