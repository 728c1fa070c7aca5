"""TPI-LLM inference as a commsim trace: the prefill of a prompt, then decode, on every device.

:func:`inference_trace` writes what :class:`~commsim.systems.tpi_llm.run.InferenceSetup`
describes as a :class:`~commsim.workloads.trace.Trace`; the shared replay engine
(:mod:`commsim.workloads.replay`) plays it, with the sliding-window loader
(:mod:`.loader`) as its plug-in for the weights (disk reads, window, stalls).

**Ranks.** Rank ``d`` is device ``d`` (rank 0 the master); with the ``ps``
all-reduce the parameter server is one more rank, last, whose program holds
only the all-reduces. Devices with the same block list share one program (the
workers of an even split: they run in lockstep).

**Per device and token** (token 0 is the prefill of ``prompt_tokens``, then
one token at a time, each after the context so far), on stream ``compute``:

1. tensor parallel, a worker: ``recv`` of the master's embedded input
   (``T x hidden`` FP32 values; pipeline: the previous stage's activations),
   posted when the device gets there, so its time is the device's wait;
2. per block, a compute op sized by :func:`~.partition.block_work` (GEMMs of
   ``T`` rows, attention over the ``T`` new tokens and the cache), tagged with
   its ``use`` (the loader holds it until the block is in memory); after
   attention and FFN, tensor parallel, an ``all_reduce`` of ``T x hidden`` FP32
   values over the group (star, ``kary_tree``, ring, or star rooted at the
   server for ``ps``); after the master's embedding, one ``send`` of the input
   to each worker (on its own stream: the master does not wait for them);
3. the op after which the block leaves the window carries ``release``: its
   all-reduce (``release="after_sync"``) or its compute op.

Every device first allocates its runtime, its KV cache for the whole context
and the activation workspace of the prefill, and frees them at the end.

>>> from commsim.systems.tpi_llm.hardware import edge_topology
>>> from commsim.systems.tpi_llm.plans import tpi
>>> from commsim.workloads.models import load_model
>>> setup = tpi(load_model("llama-2-7b"), edge_topology(4), window=2, prompt_tokens=8, decode_tokens=1)
>>> trace = inference_trace(setup)
>>> [(p.name, p.ranks) for p in trace.programs]
[('master', [0]), ('worker', [1, 2, 3])]
>>> [op.id for op in trace.programs[1].ops[3:7]]
['t0.input', 't0.attn.0', 't0.attn.0.ar', 't0.ffn.0']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from commsim.systems.tpi_llm.partition import COMPUTE_BYTES, Block, block_work
from commsim.workloads.models import TransformerSpec
from commsim.workloads.trace import AllocOp, CollectiveOp, ComputeOp, FreeOp, Program, RecvOp, SendOp, Trace

if TYPE_CHECKING:
    from commsim.systems.tpi_llm.run import InferenceSetup

__all__ = ["ALGORITHM_OF", "inference_trace", "workspace_bytes"]

ALGORITHM_OF = {"star": "star", "tree": "kary_tree", "ring": "ring", "ps": "star"}
"""Trace algorithm of each all-reduce of the study (``ps`` is a star rooted at the server)."""

_FIXED = ("runtime", "kv_cache", "activations")


def workspace_bytes(spec: TransformerSpec, blocks: list[Block], tokens: int) -> float:
    """Activation bytes the largest block needs during the prefill of ``tokens`` tokens (FP32)."""
    t = float(tokens)
    need = 0.0
    for b in blocks:
        if b.kind == "attn":
            heads = b.q_width / spec.head_dim
            need = max(need, t * (2 * spec.hidden + b.q_width + 2 * b.kv_width) + heads * t * t)
        elif b.kind == "ffn":
            need = max(need, t * (2 * spec.hidden + 3 * b.ffn_width))
        elif b.kind == "head":
            need = max(need, 2.0 * spec.vocab)
        else:
            need = max(need, 2 * t * spec.hidden)
    return need * COMPUTE_BYTES


def _device_ops(setup: InferenceSetup, d: int, count: int) -> list[Any]:
    """The ops of device ``d`` for the first ``count`` tokens (see the module docstring)."""
    s = setup
    n = len(s.devices)
    spec = s.model
    blocks = s.blocks[d]
    row = spec.hidden * COMPUTE_BYTES
    tp = s.mode == "tp" and n > 1
    pipe = s.mode == "pipeline" and n > 1
    handoff = max(i for i, b in enumerate(blocks) if b.kind != "head")
    kv = sum(2.0 * b.kv_width for b in blocks if b.kind == "attn") * (s.prompt_tokens + s.decode_tokens)
    fixed = (s.runtime_memory, kv * COMPUTE_BYTES, workspace_bytes(spec, blocks, s.prompt_tokens))
    ops: list[Any] = [AllocOp.model_construct(id=f"alloc.{name}", kind="alloc", stream="compute", deps=[], tags={},
                                              name=None, buffer=name, bytes=float(nbytes))
                      for name, nbytes in zip(_FIXED, fixed, strict=True)]
    for tok in range(count):
        tokens, cached = (s.prompt_tokens, 0) if tok == 0 else (1, s.prompt_tokens + tok - 1)
        waits: list[str] = []
        if (tp or pipe) and d > 0:
            waits = [f"t{tok}.input"]
            ops.append(RecvOp.model_construct(id=waits[0], kind="recv", stream="compute", deps=[], tags={"token": tok},
                                              name="waiting for input", peer=d - 1 if pipe else 0,
                                              bytes=tokens * row, tag=0))
        for i, blk in enumerate(blocks):
            use = tok * len(blocks) + i
            op_id = f"t{tok}.{blk.name}"
            if pipe and blk.kind == "head":
                waits = [f"t{tok}.last"]
                ops.append(RecvOp.model_construct(id=waits[0], kind="recv", stream="compute", deps=[],
                                                  tags={"token": tok}, name="waiting for the last stage",
                                                  peer=n - 1, bytes=row, tag=1))
            flops, nbytes = block_work(blk, spec, tokens, cached)
            synced = tp and blk.kind in ("attn", "ffn")
            tags: dict[str, Any] = {"token": tok, "use": use}
            if not (synced and s.release == "after_sync"):
                tags["release"] = use
            ops.append(ComputeOp.model_construct(
                id=op_id, kind="compute", stream="compute", deps=waits, tags=tags, name=blk.name, flops=flops,
                bytes=nbytes, dtype="fp32", efficiency=None, kernel=None, gemms=[], launches=1))
            waits = []
            if synced:
                ops.append(_all_reduce(f"{op_id}.ar", tok, use, tokens * row, s.allreduce, s.release, blk.name))
            elif tp and blk.kind == "embed":
                ops += [SendOp.model_construct(id=f"t{tok}.input{w}", kind="send", stream=f"input{w}", deps=[op_id],
                                               tags={"token": tok}, name="input", peer=w, bytes=tokens * row, tag=0)
                        for w in range(1, n)]
            if pipe and i == handoff:
                last = d + 1 == n
                ops.append(SendOp.model_construct(
                    id=f"t{tok}.handoff", kind="send", stream="handoff", deps=[op_id], tags={"token": tok},
                    name="last hidden state" if last else "activations", peer=0 if last else d + 1,
                    bytes=row if last else tokens * row, tag=1 if last else 0))
    ops += [FreeOp.model_construct(id=f"free.{name}", kind="free", stream="compute", deps=[], tags={}, name=None,
                                   buffer=name) for name in _FIXED]
    return ops


def _all_reduce(op_id: str, token: int, use: int, nbytes: float, algorithm: str, release: str,
                block: str) -> CollectiveOp:
    tags: dict[str, Any] = {"token": token}
    if release == "after_sync" and use >= 0:
        tags["release"] = use
    return CollectiveOp.model_construct(id=op_id, kind="collective", stream="compute", deps=[], tags=tags,
                                        name=f"all-reduce {block}", op="all_reduce", bytes=nbytes, group="tp",
                                        algorithm=ALGORITHM_OF[algorithm], root=None)


def inference_trace(setup: InferenceSetup, *, tokens: int | None = None) -> Trace:
    """The trace of ``setup``: one program per distinct device program, plus the server's for ``ps``.

    ``tokens`` limits it to the first tokens (default all: the prompt and ``decode_tokens``); the
    allocations are those of the whole run either way.
    """
    n = len(setup.devices)
    count = 1 + setup.decode_tokens if tokens is None else tokens
    programs: list[Program] = []
    shared: dict[tuple[Block, ...], Program] = {}
    for d in range(n):
        key = tuple(setup.blocks[d])
        # workers of one split run alike (one cohort); the master and pipeline stages differ
        if d > 0 and setup.mode == "tp" and key in shared:
            shared[key].ranks.append(d)
            continue
        program = Program.model_construct(name="master" if d == 0 else "worker" if setup.mode == "tp" else f"stage{d}",
                                          ranks=[d], ops=_device_ops(setup, d, count))
        if d > 0 and setup.mode == "tp":
            if shared:
                program.name = f"worker{d}"
            shared[key] = program
        programs.append(program)
    ranks = n
    group = list(range(n))
    if setup.mode == "tp" and n > 1 and setup.allreduce == "ps":
        ranks, group = n + 1, [n, *range(n)]        # the server first: the star's root
        master = setup.blocks[0]
        ops = [_all_reduce(f"t{tok}.{b.name}.ar", tok, -1, (setup.prompt_tokens if tok == 0 else 1) *
                           setup.model.hidden * COMPUTE_BYTES, "ps", setup.release, b.name)
               for tok in range(count) for b in master if b.kind in ("attn", "ffn")]
        programs.append(Program.model_construct(name="server", ranks=[n], ops=ops))
    return Trace.model_construct(format="commsim-trace", version=1, name=f"{setup.model.name} TPI-LLM {setup.mode}",
                                 ranks=ranks, communicators={"tp": [group]}, programs=programs,
                                 metadata={"generator": "commsim.systems.tpi_llm.workload.inference_trace",
                                           "model": setup.model.name, "mode": setup.mode,
                                           "allreduce": setup.allreduce})
