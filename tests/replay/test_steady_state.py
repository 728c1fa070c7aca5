"""Coalescing unobserved delay chains is exact; the replay's run_to_end / op_times give the same times as run()."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.collectives import build_schedule
from commsim.collectives.kary_tree import kary_tree_all_reduce, tree_depth
from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads import steady_state
from commsim.workloads.replay import Replay
from commsim.workloads.steady_state import coalesce_delays
from commsim.workloads.trace import CollectiveOp, DelayOp, Program, Trace


def _trace(layout: list[tuple[float, bool, bool]]) -> Trace:
    """Delay ops on one stream; some release a collective, some wait for the collective before them."""
    ops = []
    last_sync = None
    for i, (seconds, releases, waits) in enumerate(layout):
        deps = [last_sync] if waits and last_sync is not None else []
        ops.append(DelayOp(id=f"d{i}", seconds=seconds, deps=deps))
        if releases:
            last_sync = f"c{i}"
            ops.append(CollectiveOp(id=last_sync, op="all_reduce", bytes=4e6, group="world", algorithm="ring",
                                    stream=f"wan{i % 2}", deps=[f"d{i}"]))
    return Trace(ranks=2, communicators={"world": [[0, 1]]}, programs=[Program(name="p", ranks="0:2", ops=ops)])


def _replay(trace: Trace) -> Replay:
    replay = Replay(Simulation(load_topology("switch:2,1GB/s,10us")), trace, record="none")
    replay.run_to_end()
    return replay


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(1e-4, 5e-3), st.booleans(), st.booleans()), min_size=1, max_size=14))
def test_coalescing_keeps_every_observed_time(layout: list[tuple[float, bool, bool]]) -> None:
    trace = _trace(layout)
    short = coalesce_delays(trace)
    assert short.op_count() <= trace.op_count()
    full, merged = _replay(trace), _replay(short)
    ids_full, start_full, end_full = full.op_times()
    ids_short, start_short, end_short = merged.op_times()
    # every op kept starts and ends when it did in the full trace: the merged op ends with its last member
    for op_id, i in ids_short.items():
        j = ids_full[op_id]
        assert end_short[i] == pytest.approx(end_full[j], rel=1e-12, abs=1e-15)
        if not op_id.startswith("d"):
            assert start_short[i] == pytest.approx(start_full[j], rel=1e-12, abs=1e-15)
    assert np.nanmax(end_short) == pytest.approx(np.nanmax(end_full), rel=1e-12)


def test_kept_ops_are_never_merged_and_observed_ones_end_a_chain() -> None:
    trace = _trace([(1e-3, False, False), (1e-3, False, False), (1e-3, True, False), (1e-3, False, False),
                    (1e-3, False, True)])
    assert [op.id for op in coalesce_delays(trace).programs[0].ops] == ["d2", "c2", "d3", "d4"]
    assert [op.id for op in coalesce_delays(trace, keep=["d1"]).programs[0].ops] == ["d0", "d1", "d2", "c2", "d3", "d4"]
    merged = coalesce_delays(trace).programs[0].ops[0]
    assert merged.seconds == pytest.approx(3e-3) and merged.name == "d0..d2"


def test_run_to_end_gives_the_times_run_reports() -> None:
    trace = _trace([(2e-3, True, False), (1e-3, False, False), (1e-3, False, True)])
    table = Replay(Simulation(load_topology("switch:2,1GB/s,10us")), trace).run().ops
    replay = _replay(trace)
    ids, start, end = replay.op_times()
    for row in table.itertuples():
        assert start[ids[row.op_id]] == row.start and end[ids[row.op_id]] == row.end
    with pytest.raises(Exception, match="not an op"):
        steady_state.window(table, "d0", "nope")
    assert steady_state.window(table, "d0", "d2") == pytest.approx(table.set_index("op_id").loc["d2", "start"])


def test_kary_tree_is_a_registered_all_reduce() -> None:
    built = build_schedule("all_reduce", "kary_tree", 8, 1024.0, fanout=3)
    direct = kary_tree_all_reduce(8, 1024.0, fanout=3)
    assert [s.src.tolist() for s in built.steps] == [s.src.tolist() for s in direct.steps]
    assert len(built.steps) == 2 * tree_depth(8, 3) == 4
    assert len(build_schedule("all_reduce", "kary_tree", 8, 1024.0, fanout=2).steps) == 2 * 3
