"""T3's ring reduce-scatter and all-gather: the shared ring schedules on the shared collective executor.

Both collectives are :func:`~commsim.collectives.ring.ring_reduce_scatter` and
:func:`~commsim.collectives.ring.ring_all_gather` on the ring's ``p`` GPUs (group
position = ring position), each entry carrying the bytes of its chunk (chunks
are runs of whole tiles, so their sizes differ), run by
:class:`~commsim.collectives.CollectiveRun`. What T3 adds comes through the
executor's two extension points:

* **external triggers** (``gates``/``release``) are T3's tracker: a transfer of
  chunk ``c`` from GPU ``g`` waits, besides the schedule's own dependencies
  (the incoming update of ``c`` and ``g``'s previous send: one send at a time),
  for the local updates of ``c`` on ``g`` — its tiles written (T3, Ideal), or
  one event when the GEMM (or its piece) finished (kernel-level variants);
* **transfer hooks** (:class:`RingTraffic`) put the HBM traffic on both ends,
  T3-MCA's admission resources, the communication kernel's rate cap and
  memory-controller weight on every transfer, count DRAM bytes in the ledger,
  drive the arbiter and the interference model, and record the spans.

Reduce-scatter: in step ``s`` (``0 … p-2``) GPU ``g`` sends chunk ``(g-s) mod p`` to
``g+1``, which adds it to its own partial sums. A last, local step ``p-1``
(a transfer of GPU ``g`` to itself) completes GPU ``g``'s own chunk ``(g+1) mod p``:
in the kernel-level variants it is the closing read-read-write reduction (an
HBM-only activity), for T3 and Ideal it moves nothing but still waits for the
chunk's last local tile. How a step moves bytes depends on ``mode``:

``cu``
    a communication kernel on ``cus`` compute units (the baseline): the sender
    reads its partial chunk and, from step 1 on, the received buffer (2 reads),
    the receiver writes the incoming data. Rate at most ``Knobs.comm_rate(cus)``
    (:func:`~commsim.systems.t3.knobs.comm_kernel_rate`); memory-controller weight ``cus``.
``dma``
    T3: a DMA engine reads the chunk (1 read) and the receiver's near-memory
    compute adds it in place (an update costing ``nmc_update_cost`` of a write);
    no compute units, no final reduction. Weight ``dma_weight``.
``free``
    the Ideal variant: T3's triggers, but the bytes use no HBM and no compute
    units (no contention); the ledger counts them as T3's.

With T3's remote first chunk, step 0 is not a DMA: the GEMM stores chunk ``g``
straight into GPU ``g+1`` (see :mod:`commsim.systems.t3.gemm`). The schedule then
starts at step 1, whose transfers wait for their local tiles and the tiles
stored remotely into their GPU.

All-gather (every variant; T3 fuses only GEMM + RS): GPU ``g`` starts once its own
reduced chunk is complete and in step ``s`` sends chunk ``(g+1-s) mod p``: a
communication kernel on ``cus`` CUs (sender reads, receiver writes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import numpy as np

from commsim.collectives import CollectiveConfig, CollectiveRun, Dep, Schedule, Step, TransferTerms
from commsim.collectives.ring import ring_all_gather, ring_reduce_scatter
from commsim.errors import ConfigError
from commsim.systems.t3.context import RingContext

__all__ = ["Mode", "RingAllGather", "RingReduceScatter", "RingTraffic"]

Mode = Literal["cu", "dma", "free"]


class RingTraffic:
    """The transfer hooks of one of T3's ring collectives (see the module docstring).

    Ring step ``s = k + offset`` of schedule step ``k`` sends, from GPU ``g``, chunk
    ``(g + shift - s) mod p``; the schedule step ``final`` (if any) is the local one.
    ``log`` keeps ``(gpu, step, chunk, start, delivered)`` of every network step,
    ``starts`` ``(time, gpu, chunk)`` of every transfer as it is triggered.
    """

    def __init__(self, ctx: RingContext, chunk_bytes: np.ndarray, mode: Mode, *, cus: int, name: str,
                 category: str, shift: int, offset: int = 0, final: int | None = None,
                 on_final: Callable[[np.ndarray], None] | None = None) -> None:
        knobs = ctx.knobs
        self.ctx = ctx
        self.chunk_bytes = chunk_bytes
        self.mode = mode
        self.name = name
        self.category = category
        self.shift = shift
        self.offset = offset
        self.final = final
        self.on_final = on_final
        if mode == "cu":
            if cus < 1:
                raise ConfigError(field="rccl_cus", value=cus, rule="gives a compute-unit collective no CU to run on",
                                  fix="give the collective at least one compute unit")
            self.cap, self.weight = knobs.comm_rate(cus), ctx.weight(cus)
            self.dst_coef = 1.0
        else:
            self.cap = np.inf
            self.weight = ctx.weight(knobs.dma_weight) if mode == "dma" else 1.0
            self.dst_coef = knobs.nmc_update_cost if mode == "dma" else 0.0
        self.sent_at = np.full((ctx.p, ctx.p + 1), np.nan)
        self.log: list[tuple[int, int, int, float, float]] = []
        self._starts: list[tuple[float, np.ndarray, np.ndarray]] = []

    @property
    def starts(self) -> list[tuple[float, int, int]]:
        """``(time, gpu, chunk)`` of every transfer as it was triggered."""
        return [(t, g, c) for t, gpus, chunks in self._starts
                for g, c in zip(gpus.tolist(), chunks.tolist(), strict=True)]

    def _where(self, k: int, gpus: np.ndarray) -> tuple[int, np.ndarray]:
        s = k + self.offset
        return s, (gpus + self.shift - s) % self.ctx.p

    def _src_coef(self, s: int, n: int) -> np.ndarray:
        if self.mode == "cu":   # from step 1 on a kernel also reads the received buffer it adds to
            return np.full(n, 2.0 if s > 0 and self.category == "rs" else 1.0)
        return np.full(n, 1.0 if self.mode == "dma" else 0.0)

    def starting(self, k: int, entries: np.ndarray, nbytes: np.ndarray) -> TransferTerms:
        """Count the DRAM bytes, tell the arbiter and interference model, and give the transfers' resources."""
        ctx = self.ctx
        now = ctx.env.now
        s, chunks = self._where(k, entries)
        self.sent_at[entries, s] = now
        if self.category == "rs":
            self._starts.append((now, entries, chunks))
        if k == self.final:
            if self.mode != "cu":
                return TransferTerms()      # nothing to move: the chunk is complete
            ctx.ledger.add("read", self.category, entries, 2.0 * nbytes)
            ctx.ledger.add("write", self.category, entries, nbytes)
            return TransferTerms(extra=[([int(ctx.hbm[g])], [3.0]) for g in entries.tolist()], cap=self.cap,
                                 weight=self.weight)
        src_coef = self._src_coef(s, entries.size)
        ctx.ledger.add("read", self.category, entries, nbytes if self.mode != "cu" else src_coef * nbytes)
        ctx.ledger.add("write", self.category, ctx.nxt(entries), nbytes)
        ctx.wire[self.name] = ctx.wire.get(self.name, 0.0) + float(nbytes.sum())
        if ctx.record and self.mode != "cu":
            for g, c in zip(entries.tolist(), chunks.tolist(), strict=True):
                ctx.sim.recorder.event(now, "dma_trigger", ctx.names[g], f"{self.name}: chunk {c}, step {s}")
        extra = ctx.flows_started(entries, src_coef=src_coef, dst_coef=self.dst_coef, cap=self.cap,
                                  dma=self.mode == "dma")
        return TransferTerms(extra=extra, cap=self.cap, weight=self.weight)

    def delivered(self, k: int, entries: np.ndarray) -> None:
        """Release the transfers' HBM accounting, log and record them; report completed chunks."""
        ctx = self.ctx
        now = ctx.env.now
        s, chunks = self._where(k, entries)
        nbytes = self.chunk_bytes[chunks]
        if k == self.final:
            if self.mode == "cu":
                for g, c, b in zip(entries.tolist(), chunks.tolist(), nbytes.tolist(), strict=True):
                    ctx.span(g, self.name, "comm", f"final reduction: chunk {c}", float(self.sent_at[g, s]), now,
                             nbytes=3.0 * b)
            if self.on_final is not None:
                self.on_final(entries)
            return
        ctx.flows_ended(entries, src_coef=self._src_coef(s, entries.size), dst_coef=self.dst_coef, cap=self.cap,
                        dma=self.mode == "dma")
        tags = {"mode": self.mode} if self.category == "rs" else {}
        for g, c, b in zip(entries.tolist(), chunks.tolist(), nbytes.tolist(), strict=True):
            start = float(self.sent_at[g, s])
            self.log.append((g, s, c, start, now))
            ctx.span(g, self.name, "comm", f"step {s}: chunk {c}", start, now, nbytes=b,
                     tags={"chunk": c, "step": s, **tags})
        if self.final is None and s == ctx.p - 2 and self.on_final is not None:
            self.on_final(entries)


def _chunked(schedule: Schedule, chunk_bytes: np.ndarray, shift: int) -> list[Step]:
    """The schedule's steps with each entry carrying its chunk: step ``s``, GPU ``g``: chunk ``(g+shift-s) mod p``."""
    p = schedule.ranks
    return [replace(step, nbytes=chunk_bytes[(step.src + shift - s) % p]) for s, step in enumerate(schedule.steps)]


def _release(run: CollectiveRun, k: int, entries: np.ndarray, counts: np.ndarray | int) -> None:
    """Release gated entries; the collective starts with the first release (its span begins there)."""
    run.release(k, entries, counts)
    if run.start_time != run.start_time:   # NaN: not started yet
        run.start()


def _config(ctx: RingContext) -> CollectiveConfig:
    return CollectiveConfig(record="flows" if ctx.record else "none")


class RingReduceScatter:
    """One ring reduce-scatter over ``ctx``'s GPUs.

    Parameters
    ----------
    chunk_bytes:
        Bytes of each of the ``p`` chunks.
    local_need:
        Per chunk ``c``, the local updates it waits for on every GPU (its tiles, or 1 event: "GEMM
        done"; 2 for a coarse piece: "piece done" and "previous piece's reduce-scatter done").
    remote_tiles:
        Per chunk ``c``, tiles GPU ``c`` stores remotely into GPU ``c+1`` (T3's remote first
        chunk; None: step 0 is a normal send).
    on_done:
        Called with the GPUs whose reduced chunk is complete.
    """

    def __init__(self, ctx: RingContext, chunk_bytes: np.ndarray, mode: Mode, *, local_need: np.ndarray | int,
                 cus: int = 0, remote_tiles: np.ndarray | None = None, name: str = "reduce-scatter",
                 on_done: Callable[[np.ndarray], None] | None = None) -> None:
        p = ctx.p
        self.ctx = ctx
        self.p = p
        self.on_done = on_done
        chunk_bytes = np.asarray(chunk_bytes, dtype=float)
        gpus = np.arange(p)
        base = ring_reduce_scatter(p, float(chunk_bytes.sum()))
        own, left = gpus, (gpus - 1) % p
        # the local step carries the closing reduction's bytes (a kernel's), or nothing (T3, Ideal)
        final = Step(src=gpus, dst=gpus, nbytes=chunk_bytes[(gpus + 1) % p] * (mode == "cu"), phase="final",
                     deps=(Dep(p - 2, own), Dep(p - 2, left)))
        steps = [*_chunked(base, chunk_bytes, 0), final]
        self.offset = 1 if remote_tiles is not None else 0
        if self.offset:   # step 0 leaves as the GEMM's remote stores: the schedule starts at step 1, unchained
            steps = [replace(steps[1], deps=(), _waits=None)] + [
                replace(st, deps=tuple(Dep(d.step - 1, d.index) for d in st.deps), _waits=None) for st in steps[2:]]
        schedule = Schedule("reduce_scatter", "ring", p, float(chunk_bytes.sum()) * p, steps, notes="T3 chunks")
        need = np.broadcast_to(np.asarray(local_need, dtype=np.int64), (p,))
        gates = {k: need[(gpus - k - self.offset) % p] for k in range(len(steps))}
        if self.offset:   # the first transfer also waits for the tiles stored into its GPU
            gates[0] = gates[0] + np.asarray(remote_tiles, dtype=np.int64)[(gpus - 1) % p]
        self.traffic = RingTraffic(ctx, chunk_bytes, mode, cus=cus, name=name, category="rs", shift=0,
                                   offset=self.offset, final=len(steps) - 1, on_final=self._done)
        self.run = CollectiveRun(ctx.sim, schedule, ctx.names, _config(ctx), label=name, gates=gates,
                                 hooks=self.traffic, coalesce=True)
        self.done_at = np.full(p, np.nan)

    # ------------------------------------------------------------------ inputs
    def local(self, gpus: np.ndarray, chunks: np.ndarray, counts: np.ndarray) -> None:
        """``counts[i]`` local updates of chunk ``chunks[i]`` were written on GPU ``gpus[i]``."""
        steps = (gpus - chunks) % self.p - self.offset
        for k in np.unique(steps).tolist():
            mine = steps == k
            _release(self.run, k, gpus[mine], counts[mine])

    def remote(self, gpus: np.ndarray, chunks: np.ndarray, counts: np.ndarray) -> None:
        """Remote stores of ``counts[i]`` tiles of chunk ``chunks[i]`` landed on ``gpus[i]``."""
        _release(self.run, 0, np.asarray(gpus, dtype=np.int64), np.asarray(counts, dtype=np.int64))

    def local_event(self, gpus: np.ndarray) -> None:
        """One local event for every chunk of ``gpus`` (the GEMM, a GEMM piece or the stream's previous
        kernel finished there)."""
        for k in range(len(self.run.schedule.steps)):
            _release(self.run, k, gpus, 1)

    def _done(self, gpus: np.ndarray) -> None:
        self.done_at[gpus] = self.ctx.env.now
        if self.on_done is not None:
            self.on_done(gpus)


class RingAllGather:
    """One ring all-gather of ``chunk_bytes`` (one entry per chunk) over ``ctx``'s GPUs, a kernel on ``cus`` CUs.

    ``done_at[g]`` is when GPU ``g`` holds every chunk and its own last send arrived.
    """

    def __init__(self, ctx: RingContext, chunk_bytes: np.ndarray, *, cus: int, name: str = "all-gather") -> None:
        p = ctx.p
        self.ctx = ctx
        chunk_bytes = np.asarray(chunk_bytes, dtype=float)
        base = ring_all_gather(p, float(chunk_bytes.sum()))
        schedule = Schedule("all_gather", "ring", p, base.nbytes, _chunked(base, chunk_bytes, 1), notes="T3 chunks")
        self.traffic = RingTraffic(ctx, chunk_bytes, "cu", cus=cus, name=name, category="ag", shift=1,
                                   on_final=self._last)
        self.run = CollectiveRun(ctx.sim, schedule, ctx.names, _config(ctx), label=name,
                                 gates={0: np.ones(p, dtype=np.int64)}, hooks=self.traffic, coalesce=True)
        self.done_at = np.full(p, np.nan)

    def start(self, gpus: np.ndarray) -> None:
        """The reduced chunk of each of ``gpus`` is complete: its all-gather may begin."""
        _release(self.run, 0, np.asarray(gpus, dtype=np.int64), 1)

    def _last(self, gpus: np.ndarray) -> None:
        now = self.ctx.env.now   # the last step reached gpus + 1 and gpus' own last send is through
        for who in (gpus, self.ctx.nxt(gpus)):
            self.done_at[who] = np.fmax(self.done_at[who], now)
