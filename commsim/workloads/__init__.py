"""Workloads: the model catalog, the trace format and its validation, generators, Chakra and PyTorch profiler I/O.

>>> from commsim.workloads import load_model, training_trace, validate_trace
>>> trace = training_trace(load_model("gpt3-175b"), tp=8, pp=8, dp=16)
>>> index = validate_trace(trace)
>>> index.resolve_peer(0, "pp:+1")
128
"""

from commsim.workloads._dtypes import DTYPE_BYTES, Dtype, dtype_bytes
from commsim.workloads._index import TraceIndex
from commsim.workloads._validate import validate_against, validate_trace
from commsim.workloads.chakra import import_chakra
from commsim.workloads.chakra_et import export_chakra
from commsim.workloads.generators import (
    InferenceConfig,
    StageMemory,
    TrainingConfig,
    TrainingMemory,
    inference_trace,
    interleaved_one_f_one_b,
    one_f_one_b,
    pipeline_schedule,
    training_memory,
    training_trace,
)
from commsim.workloads.kineto import import_pytorch_profile
from commsim.workloads.models import (
    Gemm,
    TransformerSpec,
    catalog_names,
    gemm_backward,
    layer_gemms,
    layer_parameter_shapes,
    load_model,
    parameter_count,
    parameter_shapes,
    parameters_by_layer,
    tp_shard,
)
from commsim.workloads.sources import load_any_trace
from commsim.workloads.trace import (
    AllocOp,
    CollectiveOp,
    ComputeOp,
    DelayOp,
    DiskReadOp,
    FreeOp,
    Op,
    Program,
    RecvOp,
    SendOp,
    Trace,
    dump_trace,
    load_trace,
    parse_trace,
    save_trace,
    trace_json_schema,
)

__all__ = [
    "DTYPE_BYTES",
    "AllocOp",
    "CollectiveOp",
    "ComputeOp",
    "DelayOp",
    "DiskReadOp",
    "Dtype",
    "FreeOp",
    "Gemm",
    "InferenceConfig",
    "Op",
    "Program",
    "RecvOp",
    "SendOp",
    "StageMemory",
    "Trace",
    "TraceIndex",
    "TrainingConfig",
    "TrainingMemory",
    "TransformerSpec",
    "catalog_names",
    "dtype_bytes",
    "dump_trace",
    "export_chakra",
    "gemm_backward",
    "import_chakra",
    "import_pytorch_profile",
    "inference_trace",
    "interleaved_one_f_one_b",
    "layer_gemms",
    "layer_parameter_shapes",
    "load_any_trace",
    "load_model",
    "load_trace",
    "one_f_one_b",
    "parameter_count",
    "parameter_shapes",
    "parameters_by_layer",
    "parse_trace",
    "pipeline_schedule",
    "save_trace",
    "tp_shard",
    "trace_json_schema",
    "training_memory",
    "training_trace",
    "validate_against",
    "validate_trace",
]
