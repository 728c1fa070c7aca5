"""Replaying long periodic traces quickly and measuring their steady state.

A generator that writes one op per layer and inner step (a per-layer training
DAG over a hundred inner steps) makes tens of thousands of ops, most of which
no other stream ever waits for. :func:`coalesce_delays` merges every chain of
:class:`~commsim.workloads.trace.DelayOp` on one stream that nothing observes
in its middle into one op: the replay is exact (the same ops start and end at
the same times where anything depends on them) and much shorter.

:func:`window` measures a steady state from a replay: the time between the
starts of two ops (for example the first forward op of two periods), which
includes every stall in between.

>>> from commsim.workloads.trace import Trace, Program, DelayOp, CollectiveOp
>>> ops = [DelayOp(id="a", seconds=1.0), DelayOp(id="b", seconds=2.0),
...        CollectiveOp(id="ar", op="all_reduce", bytes=1e6, group="world", deps=["b"]),
...        DelayOp(id="c", seconds=3.0), DelayOp(id="d", seconds=4.0, deps=["ar"])]
>>> trace = Trace(ranks=2, communicators={"world": [[0, 1]]}, programs=[Program(name="p", ranks="0:2", ops=ops)])
>>> [(op.id, getattr(op, "seconds", None)) for op in coalesce_delays(trace).programs[0].ops]
[('b', 3.0), ('ar', None), ('c', 3.0), ('d', 4.0)]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from commsim.errors import ConfigError
from commsim.workloads.trace import DelayOp, Program, Trace

__all__ = ["coalesce_delays", "window"]


def coalesce_delays(trace: Trace, *, keep: Iterable[str] = ()) -> Trace:
    """The trace with unobserved chains of delay ops merged, per program and stream.

    Delay op ``b`` absorbs the delay op ``a`` just before it on the same stream when
    ``b`` waits for nothing but ``a`` and nothing else waits for ``a``: ``b`` then
    takes ``a``'s dependencies and the sum of their seconds, and keeps its own id,
    position and tags (the merged op's name lists the first and last ids). Ops
    whose ids are in ``keep`` are never absorbed nor absorb (measurement points).
    """
    kept = set(keep)
    programs = []
    for program in trace.programs:
        observers: set[str] = {dep for op in program.ops for dep in op.deps}
        out: list[Any] = []  # an op, a chain (list) of delay ops to merge, or None where one was moved on
        last_on: dict[str, int] = {}  # stream -> index in ``out`` of its last entry
        for op in program.ops:
            prev = last_on.get(op.stream)
            entry = out[prev] if prev is not None else None
            tail = entry[-1] if isinstance(entry, list) else entry
            if (op.kind == "delay" and tail is not None and tail.kind == "delay" and op.id not in kept
                    and tail.id not in kept and set(op.deps) <= {tail.id} and tail.id not in observers):
                chain = entry if isinstance(entry, list) else [entry]
                chain.append(op)
                out[prev] = None
                last_on[op.stream] = len(out)
                out.append(chain)
                continue
            last_on[op.stream] = len(out)
            out.append(op)
        programs.append(Program.model_construct(name=program.name, ranks=program.ranks,
                                                ops=[_merged(e) for e in out if e is not None]))
    return Trace.model_construct(**{**dict(trace), "programs": programs})


def _merged(entry: Any) -> Any:
    """An op, or the one delay op a chain becomes: the last op's id, tags and place, the first's dependencies."""
    if not isinstance(entry, list):
        return entry
    first, last = entry[0], entry[-1]
    return DelayOp.model_construct(id=last.id, stream=last.stream, deps=list(first.deps), tags=last.tags,
                                   seconds=sum(op.seconds for op in entry), name=f"{first.id}..{last.id}")


def window(ops: Any, start_op: str, end_op: str, *, cohort: int = 0) -> float:
    """Seconds from the start of op ``start_op`` to the start of op ``end_op`` in a replay's ``ops`` table."""
    part = ops[ops["cohort"] == cohort].set_index("op_id")["start"]
    for name in (start_op, end_op):
        if name not in part.index:
            raise ConfigError(field="window", value=name, rule="is not an op of the replayed trace",
                              fix="measure between ops the trace has (and keep them when coalescing)")
    return float(part[end_op] - part[start_op])
