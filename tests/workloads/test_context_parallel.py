"""Context parallelism: ring attention passes KV blocks between CP peers while the attention steps compute."""

from __future__ import annotations

from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads import training_trace, validate_trace
from commsim.workloads.replay import replay


def by_id(trace, stage=0):
    return {op.id: op for op in trace.programs[stage].ops}


def test_ring_attention_by_hand(tiny):
    """tiny over CP 2: each rank holds 2 of the 4 tokens; its queries attend to all 4 keys in 2 steps."""
    trace = training_trace(tiny, cp=2, num_micro_batches=1)
    validate_trace(trace)
    assert trace.communicators["cp"] == [[0, 1]] and trace.communicators["dp"] == [[0, 1]]
    s = by_id(trace)
    # one step of 2 queries × 2 keys per head: 2 heads × (2·2·2·4 + 2·2·2·4) + 5 × 2·2·2 scores = 168 FLOP
    assert [s[f"f0.0.attn{i}"].flops for i in range(2)] == [168, 168]
    assert s["f0.0.qkv"].flops == 2 * 2 * 24 * 8                    # GEMMs see 2 tokens
    # cp - 1 = 1 transfer: this rank's K and V (2 tokens × 2 × 8 wide × 2 B) to the next peer
    send, recv = s["f0.0.attn.kv_send0"], s["f0.0.attn.kv_recv0"]
    assert (send.peer, send.bytes, send.stream, send.deps) == ("cp:+1%", 64, "cp_send", ["f0.0.qkv"])
    assert (recv.peer, recv.bytes, recv.stream) == ("cp:-1%", 64, "cp_recv")
    assert send.tags["group"] == recv.tags["group"] == "cp"
    # the first step needs only the local block; the second waits for the received one
    assert s["f0.0.attn0"].deps == [] and s["f0.0.attn1"].deps == ["f0.0.attn.kv_recv0"]
    # backward: the KV block travels with its gradient accumulator (twice the bytes)
    assert s["b0.0.attn_bwd.kv_send0"].bytes == 128 and s["b0.0.attn_bwd1"].deps == ["b0.0.attn_bwd.kv_recv0"]
    # flash backward: 2.5 × the score and context GEMMs (128 FLOP each) + 8 FLOP per score (2 heads × 2 × 4)
    assert sum(s[f"b0.0.attn_bwd{i}"].flops for i in range(2)) == 2.5 * (128 + 128) + 8 * 2 * 2 * 4
    # gradients are reduced over data × context parallel ranks
    assert s["dp.bucket0"].group == "dp"
    assert trace.metadata["tokens_per_step"] == 4


def test_ring_of_four_overlaps_transfers_with_attention(tiny):
    spec = tiny.model_copy(update={"max_seq_len": 64})
    trace = training_trace(spec, cp=4, seq_len=64, num_micro_batches=1, track_memory=False)
    s = by_id(trace)
    assert [op.id for op in trace.programs[0].ops if op.kind == "send" and op.tags["phase"] == "fwd"
            and op.tags["layer"] == 0] == ["f0.0.attn.kv_send0", "f0.0.attn.kv_send1", "f0.0.attn.kv_send2"]
    assert s["f0.0.attn.kv_send1"].deps == ["f0.0.attn.kv_recv0"]      # pass on the block just received
    out = replay(Simulation(load_topology("switch:4,100GB/s,1us")), trace)
    ops = out.ops.set_index("op_id")
    # the second block is on the wire while the first attention step computes
    assert ops.loc["f0.0.attn.kv_send1", "start"] < ops.loc["f0.0.attn1", "end"]
    assert ops.loc["f0.0.attn.kv_send0", "start"] < ops.loc["f0.0.attn0", "end"]
