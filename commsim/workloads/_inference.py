"""Tensor-parallel inference of a transformer as a trace: prefill a prompt, then decode tokens.

One program for all ``tp`` ranks (communicator ``tp``); streams ``compute`` and
``tp_comm``. Per block there is one all-reduce after attention and one after
the FFN (one in all for parallel blocks), of ``batch·tokens·hidden`` elements.
Each decode step processes ``batch`` new tokens: its GEMMs read the whole
weight slice (memory-bound), and attention reads the KV cache so far and
appends one entry. The output head runs on the last position only; its
vocabulary-parallel logits are all-gathered before sampling.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from commsim.config import StrictModel, validate
from commsim.errors import ConfigError
from commsim.workloads._builder import ProgramBuilder
from commsim.workloads._costs import Cost, block_costs, gemm_cost, memory_cost
from commsim.workloads._dtypes import Dtype, dtype_bytes
from commsim.workloads._gemm import Gemm
from commsim.workloads.models import TransformerSpec, load_model, parameter_count
from commsim.workloads.trace import Algorithm, Trace

__all__ = ["InferenceConfig", "inference_trace"]


class InferenceConfig(StrictModel):
    """Parameters of :func:`inference_trace`, with their defaults.

    Attributes
    ----------
    tp:
        Tensor-parallel degree (default 1).
    batch_size:
        Sequences decoded together (default 1).
    prompt_len:
        Prompt tokens per sequence, processed in one prefill (default 512).
    decode_steps:
        Tokens generated per sequence after the prefill (default 32).
    dtype:
        Element type of weights, activations and KV cache (default bf16).
    tp_algorithm:
        Algorithm requested for the TP all-reduces (default auto; TPI-LLM uses star).
    flash_attention, strict_heads:
        As for training (defaults true, true).
    track_memory:
        Emit alloc ops for the weights and the KV cache (default true).
    """

    tp: int = Field(default=1, ge=1)
    batch_size: int = Field(default=1, ge=1)
    prompt_len: int = Field(default=512, ge=1)
    decode_steps: int = Field(default=32, ge=0)
    dtype: Dtype = "bf16"
    tp_algorithm: Algorithm = "auto"
    flash_attention: bool = True
    strict_heads: bool = True
    track_memory: bool = True


def inference_trace(model: TransformerSpec | str, config: InferenceConfig | dict[str, Any] | None = None,
                    **overrides: Any) -> Trace:
    """Generate a prefill plus ``decode_steps`` decode steps of ``model`` as a :class:`Trace`.

    >>> trace = inference_trace("llama-2-70b", tp=8, prompt_len=128, decode_steps=4)
    >>> trace.ranks, [p.name for p in trace.programs]
    (8, ['tp_inference'])
    """
    spec = model if isinstance(model, TransformerSpec) else load_model(model)
    data = config.model_dump() if isinstance(config, InferenceConfig) else dict(config or {})
    data.update(overrides)
    cfg = validate(InferenceConfig, data)
    total_len = cfg.prompt_len + cfg.decode_steps
    if total_len > spec.max_seq_len:
        raise ConfigError(field="prompt_len", value=cfg.prompt_len,
                          rule=f"plus {cfg.decode_steps} decode steps exceeds {spec.name}'s max_seq_len "
                               f"({spec.max_seq_len})",
                          fix="shorten the prompt or decode fewer tokens")
    e = dtype_bytes(cfg.dtype)
    h, b = spec.hidden, cfg.batch_size
    builder = ProgramBuilder("tp_inference", f"0:{cfg.tp}", dtype=cfg.dtype)
    prefill = block_costs(spec, batch=b, seq_len=cfg.prompt_len, tp=cfg.tp, dtype=cfg.dtype,
                          flash_attention=cfg.flash_attention, strict_heads=cfg.strict_heads)
    shard = prefill.shard
    tp = cfg.tp > 1
    per_layer = sum(prefill.params.values())
    vocab_local = shard.vocab
    head_params = vocab_local * h
    local_params = spec.layers * per_layer + head_params * (1 if spec.tied_embeddings else 2) + \
        (spec.max_seq_len * h if spec.position == "learned" else 0) + h   # + final norm
    kv_cache = 2.0 * spec.layers * b * total_len * shard.kv_width * e
    if cfg.track_memory:
        setup = {"phase": "setup"}
        builder.alloc("weights", "weights", local_params * e, tags=setup)
        builder.alloc("kv_cache", "kv_cache", kv_cache, tags=setup)

    last: list[str | None] = [None]   # the op the next compute waits for (a collective), if any

    def compute(op_id: str, cost: Cost, tags: dict[str, Any]) -> None:
        builder.compute(op_id, cost, deps=(last[0],), tags=tags)
        last[0] = None

    def all_reduce(op_id: str, nbytes: float, tags: dict[str, Any], after: str) -> None:
        if tp:
            last[0] = builder.collective(op_id, "all_reduce", nbytes, "tp", deps=(after,), tags=tags,
                                         stream="tp_comm", algorithm=cfg.tp_algorithm)

    def step(prefix: str, new_tokens: int, kv_len: int, tags: dict[str, Any]) -> None:
        costs = prefill if prefix == "prefill" else block_costs(
            spec, batch=b, seq_len=new_tokens, kv_len=kv_len, tp=cfg.tp, dtype=cfg.dtype,
            flash_attention=cfg.flash_attention, strict_heads=cfg.strict_heads)
        tokens = b * new_tokens
        compute(f"{prefix}.embed", memory_cost(1.0 * tokens * h, 3.0 * tokens * h * e), tags)
        all_reduce(f"{prefix}.embed_ar", costs.tp_bytes, tags, f"{prefix}.embed")
        fwd = costs.forward
        for layer in range(spec.layers):
            lt = {**tags, "layer": layer}
            q = f"{prefix}.{layer}"
            for name in ("norm1", "qkv", "attn", "out_proj"):
                compute(f"{q}.{name}", fwd[name], lt)
            if not spec.parallel_block:
                all_reduce(f"{q}.tp1", costs.tp_bytes, lt, f"{q}.out_proj")
                compute(f"{q}.norm2", fwd["norm2"], lt)
            for name in ("fc1", "act", "fc2"):
                compute(f"{q}.{name}", fwd[name], lt)
            all_reduce(f"{q}.tp2", costs.tp_bytes, lt, f"{q}.fc2")
        compute(f"{prefix}.final_norm", memory_cost(8.0 * b * h, 2.0 * b * h * e), tags)   # last position only
        compute(f"{prefix}.lm_head", gemm_cost(Gemm("lm_head", m=b, n=vocab_local, k=h, element_bytes=int(e))), tags)
        if tp:
            last[0] = builder.collective(f"{prefix}.logits_ag", "all_gather", b * vocab_local * cfg.tp * e, "tp",
                                         deps=(f"{prefix}.lm_head",), tags=tags, stream="tp_comm",
                                         algorithm=cfg.tp_algorithm)
        compute(f"{prefix}.sample", memory_cost(5.0 * b * spec.vocab, 2.0 * b * spec.vocab * e, launches=2), tags)

    step("prefill", cfg.prompt_len, cfg.prompt_len, {"phase": "prefill"})
    for k in range(cfg.decode_steps):
        step(f"d{k}", 1, cfg.prompt_len + k + 1, {"phase": "decode", "step": k})
    metadata = {
        "generator": "commsim.workloads.inference_trace",
        "model": spec.name,
        "config": cfg.model_dump(mode="json"),
        "parameters": parameter_count(spec),
        "parameters_per_rank": local_params,
        "kv_cache_bytes_per_rank": kv_cache,
        "streams": ["compute", "tp_comm"],
    }
    return Trace.model_construct(name=f"{spec.name}-infer-tp{cfg.tp}", ranks=cfg.tp,
                                 communicators={"tp": [list(range(cfg.tp))]}, programs=[builder.build()],
                                 metadata=metadata)
