"""Megatron-LM arguments: used, ignored with a reason, or an error naming the closest known ones."""

from __future__ import annotations

import pytest

from commsim.errors import ConfigError
from commsim.workloads import TrainingConfig
from commsim.workloads.megatron_args import IGNORED_FLAGS, parse_megatron_args

GPT3 = ["--num-layers", "96", "--hidden-size", "12288", "--num-attention-heads", "96", "--seq-length", "2048",
        "--max-position-embeddings", "2048", "--micro-batch-size", "1", "--global-batch-size", "1536",
        "--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "8", "--sequence-parallel", "--bf16"]


def test_a_gpt3_job_maps_to_its_fields():
    parsed = parse_megatron_args(GPT3, gpus=1024)
    assert parsed.training == {"seq_len": 2048, "micro_batch_size": 1, "tp": 8, "pp": 8, "sequence_parallel": True,
                               "dtype": "bf16", "dp": 16, "num_micro_batches": 96}
    spec = parsed.spec()
    assert (spec.layers, spec.hidden, spec.heads, spec.ffn_hidden, spec.max_seq_len) == (96, 12288, 96, 49152, 2048)
    assert parsed.ignored == []


def test_equals_form_and_switches():
    parsed = parse_megatron_args(["--tensor-model-parallel-size=4", "--fp16", "--swiglu", "--normalization",
                                  "RMSNorm", "--position-embedding-type", "rope"], gpus=8)
    assert parsed.training["tp"] == 4 and parsed.training["dtype"] == "fp16" and parsed.training["dp"] == 2
    assert parsed.model == {"gated_ffn": True, "norm": "rmsnorm", "position": "rotary"}


def test_ignored_arguments_are_listed_with_their_reason():
    parsed = parse_megatron_args(["--lr", "6e-5", "--data-path", "x", "--attention-softmax-in-fp32"], gpus=1)
    assert [note.split(" ")[0] for note in parsed.ignored] == ["--lr", "--data-path", "--attention-softmax-in-fp32"]
    assert all("(" in note for note in parsed.ignored)
    assert "--overlap-grad-reduce" in IGNORED_FLAGS


def test_unknown_argument_names_close_matches():
    with pytest.raises(ConfigError, match="did you mean --num-layers"):
        parse_megatron_args(["--num-layer", "8"], gpus=1)
    with pytest.raises(ConfigError, match="is not a Megatron-LM argument"):
        parse_megatron_args(["--frobnicate"], gpus=1)


@pytest.mark.parametrize(("args", "gpus", "message"), [
    (["--global-batch-size", "100", "--micro-batch-size", "2"], 8, "multiple of micro-batch size"),
    (["--tensor-model-parallel-size", "3"], 8, "not a multiple of tp·pp·cp = 3"),
    (["--num-layers", "10", "--pipeline-model-parallel-size", "2", "--num-layers-per-virtual-pipeline-stage", "2"],
     8, "must divide --num-layers"),
    (["--hidden-size"], 8, "needs a value"),
    (["--hidden-size", "big"], 8, "must be an integer"),
    (["--recompute-granularity", "some"], 8, "is not full or selective"),
    (["--normalization", "batchnorm"], 8, "is not a choice"),
    (["8"], 8, "is not a --flag"),
])
def test_bad_values_name_the_rule(args, gpus, message):
    with pytest.raises(ConfigError, match=message):
        parse_megatron_args(args, gpus=gpus)


def test_virtual_stages_recompute_and_moe_map_to_training_fields():
    parsed = parse_megatron_args(["--num-layers", "16", "--pipeline-model-parallel-size", "2",
                                  "--num-layers-per-virtual-pipeline-stage", "2", "--recompute-activations",
                                  "--use-distributed-optimizer", "--num-experts", "8", "--moe-router-topk", "2",
                                  "--expert-model-parallel-size", "4", "--context-parallel-size", "2"], gpus=16)
    t = parsed.training
    assert (t["virtual_pipeline_stages"], t["recompute"], t["distributed_optimizer"]) == (4, "selective", True)
    assert (t["num_experts"], t["top_k"], t["ep"], t["cp"], t["dp"]) == (8, 2, 4, 2, 4)
    TrainingConfig(**{k: v for k, v in t.items() if k != "model"})   # every mapped field is a generator field


def test_shape_is_required_without_a_catalog_model_and_overrides_one():
    with pytest.raises(ConfigError, match="required without --model"):
        parse_megatron_args(["--hidden-size", "64"], gpus=1).spec()
    spec = parse_megatron_args(["--num-layers", "4"], gpus=1).spec("llama-2-7b")
    assert spec.layers == 4 and spec.hidden == 4096 and spec.gated_ffn
