"""Where a replayed step's time goes, per cohort: compute, recomputation, exposed communication, idle.

Every instant of the step (from 0 to the step time) of a cohort's ranks falls in
exactly one class, in this order of precedence: **compute** (a compute op runs
that is not a recomputation), **recompute** (a compute op tagged
``phase: recompute`` or ``recompute: true`` runs), **exposed communication** of
the tensor-, pipeline-, data-, expert- or context-parallel group, or other
(communication runs and no compute does; the first class in that order that is
busy takes the instant; communication counts from when its transfers began —
its whole group there, its peer posted — since waiting for a peer is idle), and **idle** — waiting for another stage or for the
step to end, the pipeline bubble of the breakdown. The classes add up to the
step time exactly.

The group class of a collective or send is its ``group`` tag when it has one (the
training generator tags each: ``tp``, ``cp``, ``ep``, ``dp``, ``edp``, ``pp``,
``embd``), else its communicator's name; of a send or receive without it, the
communicator of its peer (``pp:+1``). ``embd`` (the tied-embedding all-reduce) and
``edp`` (the expert gradients' reduction) count as data parallel.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from commsim.workloads.intervals import merge_intervals, overlap_length, union_length

__all__ = ["COMM_CLASSES", "BREAKDOWN_COLUMNS", "ops_breakdown", "step_breakdown"]

COMM_CLASSES = ("tp", "pp", "dp", "ep", "cp", "other")
"""Communication classes of the breakdown, in order of precedence."""

BREAKDOWN_COLUMNS = ("compute", "recompute", *(f"exposed_{c}_comm" for c in COMM_CLASSES), "idle")
"""Columns of :func:`step_breakdown` (seconds), adding up to the step time."""

_ALIASES = {"embd": "dp", "edp": "dp", "tp_sp": "tp", "fsdp": "dp", "zero": "dp"}


def comm_class(op: Any) -> str:
    """The breakdown class of a communication op (see the module docstring)."""
    kind = op.tags.get("group") if op.tags else None
    if kind is None:
        if op.kind == "collective":
            kind = op.group if isinstance(op.group, str) else "other"
        else:
            peer = op.peer
            kind = peer.split(":", 1)[0] if isinstance(peer, str) else "other"
    kind = _ALIASES.get(kind, kind)
    return kind if kind in COMM_CLASSES else "other"


def _is_recompute(op: Any) -> bool:
    tags = op.tags or {}
    return tags.get("phase") == "recompute" or bool(tags.get("recompute"))


def step_breakdown(replay: Any, step_time: float | None = None) -> pd.DataFrame:
    """One row per cohort of a finished :class:`~commsim.workloads.replay.Replay`: the classes above, seconds.

    ``step_time`` defaults to the end of the last op of the replay.
    """
    cohorts = replay.cohorts
    if step_time is None:
        step_time = max((float(c.end.max()) for c in cohorts if len(c.end)), default=0.0)
    rows = []
    for cohort in cohorts:
        busy = ops_breakdown(cohort.plan.ops, cohort.start.tolist(), cohort.end.tolist(), cohort.launched.tolist())
        rows.append({"cohort": cohort.index, **busy, "idle": step_time - sum(busy.values())})
    return pd.DataFrame(rows, columns=["cohort", *BREAKDOWN_COLUMNS])


def ops_breakdown(ops: list[Any], start: list[float], end: list[float], launched: list[float]) -> dict[str, float]:
    """Seconds of each busy class (every column of :data:`BREAKDOWN_COLUMNS` but ``idle``) of one cohort's ops.

    ``start``, ``end`` and ``launched`` (when a communication op's transfers began, NaN if
    not) are per op, seconds. A delay op tagged ``folded`` (``{class: seconds}``: work
    folded into one op by :mod:`commsim.workloads.folding`) counts as those classes, one
    after the other from its start, in the order of its tag.
    """
    compute: list[tuple[float, float]] = []
    recompute: list[tuple[float, float]] = []
    comm: dict[str, list[tuple[float, float]]] = {c: [] for c in COMM_CLASSES}
    lists = {"compute": compute, "recompute": recompute, **{f"exposed_{c}_comm": comm[c] for c in COMM_CLASSES}}
    for i, op in enumerate(ops):
        if end[i] <= start[i]:
            continue
        if op.kind == "compute":
            (recompute if _is_recompute(op) else compute).append((start[i], end[i]))
        elif op.kind in ("collective", "send", "recv"):
            began = launched[i] if launched[i] == launched[i] else start[i]
            if end[i] > began:
                comm[comm_class(op)].append((began, end[i]))
        elif op.kind == "delay" and op.tags and "folded" in op.tags:
            at = start[i]
            for column, seconds in op.tags["folded"].items():
                if seconds > 0:
                    lists[column].append((at, min(at + seconds, end[i])))
                    at += seconds
    covered = merge_intervals(compute)
    row: dict[str, float] = {"compute": union_length(covered)}
    merged = merge_intervals(recompute)
    row["recompute"] = union_length(merged) - overlap_length(merged, covered)
    covered = merge_intervals(covered + merged)
    for c in COMM_CLASSES:
        merged = merge_intervals(comm[c])
        row[f"exposed_{c}_comm"] = union_length(merged) - overlap_length(merged, covered)
        covered = merge_intervals(covered + merged)
    return row
