"""Configurations that do not divide, or name unknown fields: one paragraph naming field, value, rule and fix."""

from __future__ import annotations

import pytest

from commsim.errors import ConfigError
from commsim.workloads import training_memory, training_trace

CASES = [
    ("gpt3-175b", {"pp": 8, "virtual_pipeline_stages": 5},
     "virtual_pipeline_stages = 5: with pp=8 needs the 96 layers of gpt3-175b divisible by pp·v = 40. "
     "Fix: use virtual_pipeline_stages from [1, 2, 3, 4, 6, 12]"),
    ("gpt3-175b", {"pp": 5, "virtual_pipeline_stages": 2},
     "virtual_pipeline_stages = 2: with pp=5 needs the 96 layers of gpt3-175b divisible by pp·v = 10"),
    ("gpt3-175b", {"virtual_pipeline_stages": 2}, "virtual_pipeline_stages = 2: needs pipeline parallelism"),
    ("gpt3-175b", {"pp": 8, "virtual_pipeline_stages": 2, "num_micro_batches": 12},
     "num_micro_batches = 12: must be a multiple of pp=8 with interleaved 1F1B (Megatron's rule). "
     "Fix: use a multiple of 8 micro-batches"),
    ("gpt3-175b", {"tp": 64}, "tp = 64: does not divide the number of attention heads (96) of gpt3-175b"),
    ("llama-2-7b", {"global_batch_size": 10, "micro_batch_size": 2, "dp": 4},
     "global_batch_size = 10: is not a multiple of micro_batch_size·dp = 2·4 = 8. Fix: use a multiple of 8"),
    ("llama-2-7b", {"global_batch_size": 16, "dp": 4, "num_micro_batches": 3},
     "num_micro_batches = 3: disagrees with global_batch_size 16"),
    ("llama-2-7b", {"num_experts": 6, "ep": 4, "dp": 4},
     "num_experts = 6: is not divisible by ep=4. Fix: use ep from [1, 2, 3, 6]"),
    ("llama-2-7b", {"num_experts": 8, "ep": 4, "dp": 2}, "ep = 4: does not divide dp=2"),
    ("llama-2-7b", {"ep": 2, "dp": 2}, "ep = 2: needs mixture-of-experts layers (num_experts is 0)"),
    ("llama-2-7b", {"num_experts": 2, "top_k": 3}, "top_k = 3: exceeds num_experts (2)"),
    ("llama-2-7b", {"num_experts": 2, "tp": 2},
     "sequence_parallel = False: must be true for mixture-of-experts layers with tp=2 (Megatron's rule"),
    ("palm-540b", {"num_experts": 2}, "num_experts = 2: mixture-of-experts layers are generated for sequential "
                                      "blocks only"),
    ("llama-2-7b", {"seq_len": 100, "cp": 3}, "cp = 3: does not divide the sequence length 100"),
    ("llama-2-7b", {"cp": 2, "flash_attention": False}, "cp = 2: needs flash_attention"),
    ("llama-2-7b", {"seq_len": 32, "cp": 2, "tp": 32, "sequence_parallel": True},
     "sequence_parallel = True: needs the 16 tokens of a micro-batch per CP rank to split evenly over tp=32"),
    ("llama-2-7b", {"virtual_stages": 2}, "virtual_stages = 2: is not a known field"),
    ("llama-2-7b", {"zero_stage": 4}, "zero_stage = 4: is not one of the allowed values. Fix: use one of 0, 1, 2 or 3"),
    ("llama-2-7b", {"recompute": "partial"}, "recompute = 'partial': is not one of the allowed values"),
    ("llama-2-7b", {"capacity_factor": 0}, "capacity_factor = 0: must be above 0"),
    ("llama-2-7b", {"cp": 0}, "cp = 0: must be at least 1"),
]


@pytest.mark.parametrize(("model", "config", "message"), CASES)
def test_bad_training_configs(model, config, message):
    for generate in (training_trace, training_memory):
        with pytest.raises(ConfigError) as info:
            generate(model, **config)
        text = str(info.value)
        assert text.startswith(message), text
        assert "Fix: " in text and "\n" not in text
