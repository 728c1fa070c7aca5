"""Extension points of the collective executor: what a mechanism adds to each transfer.

A study whose collective is an ordinary schedule but whose transfers do more
than cross the network (T3's DMAs read and update HBM at both ends and pass a
memory arbiter) gives :class:`~commsim.collectives.CollectiveRun` a
:class:`TransferHooks`. The executor asks it, for every batch of entries it is
about to send, which extra kernel resources the transfers also use and at
what rate cap and weight (:class:`TransferTerms`), and tells it when they are
delivered. External triggers (a transfer that also waits for something outside
the schedule) are the ``gates`` argument of ``CollectiveRun`` with
:meth:`~commsim.collectives.CollectiveRun.release`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from commsim.kernel import UNBOUNDED

__all__ = ["TransferHooks", "TransferTerms"]

Extra = Sequence[tuple[Sequence[int], Sequence[float]] | None]


@dataclass(frozen=True)
class TransferTerms:
    """How one batch of transfers runs beyond its route.

    Attributes
    ----------
    extra:
        Per transfer, kernel resources it also consumes and the amount of each per byte sent,
        e.g. ``([hbm_src, hbm_dst], [1.0, 1.0])`` for a DMA that reads and writes device memory
        (``None``: none).
    cap:
        Most bytes/s a transfer may move (e.g. what the compute units of a communication kernel
        can issue), per batch or per transfer; :data:`~commsim.kernel.UNBOUNDED` for no cap.
    weight:
        Max-min weight of the transfers against other activities on shared resources.
    """

    extra: Extra | None = None
    cap: float | np.ndarray = UNBOUNDED
    weight: float = 1.0


class TransferHooks(Protocol):
    """A mechanism plug-in called by the executor around every batch of transfers.

    ``k`` is the step, ``entries`` the step's entries in the batch (positions into
    the step's arrays), ``nbytes`` the bytes each puts on the wire.
    """

    def starting(self, k: int, entries: np.ndarray, nbytes: np.ndarray) -> TransferTerms:
        """The entries are about to be sent: the terms they run with."""
        ...

    def delivered(self, k: int, entries: np.ndarray) -> None:
        """The entries arrived (before anything that waited for them starts)."""
        ...
