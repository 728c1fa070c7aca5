"""Trace generators: a training step under TP × CP × DP × PP (× EP), and tensor-parallel inference.

Both take a :class:`~commsim.workloads.models.TransformerSpec` (or a catalog
name) and a config model whose fields all have stated defaults; invalid
combinations raise :class:`~commsim.errors.ConfigError`.

>>> from commsim.workloads import validate_trace
>>> trace = training_trace("llama-2-7b", tp=2, pp=2, dp=1, num_micro_batches=2, seq_len=512)
>>> index = validate_trace(trace)
>>> [p.name for p in trace.programs]
['stage0', 'stage1']

:func:`training_memory` gives the peak memory per GPU of the same step, by
component. See :mod:`commsim.workloads._training` (rank layout, streams, tags),
:mod:`commsim.workloads._schedule`, :mod:`commsim.workloads._activations`, and :mod:`commsim.workloads._inference`
for what each op stands for, and :mod:`commsim.workloads._costs` for the cost
model of a block.
"""

from commsim.workloads._costs import BlockCosts, Cost, block_costs
from commsim.workloads._inference import InferenceConfig, inference_trace
from commsim.workloads._memory import StageMemory, TrainingMemory, training_memory
from commsim.workloads._schedule import interleaved_one_f_one_b, pipeline_schedule
from commsim.workloads._training import (
    ADAM_FLOPS_PER_PARAM,
    OPTIMIZER_STATE_BYTES,
    TrainingConfig,
    one_f_one_b,
    training_trace,
)

__all__ = [
    "ADAM_FLOPS_PER_PARAM",
    "BlockCosts",
    "Cost",
    "OPTIMIZER_STATE_BYTES",
    "InferenceConfig",
    "StageMemory",
    "TrainingConfig",
    "TrainingMemory",
    "block_costs",
    "inference_trace",
    "interleaved_one_f_one_b",
    "one_f_one_b",
    "pipeline_schedule",
    "training_memory",
    "training_trace",
]
