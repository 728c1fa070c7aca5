"""Model and hardware FLOPs against Megatron-LM's formulas and a hand count on a 2-layer model."""

from __future__ import annotations

import math

import pytest

from commsim.workloads.flops import hardware_flops, layer_forward_flops, model_flops, recompute_flops
from commsim.workloads.models import TransformerSpec, load_model

TWO = TransformerSpec(name="two", layers=2, hidden=64, heads=4, ffn_hidden=256, vocab=1000, max_seq_len=32)


def test_two_layer_model_by_hand():
    # per token and layer, forward: qkv 2·64·192 + out 2·64·64 + fc1/fc2 2·2·64·256 = 24,576 + 8,192 + 65,536
    # = 98,304; scores 4·32·64 = 8,192. Logits 2·64·1000 = 128,000 per token. Backward = 2 x forward.
    gemms, scores = layer_forward_flops(TWO, 32)
    assert (gemms, scores) == (98_304.0, 8_192.0)
    tokens = 3 * 32
    assert model_flops(TWO, seq_len=32, global_batch=3) == 3 * tokens * (2 * (98_304 + 8_192) + 128_000)


@pytest.mark.parametrize("name", ["gpt3-175b", "megatron-gpt2-8.3b", "mt-nlg-530b"])
def test_gpt_models_match_narayanan_formulas(name):
    spec = load_model(name)
    B, s, L, h, V = 512, 2048, spec.layers, spec.hidden, spec.vocab
    assert math.isclose(model_flops(spec, seq_len=s, global_batch=B),
                        72 * B * s * L * h**2 * (1 + s / (6 * h) + V / (12 * h * L)), rel_tol=1e-12)
    # full recomputation: one more forward of every layer (Narayanan et al. 2021, eq. 3)
    assert math.isclose(hardware_flops(spec, seq_len=s, global_batch=B, recompute="full"),
                        96 * B * s * L * h**2 * (1 + s / (6 * h) + V / (16 * h * L)), rel_tol=1e-12)


def test_selective_recomputes_only_the_attention_scores():
    spec = load_model("gpt3-175b")
    B, s = 8, 2048
    assert recompute_flops(spec, seq_len=s, global_batch=B, recompute="none") == 0
    assert math.isclose(recompute_flops(spec, seq_len=s, global_batch=B, recompute="selective"),
                        4 * B * s * s * spec.hidden * spec.layers, rel_tol=1e-12)


def test_grouped_query_attention_and_gated_ffn_by_hand():
    llama = load_model("llama-2-70b")  # 64 query heads, 8 kv heads of 128, SwiGLU 28,672
    h, q, kv, f = llama.hidden, llama.q_width, llama.kv_width, llama.ffn_hidden
    assert (q, kv) == (8192, 1024)
    gemms, _ = layer_forward_flops(llama, 4096)
    assert gemms == 2 * h * (q + 2 * kv) + 2 * q * h + 2 * 3 * h * f


def test_top_k_experts_multiply_the_ffn():
    one, _ = layer_forward_flops(TWO, 32)
    two, _ = layer_forward_flops(TWO, 32, top_k=2)
    assert two - one == 2 * 2 * 64 * 256
