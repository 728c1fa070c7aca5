"""The collectives a compressed payload travels in, as schedules for :mod:`commsim.collectives`.

- ``all_reduce`` (dense and shared-support payloads, summed in wire format): the
  registry's algorithms (:func:`commsim.collectives.build_schedule`) -- ``ring``,
  ``hierarchical`` (intra-server ring reduce-scatter, inter-server all-reduce per
  rail, intra-server all-gather), ``double_binary_tree``, ``halving_doubling``.
- ``all_gather`` (payloads that cannot be summed: sparse supports, per-rank
  scales): every rank ends with every rank's payload. ``ring`` is the registry's;
  ``hierarchical`` is built here (:func:`hierarchical_all_gather`): an inter-server
  ring per rail first (each rank's payload to the same local rank of every other
  server), then an intra-server ring of the gathered blocks. Either way each rank
  sends ``(n - 1) P`` bytes, so the volume grows with the number of ranks.
- parameter server, ``star``: every other rank pushes its payload to the server
  rank (:func:`star_push`), the server aggregates and replies to each
  (:func:`star_reply`); ``sharded``: every rank serves ``1/n`` of the tensor (a
  direct all-to-all push, an all-gather of the reply shards).

:func:`volume_per_rank` gives the bytes each rank puts on the wire for each, in
closed form (the tests and validation compare it with the simulation).

>>> s = hierarchical_all_gather(8, 100.0, ranks_per_node=4)
>>> [st.phase for st in s.steps], s.wire_bytes / 8     # (n - 1) P per rank
(['inter all-gather', 'intra all-gather', 'intra all-gather', 'intra all-gather'], 700.0)
>>> volume_per_rank("all_gather", "ring", 8, 100.0), volume_per_rank("all_reduce", "ring", 8, 800.0)
(700.0, 1400.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from commsim.collectives import Dep, Schedule, Step, build_schedule
from commsim.errors import ConfigError

__all__ = ["hierarchical_all_gather", "star_push", "star_reply", "volume_per_rank", "CollectivePlan"]


def hierarchical_all_gather(n: int, per_rank: float, *, ranks_per_node: int) -> Schedule:
    """All-gather of ``per_rank`` bytes from each of ``n`` ranks: inter-server rings per rail, then intra-server rings.

    Positions ``m L .. m L + L - 1`` are server ``m`` (``L = ranks_per_node``, ``M = n / L``
    servers). Phase 1: ``M - 1`` steps in which rank ``(m, l)`` sends ``per_rank`` to
    ``(m + 1, l)`` and forwards what it received. Phase 2: ``L - 1`` steps in which rank
    ``(m, l)`` sends the ``M`` payloads of its rail (``M · per_rank``) to ``(m, l + 1)`` and
    forwards. A transfer waits for its sender's previous send and for the arrival it forwards.
    """
    if n < 1 or not per_rank > 0:
        raise ConfigError(field="all_gather", value=(n, per_rank), rule="needs at least 1 rank and a positive size",
                          fix="give a payload of at least one byte")
    local = int(ranks_per_node)
    if local < 1 or n % local:
        raise ConfigError(field="ranks_per_node", value=ranks_per_node, rule=f"does not divide the {n} ranks",
                          fix="give the number of ranks per server, the same on every server")
    nodes = n // local
    pos = np.arange(n)
    m, l_ = pos // local, pos % local
    own = np.arange(n)
    steps: list[Step] = []
    if nodes > 1:
        dst = ((m + 1) % nodes) * local + l_
        left = ((m - 1) % nodes) * local + l_
        size = np.full(n, float(per_rank))
        for k in range(nodes - 1):
            deps = () if k == 0 else (Dep(k - 1, own), Dep(k - 1, left))
            steps.append(Step(src=pos, dst=dst, nbytes=size, deps=deps, phase="inter all-gather"))
    if local > 1:
        dst = m * local + (l_ + 1) % local
        left = m * local + (l_ - 1) % local
        size = np.full(n, float(per_rank) * nodes)
        first = len(steps)
        if first:
            # forward the rail's blocks once the last inter-server arrival is in (and the own send is done)
            inter_left = ((m - 1) % nodes) * local + l_
            start_deps: tuple[Dep, ...] = (Dep(first - 1, own), Dep(first - 1, inter_left))
        else:
            start_deps = ()
        for k in range(local - 1):
            deps = start_deps if k == 0 else (Dep(first + k - 1, own), Dep(first + k - 1, left))
            steps.append(Step(src=pos, dst=dst, nbytes=size, deps=deps, phase="intra all-gather"))
    return Schedule("all_gather", "hierarchical", n, float(per_rank) * n, steps,
                    notes=f"{nodes} servers x {local} ranks, inter-server rings per rail first")


def star_push(n: int, per_rank: float, *, root: int = 0) -> Schedule:
    """Every rank but ``root`` sends ``per_rank`` bytes to ``root`` at once (an incast on the server's links)."""
    others = np.delete(np.arange(n), root)
    step = Step(src=others, dst=np.full(n - 1, root), nbytes=np.full(n - 1, float(per_rank)), phase="push")
    return Schedule("reduce", "star", n, float(per_rank), [step], notes=f"push to rank {root}")


def star_reply(n: int, per_rank: float, *, root: int = 0) -> Schedule:
    """``root`` sends ``per_rank`` bytes to every other rank at once."""
    others = np.delete(np.arange(n), root)
    step = Step(src=np.full(n - 1, root), dst=others, nbytes=np.full(n - 1, float(per_rank)), phase="reply")
    return Schedule("broadcast", "star", n, float(per_rank), [step], notes=f"reply from rank {root}")


def volume_per_rank(kind: str, algorithm: str, n: int, nbytes: float, *, ranks_per_node: int = 1,
                    root_share: bool = False) -> float:
    """Bytes one rank puts on the wire, averaged over the ranks, for one transfer.

    ``nbytes`` is the buffer for ``all_reduce``, each rank's payload for ``all_gather``,
    ``push`` (each worker's upload) and ``reply`` (what each worker receives), and each
    rank's whole upload for ``all_to_all`` (the sharded server's push).

    - all_reduce ring: ``2 (n - 1) / n · S``; hierarchical:
      ``2 (L - 1) / L · S + 2 (M - 1) / M · S / L`` (other algorithms: ask their schedule);
    - all_gather (ring or hierarchical): ``(n - 1) · P``;
    - star push and reply: ``(n - 1) / n · P`` (the server sends or receives it all);
    - all_to_all: ``(n - 1) / n · P``.
    """
    if n <= 1:
        return 0.0
    if kind == "all_reduce":
        if algorithm == "hierarchical":
            local = ranks_per_node
            nodes = n // local
            return 2.0 * (local - 1) / local * nbytes + 2.0 * (nodes - 1) / nodes * nbytes / local
        if algorithm == "ring":
            return 2.0 * (n - 1) / n * nbytes
        raise ConfigError(field="algorithm", value=algorithm, rule="has no closed-form all-reduce volume here",
                          fix="use ring or hierarchical, or the wire_bytes of the algorithm's schedule")
    if kind == "all_gather":
        return (n - 1) * nbytes
    if kind in ("push", "reply", "all_to_all"):
        return (n - 1) / n * nbytes
    raise ConfigError(field="kind", value=kind, rule="is not a transfer kind",
                      fix="use all_reduce, all_gather, push, reply or all_to_all")


@dataclass
class CollectivePlan:
    """How each kind of transfer runs on a group of ``n`` ranks (``ranks_per_node`` per server).

    ``schedule(kind, nbytes)`` builds (and caches) the schedule; the algorithms are
    resolved from the study's choices (``auto``: hierarchical when the ranks span
    several servers of equal size, else ring).
    """

    n: int
    ranks_per_node: int
    all_reduce: str
    all_gather: str
    server: str
    root: int = 0

    def __post_init__(self) -> None:
        self._cache: dict[tuple[str, float], Schedule] = {}

    @classmethod
    def resolve(cls, n: int, ranks_per_node: int | None, *, all_reduce: str = "auto", all_gather: str = "auto",
                server: str = "star", root: int = 0) -> CollectivePlan:
        """Resolve ``auto`` against the group's servers (``ranks_per_node`` None: no server structure)."""
        local = ranks_per_node or 1
        layered = ranks_per_node is not None and 1 < local < n and n % local == 0
        if all_reduce == "auto":
            all_reduce = "hierarchical" if layered else "ring"
        if all_gather == "auto":
            all_gather = "hierarchical" if layered else "ring"
        if "hierarchical" in (all_reduce, all_gather) and not layered:
            raise ConfigError(field="algorithm", value="hierarchical",
                              rule=f"needs ranks on several servers of equal size; the {n} ranks are not",
                              fix="use ring (or auto) on this topology")
        if not 0 <= root < n:
            raise ConfigError(field="server_rank", value=root, rule=f"is not one of the {n} ranks",
                              fix=f"give a rank in 0..{n - 1}")
        return cls(n=n, ranks_per_node=local, all_reduce=all_reduce, all_gather=all_gather, server=server, root=root)

    def algorithm(self, kind: str) -> str:
        """The algorithm a transfer kind runs with."""
        return {"all_reduce": self.all_reduce, "all_gather": self.all_gather, "push": self.server,
                "reply": self.server}[kind]

    def schedule(self, kind: str, nbytes: float) -> Schedule:
        """The schedule of one transfer (``nbytes`` as in :func:`volume_per_rank`)."""
        key = (kind, float(nbytes))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        n = self.n
        if kind == "all_reduce":
            params = {"ranks_per_node": self.ranks_per_node} if self.all_reduce == "hierarchical" else {}
            out = build_schedule("all_reduce", self.all_reduce, n, nbytes, **params)
        elif kind == "all_gather":
            out = (hierarchical_all_gather(n, nbytes, ranks_per_node=self.ranks_per_node)
                   if self.all_gather == "hierarchical" else build_schedule("all_gather", "ring", n, n * nbytes))
        elif kind == "push":
            out = (star_push(n, nbytes, root=self.root) if self.server == "star"
                   else build_schedule("all_to_all", "direct", n, nbytes))
        elif kind == "reply":
            if self.server == "star":
                out = star_reply(n, nbytes, root=self.root)
            else:  # every rank holds 1/n of the reply: all-gather the shards
                out = self.schedule("all_gather", nbytes / n)
        else:
            raise ConfigError(field="kind", value=kind, rule="is not a transfer kind",
                              fix="use all_reduce, all_gather, push or reply")
        self._cache[key] = out
        return out

    def volume(self, kind: str, nbytes: float) -> float:
        """Wire bytes per rank of one transfer, from its schedule (the closed forms are :func:`volume_per_rank`)."""
        if not nbytes > 0:
            return 0.0
        return self.schedule(kind, nbytes).wire_bytes / self.n
