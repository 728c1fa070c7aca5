"""Gradient compressors on real torch tensors, with exactly counted wire bytes.

A compressor turns a tensor into a :class:`Payload` of named fields (values,
indices, scales, norms, sizes, ...). Every payload counts its bytes two ways from
its fields: ``bytes_naive`` (a straightforward implementation: a byte per sign,
int64 indices, fp32 scales) and ``bytes_packed`` (bits packed, int32 or
delta-coded indices, Huffman codes where the method uses them); published
compression ratios assume packing. :meth:`Payload.to_wire` produces the actual
bytes. A payload also states the collective it needs (:class:`CollectiveFit`) and
the messages it becomes on the network (:meth:`Payload.messages`), and every
compressor states its compute cost (:meth:`Compressor.cost`, :func:`measure_cost`).
:class:`PayloadCounter` counts a whole model's payloads by tensor shape, exactly
where the counts are affine in the rows (a 7B model in seconds).

>>> import torch
>>> from commsim.compression import TopK, make_compressor
>>> gradient = torch.randn(1000, 100)
>>> payload = TopK(ratio=0.01).compress(gradient)
>>> payload.bytes_naive, payload.bytes_packed, payload.ratio()
(12000, 8000, 50.0)
>>> [(m.collective.value, m.label, m.nbytes) for m in payload.messages()]
[('all_gather', 'body', 8000)]
>>> make_compressor("powersgd:rank=2").compress(gradient).bytes_packed   # 4 * (1000 + 100) * 2
8800

Tensors to try them on: :func:`resnet18_shapes` with :func:`synthetic_tensors`,
:func:`load_tensors` (a ``.pt`` file), :func:`model_gradients` (a real backward
pass). :func:`evaluate` compares compressors on them; :func:`convergence_check`
trains a small model with each one and reports loss against bytes sent.
"""

from commsim._lazy import lazy_exports
from commsim.extras import require_extra

require_extra("torch", field="commsim.compression")  # every compressor works on torch tensors

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "Compressor": "commsim.compression._base",
    "Exchange": "commsim.compression._base",
    "CONVERGENCE_COMPRESSORS": "commsim.compression._convergence",
    "DEFAULT_LEARNING_RATES": "commsim.compression._convergence",
    "convergence_check": "commsim.compression._convergence",
    "convergence_summary": "commsim.compression._convergence",
    "CompressionCost": "commsim.compression._cost",
    "ComputeCost": "commsim.compression._cost",
    "MeasuredCost": "commsim.compression._cost",
    "measure_cost": "commsim.compression._cost",
    "MessageCount": "commsim.compression._counting",
    "PayloadCounter": "commsim.compression._counting",
    "TensorCount": "commsim.compression._counting",
    "BF16": "commsim.compression._dense",
    "FP16": "commsim.compression._dense",
    "NoCompression": "commsim.compression._dense",
    "DGC": "commsim.compression._dgc",
    "DGC_WARMUP_DENSITIES": "commsim.compression._dgc",
    "evaluate": "commsim.compression._evaluate",
    "Scafcom": "commsim.compression._federated",
    "Scallion": "commsim.compression._federated",
    "FedZip": "commsim.compression._fedzip",
    "ErrorFeedback": "commsim.compression._feedback",
    "HuffmanCode": "commsim.compression._huffman",
    "LIECSGD": "commsim.compression._liec",
    "TinyConvNet": "commsim.compression._models",
    "TinyTransformerLM": "commsim.compression._models",
    "FP32_BYTES": "commsim.compression._payload",
    "Bits": "commsim.compression._payload",
    "Coding": "commsim.compression._payload",
    "CollectiveFit": "commsim.compression._payload",
    "DeltaVarint": "commsim.compression._payload",
    "Field": "commsim.compression._payload",
    "Huffman": "commsim.compression._payload",
    "Message": "commsim.compression._payload",
    "Payload": "commsim.compression._payload",
    "Raw": "commsim.compression._payload",
    "PowerSGD": "commsim.compression._powersgd",
    "FP4E2M1": "commsim.compression._quantize",
    "FP4E3M0": "commsim.compression._quantize",
    "BlockwiseInt8": "commsim.compression._quantize",
    "DEFAULT_COMPRESSORS": "commsim.compression._registry",
    "available_compressors": "commsim.compression._registry",
    "describe_compressors": "commsim.compression._registry",
    "make_compressor": "commsim.compression._registry",
    "make_compressors": "commsim.compression._registry",
    "parse_spec": "commsim.compression._registry",
    "ScaledSign": "commsim.compression._sign",
    "SignSGD": "commsim.compression._sign",
    "load_tensors": "commsim.compression._sources",
    "model_gradients": "commsim.compression._sources",
    "parse_shape": "commsim.compression._sources",
    "resnet18_shapes": "commsim.compression._sources",
    "synthetic_tensors": "commsim.compression._sources",
    "RandomK": "commsim.compression._sparse",
    "Threshold": "commsim.compression._sparse",
    "TopK": "commsim.compression._sparse",
    "QSGD": "commsim.compression._stochastic",
    "TernGrad": "commsim.compression._stochastic",
})

__all__ = [
    "BF16",
    "CONVERGENCE_COMPRESSORS",
    "DEFAULT_COMPRESSORS",
    "DEFAULT_LEARNING_RATES",
    "DGC",
    "DGC_WARMUP_DENSITIES",
    "FP4E2M1",
    "FP4E3M0",
    "FP16",
    "FP32_BYTES",
    "LIECSGD",
    "QSGD",
    "Bits",
    "BlockwiseInt8",
    "Coding",
    "CollectiveFit",
    "CompressionCost",
    "Compressor",
    "ComputeCost",
    "DeltaVarint",
    "ErrorFeedback",
    "Exchange",
    "FedZip",
    "Field",
    "Huffman",
    "HuffmanCode",
    "MeasuredCost",
    "Message",
    "MessageCount",
    "NoCompression",
    "Payload",
    "PayloadCounter",
    "PowerSGD",
    "RandomK",
    "Raw",
    "ScaledSign",
    "TensorCount",
    "Scafcom",
    "Scallion",
    "SignSGD",
    "TernGrad",
    "Threshold",
    "TinyConvNet",
    "TinyTransformerLM",
    "TopK",
    "available_compressors",
    "convergence_check",
    "convergence_summary",
    "describe_compressors",
    "evaluate",
    "load_tensors",
    "make_compressor",
    "make_compressors",
    "measure_cost",
    "model_gradients",
    "parse_shape",
    "parse_spec",
    "resnet18_shapes",
    "synthetic_tensors",
]
