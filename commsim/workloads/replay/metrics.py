"""What a finished replay measured: step time, busy times, exposed communication, overlap, critical path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from commsim.workloads.intervals import overlap_length, union_length

__all__ = ["ReplayResult"]

_COMM_KINDS = frozenset({"collective", "send", "recv"})


@dataclass
class ReplayResult:
    """Timing of a replayed trace.

    ``step_time`` is the time of the whole trace (seconds). ``cohorts`` has one
    row per cohort (program and ranks) with busy times per activity class,
    exposed communication (communication not overlapped by compute) and the
    overlap fraction; ``ops`` one row per op and cohort; ``critical_path`` the
    chain of ops that set the step time, last one first; ``streams`` the busy
    time of every stream of every cohort (the union of its ops' intervals).
    """

    step_time: float
    cohorts: pd.DataFrame
    ops: pd.DataFrame
    critical_path: pd.DataFrame
    result: Any
    streams: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def exposed_communication(self) -> float:
        """Exposed communication of the slowest cohort, seconds."""
        slowest = self.cohorts.sort_values("end", ascending=False).iloc[0]
        return float(slowest["exposed_comm"])

    @property
    def overlap_fraction(self) -> float:
        """Share of communication time hidden behind compute, over all cohorts (time-weighted)."""
        comm = float(self.cohorts["comm_busy"].sum())
        return 0.0 if comm == 0 else 1.0 - float(self.cohorts["exposed_comm"].sum()) / comm


class _Metrics:
    """The summary tables of a :class:`~commsim.workloads.replay.Replay` (a part of it)."""

    def summary(self, result: Any = None) -> ReplayResult:
        """Per-cohort metrics, per-op timings and the critical path."""
        rows = []
        op_rows = []
        for cohort in self.cohorts:
            ops = cohort.plan.ops
            compute = [(cohort.start[i], cohort.end[i]) for i, op in enumerate(ops) if op.kind == "compute"]
            comm = [(cohort.start[i], cohort.end[i]) for i, op in enumerate(ops) if op.kind in _COMM_KINDS]
            comm_busy = union_length(comm)
            exposed = comm_busy - overlap_length(comm, compute)
            rows.append({
                "cohort": cohort.index, "program": self.trace.programs[cohort.program].name,
                "ranks": len(cohort.ranks), "first_rank": int(cohort.ranks[0]),
                "end": float(np.nanmax(cohort.end)) if len(ops) else 0.0,
                "compute_busy": union_length(compute), "comm_busy": comm_busy, "exposed_comm": exposed,
                "overlap_fraction": 0.0 if comm_busy == 0 else 1.0 - exposed / comm_busy,
            })
            for i, op in enumerate(ops):
                op_rows.append((cohort.index, op.id, op.kind, op.stream, float(cohort.start[i]), float(cohort.end[i])))
        cohorts = pd.DataFrame(rows)
        op_table = pd.DataFrame(op_rows, columns=["cohort", "op_id", "kind", "stream", "start", "end"])
        streams = pd.DataFrame(
            [(c, stream, union_length(list(zip(part["start"], part["end"], strict=True))))
             for (c, stream), part in op_table.groupby(["cohort", "stream"], sort=True)],
            columns=["cohort", "stream", "busy"])
        step_time = float(cohorts["end"].max()) if len(cohorts) else 0.0
        path = self._critical_path()
        out = ReplayResult(step_time=step_time, cohorts=cohorts, ops=op_table, critical_path=path, result=result,
                           streams=streams)
        if result is not None:
            result.metrics["step_time"] = (step_time, "s")
            if len(cohorts):
                # the same numbers as the ReplayResult properties (overlap over all cohorts, time-weighted)
                result.metrics["exposed_communication"] = (out.exposed_communication, "s")
                result.metrics["overlap_fraction"] = (out.overlap_fraction, "fraction")
            result.extra.update({"replay_cohorts": cohorts, "critical_path": path})
        return out

    def _critical_path(self) -> pd.DataFrame:
        best: tuple[float, int, int] | None = None
        for cohort in self.cohorts:
            if len(cohort.plan.ops) and not np.all(np.isnan(cohort.end)):
                i = int(np.nanargmax(cohort.end))
                if best is None or cohort.end[i] > best[0]:
                    best = (float(cohort.end[i]), cohort.index, i)
        rows = []
        seen = set()
        node = None if best is None else (best[1], best[2])
        while node is not None and node not in seen:
            seen.add(node)
            cohort = self.cohorts[node[0]]
            op = cohort.plan.ops[node[1]]
            rows.append((cohort.index, int(cohort.ranks[0]), op.id, op.kind, op.stream, float(cohort.start[node[1]]),
                         float(cohort.end[node[1]])))
            node = cohort.released_by[node[1]]
        return pd.DataFrame(rows, columns=["cohort", "rank", "op_id", "kind", "stream", "start", "end"])
