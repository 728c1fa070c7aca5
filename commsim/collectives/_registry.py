"""Which algorithms exist for which collective, and how to build their schedules."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from commsim.collectives import all_to_all, halving_doubling, hierarchical, kary_tree, ring, sendrecv, star, tree
from commsim.collectives._schedule import Schedule
from commsim.errors import ConfigError

__all__ = ["OPS", "ALGORITHMS", "register", "build_schedule", "algorithms_for"]

OPS: tuple[str, ...] = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast", "reduce",
                        "sendrecv")
"""The collective operations commsim knows."""

Builder = Callable[..., Schedule]
ALGORITHMS: dict[tuple[str, str], Builder] = {}
"""``(op, algorithm) -> builder(n, nbytes, **params)``."""


def register(op: str, algorithm: str, builder: Builder) -> None:
    """Make ``builder`` the schedule of ``algorithm`` for ``op``."""
    ALGORITHMS[(op, algorithm)] = builder


def algorithms_for(op: str) -> list[str]:
    """Algorithm names available for ``op``."""
    return sorted(a for o, a in ALGORITHMS if o == op)


def build_schedule(op: str, algorithm: str, n: int, nbytes: float, **params: Any) -> Schedule:
    """Build the schedule of ``algorithm`` for ``op`` on ``n`` ranks; errors name what is wrong."""
    if op not in OPS:
        raise ConfigError(field="op", value=op, rule="is not a collective operation", fix=f"use one of {', '.join(OPS)}")
    builder = ALGORITHMS.get((op, algorithm))
    if builder is None:
        raise ConfigError(field="algorithm", value=algorithm, rule=f"is not an algorithm for {op}",
                          fix=f"use one of {', '.join(algorithms_for(op))}")
    accepted = inspect.signature(builder).parameters
    for name in params:
        if name not in accepted:
            options = [p for p in accepted if p not in ("n", "nbytes")]
            raise ConfigError(field=name, value=params[name], rule=f"is not a parameter of {op}/{algorithm}",
                              fix=f"use one of {', '.join(options) or '(none)'}")
    return builder(n, nbytes, **params)


register("reduce_scatter", "ring", ring.ring_reduce_scatter)
register("all_gather", "ring", ring.ring_all_gather)
register("all_reduce", "ring", ring.ring_all_reduce)
register("broadcast", "ring", ring.ring_broadcast)
register("reduce", "ring", ring.ring_reduce)
register("all_reduce", "double_binary_tree", tree.double_binary_tree_all_reduce)
register("broadcast", "tree", tree.tree_broadcast)
register("reduce", "tree", tree.tree_reduce)
register("all_reduce", "halving_doubling", halving_doubling.halving_doubling_all_reduce)
register("all_to_all", "direct", all_to_all.all_to_all)
register("all_reduce", "star", star.star_all_reduce)
register("reduce", "star", star.star_reduce)
register("broadcast", "star", star.star_broadcast)
register("all_reduce", "hierarchical", hierarchical.hierarchical_all_reduce)
register("all_gather", "hierarchical", hierarchical.hierarchical_all_gather)
register("all_reduce", "kary_tree", kary_tree.kary_tree_all_reduce)
register("sendrecv", "direct", sendrecv.sendrecv)
