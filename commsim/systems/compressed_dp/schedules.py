"""The collectives a compressed payload travels in, from the collective registry (:mod:`commsim.collectives`).

- ``all_reduce`` (dense and shared-support payloads, summed in wire format): the
  registry's algorithms -- ``ring``, ``hierarchical`` (intra-server ring
  reduce-scatter, inter-server all-reduce per rail, intra-server all-gather),
  ``double_binary_tree``, ``halving_doubling``.
- ``all_gather`` (payloads that cannot be summed: sparse supports, per-rank
  scales): every rank ends with every rank's payload; ``ring`` or ``hierarchical``
  (inter-server rings per rail first, then intra-server rings). Either way each
  rank sends ``(n - 1) P`` bytes, so the volume grows with the number of ranks.
- parameter server, ``star``: every other rank pushes its payload to the server
  rank (``reduce``/``star``), the server aggregates and replies to each
  (``broadcast``/``star``); ``sharded``: every rank serves ``1/n`` of the tensor (a
  direct all-to-all push, an all-gather of the reply shards).

:meth:`CollectivePlan.collective` names the registry collective of a transfer
(as a trace collective op: op, algorithm, bytes in the nccl-tests convention,
root); :func:`volume_per_rank` gives the bytes each rank puts on the wire for
each, in closed form (the tests and validation compare it with the simulation).

>>> plan = CollectivePlan.resolve(8, 4)
>>> plan.collective("all_gather", 100.0)
{'op': 'all_gather', 'algorithm': 'hierarchical', 'bytes': 800.0}
>>> plan.volume("all_gather", 100.0), volume_per_rank("all_reduce", "ring", 8, 800.0)
(700.0, 1400.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from commsim.collectives import Schedule, build_schedule
from commsim.errors import ConfigError

__all__ = ["volume_per_rank", "CollectivePlan"]


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

    def collective(self, kind: str, nbytes: float) -> dict[str, Any]:
        """The registry collective of one transfer as trace-op fields (``nbytes`` as in :func:`volume_per_rank`)."""
        n = self.n
        if kind == "all_reduce":
            return {"op": "all_reduce", "algorithm": self.all_reduce, "bytes": nbytes}
        if kind == "all_gather":  # the trace gives an all-gather's gathered output
            return {"op": "all_gather", "algorithm": self.all_gather, "bytes": n * nbytes}
        if kind not in ("push", "reply"):
            raise ConfigError(field="kind", value=kind, rule="is not a transfer kind",
                              fix="use all_reduce, all_gather, push or reply")
        if self.server == "star":
            return {"op": "reduce" if kind == "push" else "broadcast", "algorithm": "star", "bytes": nbytes,
                    "root": self.root}
        if kind == "push":  # the sharded server: each rank sends every shard to its owner
            return {"op": "all_to_all", "algorithm": "direct", "bytes": nbytes}
        return {"op": "all_gather", "algorithm": self.all_gather, "bytes": nbytes}  # every rank holds 1/n of it

    def schedule(self, kind: str, nbytes: float) -> Schedule:
        """The registry schedule of one transfer (cached)."""
        key = (kind, float(nbytes))
        cached = self._cache.get(key)
        if cached is None:
            spec = self.collective(kind, nbytes)
            params: dict[str, Any] = {}
            if spec["algorithm"] == "hierarchical":
                params["ranks_per_node"] = self.ranks_per_node
            if "root" in spec:
                params["root"] = spec["root"]
            cached = self._cache[key] = build_schedule(spec["op"], spec["algorithm"], self.n, spec["bytes"], **params)
        return cached

    def volume(self, kind: str, nbytes: float) -> float:
        """Wire bytes per rank of one transfer, from its schedule (the closed forms are :func:`volume_per_rank`)."""
        if not nbytes > 0:
            return 0.0
        return self.schedule(kind, nbytes).wire_bytes / self.n
