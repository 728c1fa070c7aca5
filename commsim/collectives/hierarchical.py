"""Hierarchical all-reduce: intra-node ring reduce-scatter, inter-node all-reduce per rail, intra-node ring all-gather.

The ``n`` group positions form ``M = n / L`` nodes of ``L = ranks_per_node``
consecutive positions (node ``m`` holds ``m L .. m L + L - 1``). Phase 1: a ring
reduce-scatter of ``S`` inside every node (``L - 1`` steps of ``S / L``), leaving
local rank ``l`` with the node's sum of piece ``l``. Phase 2: on every *rail*
(the ranks with the same local index ``l``, one per node), an all-reduce of that
``S / L`` piece across nodes: a ring (``inter="ring"``, ``2 (M - 1)`` steps of
``S / (L M)``) or a double binary tree (``inter="tree"``). Phase 3: a ring
all-gather inside every node. A transfer that starts a phase waits until its
sender and receiver have both finished the previous phase. ``channels`` splits
every ring (and tree) into that many, each with its own flow hash.

:func:`hierarchical_all_gather` gathers the other way round: first an inter-node
ring per rail (each rank's payload to the same local rank of every other node),
then an intra-node ring of the rail's gathered blocks; each rank still sends
``(n - 1) P`` bytes, but only ``(M - 1) P`` of them cross the fabric.

``ranks_per_node`` can be read off a topology whose devices carry a ``server``
attribute (:func:`ranks_per_node_of`); :func:`~commsim.collectives.run_collective`
does that when it is not given.

>>> s = hierarchical_all_reduce(8, 8 * 2**20, ranks_per_node=4)
>>> [st.phase for st in s.steps]
['intra reduce-scatter', 'intra reduce-scatter', 'intra reduce-scatter', 'inter reduce-scatter', 'inter all-gather', 'intra all-gather', 'intra all-gather', 'intra all-gather']
>>> s.wire_bytes / 2**20       # 8 ranks x (3/4 + 2 x 1/2 x 1/4 + 3/4) x 8 MiB
112.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from commsim.collectives._pipeline import (
    Interner,
    Template,
    check_common,
    chunk_count,
    pack,
    replicate,
    sequence,
    with_channels,
)
from commsim.collectives._schedule import Dep, Schedule, Step
from commsim.collectives.tree import DBT_CHUNK, double_binary_tree_template
from commsim.errors import ConfigError

if TYPE_CHECKING:
    from commsim.network.topology import Topology

__all__ = ["PHASE_OPS", "hierarchical_all_gather", "hierarchical_all_reduce", "hierarchical_phases", "ranks_per_node_of",
           "ring_template"]


def ring_template(m: int, reduce: int) -> Template:
    """A ring over ``m`` positions: position ``j`` sends to ``j + 1``; step ``c`` waits for its own and its left
    neighbour's step ``c - 1``; the first ``reduce`` steps reduce."""
    j = np.arange(m)
    return Template(src=j, dst=(j + 1) % m, offset=np.zeros(m, dtype=np.int64), deps=[(j, -1), ((j - 1) % m, -1)],
                    reduce_until=np.full(m, reduce))


def _check_local(n: int, ranks_per_node: int) -> None:
    if not isinstance(ranks_per_node, (int, np.integer)) or ranks_per_node < 1 or n % ranks_per_node:
        raise ConfigError(field="ranks_per_node", value=ranks_per_node,
                          rule=f"must be a whole number of at least 1 that divides the group size {n}",
                          fix="give the number of ranks on each node, e.g. 8 for 8-GPU servers, with every "
                          "node holding the same number of ranks")


def _phase_steps(n: int, nbytes: float, ranks_per_node: int, inter: str, channels: int, chunk_size: float | None
                 ) -> tuple[list[list[Step]], str]:
    """The steps of the three phases (an empty list for a phase with nothing to do) and a note on the layout."""
    check_common(n, nbytes, channels)
    _check_local(n, ranks_per_node)
    if inter not in ("ring", "tree"):
        raise ConfigError(field="inter", value=inter, rule="is not an inter-node algorithm",
                          fix="use 'ring' or 'tree' (double binary tree)")
    local, nodes = int(ranks_per_node), n // int(ranks_per_node)
    grid = np.arange(n).reshape(nodes, local)
    intern = Interner()
    piece = nbytes / (local * channels)
    intra_rs: list = []
    intra_ag: list = []
    if local > 1:
        rs = with_channels(replicate(ring_template(local, local), grid), channels)
        ag = with_channels(replicate(ring_template(local, 0), grid), channels)
        intra_rs = pack(rs, local - 1, piece, phase="intra reduce-scatter", interner=intern)
        intra_ag = pack(ag, local - 1, piece, phase="intra all-gather", interner=intern)
    across: list = []
    if nodes > 1:
        rails = grid.T
        if inter == "ring":
            t = with_channels(replicate(ring_template(nodes, nodes - 1), rails), channels)
            across = pack(t, 2 * (nodes - 1), piece / nodes, phase="inter all-gather",
                          reduce_phase="inter reduce-scatter", interner=intern)
        else:
            chunks = chunk_count(nbytes / (2 * local), chunk_size, channels)
            t = with_channels(replicate(double_binary_tree_template(nodes, chunks), rails), channels)
            across = pack(t, chunks, piece / (2 * chunks), phase="inter broadcast", reduce_phase="inter reduce",
                          interner=intern)
    return [intra_rs, across, intra_ag], f"{nodes} nodes x {local} ranks, inter-node {inter}"


def hierarchical_all_reduce(n: int, nbytes: float, *, ranks_per_node: int, inter: Literal["ring", "tree"] = "ring",
                            channels: int = 1, chunk_size: float | None = DBT_CHUNK) -> Schedule:
    """All-reduce in three phases (see the module docstring); ``chunk_size`` only matters for ``inter="tree"``."""
    phases, notes = _phase_steps(n, nbytes, ranks_per_node, inter, channels, chunk_size)
    return Schedule("all_reduce", "hierarchical", n, nbytes, sequence(n, phases), notes=notes)


PHASE_OPS: tuple[str, str, str] = ("reduce_scatter", "all_reduce", "all_gather")
"""What each phase of the hierarchical all-reduce does: intra-node, across nodes per rail, intra-node."""


def hierarchical_phases(n: int, nbytes: float, *, ranks_per_node: int, inter: Literal["ring", "tree"] = "ring",
                        channels: int = 1, chunk_size: float | None = DBT_CHUNK) -> list[Schedule]:
    """The phases of :func:`hierarchical_all_reduce` as schedules of their own on the same ``n`` positions.

    Run one after another, each starting when the previous one is done everywhere
    (a barrier, where :func:`hierarchical_all_reduce` lets every rank go on as
    soon as it and its peer are done), e.g. each in the executor's *flows* mode:
    phase times then add up, and the fabric phase can be told apart. Schedule
    ``op`` names the phase (:data:`PHASE_OPS`); phases with nothing to do (one
    node, or one rank per node) are left out.

    >>> [(p.op, len(p.steps)) for p in hierarchical_phases(8, 2**20, ranks_per_node=4)]
    [('reduce_scatter', 3), ('all_reduce', 2), ('all_gather', 3)]
    """
    phases, notes = _phase_steps(n, nbytes, ranks_per_node, inter, channels, chunk_size)
    return [Schedule(op, "hierarchical", n, nbytes, steps, notes=f"{op} phase; {notes}")
            for op, steps in zip(PHASE_OPS, phases, strict=True) if steps]



def hierarchical_all_gather(n: int, nbytes: float, *, ranks_per_node: int) -> Schedule:
    """All-gather of ``nbytes`` (the gathered output, ``P = nbytes / n`` from each rank): rails first, then nodes.

    Phase 1: ``M - 1`` steps in which rank ``(m, l)`` sends ``P`` to ``(m + 1, l)`` and
    forwards what it received. Phase 2: ``L - 1`` steps in which rank ``(m, l)`` sends
    the ``M`` payloads of its rail (``M P``) to ``(m, l + 1)`` and forwards. A transfer
    waits for its sender's previous send and for the arrival it forwards.

    >>> s = hierarchical_all_gather(8, 800.0, ranks_per_node=4)
    >>> [st.phase for st in s.steps], s.wire_bytes / 8     # (n - 1) P per rank
    (['inter all-gather', 'intra all-gather', 'intra all-gather', 'intra all-gather'], 700.0)
    """
    check_common(n, nbytes)
    _check_local(n, ranks_per_node)
    local = int(ranks_per_node)
    nodes = n // local
    per_rank = nbytes / n
    pos = np.arange(n)
    node, lane = pos // local, pos % local
    steps: list[Step] = []
    if nodes > 1:
        dst = ((node + 1) % nodes) * local + lane
        left = ((node - 1) % nodes) * local + lane
        size = np.full(n, per_rank)
        for k in range(nodes - 1):
            deps = () if k == 0 else (Dep(k - 1, pos), Dep(k - 1, left))
            steps.append(Step(src=pos, dst=dst, nbytes=size, deps=deps, phase="inter all-gather"))
    if local > 1:
        dst = node * local + (lane + 1) % local
        left = node * local + (lane - 1) % local
        size = np.full(n, per_rank * nodes)
        first = len(steps)
        # forward the rail's blocks once the last inter-node arrival is in (and the own send is done)
        start: tuple[Dep, ...] = ((Dep(first - 1, pos), Dep(first - 1, ((node - 1) % nodes) * local + lane))
                                  if first else ())
        for k in range(local - 1):
            deps = start if k == 0 else (Dep(first + k - 1, pos), Dep(first + k - 1, left))
            steps.append(Step(src=pos, dst=dst, nbytes=size, deps=deps, phase="intra all-gather"))
    return Schedule("all_gather", "hierarchical", n, nbytes, steps,
                    notes=f"{nodes} nodes x {local} ranks, inter-node rings per rail first")

def ranks_per_node_of(topology: Topology, group: Sequence[str]) -> int:
    """Ranks per node of ``group``, from its devices' ``server`` attribute (equal, consecutive blocks)."""
    servers = [topology.node_attributes(name).get("server") for name in group]
    if any(s is None for s in servers):
        missing = next(name for name, s in zip(group, servers, strict=True) if s is None)
        raise ConfigError(field="ranks_per_node", value=missing, rule="cannot be derived: the device has no "
                          "'server' attribute", fix="pass ranks_per_node explicitly")
    starts = [i for i in range(len(servers)) if i == 0 or servers[i] != servers[i - 1]]
    sizes = np.diff([*starts, len(servers)])
    if len(set(servers)) != len(starts) or len(set(sizes.tolist())) != 1:
        raise ConfigError(field="ranks_per_node", value=sorted(set(sizes.tolist())),
                          rule="cannot be derived: the group's servers are not equal, consecutive blocks",
                          fix="order the group by server with the same number of ranks on each, or pass "
                          "ranks_per_node explicitly")
    return int(sizes[0])
