"""The parameters of one generated training step, and the rules that tie them to a model.

:class:`TrainingConfig` holds the fields (scenario files and ``commsim train``
map onto them); :func:`check_training` raises one :class:`ConfigError` per
rule a combination breaks, naming field, value, rule and fix.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from commsim.config import StrictModel
from commsim.errors import ConfigError
from commsim.units import Bytes
from commsim.workloads._dtypes import Dtype
from commsim.workloads.models import TransformerSpec
from commsim.workloads.trace import Algorithm

__all__ = ["TrainingConfig", "check_training"]


class TrainingConfig(StrictModel):
    """Parameters of :func:`~commsim.workloads.training_trace`, with their defaults.

    Attributes
    ----------
    tp, pp, dp, cp:
        Tensor-, pipeline-, data- and context-parallel degrees (default 1 each).
        ``world = tp·cp·dp·pp`` ranks.
    micro_batch_size:
        Sequences per micro-batch (default 1).
    num_micro_batches:
        Micro-batches per step and pipeline (gradient accumulation); default
        from ``global_batch_size`` when given, else ``2·pp`` when ``pp > 1``, else 1.
    global_batch_size:
        Sequences per step over all data-parallel replicas (optional); must be
        a multiple of ``micro_batch_size·dp`` and then sets the micro-batches.
    seq_len:
        Tokens per sequence; default the model's ``default_seq_len``.
    dtype, grad_dtype:
        Element type of weights and activations (default bf16) and of the
        gradients that data parallelism reduces (default fp32, as with
        fp32 main gradients in mixed precision).
    bucket_size:
        Gradient bucket size for the data-parallel reduction (default 25 MiB,
        PyTorch DDP's). Parameters are not split: a bucket closes once it
        reaches the size, so a large parameter makes a bucket of its own.
    sequence_parallel:
        Replace each TP all-reduce by a reduce-scatter and an all-gather and run
        norms on ``tokens/tp`` (default false).
    flash_attention:
        Attention without a score matrix in memory (default true).
    strict_heads:
        TP must divide the attention heads (default true; false sizes GEMMs by
        hidden width as the T3 study does).
    uneven_layers:
        Allow ``pp`` not dividing the layers: the first ``layers mod pp``
        stages take one extra layer (default false: an error; not with
        virtual pipeline stages).
    tp_algorithm, dp_algorithm:
        Collective algorithm requested for TP and DP collectives (default auto).
    optimizer_bytes_per_param:
        Memory traffic of the optimizer step per parameter (default 30: Adam
        with fp32 master weights reads gradient, master, two moments — 16 B —
        and writes master, moments and the 16-bit weights — 14 B).
    track_memory:
        Emit alloc/free ops for weights, gradients, optimizer state and each
        micro-batch's activations (default true).
    recompute:
        Activation recomputation (default ``none``). ``full``: each layer keeps
        only its input and its forward is re-run right before its backward
        (Megatron's full/uniform granularity, one layer per checkpoint).
        ``selective``: the core attention (score GEMM, softmax, dropout,
        context GEMM) is re-run before its backward and its score-sized
        activations are not kept (Megatron's selective mode). With flash
        attention that is exactly what the flash backward already does, so
        ``selective`` then adds no op and saves no further memory.
    virtual_pipeline_stages:
        Model chunks per pipeline stage ``v`` (default 1: plain 1F1B). With
        ``v > 1``, Megatron's interleaved 1F1B: virtual stage ``c·pp + s``
        (chunk ``c`` of stage ``s``) holds layers ``[(c·pp+s)·L/(pp·v), …)``;
        the bubble shrinks to ``(pp-1)/(v·m)``. Needs ``pp > 1``, layers
        divisible by ``pp·v`` and micro-batches divisible by ``pp``.
    distributed_optimizer:
        Megatron's distributed optimizer, i.e. ZeRO stage 1 (default false).
    zero_stage:
        0 (all-reduce, everything replicated), 1 (optimizer state sharded;
        gradients reduce-scattered and parameters all-gathered over DP once
        per step), 2 (gradients sharded too, reduce-scattered every
        micro-batch), 3 (FSDP: parameters sharded as well, each layer's
        all-gathered before its forward and its backward, its gradients
        reduce-scattered after its backward). The effective stage is the
        larger of ``zero_stage`` and 1 when ``distributed_optimizer`` is set.
    num_experts, top_k, capacity_factor, moe_layer_frequency, ep:
        Mixture of experts (default ``num_experts=0``: dense). Every
        ``moe_layer_frequency``-th layer (layer index divisible by it) has
        ``num_experts`` FFN experts, ``top_k`` per token, at most
        ``ceil(capacity_factor·tokens·top_k/num_experts)`` tokens per expert
        and source rank; experts are sharded over ``ep`` expert-parallel ranks
        taken from the data-parallel dimension (``ep`` divides ``dp``). With
        ``tp > 1`` sequence parallelism is required (Megatron's rule) and the
        TP ranks share each expert by FFN width (see :mod:`commsim.workloads._moe`).
    """

    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    dp: int = Field(default=1, ge=1)
    cp: int = Field(default=1, ge=1)
    micro_batch_size: int = Field(default=1, ge=1)
    num_micro_batches: int | None = Field(default=None, ge=1)
    global_batch_size: int | None = Field(default=None, ge=1)
    seq_len: int | None = Field(default=None, ge=1)
    dtype: Dtype = "bf16"
    grad_dtype: Dtype = "fp32"
    bucket_size: Bytes = Field(default=25 * 2**20, gt=0)
    sequence_parallel: bool = False
    flash_attention: bool = True
    strict_heads: bool = True
    uneven_layers: bool = False
    tp_algorithm: Algorithm = "auto"
    dp_algorithm: Algorithm = "auto"
    optimizer_bytes_per_param: float = Field(default=30.0, ge=0)
    track_memory: bool = True
    recompute: Literal["none", "selective", "full"] = "none"
    virtual_pipeline_stages: int = Field(default=1, ge=1)
    distributed_optimizer: bool = False
    zero_stage: Literal[0, 1, 2, 3] = 0
    ep: int = Field(default=1, ge=1)
    num_experts: int = Field(default=0, ge=0)
    top_k: int = Field(default=2, ge=1)
    capacity_factor: float = Field(default=1.0, gt=0)
    moe_layer_frequency: int = Field(default=1, ge=1)

    @property
    def micro_batches(self) -> int:
        """The number of micro-batches with the default applied."""
        if self.num_micro_batches is not None:
            return self.num_micro_batches
        if self.global_batch_size is not None:
            return max(1, self.global_batch_size // (self.micro_batch_size * self.dp))
        return 2 * self.pp if self.pp > 1 else 1

    @property
    def world(self) -> int:
        """Number of ranks, ``tp·cp·dp·pp``."""
        return self.tp * self.cp * self.dp * self.pp

    @property
    def zero(self) -> int:
        """The effective ZeRO stage (``distributed_optimizer`` counts as stage 1)."""
        return max(self.zero_stage, 1 if self.distributed_optimizer else 0)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_training(spec: TransformerSpec, cfg: TrainingConfig) -> None:
    """Raise a :class:`ConfigError` for the first rule ``cfg`` breaks on ``spec`` (TP sharding is checked
    where the block is sized, sequence-length limits where the step is set up)."""
    v, pp, layers = cfg.virtual_pipeline_stages, cfg.pp, spec.layers
    if pp > layers:
        raise ConfigError(field="pp", value=pp, rule=f"exceeds the {layers} layers of {spec.name}",
                          fix=f"use at most {layers} pipeline stages")
    if v > 1:
        if pp == 1:
            raise ConfigError(field="virtual_pipeline_stages", value=v,
                              rule="needs pipeline parallelism (pp = 1 has no pipeline to interleave)",
                              fix="set pp of at least 2, or virtual_pipeline_stages 1")
        if layers % (pp * v):
            raise ConfigError(field="virtual_pipeline_stages", value=v,
                              rule=f"with pp={pp} needs the {layers} layers of {spec.name} divisible by pp·v = {pp * v}",
                              fix=f"use virtual_pipeline_stages from {_divisors(layers // pp)}" if layers % pp == 0
                              else f"use a pp that divides {layers} first")
        if cfg.micro_batches % pp:
            raise ConfigError(field="num_micro_batches", value=cfg.micro_batches,
                              rule=f"must be a multiple of pp={pp} with interleaved 1F1B (Megatron's rule)",
                              fix=f"use a multiple of {pp} micro-batches, e.g. {pp * max(1, cfg.micro_batches // pp)}, "
                                  "or virtual_pipeline_stages 1")
    elif layers % pp and not cfg.uneven_layers:
        raise ConfigError(field="pp", value=pp, rule=f"does not divide the {layers} layers of {spec.name}",
                          fix=f"use pp from {_divisors(layers)}, or set uneven_layers (the first {layers % pp} "
                              "stages then take one extra layer)")
    if cfg.global_batch_size is not None:
        per = cfg.micro_batch_size * cfg.dp
        if cfg.global_batch_size % per:
            raise ConfigError(field="global_batch_size", value=cfg.global_batch_size,
                              rule=f"is not a multiple of micro_batch_size·dp = {cfg.micro_batch_size}·{cfg.dp} = {per}",
                              fix=f"use a multiple of {per}, e.g. {per * max(1, cfg.global_batch_size // per)}")
        if cfg.num_micro_batches is not None and cfg.num_micro_batches * per != cfg.global_batch_size:
            raise ConfigError(field="num_micro_batches", value=cfg.num_micro_batches,
                              rule=f"disagrees with global_batch_size {cfg.global_batch_size} "
                                   f"(= {cfg.global_batch_size // per} micro-batches of {cfg.micro_batch_size} on "
                                   f"{cfg.dp} replicas)",
                              fix="give only one of num_micro_batches and global_batch_size")
    seq = cfg.seq_len or spec.default_seq_len
    if seq % cfg.cp:
        raise ConfigError(field="cp", value=cfg.cp, rule=f"does not divide the sequence length {seq}",
                          fix=f"use cp from {_divisors(seq)[:12]}, or a sequence length divisible by {cfg.cp}")
    if cfg.cp > 1 and not cfg.flash_attention:
        raise ConfigError(field="cp", value=cfg.cp,
                          rule="needs flash_attention (ring attention runs the blockwise flash kernel)",
                          fix="set flash_attention true, or cp 1")
    _check_moe(spec, cfg)


def _check_moe(spec: TransformerSpec, cfg: TrainingConfig) -> None:
    experts, ep = cfg.num_experts, cfg.ep
    if experts == 0:
        if ep > 1:
            raise ConfigError(field="ep", value=ep, rule="needs mixture-of-experts layers (num_experts is 0)",
                              fix="set num_experts to a multiple of ep, or ep 1")
        return
    if cfg.tp > 1 and not cfg.sequence_parallel:
        raise ConfigError(field="sequence_parallel", value=False,
                          rule=f"must be true for mixture-of-experts layers with tp={cfg.tp} (Megatron's rule: "
                               "each TP rank routes its own sequence shard)",
                          fix="set sequence_parallel true, or tp 1")
    if spec.parallel_block:
        raise ConfigError(field="num_experts", value=experts,
                          rule=f"mixture-of-experts layers are generated for sequential blocks only, and "
                               f"{spec.name} has parallel attention and FFN",
                          fix="use num_experts 0 with this model, or a model with parallel_block false")
    if cfg.top_k > experts:
        raise ConfigError(field="top_k", value=cfg.top_k, rule=f"exceeds num_experts ({experts})",
                          fix=f"route each token to at most {experts} experts")
    if experts % ep:
        raise ConfigError(field="num_experts", value=experts, rule=f"is not divisible by ep={ep}",
                          fix=f"use ep from {_divisors(experts)}, or a multiple of {ep} experts")
    if cfg.dp % ep:
        raise ConfigError(field="ep", value=ep, rule=f"does not divide dp={cfg.dp} (experts are sharded over "
                          "ranks of the data-parallel dimension)",
                          fix=f"use ep from {[d for d in _divisors(cfg.dp) if experts % d == 0]}, or a dp that "
                              f"is a multiple of {ep}")
