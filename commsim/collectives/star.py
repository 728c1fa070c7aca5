"""Star collectives: every rank talks to one root directly (TPI-LLM's all-reduce, a parameter server's push and reply).

- ``reduce`` / ``star``: the ``n - 1`` other ranks send ``S`` each to ``root`` at
  once (an incast on the root's link; each arrival is reduced there when the run
  charges reductions). A parameter server's push.
- ``broadcast`` / ``star``: ``root`` sends ``S`` to each other rank at once (a
  fan-out on its link). A parameter server's reply.
- ``all_reduce`` / ``star``: the reduce, then, once the root has every buffer,
  the broadcast. The root moves ``(n - 1) S`` each way.

On a root link of bandwidth ``B`` and path latency ``alpha`` the reduce and the
broadcast each take ``alpha + (n - 1) S / B``
(:func:`~commsim.collectives.closed_form.star_one_way_time`).

>>> s = star_all_reduce(4, 1024.0, root=2)
>>> s.steps[0].src.tolist(), s.steps[1].dst.tolist(), len(s.steps[1].deps)
([0, 1, 3], [0, 1, 3], 3)
>>> star_reduce(4, 10.0, root=0).steps[0].dst.tolist(), star_broadcast(4, 10.0).wire_bytes
([0, 0, 0], 30.0)
"""

from __future__ import annotations

import numpy as np

from commsim.collectives._pipeline import check_common
from commsim.collectives._schedule import Dep, Schedule, Step
from commsim.errors import ConfigError

__all__ = ["star_all_reduce", "star_broadcast", "star_reduce"]


def _spokes(n: int, nbytes: float, root: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The other ranks, the root repeated, and ``S`` per spoke (after checking the inputs)."""
    check_common(n, nbytes)
    if not isinstance(root, (int, np.integer)) or not 0 <= root < n:
        raise ConfigError(field="root", value=root, rule=f"is not a position of the {n}-rank group",
                          fix=f"give a root in 0..{n - 1}")
    others = np.delete(np.arange(n), root)
    return others, np.full(n - 1, root), np.full(n - 1, float(nbytes))


def star_reduce(n: int, nbytes: float, *, root: int = 0) -> Schedule:
    """Every rank but ``root`` sends its ``nbytes`` buffer to ``root`` at once (one step, an incast)."""
    others, hub, size = _spokes(n, nbytes, root)
    steps = [Step(src=others, dst=hub, nbytes=size, reduce=True, phase="gather")] if n > 1 else []
    return Schedule("reduce", "star", n, nbytes, steps, notes=f"root {root}")


def star_broadcast(n: int, nbytes: float, *, root: int = 0) -> Schedule:
    """``root`` sends its ``nbytes`` buffer to every other rank at once (one step, a fan-out)."""
    others, hub, size = _spokes(n, nbytes, root)
    steps = [Step(src=hub, dst=others, nbytes=size, phase="broadcast")] if n > 1 else []
    return Schedule("broadcast", "star", n, nbytes, steps, notes=f"root {root}")


def star_all_reduce(n: int, nbytes: float, *, root: int = 0) -> Schedule:
    """Gather to ``root``, reduce there, send the result back."""
    gather = star_reduce(n, nbytes, root=root).steps
    if not gather:
        return Schedule("all_reduce", "star", n, nbytes, [], notes="no transfers")
    scatter = star_broadcast(n, nbytes, root=root).steps[0]
    # every send of the result waits for every arrival (stride-0 views: O(n) memory per wait)
    scatter.deps = tuple(Dep(0, np.broadcast_to(np.int64(j), (n - 1,))) for j in range(n - 1))
    return Schedule("all_reduce", "star", n, nbytes, [*gather, scatter], notes=f"root {root}")

