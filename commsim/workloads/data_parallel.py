"""Data-parallel training whose per-layer gradient syncs overlap the next steps, as a trace.

A rank's training step is a forward pass over the layers, then the backward pass
from the last layer to the first; a layer's gradient is ready when its backward
ops end. What a ready gradient goes through (compression kernels and their
collectives, a fragment's sync every H steps over a WAN) is the study's
mechanism: a *sync* callback that writes those ops. This module writes the rest:

- :class:`LayerLayout`: per layer, the gradient elements it syncs (and its
  tensors) and its compute, each phase as :class:`Work` -- fixed seconds
  (:class:`~commsim.workloads.trace.DelayOp`) or FLOP and bytes of device kernels
  (:class:`~commsim.workloads.trace.ComputeOp`, the roofline of
  :mod:`commsim.devices`); :func:`catalog_layout` builds one from a catalog
  model's GEMMs;
- :func:`training_trace`: ``steps`` steps. A step whose syncs are waited for ends
  them in a *join* op (:func:`sync_id`, zero seconds on a stream of its own); the
  syncs released in step ``s`` are waited for before step ``s + 1 + overlap``: by
  each layer's own forward op (``wait="layer"``) or, through the join, by the
  step's first forward op (``wait="step"``);
- :func:`step_times`: read back from a finished replay, each step's start, the
  end of its compute and its *settle* time (its join's end, from its start), as
  :func:`commsim.workloads.periodic.replay_until_periodic` takes them.

A two-layer step, each layer synced by one all-reduce of its fp32 gradient:

>>> lay = LayerLayout(model="two", layer_params=np.array([10.0, 20.0]),
...                   forward=Work.timed("fwd", [1.0, 1.0]), backward=(Work.timed("bwd", [2.0, 2.0]),))
>>> from commsim.workloads.trace import CollectiveOp
>>> def sync(step, layer, after, rank):
...     return [CollectiveOp.model_construct(id=f"s{step}.ar{layer}", stream=f"dp{layer}", deps=[after], tags={},
...             op="all_reduce", bytes=4.0 * lay.layer_params[layer], group="dp", algorithm="ring", root=None,
...             name=None)]
>>> trace = training_trace(lay, sync, steps=2, ranks=2, communicators={"dp": [[0, 1]]})
>>> [(op.id, op.deps) for op in trace.programs[0].ops][:7]   # doctest: +NORMALIZE_WHITESPACE
[('s0.fwd0', []), ('s0.fwd1', []), ('s0.bwd1', []), ('s0.ar1', ['s0.bwd1']), ('s0.bwd0', []),
 ('s0.ar0', ['s0.bwd0']), ('s0.sync', ['s0.ar1', 's0.ar0'])]
>>> [op.deps for op in trace.programs[0].ops if op.id in ("s1.fwd0", "s1.fwd1")]
[['s0.ar0'], ['s0.ar1']]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from commsim.errors import ConfigError
from commsim.workloads.trace import ComputeOp, DelayOp, Program, Trace

__all__ = ["Work", "LayerLayout", "catalog_layout", "layout_from_buckets", "training_trace", "step_times", "StepTimes", "forward_id",
           "sync_id", "Sync", "WAITS", "RELEASES"]

WAITS: tuple[str, ...] = ("layer", "step")
"""What waits for a step's syncs: each layer's forward op for its own, or the step's first forward op for all."""
RELEASES: tuple[str, ...] = ("backward", "after_backward")
"""When a layer's sync is released: when its backward ops end, or when the whole backward pass has."""

Sync = Callable[[int, int, str, int], list[Any]]
"""``sync(step, layer, after, rank)``: the ops syncing ``layer``'s gradient of ``step`` (none: not synced then),
released by op ``after``, for the program whose first rank is ``rank``; the last op ends the sync."""


@dataclass(frozen=True)
class Work:
    """One compute phase of a step, per layer: ``seconds`` of a fixed-duration op, or ``flops`` and ``bytes``
    (memory traffic) of a device kernel in ``dtype``. ``name`` prefixes the ops' ids (``s<step>.<name><layer>``),
    ``label`` names them (``step <step> <label> <layer>``; default the name)."""

    name: str
    seconds: np.ndarray | None = None
    flops: np.ndarray | None = None
    bytes: np.ndarray | None = None
    dtype: str = "bf16"
    label: str = ""

    @classmethod
    def timed(cls, name: str, seconds: Sequence[float] | np.ndarray, label: str = "") -> Work:
        """Fixed-duration ops of ``seconds`` per layer."""
        return cls(name=name, seconds=np.asarray(seconds, dtype=float), label=label)

    @classmethod
    def kernels(cls, name: str, flops: Sequence[float] | np.ndarray, nbytes: Sequence[float] | np.ndarray,
                dtype: str = "bf16", label: str = "") -> Work:
        """Device kernels of ``flops`` FLOP and ``nbytes`` bytes of memory traffic per layer."""
        return cls(name=name, flops=np.asarray(flops, dtype=float), bytes=np.asarray(nbytes, dtype=float),
                   dtype=dtype, label=label)

    def __len__(self) -> int:
        return int((self.seconds if self.seconds is not None else self.flops).shape[0])  # type: ignore[union-attr]

    def op(self, layer: int | None, op_id: str, deps: list[str], tags: dict[str, Any], name: str | None) -> Any:
        """The trace op of ``layer`` (None: every layer as one op; ``-1``: a zero-cost op, a marker)."""
        if self.seconds is not None:
            seconds = 0.0 if layer == -1 else float(self.seconds.sum() if layer is None else self.seconds[layer])
            return DelayOp.model_construct(id=op_id, stream="compute", deps=deps, tags=tags, seconds=seconds,
                                           name=name)
        if layer == -1:
            return ComputeOp.model_construct(id=op_id, deps=deps, tags=tags, name=name)
        flops, nbytes = self.flops, self.bytes
        assert flops is not None and nbytes is not None  # one of the two forms, by construction
        pick = (lambda a: float(a.sum())) if layer is None else (lambda a: float(a[layer]))
        return ComputeOp.model_construct(id=op_id, deps=deps, tags=tags, name=name, flops=pick(flops),
                                         bytes=pick(nbytes), dtype=self.dtype)


@dataclass(frozen=True)
class LayerLayout:
    """A model's layers as data-parallel training sees them.

    ``layer_params[l]`` gradient elements synced with layer ``l`` (its bucket); ``tensors[l]``
    their ``(name, shape)`` where known; ``forward`` the forward pass per layer; ``backward``
    the phases of each layer's backward, in order (its gradient is ready when the last ends);
    ``step_time`` the compute-only step, seconds, when the compute is fixed-duration.
    """

    model: str
    layer_params: np.ndarray
    forward: Work
    backward: tuple[Work, ...]
    tensors: tuple[tuple[tuple[str, tuple[int, ...]], ...], ...] = ()
    label: str = ""
    step_time: float | None = None

    @property
    def layers(self) -> int:
        """Number of layers (gradient buckets)."""
        return int(self.layer_params.shape[0])

    @property
    def parameters(self) -> int:
        """Parameters (gradient elements) of the whole model."""
        return round(float(self.layer_params.sum()))

    def shapes(self) -> list[tuple[int, ...]]:
        """Distinct tensor shapes, in first-seen order."""
        return list(dict.fromkeys(shape for bucket in self.tensors for _, shape in bucket))

    @classmethod
    def of_tensors(cls, model: str, tensors: Sequence[Sequence[tuple[str, tuple[int, ...]]]], *, forward: Work,
                   backward: tuple[Work, ...], **fields: Any) -> LayerLayout:
        """A layout whose layers sync the given tensors (``layer_params`` counted from their shapes)."""
        frozen = tuple(tuple((n, tuple(int(d) for d in s)) for n, s in bucket) for bucket in tensors)
        params = np.array([sum(math.prod(s) for _, s in bucket) for bucket in frozen], dtype=float)
        for work in (forward, *backward):
            if len(work) != len(frozen):
                raise ConfigError(field=f"layout.{work.name}", value=len(work),
                                  rule=f"does not give one value per layer ({len(frozen)})",
                                  fix="give one compute value per layer (bucket)")
        return cls(model=model, layer_params=params, forward=forward, backward=backward, tensors=frozen, **fields)


def catalog_layout(model: str, *, tokens_per_rank: int, seq_len: int | None = None) -> LayerLayout:
    """Catalog model ``model`` at ``tokens_per_rank`` tokens per rank and step: kernels per transformer block.

    Every block is a layer, its tensors as the catalog counts them
    (:func:`commsim.workloads.parameter_shapes`); the token embedding joins block 0
    (its gradient is the last the backward pass produces), the final norm and output
    head the last block. Compute is the block's GEMMs (:func:`commsim.workloads.layer_gemms`)
    as FLOP and bytes of memory traffic, the head's ``tokens x vocab x hidden`` GEMM on
    the last block; backward one kernel per block (each of the two backward GEMMs of a
    forward GEMM costs what it does, :func:`commsim.workloads.gemm_backward`). Norms,
    activations and the optimizer step are not charged.

    >>> lay = catalog_layout("llama-2-7b", tokens_per_rank=4096)
    >>> lay.layers, lay.parameters, lay.tensors[0][0]
    (32, 6738415616, ('embed.weight', (32000, 4096)))
    >>> round(float(lay.backward[0].flops.sum() / lay.forward.flops.sum()), 6)
    2.0
    """
    from commsim.workloads import Gemm, gemm_backward, layer_gemms, load_model, parameters_by_layer

    spec = load_model(model)
    seq = int(seq_len or min(spec.default_seq_len, tokens_per_rank))
    if tokens_per_rank % seq:
        raise ConfigError(field="tokens_per_rank", value=tokens_per_rank,
                          rule=f"is not a whole number of sequences of {seq} tokens",
                          fix=f"give a multiple of {seq} or set seq_len to a divisor of it")
    gemms = list(layer_gemms(spec, batch=tokens_per_rank // seq, seq_len=seq).values())
    back = [b for g in gemms for b in gemm_backward(g)]
    head = Gemm("head", m=tokens_per_rank, n=spec.vocab, k=spec.hidden)
    head_back = gemm_backward(head)

    def per_layer(block: float, last: float) -> np.ndarray:
        out = np.full(spec.layers, block)
        out[-1] += last
        return out

    forward = Work.kernels("fwd", per_layer(sum(g.flops for g in gemms), head.flops),
                           per_layer(sum(g.bytes for g in gemms), head.bytes))
    backward = Work.kernels("bwd", per_layer(sum(g.flops for g in back), sum(g.flops for g in head_back)),
                            per_layer(sum(g.bytes for g in back), sum(g.bytes for g in head_back)),
                            label="backward block")
    return LayerLayout.of_tensors(spec.name, parameters_by_layer(spec), forward=forward, backward=(backward,),
                                  label=spec.name)


def layout_from_buckets(buckets: Sequence[Sequence[tuple[int, ...]]], *, backward_flops: Sequence[float] | np.ndarray,
                        backward_bytes: Sequence[float] | np.ndarray | None = None, forward_flops: float = 0.0,
                        forward_bytes: float = 0.0, model: str = "custom") -> LayerLayout:
    """A kernel layout from explicit bucket shapes and compute (tests, hand-made cases): one backward
    kernel per bucket, the forward pass's ``forward_flops`` and ``forward_bytes`` on the first layer.

    >>> lay = layout_from_buckets([[(64, 32)], [(10,)]], backward_flops=[1e9, 1e9])
    >>> lay.layers, lay.parameters, lay.tensors[1]
    (2, 2058, (('b1.t0', (10,)),))
    """
    n = len(buckets)
    if len(backward_flops) != n:
        raise ConfigError(field="backward_flops", value=len(backward_flops),
                          rule=f"does not give one backward kernel per bucket ({n})", fix="give one value per bucket")
    tensors = [[(f"b{b}.t{i}", shape) for i, shape in enumerate(bucket)] for b, bucket in enumerate(buckets)]
    first = np.zeros((2, n))
    first[:, 0] = forward_flops, forward_bytes
    nbytes = np.zeros(n) if backward_bytes is None else backward_bytes
    return LayerLayout.of_tensors(model, tensors, forward=Work.kernels("fwd", first[0], first[1]),
                                  backward=(Work.kernels("bwd", backward_flops, nbytes, label="backward block"),),
                                  label=model)


def forward_id(step: int, layer: int | None = None) -> str:
    """Id of ``layer``'s forward op in ``step`` (None: the forward pass written as one op)."""
    return f"s{step}.fwd" if layer is None else f"s{step}.fwd{layer}"


def sync_id(step: int) -> str:
    """Id of the join op that ends when every sync released in ``step`` has."""
    return f"s{step}.sync"


def training_trace(layout: LayerLayout, sync: Sync, *, steps: int, ranks: int,
                   communicators: dict[str, list[list[int]]], programs: Sequence[tuple[str, list[int] | str]] = (),
                   overlap: int = 0, wait: str = "layer", release: str = "backward", fused_forward: bool = False,
                   release_before: int | None = None, marker: bool = False,
                   quiet: Callable[[int], bool] | None = None, joins: bool = True,
                   tags: dict[str, Any] | None = None, name: str | None = None) -> Trace:
    """``steps`` training steps of ``layout``, each layer's gradient synced by ``sync`` (see the module docstring).

    ``programs`` are ``(name, ranks)`` of rank groups whose sync ops differ (default: one program of
    every rank); ``fused_forward`` writes the forward pass as one op; syncs are released in steps
    before ``release_before`` only (default all; a sync due past the trace has no waiter);
    ``marker`` appends a zero-cost first forward op of step ``steps`` (when it could start);
    ``quiet(step)`` true writes a step that releases no sync and owes none as one op of
    ``layout.step_time``; ``joins`` false writes no join ops where nothing waits for them
    (``wait="layer"``: a shorter trace, no settle times). ``tags`` are added to the forward and
    backward ops' tags.
    """
    if wait not in WAITS:
        raise ConfigError(field="wait", value=wait, rule="is not a wait rule", fix=f"use one of {WAITS}")
    if release not in RELEASES:
        raise ConfigError(field="release", value=release, rule="is not a release mode", fix=f"use one of {RELEASES}")
    if quiet is not None and layout.step_time is None:
        raise ConfigError(field="quiet", value="given", rule="needs a layout of fixed-duration compute (a step time)",
                          fix="give quiet only with a layout of seconds")
    release_before = steps if release_before is None else release_before
    extra = tags or {}
    groups = list(programs) or [("ranks", f"0:{ranks}")]
    built = []
    for program, members in groups:
        first = members[0] if isinstance(members, list) else int(members.split(":")[0] or 0)
        built.append(Program.model_construct(name=program, ranks=members, ops=_program_ops(
            layout, sync, first, steps=steps, overlap=overlap, wait=wait, release=release, fused=fused_forward,
            release_before=release_before, marker=marker, quiet=quiet, joins=joins or wait == "step", tags=extra)))
    return Trace.model_construct(format="commsim-trace", version=1, name=name or f"{layout.label or layout.model} "
                                 "data-parallel", ranks=ranks, communicators=communicators, programs=built,
                                 metadata={})


def _program_ops(layout: LayerLayout, sync: Sync, rank: int, *, steps: int, overlap: int, wait: str, release: str,
                 fused: bool, release_before: int, marker: bool, quiet: Callable[[int], bool] | None,
                 joins: bool, tags: dict[str, Any]) -> list[Any]:
    """The ops of one program (see :func:`training_trace`)."""
    due: dict[tuple[int, int], list[str]] = defaultdict(list)  # (step, layer or -1 for the step) -> ops waited for
    ops: list[Any] = []
    last_phase = layout.backward[-1].name
    for s in range(steps + (1 if marker else 0)):
        step_tags = {**tags, "step": s}
        if s == steps:  # the marker: when step ``steps`` could start
            first = None if fused else 0
            waits = due.pop((s, -1), []) + due.pop((s, 0), [])
            ops.append(layout.forward.op(-1, forward_id(s, first), waits, step_tags, f"step {s} start"))
            break
        if quiet is not None and quiet(s):
            ops.append(DelayOp.model_construct(id=f"s{s}.quiet", stream="compute", deps=[], tags=step_tags,
                                               seconds=layout.step_time, name=f"step {s}"))
            continue
        if fused:
            waits = due.pop((s, -1), []) + [d for layer in range(layout.layers) for d in due.pop((s, layer), [])]
            ops.append(layout.forward.op(None, forward_id(s), waits, step_tags, f"step {s} forward"))
        else:
            for layer in range(layout.layers):
                waits = (due.pop((s, -1), []) if layer == 0 else []) + due.pop((s, layer), [])
                ops.append(layout.forward.op(layer, forward_id(s, layer), waits, step_tags,
                                             f"step {s} forward {layer}"))
        releasing = s < release_before
        ends: list[str] = []

        def released(layer: int, after: str, s: int = s, ends: list[str] = ends) -> None:
            chain = sync(s, layer, after, rank)
            if chain:
                ops.extend(chain)
                ends.append(chain[-1].id)
                if wait == "layer":
                    due[(s + 1 + overlap, layer)].append(chain[-1].id)

        for layer in range(layout.layers - 1, -1, -1):
            for work in layout.backward:
                ops.append(work.op(layer, f"s{s}.{work.name}{layer}", [], step_tags,
                                   f"step {s} {work.label or work.name} {layer}"))
            if releasing and release == "backward":
                released(layer, f"s{s}.{last_phase}{layer}")
        if releasing and release == "after_backward":
            for layer in range(layout.layers - 1, -1, -1):
                released(layer, f"s{s}.{last_phase}0")
        if joins and (ends or (releasing and wait == "step")):
            ops.append(DelayOp.model_construct(id=sync_id(s), stream=f"sync.s{s}", deps=ends or [f"s{s}.{last_phase}0"],
                                               tags={"step": s}, seconds=0.0, name=f"step {s} sync"))
            if wait == "step":
                due[(s + 1 + overlap, -1)].append(sync_id(s))
    return ops


@dataclass
class StepTimes:
    """Read back from a replay, per step: ``starts`` (seconds; one more, when step ``steps`` started),
    ``compute_end`` (end of its last backward op) and ``settle`` (its join's end from its start; NaN: no join)."""

    starts: np.ndarray
    compute_end: np.ndarray
    settle: np.ndarray
    times: dict[str, tuple[float, float]] = field(default_factory=dict)

    def of(self, op_id: str) -> tuple[float, float]:
        """Start and end of op ``op_id`` (latest over the cohorts that hold it; NaN: none)."""
        return self.times.get(op_id, (math.nan, math.nan))


def step_times(replay: Any, layout: LayerLayout, steps: int, *, fused_forward: bool = False,
               every: int = 1) -> StepTimes:
    """The :class:`StepTimes` of a finished replay of :func:`training_trace` (with ``marker``).

    ``every`` > 1 reads steps ``0, every, 2·every, ...`` as one each (a period of ``every`` steps:
    its settle time is the latest of its steps').
    """
    times: dict[str, tuple[float, float]] = {}
    for c in range(len(replay.cohorts)):
        index, start, end = replay.op_times(c)
        for op_id, i in index.items():
            old = times.get(op_id)
            new = (float(start[i]), float(end[i]))
            times[op_id] = new if old is None else (max(old[0], new[0]), max(old[1], new[1]))
    nan = (math.nan, math.nan)
    first = None if fused_forward else 0
    starts = np.array([times.get(forward_id(s, first), nan)[0] for s in range(0, steps + 1, every)])
    last = f"{layout.backward[-1].name}0"
    compute_end = np.array([times.get(f"s{s}.{last}", nan)[1] for s in range(steps)])
    joins = np.array([times.get(sync_id(s), nan)[1] for s in range(steps)])
    if every > 1:
        blocks = joins.reshape(-1, every)
        settle = np.array([np.nanmax(b) if np.isfinite(b).any() else math.nan for b in blocks]) - starts[:-1]
    else:
        settle = joins - starts[:-1]
    return StepTimes(starts=starts, compute_end=compute_end, settle=settle, times=times)
