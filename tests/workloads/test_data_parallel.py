"""The shared data-parallel training workload: layouts, the per-layer trace by hand, and times read back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.errors import ConfigError
from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads.data_parallel import (
    LayerLayout,
    Work,
    catalog_layout,
    forward_id,
    layout_from_buckets,
    step_times,
    sync_id,
    training_trace,
)
from commsim.workloads.replay import Replay
from commsim.workloads.trace import CollectiveOp, DelayOp

DP = {"dp": [[0, 1]]}


def two_layers(**fields) -> LayerLayout:
    """Forward 1 s per layer, backward 2 s per layer; layer 0 syncs 10 elements, layer 1 20."""
    return LayerLayout(model="two", layer_params=np.array([10.0, 20.0]), forward=Work.timed("fwd", [1.0, 1.0]),
                       backward=(Work.timed("bwd", [2.0, 2.0]),), **fields)


def all_reduce(layout: LayerLayout, every: int = 1):
    """Each layer's fp32 gradient all-reduced, in the steps that are multiples of ``every``."""
    def sync(step: int, layer: int, after: str, rank: int) -> list:
        if step % every:
            return []
        return [CollectiveOp(id=f"s{step}.ar{layer}", stream=f"dp{layer}", deps=[after], op="all_reduce",
                             bytes=4.0 * layout.layer_params[layer], group="dp", algorithm="ring")]
    return sync


def fixed(seconds: float):
    """Each layer's sync a fixed-duration op on a stream of its own (exact times by hand)."""
    def sync(step: int, layer: int, after: str, rank: int) -> list:
        return [DelayOp(id=f"s{step}.net{layer}", stream=f"net{layer}", deps=[after], seconds=seconds)]
    return sync


def ops_of(trace, program: int = 0) -> dict:
    return {op.id: op for op in trace.programs[program].ops}


# ------------------------------------------------------------------ the trace by hand
def test_two_layers_per_layer_waits_ops_bytes_and_deps() -> None:
    lay = two_layers()
    trace = training_trace(lay, all_reduce(lay), steps=2, ranks=2, communicators=DP, overlap=1, joins=False)
    ops = ops_of(trace)
    assert [op.id for op in trace.programs[0].ops] == [
        "s0.fwd0", "s0.fwd1", "s0.bwd1", "s0.ar1", "s0.bwd0", "s0.ar0",
        "s1.fwd0", "s1.fwd1", "s1.bwd1", "s1.ar1", "s1.bwd0", "s1.ar0"]
    assert [ops[f"s0.ar{layer}"].bytes for layer in (0, 1)] == [40.0, 80.0]
    assert ops["s0.ar1"].deps == ["s0.bwd1"] and ops["s0.ar0"].deps == ["s0.bwd0"]
    # overlap 1: step 0's syncs are due before step 2, past this trace: nothing waits for them
    assert all(not op.deps for op in trace.programs[0].ops if op.kind == "delay")
    assert [ops[f"s{s}.fwd{layer}"].seconds for s in (0, 1) for layer in (0, 1)] == [1.0] * 4
    assert ops["s1.bwd0"].seconds == 2.0 and ops["s0.fwd0"].tags == {"step": 0}
    three = ops_of(training_trace(lay, all_reduce(lay), steps=3, ranks=2, communicators=DP, overlap=1, joins=False))
    assert three["s2.fwd0"].deps == ["s0.ar0"] and three["s2.fwd1"].deps == ["s0.ar1"]
    assert three["s1.fwd0"].deps == []


def test_step_waits_through_a_join_with_a_fused_forward_and_a_marker() -> None:
    lay = layout_from_buckets([[(4, 4)], [(8,)]], backward_flops=[1e9, 2e9], backward_bytes=[1e6, 2e6],
                              forward_flops=3e9, forward_bytes=5e6)
    trace = training_trace(lay, all_reduce(lay), steps=2, ranks=2, communicators=DP, wait="step", fused_forward=True,
                           marker=True, tags={"queue": "compute"})
    ops = ops_of(trace)
    assert [op.id for op in trace.programs[0].ops][:7] == ["s0.fwd", "s0.bwd1", "s0.ar1", "s0.bwd0", "s0.ar0",
                                                          "s0.sync", "s1.fwd"]
    forward = ops["s0.fwd"]
    assert (forward.kind, forward.flops, forward.bytes, forward.tags) == ("compute", 3e9, 5e6,
                                                                           {"queue": "compute", "step": 0})
    assert (ops["s0.bwd1"].flops, ops["s0.bwd1"].bytes, ops["s0.bwd1"].name) == (2e9, 2e6, "step 0 backward block 1")
    assert ops["s0.ar0"].bytes == 64.0 and ops["s0.ar1"].bytes == 32.0
    assert ops["s0.sync"].deps == ["s0.ar1", "s0.ar0"] and ops["s0.sync"].seconds == 0.0
    assert ops["s1.fwd"].deps == ["s0.sync"] and ops["s2.fwd"].deps == ["s1.sync"]
    marker = ops["s2.fwd"]  # when step 2 could start: a kernel of no work
    assert (marker.kind, marker.flops, marker.bytes) == ("compute", 0.0, 0.0)
    assert [op.id for op in trace.programs[0].ops][-1] == forward_id(2) == "s2.fwd"


def test_after_backward_release_quiet_steps_and_release_before() -> None:
    lay = two_layers(step_time=6.0)
    after = ops_of(training_trace(lay, all_reduce(lay), steps=1, ranks=2, communicators=DP, release="after_backward"))
    assert after["s0.ar1"].deps == ["s0.bwd0"] and after["s0.ar0"].deps == ["s0.bwd0"]
    synced_every_2 = all_reduce(lay, every=2)
    trace = training_trace(lay, synced_every_2, steps=4, ranks=2, communicators=DP, release_before=1,
                           quiet=lambda s: s in (2, 3), joins=False)
    ids = [op.id for op in trace.programs[0].ops]
    assert [i for i in ids if ".ar" in i] == ["s0.ar1", "s0.ar0"]  # step 2 would sync, but is past release_before
    assert "s2.quiet" in ids and "s2.fwd0" not in ids and ops_of(trace)["s3.quiet"].seconds == 6.0
    assert ops_of(trace)["s1.fwd0"].deps == ["s0.ar0"]


def test_each_program_writes_its_own_syncs_from_its_first_rank() -> None:
    lay = two_layers()
    seen: list[int] = []

    def sync(step: int, layer: int, after: str, rank: int) -> list:
        seen.append(rank)
        return [DelayOp(id=f"s{step}.k{layer}", stream=f"k{layer}", deps=[after], seconds=float(rank == 0))]

    trace = training_trace(lay, sync, steps=1, ranks=3, communicators={}, programs=[("server", [0]), ("rest", [1, 2])])
    assert [p.name for p in trace.programs] == ["server", "rest"] and sorted(set(seen)) == [0, 1]
    assert ops_of(trace, 0)["s0.k0"].seconds == 1.0 and ops_of(trace, 1)["s0.k0"].seconds == 0.0


@settings(max_examples=30, deadline=None)
@given(layers=st.integers(1, 5), steps=st.integers(1, 6), overlap=st.integers(0, 3), every=st.integers(1, 3))
def test_every_sync_is_waited_for_once_by_its_layer_overlap_plus_one_steps_later(layers: int, steps: int,
                                                                                 overlap: int, every: int) -> None:
    lay = LayerLayout(model="n", layer_params=np.ones(layers), forward=Work.timed("fwd", np.ones(layers)),
                      backward=(Work.timed("bwd", np.ones(layers)),))
    trace = training_trace(lay, all_reduce(lay, every), steps=steps, ranks=2, communicators=DP, overlap=overlap,
                           joins=False)
    ops = trace.programs[0].ops
    syncs = [op for op in ops if op.kind == "collective"]
    assert len(syncs) == layers * len(range(0, steps, every))
    assert len(ops) == 2 * layers * steps + len(syncs)  # a forward and a backward op per layer and step
    for op in syncs:
        step, layer = int(op.id.split(".")[0][1:]), int(op.id.split("ar")[1])
        waiting = [o.id for o in ops if op.id in o.deps]
        due = step + 1 + overlap
        assert waiting == ([forward_id(due, layer)] if due < steps else [])


# ------------------------------------------------------------------ times read back
@pytest.mark.parametrize(("wait", "start_1"), [("layer", 9.0), ("step", 9.0)])
def test_step_times_of_a_replay_by_hand(wait: str, start_1: float) -> None:
    """fwd 0-1, 1-2; bwd1 2-4 releases net1 4-7; bwd0 4-6 releases net0 6-9: step 1 starts at 9 s."""
    lay = two_layers()
    trace = training_trace(lay, fixed(3.0), steps=2, ranks=2, communicators=DP, wait=wait, marker=True)
    replay = Replay(Simulation(load_topology("switch:2,50GB/s,1us")), trace, record="none")
    replay.run_to_end()
    times = step_times(replay, lay, 2)
    assert times.starts.tolist() == [0.0, start_1, 18.0]
    assert times.compute_end.tolist() == [6.0, 15.0]
    assert times.settle.tolist() == [9.0, 9.0]
    assert times.of(sync_id(0)) == (9.0, 9.0) and times.of("s0.net1") == (4.0, 7.0)
    two = step_times(replay, lay, 2, every=2)  # one period of two steps: its last settle, from its start
    assert two.starts.tolist() == [0.0, 18.0] and two.settle.tolist() == [18.0]


# ------------------------------------------------------------------ layouts and bad input
def test_catalog_layout_puts_embedding_and_head_on_the_end_layers() -> None:
    lay = catalog_layout("llama-2-7b", tokens_per_rank=4096)
    assert lay.layers == 32 and lay.parameters == 6738415616 and lay.label == "llama-2-7b"
    assert lay.tensors[0][0] == ("embed.weight", (32000, 4096)) and lay.tensors[-1][-1][0].endswith("weight")
    fwd, bwd = lay.forward.flops, lay.backward[0].flops
    assert fwd[-1] > fwd[0] == fwd[1] and np.allclose(bwd, 2.0 * fwd)  # the head on the last block
    assert lay.shapes()[0] == (32000, 4096)
    with pytest.raises(ConfigError, match="whole number of sequences"):
        catalog_layout("llama-2-7b", tokens_per_rank=1000, seq_len=4096)


def test_bad_input_is_refused_with_field_rule_and_fix() -> None:
    lay = two_layers()
    with pytest.raises(ConfigError, match=r"wait.*Fix"):
        training_trace(lay, fixed(1.0), steps=1, ranks=2, communicators=DP, wait="never")
    with pytest.raises(ConfigError, match=r"release.*Fix"):
        training_trace(lay, fixed(1.0), steps=1, ranks=2, communicators=DP, release="early")
    with pytest.raises(ConfigError, match="fixed-duration"):
        training_trace(lay, fixed(1.0), steps=1, ranks=2, communicators=DP, quiet=lambda s: True)
    with pytest.raises(ConfigError, match="one value per layer"):
        LayerLayout.of_tensors("x", [[("w", (2, 2))]], forward=Work.timed("fwd", [1.0, 2.0]),
                               backward=(Work.timed("bwd", [1.0]),))
    with pytest.raises(ConfigError, match="one backward kernel per bucket"):
        layout_from_buckets([[(2,)], [(3,)]], backward_flops=[1.0])
