"""Mixture-of-experts layers with expert parallelism: router, all-to-all sizes, expert GEMMs, expert gradients."""

from __future__ import annotations

import pytest

from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads import training_trace, validate_trace
from commsim.workloads.replay import replay

EXPERT = 8 * 32 + 32 + 32 * 8 + 8      # one tiny expert: FC1 and FC2 with biases


def by_id(trace, stage=0):
    return {op.id: op for op in trace.programs[stage].ops}


def test_moe_layer_by_hand(tiny):
    """tiny (4 tokens, hidden 8), 4 experts, top-2, capacity factor 1, EP 2 inside DP 4."""
    trace = training_trace(tiny, dp=4, ep=2, num_experts=4, top_k=2, num_micro_batches=1, bucket_size="1 GiB")
    validate_trace(trace)
    assert trace.communicators["ep"] == [[0, 1], [2, 3]] and trace.communicators["edp"] == [[0, 2], [1, 3]]
    s = by_id(trace)
    layer = [op.id.split(".", 2)[2] for op in trace.programs[0].ops if op.id.startswith("f0.0.")]
    assert layer == ["norm1", "qkv", "attn", "out_proj", "norm2", "router", "permute", "dispatch", "expert_fc1",
                     "expert_act", "expert_fc2", "combine", "unpermute"]
    # all-to-all send buffer: tokens × hidden × top-k × bytes = 4 × 8 × 2 × 2
    for op_id in ("f0.0.dispatch", "f0.0.combine", "b0.0.combine", "b0.0.dispatch"):
        assert (s[op_id].op, s[op_id].bytes, s[op_id].group, s[op_id].stream) == ("all_to_all", 4 * 8 * 2 * 2, "ep",
                                                                                  "ep_comm")
    # router: 2·4·8·4 GEMM + 5 FLOP per logit; experts: 2 local experts, 4 rows each (EP 2 × capacity 2),
    # so 8 rows through FC1 8→32 and FC2 32→8
    assert s["f0.0.router"].flops == 2 * 4 * 8 * 4 + 5 * 4 * 4
    assert s["f0.0.expert_fc1"].flops == s["f0.0.expert_fc2"].flops == 2 * 8 * 8 * 32
    assert s["b0.0.expert_fc1_dgrad"].flops == s["b0.0.expert_fc1_wgrad"].flops == 2 * 8 * 8 * 32
    # the dispatch waits for the permutation, the experts for the dispatch, the un-permutation for the combine
    assert s["f0.0.dispatch"].deps == ["f0.0.permute"] and s["f0.0.expert_fc1"].deps == ["f0.0.dispatch"]
    assert s["f0.0.combine"].deps == ["f0.0.expert_fc2"] and s["f0.0.unpermute"].deps == ["f0.0.combine"]
    assert s["b0.0.expert_fc2_dgrad"].deps == ["b0.0.combine"] and s["b0.0.permute_bwd"].deps == ["b0.0.dispatch"]
    # gradients: dense ones (no dense FFN, plus a 8×4 router per layer) over dp, expert ones over edp
    dense = 1920 - 2 * EXPERT + 2 * 8 * 4
    assert (s["dp.bucket0"].bytes, s["dp.bucket0"].group) == (4 * dense, "dp")
    assert (s["edp.bucket0"].bytes, s["edp.bucket0"].group) == (4 * 2 * 2 * EXPERT, "edp")
    assert trace.metadata["parameters"] == 1920 + 2 * (3 * EXPERT + 8 * 4)
    assert trace.metadata["active_parameters"] == 1920 + 2 * (EXPERT + 8 * 4)


@pytest.mark.parametrize(("top_k", "capacity_factor", "rows"), [(1, 1.0, 4), (2, 1.0, 8), (2, 1.5, 12), (2, 1.1, 12)])
def test_all_to_all_bytes_follow_tokens_top_k_and_capacity(tiny, top_k, capacity_factor, rows):
    """Rows = experts × ceil(capacity_factor × tokens × top_k / experts): tokens × top-k at capacity factor 1."""
    trace = training_trace(tiny, dp=2, ep=2, num_experts=4, top_k=top_k, capacity_factor=capacity_factor,
                           num_micro_batches=1)
    s = by_id(trace)
    assert s["f0.0.dispatch"].bytes == rows * 8 * 2
    assert s["f0.0.expert_fc1"].flops == 2 * rows * 8 * 32


def test_moe_under_tensor_parallelism_as_megatron(tiny):
    """TP 2 with sequence parallelism: each TP rank routes its own 2 tokens; the TP ranks all-gather the rows they
    receive, run their half of every local expert's FFN width, and reduce-scatter the outputs."""
    trace = training_trace(tiny, tp=2, sequence_parallel=True, dp=2, ep=2, num_experts=4, top_k=2,
                           num_micro_batches=1)
    validate_trace(trace)
    s = by_id(trace)
    layer = [op.id.split(".", 2)[2] for op in trace.programs[0].ops if op.id.startswith("f0.0.")]
    assert layer == ["norm1", "ag1", "qkv", "attn", "out_proj", "tp1", "norm2", "router", "permute", "dispatch",
                     "expert_ag", "expert_fc1", "expert_act", "expert_fc2", "expert_rs", "combine", "unpermute"]
    assert s["f0.0.dispatch"].bytes == 2 * 8 * 2 * 2                       # 2 tokens × hidden × top-2 × bf16
    assert (s["f0.0.expert_ag"].op, s["f0.0.expert_ag"].bytes, s["f0.0.expert_ag"].group) == ("all_gather", 128, "tp")
    assert s["f0.0.expert_fc1"].flops == 2 * 8 * 8 * 16                   # 8 rows, FFN width 32 / TP 2
    assert s["f0.0.expert_fc1"].deps == ["f0.0.expert_ag"] and s["f0.0.expert_ag"].deps == ["f0.0.dispatch", "f0.0.permute"]
    backward = [op.id.split(".", 2)[2] for op in trace.programs[0].ops if op.id.startswith("b0.0.")]
    assert backward[:9] == ["unpermute_bwd", "combine", "expert_rs", "expert_fc2_dgrad", "expert_fc2_wgrad",
                            "expert_act_bwd", "expert_fc1_dgrad", "expert_fc1_wgrad", "expert_ag"]
    assert (s["b0.0.expert_rs"].op, s["b0.0.expert_ag"].op) == ("all_gather", "reduce_scatter")


def test_moe_layer_frequency(tiny):
    spec = tiny.model_copy(update={"layers": 4})
    trace = training_trace(spec, num_experts=2, top_k=1, moe_layer_frequency=2, num_micro_batches=1)
    moe = sorted({op.tags["layer"] for op in trace.programs[0].ops if op.id.endswith(".router")})
    assert moe == [0, 2]


def test_moe_replays(tiny):
    trace = training_trace(tiny, dp=4, ep=2, num_experts=4, tp=2, sequence_parallel=True, zero_stage=1,
                           num_micro_batches=2)
    out = replay(Simulation(load_topology("switch:8,100GB/s,1us")), trace)
    a2a = out.ops[out.ops.op_id.str.endswith(("dispatch", "combine"))]
    assert len(a2a) == 2 * 2 * 4 and (a2a.end > a2a.start).all()
