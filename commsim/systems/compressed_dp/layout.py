"""A model as data-parallel training sees it: gradient buckets and the compute before each is ready.

Every transformer block is one bucket (its parameter tensors, named and shaped as the
catalog counts them, :func:`commsim.workloads.parameter_shapes`); the token embedding
joins block 0's bucket (its gradient is the last the backward pass produces) and the
final norm and output head join the last block's (the first the backward pass
reaches). The backward pass visits the blocks from the last to the first, so bucket
``L - 1`` is released first and bucket 0 last.

Compute per step and rank is a list of device kernels, as FLOP and bytes of memory
traffic of the block's GEMMs (:func:`commsim.workloads.layer_gemms` for
``tokens_per_rank`` tokens; the head's ``tokens x vocab x hidden`` GEMM on the last
block): one forward kernel for the whole forward pass, then one backward kernel per
block (data and weight gradients: each of the two backward GEMMs of a forward GEMM
costs what the forward one does, :func:`commsim.workloads.gemm_backward`). Norms,
activations and the optimizer step are not charged.

>>> lay = build_layout("llama-2-7b", tokens_per_rank=4096)
>>> lay.buckets, lay.parameters, lay.tensors[0][0]
(32, 6738415616, ('embed.weight', (32000, 4096)))
>>> round(float(lay.backward_flops.sum()) / lay.forward_flops, 6)
2.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from commsim.errors import ConfigError

__all__ = ["ModelLayout", "build_layout", "layout_from_buckets"]


@dataclass(frozen=True)
class ModelLayout:
    """Gradient buckets and per-step compute of one rank.

    ``tensors[b]`` are the ``(name, shape)`` of bucket ``b``; ``forward_flops`` /
    ``forward_bytes`` the whole forward pass; ``backward_flops[b]`` /
    ``backward_bytes[b]`` the backward kernel after which bucket ``b`` is ready.
    """

    model: str
    tokens_per_rank: int
    tensors: tuple[tuple[tuple[str, tuple[int, ...]], ...], ...]
    forward_flops: float
    forward_bytes: float
    backward_flops: np.ndarray
    backward_bytes: np.ndarray

    @property
    def buckets(self) -> int:
        """Number of gradient buckets."""
        return len(self.tensors)

    @property
    def parameters(self) -> int:
        """Parameters (gradient elements) of the whole model."""
        return int(sum(math.prod(shape) for bucket in self.tensors for _, shape in bucket))

    def bucket_parameters(self) -> np.ndarray:
        """Gradient elements per bucket."""
        return np.array([sum(math.prod(s) for _, s in bucket) for bucket in self.tensors], dtype=np.int64)

    def shapes(self) -> list[tuple[int, ...]]:
        """Distinct tensor shapes, in first-seen order."""
        return list(dict.fromkeys(shape for bucket in self.tensors for _, shape in bucket))


def build_layout(model: str, *, tokens_per_rank: int, seq_len: int | None = None) -> ModelLayout:
    """The buckets and compute of catalog model ``model`` at ``tokens_per_rank`` tokens per rank and step."""
    from commsim.workloads import Gemm, gemm_backward, layer_gemms, load_model, parameters_by_layer

    spec = load_model(model)
    seq = int(seq_len or min(spec.default_seq_len, tokens_per_rank))
    if tokens_per_rank % seq:
        raise ConfigError(field="tokens_per_rank", value=tokens_per_rank,
                          rule=f"is not a whole number of sequences of {seq} tokens",
                          fix=f"give a multiple of {seq} or set seq_len to a divisor of it")
    batch = tokens_per_rank // seq
    layers = spec.layers
    tensors = parameters_by_layer(spec)
    gemms = list(layer_gemms(spec, batch=batch, seq_len=seq).values())
    block_f = sum(g.flops for g in gemms)
    block_b = sum(g.bytes for g in gemms)
    back = [b for g in gemms for b in gemm_backward(g)]
    block_bf = sum(g.flops for g in back)
    block_bb = sum(g.bytes for g in back)
    head = Gemm("head", m=tokens_per_rank, n=spec.vocab, k=spec.hidden)
    head_back = gemm_backward(head)
    backward_flops = np.full(layers, block_bf)
    backward_bytes = np.full(layers, block_bb)
    backward_flops[-1] += sum(g.flops for g in head_back)
    backward_bytes[-1] += sum(g.bytes for g in head_back)
    return ModelLayout(model=spec.name, tokens_per_rank=int(tokens_per_rank),
                       tensors=tuple(tuple(t) for t in tensors),
                       forward_flops=layers * block_f + head.flops, forward_bytes=layers * block_b + head.bytes,
                       backward_flops=backward_flops, backward_bytes=backward_bytes)


def layout_from_buckets(buckets: list[list[tuple[int, ...]]], *, backward_flops: list[float] | np.ndarray,
                        backward_bytes: list[float] | np.ndarray | None = None, forward_flops: float = 0.0,
                        forward_bytes: float = 0.0, model: str = "custom") -> ModelLayout:
    """A layout from explicit bucket shapes and compute (tests, hand-made cases).

    >>> lay = layout_from_buckets([[(64, 32)], [(10,)]], backward_flops=[1e9, 1e9])
    >>> lay.buckets, lay.parameters
    (2, 2058)
    """
    if len(buckets) != len(backward_flops):
        raise ConfigError(field="backward_flops", value=len(backward_flops),
                          rule=f"does not give one backward kernel per bucket ({len(buckets)})",
                          fix="give one value per bucket")
    bb = np.zeros(len(buckets)) if backward_bytes is None else np.asarray(backward_bytes, dtype=float)
    tensors = tuple(tuple((f"b{b}.t{i}", tuple(int(s) for s in shape)) for i, shape in enumerate(bucket))
                    for b, bucket in enumerate(buckets))
    return ModelLayout(model=model, tokens_per_rank=0, tensors=tensors, forward_flops=float(forward_flops),
                       forward_bytes=float(forward_bytes), backward_flops=np.asarray(backward_flops, dtype=float),
                       backward_bytes=bb)
