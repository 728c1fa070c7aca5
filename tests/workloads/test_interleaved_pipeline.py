"""Interleaved 1F1B (virtual pipeline stages): Megatron's order, chunk layout, wrap-around messages, smaller bubble."""

from __future__ import annotations

import pytest

from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads import (
    TransformerSpec,
    interleaved_one_f_one_b,
    one_f_one_b,
    pipeline_schedule,
    training_trace,
    validate_trace,
)
from commsim.workloads.replay import replay


def test_megatron_order_by_hand():
    """pp 2, v 2, 4 micro-batches. Stage 0 warms up 2·(2-0-1) + (2-1)·2 = 4 steps; forward step k runs micro-batch
    (k // 4)·2 + k % 2 on chunk (k % 4) // 2, backward step k the same micro-batch on chunk 1 - (k % 4) // 2."""
    F, B = "F", "B"
    assert interleaved_one_f_one_b(0, 2, 4, 2) == [
        (F, 0, 0), (F, 1, 0), (F, 0, 1), (F, 1, 1),
        (F, 2, 0), (B, 0, 1), (F, 3, 0), (B, 1, 1), (F, 2, 1), (B, 0, 0), (F, 3, 1), (B, 1, 0),
        (B, 2, 1), (B, 3, 1), (B, 2, 0), (B, 3, 0)]
    # stage 1 warms up (2-1)·2 = 2 steps
    assert interleaved_one_f_one_b(1, 2, 4, 2)[:4] == [(F, 0, 0), (F, 1, 0), (F, 0, 1), (B, 0, 1)]
    # micro-batches == stages: every forward first (Megatron's special case)
    assert [p for p, _, _ in interleaved_one_f_one_b(1, 2, 2, 2)] == [F] * 4 + [B] * 4


@pytest.mark.parametrize(("stages", "m", "v"), [(2, 4, 2), (4, 8, 2), (4, 12, 3), (3, 6, 4)])
def test_every_pass_once_and_backward_after_forward(stages, m, v):
    for stage in range(stages):
        order = interleaved_one_f_one_b(stage, stages, m, v)
        expected = {(p, j, c) for p in "FB" for j in range(m) for c in range(v)}
        assert sorted(order) == sorted(expected)
        for j in range(m):
            for c in range(v):
                assert order.index(("F", j, c)) < order.index(("B", j, c))


def test_one_chunk_is_plain_one_f_one_b():
    assert pipeline_schedule(1, 4, 6) == [(p, j, 0) for p, j in one_f_one_b(1, 4, 6)]


def test_chunks_hold_layers_round_robin_and_messages_wrap(tiny):
    spec = tiny.model_copy(update={"layers": 4})
    trace = training_trace(spec, pp=2, virtual_pipeline_stages=2, num_micro_batches=2)
    validate_trace(trace)
    layers = [{(op.tags["chunk"], op.tags["layer"]) for op in p.ops if "layer" in op.tags} for p in trace.programs]
    # virtual stage c·pp + s holds layer c·pp + s (one layer per chunk)
    assert layers == [{(0, 0), (1, 2)}, {(0, 1), (1, 3)}]
    s0 = {op.id: op for op in trace.programs[0].ops}
    s1 = {op.id: op for op in trace.programs[1].ops}
    # the last stage's chunk 0 sends its activation to the first stage's chunk 1, and gradients come back
    assert (s1["f0c0.send"].peer, s0["f0c1.recv"].peer) == ("pp:+1%", "pp:-1%")
    assert s1["f0c0.send"].tag == s0["f0c1.recv"].tag
    assert (s0["b0c1.send"].peer, s1["b0c0.recv"].peer) == ("pp:-1%", "pp:+1%")
    assert s0["b0c1.send"].tag == s1["b0c0.recv"].tag
    assert len({op.tag for op in trace.programs[0].ops if op.kind == "send"}) == 6   # tags unique per message
    # embedding only on stage 0 chunk 0, the head only on the last stage's last chunk
    assert "f0c0.embed" in s0 and "f0c1.embed" not in s0 and "f0c1.lm_head" in s1 and "f0c0.lm_head" not in s1
    # one activation buffer per micro-batch and chunk
    assert sorted(op.buffer for op in trace.programs[0].ops if op.kind == "alloc" and op.id.endswith(".alloc")) == \
        ["act0c0", "act0c1", "act1c0", "act1c1"]


def test_interleaving_shrinks_the_bubble_by_v():
    """Stage 0's idle time is Megatron's bubble (pp - 1)·(t_f + t_b)/v, with t_f, t_b the stage's forward and
    backward time of one micro-batch; replayed on a fast switch so that messages cost next to nothing."""
    spec = TransformerSpec(name="even", layers=8, hidden=256, heads=4, ffn_hidden=1024, vocab=8, max_seq_len=64)
    m, pp = 8, 4
    idle = {}
    for v in (1, 2):
        trace = training_trace(spec, pp=pp, num_micro_batches=m, virtual_pipeline_stages=v, track_memory=False)
        out = replay(Simulation(load_topology("switch:4,10000GB/s,0us")), trace)
        ops = out.ops[(out.ops.cohort == 0) & (out.ops.kind == "compute")]
        spans = ops.end - ops.start
        per_micro_batch = spans[ops.op_id != "optimizer"].sum() / m
        idle[v] = out.step_time - spans.sum()
        assert idle[v] == pytest.approx((pp - 1) * per_micro_batch / v, rel=0.08)
    assert idle[1] / idle[2] == pytest.approx(2.0, rel=0.06)
