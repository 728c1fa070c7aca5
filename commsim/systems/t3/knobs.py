"""The resolved numbers one sublayer simulation needs (SI units), separate from the input model.

:class:`Knobs` is what :mod:`commsim.systems.t3.params` turns the user's
parameters into; the engine reads nothing else, so tests and the calibration
can build one directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DEFAULT_COMM_CU_SCALE", "DEFAULT_COMM_PEAK_BANDWIDTH", "DEFAULT_HBM_INTERFERENCE", "Knobs",
           "VARIANTS", "VARIANT_LABELS", "comm_kernel_rate"]

DEFAULT_COMM_PEAK_BANDWIDTH = 78.15e9
"""``R`` of the communication-kernel rate model (bytes/s a kernel moves with unlimited CUs,
:func:`comm_kernel_rate`). Calibrated together with :data:`DEFAULT_COMM_CU_SCALE` on TWO published
numbers, the motivation experiment's all-reduce slow-downs against the stand-alone kernel (on
``rccl_cus`` = 32 CUs): 41% on 8 CUs and 7% on 16 CUs
(:func:`commsim.systems.t3.calibration.calibrate` gives 78.15 GB/s and 6.991 CUs; the kernel rates
that reproduce the two points are 53.26 and 70.22 GB/s). ``R`` coming out just above the 75 GB/s link
is a result of the fit, not an input."""

DEFAULT_COMM_CU_SCALE = 6.991
"""``c`` of the communication-kernel rate model (CUs): the CU count at which a kernel reaches
``1 - 1/e`` (63%) of ``R``. Calibrated with :data:`DEFAULT_COMM_PEAK_BANDWIDTH` (see there)."""

DEFAULT_HBM_INTERFERENCE = 107.0
"""``kappa`` of the DRAM interference between T3's DMA traffic and the GEMM (dimensionless, see
:mod:`commsim.systems.t3.interference`): calibrated so that T3 without MCA gives the paper's 20% geomean
sublayer speed-up over the default sublayers at 8192 tokens
(:func:`commsim.systems.t3.calibration.calibrate_interference` gives 107.0 with the saturating
communication-kernel model; it gave 98.3 with the linear per-CU model it replaced, whose slightly
faster Sequential reduce-scatter left T3 less to gain)."""

VARIANTS: tuple[str, ...] = ("sequential", "coarse", "ideal", "t3", "t3_mca")
"""The variants, in the order tables list them."""

VARIANT_LABELS: dict[str, str] = {"sequential": "Sequential", "coarse": "Coarse-grained", "ideal": "Ideal overlap",
                                  "t3": "T3", "t3_mca": "T3-MCA"}
"""Names for tables and figures."""


@dataclass(frozen=True)
class Knobs:
    """Everything the sublayer engine uses, SI units.

    Every field means what the same-named field of
    :class:`~commsim.systems.t3.params.T3Params` means, with the same default
    (:meth:`T3Params.knobs <commsim.systems.t3.params.T3Params.knobs>` copies them);
    ``cu_weighted`` is ``hbm_arbitration == "requesters"``: saturated HBM is shared in
    proportion to the requesters (CUs, DMA weight) of each activity, else byte-fair.
    """

    device: Any = "mi210_t3"
    link_bandwidth: float = 75e9
    link_latency: float = 500e-9
    gemm_efficiency: float | None = None
    hbm_efficiency: float = 0.9
    comm_peak_bandwidth: float = DEFAULT_COMM_PEAK_BANDWIDTH
    comm_cu_scale: float = DEFAULT_COMM_CU_SCALE
    tile_m: int = 128
    tile_n: int = 128
    group_rows: int = 8
    l2_bytes: float = 16e6
    l2_reuse: float = 1.0
    rccl_cus: int = 32
    coarse_chunks: int = 4
    coarse_comm_cus: int = 16
    dma_weight: float = 16.0
    cu_weighted: bool = True
    nmc_update_cost: float = 1.0
    remote_first_chunk: bool = True
    mca_threshold: float = 0.8
    mca_min_share: float = 0.1
    hbm_interference: float = DEFAULT_HBM_INTERFERENCE

    def with_(self, **changes: Any) -> Knobs:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def comm_rate(self, cus: float) -> float:
        """Bytes/s a communication kernel on ``cus`` CUs can move (:func:`comm_kernel_rate`)."""
        return comm_kernel_rate(cus, self.comm_peak_bandwidth, self.comm_cu_scale)


def comm_kernel_rate(cus: float, peak: float, scale: float) -> float:
    """Bytes/s a communication kernel on ``cus`` compute units can move: ``peak · (1 - exp(-cus/scale))``.

    A communication kernel (RCCL-style ring step) is a copy/reduce loop with one workgroup
    per CU. Each workgroup keeps a bounded number of memory and link requests in flight, so
    the kernel's throughput grows with its CUs, but the workgroups' request streams land on a
    limited set of parallel resources (HBM channels and banks, the link's request queues) and
    increasingly wait on one another: ``k`` independent streams spread over ``n`` such
    resources keep a fraction ``1 - (1 - 1/n)^k ≈ 1 - exp(-k/n)`` of them busy. Hence a rate
    that is linear for few CUs (about ``peak/scale`` bytes/s per CU) and saturates at ``peak``
    (bytes/s) for many; ``scale`` is in CUs. The link caps the flow separately: with ``peak``
    above the link bandwidth, enough CUs make the kernel link-bound. (The linear model this
    replaces, ``cus × per-CU rate``, cannot be slowed 41% on 8 CUs and only 7% on 16.)

    >>> round(comm_kernel_rate(8, 80e9, 8.0) / 1e9, 2)         # 80 GB/s x (1 - 1/e)
    50.57
    >>> comm_kernel_rate(0, 80e9, 8.0), round(comm_kernel_rate(1000, 80e9, 8.0) / 1e9, 6)
    (0.0, 80.0)
    """
    if cus <= 0:
        return 0.0
    return float(peak * -math.expm1(-float(cus) / float(scale)))
