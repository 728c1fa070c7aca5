"""Peak memory per GPU: Korthikanti's activation formulas, ZeRO sharding, and the trace's own alloc/free ops."""

from __future__ import annotations

import pytest

from commsim.errors import ConfigError
from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads import load_model, training_memory, training_trace
from commsim.workloads.replay import replay

S, H, A, L, V = 2048, 12288, 96, 96, 50257       # GPT-3 175B
GPT3 = {"tp": 8, "pp": 8, "num_micro_batches": 64, "sequence_parallel": True}


def stage0_params_by_hand() -> float:
    """12 layers of ~12·h² weights over TP 8, plus the vocabulary shard and learned positions (biases, norms left out)."""
    return 12 * 12 * H * H / 8 + V / 8 * H + S * H


def test_gpt3_selective_recompute_by_hand():
    m = training_memory("gpt3-175b", GPT3, recompute="selective").stages[0]
    # Korthikanti et al. 2022 with sequence parallelism and selective recomputation: 34·s·b·h/t per layer;
    # the first stage keeps pp = 8 micro-batches of its 12 layers in flight under 1F1B
    assert m.in_flight == 8
    assert m.activations == pytest.approx(34 * S * H / 8 * 12 * 8, rel=0.02)
    params = stage0_params_by_hand()
    assert m.weights == pytest.approx(2 * params, rel=0.02)
    assert m.grads == pytest.approx(4 * params, rel=0.02)
    assert m.optimizer_state == pytest.approx(12 * params, rel=0.02)
    assert m.total == pytest.approx(18 * params + 34 * S * H / 8 * 96, rel=0.02)


def test_no_sequence_parallel_and_no_flash_attention_by_hand():
    m = training_memory("gpt3-175b", tp=8, pp=8, num_micro_batches=64, flash_attention=False).stages[0]
    # s·b·h·(10 + 24/t + 5·a·s/(h·t)) per layer (Korthikanti eq. 2 with tensor parallelism)
    per_layer = S * H * (10 + 24 / 8 + 5 * A * S / (H * 8))
    assert m.activations == pytest.approx(per_layer * 12 * 8, rel=0.02)


def test_full_recompute_keeps_layer_inputs_by_hand():
    m = training_memory("gpt3-175b", GPT3, recompute="full").stages[0]
    # 2·s·b·h/t per layer kept, plus one layer's full 34·s·b·h/t re-created during its backward
    assert m.recompute_working == pytest.approx(34 * S * H / 8, rel=1e-9)
    assert m.activations == pytest.approx(2 * S * H / 8 * 12 * 8 + 34 * S * H / 8, rel=0.02)


def test_interleaving_keeps_more_in_flight_as_korthikanti_says():
    """With v chunks the first stage keeps L·(1 + (p-1)/(p·v)) layers of activations."""
    m = training_memory("gpt3-175b", GPT3, recompute="selective", virtual_pipeline_stages=2).stages[0]
    assert m.activations == pytest.approx(34 * S * H / 8 * L * (1 + 7 / 16), rel=0.02)


@pytest.mark.parametrize(("zero", "sharded"), [(0, ()), (1, ("optimizer_state",)),
                                               (2, ("optimizer_state", "grads"))])
def test_zero_divides_what_it_shards(zero, sharded):
    base = training_memory("llama-2-7b", dp=8, seq_len=512).stages[0]
    sharded_memory = training_memory("llama-2-7b", dp=8, seq_len=512, zero_stage=zero).stages[0]
    for part in ("weights", "grads", "optimizer_state"):
        expected = getattr(base, part) / (8 if part in sharded else 1)
        assert getattr(sharded_memory, part) == pytest.approx(expected, rel=1e-12)


CASES = [
    {"pp": 4, "num_micro_batches": 6},
    {"pp": 2, "virtual_pipeline_stages": 2, "num_micro_batches": 4, "recompute": "full"},
    {"pp": 2, "tp": 2, "sequence_parallel": True, "recompute": "selective", "flash_attention": False},
    {"dp": 4, "ep": 2, "num_experts": 4, "zero_stage": 2, "num_micro_batches": 2},
    {"cp": 2, "pp": 2, "distributed_optimizer": True, "dp": 2},
]


@pytest.mark.parametrize("config", CASES)
def test_memory_matches_the_alloc_and_free_ops_of_the_trace(config, static_peak):
    spec = load_model("llama-2-7b").model_copy(update={"layers": 4})
    trace = training_trace(spec, seq_len=256, **config)
    memory = training_memory(spec, seq_len=256, **config)
    assert [static_peak(p) for p in trace.programs] == pytest.approx([s.total for s in memory.stages], rel=1e-12)


def test_zero3_memory_bounds_the_trace_by_its_buffers(static_peak):
    spec = load_model("llama-2-7b").model_copy(update={"layers": 4})
    config = {"dp": 2, "pp": 2, "zero_stage": 3, "seq_len": 256}
    trace = training_trace(spec, **config)
    for program, stage in zip(trace.programs, training_memory(spec, **config).stages, strict=True):
        assert stage.total - stage.zero3_buffers <= static_peak(program) <= stage.total


def test_replay_records_the_predicted_peak(tiny):
    config = {"pp": 2, "num_micro_batches": 4, "recompute": "full", "dp": 2, "zero_stage": 1}
    trace = training_trace(tiny, **config)
    out = replay(Simulation(load_topology("switch:4,100GB/s,1us")), trace)
    recorded = out.result.memory.groupby("device")["in_use"].max().to_list()
    stages = training_memory(tiny, **config).stages
    assert recorded == pytest.approx([stages[0].total] * 2 + [stages[1].total] * 2, rel=1e-12)
    assert training_memory(tiny, **config).fits(stages[0].total) and not \
        training_memory(tiny, **config).fits(stages[0].total - 1)


def test_a_step_that_does_not_fit_names_stage_components_and_fix():
    memory = training_memory("llama-2-70b", tp=8, pp=2, num_micro_batches=4, seq_len=4096)
    memory.require_fit(memory.peak.total)                      # exactly full is fine
    with pytest.raises(ConfigError) as info:
        memory.require_fit(40 * 2**30, "A100 40GB")
    text = str(info.value)
    assert text.startswith(f"memory per GPU = '{memory.peak.total / 2**30:.1f} GiB': stage 0 needs more than the "
                           "40.0 GiB of A100 40GB (weights ")
    assert "Fix: " in text and "\n" not in text
    sharded = training_memory("llama-2-70b", tp=8, pp=2, dp=8, num_micro_batches=4, seq_len=1024,
                              sequence_parallel=True, recompute="full")
    with pytest.raises(ConfigError, match="optimizer state dominate: shard them with distributed_optimizer"):
        sharded.require_fit(10 * 2**30)
