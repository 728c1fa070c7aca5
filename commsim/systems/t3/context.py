"""One simulated ring of GPUs with what every mechanism of the study shares.

:class:`RingContext` wires a :class:`~commsim.simulation.Simulation` for the
ring: per GPU its compute resource (capacity 1 = all compute units) and its HBM
resource (capacity = peak bandwidth × ``hbm_efficiency``), the route to the
next GPU, the memory arbiter of T3-MCA when there is one, the DRAM-interference
model of the other variants when ``hbm_interference`` is on, and a
:class:`DramLedger` that counts the DRAM bytes every activity reads and writes,
by purpose. Flows to the ring neighbour go through :meth:`RingContext.send`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from commsim.network.topology import Topology
from commsim.simulation import Simulation
from commsim.systems.t3.knobs import Knobs
from commsim.systems.t3.ring import ring_order

__all__ = ["DramLedger", "RingContext"]

CATEGORIES: tuple[str, ...] = ("gemm", "rs", "ag")


@dataclass
class DramLedger:
    """DRAM bytes read and written per GPU, by purpose (``gemm``, ``rs``, ``ag``)."""

    p: int
    read: dict[str, np.ndarray] = field(default_factory=dict)
    write: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for cat in CATEGORIES:
            self.read[cat] = np.zeros(self.p)
            self.write[cat] = np.zeros(self.p)

    def add(self, kind: str, category: str, gpus: np.ndarray, nbytes: np.ndarray | float) -> None:
        """Count ``nbytes`` read (``kind="read"``) or written on each of ``gpus``."""
        target = self.read if kind == "read" else self.write
        np.add.at(target[category], np.asarray(gpus, dtype=np.int64), nbytes)

    def per_gpu(self, kind: str, category: str) -> float:
        """Mean bytes per GPU of one kind and purpose."""
        target = self.read if kind == "read" else self.write
        return float(target[category].mean())


class RingContext:
    """A ring of ``tp`` GPUs in one simulation.

    Parameters
    ----------
    topology:
        A ring of ``tp`` devices (checked: :func:`~commsim.systems.t3.ring.ring_order`).
    tp:
        Number of GPUs.
    knobs:
        The study's resolved numbers.
    mca:
        Add the memory arbiter of T3-MCA (:class:`~commsim.systems.t3.arbiter.MemoryArbiter`); without
        it, a positive ``knobs.hbm_interference`` adds the DRAM-interference model
        (:class:`~commsim.systems.t3.interference.MemoryInterference`): MCA serves the GEMM first.
    record:
        Record spans, flows and resource usage (for dashboards; off for sweeps).
    """

    def __init__(self, topology: Topology, tp: int, knobs: Knobs, *, mca: bool = False, record: bool = True,
                 name: str | None = None) -> None:
        from commsim.systems.t3.arbiter import MemoryArbiter
        from commsim.systems.t3.interference import MemoryInterference

        self.p = tp
        self.knobs = knobs
        self.names = ring_order(topology, tp)
        self.sim = Simulation(topology, record_usage=record, name=name)
        self.record = record
        self.kernel = self.sim.kernel
        self.env = self.sim.env
        devices = [self.sim.devices[n] for n in self.names]
        spec = devices[0].spec
        self.spec = spec
        self.cus = int(spec.compute_units or 80)
        self.efficiency = knobs.gemm_efficiency if knobs.gemm_efficiency is not None else spec.efficiency
        self.peak_rate = spec.peak("fp16") * self.efficiency
        self.hbm_capacity = spec.memory_bandwidth * knobs.hbm_efficiency
        self.hbm = np.array([d.memory_resource for d in devices], dtype=np.int64)
        self.compute = np.array([d.compute_resource for d in devices], dtype=np.int64)
        self.kernel.set_capacity(self.hbm, self.hbm_capacity)
        self.routes = self.sim.network.routes(self.names, self.names[1:] + self.names[:1])
        self.ledger = DramLedger(tp)
        self.arbiter = MemoryArbiter(self) if mca else None
        self.interference = MemoryInterference(self) if not mca and knobs.hbm_interference > 0 else None
        self.wire: dict[str, float] = {}

    def weight(self, requesters: float) -> float:
        """Memory-controller weight of an activity issued by ``requesters`` CUs (1 when shares are byte-fair)."""
        return float(requesters) if self.knobs.cu_weighted else 1.0

    def nxt(self, gpus: np.ndarray) -> np.ndarray:
        """The ring neighbour each of ``gpus`` sends to."""
        return (np.asarray(gpus, dtype=np.int64) + 1) % self.p

    def span(self, gpu: int, stream: str, kind: str, name: str, start: float, end: float, **extra: Any) -> None:
        """Record a span on GPU ``gpu`` (when recording)."""
        if self.record:
            self.sim.recorder.span(self.names[gpu], stream, kind, name, start, end, **extra)

    def flows_started(self, src: np.ndarray, *, src_coef: np.ndarray | float, dst_coef: float,
                      cap: float = math.inf, dma: bool = False) -> list[tuple[list[int], list[float]]]:
        """Flows from each GPU ``src[i]`` to its ring neighbour start; return the extra resources of each.

        A flow also uses ``src_coef`` bytes of the sender's HBM and ``dst_coef`` of the
        receiver's per byte sent (0: none); under T3-MCA it passes the arbiter's admission
        resources too, and the arbiter learns what the flows may take at their link-limited
        rate. ``dma``: the flows are moved by a DMA engine and land as near-memory updates
        (T3's communication), so the DRAM-interference model counts their HBM traffic.
        Call :meth:`flows_ended` with the same arguments when (some of) them end.
        """
        src = np.asarray(src, dtype=np.int64)
        dst = self.nxt(src)
        src_coef = np.broadcast_to(np.asarray(src_coef, dtype=float), src.shape)
        extras = []
        for s, d, cs in zip(src.tolist(), dst.tolist(), src_coef.tolist(), strict=True):
            res: list[int] = []
            coefs: list[float] = []
            for gpu, coef in ((s, cs), (d, dst_coef)):
                if coef > 0:
                    res.append(int(self.hbm[gpu]))
                    coefs.append(coef)
                    if self.arbiter is not None:
                        res.append(int(self.arbiter.admit[gpu]))
                        coefs.append(coef)
            extras.append((res, coefs))
        self._account(src, src_coef, dst_coef, cap, dma, +1)
        return extras

    def flows_ended(self, src: np.ndarray, *, src_coef: np.ndarray | float, dst_coef: float, cap: float = math.inf,
                    dma: bool = False) -> None:
        """Flows announced by :meth:`flows_started` (same arguments, per flow) ended."""
        src = np.asarray(src, dtype=np.int64)
        self._account(src, np.broadcast_to(np.asarray(src_coef, dtype=float), src.shape), dst_coef, cap, dma, -1)

    def _account(self, src: np.ndarray, src_coef: np.ndarray, dst_coef: float, cap: float, dma: bool,
                 sign: int) -> None:
        """Tell the arbiter and the interference model that flows started (+1) or ended (-1)."""
        rate = min(cap, self.knobs.link_bandwidth)
        if self.arbiter is not None:
            dst = self.nxt(src)
            ends = np.concatenate([src[src_coef > 0], dst if dst_coef > 0 else dst[:0]])
            need = np.concatenate([rate * src_coef[src_coef > 0], np.full(dst.size if dst_coef > 0 else 0,
                                                                          rate * dst_coef)])
            self.arbiter.comm_changed(ends, need, sign)
        if dma and self.interference is not None:
            self.interference.flows_changed(src, np.full(src.shape, rate), src_coef=src_coef, dst_coef=dst_coef,
                                            sign=sign)

    def send(self, src: np.ndarray, nbytes: np.ndarray, *, src_coef: float | np.ndarray, dst_coef: float,
             cap: float = math.inf, weight: float = 1.0, priority: int = 0, label: str = "", dma: bool = False,
             on_delivered: Callable[[np.ndarray], None]) -> None:
        """Send ``nbytes[i]`` from each GPU ``src[i]`` to its ring neighbour, one flow each (not part of a
        collective: the GEMM's remote stores), with the resources of :meth:`flows_started`.

        ``on_delivered(i)`` gets positions into ``src``.
        """
        src = np.asarray(src, dtype=np.int64)
        self.wire[label] = self.wire.get(label, 0.0) + float(np.sum(nbytes))
        src_coef = np.broadcast_to(np.asarray(src_coef, dtype=float), src.shape)
        extras = self.flows_started(src, src_coef=src_coef, dst_coef=dst_coef, cap=cap, dma=dma)

        def delivered(idx: np.ndarray) -> None:
            self.flows_ended(src[idx], src_coef=src_coef[idx], dst_coef=dst_coef, cap=cap, dma=dma)
            on_delivered(idx)

        self.sim.network.send(self.routes.subset(src), nbytes, extra=extras, cap=cap, weight=weight,
                              priority=priority, label=label, on_delivered=delivered, record=self.record)
