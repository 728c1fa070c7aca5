"""DRAM interference: a GEMM's main loop slows down while T3's DMA streams through the same HBM.

The fluid model shares HBM *bandwidth* by max-min fairness, but a GEMM with a
16 MB L2 needs only a few per cent of it in its main loop, so bandwidth sharing
alone lets a GEMM and T3's reduce-scatter overlap almost for free. What a
memory controller adds is *latency*. A DMA engine and the near-memory update
unit issue at the memory side, not from compute units, so nothing bounds how
many requests they keep queued; with a first-ready (row-hit-first) scheduler
their sequential reads and in-place updates keep hitting open rows and are
served ahead of the GEMM's operand misses, and every switch between the
streams costs row activations and read/write turnarounds. A CU whose next
operand block arrives late stalls (one workgroup per CU: little latency
hiding), so the GEMM's main loop slows in proportion to how much of the DRAM
the engine traffic occupies.

Model (one parameter, ``kappa = hbm_interference``, dimensionless): while DMA
and near-memory-update traffic moves ``u·C`` bytes/s through a GPU's HBM
(``C`` the achievable HBM bandwidth, ``u`` clipped to 1), every byte the GEMM's
main loop fetches from DRAM costs it an extra ``kappa·u`` times that byte's
transfer time ``1/C`` in stalls. L2 hits do not queue at the DRAM, so only the
misses count: a wave whose roofline time is ``t`` and which reads ``R`` bytes
after the L2 takes ``t + kappa·u·R/C``, i.e. it runs ``1 + kappa·u·d`` times
slower, ``d = R / (t·C)`` being its DRAM intensity (the fraction of the HBM its
reads take at the roofline rate, at most 1). The penalty is a per-GPU *stall*
resource that only main-loop activities use, with coefficient ``1/cap``
(``cap`` the activity's roofline rate) and capacity ``1 / (1 + kappa·u·d)``: at
``u = 0`` it binds exactly at the roofline (no change), and it never touches
communication, the GEMM's store phases (bandwidth-bound: the HBM resource
already shares them) or anything else.

``u`` is the engine traffic at its link-limited rate: a flow from GPU ``s`` to
``s+1`` at ``r = min(cap, link)`` adds ``r·src_coef`` to ``s`` and ``r·dst_coef``
to ``s+1``; flows sharing a link direction are scaled so that together they
move at most the link's bandwidth. The capacity is set again when such a flow
starts or ends and when a main loop starts (new ``d``). Which traffic counts:

* T3's reduce-scatter DMAs (the read at the sender, the near-memory update at
  the receiver) and the first chunk's remote stores (updates at the receiver);
* not traffic of communication *kernels* on CUs (Sequential's and the
  coarse-grained variant's reduce-scatter, every all-gather, the motivation
  experiment's all-reduce): a kernel's requests are bounded by its CUs'
  outstanding-request limits. The paper's motivation figure is the evidence:
  next to a 16-CU all-reduce the GEMM on 64 CUs is 21% slower, about its loss
  of CUs alone (this model gives 21.6% without interference);
* nothing in the Ideal variant (its communication uses no HBM), and ``u -> 0``
  when HBM is unlimited: without contention T3 equals Ideal.

T3-MCA serves the GEMM's requests first and admits communication only below a
queue-occupancy threshold, so engine traffic cannot queue ahead of the GEMM:
the model applies no penalty under MCA (its cost is communication throttled
behind the GEMM, :mod:`commsim.systems.t3.arbiter`).

``kappa`` is calibrated on one published number, the T3 (no MCA) geomean
sublayer speed-up of 20% (:func:`commsim.systems.t3.calibration.calibrate_interference`,
107.0 at the default sublayers and 8192 tokens, solved after the communication-kernel
rate curve; 98.3 with the linear per-CU model before it); everything else it changes is a
prediction. The calibrated value is large, and should be read as what the
paper's number demands of this model rather than as a measured DRAM property:
with the reduce-scatter streaming at the link rate both ways (``u`` about 0.17)
a main loop of intensity ``d`` runs ``1 + 18·d`` times slower, 1.4-3.5x for the
default sublayers' ``d`` of 0.02-0.14, and T3's GEMM ends about 34% later than
Ideal's (geomean). It has to be large because the penalty acts only while DMA
traffic flows, which in GEMM-bound sublayers is a fraction of the GEMM, and
because where the reduce-scatter is the longer part a slower GEMM stays hidden.
A uniform form (``1 + kappa·u``, every main loop alike) needs ``kappa`` about 6.6
for the same 20% and gives a T3 maximum of about 31% instead of 37%; the
DRAM-miss-scaled form was chosen because L2 hits do not queue at the DRAM (and,
declared as such, because its maximum is nearer the paper's 39%).

>>> import numpy as np
>>> from commsim.systems.t3.context import RingContext
>>> from commsim.systems.t3.knobs import Knobs
>>> from commsim.systems.t3.ring import build_ring
>>> knobs = Knobs(hbm_interference=2.0)
>>> ctx = RingContext(build_ring(4, bandwidth=75e9, latency=5e-7, device="mi210_t3"), 4, knobs, record=False)
>>> model = ctx.interference
>>> model.gemm_wave(np.arange(4), np.full(4, 0.3))       # main loops reading 30% of the HBM at the roofline
>>> model.flows_changed(np.array([0]), np.array([75e9]), src_coef=np.array([1.0]), dst_coef=1.0, sign=+1)
>>> [round(float(x), 4) for x in model.utilisation]      # 75 GB/s of 900 GB/s on GPUs 0 and 1
[0.0833, 0.0833, 0.0, 0.0]
>>> [round(float(x), 4) for x in model.slowdown]         # 1 + 2 x 0.0833 x 0.3
[1.05, 1.05, 1.0, 1.0]
>>> round(float(ctx.kernel.capacity(model.stall[0])), 4)       # 1 / 1.05
0.9524
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from commsim.systems.t3.context import RingContext

__all__ = ["MemoryInterference"]


class MemoryInterference:
    """Per-GPU stall resources of the GEMM main loop and the engine traffic that sets them.

    Parameters
    ----------
    ctx:
        The ring; ``ctx.knobs.hbm_interference`` is ``kappa`` (> 0).
    """

    def __init__(self, ctx: RingContext) -> None:
        self.ctx = ctx
        p = ctx.p
        self.kappa = float(ctx.knobs.hbm_interference)
        self.link = float(ctx.knobs.link_bandwidth)
        self.stall = ctx.kernel.add_resources(np.ones(p), [f"hbm_stall:{n}" for n in ctx.names])
        # per GPU and direction: flows, their link bytes/s and their HBM bytes/s at link-limited rates
        self.flows = np.zeros((2, p), dtype=np.int64)     # [0]: outgoing (sender side), [1]: incoming
        self.link_rate = np.zeros((2, p))
        self.hbm_rate = np.zeros((2, p))
        self.intensity = np.zeros(p)                       # d of the main loop running on each GPU
        self._capacity = np.ones(p)

    # ------------------------------------------------------------------ inputs
    def gemm_wave(self, gpus: np.ndarray, intensity: np.ndarray) -> None:
        """Main loops start on ``gpus`` with DRAM intensity ``intensity`` (reads / (roofline time · C))."""
        gpus = np.asarray(gpus, dtype=np.int64)
        self.intensity[gpus] = np.clip(intensity, 0.0, 1.0)
        self._update(gpus)

    def flows_changed(self, src: np.ndarray, rate: np.ndarray, *, src_coef: np.ndarray, dst_coef: float,
                      sign: int) -> None:
        """Flows from each ``src[i]`` to its ring neighbour at (at most) ``rate[i]`` bytes/s started
        (``sign`` +1) or ended (-1, the same arguments)."""
        src = np.asarray(src, dtype=np.int64)
        if src.size == 0:
            return
        dst = self.ctx.nxt(src)
        rate = np.asarray(rate, dtype=float)
        src_coef = np.broadcast_to(np.asarray(src_coef, dtype=float), src.shape)
        for side, gpus, coef in ((0, src, src_coef), (1, dst, np.full(src.shape, float(dst_coef)))):
            np.add.at(self.flows[side], gpus, sign)
            np.add.at(self.link_rate[side], gpus, sign * rate)
            np.add.at(self.hbm_rate[side], gpus, sign * rate * coef)
        idle = self.flows == 0
        self.link_rate[idle] = 0.0     # no rounding residue once idle
        self.hbm_rate[idle] = 0.0
        self._update(np.unique(np.concatenate([src, dst])))

    # ------------------------------------------------------------------ state
    @property
    def traffic(self) -> np.ndarray:
        """DMA / near-memory-update bytes/s on each GPU's HBM (flows scaled to their link's bandwidth)."""
        over = self.link_rate > self.link
        scale = np.ones_like(self.link_rate)
        scale[over] = self.link / self.link_rate[over]
        return (self.hbm_rate * scale).sum(axis=0)

    @property
    def utilisation(self) -> np.ndarray:
        """``u`` per GPU: that traffic over the achievable HBM bandwidth, at most 1."""
        return np.minimum(self.traffic / self.ctx.hbm_capacity, 1.0)

    @property
    def slowdown(self) -> np.ndarray:
        """Factor by which each GPU's GEMM main loop is slower right now, ``1 + kappa·u·d``."""
        return 1.0 + self.kappa * self.utilisation * self.intensity

    def _update(self, gpus: np.ndarray) -> None:
        cap = np.round(1.0 / self.slowdown[gpus], 12)   # symmetric GPUs stay bit-identical (batched events)
        change = cap != self._capacity[gpus]
        if change.any():
            self._capacity[gpus[change]] = cap[change]
            self.ctx.kernel.set_capacity(self.stall[gpus[change]], cap[change])
