"""One training step's gradient traffic: per bucket, compression kernels and the transfers they feed.

Each bucket (a transformer block's tensors, :mod:`.layout`) becomes a sequence of
*stages*; a stage is a kernel on the rank's compression stream followed by
transfers on its communication stream, in order:

- dense and shared-support payloads (``all_reduce``): compress, all-reduce, decompress;
- all-gathered payloads: compress, a size exchange when the size varies (an
  all-gather of the ``sizes`` field), the all-gather of the bodies, then each rank
  accumulates the ``n`` payloads it holds;
- PowerSGD (``chained_all_reduce``): the first half of its compress cost (``P = M Q``),
  the all-reduce of ``P``, the second half (orthogonalisation, ``Q = M^T P``), the
  all-reduce of ``Q``, then the decompression;
- parameter-server methods: compress, push to the server; the server aggregates the
  ``n`` uploads and compresses its reply (a kernel on the server rank, or 1/n of it
  on every rank when the server is sharded), the reply; workers decompress it.

The bucket's tensors travel together: the same transfer of all its tensors is one
collective of their summed bytes. Costs are the compressor's modelled ``(FLOP,
memory bytes)`` (:meth:`~commsim.compression.Compressor.cost`). Accumulating ``n``
payloads of a dense layout (quantised values, signs) is one fused pass: the
arithmetic of ``n`` decompressions plus an addition per element and extra payload,
reading every payload once and writing the fp32 sum once (each decompression's
memory traffic without its fp32 output, ``n`` times, plus one output). Sparse
payloads cost one decompression (zero fill and own scatter) plus a scatter-add of
each other payload's entries (1 FLOP and 20 bytes per entry: value, int64 index,
accumulator read and write).

>>> from commsim.compression import make_compressor
>>> from commsim.workloads.data_parallel import layout_from_buckets
>>> from commsim.compression import PayloadCounter
>>> from commsim.systems.compressed_dp.schedules import CollectivePlan
>>> lay = layout_from_buckets([[(256, 128), (128,)]], backward_flops=[1e9])
>>> coll = CollectivePlan.resolve(4, None)
>>> plan = build_plan(make_compressor("powersgd:rank=2"), lay, coll, PayloadCounter())
>>> [[(t.kind, t.label, t.nbytes) for t in s.transfers] for s in plan.buckets[0].stages]
[[('all_reduce', 'P + body', 2560.0)], [('all_reduce', 'Q', 1024.0)]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from commsim.compression import PayloadCounter, TensorCount
from commsim.systems.compressed_dp.schedules import CollectivePlan
from commsim.workloads.data_parallel import LayerLayout

__all__ = ["Transfer", "Stage", "BucketPlan", "StepPlan", "build_plan"]

_ORDER = {"all_reduce": 1, "all_gather": 2, "push": 3, "reply": 4}
_SCATTER_BYTES = 20.0  # per entry of a scatter-add: value (4), int64 index (8), accumulator read and write (8)


@dataclass(frozen=True)
class Transfer:
    """One collective of a stage: ``kind`` (all_reduce, all_gather, push, reply), ``label`` and bytes per rank
    (the buffer for an all-reduce, each rank's payload for an all-gather, each worker's upload or reply)."""

    kind: str
    label: str
    nbytes: float


@dataclass(frozen=True)
class Stage:
    """A kernel (``kernel[0]`` FLOP, ``kernel[1]`` bytes, per rank) then transfers, in order."""

    kernel: np.ndarray
    transfers: tuple[Transfer, ...]


@dataclass(frozen=True)
class BucketPlan:
    """A bucket's stages, its final kernel (decompression / accumulation, per rank) and its bytes per rank."""

    stages: tuple[Stage, ...]
    finish: np.ndarray
    packed: float
    naive: float
    reply: float
    dense: float
    wire: float

    def kernel_work(self) -> np.ndarray:
        """All compression-side work of the bucket, ``(2, n)``: FLOP and bytes per rank."""
        return sum((s.kernel for s in self.stages), self.finish.copy())


@dataclass(frozen=True)
class StepPlan:
    """Every bucket of one step under one compressor (``counts`` by shape)."""

    compressor: str
    buckets: tuple[BucketPlan, ...]
    counts: dict[tuple[int, ...], TensorCount]
    packed_transfers: bool

    @property
    def payload_packed(self) -> float:
        """Packed upload bytes per rank and step."""
        return float(sum(b.packed for b in self.buckets))

    @property
    def payload_naive(self) -> float:
        """Naive upload bytes per rank and step."""
        return float(sum(b.naive for b in self.buckets))

    @property
    def reply(self) -> float:
        """Bytes a server sends back to each worker per step (parameter-server methods)."""
        return float(sum(b.reply for b in self.buckets))

    @property
    def dense(self) -> float:
        """fp32 bytes of the whole gradient (the reference)."""
        return float(sum(b.dense for b in self.buckets))

    @property
    def wire(self) -> float:
        """Wire bytes per rank and step (every transfer through its schedule)."""
        return float(sum(b.wire for b in self.buckets))

    def transfers(self) -> list[Transfer]:
        """Every transfer of the step, bucket by bucket."""
        return [t for b in self.buckets for s in b.stages for t in s.transfers]


def _work(n: int) -> np.ndarray:
    return np.zeros((2, n))


def _add(work: np.ndarray, cost: Sequence[float], ranks: slice | int | None = None, scale: float = 1.0) -> None:
    target = slice(None) if ranks is None else ranks
    work[0, target] += scale * cost[0]
    work[1, target] += scale * cost[1]


def _accumulate(count: TensorCount, payloads: int) -> tuple[float, float]:
    """Cost of decompressing and summing ``payloads`` payloads of ``count`` (see the module docstring)."""
    f, b = count.decompress
    extra = payloads - 1
    if count.sparse_values:
        return f + extra * count.sparse_values, b + extra * _SCATTER_BYTES * count.sparse_values
    out = 4.0 * count.numel  # the fp32 sum, written once
    return payloads * f + extra * count.numel, payloads * max(b - out, 0.0) + out


def build_plan(compressor, layout: LayerLayout, collectives: CollectivePlan, counter: PayloadCounter, *,
               packed: bool = True) -> StepPlan:
    """The step plan of ``compressor`` on ``layout`` (payloads counted by ``counter``)."""
    n = collectives.n
    counts = counter.count_many(compressor, layout.shapes())
    buckets = []
    for bucket in layout.tensors:
        stages: dict[int, dict[tuple[str, str], float]] = {}
        labels: dict[tuple[int, tuple[str, str]], list[str]] = {}
        kernels: dict[int, np.ndarray] = {}
        finish = _work(n)
        up = naive = reply = dense = 0.0

        def put(stage: int, kind: str, label: str, nbytes: float, stages=stages, labels=labels) -> None:
            key = (kind, "size_exchange" if label == "size_exchange" else "data")
            slot = stages.setdefault(stage, {})
            slot[key] = slot.get(key, 0.0) + nbytes
            labels.setdefault((stage, key), []).append(label)

        def size(m) -> int:
            return m.packed if packed else m.naive

        for _, shape in bucket:
            c = counts[shape]
            up += c.packed
            naive += c.naive
            dense += c.dense_bytes
            if c.fit == "chained_all_reduce":
                parts = len(c.messages)
                for i, m in enumerate(c.messages):
                    put(i, "all_reduce", m.label, size(m))
                    _add(kernels.setdefault(i, _work(n)), c.compress, scale=1.0 / parts)
                _add(finish, c.decompress)
            elif c.fit == "parameter_server":
                for m in c.messages:
                    put(0, "push", "push", size(m))
                _add(kernels.setdefault(0, _work(n)), c.compress)
                answer = c.reply_packed if packed else c.reply_naive
                reply += answer
                put(1, "reply", "reply", answer)
                server = _work(n)
                cost = list(_accumulate(c, n))
                if c.reply_compressed:
                    cost = [cost[0] + c.compress[0], cost[1] + c.compress[1]]
                if collectives.server == "star":
                    _add(server, cost, ranks=collectives.root)
                else:
                    _add(server, cost, scale=1.0 / n)
                kernels[1] = kernels.get(1, _work(n)) + server
                if c.reply_compressed:
                    _add(finish, c.decompress)
            else:
                for m in c.messages:
                    put(0, m.collective, m.label, size(m))
                _add(kernels.setdefault(0, _work(n)), c.compress)
                _add(finish, _accumulate(c, n) if c.fit == "all_gather" else c.decompress)
        built = []
        for index in sorted(stages):
            slot = stages[index]
            order = sorted(slot, key=lambda k: (k[1] != "size_exchange", _ORDER[k[0]]))
            transfers = tuple(Transfer(kind, " + ".join(dict.fromkeys(labels[(index, (kind, group))])), slot[(kind, group)])
                              for kind, group in order if slot[(kind, group)] > 0)
            built.append(Stage(kernel=kernels.get(index, _work(n)), transfers=transfers))
        wire = sum(collectives.volume(t.kind, t.nbytes) for s in built for t in s.transfers)
        buckets.append(BucketPlan(stages=tuple(built), finish=finish, packed=up, naive=naive, reply=reply,
                                  dense=dense, wire=wire))
    return StepPlan(compressor=compressor.spec, buckets=tuple(buckets), counts=counts, packed_transfers=packed)
