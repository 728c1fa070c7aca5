"""``Replay(fast=True)`` equals the full replay where its shortcuts apply, and says when they do not.

The fast path skips the fluid kernel for compute on devices nothing else uses and
for collectives on links no other traffic can use (``commsim.workloads._shortcuts``);
both are equalities, so every time must match the full replay to 1e-9 relative.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from replay_helpers import R, close

from commsim.collectives import CollectiveConfig
from commsim.network.generators import rail_optimized
from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads import training_trace
from commsim.workloads.models import TransformerSpec
from commsim.workloads.replay import Replay
from commsim.workloads.trace import CollectiveOp, ComputeOp, Program, Trace

TINY = TransformerSpec(name="tiny", layers=4, hidden=512, heads=8, ffn_hidden=2048, vocab=8000, max_seq_len=512)


def two_servers() -> Simulation:
    return Simulation(rail_optimized(servers=2, gpus_per_server=8, device="h100_sxm", nvlink_bandwidth="450 GB/s",
                                     port_bandwidth="400 Gbps", servers_per_leaf=2, spines=1), record_usage=False)


def both(trace: Trace, make=two_servers, **options):
    """The full and the fast replay of ``trace`` on fresh simulations: (full result, fast result, fast replay)."""
    full = Replay(make(), trace, **options).run()
    fast_replay = Replay(make(), trace, fast=True, **options)
    return full, fast_replay.run(), fast_replay


def assert_same(full, fast) -> None:
    assert close(fast.step_time, full.step_time)
    for column in ("end", "compute_busy", "comm_busy", "exposed_comm"):
        for a, b in zip(full.cohorts[column], fast.cohorts[column], strict=True):
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * full.step_time), column
    np.testing.assert_allclose(fast.ops["start"], full.ops["start"], rtol=1e-9, atol=1e-9 * full.step_time)
    np.testing.assert_allclose(fast.ops["end"], full.ops["end"], rtol=1e-9, atol=1e-9 * full.step_time)


@pytest.mark.parametrize(("tp", "pp", "dp", "mode"), [
    (8, 2, 1, "flows"),      # TP on its own NVSwitch links: both shortcuts
    (8, 2, 1, "steps"),
    (2, 4, 2, "flows"),      # TP shares GPU links with pipeline sends: compute shortcut only
    (1, 2, 8, "steps"),      # DP groups on the rails
    (4, 2, 2, "flows"),
])
def test_fast_equals_full_on_generated_training_steps(tp, pp, dp, mode):
    trace = training_trace(TINY, tp=tp, pp=pp, dp=dp, sequence_parallel=tp > 1, num_micro_batches=3)
    full, fast, _ = both(trace, collective=CollectiveConfig(mode=mode), record="none")
    assert_same(full, fast)


def test_tensor_parallel_groups_on_their_own_server_are_remembered():
    trace = training_trace(TINY, tp=8, pp=2, dp=1, sequence_parallel=True, num_micro_batches=2)
    _, _, fast = both(trace, record="none")
    assert fast.shortcuts.compute
    assert fast.shortcuts.private == {tuple(range(8)), tuple(range(8, 16))}
    assert fast.notes == []


def test_groups_sharing_links_with_pipeline_sends_run_in_the_kernel():
    # tp 2 x pp 4 x dp 2 on 16 GPUs: stages 0 and 1 share server 0, so their sends use the GPUs' NVLink ports
    trace = training_trace(TINY, tp=2, pp=4, dp=2, num_micro_batches=2)
    _, _, fast = both(trace, record="none")
    assert fast.shortcuts.private == frozenset()
    assert any("no communicator group has links of its own" in note for note in fast.notes)


def test_recorded_spans_match_the_full_replay():
    trace = training_trace(TINY, tp=8, pp=2, dp=1, sequence_parallel=True, num_micro_batches=2)
    full, fast, _ = both(trace, record="all")
    a = full.result.spans.sort_values(["device", "op_id"]).reset_index(drop=True)
    b = fast.result.spans.sort_values(["device", "op_id"]).reset_index(drop=True)
    assert list(a["op_id"]) == list(b["op_id"])
    np.testing.assert_allclose(b["end"], a["end"], rtol=1e-9)


def two_compute_streams() -> Trace:
    return Trace(ranks=2, communicators={"world": [[0, 1]]}, programs=[Program(name="p", ranks="0:2", ops=[
        ComputeOp(id="a", flops=R * 1e-3, bytes=1e9),
        ComputeOp(id="b", stream="side", flops=R * 1e-3),
        CollectiveOp(id="ar", op="all_reduce", bytes=64e6, group="world", algorithm="ring", deps=["a", "b"]),
    ])])


def switch2() -> Simulation:
    return Simulation(load_topology("switch:2,50GB/s,1us"))


def test_compute_on_two_streams_keeps_the_kernel_and_says_why():
    full, fast, replay = both(two_compute_streams(), make=switch2)
    assert not replay.shortcuts.compute
    assert any("computes on several streams" in note for note in replay.notes)
    # the two kernels share the device: 1 ms + 1 ms of compute take 2 ms together, as in the full replay
    assert close(fast.step_time, full.step_time)


def test_reductions_on_devices_keep_compute_in_the_kernel():
    trace = training_trace(TINY, tp=8, pp=1, dp=2, num_micro_batches=1)
    full, fast, replay = both(trace, collective=CollectiveConfig(reduction=True), record="none")
    assert not replay.shortcuts.compute
    assert any("reductions" in note for note in replay.notes)
    assert_same(full, fast)


def test_scheduled_faults_turn_both_shortcuts_off():
    def faulty() -> Simulation:
        sim = two_servers()
        sim.schedule_faults([{"kind": "straggler", "device": sim.topology.devices[0], "slowdown": 2.0, "at": 1e-4}])
        return sim

    trace = training_trace(TINY, tp=8, pp=2, dp=1, sequence_parallel=True, num_micro_batches=2)
    full, fast, replay = both(trace, make=faulty, record="none")
    assert not replay.shortcuts.compute and replay.shortcuts.private == frozenset()
    assert_same(full, fast)


def test_a_straggler_set_before_the_run_is_timed_at_its_capacity():
    def slow() -> Simulation:
        sim = switch2()
        sim.device("gpu1").set_slowdown(2.0)
        return sim

    trace = Trace(ranks=2, communicators={"world": [[0, 1]]}, programs=[Program(name="p", ranks="0:2", ops=[
        ComputeOp(id="a", flops=R * 1e-3),
        CollectiveOp(id="ar", op="all_reduce", bytes=1e6, group="world", algorithm="ring", deps=["a"]),
    ])])
    full, fast, _ = both(trace, make=slow)
    assert close(fast.step_time, full.step_time)
    assert fast.step_time > 2e-3      # the slowed device's 2 ms of compute comes first


def test_fast_equals_full_with_the_calibrated_compute_model():
    # GEMM shapes, kernel kinds and launches set the times here, not the roofline: the shortcut must use them too
    path = Path(__file__).resolve().parents[2] / "topologies" / "dgx_a100.yaml"

    def dgx() -> Simulation:
        return Simulation(load_topology(path, overrides={"servers": 2}), record_usage=False)

    trace = training_trace(TINY, tp=8, pp=2, dp=1, sequence_parallel=True, recompute="full", num_micro_batches=3)
    full, fast, replay = both(trace, make=dgx, record="none")
    assert replay.shortcuts is not None and replay.shortcuts.compute
    assert_same(full, fast)
    roofline, _, _ = both(trace, record="none")
    assert not close(roofline.step_time, full.step_time)      # the model changed the times it must reproduce
