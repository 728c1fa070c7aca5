"""Activation recomputation: full re-runs each layer's forward before its backward, selective the core attention."""

from __future__ import annotations

from commsim.workloads import dump_trace, training_trace, validate_trace


def flops(trace, phase, stage=0):
    return sum(op.flops for op in trace.programs[stage].ops if op.kind == "compute" and op.tags.get("phase") == phase)


def by_id(trace, stage=0):
    return {op.id: op for op in trace.programs[stage].ops}


# tiny at TP 1, 4 tokens, bf16: forward FLOPs of one layer by hand —
# norm 8·4·8 = 256 (twice), QKV 2·4·24·8 = 1536, attention 2·(2 heads·2·4·4·4) + 5·(2·4·4) = 672,
# output projection 2·4·8·8 = 512, FC1 and FC2 2·4·32·8 = 2048 each, GELU 8·4·32 = 1024.
LAYER_FORWARD_FLOPS = 256 + 1536 + 672 + 512 + 256 + 2048 + 1024 + 2048


def test_full_recompute_adds_exactly_the_layer_forwards(tiny):
    plain = training_trace(tiny, num_micro_batches=3)
    full = training_trace(tiny, num_micro_batches=3, recompute="full")
    validate_trace(full)
    assert LAYER_FORWARD_FLOPS == 8352
    assert flops(full, "recompute") == 3 * 2 * LAYER_FORWARD_FLOPS
    for phase in ("fwd", "bwd", "optimizer"):
        assert flops(full, phase) == flops(plain, phase)
    # the recomputed ops are the layer's forward ops, renamed r<micro-batch>.<layer>.*
    forward = {op.id[1:]: op.flops for op in plain.programs[0].ops if op.id.startswith("f0.0.")}
    again = {op.id[1:]: op.flops for op in full.programs[0].ops if op.id.startswith("r0.0.")}
    assert again == forward and len(again) == 8


def test_full_recompute_order_and_dependencies(tiny):
    trace = training_trace(tiny, tp=2, num_micro_batches=1, recompute="full")
    ops = [op.id for op in trace.programs[0].ops]
    s = by_id(trace)
    # layer 1's forward is re-run (with its TP all-reduces) right before layer 1's backward, then layer 0's
    assert ops.index("r0.1.tp2") < ops.index("b0.1.fc2_dgrad") < ops.index("r0.0.norm1") < ops.index("b0.0.fc2_dgrad")
    assert ops.index("b0.final_norm_bwd") < ops.index("r0.1.norm1")
    assert s["b0.1.fc2_dgrad"].deps == ["r0.1.tp2"]
    assert s["r0.1.tp1"].group == "tp" and s["r0.1.tp1"].tags == {"micro_batch": 0, "phase": "recompute", "layer": 1,
                                                                  "group": "tp"}
    # memory: each micro-batch keeps the layer inputs (2 × 4 tokens × 8 × 2 B) and the fp32 softmax of the loss
    # (4 tokens × 8 vocab rows per rank × 4 B); the full activations of one layer live during its backward
    assert s["f0.alloc"].bytes == 2 * 4 * 8 * 2 + 4 * 8 * 4
    # full activations at TP 2: outside 10·T·h = 320; inside 2·4·(2·4 + 2·4 + 16 + 16) = 384
    assert s["b0.1.rc_alloc"].bytes == 320 + 384
    assert ops.index("b0.1.rc_free") == ops.index("b0.1.norm1_bwd") + 1


def test_selective_recompute_without_flash_re_runs_core_attention(tiny):
    plain = training_trace(tiny, num_micro_batches=2, flash_attention=False)
    selective = training_trace(tiny, num_micro_batches=2, flash_attention=False, recompute="selective")
    validate_trace(selective)
    s = by_id(selective)
    assert flops(selective, "recompute") == 2 * 2 * s["f0.0.attn"].flops == 2 * 2 * 672
    assert s["b0.0.attn_rc"].bytes == s["f0.0.attn"].bytes
    ops = [op.id for op in selective.programs[0].ops]
    assert ops.index("b0.0.out_proj_wgrad") < ops.index("b0.0.attn_rc") == ops.index("b0.0.attn_bwd") - 1
    # memory: the score-sized tensors (softmax out, dropout mask and out: 5 B per score, 2 heads × 4 × 4 scores)
    # are no longer kept; they are re-created for one layer at a time
    saved = 5 * 2 * 4 * 4
    assert by_id(plain)["f0.alloc"].bytes - s["f0.alloc"].bytes == 2 * saved
    assert s["b0.0.rc_alloc"].bytes == saved


def test_selective_recompute_with_flash_attention_is_what_flash_already_does(tiny):
    """Flash attention keeps no scores and its backward already recomputes them: selective adds nothing."""
    plain = training_trace(tiny, pp=2, num_micro_batches=2)
    selective = training_trace(tiny, pp=2, num_micro_batches=2, recompute="selective")
    assert dump_trace(plain)["programs"] == dump_trace(selective)["programs"]
