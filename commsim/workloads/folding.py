"""Fold the transformer layers of a pipeline pass into three timed ops: Megatron-scale steps at search speed.

A pass (the forward or backward of one micro-batch through one stage's model
chunk) runs its layers as one chain: every kernel and every blocking
tensor- or expert-parallel collective waits for the op before it. Once the
chain has begun, its timing cannot depend on anything outside it when its
compute runs alone on its devices and its collectives on links nothing else
uses at the time. Then a pass of ``L`` layers is, seen from the rest of the
step, three ops:

* **head** (compute stream): the kernels before the pass's first op on another
  stream (the first layer norm); it waits for what the first kernel waits for
  (the activations received, the previous kernel);
* **body** (compute stream): from that first collective to the end of the last
  kernel; it also waits for the last op already on that collective's stream (a
  reduction of the previous pass may still run — the real collective queues
  behind it);
* **tail** (the stream of the pass's last collective, when the pass ends with a
  blocking collective such as the forward's final TP reduce-scatter): the next
  kernel and the pipeline send wait for it, as they wait for the collective.

Their durations are sums of per-layer parts, and a layer's parts depend only on
its stage, direction and kind (dense or mixture-of-experts): each is timed
*once*, by replaying one layer of each kind and direction per stage on the shared
:class:`~commsim.workloads.replay.Replay` (``fast=True``) — the **probe**. So
repeated identical layers cost once, and the step's replay handles a few ops
per pass instead of tens per layer. The ops are :class:`~commsim.workloads.trace.DelayOp`
tagged ``folded`` with the breakdown classes of the time they stand for
(:func:`~commsim.workloads.breakdown.ops_breakdown` splits them back); the
layers' working buffers (recomputation) become one allocation of the largest,
held over the body (the peak per GPU is unchanged: they are allocated and freed
one after another). A backward pass that feeds the data-parallel gradient
buckets (the last micro-batch's; every one under ZeRO-2) is cut into more delay
ops, one ending where each weight-gradient kernel ends, so each bucket waits for
what it waits for op by op. A pass whose layers have an op that need not wait for
the first collective of the layer (a weight-gradient kernel beside the backward
TP all-reduce without sequence parallelism) is not folded.

**Where it is exact.** When the step's tensor- and expert-parallel groups have
links of their own and compute runs alone (the conditions of
:mod:`commsim.workloads._shortcuts`, checked on the folded step), the probe
times each layer as the full replay does: results equal it up to floating-point
rounding (tested to 1e-9). Otherwise (e.g. a TP group sharing NVLink ports with
a data-parallel group or a pipeline neighbour in the same server) in-layer
collectives are timed without the pipeline and gradient traffic that shares
their links in the full replay — an approximation, stated in the prediction's
notes. Not folded at all: context parallelism (ring attention sends inside
layers), ZeRO-3 (per-layer gathers), ranks not in lockstep, scheduled faults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from commsim.workloads._training import _rank_layout, _StageEmitter, _Step
from commsim.workloads.breakdown import ops_breakdown
from commsim.workloads.replay import Replay
from commsim.workloads.trace import Trace

__all__ = ["LayerFolder", "Part", "LayerTiming", "fold_refusal", "probe_layers", "folded_exactly"]

_MEMORY = ("alloc", "free")


@dataclass(frozen=True)
class Part:
    """A stretch of a layer's chain: its length (seconds) and that time by breakdown class (seconds)."""

    seconds: float
    classes: dict[str, float]


@dataclass(frozen=True)
class LayerTiming:
    """One layer pass of one stage as the probe timed it (see the module docstring).

    ``body_stream``: the stream of the body's first op (a collective's); ``tail_stream``:
    the tail's stream, ``None`` without a tail; ``working``: bytes the layer allocates
    and frees again (recomputation's working buffers).
    """

    head: Part
    body: Part
    tail: Part | None
    body_stream: str | None
    tail_stream: str | None
    working: float
    tight: bool = True
    """Every body op waits for the body's first op: otherwise (a weight-gradient kernel that may start before a
    reduction queued behind the previous pass's) the pass is not folded."""
    grads: tuple[tuple[str, str, float], ...] = ()
    """The layer's gradient-completing kernels in emission order: (name, ``head`` or ``body``, seconds from that
    part's start to the kernel's end)."""


def _add(parts: list[Part]) -> Part:
    classes: dict[str, float] = {}
    for part in parts:
        for column, seconds in part.classes.items():
            classes[column] = classes.get(column, 0.0) + seconds
    return Part(sum(p.seconds for p in parts), classes)


class LayerFolder:
    """Emits folded passes into a training trace (the ``folder`` of :func:`~commsim.workloads._training.step_trace`).

    ``timings``: per ``(stage, phase, is MoE layer)`` — ``phase`` ``fwd`` or ``bwd`` — the
    probe's :class:`LayerTiming`; ``zero``: the ZeRO stage (2 keeps backward passes op by op).
    """

    def __init__(self, timings: dict[tuple[int, str, bool], LayerTiming], zero: int,
                 links: dict[tuple[int, ...], set[int]] | None = None) -> None:
        self.timings = timings
        self.zero = zero
        self.links = links or {}
        """Per in-layer group (TP, EP): the links its collectives use (``None`` when the probe could not tell)."""
        self._plans: dict[tuple[Any, ...], _PassPlan] = {}

    def folds(self, emitter: Any, phase: str, final: bool) -> bool:
        """True when the pass of ``phase`` (``final``: the last micro-batch's) of ``emitter``'s stage is folded."""
        return all(t.tight for (stage, p, _), t in self.timings.items() if stage == emitter.stage and p == phase)

    def emit(self, emitter: Any, layers: list[int], prefix: str, tags: dict[str, Any], final: bool = False) -> None:
        """Append the folded ``layers`` of one pass to ``emitter``'s program (head, body, tail).

        A backward pass that feeds the gradient buckets (the last micro-batch's; every one under
        ZeRO-2) has its head and body cut where each weight-gradient kernel ends, so each bucket
        waits for the op ending when its last gradient does.
        """
        step, b = emitter.step, emitter.b
        # only a pass whose gradients feed buckets is cut where they complete (the others would be cut into
        # a hundred delays that nothing waits for)
        feeds = final or self.zero >= 2
        key = (emitter.stage, tags["phase"], tuple(layers), feeds)
        plan = self._plans.get(key)
        if plan is None:
            # every micro-batch's pass of a stage and direction is the same chain: planned once per folder
            plan = self._plans[key] = self._plan(step, emitter.stage, tags["phase"], layers, feeds)
        track = step.config.track_memory and plan.working > 0
        markers: dict[tuple[int, str], str] = {}
        if track:
            b.alloc(f"{prefix}.layers_alloc", f"layers.{prefix}", plan.working, tags=tags)
        if plan.head:
            emitter.last_compute = _emit_pieces(b, f"{prefix}.layers_head", plan.head, tags, markers,
                                                deps=(emitter.pending, *emitter.waits))
            emitter.pending, emitter.waits = None, []
        if plan.body:
            emitter.last_compute = _emit_pieces(b, f"{prefix}.layers", plan.body, tags, markers,
                                                deps=(emitter.pending, *emitter.waits,
                                                      b.last_on(str(plan.body_stream))))
            emitter.pending, emitter.waits = None, []
        if track:
            b.free(f"{prefix}.layers_free", f"layers.{prefix}", tags=tags)
        if plan.tail is not None:
            stream = str(plan.tail.stream)
            emitter.pending = b.delay(f"{prefix}.layers_tail", plan.tail.part.seconds, stream=stream,
                                      tags={**tags, "folded": plan.tail.part.classes},
                                      deps=(emitter.pending, emitter.last_compute, b.last_on(stream)))
        for producer_key in plan.grads:
            producer = f"{producer_key[0]}.{producer_key[1]}"
            if final:
                emitter.grad_ready.append((markers[producer_key], producer))
            emitter.sync.add(markers[producer_key], producer, final)

    def _plan(self, step: Any, stage: int, phase: str, layers: list[int], feeds: bool) -> _PassPlan:
        """The folded chain of one pass (see :meth:`emit`): its pieces, tail, working buffers and gradients."""
        timings = [self.timings[(stage, phase, step.is_moe(layer))] for layer in layers]
        # the chain as consecutive parts: head (compute only), body (from a collective), tail (a collective)
        chain: list[_Link] = []
        for layer, t in zip(layers, timings, strict=True):
            grads = t.grads if feeds else ()
            chain.append(_Link("head", t.head, None, [(layer, n, at) for n, where, at in grads if where == "head"]))
            if t.body_stream is not None:
                chain.append(_Link("body", t.body, t.body_stream,
                                   [(layer, n, at) for n, where, at in grads if where == "body"]))
            if t.tail is not None:
                chain.append(_Link("tail", t.tail, t.tail_stream, []))
        tail = chain.pop() if chain and chain[-1].kind == "tail" else None
        first = next((k for k, link in enumerate(chain) if link.kind != "head"), len(chain))
        head, body = chain[:first], chain[first:]
        grads = [(layer, name) for layer, t in zip(layers, timings, strict=True) for name, _, _ in (t.grads if feeds
                                                                                                    else ())]
        return _PassPlan(head=_pieces(head) if head else None, body=_pieces(body) if body else None,
                         body_stream=body[0].stream if body else None, tail=tail,
                         working=max(t.working for t in timings), grads=grads)


@dataclass
class _Link:
    """One part of a folded pass's chain, with the gradients that complete in it (layer, name, seconds in)."""

    kind: str
    part: Part
    stream: str | None
    grads: list[tuple[int, str, float]]


@dataclass
class _Pieces:
    """Delay ops of consecutive links on the compute stream: each one's seconds and ``folded`` classes, and per
    gradient (layer, name) the index of the op that ends when it does."""

    ops: list[tuple[float, dict[str, float]]]
    markers: dict[tuple[int, str], int]


@dataclass
class _PassPlan:
    """One folded pass, the same for every micro-batch of a stage and direction (see :meth:`LayerFolder.emit`)."""

    head: _Pieces | None
    body: _Pieces | None
    body_stream: str | None
    tail: _Link | None
    working: float
    grads: list[tuple[int, str]]


def _pieces(links: list[_Link]) -> _Pieces:
    """Delay ops for consecutive ``links`` on the compute stream, cut where a gradient completes.

    Each op's ``folded`` classes are taken from the links' in order: the chain is the only thing running on
    its ranks' compute and in-layer streams meanwhile, so where in it a class falls cannot change the
    breakdown.
    """
    total = _add([link.part for link in links])
    cuts: list[tuple[float, tuple[int, str]]] = []
    base = 0.0
    for link in links:
        cuts += [(base + at, (layer, grad)) for layer, grad, at in link.grads]
        base += link.part.seconds
    ends = sorted({min(at, total.seconds) for at, _ in cuts} | {total.seconds})
    left = dict(total.classes)
    done, ops, index = 0.0, [], {}
    for k, end in enumerate(ends):
        seconds = end - done
        share: dict[str, float] = {}
        for column in list(left):
            take = left[column] if k == len(ends) - 1 else min(left[column], seconds - sum(share.values()))
            if take > 0:
                share[column] = take
                left[column] -= take
        ops.append((seconds, share))
        index[end] = k
        done = end
    return _Pieces(ops, {key: index[min(at, total.seconds)] for at, key in cuts})


def _emit_pieces(b: Any, name: str, pieces: _Pieces, tags: dict[str, Any], markers: dict[tuple[int, str], str],
                 deps: tuple[str | None, ...]) -> str:
    """Append ``pieces`` to ``b`` (the first waiting for ``deps``); the last op's id. ``markers`` gets, per
    gradient, the id of the op that ends when it does."""
    ids = []
    last = len(pieces.ops) - 1
    for k, (seconds, share) in enumerate(pieces.ops):
        ids.append(b.delay(name if k == last else f"{name}.{k}", seconds, deps=deps if k == 0 else (),
                           tags={**tags, "folded": dict(share)}, stream="compute"))
    for key, k in pieces.markers.items():
        markers[key] = ids[k]
    return ids[-1]


def fold_refusal(step: _Step, sim: Any, options: dict[str, Any]) -> str | None:
    """Why the passes of ``step`` on ``sim`` cannot be folded, or ``None`` when they can."""
    cfg = step.config
    if cfg.cp > 1:
        return "context parallelism sends KV blocks inside every layer"
    if cfg.zero >= 3:
        return "ZeRO-3 gathers every layer's parameters over the data-parallel group"
    if not options.get("lockstep", True):
        return "ranks are replayed one by one (lockstep off)"
    if sim.faults.scheduled:
        return "faults are scheduled (a layer's time may change during the step)"
    return None


def probe_layers(step: _Step, simulation: Callable[[], Any], options: dict[str, Any]) -> LayerFolder:
    """Time one layer of each kind and direction on every stage with the shared replay; the folder of ``step``.

    ``simulation()`` gives a fresh simulation; ``options`` go to :class:`Replay` (``fast=True``).
    """
    cfg = step.config
    phases = ("fwd", "bwd")
    programs, spans = [], {}
    for stage in range(cfg.pp):
        emitter = _StageEmitter(step, stage)
        emitter.sync.all = ()     # the probe times layers; the step's buckets are the folded trace's
        kinds: dict[bool, int] = {}
        for layer in step.stages[stage]:
            kinds.setdefault(step.is_moe(layer), layer)
        for moe, layer in kinds.items():
            for phase in phases:
                # a fence: each probed layer starts with nothing of the one before still running
                streams = {op.stream for op in emitter.b.ops}
                emitter.pending = emitter.b.delay(f"fence{len(emitter.b.ops)}", 0.0, tags={},
                                                  deps=[emitter.b.last_on(s) for s in sorted(streams)])
                emitter.last_compute = emitter.pending
                begin = len(emitter.b.ops)
                lt = {"micro_batch": 0, "phase": phase, "layer": layer}
                if phase == "fwd":
                    emitter.layer_forward(0, layer, f"f{layer}", lt)
                else:
                    emitter.layer_backward(0, layer, f"b{layer}", lt, final=False)
                spans[(stage, phase, moe)] = (begin, len(emitter.b.ops), emitter.pending)
        programs.append(emitter.b.build())
    trace = Trace.model_construct(name="layer-probe", ranks=cfg.world, communicators=_rank_layout(step),
                                  programs=programs, metadata={})
    replay = Replay(simulation(), trace, **{**options, "fast": True, "record": "none", "progress": None, "validate": False,
                                           "collective_timings": None})
    replay.run_to_end()
    timings = {}
    for (stage, phase, moe), (begin, end, tail) in spans.items():
        cohort = replay.cohorts[stage]
        layer = next(n for n in step.stages[stage] if step.is_moe(n) == moe)
        grads = {name for name, _ in step.layer_producers(layer)} if phase == "bwd" else set()
        timings[(stage, phase, moe)] = _layer_timing(cohort, range(begin, end), tail, grads)
    links = replay.shortcuts.links_of if replay.shortcuts is not None else {}
    return LayerFolder(timings, cfg.zero, links)


def _layer_timing(cohort: Any, indices: range, tail_id: str | None, grads: set[str]) -> LayerTiming:
    ops = cohort.plan.ops
    start, end, launched = cohort.start.tolist(), cohort.end.tolist(), cohort.launched.tolist()

    def part(chosen: list[int]) -> Part:
        if not chosen:
            return Part(0.0, {})
        classes = ops_breakdown([ops[i] for i in chosen], [start[i] for i in chosen], [end[i] for i in chosen],
                                [launched[i] for i in chosen])
        return Part(max(end[i] for i in chosen) - start[chosen[0]], {k: v for k, v in classes.items() if v})

    memory = [i for i in indices if ops[i].kind in _MEMORY]
    allocs = [i for i in memory if ops[i].kind == "alloc"]
    if any(ops[i].stream != "compute" for i in memory) or (allocs and memory[: len(allocs)] != allocs):
        raise AssertionError("folding needs a layer's buffers allocated on the compute stream before any is freed")
    timed = [i for i in indices if ops[i].kind not in _MEMORY]
    tail = [i for i in timed if ops[i].id == tail_id and ops[i].stream != "compute"]
    rest = [i for i in timed if i not in tail]
    lead = next((k for k, i in enumerate(rest) if ops[i].stream != "compute"), len(rest))
    head, body = rest[:lead], rest[lead:]
    completing = []
    for i in rest:      # in emission order: the buckets take gradients in that order
        name = ops[i].id.split(".", 1)[1]
        if name in grads:
            first = head[0] if i in head else body[0]
            completing.append((name, "head" if i in head else "body", end[i] - start[first]))
    return LayerTiming(grads=tuple(completing), head=part(head), body=part(body), tail=part(tail) if tail else None, tight=_tight(ops, body),
                       body_stream=ops[body[0]].stream if body else None,
                       tail_stream=ops[tail[0]].stream if tail else None,
                       working=float(sum(ops[i].bytes for i in allocs)))


def _tight(ops: list[Any], body: list[int]) -> bool:
    """True when every op of ``body`` waits, directly or not, for its first op (through deps or stream order)."""
    if not body:
        return True
    ids = {ops[i].id: i for i in body}
    reached = {body[0]}
    last_on: dict[str, int] = {ops[body[0]].stream: body[0]}
    for i in body[1:]:
        before = [ids[d] for d in ops[i].deps if d in ids]
        if ops[i].stream in last_on:
            before.append(last_on[ops[i].stream])
        if any(j in reached for j in before):
            reached.add(i)
        last_on[ops[i].stream] = i
    return len(reached) == len(body)


def folded_exactly(replay: Replay, folder: LayerFolder) -> bool:
    """True when ``replay`` (of a step folded by ``folder``) times layers as the op-by-op replay would.

    That is: compute runs alone, and no link of an in-layer group's collectives (as the probe
    found them) can be used by another group or a send/recv pair of the step.
    """
    shortcuts = replay.shortcuts
    if shortcuts is None or not shortcuts.compute:
        return False
    return all(shortcuts.owners.get(link, set()) <= {group} for group, links in folder.links.items() for link in links)
