"""What the replay plans before it runs: per program its op order, dependencies and rendezvous keys;
per cohort (the ranks that run a program's ops together) the state of each op."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__: list[str] = []


@dataclass
class _Plan:
    """What never changes about a program: op order, dependencies, stream predecessors."""

    ops: list[Any]
    waits: np.ndarray
    dependents: list[list[int]]
    predecessors: list[list[int]]
    issue: dict[int, tuple[Any, int]]
    """Collective op -> (its channel: communicator name or rank tuple, its position among the
    program's collectives on that channel): the rendezvous key, as the trace rules match collectives
    per group in list order (not in the order they happen to arrive)."""
    p2p: list[int]
    """Indices of the send and recv ops, in list order."""

    @classmethod
    def of(cls, program: Any) -> _Plan:
        ops = list(program.ops)
        ids = {op.id: i for i, op in enumerate(ops)}
        last_on: dict[str, int] = {}
        predecessors: list[list[int]] = []
        issue: dict[int, tuple[Any, int]] = {}
        issued: dict[Any, int] = defaultdict(int)
        for i, op in enumerate(ops):
            if op.kind == "collective":
                channel = op.group if isinstance(op.group, str) else tuple(op.group)
                issue[i] = (channel, issued[channel])
                issued[channel] += 1
            before = {ids[d] for d in op.deps}
            if op.stream in last_on:
                before.add(last_on[op.stream])
            last_on[op.stream] = i
            predecessors.append(sorted(before))
        dependents: list[list[int]] = [[] for _ in ops]
        for i, before in enumerate(predecessors):
            for j in before:
                dependents[j].append(i)
        waits = np.array([len(p) for p in predecessors], dtype=np.int64)
        p2p = [i for i, op in enumerate(ops) if op.kind in ("send", "recv")]
        return cls(ops, waits, dependents, predecessors, issue, p2p)


@dataclass(eq=False)
class _Cohort:
    """Ranks that run one program's ops together."""

    index: int
    program: int
    ranks: np.ndarray
    devices: list[str]
    plan: _Plan
    waits: np.ndarray
    start: np.ndarray
    end: np.ndarray
    released_by: list[tuple[int, int] | None]
    pending_parts: np.ndarray
    launched: np.ndarray
    """When each communication op's transfers began (its group complete, its peer posted); NaN otherwise."""
    rank_end: dict[int, np.ndarray] = field(default_factory=dict)
    rank_began: dict[int, np.ndarray] = field(default_factory=dict)
    buffers: dict[str, list[list[int]]] = field(default_factory=dict)

