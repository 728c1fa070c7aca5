"""ZeRO stages 1-3 (and Megatron's distributed optimizer): the collectives, their bytes, and what each rank holds."""

from __future__ import annotations

import pytest

from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads import dump_trace, parameter_count, training_trace, validate_trace
from commsim.workloads.replay import replay

P = 1920          # tiny's parameters: embeddings 160, 2 layers of 872, final norm 16 (see test_models)
LAYER = 872


def collectives(trace, stage=0):
    return [op for op in trace.programs[stage].ops if op.kind == "collective"]


def by_id(trace, stage=0):
    return {op.id: op for op in trace.programs[stage].ops}


def test_tiny_parameter_count(tiny):
    assert parameter_count(tiny) == P == 160 + 2 * LAYER + 16


def test_zero1_by_hand(tiny):
    trace = training_trace(tiny, dp=2, zero_stage=1, num_micro_batches=2, bucket_size="1 GiB")
    validate_trace(trace)
    ops = [(op.id, op.op, op.bytes, op.group, op.stream) for op in collectives(trace)]
    # fp32 gradients reduce-scattered once (full input 4·P), bf16 parameters all-gathered after the step (full output 2·P)
    assert ops == [("dp.bucket0", "reduce_scatter", 4 * P, "dp", "dp_comm"),
                   ("dp.params0", "all_gather", 2 * P, "dp", "dp_comm")]
    s = by_id(trace)
    assert all(dep.startswith("b1.") for dep in s["dp.bucket0"].deps)          # only the last micro-batch
    assert s["optimizer"].deps == ["dp.bucket0"] and s["dp.params0"].deps == ["optimizer"]
    assert s["optimizer"].flops == 12 * P / 2                                   # Adam on this rank's half
    assert s["dp.params0"].tags == {"phase": "param_sync", "bucket": 0, "group": "dp"}
    # each rank holds all weights and gradients, half the optimizer state
    assert (s["weights"].bytes, s["grads"].bytes, s["optimizer_state"].bytes) == (2 * P, 4 * P, 12 * P / 2)


def test_distributed_optimizer_is_zero1(tiny):
    a = dump_trace(training_trace(tiny, dp=2, zero_stage=1, num_micro_batches=2))["programs"]
    b = dump_trace(training_trace(tiny, dp=2, distributed_optimizer=True, num_micro_batches=2))["programs"]
    assert a == b


@pytest.mark.parametrize(("zero", "per_rank"), [(0, 2 * 3 / 4 * 4 * P), (1, 3 / 4 * (4 * P + 2 * P))])
def test_zero1_moves_exactly_its_collectives_bytes(tiny, zero, per_rank):
    """Ring collectives over 4 ranks: an all-reduce sends 2·(N-1)/N of the buffer per rank; ZeRO-1's
    reduce-scatter (N-1)/N of the fp32 gradients and its all-gather (N-1)/N of the bf16 parameters."""
    trace = training_trace(tiny, dp=4, zero_stage=zero, num_micro_batches=2, bucket_size="1 GiB")
    out = replay(Simulation(load_topology("switch:4,100GB/s,1us")), trace)
    sent, unit = out.result.metrics["bytes_sent"]
    assert unit == "B" and sent == pytest.approx(4 * per_rank, rel=1e-12)


def test_zero2_reduces_every_micro_batch(tiny):
    trace = training_trace(tiny, dp=2, zero_stage=2, num_micro_batches=3, bucket_size="1 GiB")
    validate_trace(trace)
    ops = [(op.id, op.op, op.bytes) for op in collectives(trace)]
    assert ops == [("dp.bucket0", "reduce_scatter", 4 * P), ("dp.bucket1", "reduce_scatter", 4 * P),
                   ("dp.bucket2", "reduce_scatter", 4 * P), ("dp.params0", "all_gather", 2 * P)]
    s = by_id(trace)
    assert all(dep.startswith("b0.") for dep in s["dp.bucket0"].deps)
    assert (s["weights"].bytes, s["grads"].bytes, s["optimizer_state"].bytes) == (2 * P, 4 * P / 2, 12 * P / 2)


def test_zero3_gathers_each_layer_before_forward_and_backward(tiny):
    trace = training_trace(tiny, dp=2, zero_stage=3, num_micro_batches=1, bucket_size="1 GiB")
    validate_trace(trace)
    s = by_id(trace)
    gathers = [(op.id, op.bytes, op.deps) for op in collectives(trace) if op.op == "all_gather"]
    # the root unit (embeddings 160 + final norm 16) once; each layer (872 bf16 parameters) before its forward and
    # before its backward, the next one prefetched once the current layer's first kernel has run
    assert gathers == [("dp.gather_root", 2 * 176, []),
                       ("f0.0.gather_dp", 2 * LAYER, []), ("f0.1.gather_dp", 2 * LAYER, ["f0.0.norm1"]),
                       ("b0.1.gather_dp", 2 * LAYER, []), ("b0.0.gather_dp", 2 * LAYER, ["b0.1.fc2_dgrad"])]
    assert s["f0.embed"].deps == ["dp.gather_root"]
    assert s["f0.1.norm1"].deps == ["f0.1.gather_dp"]
    assert s["b0.0.fc2_dgrad"].deps == ["b0.0.gather_dp"]
    # gradients reduce-scattered layer by layer (the final norm's joins the last layer, the embedding's its own)
    scatters = [(op.id, op.bytes) for op in collectives(trace) if op.op == "reduce_scatter"]
    assert scatters == [("dp.bucket0", 4 * (16 + LAYER)), ("dp.bucket1", 4 * LAYER), ("dp.bucket2", 4 * 160)]
    assert not [op for op in collectives(trace) if op.tags.get("phase") == "param_sync" and op.id != "dp.gather_root"]
    # blocks sharded, root whole; the gathered layers and the unsharded layer gradients are transient buffers
    assert s["weights"].bytes == 2 * (176 + 2 * LAYER / 2) and s["grads"].bytes == 4 * (176 + 2 * LAYER / 2)
    assert s["optimizer_state"].bytes == 12 * P / 2
    assert (s["f0.0.walloc"].bytes, s["b0.1.galloc"].bytes) == (2 * LAYER, 4 * LAYER)
    assert s["b0.1.gfree"].deps == ["dp.bucket0"] and s["b0.1.gfree"].stream == "dp_comm"


def test_zero3_replays_on_a_pipeline(tiny):
    trace = training_trace(tiny, dp=2, pp=2, zero_stage=3, num_micro_batches=2)
    out = replay(Simulation(load_topology("switch:4,100GB/s,1us")), trace)
    assert out.step_time > 0
