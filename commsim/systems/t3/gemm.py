"""The GEMM on every GPU of the ring, wave by wave, as kernel activities.

A wave (see :mod:`commsim.systems.t3.tiling`) runs in two phases:

1. **main loop** — one activity measured in bytes of operand reads (after the
   L2) on the GPU's HBM (1 per byte) and compute resource (``FLOP / (bytes ·
   peak·efficiency)`` of the device per byte/s) — the devices' roofline activity,
   :func:`~commsim.devices.device.kernel_activity` — capped at the wave's share of
   the compute units: a wave of ``w`` tiles uses ``w`` of the ``cus`` CUs. Alone
   it takes the roofline time ``max(FLOP / (w/cus·peak·eff), reads / HBM)``;
   while T3's DMA and near-memory updates stream through the same HBM, its
   DRAM reads stall it (:mod:`commsim.systems.t3.interference`; not under MCA).
2. **epilogue** — the output tiles are stored: an HBM-only activity of the
   wave's output bytes. A CU takes its next tile only once its output is
   written (one workgroup per CU), so stores are a memory-bound phase in which
   anything else on the HBM slows the GEMM down.

All GPUs that start a phase at the same instant start it as one kernel batch.
With T3's remote first chunk, the tiles of the GPU's first chunk are not stored
locally: they leave as flows to the ring neighbour (posted stores; the GEMM
does not wait for them). Callbacks tell the reduce-scatter which tiles of which
chunk are written (``on_tiles``) and when a piece of the GEMM is done
(``on_piece``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from commsim.devices.device import kernel_activity
from commsim.systems.t3.context import RingContext
from commsim.systems.t3.tiling import WavePlan

__all__ = ["GemmDriver"]

TilesWritten = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
"""``on_tiles(gpus, chunks, counts)``: ``counts[i]`` tiles of chunk ``chunks[i]`` were just written on ``gpus[i]``."""
RemoteTiles = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
"""``on_remote(dst_gpus, chunks, counts)``: remote stores of those tiles arrived."""


class GemmDriver:
    """Runs ``plans[g]`` (a list of pieces, each a :class:`WavePlan`) on every GPU ``g``.

    Parameters
    ----------
    ctx:
        The ring.
    plans:
        Per GPU, the pieces of its GEMM in order (one piece unless decomposed).
    cus:
        Compute units the GEMM may use (the rest belong to a communication kernel).
    store_coef:
        HBM capacity per output byte stored (near-memory updates may cost more than a write).
    remote_first, remote_dst_coef:
        Store the tiles of each GPU's first chunk on its ring neighbour instead (T3), using
        ``remote_dst_coef`` of the neighbour's HBM per byte (0: free, the Ideal variant).
    priority:
        Kernel priority class of the GEMM's activities (T3-MCA raises it).
    on_tiles, on_remote, on_piece, on_done:
        Told when tiles are written locally, when remote stores land, when a piece and when
        the whole GEMM finishes on some GPUs.
    label:
        Stream name of the GEMM's spans.
    """

    def __init__(self, ctx: RingContext, plans: list[list[WavePlan]], *, cus: int, store_coef: float = 1.0,
                 remote_first: bool = False, remote_dst_coef: float = 1.0, priority: int = 0,
                 on_tiles: TilesWritten | None = None, on_remote: RemoteTiles | None = None,
                 on_piece: Callable[[np.ndarray, int], None] | None = None,
                 on_done: Callable[[np.ndarray], None] | None = None, label: str = "gemm") -> None:
        self.ctx = ctx
        self.plans = plans
        self.cus = cus
        self.store_coef = store_coef
        self.remote_first = remote_first
        self.remote_dst_coef = remote_dst_coef
        self.priority = priority
        self.on_tiles = on_tiles
        self.on_remote = on_remote
        self.on_piece = on_piece
        self.on_done = on_done
        self.label = label
        p = ctx.p
        self.piece = np.zeros(p, dtype=np.int64)
        self.wave = np.zeros(p, dtype=np.int64)
        self.wave_start = np.zeros(p)
        self.wave_weight = np.ones(p)
        self.mainloop_end = np.zeros(p)
        self.done_at = np.full(p, np.nan)
        self._local_tiles: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._activities: dict[tuple[float, float], tuple[float, list[float]]] = {}
        self.stage_log: list[tuple[int, int, int, float, float, float]] = []  # gpu, piece, wave, start, mainloop end, end

    # ------------------------------------------------------------------ phases
    def start(self, gpus: np.ndarray | None = None) -> None:
        """Start the first wave on ``gpus`` (all by default)."""
        gpus = np.arange(self.ctx.p) if gpus is None else np.asarray(gpus, dtype=np.int64)
        self._main(gpus)

    def _plan(self, g: int) -> WavePlan:
        return self.plans[g][int(self.piece[g])]

    def _main(self, gpus: np.ndarray) -> None:
        ctx = self.ctx
        now = ctx.env.now
        n = gpus.size
        amounts = np.empty(n)
        caps = np.empty(n)
        weights = np.empty(n)
        res: list[list[int]] = []
        coefs: list[list[float]] = []
        demand = np.empty(n)
        read = np.empty(n)
        for i, g in enumerate(gpus.tolist()):
            plan = self._plan(g)
            w = int(self.wave[g])
            tiles = plan.tiles[w].size
            flops = float(plan.flops[w])
            reads = read[i] = float(plan.read_bytes[w])
            flop_rate = min(tiles, self.cus) / ctx.cus * ctx.peak_rate   # the wave's CUs at full speed
            weights[i] = ctx.weight(min(tiles, self.cus))
            # the devices' roofline activity (bytes read when there are any, else FLOP), capped at the wave's CUs
            activity = self._activities.get((flops, reads))
            if activity is None:   # GPUs and waves of one shape share it: look it up once
                activity = self._activities[(flops, reads)] = kernel_activity(ctx.spec, flops, reads, "fp16",
                                                                              ctx.efficiency)
            amounts[i], (c_compute, c_memory) = activity
            if reads > 0:
                caps[i] = flop_rate * reads / flops
                r = [int(ctx.compute[g]), int(ctx.hbm[g])]
                c = [c_compute, c_memory]
                if ctx.arbiter is not None:
                    r.append(int(ctx.arbiter.port[g]))
                    c.append(1.0)
                demand[i] = caps[i]
            else:
                caps[i] = flop_rate
                r = [int(ctx.compute[g])]
                c = [c_compute]
                demand[i] = 0.0
            if ctx.interference is not None:   # binds at the roofline rate / (1 + kappa·u·d)
                r.append(int(ctx.interference.stall[g]))
                c.append(1.0 / caps[i])
            res.append(r)
            coefs.append(c)
        ctx.ledger.add("read", "gemm", gpus, read)
        self.wave_start[gpus] = now
        self.wave_weight[gpus] = weights
        if ctx.arbiter is not None:
            ctx.arbiter.gemm_phase(gpus, demand)
        if ctx.interference is not None:
            ctx.interference.gemm_wave(gpus, demand / ctx.hbm_capacity)
        ctx.kernel.start(amounts, res, coefs, weight=weights, priority=self.priority, cap=caps, tags=gpus,
                         on_done=lambda _ids, tags: self._main_done(tags))

    def _main_done(self, gpus: np.ndarray) -> None:
        ctx = self.ctx
        self.mainloop_end[gpus] = ctx.env.now
        waves = self.wave[gpus]
        plans = [self._plan(g) for g in gpus.tolist()]
        written = np.array([pl.write_bytes[w] for pl, w in zip(plans, waves.tolist(), strict=True)])
        local = written
        if self.remote_first:
            sent = np.array([pl.first_bytes[w] for pl, w in zip(plans, waves.tolist(), strict=True)])
            tiles = np.array([pl.first_tiles[w] for pl, w in zip(plans, waves.tolist(), strict=True)])
            local = written - sent
            going = tiles > 0
            if going.any():
                self._remote_stores(gpus[going], sent[going], tiles[going],
                                    np.array([pl.chunk_order[0] for pl in plans], dtype=np.int64)[going])
        ctx.ledger.add("write", "gemm", gpus, local)
        storing = local > 0
        if (~storing).any():
            self._epilogue_done(gpus[~storing])
        if storing.any():
            g_st = gpus[storing]
            res: list[list[int]] = []
            coefs: list[list[float]] = []
            for g in g_st.tolist():
                r = [int(ctx.hbm[g])]
                c = [self.store_coef]
                if ctx.arbiter is not None:
                    r.append(int(ctx.arbiter.port[g]))
                    c.append(self.store_coef)
                res.append(r)
                coefs.append(c)
            weights = self.wave_weight[g_st]     # the wave's CUs store its tiles
            if ctx.arbiter is not None:
                ctx.arbiter.gemm_phase(g_st, np.inf)
            ctx.kernel.start(local[storing], res, coefs, weight=weights, priority=self.priority, tags=g_st,
                             on_done=lambda _ids, tags: self._epilogue_done(tags))

    def _remote_stores(self, src: np.ndarray, nbytes: np.ndarray, tiles: np.ndarray, chunk: np.ndarray) -> None:
        """Posted stores of first-chunk tiles into the ring neighbour (T3); the tracker there counts them."""
        ctx = self.ctx
        ctx.ledger.add("write", "gemm", ctx.nxt(src), nbytes)
        start = ctx.env.now

        def arrived(idx: np.ndarray) -> None:
            for j in idx.tolist():
                ctx.span(int(src[j]), "reduce-scatter", "comm", f"remote stores, chunk {int(chunk[j])}", start,
                         ctx.env.now, nbytes=float(nbytes[j]), tags={"chunk": int(chunk[j]), "step": 0})
            if self.on_remote is not None:
                self.on_remote(ctx.nxt(src[idx]), chunk[idx], tiles[idx])

        ctx.send(src, nbytes, src_coef=0.0, dst_coef=self.remote_dst_coef, weight=ctx.weight(ctx.knobs.dma_weight),
                 label="remote stores", dma=True, on_delivered=arrived)

    def _written(self, plan: WavePlan, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunks whose tiles wave ``w`` of ``plan`` writes locally, and how many (not the remote first chunk's)."""
        key = (id(plan), w)
        hit = self._local_tiles.get(key)
        if hit is None:
            chunks, counts = plan.wave_chunks[w], plan.wave_counts[w]
            if self.remote_first:
                keep = chunks != plan.chunk_order[0]
                chunks, counts = chunks[keep], counts[keep]
            hit = self._local_tiles[key] = (chunks, counts)
        return hit

    def _epilogue_done(self, gpus: np.ndarray) -> None:
        ctx = self.ctx
        now = ctx.env.now
        next_wave: list[int] = []
        finished: list[int] = []
        pieces_done: dict[int, list[int]] = {}
        hit_gpu: list[int] = []
        hit_chunk: list[np.ndarray] = []
        hit_count: list[np.ndarray] = []
        for g in gpus.tolist():
            plan = self._plan(g)
            w = int(self.wave[g])
            chunks, counts = self._written(plan, w)
            hit_gpu.append(g)
            hit_chunk.append(chunks)
            hit_count.append(counts)
            self.stage_log.append((g, int(self.piece[g]), w, float(self.wave_start[g]),
                                   float(self.mainloop_end[g]), now))
            if ctx.record:
                ctx.span(g, self.label, "compute", f"wave {w}" + (f" of piece {int(self.piece[g])}"
                                                                   if len(self.plans[g]) > 1 else ""),
                         float(self.wave_start[g]), now, flops=float(plan.flops[w]),
                         nbytes=float(plan.read_bytes[w] + plan.write_bytes[w]),
                         tags={"chunks": " ".join(str(int(c)) for c in plan.wave_chunks[w]),
                               "mainloop_end": float(self.mainloop_end[g])})
            if w + 1 < plan.waves:
                self.wave[g] = w + 1
                next_wave.append(g)
                continue
            pieces_done.setdefault(int(self.piece[g]), []).append(g)
            if self.piece[g] + 1 < len(self.plans[g]):
                self.piece[g] += 1
                self.wave[g] = 0
                next_wave.append(g)
            else:
                finished.append(g)
        if self.on_tiles is not None and hit_gpu:
            sizes = [c.size for c in hit_chunk]
            self.on_tiles(np.repeat(np.array(hit_gpu, dtype=np.int64), sizes), np.concatenate(hit_chunk),
                          np.concatenate(hit_count))
        if self.on_piece is not None:
            for piece, gs in pieces_done.items():
                self.on_piece(np.array(gs, dtype=np.int64), piece)
        if finished:
            done = np.array(finished, dtype=np.int64)
            self.done_at[done] = now
            if ctx.arbiter is not None:
                ctx.arbiter.gemm_phase(done, 0.0)
            if self.on_done is not None:
                self.on_done(done)
        if next_wave:
            self._main(np.array(next_wave, dtype=np.int64))
