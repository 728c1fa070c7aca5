"""The network at run time: links as kernel resources, transfers as fluid flows.

Every directed link is one resource of the :class:`~commsim.kernel.FluidKernel`
with its bandwidth as capacity. A transfer is a flow that consumes every link
on its route; it is *delivered* when its last byte has left the fluid model plus
the route's latency (propagation and forwarding), so an idle route takes
``latency + bytes / bandwidth`` exactly.

Routes are computed once per set of flows (:meth:`Network.routes`) and can be
reused for every step of a collective; flows of one :meth:`Network.send` call are
one kernel batch, not one Python object each.

>>> import simpy
>>> from commsim.kernel import FluidKernel
>>> from commsim.network.generators import switch
>>> env = simpy.Environment()
>>> net = Network(FluidKernel(env), switch(n=2, bandwidth=10e9, latency=1e-6))
>>> done = net.transfer("gpu0", "gpu1", 1e9)
>>> env.run()
>>> round(env.now, 9)   # 2 links of 1 us, then 1 GB at 10 GB/s
0.100002
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from simpy.events import Event

from commsim.errors import ConfigError, RoutingError
from commsim.kernel import UNBOUNDED, ActivityBatch, FluidKernel
from commsim.network.routing import Router, RoutingPolicy
from commsim.network.topology import Topology
from commsim.results.recorder import Recorder
from commsim.units import format_bytes

__all__ = ["Network", "RouteSet", "SoloTransfer", "TransferBatch"]

Delivered = Callable[[np.ndarray], None]


@dataclass
class RouteSet:
    """Routes of a set of flows, ready to send many times.

    ``indptr``/``resources`` is the CSR list of kernel resources of each flow;
    ``latency`` its route latency in seconds; ``paths`` the edge tuples.
    """

    src: np.ndarray
    dst: np.ndarray
    key: np.ndarray
    indptr: np.ndarray
    resources: np.ndarray
    latency: np.ndarray
    paths: list[tuple[int, ...]]
    generation: int

    def __len__(self) -> int:
        return int(self.src.shape[0])

    def subset(self, which: np.ndarray) -> RouteSet:
        """The routes of flows ``which`` (indices into this set), as a new set."""
        lo = self.indptr[which]
        counts = self.indptr[which + 1] - lo
        indptr = np.zeros(which.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        gather = np.repeat(lo - indptr[:-1], counts) + np.arange(int(indptr[-1]))
        paths = [self.paths[i] for i in which.tolist()]
        return RouteSet(src=self.src[which], dst=self.dst[which], key=self.key[which], indptr=indptr,
                        resources=self.resources[gather], latency=self.latency[which], paths=paths,
                        generation=self.generation)


@dataclass(frozen=True, eq=False)
class SoloTransfer:
    """Flows that would run alone (see :meth:`Network.solo`): each flow's fluid time lies in
    ``[shortest, longest]`` seconds, then ``latency`` seconds to deliver; ``total`` bytes."""

    routes: RouteSet
    nbytes: np.ndarray
    total: float
    shortest: float
    longest: float
    latency: float
    incidence_work: np.ndarray
    incidence_load: np.ndarray


@dataclass(eq=False)
class TransferBatch:
    """Flows sent together. ``delivered`` succeeds when all have been delivered."""

    routes: RouteSet
    nbytes: np.ndarray
    start: float
    delivered: Event
    label: str
    record: bool
    on_delivered: Delivered | None
    kernel_batch: ActivityBatch | None = None
    pending: int = 0
    extra: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = field(default_factory=dict)


class Network:
    """Links, routes and transfers on one topology.

    Parameters
    ----------
    kernel:
        The fluid kernel the links become resources of.
    topology:
        A checked topology.
    routing:
        ``"ecmp"`` (seeded per-flow hash) or ``"shortest"``.
    seed:
        ECMP hash seed.
    recorder:
        Where flows and fault events are recorded (optional).
    reroute:
        Move running flows off a failed link when another route exists (else they stall).
    """

    def __init__(
        self,
        kernel: FluidKernel,
        topology: Topology,
        *,
        routing: RoutingPolicy = "ecmp",
        seed: int = 0,
        recorder: Recorder | None = None,
        reroute: bool = True,
    ) -> None:
        self.kernel = kernel
        self.env = kernel.env
        self.topology = topology
        self.compiled = topology.compile()
        self.router = Router(topology, policy=routing, seed=seed)
        self.recorder = recorder
        self.reroute_on_failure = reroute
        c = self.compiled
        names = [f"link:{c.names[s]}->{c.names[d]}" for s, d in zip(c.edge_src, c.edge_dst, strict=True)]
        # one more resource of capacity 0 holds flows that have no route yet (they wait, stalled)
        self._n_edges = len(names)
        ids = kernel.add_resources(np.append(c.edge_bandwidth, 0.0), [*names, "link:(no route)"])
        self._base = int(ids[0])
        self._unroutable = int(ids[-1])
        ids = ids[:-1]
        self.nominal_bandwidth = c.edge_bandwidth.copy()
        self._factor = np.ones(ids.shape[0])
        self._down = np.zeros(ids.shape[0], dtype=bool)
        self._generation = 0
        self._next_key = 1 << 40  # automatic keys stay clear of the small keys callers choose
        self._route_cache: dict[tuple[bytes, bytes, bytes], RouteSet] = {}
        self.bytes_sent = 0.0
        self.bytes_delivered = 0.0

    def use_router(self, router: Router) -> None:
        """Route every flow from now on with ``router`` (e.g. one that plans paths instead of hashing them).

        The router must be built on this network's topology; the links down now
        are down for it too, and routes computed before are computed again.
        """
        mine, theirs = self.compiled, router.compiled
        if theirs is not mine and (theirs.names != mine.names or not np.array_equal(theirs.edge_src, mine.edge_src)
                                   or not np.array_equal(theirs.edge_dst, mine.edge_dst)):
            raise ConfigError(field="router", value=router.topology.name, rule="is not built on this network's topology",
                              fix="build the router from the simulation's topology")
        down = np.flatnonzero(self._down)
        if down.size:
            router.fail(down.tolist())
        self.router = router
        self._generation += 1
        self._route_cache.clear()

    # ------------------------------------------------------------------ resources
    def link_resource(self, a: str, b: str) -> int:
        """Kernel resource id of the directed link ``a -> b``."""
        edge = self.compiled.edge_index.get((self.router.node(a), self.router.node(b)))
        if edge is None:
            raise ConfigError(field="link", value=f"{a}-{b}", rule="is not a link of the topology",
                              fix="name two nodes that are directly linked")
        return self._base + edge

    def link_resources(self) -> np.ndarray:
        """Kernel resource ids of all directed links, indexed by edge."""
        return self._base + np.arange(self.compiled.edge_src.shape[0])

    # ------------------------------------------------------------------ routes
    def routes(
        self,
        srcs: Sequence[str | int] | np.ndarray,
        dsts: Sequence[str | int] | np.ndarray,
        keys: Sequence[int] | np.ndarray | None = None,
    ) -> RouteSet:
        """Route flows ``srcs[i] -> dsts[i]`` (ECMP key ``keys[i]``, unique when omitted)."""
        src = np.array([self.router.node(s) for s in srcs], dtype=np.int64)
        dst = np.array([self.router.node(d) for d in dsts], dtype=np.int64)
        if src.shape != dst.shape:
            raise ConfigError(field="destinations", value=len(dst), rule=f"do not match the {len(src)} sources",
                              fix="give one destination per source")
        if keys is None:
            key = np.arange(self._next_key, self._next_key + src.shape[0], dtype=np.int64)
            self._next_key += src.shape[0]
            return self._route(src, dst, key)
        key = np.asarray(keys, dtype=np.int64).reshape(-1)
        # the same flows recur (every step of a collective, every layer): route them once per fabric state
        signature = (src.tobytes(), dst.tobytes(), key.tobytes())
        cached = self._route_cache.get(signature)
        if cached is None or cached.generation != self._generation:
            if len(self._route_cache) > 4096:
                self._route_cache.clear()
            cached = self._route_cache[signature] = self._route(src, dst, key)
        return cached

    def _path(self, src: int, dst: int, key: int) -> tuple[int, ...] | None:
        try:
            return self.router.path(src, dst, key)
        except RoutingError:
            return None  # no route now: the flow waits on the no-route resource until a repair

    def _route(self, src: np.ndarray, dst: np.ndarray, key: np.ndarray) -> RouteSet:
        paths = [self._path(s, d, k) for s, d, k in zip(src.tolist(), dst.tolist(), key.tolist(), strict=True)]
        waiting = (self._n_edges,)
        lists = [p if p is not None else waiting for p in paths]
        counts = np.fromiter((len(p) for p in lists), dtype=np.int64, count=len(lists))
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        edges = np.fromiter((e for p in lists for e in p), dtype=np.int64, count=int(indptr[-1]))
        c = self.compiled
        real = edges < self._n_edges
        hop_latency = np.zeros(edges.shape[0])
        hop_latency[real] = c.edge_latency[edges[real]] + c.node_latency[c.edge_dst[edges[real]]]
        # sum per flow over the flows with a path (an empty path at the end would index past the edges)
        per_flow = np.zeros(len(lists))
        if edges.size:
            per_flow[counts > 0] = np.add.reduceat(hop_latency, indptr[:-1][counts > 0])
            # the destination's own forwarding latency is not part of the route
            last = edges[np.maximum(indptr[1:] - 1, 0)]
            ends = (counts > 0) & (last < self._n_edges)
            per_flow[ends] -= c.node_latency[c.edge_dst[last[ends]]]
        return RouteSet(src=src, dst=dst, key=key, indptr=indptr, resources=edges + self._base,
                        latency=per_flow, paths=paths, generation=self._generation)

    # ------------------------------------------------------------------ transfers
    def transfer(
        self,
        src: str | int,
        dst: str | int,
        nbytes: float,
        *,
        key: int | None = None,
        label: str = "",
        priority: int = 0,
        weight: float = 1.0,
        cap: float = UNBOUNDED,
        extra: tuple[Sequence[int], Sequence[float]] | None = None,
        record: bool = True,
    ) -> Event:
        """Send ``nbytes`` from ``src`` to ``dst``; return an event that succeeds on delivery.

        ``extra`` adds resources the flow also consumes, e.g. ``([hbm_src, hbm_dst], [1, 1])``
        for a DMA that reads and writes device memory.
        """
        routes = self.routes([src], [dst], None if key is None else [key])
        extras = None if extra is None else [extra]
        return self.send(routes, [nbytes], label=label, priority=priority, weight=weight, cap=cap,
                         extra=extras, record=record).delivered

    def send(
        self,
        routes: RouteSet,
        nbytes: float | Sequence[float] | np.ndarray,
        *,
        label: str = "",
        priority: int = 0,
        weight: float = 1.0,
        cap: float | np.ndarray = UNBOUNDED,
        extra: Sequence[tuple[Sequence[int], Sequence[float]] | None] | None = None,
        on_delivered: Delivered | None = None,
        record: bool = True,
    ) -> TransferBatch:
        """Start one flow per route; ``on_delivered(indices)`` is called as flows arrive.

        Routes computed before a failure or repair are recomputed first.
        """
        n = len(routes)
        size = np.broadcast_to(np.asarray(nbytes, dtype=float), (n,)).copy()
        # two reductions: NaN fails the first test, an infinity one of them
        if n and not (size.min() >= 0 and np.isfinite(size.max())):
            raise ConfigError(field="bytes", value=float(size[~(np.isfinite(size) & (size >= 0))][0]),
                              rule="must be a finite size >= 0", fix="give a non-negative message size")
        if routes.generation != self._generation:
            routes = self._route(routes.src, routes.dst, routes.key)
        now = self.env.now
        batch = TransferBatch(routes=routes, nbytes=size, start=now, delivered=Event(self.env), label=label,
                              record=record, on_delivered=on_delivered, pending=n)
        self.bytes_sent += float(size.sum())
        if extra is not None:
            for i, item in enumerate(extra):
                if item is not None:
                    batch.extra[i] = (tuple(int(r) for r in item[0]), tuple(float(c) for c in item[1]))
        indptr, res, coef = self._csr(batch, np.arange(n))
        empty = np.diff(indptr) == 0
        if n == 0:
            batch.delivered.succeed(now)
            return batch
        if np.all(empty):
            self._deliver(batch, np.arange(n), now)
            return batch
        if empty.any():
            moving = np.flatnonzero(~empty)
            # a transfer to itself with no resources is a no-op delivered at once
            self._deliver(batch, np.flatnonzero(empty), now)
            indptr, res, coef = self._csr(batch, moving)
            caps = np.broadcast_to(np.asarray(cap, dtype=float), (n,))[moving]
            moving_size = size[moving]
        else:
            moving, caps, moving_size = np.arange(n), cap, size
        kb = self.kernel.start(moving_size, (indptr, res), coef, weight=weight, priority=priority, cap=caps,
                               tags=moving, on_done=lambda ids, tags: self._arrived(batch, tags),
                               describe=lambda tag: self._describe(batch, tag))
        kb.owner = batch
        batch.kernel_batch = kb
        return batch

    def solo(self, routes: RouteSet, nbytes: np.ndarray, *, priority: int = 0) -> SoloTransfer | None:
        """How ``send(routes, nbytes)`` would run if started now and left alone, or None when it would not.

        It runs alone when the routes are current and every flow has links of its
        own: no running flow uses them, nor another flow of the set (see
        :meth:`FluidKernel.solo_rates`). Callers that know nothing else happens
        until the flows are delivered may then skip the send and count it with
        :meth:`account_solo`; the times are those the send would give.
        """
        if routes.generation != self._generation or not len(routes):
            return None
        size = np.asarray(nbytes, dtype=float)
        if size.shape != (len(routes),) or not (size.min() >= 0 and np.isfinite(size.max())):
            return None
        coef = np.ones(routes.resources.shape[0])
        rates = self.kernel.solo_rates(routes.indptr, routes.resources, coef, priority=priority)
        if rates is None:
            return None
        latency = routes.latency
        if latency.min() != latency.max():
            return None  # deliveries would split by latency
        duration = size / rates
        counts = np.diff(routes.indptr)
        return SoloTransfer(routes=routes, nbytes=size, total=float(size.sum()), shortest=float(duration.min()),
                            longest=float(duration.max()), latency=float(latency[0]),
                            incidence_work=np.repeat(size, counts), incidence_load=np.repeat(rates, counts))

    def account_solo(self, solo: SoloTransfer, spans: Sequence[tuple[float, float]]) -> None:
        """Count ``solo`` as sent once per ``(start, fluid end)`` span, in time order, all past.

        Byte counters, carried bytes, kernel statistics and the usage log end as if
        each had been sent (no flow records: use :meth:`send` for those).
        """
        for _ in spans:  # one addition per send, as send and delivery add them
            self.bytes_sent += solo.total
            self.bytes_delivered += solo.total
        self.kernel.account_solo(solo.routes.resources, solo.incidence_work, solo.incidence_load, len(solo.routes),
                                 spans)

    def _csr(self, batch: TransferBatch, which: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        routes = batch.routes
        if not batch.extra and which.shape[0] == len(routes):
            return routes.indptr, routes.resources, np.ones(routes.resources.shape[0])
        lists = []
        coefs = []
        for i in which.tolist():
            lo, hi = routes.indptr[i], routes.indptr[i + 1]
            res = routes.resources[lo:hi].tolist()
            cf = [1.0] * len(res)
            if i in batch.extra:
                res += list(batch.extra[i][0])
                cf += list(batch.extra[i][1])
            lists.append(res)
            coefs.append(cf)
        counts = np.fromiter((len(r) for r in lists), dtype=np.int64, count=len(lists))
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        flat = np.fromiter((r for rs in lists for r in rs), dtype=np.int64, count=int(indptr[-1]))
        flat_coef = np.fromiter((c for cs in coefs for c in cs), dtype=float, count=int(indptr[-1]))
        return indptr, flat, flat_coef

    def _arrived(self, batch: TransferBatch, flows: np.ndarray) -> None:
        """Fluid part done: deliver after each flow's route latency."""
        latency = batch.routes.latency[flows]
        if latency.min() == latency.max():
            values, groups = latency[:1], np.zeros(flows.shape[0], dtype=np.int64)
        else:
            values, groups = np.unique(latency, return_inverse=True)
        for g, value in enumerate(values.tolist()):
            part = flows[groups == g]
            if value <= 0.0:
                self._deliver(batch, part, self.env.now)
            else:
                self.env.timeout(value).callbacks.append(lambda _ev, p=part: self._deliver(batch, p, self.env.now))

    def _deliver(self, batch: TransferBatch, flows: np.ndarray, now: float) -> None:
        self.bytes_delivered += float(batch.nbytes[flows].sum())
        if batch.record and self.recorder is not None:
            names = self.compiled.names
            routes = batch.routes
            for i in flows.tolist():
                path = routes.paths[i]
                hops = " ".join(names[v] for v in self.router.nodes_of(path)) if path else names[routes.src[i]]
                self.recorder.flow(names[routes.src[i]], names[routes.dst[i]], float(batch.nbytes[i]), batch.start,
                                   now, hops, batch.label)
        if batch.on_delivered is not None:
            batch.on_delivered(flows)
        batch.pending -= flows.shape[0]
        if batch.pending == 0:
            batch.delivered.succeed(now)

    def _describe(self, batch: TransferBatch, flow: int) -> str:
        names = self.compiled.names
        routes = batch.routes
        label = f"{batch.label} " if batch.label else ""
        hops = routes.paths[flow]
        path = "(no route)" if hops is None else " ".join(names[v] for v in self.router.nodes_of(hops))
        return (f"transfer {label}{names[routes.src[flow]]}->{names[routes.dst[flow]]} of "
                f"{format_bytes(batch.nbytes[flow])} via {path}")

    # ------------------------------------------------------------------ faults
    def _edges(self, a: str, b: str, both: bool) -> list[int]:
        ia, ib = self.router.node(a), self.router.node(b)
        edges = [self.compiled.edge_index.get((ia, ib))]
        if both:
            edges.append(self.compiled.edge_index.get((ib, ia)))
        if any(e is None for e in edges):
            raise ConfigError(field="link", value=f"{a}-{b}", rule="is not a link of the topology",
                              fix="name two nodes that are directly linked")
        return [int(e) for e in edges]

    def fail_link(self, a: str, b: str, *, both: bool = True) -> None:
        """Take the link ``a-b`` down now (both directions unless ``both=False``).

        Running flows on it move to another route when one exists; otherwise
        they stall until a repair gives them one. Transfers started while no route
        exists wait the same way (on a resource of capacity 0 named ``(no route)``).
        """
        edges = self._edges(a, b, both)
        self._down[edges] = True
        self._apply_capacity(edges)
        self.router.fail(edges)
        self._generation += 1
        if self.recorder is not None:
            self.recorder.event(self.env.now, "link_down", f"{a}-{b}")
        self._reroute(np.asarray(edges) + self._base)

    def restore_link(self, a: str, b: str, *, both: bool = True) -> None:
        """Bring the link ``a-b`` back; flows stalled on it resume, new flows may use it.

        Flows still waiting for a route (stalled on another failed link, or started
        while no route existed) are routed again and move when one now exists.
        """
        edges = self._edges(a, b, both)
        self._down[edges] = False
        self._apply_capacity(edges)
        self.router.restore(edges)
        self._generation += 1
        if self.recorder is not None:
            self.recorder.event(self.env.now, "link_up", f"{a}-{b}")
        self._reroute(np.append(self._base + np.flatnonzero(self._down), self._unroutable))

    def is_down(self, a: str, b: str) -> bool:
        """Whether the link ``a-b`` is down now (either direction)."""
        return bool(self._down[self._edges(a, b, True)].any())

    def down_links(self) -> list[tuple[str, str]]:
        """The links down now, each once as ``(a, b)`` in the topology's edge order."""
        c = self.compiled
        seen: set[frozenset] = set()
        out = []
        for edge in np.flatnonzero(self._down).tolist():
            a, b = c.names[c.edge_src[edge]], c.names[c.edge_dst[edge]]
            if frozenset((a, b)) not in seen:
                seen.add(frozenset((a, b)))
                out.append((a, b))
        return out

    def link_factor(self, a: str, b: str) -> float:
        """The fraction of its bandwidth the link ``a-b`` runs at now (1 when not degraded)."""
        return float(self._factor[self._edges(a, b, True)].min())

    def degrade_link(self, a: str, b: str, factor: float, *, both: bool = True) -> None:
        """Run the link ``a-b`` at ``factor`` (0 < factor <= 1) of its bandwidth from now on."""
        if not 0 < factor <= 1:
            raise ConfigError(field="factor", value=factor, rule="must be in (0, 1]",
                              fix="give the fraction of bandwidth left, e.g. 0.25 (use link_down for 0)")
        edges = self._edges(a, b, both)
        self._factor[edges] = factor
        self._apply_capacity(edges)
        if self.recorder is not None:
            self.recorder.event(self.env.now, "link_degraded", f"{a}-{b}", f"factor {factor:g}")

    def _apply_capacity(self, edges: list[int]) -> None:
        e = np.asarray(edges)
        caps = np.where(self._down[e], 0.0, self.nominal_bandwidth[e] * self._factor[e])
        self.kernel.set_capacity(e + self._base, caps)

    def _reroute(self, failed_resources: np.ndarray) -> None:
        if not self.reroute_on_failure:
            return
        running = self.kernel.activities_on(failed_resources)
        if running.size == 0:
            return
        for kernel_id in running.tolist():
            owner = self.kernel.batch_of(kernel_id).owner
            if not isinstance(owner, TransferBatch):
                continue  # not a network flow (e.g. a DMA started elsewhere)
            batch = owner
            flow = self.kernel.tag_of(kernel_id)
            routes = batch.routes
            try:
                path = self.router.path(int(routes.src[flow]), int(routes.dst[flow]), int(routes.key[flow]))
            except RoutingError:
                if self.recorder is not None:
                    self.recorder.event(self.env.now, "stall", self._describe(batch, flow), "no route left")
                continue
            routes.paths[flow] = path
            res = [self._base + e for e in path]
            coefs = [1.0] * len(res)
            if flow in batch.extra:
                res += list(batch.extra[flow][0])
                coefs += list(batch.extra[flow][1])
            self.kernel.reroute([kernel_id], [res], [coefs])
            routes.latency[flow] = self.router.latency(path)
            if self.recorder is not None:
                self.recorder.event(self.env.now, "reroute", self._describe(batch, flow))
