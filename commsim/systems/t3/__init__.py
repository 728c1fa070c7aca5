"""T3 (Pati et al., ASPLOS 2024): tracking-and-triggering fusion of tensor-parallel GEMMs with their reduce-scatter.

A tensor-sliced sublayer (a row-parallel GEMM whose output the TP group
all-reduces) is simulated on a ring of GPUs: the GEMM as waves of output tiles
over the compute units (the study's one plug-in driver), the reduce-scatter and
all-gather as shared ring schedules on the shared collective executor, all
sharing HBM bandwidth on the fluid kernel. Variants: Sequential,
coarse-grained decomposition, Ideal overlap, T3 and T3 with memory-controller
arbitration (T3-MCA). Modules, one concept each:

* :mod:`~commsim.systems.t3.shapes` — the sublayers' GEMM shapes from the model catalog
* :mod:`~commsim.systems.t3.tiling` — tiles, reduce-scatter chunks, waves and their DRAM traffic
* :mod:`~commsim.systems.t3.context` — one simulated ring, DRAM-byte ledger
* :mod:`~commsim.systems.t3.gemm` — the GEMM's waves as kernel activities
* :mod:`~commsim.systems.t3.collective` — the ring reduce-scatter and all-gather: shared ring schedules run
  by the shared collective executor, T3's tracker as its external triggers, HBM and arbitration as its
  transfer hooks
* :mod:`~commsim.systems.t3.arbiter` — memory-controller arbitration (MCA)
* :mod:`~commsim.systems.t3.interference` — DRAM interference of T3's DMA traffic with the GEMM
* :mod:`~commsim.systems.t3.sublayer` — one sublayer under one variant
* :mod:`~commsim.systems.t3.calibration` — the contention calibration (motivation experiment)
* :mod:`~commsim.systems.t3.end_to_end` — a training iteration with the sublayer results
* :mod:`~commsim.systems.t3.analysis`, :mod:`~commsim.systems.t3.figures`, :mod:`~commsim.systems.t3.study`
"""

from commsim.systems.t3.knobs import VARIANTS, Knobs
from commsim.systems.t3.params import T3Params
from commsim.systems.t3.study import T3Study
from commsim.systems.t3.sublayer import SublayerRun, simulate_sublayer

__all__ = ["VARIANTS", "Knobs", "SublayerRun", "T3Params", "T3Study", "simulate_sublayer"]
