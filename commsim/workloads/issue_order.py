"""Queues filled in issue order: ops that become ready at run time, run one at a time as a host issues them.

A trace stream runs its ops in list order. A training process's CUDA stream
runs them in the order its host thread *issues* them, which for work released
by events (a gradient bucket's compression once its backward kernel ends, its
collective once the compression ends, the next bucket's once the first bucket's
collective ends) is the order in which they become ready, known only at run
time. :class:`IssueQueues` is a replay plug-in
(:class:`~commsim.workloads.replay.ReplayPlugin`) for that: every op tagged
``queue: NAME`` joins queue ``NAME`` when it is ready, and the queue runs its
ops one at a time in the order they joined.

The ranks of an SPMD step run in lockstep, as data-parallel ranks do (their
collectives synchronise them anyway): ops of different programs with the same
id are one op of the step. It joins its queue when it is ready on every
program that holds it, and the next op of the queue starts when it has ended
on all of them. So a program may leave out an op it has no work for (a
parameter server's aggregation on the workers) and still wait for it where the
others do. Each queued op should sit on a trace stream of its own lane (a
bucket's chain of ops, say) so that list order adds nothing to the queue's.

>>> from commsim.simulation import Simulation
>>> from commsim.network.loader import load_topology
>>> from commsim.workloads.replay import replay
>>> from commsim.workloads.trace import Trace, Program, DelayOp
>>> ops = [DelayOp(id="slow", seconds=2.0, stream="a", tags={"queue": "q"}),
...        DelayOp(id="ready", seconds=0.5, stream="b"),
...        DelayOp(id="late", seconds=1.0, stream="c", deps=["ready"], tags={"queue": "q"})]
>>> trace = Trace(ranks=1, programs=[Program(name="p", ranks=[0], ops=ops)])
>>> out = replay(Simulation(load_topology("switch:2,1GB/s,1us")), trace, plugins=[IssueQueues()])
>>> out.ops.set_index("op_id").loc[["slow", "late"], ["start", "end"]].values.tolist()
[[0.0, 2.0], [2.0, 3.0]]
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import numpy as np
from simpy.events import Event

__all__ = ["IssueQueues"]


class IssueQueues:
    """Replay plug-in: ops tagged ``tag: NAME`` run one at a time per queue, in the order they became ready.

    ``tag`` names the op tag that holds the queue (default ``"queue"``); ops without it
    are left alone. See the module docstring for the lockstep rule across programs.
    """

    def __init__(self, tag: str = "queue") -> None:
        self.tag = tag
        self._holders: dict[str, int] = {}
        self._arrived: dict[str, int] = defaultdict(int)
        self._gates: dict[str, list[Event]] = defaultdict(list)
        self._waiting: dict[str, deque[str]] = defaultdict(deque)
        self._running: dict[str, str | None] = {}
        self._left: dict[str, int] = {}
        self.issued: list[str] = []
        """Queued op ids in the order they started (every queue together)."""

    def start(self, replay: Any) -> None:
        """Count, per queued op id, the cohorts that hold it (it starts when all of them are ready)."""
        holders: dict[str, int] = defaultdict(int)
        for cohort in replay.cohorts:
            for op in cohort.plan.ops:
                if self.tag in op.tags:
                    holders[op.id] += 1
        self._holders = dict(holders)
        return None

    def before(self, replay: Any, ranks: np.ndarray, op: Any) -> Event | None:
        """Hold a queued op until every cohort holding it is ready and its queue has nothing running before it."""
        queue = op.tags.get(self.tag)
        if queue is None:
            return None
        gate = Event(replay.env)
        self._gates[op.id].append(gate)
        self._arrived[op.id] += 1
        if self._arrived[op.id] == self._holders[op.id]:
            del self._arrived[op.id]
            self._waiting[str(queue)].append(op.id)
            self._next(str(queue))
        return gate

    def after(self, replay: Any, ranks: np.ndarray, op: Any) -> None:
        """When a queued op has ended on every cohort holding it, start the next op of its queue."""
        queue = op.tags.get(self.tag)
        if queue is None:
            return
        self._left[op.id] -= 1
        if self._left[op.id] == 0:
            del self._left[op.id]
            self._running[str(queue)] = None
            self._next(str(queue))

    def _next(self, queue: str) -> None:
        if self._running.get(queue) is not None or not self._waiting[queue]:
            return
        op_id = self._waiting[queue].popleft()
        self._running[queue] = op_id
        self._left[op_id] = self._holders[op_id]
        self.issued.append(op_id)
        for gate in self._gates.pop(op_id):
            gate.succeed()
