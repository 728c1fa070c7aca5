"""One training step of a transformer under tensor × pipeline × data parallelism, as a trace.

Layout: ``rank = pp_index·(dp·tp) + dp_index·tp + tp_index``; communicators
``tp``, ``dp`` and ``pp`` (pp groups ordered by stage), plus ``embd`` (first and
last stage) when tied embeddings span stages. One program per pipeline stage;
all TP × DP ranks of a stage share it.

Streams: ``compute``; ``tp_comm`` (tensor-parallel collectives, on the critical
path); ``dp_comm`` (gradient buckets, overlapping the backward pass);
``pp_fwd`` (activations: recv from the previous stage, send to the next) and
``pp_bwd`` (gradients, the other way). Activations and gradients travel on two
streams so that each stream's sends and recvs stay in micro-batch order on
every stage, which keeps the in-order streams free of deadlock.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from commsim.config import StrictModel, validate
from commsim.errors import ConfigError
from commsim.units import Bytes
from commsim.workloads._builder import ProgramBuilder
from commsim.workloads._costs import BlockCosts, Cost, block_costs, gemm_cost, memory_cost
from commsim.workloads._dtypes import Dtype, dtype_bytes
from commsim.workloads._gemm import Gemm, gemm_backward
from commsim.workloads.models import TransformerSpec, load_model, parameter_count
from commsim.workloads.trace import Algorithm, Program, Trace

__all__ = ["TrainingConfig", "one_f_one_b", "training_trace"]

ADAM_FLOPS_PER_PARAM = 12.0
"""FLOP per parameter of one Adam update (moments, bias correction, update)."""


class TrainingConfig(StrictModel):
    """Parameters of :func:`training_trace`, with their defaults.

    Attributes
    ----------
    tp, pp, dp:
        Tensor-, pipeline- and data-parallel degrees (default 1 each).
    micro_batch_size:
        Sequences per micro-batch (default 1).
    num_micro_batches:
        Micro-batches per step and pipeline (gradient accumulation); default
        ``2·pp`` when ``pp > 1``, else 1.
    seq_len:
        Tokens per sequence; default the model's ``default_seq_len``.
    dtype, grad_dtype:
        Element type of weights and activations (default bf16) and of the
        gradients that data parallelism all-reduces (default fp32, as with
        fp32 main gradients in mixed precision).
    bucket_size:
        Gradient bucket size for the data-parallel all-reduce (default 25 MiB,
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
        stages take one extra layer (default false: an error).
    tp_algorithm, dp_algorithm:
        Collective algorithm requested for TP and DP collectives (default auto).
    optimizer_bytes_per_param:
        Memory traffic of the optimizer step per parameter (default 30: Adam
        with fp32 master weights reads gradient, master, two moments — 16 B —
        and writes master, moments and the 16-bit weights — 14 B).
    track_memory:
        Emit alloc/free ops for weights, gradients, optimizer state and each
        micro-batch's activations (default true).
    """

    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    dp: int = Field(default=1, ge=1)
    micro_batch_size: int = Field(default=1, ge=1)
    num_micro_batches: int | None = Field(default=None, ge=1)
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

    @property
    def micro_batches(self) -> int:
        """The number of micro-batches with the default applied."""
        if self.num_micro_batches is not None:
            return self.num_micro_batches
        return 2 * self.pp if self.pp > 1 else 1

    @property
    def world(self) -> int:
        """Number of ranks, ``tp·pp·dp``."""
        return self.tp * self.pp * self.dp


def one_f_one_b(stage: int, stages: int, micro_batches: int) -> list[tuple[str, int]]:
    """The 1F1B schedule of one pipeline stage: ``("F", j)`` / ``("B", j)`` in execution order.

    Warm-up: ``min(stages - stage - 1, micro_batches)`` forwards; steady state:
    alternate one forward and one backward; cool-down: the remaining backwards.

    >>> one_f_one_b(0, 2, 3)
    [('F', 0), ('F', 1), ('B', 0), ('F', 2), ('B', 1), ('B', 2)]
    >>> one_f_one_b(1, 2, 3)
    [('F', 0), ('B', 0), ('F', 1), ('B', 1), ('F', 2), ('B', 2)]
    """
    warmup = min(stages - stage - 1, micro_batches)
    order = [("F", j) for j in range(warmup)]
    for i in range(micro_batches - warmup):
        order += [("F", warmup + i), ("B", i)]
    order += [("B", j) for j in range(micro_batches - warmup, micro_batches)]
    return order


def _stage_layers(spec: TransformerSpec, config: TrainingConfig) -> list[list[int]]:
    layers, pp = spec.layers, config.pp
    if pp > layers:
        raise ConfigError(field="pp", value=pp, rule=f"exceeds the {layers} layers of {spec.name}",
                          fix=f"use at most {layers} pipeline stages")
    if layers % pp and not config.uneven_layers:
        divisors = [d for d in range(1, layers + 1) if layers % d == 0]
        raise ConfigError(field="pp", value=pp, rule=f"does not divide the {layers} layers of {spec.name}",
                          fix=f"use pp from {divisors}, or set uneven_layers (the first {layers % pp} stages "
                              "then take one extra layer)")
    base, extra = divmod(layers, pp)
    out, start = [], 0
    for stage in range(pp):
        count = base + (1 if stage < extra else 0)
        out.append(list(range(start, start + count)))
        start += count
    return out


class _Step:
    """Shared, precomputed quantities of one training step."""

    def __init__(self, spec: TransformerSpec, config: TrainingConfig) -> None:
        self.spec, self.config = spec, config
        self.seq = config.seq_len or spec.default_seq_len
        if self.seq > spec.max_seq_len:
            raise ConfigError(field="seq_len", value=self.seq, rule=f"exceeds {spec.name}'s max_seq_len "
                              f"({spec.max_seq_len})", fix=f"give a sequence length of at most {spec.max_seq_len}")
        self.tokens = config.micro_batch_size * self.seq
        tp = config.tp
        if config.sequence_parallel and self.tokens % tp:
            raise ConfigError(field="sequence_parallel", value=True,
                              rule=f"needs the {self.tokens} tokens of a micro-batch to split evenly over tp={tp}",
                              fix="choose a sequence length or micro-batch size divisible by tp, or turn "
                                  "sequence parallelism off")
        self.e = dtype_bytes(config.dtype)
        self.grad_e = dtype_bytes(config.grad_dtype, field="grad_dtype")
        self.block: BlockCosts = block_costs(
            spec, batch=config.micro_batch_size, seq_len=self.seq, tp=tp, dtype=config.dtype,
            sequence_parallel=config.sequence_parallel, flash_attention=config.flash_attention,
            strict_heads=config.strict_heads)
        self.stages = _stage_layers(spec, config)
        h, e, T = spec.hidden, self.e, self.tokens
        self.sp = config.sequence_parallel and tp > 1
        norm_tokens = T / tp if self.sp else T
        vocab_local = self.block.shard.vocab
        self.p2p_bytes = T * h * e / (tp if self.sp else 1)
        self.embed = memory_cost(1.0 * T * h, 3.0 * T * h * e, launches=2)    # gather, add positions + dropout
        self.embed_bwd = memory_cost(1.0 * T * h, 2.0 * T * h * e, launches=2)
        self.final_norm = memory_cost(8.0 * norm_tokens * h, 2.0 * norm_tokens * h * e)
        self.final_norm_bwd = memory_cost(10.0 * norm_tokens * h, 3.0 * norm_tokens * h * e)
        head = Gemm("lm_head", m=T, n=vocab_local, k=h, element_bytes=int(e))
        head_dgrad, head_wgrad = gemm_backward(head)
        self.lm_head = gemm_cost(head)
        self.lm_head_dgrad = gemm_cost(head_dgrad)
        self.lm_head_wgrad = gemm_cost(head_wgrad)
        # vocab-parallel cross entropy: max, exp, sum, log, target pick (five kernels); backward two
        self.loss = memory_cost(5.0 * T * vocab_local, T * vocab_local * (e + 4), launches=5)
        self.loss_bwd = memory_cost(3.0 * T * vocab_local, T * vocab_local * (4 + e), launches=2)
        self.loss_stats_bytes = 3.0 * T * 4                                  # max, target logit, sum-exp (fp32)
        norm_params = h * (2 if spec.norm == "layernorm" and spec.bias else 1)
        self.head_params = vocab_local * h
        self.embed_params = vocab_local * h + (spec.max_seq_len * h if spec.position == "learned" else 0)
        self.final_norm_params = norm_params
        self.tied_across = spec.tied_embeddings and config.pp > 1
        # Activation memory per layer and micro-batch (Korthikanti et al. 2022, 16-bit activations).
        s, b, a = self.seq, config.micro_batch_size, spec.heads
        per_layer = s * b * h * (34.0 / tp if self.sp else 10.0 + 24.0 / tp)
        if not config.flash_attention:
            per_layer += 5.0 * a * s * s * b / tp
        self.act_per_layer = per_layer

    def stage_producers(self, stage: int) -> list[tuple[str, int]]:
        """(backward op suffix, parameters whose gradient it completes), in backward order."""
        last = stage == len(self.stages) - 1
        out: list[tuple[str, int]] = []
        if last:
            head = self.head_params if (not self.spec.tied_embeddings or self.config.pp > 1) else 0
            out += [("lm_head_wgrad", head), ("final_norm_bwd", self.final_norm_params)]
        for layer in reversed(self.stages[stage]):
            for name in self.block.backward:
                if name in self.block.params:
                    out.append((f"{layer}.{name}", self.block.params[name]))
        if stage == 0:
            out.append(("embed_wgrad", self.embed_params))
        return out


def training_trace(model: TransformerSpec | str, config: TrainingConfig | dict[str, Any] | None = None,
                   **overrides: Any) -> Trace:
    """Generate one training step of ``model`` (a spec or a catalog name) as a :class:`Trace`.

    ``config`` is a :class:`TrainingConfig` (or a dict of its fields); keyword
    ``overrides`` replace single fields. Invalid combinations raise
    :class:`~commsim.errors.ConfigError`.

    >>> trace = training_trace("gpt3-175b", tp=8, pp=8, dp=16)
    >>> trace.ranks, len(trace.programs), sorted(trace.communicators)
    (1024, 8, ['dp', 'embd', 'pp', 'tp'])
    """
    spec = model if isinstance(model, TransformerSpec) else load_model(model)
    data = config.model_dump() if isinstance(config, TrainingConfig) else dict(config or {})
    data.update(overrides)
    cfg = validate(TrainingConfig, data)
    step = _Step(spec, cfg)
    programs = [_stage_program(step, stage) for stage in range(cfg.pp)]
    tp, dp, pp = cfg.tp, cfg.dp, cfg.pp
    width = tp * dp

    def rank(p: int, d: int, t: int) -> int:
        return p * width + d * tp + t

    communicators = {
        "tp": [[rank(p, d, t) for t in range(tp)] for p in range(pp) for d in range(dp)],
        "dp": [[rank(p, d, t) for d in range(dp)] for p in range(pp) for t in range(tp)],
        "pp": [[rank(p, d, t) for p in range(pp)] for d in range(dp) for t in range(tp)],
    }
    if step.tied_across:
        communicators["embd"] = [[rank(0, d, t), rank(pp - 1, d, t)] for d in range(dp) for t in range(tp)]
    params = {f"stage{s}": sum(n for _, n in step.stage_producers(s)) for s in range(pp)}
    total = parameter_count(spec)
    metadata = {
        "generator": "commsim.workloads.training_trace",
        "model": spec.name,
        "config": cfg.model_dump(mode="json"),
        "seq_len": step.seq,
        "micro_batches": cfg.micro_batches,
        "tokens_per_step": step.tokens * cfg.micro_batches * dp,
        "parameters": total,
        "parameters_per_rank": params,
        "model_flops_per_step": 6.0 * total * step.tokens * cfg.micro_batches * dp,
        "streams": ["compute", "tp_comm", "dp_comm", "pp_fwd", "pp_bwd"],
    }
    name = f"{spec.name}-train-tp{tp}-pp{pp}-dp{dp}"
    return Trace.model_construct(name=name, ranks=cfg.world, communicators=communicators, programs=programs,
                                 metadata=metadata)


class _StageEmitter:
    """Emits the forward and backward passes of one pipeline stage into a :class:`ProgramBuilder`."""

    def __init__(self, step: _Step, stage: int) -> None:
        self.step, self.stage = step, stage
        cfg = step.config
        self.first, self.last = stage == 0, stage == cfg.pp - 1
        width = cfg.tp * cfg.dp
        self.b = ProgramBuilder(f"stage{stage}", f"{stage * width}:{(stage + 1) * width}", dtype=cfg.dtype)
        self.tp = cfg.tp > 1
        self.pending: str | None = None     # a cross-stream op the next compute must wait for
        self.last_compute: str | None = None
        self.layers = step.stages[stage]
        self.grad_ready: list[tuple[str, str]] = []
        self.buckets = _Buckets(self, step.stage_producers(stage))

    # -- primitives --------------------------------------------------------------------------

    def compute(self, op_id: str, cost: Cost, tags: dict[str, Any], *extra: str | None, wait: bool = True) -> str:
        """A compute op; with ``wait`` it also waits for the pending cross-stream op (and consumes it)."""
        self.last_compute = self.b.compute(op_id, cost, deps=(self.pending if wait else None, *extra), tags=tags)
        if wait:
            self.pending = None
        return self.last_compute

    def tp_coll(self, op_id: str, op: str, nbytes: float, tags: dict[str, Any]) -> None:
        if not self.tp:
            return
        self.pending = self.b.collective(op_id, op, nbytes, "tp", deps=(self.pending, self.last_compute),
                                         tags=tags, stream="tp_comm", algorithm=self.step.config.tp_algorithm)

    def tp_reduce(self, op_id: str, tags: dict[str, Any], nbytes: float | None = None) -> None:
        """The TP reduction after a row-parallel GEMM: all-reduce, or reduce-scatter with SP."""
        size = self.step.block.tp_bytes if nbytes is None else nbytes
        self.tp_coll(op_id, "reduce_scatter" if self.step.sp else "all_reduce", size, tags)

    def tp_gather(self, op_id: str, tags: dict[str, Any]) -> None:
        """The all-gather before a column-parallel GEMM under SP (nothing without SP)."""
        if self.step.sp:
            self.tp_coll(op_id, "all_gather", self.step.block.tp_bytes, tags)

    # -- passes ------------------------------------------------------------------------------

    def forward(self, j: int) -> None:
        step, cfg = self.step, self.step.config
        tags: dict[str, Any] = {"micro_batch": j, "phase": "fwd"}
        p = f"f{j}"
        if not self.first:
            self.pending = self.b.recv(f"{p}.recv", "pp:-1", step.p2p_bytes, j, tags=tags, stream="pp_fwd")
        if cfg.track_memory:
            self.b.alloc(f"{p}.alloc", f"act{j}", step.act_per_layer * len(self.layers), tags=tags)
        if self.first:
            self.compute(f"{p}.embed", step.embed, tags)
            self.tp_reduce(f"{p}.embed_ar", tags)
        fwd = step.block.forward
        parallel = step.spec.parallel_block
        for layer in self.layers:
            lt = {**tags, "layer": layer}
            q = f"{p}.{layer}"
            self.compute(f"{q}.norm1", fwd["norm1"], lt)
            self.tp_gather(f"{q}.ag1", lt)
            for name in ("qkv", "attn", "out_proj"):
                self.compute(f"{q}.{name}", fwd[name], lt)
            if not parallel:
                self.tp_reduce(f"{q}.tp1", lt)
                self.compute(f"{q}.norm2", fwd["norm2"], lt)
                self.tp_gather(f"{q}.ag2", lt)
            for name in ("fc1", "act", "fc2"):
                self.compute(f"{q}.{name}", fwd[name], lt)
            self.tp_reduce(f"{q}.tp2", lt)
        if self.last:
            self.compute(f"{p}.final_norm", step.final_norm, tags)
            self.tp_gather(f"{p}.head_ag", tags)
            self.compute(f"{p}.lm_head", step.lm_head, tags)
            self.compute(f"{p}.loss", step.loss, tags)
            if self.tp:
                self.pending = self.b.collective(f"{p}.loss_ar", "all_reduce", step.loss_stats_bytes, "tp",
                                                 deps=(self.last_compute,), tags=tags, stream="tp_comm",
                                                 algorithm=cfg.tp_algorithm)
        else:
            self.b.send(f"{p}.send", "pp:+1", step.p2p_bytes, j, deps=(self.pending, self.last_compute), tags=tags,
                        stream="pp_fwd")
            self.pending = None

    def backward(self, j: int, final: bool) -> None:
        step, cfg = self.step, self.step.config
        tags: dict[str, Any] = {"micro_batch": j, "phase": "bwd"}
        p = f"b{j}"
        bwd = step.block.backward
        parallel = step.spec.parallel_block
        if not self.last:
            self.pending = self.b.recv(f"{p}.recv", "pp:+1", step.p2p_bytes, j, tags=tags, stream="pp_bwd")
        if self.last:
            self.compute(f"{p}.loss_bwd", step.loss_bwd, tags)
            self.compute(f"{p}.lm_head_dgrad", step.lm_head_dgrad, tags)
            self.tp_reduce(f"{p}.head_tp", tags)
            self.grad(f"{p}.lm_head_wgrad", step.lm_head_wgrad, tags, "lm_head_wgrad", final, wait=False)
            self.grad(f"{p}.final_norm_bwd", step.final_norm_bwd, tags, "final_norm_bwd", final)
        for layer in reversed(self.layers):
            lt = {**tags, "layer": layer}
            q = f"{p}.{layer}"
            self.tp_gather(f"{q}.ag2", lt)
            self.compute(f"{q}.fc2_dgrad", bwd["fc2_dgrad"], lt)
            self.grad(f"{q}.fc2_wgrad", bwd["fc2_wgrad"], lt, f"{layer}.fc2_wgrad", final)
            self.compute(f"{q}.act_bwd", bwd["act_bwd"], lt)
            self.compute(f"{q}.fc1_dgrad", bwd["fc1_dgrad"], lt)
            if not parallel:
                self.tp_reduce(f"{q}.tp2", lt)
                self.grad(f"{q}.fc1_wgrad", bwd["fc1_wgrad"], lt, f"{layer}.fc1_wgrad", final, wait=False)
                self.grad(f"{q}.norm2_bwd", bwd["norm2_bwd"], lt, f"{layer}.norm2_bwd", final)
                self.tp_gather(f"{q}.ag1", lt)
            self.compute(f"{q}.out_proj_dgrad", bwd["out_proj_dgrad"], lt)
            self.grad(f"{q}.out_proj_wgrad", bwd["out_proj_wgrad"], lt, f"{layer}.out_proj_wgrad", final)
            self.compute(f"{q}.attn_bwd", bwd["attn_bwd"], lt)
            self.compute(f"{q}.qkv_dgrad", bwd["qkv_dgrad"], lt)
            self.tp_reduce(f"{q}.tp1", lt)
            if parallel:
                self.grad(f"{q}.fc1_wgrad", bwd["fc1_wgrad"], lt, f"{layer}.fc1_wgrad", final, wait=False)
            self.grad(f"{q}.qkv_wgrad", bwd["qkv_wgrad"], lt, f"{layer}.qkv_wgrad", final, wait=False)
            self.grad(f"{q}.norm1_bwd", bwd["norm1_bwd"], lt, f"{layer}.norm1_bwd", final)
        if self.first:
            self.tp_gather(f"{p}.embed_ag", tags)
            self.grad(f"{p}.embed_wgrad", step.embed_bwd, tags, "embed_wgrad", final)
        else:
            self.b.send(f"{p}.send", "pp:-1", step.p2p_bytes, j, deps=(self.pending, self.last_compute), tags=tags,
                        stream="pp_bwd")
            self.pending = None
        if cfg.track_memory:
            self.b.free(f"{p}.free", f"act{j}", deps=(self.pending,), tags=tags)

    def grad(self, op_id: str, cost: Cost, tags: dict[str, Any], producer: str, final: bool,
             wait: bool = True) -> None:
        """A backward op that completes parameter gradients; in the last micro-batch it feeds the buckets.

        Weight-gradient GEMMs right after a TP reduction pass ``wait=False``: they
        overlap with it, and the next op waits instead.
        """
        self.compute(op_id, cost, tags, wait=wait)
        if final:
            self.grad_ready.append((op_id, producer))
            self.buckets.add(op_id, producer)


class _Buckets:
    """Groups gradients into buckets and emits one data-parallel all-reduce per full bucket."""

    def __init__(self, emitter: _StageEmitter, producers: list[tuple[str, int]]) -> None:
        step = emitter.step
        self.emitter = emitter
        self.params = dict(producers)
        self.size = step.config.bucket_size
        self.grad_e = step.grad_e
        self.active = step.config.dp > 1
        self.current: list[str] = []
        self.current_bytes = 0.0
        self.count = 0
        self.issued: list[str] = []

    def add(self, op_id: str, producer: str) -> None:
        count = self.params.get(producer, 0)
        if not self.active or count == 0:
            return
        self.current.append(op_id)
        self.current_bytes += count * self.grad_e
        if self.current_bytes >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.current:
            return
        cfg = self.emitter.step.config
        self.issued.append(self.emitter.b.collective(
            f"dp.bucket{self.count}", "all_reduce", self.current_bytes, "dp", deps=self.current,
            tags={"phase": "grad_sync", "bucket": self.count}, stream="dp_comm", algorithm=cfg.dp_algorithm))
        self.count += 1
        self.current, self.current_bytes = [], 0.0


def _stage_program(step: _Step, stage: int) -> Program:
    cfg = step.config
    emitter = _StageEmitter(step, stage)
    params = sum(n for _, n in step.stage_producers(stage))
    b = emitter.b
    if cfg.track_memory:
        none: dict[str, Any] = {"phase": "setup"}
        b.alloc("weights", "weights", params * step.e, tags=none)
        b.alloc("grads", "grads", params * step.grad_e, tags=none)
        b.alloc("optimizer_state", "optimizer_state", params * 12.0, tags=none)
    micro_batches = cfg.micro_batches
    for phase, j in one_f_one_b(stage, cfg.pp, micro_batches):
        if phase == "F":
            emitter.forward(j)
        else:
            emitter.backward(j, final=j == micro_batches - 1)
    buckets = emitter.buckets
    buckets.flush()
    waits = list(buckets.issued)
    if step.tied_across and (emitter.first or emitter.last):
        source = "embed_wgrad" if emitter.first else "lm_head_wgrad"
        op_id = next(op for op, producer in emitter.grad_ready if producer == source)
        waits.append(b.collective("dp.embd", "all_reduce", step.head_params * step.grad_e, "embd",
                                  deps=(op_id, *buckets.issued[-1:]), tags={"phase": "grad_sync"},
                                  stream="dp_comm", algorithm=cfg.dp_algorithm))
    emitter.pending = None
    emitter.compute("optimizer", memory_cost(ADAM_FLOPS_PER_PARAM * params, cfg.optimizer_bytes_per_param * params),
                    {"phase": "optimizer"}, *waits)
    return b.build()
