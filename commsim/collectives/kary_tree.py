"""The k-ary tree all-reduce: reduce up a ``fanout``-ary heap tree rooted at position 0, then broadcast down it.

The children of position ``i`` are ``fanout·i + 1 ... fanout·i + fanout``. Every
edge carries the whole buffer; a tree of depth ``D`` takes ``2 D`` transfers in
sequence, so on latency-bound links it beats the ring's ``2 (N - 1)`` (TPI-LLM
compares it with its star all-reduce). Registered as ``all_reduce`` /
``kary_tree`` with the parameter ``fanout`` (3 by default).

>>> tree_depth(8, 3), tree_depth(8, 2), tree_depth(1, 3)
(2, 3, 0)
>>> s = kary_tree_all_reduce(8, 1024.0, fanout=3)
>>> [step.phase for step in s.steps], s.steps[0].src.tolist()   # the deepest level reduces first
(['reduce', 'reduce', 'broadcast', 'broadcast'], [4, 5, 6, 7])
"""

from __future__ import annotations

import numpy as np

from commsim.collectives._schedule import Dep, Schedule, Step
from commsim.errors import ConfigError

__all__ = ["kary_tree_all_reduce", "tree_depth"]


def tree_depth(n: int, fanout: int) -> int:
    """Depth of the ``fanout``-ary heap tree on ``n`` ranks (0 for one rank)."""
    depth, size, level = 0, 1, 1
    while size < n:
        level *= fanout
        size += level
        depth += 1
    return depth


def kary_tree_all_reduce(n: int, nbytes: float, *, fanout: int = 3) -> Schedule:
    """Reduce up, then broadcast down, a ``fanout``-ary heap tree rooted at position 0.

    One step per tree edge level and direction; an edge waits for every edge
    into its lower end (reduce) or for the edge into its upper end (broadcast).
    """
    if not isinstance(fanout, (int, np.integer)) or fanout < 1:
        raise ConfigError(field="fanout", value=fanout, rule="must be a whole number of at least 1",
                          fix="give the number of children per tree node, e.g. 2 (binary) or 3")
    if n < 1 or not nbytes > 0:
        raise ConfigError(field="all-reduce", value={"ranks": n, "bytes": nbytes},
                          rule="needs at least one rank and a positive size", fix="give ranks >= 1 and bytes > 0")
    ranks = np.arange(n)
    parent = np.where(ranks > 0, (ranks - 1) // fanout, -1)
    depth = np.zeros(n, dtype=np.int64)
    for r in range(1, n):
        depth[r] = depth[parent[r]] + 1
    top = int(depth.max(initial=0))
    steps: list[Step] = []
    where: dict[int, tuple[int, int]] = {}     # child rank -> (step, entry) of its reduce edge
    for d in range(top, 0, -1):                 # reduce: deepest edges first
        children = np.flatnonzero(depth == d)
        deps = []
        for j in range(fanout):                  # child c waits for the edges from its j-th child
            idx = np.full(children.shape[0], -1, dtype=np.int64)
            for e, c in enumerate(children.tolist()):
                grandchild = fanout * c + 1 + j
                if grandchild < n:
                    idx[e] = where[grandchild][1]
            if (idx >= 0).any():
                deps.append(Dep(len(steps) - 1, idx))
        for e, c in enumerate(children.tolist()):
            where[c] = (len(steps), e)
        steps.append(Step(src=children, dst=parent[children], nbytes=np.full(children.shape[0], float(nbytes)),
                          deps=tuple(deps), reduce=True, phase="reduce"))
    reduce_steps = len(steps)
    down: dict[int, int] = {}                   # child rank -> entry of its broadcast edge
    for d in range(1, top + 1):                 # broadcast: root's edges first
        children = np.flatnonzero(depth == d)
        if d == 1:                               # wait for every reduce edge into the root
            into_root = [where[c][1] for c in children.tolist()]
            deps = tuple(Dep(reduce_steps - 1, np.full(children.shape[0], e, dtype=np.int64)) for e in into_root)
        else:
            idx = np.array([down[int(parent[c])] for c in children.tolist()], dtype=np.int64)
            deps = (Dep(len(steps) - 1, idx),)
        for e, c in enumerate(children.tolist()):
            down[c] = e
        steps.append(Step(src=parent[children], dst=children, nbytes=np.full(children.shape[0], float(nbytes)),
                          deps=deps, phase="broadcast"))
    return Schedule("all_reduce", f"tree{fanout}", n, float(nbytes), steps, notes=f"{fanout}-ary tree, depth {top}")
