"""Send/receive as nccl-tests' ``sendrecv_perf`` runs it: every rank sends its buffer to the next rank.

Rank ``i`` sends ``nbytes`` to ``(i + 1) mod n`` and receives as much from
``i - 1``, all at once: one step of ``n`` transfers (``busbw = algbw``).

>>> s = sendrecv(4, 1024.0)
>>> s.steps[0].dst.tolist(), s.wire_bytes
([1, 2, 3, 0], 4096.0)
"""

from __future__ import annotations

import numpy as np

from commsim.collectives._pipeline import check_common
from commsim.collectives._schedule import Schedule, Step

__all__ = ["sendrecv"]


def sendrecv(n: int, nbytes: float) -> Schedule:
    """Every rank sends ``nbytes`` to its successor in rank order (a ring shift)."""
    check_common(n, nbytes)
    if n == 1:
        return Schedule("sendrecv", "direct", n, nbytes, [], notes="no transfers")
    src = np.arange(n)
    step = Step(src=src, dst=(src + 1) % n, nbytes=np.full(n, float(nbytes)), phase="shift")
    return Schedule("sendrecv", "direct", n, nbytes, [step], notes="ring shift")
