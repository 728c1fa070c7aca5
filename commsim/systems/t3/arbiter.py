"""T3-MCA: memory-controller arbitration that favours the GEMM's memory traffic.

The fluid model has no request queues, so the arbiter acts on what a queue's
occupancy reflects: how much of the HBM bandwidth the GEMM is using.

* **Priority.** GEMM activities run in a higher priority class of the kernel
  than communication, so communication only gets what the GEMM leaves.
* **Admission threshold.** Communication is admitted while HBM utilisation is
  below ``mca_threshold``: each GPU has an *admission* resource that every
  communication byte on its HBM also uses, with capacity
  ``max(threshold·C - D, min_share·C)``, where ``C`` is the achievable HBM
  bandwidth and ``D`` the GEMM's current demand (its main loop's reads at full
  compute speed; saturating, ``C``, in a store-bound epilogue).
* **Starvation bound.** While communication is active and the GEMM saturates
  HBM, the GEMM is held to ``C - min(min_share·C, need)`` by a *port* resource
  only its activities use, so communication keeps up to ``min_share·C``; ``need``
  is what the active flows can use at their link rate (the bound reserves no
  more than communication can take).

Capacities change only when a GEMM phase starts or ends or communication
starts or stops on a GPU: the arbiter re-reads its inputs then. A resource
that does not bind (the GEMM idle, no communication) has the kernel's
``UNBOUNDED`` capacity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from commsim.kernel import UNBOUNDED

if TYPE_CHECKING:
    from commsim.systems.t3.context import RingContext

__all__ = ["MemoryArbiter"]


class MemoryArbiter:
    """Per-GPU admission and port resources of T3-MCA (see the module docstring)."""

    def __init__(self, ctx: RingContext) -> None:
        self.ctx = ctx
        p = ctx.p
        kernel = ctx.kernel
        self.port = kernel.add_resources(np.full(p, UNBOUNDED), [f"mca_port:{n}" for n in ctx.names])
        self.admit = kernel.add_resources(np.full(p, UNBOUNDED), [f"mca_admit:{n}" for n in ctx.names])
        self.demand = np.zeros(p)          # GEMM HBM demand, bytes/s (inf: saturating)
        self.active = np.zeros(p, dtype=np.int64)  # communication flows using each GPU's HBM
        self.need = np.zeros(p)                     # HBM bytes/s those flows can use at their link rate
        self._port_cap = np.full(p, UNBOUNDED)
        self._admit_cap = np.full(p, UNBOUNDED)

    def gemm_phase(self, gpus: np.ndarray, demand: np.ndarray | float) -> None:
        """The GEMM on ``gpus`` entered a phase demanding ``demand`` bytes/s of HBM (0: idle, inf: saturating)."""
        gpus = np.asarray(gpus, dtype=np.int64)
        self.demand[gpus] = demand
        self._update(gpus)

    def comm_changed(self, gpus: np.ndarray, need: np.ndarray, sign: int) -> None:
        """Communication flows using ``need[i]`` bytes/s (at most) of the HBM of ``gpus[i]`` started
        (``sign`` +1) or ended (-1)."""
        gpus = np.asarray(gpus, dtype=np.int64)
        np.add.at(self.active, gpus, sign)
        np.add.at(self.need, gpus, sign * np.asarray(need, dtype=float))
        self.need[self.active == 0] = 0.0   # no rounding residue once idle
        self._update(np.unique(gpus))

    def _update(self, gpus: np.ndarray) -> None:
        if gpus.size == 0:
            return
        knobs = self.ctx.knobs
        cap = self.ctx.hbm_capacity
        share = knobs.mca_min_share
        demand = self.demand[gpus]
        busy = self.active[gpus] > 0
        reserve = np.minimum(share * cap, self.need[gpus])
        port = np.where(busy & (demand >= cap - reserve), cap - reserve, UNBOUNDED)
        admit = np.where(demand > 0, np.maximum(knobs.mca_threshold * cap - np.minimum(demand, cap), share * cap), UNBOUNDED)
        change = (port != self._port_cap[gpus])
        if change.any():
            self._port_cap[gpus[change]] = port[change]
            self.ctx.kernel.set_capacity(self.port[gpus[change]], port[change])
        change = (admit != self._admit_cap[gpus])
        if change.any():
            self._admit_cap[gpus[change]] = admit[change]
            self.ctx.kernel.set_capacity(self.admit[gpus[change]], admit[change])
