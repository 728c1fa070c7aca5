"""Cost of the pieces of a transformer block on one tensor-parallel rank: FLOPs and memory traffic.

Modelling choices (all per rank, ``e`` bytes per element, ``T`` tokens):

* GEMMs: :func:`~commsim.workloads.models.layer_gemms`; backward = data
  gradient + weight gradient, each with the forward GEMM's FLOPs.
* Attention (score matmul, softmax, context matmul) is one op. With
  ``flash_attention`` it reads Q, K, V and writes O (no score matrix in
  memory), and its backward costs 2.5x the forward FLOPs (the scores are
  recomputed); without it the score matrix is written, read and rewritten by
  the softmax, and the backward costs 2x.
* A norm together with the residual add before it: 8 FLOP per element and
  5 element transfers (read residual and branch, write sum, read it, write
  output); backward: 10 FLOP and 4 transfers per element.
* FFN activation: GELU reads and writes the FC1 output (8 FLOP per element);
  SwiGLU reads gate and up and writes their product (6 FLOP per element).
  Backward: GELU 3 transfers, SwiGLU 5 transfers per element.
* With sequence parallelism norms and residual adds work on ``T/tp`` tokens.

Each cost also says what kernel it is, for devices with a compute model
(:mod:`commsim.devices.compute_model`): its kind, the ``(m, n, k, batch)`` of its
GEMMs and how many GPU kernels it stands for, following Megatron-LM's fusions —
bias + GeLU fused into one kernel, bias + dropout + residual add fused (then
apex's fused LayerNorm: two kernels per norm), scale + mask + softmax fused
(unfused attention: score GEMM, softmax, dropout, context GEMM: four kernels
forward, six backward), flash attention one kernel forward and two backward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from commsim.workloads._dtypes import dtype_bytes
from commsim.workloads._gemm import Gemm, TPShard, gemm_backward, layer_gemms, tp_shard
from commsim.workloads.models import TransformerSpec

__all__ = ["BlockCosts", "Cost", "block_costs", "ffn_activation_costs", "gemm_cost", "memory_cost"]


@dataclass(frozen=True)
class Cost:
    """FLOP and bytes of memory traffic of one op, and what kernel it is.

    ``kernel`` is a compute-model kernel kind (None: unknown), ``gemms`` the
    ``(m, n, k, batch)`` of its matrix multiplies and ``launches`` the number of
    GPU kernels it stands for.
    """

    flops: float
    bytes: float
    kernel: str | None = None
    gemms: tuple[tuple[int, int, int, int], ...] = ()
    launches: int = 1


def gemm_cost(*gemms: Gemm, kernel: str = "gemm", launches: int = 1, flops: float | None = None,
              nbytes: float | None = None) -> Cost:
    """The cost of an op made of ``gemms`` (FLOP and bytes their sum unless given)."""
    return Cost(sum(g.flops for g in gemms) if flops is None else flops,
                sum(g.bytes for g in gemms) if nbytes is None else nbytes, kernel,
                tuple((g.m, g.n, g.k, g.batch) for g in gemms), launches)


def memory_cost(flops: float, nbytes: float, launches: int = 1) -> Cost:
    """The cost of a memory-bound op (norm, activation, dropout, softmax, loss, optimizer...)."""
    return Cost(flops, nbytes, "memory", (), launches)


@dataclass(frozen=True)
class BlockCosts:
    """Forward and backward costs of one block, plus its parameters per rank and its TP message size.

    ``forward`` and ``backward`` map op names to :class:`Cost` in execution
    order. ``params`` maps the backward op that completes a parameter's
    gradient to the number of parameters (elements) it completes on this rank.
    ``tp_bytes`` is the size of one TP all-reduce (the block's activations,
    ``T·hidden·e``), also the full input of a reduce-scatter and the full output
    of an all-gather under sequence parallelism.
    """

    forward: dict[str, Cost]
    backward: dict[str, Cost]
    params: dict[str, int]
    tp_bytes: float
    shard: TPShard
    gemms: dict[str, Gemm]


def ffn_activation_costs(gated: bool, rows: float, width: int, element_bytes: int) -> tuple[Cost, Cost]:
    """Forward and backward cost of the FFN activation on ``rows`` tokens of FFN width ``width`` (per rank).

    >>> ffn_activation_costs(False, 4, 32, 2)[0]
    Cost(flops=1024.0, bytes=512.0, kernel='memory', gemms=(), launches=1)
    """
    n, e = rows * width, element_bytes
    if gated:
        return memory_cost(6.0 * n, 3.0 * n * e), memory_cost(8.0 * n, 5.0 * n * e)
    return memory_cost(8.0 * n, 2.0 * n * e), memory_cost(10.0 * n, 3.0 * n * e)


def block_costs(
    spec: TransformerSpec,
    *,
    batch: int,
    seq_len: int,
    tp: int,
    dtype: str,
    kv_len: int | None = None,
    sequence_parallel: bool = False,
    flash_attention: bool = True,
    strict_heads: bool = True,
) -> BlockCosts:
    """Costs of one block for ``batch`` sequences of ``seq_len`` new tokens attending to ``kv_len`` keys.

    When ``kv_len`` exceeds ``seq_len`` (decoding with a KV cache) attention
    also reads the cached keys and values and writes the new ones.
    """
    e = dtype_bytes(dtype)
    kv_len = seq_len if kv_len is None else kv_len
    shard = tp_shard(spec, tp, strict_heads=strict_heads)
    g = layer_gemms(spec, batch=batch, seq_len=seq_len, tp=tp, dtype=dtype, kv_len=kv_len,
                    strict_heads=strict_heads)
    h = spec.hidden
    tokens = batch * seq_len
    norm_tokens = tokens / tp if sequence_parallel else tokens
    ffn = shard.ffn

    def norm() -> Cost:
        return memory_cost(8.0 * norm_tokens * h, 5.0 * norm_tokens * h * e, launches=2)

    def norm_bwd() -> Cost:
        return memory_cost(10.0 * norm_tokens * h, 4.0 * norm_tokens * h * e, launches=2)

    score, context = g["attn_score"], g["attn_context"]
    scores = float(score.batch * score.m * score.n)            # elements of the score matrix
    attn_flops = score.flops + context.flops + 5.0 * scores
    qkv_io = tokens * (2 * shard.q_width + 2 * shard.kv_width) * e  # read Q, K, V; write O
    cache_io = 0.0
    if kv_len > seq_len:  # decode: read the cached K and V, append the new ones
        cache_io = 2.0 * batch * kv_len * shard.kv_width * e
    # backward GEMMs: dP = dO·Vᵀ has the score's shape; dV, dQ and dK the context's (flash also recomputes S)
    dv = replace(context, m=context.k, n=context.n, k=context.m)
    if flash_attention:
        attn = gemm_cost(score, context, kernel="fused_attention", flops=attn_flops, nbytes=qkv_io + cache_io)
        attn_bwd = gemm_cost(score, score, dv, context, dv, kernel="fused_attention", launches=2,
                             flops=2.5 * (score.flops + context.flops) + 8.0 * scores,
                             nbytes=2.0 * qkv_io + tokens * 2 * shard.q_width * e)
    else:
        softmax_io = 2.0 * scores * e
        attn = gemm_cost(score, context, kernel="attention", launches=4, flops=attn_flops,
                         nbytes=score.bytes + softmax_io + context.bytes + cache_io)
        attn_bwd = gemm_cost(score, dv, context, dv, kernel="attention", launches=6,
                             flops=2.0 * (score.flops + context.flops) + 8.0 * scores,
                             nbytes=2.0 * (score.bytes + context.bytes) + 3.0 * scores * e)
    act, act_bwd = ffn_activation_costs(spec.gated_ffn, tokens, ffn, e)

    def gemm(x: Gemm) -> Cost:
        return gemm_cost(x)

    forward = {"norm1": norm(), "qkv": gemm(g["qkv"]), "attn": attn, "out_proj": gemm(g["out_proj"])}
    if not spec.parallel_block:
        forward["norm2"] = norm()
    forward.update({"fc1": gemm(g["fc1"]), "act": act, "fc2": gemm(g["fc2"])})

    backward: dict[str, Cost] = {}
    for name in ("fc2",):
        d, w = gemm_backward(g[name])
        backward[f"{name}_dgrad"], backward[f"{name}_wgrad"] = gemm(d), gemm(w)
    backward["act_bwd"] = act_bwd
    d, w = gemm_backward(g["fc1"])
    backward["fc1_dgrad"], backward["fc1_wgrad"] = gemm(d), gemm(w)
    if not spec.parallel_block:
        backward["norm2_bwd"] = norm_bwd()
    d, w = gemm_backward(g["out_proj"])
    backward["out_proj_dgrad"], backward["out_proj_wgrad"] = gemm(d), gemm(w)
    backward["attn_bwd"] = attn_bwd
    d, w = gemm_backward(g["qkv"])
    backward["qkv_dgrad"], backward["qkv_wgrad"] = gemm(d), gemm(w)
    backward["norm1_bwd"] = norm_bwd()

    norm_params = h * (2 if spec.norm == "layernorm" and spec.bias else 1)
    qkv_width = shard.q_width + 2 * shard.kv_width
    fc1_width = ffn * (2 if spec.gated_ffn else 1)
    bias = 1 if spec.bias else 0
    params = {
        "fc2_wgrad": ffn * h + bias * h,
        "fc1_wgrad": h * fc1_width + bias * fc1_width,
        "out_proj_wgrad": shard.q_width * h + bias * h,
        "qkv_wgrad": h * qkv_width + bias * qkv_width,
        "norm1_bwd": norm_params,
    }
    if not spec.parallel_block:
        params["norm2_bwd"] = norm_params
    return BlockCosts(forward=forward, backward=backward, params=params, tp_bytes=float(tokens * h * e),
                      shard=shard, gemms=g)
