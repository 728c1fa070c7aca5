"""One training step of a transformer under tensor × context × data × pipeline (× expert) parallelism, as a trace.

**Rank layout** (Megatron-LM's order tp-cp-dp-pp, tensor parallelism fastest)::

    rank = ((p·dp + d)·cp + c)·tp + t

for pipeline stage ``p``, data-parallel index ``d``, context-parallel index
``c`` and tensor-parallel index ``t``. Expert parallelism is carved out of the
data-parallel dimension: ``d = k·ep + x`` puts rank ``x`` of expert-parallel
group ``k``. Communicators:

* ``tp``: the ``t`` of one ``(p, d, c)``; ``cp``: the ``c`` of one ``(p, d, t)``
  (ring-attention peers), only when ``cp > 1``;
* ``dp``: every ``(d, c)`` of one ``(p, t)`` — the group that reduces dense
  gradients (data and context parallel ranks hold the same weights, as in
  Megatron's data-parallel-with-context group);
* ``ep``: the ``x`` of one ``(p, k, c, t)`` (token all-to-alls) and ``edp``: the
  ``(k, c)`` of one ``(p, x, t)`` (ranks holding the same experts, which reduce
  expert gradients), both only with mixture-of-experts layers;
* ``pp``: the stages of one ``(d, c, t)``, ordered by stage; ``embd``: first and
  last stage, when tied embeddings span stages.

One program per pipeline stage; all its TP × CP × DP ranks share it.

**Streams**: ``compute``; ``tp_comm`` (tensor-parallel collectives, on the
critical path); ``ep_comm`` (MoE dispatch/combine all-to-alls, on the critical
path); ``cp_send`` / ``cp_recv`` (ring-attention KV blocks, overlapping the
attention steps); ``dp_comm`` (gradient buckets and, with ZeRO, parameter
all-gathers after the optimizer, overlapping the backward pass); ``dp_gather``
(ZeRO-3 per-layer parameter all-gathers, prefetched one layer ahead);
``pp_fwd`` (activations) and ``pp_bwd`` (gradients). Sends and receives of one
direction stay on one stream in schedule order on every stage, which keeps the
in-order streams free of deadlock.

**Tags** let analysis attribute time: every compute, alloc and free op carries
``phase`` — ``fwd``, ``bwd``, ``recompute`` (forward work re-run in the backward
pass), ``optimizer``, ``grad_sync``, ``param_sync`` or ``setup`` — plus
``micro_batch``, ``layer`` and (with virtual stages) ``chunk`` where they apply;
every collective, send and recv also carries ``group``: ``tp``, ``cp``, ``ep``,
``dp``, ``edp``, ``pp`` or ``embd``.

**Schedule**: plain 1F1B, or Megatron's interleaved 1F1B with
``virtual_pipeline_stages`` (see :mod:`commsim.workloads._schedule`); in the
interleaved schedule activations leave the last stage for the first one
(``pp:+1%``) between model chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from commsim.config import validate
from commsim.errors import ConfigError
from commsim.workloads._activations import LayerActivations, layer_activations
from commsim.workloads._builder import ProgramBuilder
from commsim.workloads._costs import BlockCosts, Cost, block_costs, gemm_cost, memory_cost
from commsim.workloads._dtypes import dtype_bytes
from commsim.workloads._gemm import Gemm, gemm_backward
from commsim.workloads._moe import MoECosts, moe_costs
from commsim.workloads._schedule import one_f_one_b, pipeline_schedule
from commsim.workloads._training_config import TrainingConfig, check_training
from commsim.workloads.models import TransformerSpec, load_model, parameter_count
from commsim.workloads.trace import Program, Trace

__all__ = ["ADAM_FLOPS_PER_PARAM", "OPTIMIZER_STATE_BYTES", "TrainingConfig", "one_f_one_b", "training_trace"]

ADAM_FLOPS_PER_PARAM = 12.0
"""FLOP per parameter of one Adam update (moments, bias correction, update)."""

OPTIMIZER_STATE_BYTES = 12.0
"""Bytes of optimizer state per parameter: fp32 master weight and Adam's two fp32 moments."""


def _chunk_layers(spec: TransformerSpec, config: TrainingConfig) -> list[list[list[int]]]:
    """Layers of each (stage, chunk): Megatron's round-robin assignment of virtual stages."""
    layers, pp, v = spec.layers, config.pp, config.virtual_pipeline_stages
    if v > 1:
        per = layers // (pp * v)
        return [[list(range((c * pp + s) * per, (c * pp + s + 1) * per)) for c in range(v)] for s in range(pp)]
    base, extra = divmod(layers, pp)
    out, start = [], 0
    for stage in range(pp):
        count = base + (1 if stage < extra else 0)
        out.append([list(range(start, start + count))])
        start += count
    return out


class _Step:
    """Shared, precomputed quantities of one training step."""

    def __init__(self, spec: TransformerSpec, config: TrainingConfig) -> None:
        check_training(spec, config)
        self.spec, self.config = spec, config
        self.seq = config.seq_len or spec.default_seq_len
        if self.seq > spec.max_seq_len:
            raise ConfigError(field="seq_len", value=self.seq, rule=f"exceeds {spec.name}'s max_seq_len "
                              f"({spec.max_seq_len})", fix=f"give a sequence length of at most {spec.max_seq_len}")
        cp, tp, b = config.cp, config.tp, config.micro_batch_size
        self.local_seq = self.seq // cp
        self.tokens = b * self.local_seq
        if config.sequence_parallel and self.tokens % tp:
            raise ConfigError(field="sequence_parallel", value=True,
                              rule=f"needs the {self.tokens} tokens of a micro-batch{' per CP rank' if cp > 1 else ''}"
                                   f" to split evenly over tp={tp}",
                              fix="choose a sequence length or micro-batch size divisible by tp, or turn "
                                  "sequence parallelism off")
        self.e = dtype_bytes(config.dtype)
        self.grad_e = dtype_bytes(config.grad_dtype, field="grad_dtype")
        self.block: BlockCosts = block_costs(
            spec, batch=b, seq_len=self.local_seq, kv_len=self.seq if cp > 1 else None, tp=tp, dtype=config.dtype,
            sequence_parallel=config.sequence_parallel, flash_attention=config.flash_attention,
            strict_heads=config.strict_heads)
        self.chunks = _chunk_layers(spec, config)
        self.stages = [[layer for chunk in stage for layer in chunk] for stage in self.chunks]
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
        self.logits_bytes = 4.0 * T * vocab_local                            # fp32 softmax kept for the backward
        norm_params = h * (2 if spec.norm == "layernorm" and spec.bias else 1)
        self.head_params = vocab_local * h
        self.embed_params = vocab_local * h + (spec.max_seq_len * h if spec.position == "learned" else 0)
        self.final_norm_params = norm_params
        self.tied_across = spec.tied_embeddings and config.pp > 1
        shard = self.block.shard
        self.kv_block_bytes = 2.0 * T * shard.kv_width * e                   # this rank's K and V (ring attention)
        self.moe: MoECosts | None = None
        if config.num_experts:
            self.moe = moe_costs(spec, tokens=T // tp if self.sp else T, tp=tp, element_bytes=e,
                                 num_experts=config.num_experts,
                                 ep=config.ep, top_k=config.top_k, capacity_factor=config.capacity_factor)
        fc1_width = shard.ffn * (2 if spec.gated_ffn else 1)
        common = {"tokens": T, "kv_tokens": self.seq, "hidden": h,
                  "element_bytes": e, "tp": tp, "sequence_parallel": self.sp, "q_width": shard.q_width,
                  "kv_width": shard.kv_width, "fc1_width": fc1_width, "ffn_width": shard.ffn,
                  "heads": shard.heads, "flash_attention": config.flash_attention,
                  "parallel_block": spec.parallel_block, "recompute": config.recompute}
        self.dense_act: LayerActivations = layer_activations(**common)
        self.moe_act: LayerActivations | None = None
        if self.moe is not None:
            self.moe_act = layer_activations(**common, routed=self.moe.expert_rows, experts=config.num_experts,
                                             router_tokens=T // tp if self.sp else T)
        self.dense_group = config.dp * cp
        self.expert_group = config.dp * cp // config.ep

    # -- per-layer quantities ----------------------------------------------------------------

    def is_moe(self, layer: int) -> bool:
        """True when ``layer`` has a mixture-of-experts FFN."""
        return self.moe is not None and layer % self.config.moe_layer_frequency == 0

    def activations(self, layer: int) -> LayerActivations:
        """Activation bytes of ``layer`` (see :mod:`commsim.workloads._activations`)."""
        if self.is_moe(layer):
            assert self.moe_act is not None
            return self.moe_act
        return self.dense_act

    def layer_producers(self, layer: int) -> list[tuple[str, int]]:
        """(backward op name, parameters it completes) of one layer, in backward order."""
        out: list[tuple[str, int]] = []
        moe = self.is_moe(layer)
        for name in self.block.backward:
            if moe and name in ("fc2_wgrad", "fc1_wgrad"):
                continue
            if name in self.block.params:
                out.append((name, self.block.params[name]))
            if moe and name == "act_bwd":   # where the expert and router gradients appear
                assert self.moe is not None
                out += list(self.moe.expert_params.items()) + list(self.moe.dense_params.items())
        return out

    def layer_params(self, layer: int) -> tuple[int, int]:
        """(dense, expert) parameters of ``layer`` on one rank."""
        expert = self.moe.expert_params if self.moe is not None else {}
        dense = sum(n for name, n in self.layer_producers(layer) if name not in expert)
        return dense, sum(n for name, n in self.layer_producers(layer) if name in expert)

    def stage_producers(self, stage: int) -> list[tuple[str, int]]:
        """(backward op suffix, parameters whose gradient it completes) of a stage, in backward order."""
        last = stage == len(self.stages) - 1
        out: list[tuple[str, int]] = []
        if last:
            head = self.head_params if (not self.spec.tied_embeddings or self.config.pp > 1) else 0
            out += [("lm_head_wgrad", head), ("final_norm_bwd", self.final_norm_params)]
        for layer in reversed(self.stages[stage]):
            out += [(f"{layer}.{name}", n) for name, n in self.layer_producers(layer)]
        if stage == 0:
            out.append(("embed_wgrad", self.embed_params))
        return out

    def expert_producer(self, producer: str) -> bool:
        """True when ``producer`` (a stage-producer key) completes expert gradients."""
        return self.moe is not None and producer.rsplit(".", 1)[-1] in self.moe.expert_params

    def stage_params(self, stage: int) -> tuple[int, int, int]:
        """(root, block dense, block expert) parameters of a stage on one rank; root = embedding, head, final norm."""
        producers = self.stage_producers(stage)
        root = sum(n for name, n in producers if "." not in name)
        expert = sum(n for name, n in producers if self.expert_producer(name))
        return root, sum(n for _, n in producers) - root - expert, expert

    def static_memory(self, stage: int) -> tuple[float, float, float]:
        """Bytes of weights, gradients and optimizer state one rank of ``stage`` holds all step long."""
        root, dense, expert = self.stage_params(stage)
        zero = self.config.zero
        shard = (root + dense) / self.dense_group + expert / self.expert_group
        whole = root + dense + expert
        weights = (root + dense / self.dense_group + expert / self.expert_group) if zero >= 3 else whole
        grads = (root + dense / self.dense_group + expert / self.expert_group) if zero >= 3 else \
            (shard if zero >= 2 else whole)
        optimizer = shard if zero >= 1 else whole
        return weights * self.e, grads * self.grad_e, optimizer * OPTIMIZER_STATE_BYTES

    def chunk_activation_bytes(self, stage: int, chunk: int) -> float:
        """Bytes one micro-batch keeps on ``stage`` for ``chunk`` between its forward and backward."""
        total = sum(self.activations(layer).stored for layer in self.chunks[stage][chunk])
        if stage == self.config.pp - 1 and chunk == len(self.chunks[stage]) - 1:
            total += self.logits_bytes
        return total

    def optimizer_params(self, stage: int) -> float:
        """Parameters the optimizer step of one rank updates (its shard under ZeRO)."""
        root, dense, expert = self.stage_params(stage)
        if self.config.zero >= 1:
            return (root + dense) / self.dense_group + expert / self.expert_group
        return float(root + dense + expert)

    def total_parameters(self) -> int:
        """Parameters of the whole model, experts included."""
        return self._with_experts(self.config.num_experts)

    def active_parameters(self) -> int:
        """Parameters a token passes through (``top_k`` experts per MoE layer)."""
        return self._with_experts(self.config.top_k)

    def _with_experts(self, experts: int) -> int:
        """The dense model's parameters with each MoE layer's FFN counted ``experts`` times, plus its router."""
        total = parameter_count(self.spec)
        if self.moe is None:
            return total
        moe_layers = sum(1 for layer in range(self.spec.layers) if self.is_moe(layer))
        h, f = self.spec.hidden, self.spec.ffn_hidden
        bias = 1 if self.spec.bias else 0
        fc1 = f * (2 if self.spec.gated_ffn else 1)
        ffn = h * fc1 + bias * fc1 + f * h + bias * h
        return total + moe_layers * ((experts - 1) * ffn + h * self.config.num_experts)


def _rank_layout(step: _Step) -> dict[str, list[list[int]]]:
    cfg = step.config
    tp, cp, dp, pp, ep = cfg.tp, cfg.cp, cfg.dp, cfg.pp, cfg.ep

    def rank(p: int, d: int, c: int, t: int) -> int:
        return ((p * dp + d) * cp + c) * tp + t

    out = {
        "tp": [[rank(p, d, c, t) for t in range(tp)] for p in range(pp) for d in range(dp) for c in range(cp)],
        "dp": [[rank(p, d, c, t) for d in range(dp) for c in range(cp)] for p in range(pp) for t in range(tp)],
        "pp": [[rank(p, d, c, t) for p in range(pp)] for d in range(dp) for c in range(cp) for t in range(tp)],
    }
    if cp > 1:
        out["cp"] = [[rank(p, d, c, t) for c in range(cp)] for p in range(pp) for d in range(dp) for t in range(tp)]
    if step.moe is not None:
        groups = dp // ep
        if ep > 1:
            out["ep"] = [[rank(p, k * ep + x, c, t) for x in range(ep)]
                         for p in range(pp) for k in range(groups) for c in range(cp) for t in range(tp)]
        out["edp"] = [[rank(p, k * ep + x, c, t) for k in range(groups) for c in range(cp)]
                      for p in range(pp) for x in range(ep) for t in range(tp)]
    if step.tied_across:
        out["embd"] = [[rank(0, d, c, t), rank(pp - 1, d, c, t)] for d in range(dp) for c in range(cp)
                       for t in range(tp)]
    return out


def training_trace(model: TransformerSpec | str, config: TrainingConfig | dict[str, Any] | None = None,
                   **overrides: Any) -> Trace:
    """Generate one training step of ``model`` (a spec, a catalog name or a YAML path) as a :class:`Trace`.

    ``config`` is a :class:`TrainingConfig` (or a dict of its fields); keyword
    ``overrides`` replace single fields. Invalid combinations raise
    :class:`~commsim.errors.ConfigError`.

    >>> trace = training_trace("gpt3-175b", tp=8, pp=8, dp=16)
    >>> trace.ranks, len(trace.programs), sorted(trace.communicators)
    (1024, 8, ['dp', 'embd', 'pp', 'tp'])
    """
    spec = model if isinstance(model, TransformerSpec) else load_model(model)
    return step_trace(_Step(spec, resolve_config(config, overrides)))


def step_trace(step: _Step, folder: Any = None) -> Trace:
    """The trace of a prepared step; with ``folder``, the layers of the passes it folds are a few timed ops."""
    spec, cfg = step.spec, step.config
    programs = [_stage_program(step, stage, folder) for stage in range(cfg.pp)]
    params = {f"stage{s}": sum(n for _, n in step.stage_producers(s)) for s in range(cfg.pp)}
    total = step.total_parameters()
    tokens = step.tokens * cfg.cp * cfg.micro_batches * cfg.dp
    streams = ["compute", "tp_comm", "dp_comm"]
    if cfg.virtual_pipeline_stages > 1:
        streams += ["pp_fwd_send", "pp_fwd_recv", "pp_bwd_send", "pp_bwd_recv"]
    else:
        streams += ["pp_fwd", "pp_bwd"]
    if cfg.cp > 1:
        streams += ["cp_send", "cp_recv"]
    if step.moe is not None and cfg.ep > 1:
        streams.append("ep_comm")
    if cfg.zero >= 3:
        streams.append("dp_gather")
    metadata = {
        "generator": "commsim.workloads.training_trace",
        "model": spec.name,
        "config": cfg.model_dump(mode="json"),
        "seq_len": step.seq,
        "micro_batches": cfg.micro_batches,
        "tokens_per_step": tokens,
        "parameters": total,
        "active_parameters": step.active_parameters(),
        "parameters_per_rank": params,
        "model_flops_per_step": 6.0 * step.active_parameters() * tokens,
        "streams": streams,
    }
    name = f"{spec.name}-train-tp{cfg.tp}-pp{cfg.pp}-dp{cfg.dp}"
    for key, value in (("cp", cfg.cp), ("ep", cfg.ep), ("v", cfg.virtual_pipeline_stages)):
        if value > 1:
            name += f"-{key}{value}"
    return Trace.model_construct(name=name, ranks=cfg.world, communicators=_rank_layout(step), programs=programs,
                                 metadata=metadata)


def resolve_config(config: TrainingConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> TrainingConfig:
    """A validated :class:`TrainingConfig` from a config or dict plus single-field overrides."""
    data = config.model_dump() if isinstance(config, TrainingConfig) else dict(config or {})
    data.update(overrides)
    return validate(TrainingConfig, data)


class _StageEmitter:
    """Emits the forward and backward passes of one pipeline stage into a :class:`ProgramBuilder`."""

    def __init__(self, step: _Step, stage: int) -> None:
        self.step, self.stage = step, stage
        cfg = step.config
        self.v = cfg.virtual_pipeline_stages
        width = cfg.tp * cfg.cp * cfg.dp
        self.b = ProgramBuilder(f"stage{stage}", f"{stage * width}:{(stage + 1) * width}", dtype=cfg.dtype)
        self.tp = cfg.tp > 1
        self.pending: str | None = None     # a cross-stream op the next compute must wait for
        self.waits: list[str] = []          # more ops the next waiting compute must wait for (ZeRO-3 gathers)
        self.last_compute: str | None = None
        self.grad_ready: list[tuple[str, str]] = []
        self.sync = _GradSync(self, step.stage_producers(stage))
        self.folder: Any = None
        """What folds a pass's layers into a few timed ops (:class:`commsim.workloads.folding.LayerFolder`)."""

    def first_chunk(self, chunk: int) -> bool:
        return self.stage == 0 and chunk == 0

    def last_chunk(self, chunk: int) -> bool:
        return self.stage == self.step.config.pp - 1 and chunk == self.v - 1

    # -- primitives --------------------------------------------------------------------------

    def compute(self, op_id: str, cost: Cost, tags: dict[str, Any], *extra: str | None, wait: bool = True) -> str:
        """A compute op; with ``wait`` it also waits for the pending cross-stream op (and consumes it)."""
        if wait:
            deps = (self.pending, *self.waits, *extra)
            self.pending, self.waits = None, []
        else:
            deps = extra
        self.last_compute = self.b.compute(op_id, cost, deps=deps, tags=tags)
        return self.last_compute

    def blocking(self, op_id: str, op: str, nbytes: float, group: str, stream: str, tags: dict[str, Any],
                 algorithm: str = "auto") -> None:
        """A collective on the critical path: it waits for the last compute and the next compute waits for it."""
        self.pending = self.b.collective(op_id, op, nbytes, group, deps=(self.pending, self.last_compute),
                                         tags={**tags, "group": group}, stream=stream, algorithm=algorithm)

    def tp_coll(self, op_id: str, op: str, nbytes: float, tags: dict[str, Any]) -> None:
        if self.tp:
            self.blocking(op_id, op, nbytes, "tp", "tp_comm", tags, self.step.config.tp_algorithm)

    def tp_reduce(self, op_id: str, tags: dict[str, Any], nbytes: float | None = None) -> None:
        """The TP reduction after a row-parallel GEMM: all-reduce, or reduce-scatter with SP."""
        size = self.step.block.tp_bytes if nbytes is None else nbytes
        self.tp_coll(op_id, "reduce_scatter" if self.step.sp else "all_reduce", size, tags)

    def tp_gather(self, op_id: str, tags: dict[str, Any]) -> None:
        """The all-gather before a column-parallel GEMM under SP (nothing without SP)."""
        if self.step.sp:
            self.tp_coll(op_id, "all_gather", self.step.block.tp_bytes, tags)

    def p2p(self, kind: str, op_id: str, peer: str, nbytes: float, tag: int, stream: str, group: str,
            tags: dict[str, Any], deps: tuple[str | None, ...] = ()) -> str:
        make = self.b.send if kind == "send" else self.b.recv
        return make(op_id, peer, nbytes, tag, deps=deps, tags={**tags, "group": group}, stream=stream)

    def pp_tag(self, j: int, target_vstage: int, backward: bool) -> int:
        """Tag of a pipeline message: the micro-batch with one chunk, else unique per micro-batch, chunk and
        direction (activations can then travel from the last stage to the first)."""
        if self.v == 1:
            return j
        cfg = self.step.config
        return 2 * (j * cfg.pp * self.v + target_vstage) + (1 if backward else 0)

    def pp_stream(self, direction: str, kind: str) -> str:
        """Plain 1F1B keeps a direction's sends and recvs on one stream; the interleaved schedule needs
        them apart (``pp_fwd_send``, ``pp_fwd_recv``, …): there the last stage sends to the first while both
        wait on each other's next message, which an in-order stream holding both would deadlock on —
        Megatron posts these as one batch of non-blocking isend/irecv."""
        return direction if self.v == 1 else f"{direction}_{kind}"

    # -- passes ------------------------------------------------------------------------------

    def pass_prefix(self, kind: str, j: int, chunk: int) -> str:
        return f"{kind}{j}" if self.v == 1 else f"{kind}{j}c{chunk}"

    def pass_tags(self, phase: str, j: int, chunk: int) -> dict[str, Any]:
        tags: dict[str, Any] = {"micro_batch": j, "phase": phase}
        if self.v > 1:
            tags["chunk"] = chunk
        return tags

    def forward(self, j: int, chunk: int) -> None:
        step, cfg = self.step, self.step.config
        tags = self.pass_tags("fwd", j, chunk)
        p = self.pass_prefix("f", j, chunk)
        first, last = self.first_chunk(chunk), self.last_chunk(chunk)
        vstage = chunk * cfg.pp + self.stage
        if not first:
            peer = "pp:-1%" if self.stage == 0 else "pp:-1"
            self.pending = self.p2p("recv", f"{p}.recv", peer, step.p2p_bytes, self.pp_tag(j, vstage, False),
                                    self.pp_stream("pp_fwd", "recv"), "pp", tags)
        if cfg.track_memory:
            self.b.alloc(f"{p}.alloc", self.act_buffer(j, chunk), step.chunk_activation_bytes(self.stage, chunk),
                         tags=tags)
        if first:
            self.compute(f"{p}.embed", step.embed, tags)
            self.tp_reduce(f"{p}.embed_ar", tags)
        layers = self.step.chunks[self.stage][chunk]
        self.layers_pass(layers, lambda layer, q, lt: self.layer_forward(j, layer, q, lt), p, tags)
        if last:
            self.compute(f"{p}.final_norm", step.final_norm, tags)
            self.tp_gather(f"{p}.head_ag", tags)
            self.compute(f"{p}.lm_head", step.lm_head, tags)
            self.compute(f"{p}.loss", step.loss, tags)
            if self.tp:
                self.pending = self.b.collective(f"{p}.loss_ar", "all_reduce", step.loss_stats_bytes, "tp",
                                                 deps=(self.last_compute,), tags={**tags, "group": "tp"},
                                                 stream="tp_comm", algorithm=cfg.tp_algorithm)
        else:
            peer = "pp:+1%" if self.stage == cfg.pp - 1 else "pp:+1"
            self.p2p("send", f"{p}.send", peer, step.p2p_bytes, self.pp_tag(j, vstage + 1, False),
                     self.pp_stream("pp_fwd", "send"), "pp", tags, deps=(self.pending, self.last_compute))
            self.pending = None

    def act_buffer(self, j: int, chunk: int) -> str:
        return f"act{j}" if self.v == 1 else f"act{j}c{chunk}"

    def layers_pass(self, layers: list[int], emit: Callable[[int, str, dict[str, Any]], None], p: str,
                    tags: dict[str, Any], final: bool = False) -> None:
        """Run ``emit(layer, prefix, tags)`` over ``layers``, with ZeRO-3 per-layer parameter all-gathers
        prefetched one layer ahead (each waits for the previous layer's first kernel). With a ``folder``
        (:mod:`commsim.workloads.folding`) that folds this pass, its few timed ops stand for the layers."""
        if self.folder is not None and self.folder.folds(self, tags["phase"], final):
            self.folder.emit(self, layers, p, tags, final)
            return
        zero3 = self.step.config.zero >= 3
        gathered: dict[int, list[str]] = {}
        if zero3 and layers:
            gathered[layers[0]] = self.gather_layer(layers[0], f"{p}.{layers[0]}", tags, after=None)
        for index, layer in enumerate(layers):
            lt = {**tags, "layer": layer}
            q = f"{p}.{layer}"
            if zero3:
                self.waits += gathered[layer]
            start = len(self.b.ops)
            emit(layer, q, lt)
            if zero3:
                if index + 1 < len(layers):
                    nxt = layers[index + 1]
                    first = next(op.id for op in self.b.ops[start:] if op.kind == "compute")
                    gathered[nxt] = self.gather_layer(nxt, f"{p}.{nxt}", tags, after=first)
                if self.step.config.track_memory:
                    self.b.free(f"{q}.wfree", f"w.{q}", deps=(self.last_compute,), tags=lt)

    def gather_layer(self, layer: int, q: str, tags: dict[str, Any], after: str | None) -> list[str]:
        """ZeRO-3: allocate and all-gather ``layer``'s parameters (dense over dp, experts over edp)."""
        step = self.step
        dense, expert = step.layer_params(layer)
        lt = {**tags, "layer": layer}
        if step.config.track_memory:
            self.b.alloc(f"{q}.walloc", f"w.{q}", (dense + expert) * step.e, tags=lt, stream="dp_gather")
        out = []
        for group, count, size in (("dp", dense, step.dense_group), ("edp", expert, step.expert_group)):
            if count and size > 1:
                out.append(self.b.collective(f"{q}.gather_{group}", "all_gather", count * step.e, group,
                                             deps=(after,), tags={**lt, "group": group}, stream="dp_gather",
                                             algorithm=step.config.dp_algorithm))
        return out

    def layer_forward(self, j: int, layer: int, q: str, lt: dict[str, Any]) -> None:
        """The forward ops of one layer (also re-emitted, tagged ``recompute``, by full recomputation)."""
        fwd = self.step.block.forward
        parallel = self.step.spec.parallel_block
        self.compute(f"{q}.norm1", fwd["norm1"], lt)
        self.tp_gather(f"{q}.ag1", lt)
        self.compute(f"{q}.qkv", fwd["qkv"], lt)
        self.attention(j, q, lt, fwd["attn"], backward=False)
        self.compute(f"{q}.out_proj", fwd["out_proj"], lt)
        moe = self.step.is_moe(layer)
        if not parallel:
            self.tp_reduce(f"{q}.tp1", lt)
            self.compute(f"{q}.norm2", fwd["norm2"], lt)
        if moe:    # routes its sequence-parallel tokens itself: no all-gather before, no reduction after
            self.moe_forward(q, lt)
            return
        if not parallel:
            self.tp_gather(f"{q}.ag2", lt)
        for name in ("fc1", "act", "fc2"):
            self.compute(f"{q}.{name}", fwd[name], lt)
        self.tp_reduce(f"{q}.tp2", lt)

    def attention(self, j: int, q: str, lt: dict[str, Any], cost: Cost, backward: bool) -> None:
        """Core attention; with context parallelism a ring: ``cp`` steps on the KV blocks, each block sent on
        to the next CP peer while the current one is computed (``cp - 1`` transfers; in the backward pass the
        KV block travels with its gradient accumulator, twice the bytes)."""
        name = "attn_bwd" if backward else "attn"
        cp = self.step.config.cp
        if cp == 1:
            self.compute(f"{q}.{name}", cost, lt)
            return
        # one KV block per ring step: the step's GEMMs are the whole attention's cut along the KV length, which
        # the compute model times without tile quantisation (shapes dropped, FLOP and bytes kept per step)
        part = replace(cost, flops=cost.flops / cp, bytes=cost.bytes / cp, gemms=())
        nbytes = self.step.kv_block_bytes * (2 if backward else 1)
        holding = self.last_compute     # the op after which this rank holds its own KV block
        for i in range(cp):
            received = None
            if i < cp - 1:
                self.p2p("send", f"{q}.{name}.kv_send{i}", "cp:+1%", nbytes, j, "cp_send", "cp", lt, deps=(holding,))
                received = self.p2p("recv", f"{q}.{name}.kv_recv{i}", "cp:-1%", nbytes, j, "cp_recv", "cp", lt)
            self.compute(f"{q}.{name}{i}", part, lt)
            self.pending = received
            holding = received

    def moe_forward(self, q: str, lt: dict[str, Any]) -> None:
        moe, cfg = self.step.moe, self.step.config
        assert moe is not None
        f = moe.forward
        self.compute(f"{q}.router", f["router"], lt)
        self.compute(f"{q}.permute", f["permute"], lt)
        if cfg.ep > 1:
            self.blocking(f"{q}.dispatch", "all_to_all", moe.a2a_bytes, "ep", "ep_comm", lt)
        self.tp_coll(f"{q}.expert_ag", "all_gather", moe.tp_bytes, lt)
        for name in ("expert_fc1", "expert_act", "expert_fc2"):
            self.compute(f"{q}.{name}", f[name], lt)
        self.tp_coll(f"{q}.expert_rs", "reduce_scatter", moe.tp_bytes, lt)
        if cfg.ep > 1:
            self.blocking(f"{q}.combine", "all_to_all", moe.a2a_bytes, "ep", "ep_comm", lt)
        self.compute(f"{q}.unpermute", f["unpermute"], lt)

    def backward(self, j: int, chunk: int, final: bool) -> None:
        step, cfg = self.step, self.step.config
        tags = self.pass_tags("bwd", j, chunk)
        p = self.pass_prefix("b", j, chunk)
        first, last = self.first_chunk(chunk), self.last_chunk(chunk)
        vstage = chunk * cfg.pp + self.stage
        if not last:
            peer = "pp:+1%" if self.stage == cfg.pp - 1 else "pp:+1"
            self.pending = self.p2p("recv", f"{p}.recv", peer, step.p2p_bytes, self.pp_tag(j, vstage, True),
                                    self.pp_stream("pp_bwd", "recv"), "pp", tags)
        if last:
            self.compute(f"{p}.loss_bwd", step.loss_bwd, tags)
            self.compute(f"{p}.lm_head_dgrad", step.lm_head_dgrad, tags)
            self.tp_reduce(f"{p}.head_tp", tags)
            self.grad(f"{p}.lm_head_wgrad", step.lm_head_wgrad, tags, "lm_head_wgrad", final, wait=False)
            self.grad(f"{p}.final_norm_bwd", step.final_norm_bwd, tags, "final_norm_bwd", final)
        layers = list(reversed(step.chunks[self.stage][chunk]))
        self.layers_pass(layers, lambda layer, q, lt: self.layer_backward(j, layer, q, lt, final), p, tags, final)
        if first:
            self.tp_gather(f"{p}.embed_ag", tags)
            self.grad(f"{p}.embed_wgrad", step.embed_bwd, tags, "embed_wgrad", final)
        else:
            peer = "pp:-1%" if self.stage == 0 else "pp:-1"
            self.p2p("send", f"{p}.send", peer, step.p2p_bytes, self.pp_tag(j, vstage - 1, True),
                     self.pp_stream("pp_bwd", "send"), "pp", tags, deps=(self.pending, self.last_compute))
            self.pending = None
        self.sync.end_of_pass(final)
        if cfg.track_memory:
            self.b.free(f"{p}.free", self.act_buffer(j, chunk), deps=(self.pending,), tags=tags)

    def layer_backward(self, j: int, layer: int, q: str, lt: dict[str, Any], final: bool) -> None:
        step, cfg = self.step, self.step.config
        bwd = step.block.backward
        parallel = step.spec.parallel_block
        working = step.activations(layer).working
        if cfg.track_memory and working:
            self.b.alloc(f"{q}.rc_alloc", f"rc.{q}", working, tags=lt)
        zero3_grads = cfg.track_memory and cfg.zero >= 3
        if zero3_grads:   # the layer's unsharded gradients, until its reduce-scatter has run
            self.b.alloc(f"{q}.galloc", f"g.{q}", sum(step.layer_params(layer)) * step.grad_e, tags=lt)
        if cfg.recompute == "full":
            self.layer_forward(j, layer, f"r{q[1:]}", {**lt, "phase": "recompute"})
        moe = step.is_moe(layer)
        if moe:
            self.moe_backward(q, lt, layer, final)
        else:
            self.tp_gather(f"{q}.ag2", lt)
            self.compute(f"{q}.fc2_dgrad", bwd["fc2_dgrad"], lt)
            self.grad(f"{q}.fc2_wgrad", bwd["fc2_wgrad"], lt, f"{layer}.fc2_wgrad", final)
            self.compute(f"{q}.act_bwd", bwd["act_bwd"], lt)
            self.compute(f"{q}.fc1_dgrad", bwd["fc1_dgrad"], lt)
        if not parallel:
            if not moe:
                self.tp_reduce(f"{q}.tp2", lt)
                self.grad(f"{q}.fc1_wgrad", bwd["fc1_wgrad"], lt, f"{layer}.fc1_wgrad", final, wait=False)
            self.grad(f"{q}.norm2_bwd", bwd["norm2_bwd"], lt, f"{layer}.norm2_bwd", final)
            self.tp_gather(f"{q}.ag1", lt)
        self.compute(f"{q}.out_proj_dgrad", bwd["out_proj_dgrad"], lt)
        self.grad(f"{q}.out_proj_wgrad", bwd["out_proj_wgrad"], lt, f"{layer}.out_proj_wgrad", final)
        if cfg.recompute == "selective" and not cfg.flash_attention:
            self.compute(f"{q}.attn_rc", step.block.forward["attn"], {**lt, "phase": "recompute"})
        self.attention(j, q, lt, bwd["attn_bwd"], backward=True)
        self.compute(f"{q}.qkv_dgrad", bwd["qkv_dgrad"], lt)
        self.tp_reduce(f"{q}.tp1", lt)
        if parallel and not step.is_moe(layer):
            self.grad(f"{q}.fc1_wgrad", bwd["fc1_wgrad"], lt, f"{layer}.fc1_wgrad", final, wait=False)
        self.grad(f"{q}.qkv_wgrad", bwd["qkv_wgrad"], lt, f"{layer}.qkv_wgrad", final, wait=False)
        self.grad(f"{q}.norm1_bwd", bwd["norm1_bwd"], lt, f"{layer}.norm1_bwd", final)
        if cfg.track_memory and working:
            self.b.free(f"{q}.rc_free", f"rc.{q}", tags=lt)
        reductions = self.sync.end_of_layer()
        if zero3_grads:
            self.b.free(f"{q}.gfree", f"g.{q}", deps=reductions, tags=lt, stream="dp_comm")

    def moe_backward(self, q: str, lt: dict[str, Any], layer: int, final: bool) -> None:
        moe, cfg = self.step.moe, self.step.config
        assert moe is not None
        g = moe.backward
        self.compute(f"{q}.unpermute_bwd", g["unpermute_bwd"], lt)
        if cfg.ep > 1:
            self.blocking(f"{q}.combine", "all_to_all", moe.a2a_bytes, "ep", "ep_comm", lt)
        self.tp_coll(f"{q}.expert_rs", "all_gather", moe.tp_bytes, lt)     # backward of the reduce-scatter
        self.compute(f"{q}.expert_fc2_dgrad", g["expert_fc2_dgrad"], lt)
        self.grad(f"{q}.expert_fc2_wgrad", g["expert_fc2_wgrad"], lt, f"{layer}.expert_fc2_wgrad", final)
        self.compute(f"{q}.expert_act_bwd", g["expert_act_bwd"], lt)
        self.compute(f"{q}.expert_fc1_dgrad", g["expert_fc1_dgrad"], lt)
        self.grad(f"{q}.expert_fc1_wgrad", g["expert_fc1_wgrad"], lt, f"{layer}.expert_fc1_wgrad", final)
        self.tp_coll(f"{q}.expert_ag", "reduce_scatter", moe.tp_bytes, lt)  # backward of the all-gather
        if cfg.ep > 1:
            self.blocking(f"{q}.dispatch", "all_to_all", moe.a2a_bytes, "ep", "ep_comm", lt)
        self.compute(f"{q}.permute_bwd", g["permute_bwd"], lt)
        self.compute(f"{q}.router_dgrad", g["router_dgrad"], lt)
        self.grad(f"{q}.router_wgrad", g["router_wgrad"], lt, f"{layer}.router_wgrad", final)

    def grad(self, op_id: str, cost: Cost, tags: dict[str, Any], producer: str, final: bool,
             wait: bool = True) -> None:
        """A backward op that completes parameter gradients; it feeds the gradient buckets.

        Weight-gradient GEMMs right after a TP reduction pass ``wait=False``: they
        overlap with it, and the next op waits instead.
        """
        self.compute(op_id, cost, tags, wait=wait)
        if final:
            self.grad_ready.append((op_id, producer))
        self.sync.add(op_id, producer, final)


class _Buckets:
    """Groups gradients into buckets and emits one reduction per full bucket over one communicator."""

    def __init__(self, emitter: _StageEmitter, params: dict[str, int], group: str, size: int, prefix: str) -> None:
        step = emitter.step
        self.emitter = emitter
        self.params = params
        self.group, self.prefix = group, prefix
        self.size = step.config.bucket_size
        self.grad_e = step.grad_e
        self.active = size > 1
        self.op = "reduce_scatter" if step.config.zero >= 1 else "all_reduce"
        self.current: list[str] = []
        self.current_bytes = 0.0
        self.current_params = 0
        self.count = 0
        self.issued: list[str] = []
        self.final_buckets: list[int] = []     # parameters per bucket of the last micro-batch (ZeRO all-gathers)
        self.current_final = False

    def add(self, op_id: str, producer: str, final: bool) -> None:
        count = self.params.get(producer, 0)
        if not self.active or count == 0:
            return
        self.current.append(op_id)
        self.current_bytes += count * self.grad_e
        self.current_params += count
        self.current_final = final
        if self.current_bytes >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.current:
            return
        cfg = self.emitter.step.config
        self.issued.append(self.emitter.b.collective(
            f"{self.prefix}.bucket{self.count}", self.op, self.current_bytes, self.group, deps=self.current,
            tags={"phase": "grad_sync", "bucket": self.count, "group": self.group}, stream="dp_comm",
            algorithm=cfg.dp_algorithm))
        if self.current_final:
            self.final_buckets.append(self.current_params)
        self.count += 1
        self.current, self.current_bytes, self.current_params = [], 0.0, 0


class _GradSync:
    """Data-parallel gradient synchronisation: dense gradients over ``dp``, expert gradients over ``edp``.

    ZeRO 0 all-reduces buckets of the last micro-batch; 1 reduce-scatters them;
    2 reduce-scatters every micro-batch's buckets (gradients stay sharded);
    3 reduce-scatters each layer's gradients after its backward, every
    micro-batch. Stages 1 and 2 all-gather the updated parameters after the
    optimizer step, bucket by bucket (in the parameter dtype).
    Those all-gathers end the step here: Megatron's ``--overlap-param-gather``
    (hiding them behind the next step's forward) is not modelled.
    """

    def __init__(self, emitter: _StageEmitter, producers: list[tuple[str, int]]) -> None:
        step = emitter.step
        self.emitter = emitter
        self.zero = step.config.zero
        dense = {name: n for name, n in producers if not step.expert_producer(name)}
        expert = {name: n for name, n in producers if step.expert_producer(name)}
        self.dense = _Buckets(emitter, dense, "dp", step.dense_group, "dp")
        self.expert = _Buckets(emitter, expert, "edp", step.expert_group, "edp")
        self.all = (self.dense, self.expert)

    def add(self, op_id: str, producer: str, final: bool) -> None:
        if final or self.zero >= 2:
            for buckets in self.all:
                buckets.add(op_id, producer, final)

    def end_of_layer(self) -> list[str]:
        """ZeRO-3: reduce-scatter the layer's gradients now; the reductions issued (empty otherwise)."""
        if self.zero < 3:
            return []
        out = []
        for buckets in self.all:
            before = len(buckets.issued)
            buckets.flush()
            out += buckets.issued[before:]
        return out

    def end_of_pass(self, final: bool) -> None:
        if self.zero >= 2:
            for buckets in self.all:
                buckets.flush()

    def finish(self) -> list[str]:
        """Flush what is left; the ops the optimizer must wait for."""
        for buckets in self.all:
            buckets.flush()
        return [op for buckets in self.all for op in buckets.issued]

    def param_gathers(self, after: str) -> None:
        """ZeRO 1 and 2: all-gather the updated parameters, one collective per bucket, after the optimizer."""
        if self.zero not in (1, 2):
            return
        step = self.emitter.step
        for buckets in self.all:
            if not buckets.active:
                continue
            for index, count in enumerate(buckets.final_buckets):
                self.emitter.b.collective(
                    f"{buckets.prefix}.params{index}", "all_gather", count * step.e, buckets.group, deps=(after,),
                    tags={"phase": "param_sync", "bucket": index, "group": buckets.group}, stream="dp_comm",
                    algorithm=step.config.dp_algorithm)


def _stage_program(step: _Step, stage: int, folder: Any = None) -> Program:
    cfg = step.config
    emitter = _StageEmitter(step, stage)
    emitter.folder = folder
    b = emitter.b
    if cfg.track_memory:
        setup: dict[str, Any] = {"phase": "setup"}
        weights, grads, optimizer = step.static_memory(stage)
        b.alloc("weights", "weights", weights, tags=setup)
        b.alloc("grads", "grads", grads, tags=setup)
        b.alloc("optimizer_state", "optimizer_state", optimizer, tags=setup)
    if cfg.zero >= 3 and step.dense_group > 1:
        root, _, _ = step.stage_params(stage)
        # The root unit (embedding, final norm, head) is gathered once and kept, as FSDP does for its root.
        emitter.waits.append(b.collective("dp.gather_root", "all_gather", root * step.e, "dp",
                                           tags={"phase": "param_sync", "group": "dp"}, stream="dp_gather",
                                           algorithm=cfg.dp_algorithm))
    micro_batches = cfg.micro_batches
    for phase, j, chunk in pipeline_schedule(stage, cfg.pp, micro_batches, cfg.virtual_pipeline_stages):
        if phase == "F":
            emitter.forward(j, chunk)
        else:
            emitter.backward(j, chunk, final=j == micro_batches - 1)
    waits = emitter.sync.finish()
    first, last = stage == 0, stage == cfg.pp - 1
    if step.tied_across and (first or last):
        source = "embed_wgrad" if first else "lm_head_wgrad"
        op_id = next(op for op, producer in emitter.grad_ready if producer == source)
        waits.append(b.collective("dp.embd", "all_reduce", step.head_params * step.grad_e, "embd",
                                  deps=(op_id, *emitter.sync.dense.issued[-1:]),
                                  tags={"phase": "grad_sync", "group": "embd"}, stream="dp_comm",
                                  algorithm=cfg.dp_algorithm))
    emitter.pending = None
    params = step.optimizer_params(stage)
    optimizer = emitter.compute("optimizer", memory_cost(ADAM_FLOPS_PER_PARAM * params, cfg.optimizer_bytes_per_param * params),
                                {"phase": "optimizer"}, *waits)
    emitter.sync.param_gathers(optimizer)
    return b.build()
