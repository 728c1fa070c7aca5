"""One sublayer (GEMM → reduce-scatter → all-gather) under one variant, simulated on the ring.

==============  ==========================================================================
variant         what runs
==============  ==========================================================================
sequential      the GEMM on all CUs; then a reduce-scatter kernel on ``rccl_cus`` CUs; then
                the all-gather
coarse          the GEMM cut into ``coarse_chunks`` pieces (by tiles) on ``cus -
                coarse_comm_cus`` CUs; each piece's output is reduce-scattered by a kernel on
                the other ``coarse_comm_cus`` CUs while the next piece computes (pieces'
                reduce-scatters in stream order); then the all-gather
ideal           T3's dataflow (staggered tiles, a chunk leaves the moment it is complete)
                with communication that uses no HBM and no CUs: overlap without contention
t3              staggered tiles, tracker-triggered DMA, near-memory reduction, first chunk
                as remote stores; communication uses HBM (arbitrated like ``dma_weight`` CUs)
t3_mca          T3 plus memory-controller arbitration (:mod:`commsim.systems.t3.arbiter`)
==============  ==========================================================================

Every variant ends with the same all-gather. The sublayer's time is when the
last GPU holds the whole all-reduced output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from commsim.errors import ConfigError
from commsim.network.topology import Topology
from commsim.results.result import Result
from commsim.systems.t3.collective import RingAllGather, RingReduceScatter
from commsim.systems.t3.context import RingContext
from commsim.systems.t3.gemm import GemmDriver
from commsim.systems.t3.knobs import VARIANTS, Knobs
from commsim.systems.t3.ring import build_ring
from commsim.systems.t3.shapes import SublayerGemm
from commsim.systems.t3.tiling import TileGrid, WavePlan, chunk_bounds, wave_plan

__all__ = ["SublayerRun", "simulate_sublayer", "plans_for"]


@dataclass
class SublayerRun:
    """What one simulation of a sublayer produced (times in seconds, bytes per GPU).

    ``gemm_end``, ``rs_end``, ``ag_end`` are the latest GPU's times; ``dram`` maps
    ``(kind, purpose)`` (``read``/``write`` × ``gemm``/``rs``/``ag``) to mean bytes
    per GPU; ``triggers`` lists ``(time, gpu, chunk)`` of every chunk completion
    the reduce-scatter's tracker saw; ``waves`` ``(gpu, piece, wave, start,
    mainloop_end, end)``; ``rs_steps`` ``(gpu, step, chunk, start, delivered)``.
    """

    gemm: SublayerGemm
    variant: str
    time: float
    gemm_end: float
    rs_end: float
    ag_end: float
    dram: dict[tuple[str, str], float]
    wire_bytes: float
    triggers: list[tuple[float, int, int]]
    waves: list[tuple[int, int, int, float, float, float]]
    rs_steps: list[tuple[int, int, int, float, float]]
    result: Result | None
    hbm_bytes: float = 0.0

    @property
    def dram_total(self) -> float:
        """All DRAM bytes read and written per GPU."""
        return float(sum(self.dram.values()))

    @property
    def rs_reads(self) -> float:
        """DRAM bytes the reduce-scatter read per GPU."""
        return self.dram[("read", "rs")]


@lru_cache(maxsize=256)
def _plans(m: int, n: int, k: int, element_bytes: int, tp: int, cus: int, tile_m: int, tile_n: int,
           group_rows: int, l2_bytes: float, l2_reuse: float, pieces: int) -> tuple[TileGrid, tuple[tuple[WavePlan, ...], ...]]:
    grid = TileGrid(m=m, n=n, k=k, tile_m=tile_m, tile_n=tile_n, group_rows=group_rows, element_bytes=element_bytes)
    bounds = chunk_bounds(grid.tiles, pieces)
    per_gpu = []
    for g in range(tp):
        per_gpu.append(tuple(wave_plan(grid, tp=tp, gpu=g, cus=cus, l2_bytes=l2_bytes, l2_reuse=l2_reuse,
                                       tile_range=(int(bounds[i]), int(bounds[i + 1]))) for i in range(pieces)))
    return grid, tuple(per_gpu)


def plans_for(gemm: SublayerGemm, knobs: Knobs, *, cus: int, pieces: int = 1
              ) -> tuple[TileGrid, tuple[tuple[WavePlan, ...], ...]]:
    """The tile grid and, per GPU, the wave plans of each piece of ``gemm`` on ``cus`` CUs (cached)."""
    return _plans(gemm.m, gemm.n, gemm.k, gemm.element_bytes, gemm.tp, cus, knobs.tile_m, knobs.tile_n,
                  knobs.group_rows, float(knobs.l2_bytes), float(knobs.l2_reuse), pieces)


def simulate_sublayer(gemm: SublayerGemm, variant: str, knobs: Knobs, *, topology: Topology | None = None,
                      record: bool = False, faults: Sequence[Any] = ()) -> SublayerRun:
    """Simulate ``gemm``'s sublayer under ``variant`` on a ring (built from ``knobs`` unless ``topology`` is given).

    ``faults`` (fault models or mappings, :mod:`commsim.faults`; times from the sublayer's start)
    happen during the run: a failed ring link sends its reduce-scatter and all-gather steps
    the long way round the ring, a straggler slows its GPU's GEMM.
    """
    if variant not in VARIANTS:
        raise ConfigError(field="variant", value=variant, rule="is not a T3 variant", fix=f"use one of {', '.join(VARIANTS)}")
    p = gemm.tp
    topo = topology if topology is not None else build_ring(p, bandwidth=knobs.link_bandwidth,
                                                            latency=knobs.link_latency, device=knobs.device)
    ctx = RingContext(topo, p, knobs, mca=variant == "t3_mca", record=record, name=f"{gemm.label} {variant}")
    if faults:
        ctx.sim.schedule_faults(faults)
    total_cus = ctx.cus
    pieces = knobs.coarse_chunks if variant == "coarse" else 1
    gemm_cus = total_cus - knobs.coarse_comm_cus if variant == "coarse" else total_cus
    grid, plans = plans_for(gemm, knobs, cus=gemm_cus, pieces=pieces)
    ag = RingAllGather(ctx, _output_chunks(grid, p), cus=knobs.rccl_cus)
    fine = variant in ("ideal", "t3", "t3_mca")
    if fine:
        counts = plans[0][0].chunk_tile_count
        chunk_bytes = _chunk_bytes(grid, plans[0][0], p)
        remote = counts.copy() if knobs.remote_first_chunk else None
        mode = "free" if variant == "ideal" else "dma"
        rs = RingReduceScatter(ctx, chunk_bytes, mode, local_need=counts, remote_tiles=remote,
                               on_done=ag.start)
        store_coef = 1.0 if variant == "ideal" else knobs.nmc_update_cost
        remote_coef = 0.0 if variant == "ideal" else knobs.nmc_update_cost
        driver = GemmDriver(ctx, [list(pl) for pl in plans], cus=gemm_cus, store_coef=store_coef,
                            remote_first=knobs.remote_first_chunk, remote_dst_coef=remote_coef,
                            priority=1 if variant == "t3_mca" else 0, on_tiles=rs.local, on_remote=rs.remote)
        rs_list = [rs]
    elif variant == "sequential":
        rs = RingReduceScatter(ctx, _chunk_bytes(grid, plans[0][0], p), "cu", cus=knobs.rccl_cus, local_need=1, on_done=ag.start)
        driver = GemmDriver(ctx, [list(pl) for pl in plans], cus=gemm_cus, on_done=rs.local_event)
        rs_list = [rs]
    else:  # coarse
        rs_list = []
        for i in range(pieces):
            need = 1 if i == 0 else 2   # piece done (+ previous piece's reduce-scatter done: stream order)
            rs_list.append(RingReduceScatter(ctx, _chunk_bytes(grid, plans[0][i], p), "cu", cus=knobs.coarse_comm_cus, local_need=need,
                                             name="reduce-scatter"))
        for i, rs_i in enumerate(rs_list):
            rs_i.on_done = rs_list[i + 1].local_event if i + 1 < pieces else ag.start
        driver = GemmDriver(ctx, [list(pl) for pl in plans], cus=gemm_cus,
                            on_piece=lambda gpus, piece: rs_list[piece].local_event(gpus))
    driver.start()
    result = ctx.sim.run()
    rs_end = float(np.nanmax(rs_list[-1].done_at))
    ag_end = float(np.nanmax(ag.done_at))
    dram = {(kind, cat): ctx.ledger.per_gpu(kind, cat) for kind in ("read", "write") for cat in ("gemm", "rs", "ag")}
    wire = ctx.wire.get("reduce-scatter", 0.0) + ctx.wire.get("remote stores", 0.0)
    triggers = [t for r in rs_list for t in r.traffic.starts]   # every chunk the tracker found complete
    steps = [s for r in rs_list for s in r.traffic.log]
    return SublayerRun(gemm=gemm, variant=variant, time=ag_end, gemm_end=float(np.nanmax(driver.done_at)),
                       rs_end=rs_end, ag_end=ag_end, dram=dram, wire_bytes=wire, triggers=triggers,
                       waves=driver.stage_log, rs_steps=steps, result=result if record else None,
                       hbm_bytes=float(ctx.kernel.carried()[ctx.hbm].mean()))


def _chunk_bytes(grid: TileGrid, plan: WavePlan, p: int) -> np.ndarray:
    """Bytes of each of the ``p`` reduce-scatter chunks of ``plan``'s tiles (a chunk: the tiles assigned to it)."""
    return np.array([grid.tile_bytes[plan.chunk_of_tile == c].sum() for c in range(p)])


def _output_chunks(grid: TileGrid, p: int) -> np.ndarray:
    """Bytes of each of the ``p`` all-gather chunks: the whole output cut into ``p`` runs of tiles."""
    bounds = chunk_bounds(grid.tiles, p)
    return np.array([grid.tile_bytes[bounds[c]:bounds[c + 1]].sum() for c in range(p)])
