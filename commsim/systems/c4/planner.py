"""C4P: planned paths for long-lived collective flows instead of ECMP hashing.

Collective traffic is a few elephant flows (one per queue pair, QP) that live as
long as the job. C4P knows them all when the job starts, so it gives each QP a
path instead of letting switches hash it:

1. **ports** -- each QP gets the egress port of its NIC and the ingress port of
   the peer NIC that are least used so far (ties: lowest edge index), so the two
   ports of a bonded dual-port NIC carry the same number of QPs;
2. **uplinks** -- QPs that leave their leaf switch get a spine by proper
   edge-colouring of the bipartite multigraph *source leaf -> destination leaf*
   (colours = spines, Koenig's theorem: max degree <= spines colours suffice), so no
   two QPs share a leaf->spine uplink or a spine->leaf downlink whenever that is
   possible at all; colours are found with alternating-path (Kempe chain) swaps;
3. **re-planning** -- when a link fails, the QPs whose planned path crosses it get
   the least-loaded surviving path (``replan=True``), or fall back to the
   switches' ECMP hash (``replan=False``: a static plan).

:class:`C4PRouter` is a :class:`~commsim.network.routing.Router`: install it as
``sim.network.router`` and every flow whose ``(src, dst, key)`` was planned takes
its planned path; any other flow is hashed by ECMP as before. The planner needs
paths of the form ``device -> NIC -> ... -> NIC -> device`` (multi-port NICs on a
one- or two-tier switch fabric, e.g. :func:`~commsim.network.generators.rail_optimized`).

>>> from commsim.network.generators import rail_optimized
>>> topo = rail_optimized(servers=4, gpus_per_server=1, nic_ports=2, servers_per_leaf=2, spines=2)
>>> router = C4PRouter(topo)
>>> src, dst = ["gpu0", "gpu0"], ["gpu2", "gpu2"]
>>> router.plan(src, dst, [1, 2])
>>> names = topo.compile().names
>>> [[names[v] for v in router.nodes_of(router.path(s, d, k))] for s, d, k in zip(src, dst, [1, 2])]
[['gpu0', 'nic0.0', 'leafA0.0', 'spine0', 'leafA0.1', 'nic2.0', 'gpu2'], ['gpu0', 'nic0.0', 'leafB0.0', 'spine1', 'leafB0.1', 'nic2.0', 'gpu2']]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from commsim.errors import ConfigError, RoutingError
from commsim.network.routing import Router, distances_to, equal_cost_paths
from commsim.network.topology import Topology

__all__ = ["C4PRouter"]

Path = tuple[int, ...]


class C4PRouter(Router):
    """A router whose planned flows follow C4P's paths; other flows are ECMP-hashed.

    Parameters
    ----------
    topology:
        The fabric.
    seed:
        ECMP hash seed for unplanned flows (and planned ones after a failure when
        ``replan`` is off).
    replan:
        Give flows broken by a link failure a new least-loaded path (C4P's dynamic
        re-planning); off: they fall back to the ECMP hash.
    """

    def __init__(self, topology: Topology, *, seed: int = 0, replan: bool = True) -> None:
        super().__init__(topology, policy="ecmp", seed=seed)
        self.replan = replan
        self.planned: dict[tuple[int, int, int], Path] = {}
        self.load = np.zeros(self.compiled.edge_src.shape[0], dtype=np.int64)
        """Planned QPs per directed edge."""
        self.replanned = 0
        """Flows moved by re-planning so far."""
        self._nic = np.array([k == "nic" for k in self.compiled.kinds], dtype=bool)

    # ------------------------------------------------------------------ planning
    def plan(self, src: Sequence[str | int], dst: Sequence[str | int], key: Sequence[int] | np.ndarray) -> None:
        """Plan paths for the flows ``src[i] -> dst[i]`` with ECMP keys ``key[i]`` (in this order).

        Flows between devices of one server (no NIC on the way) keep their only path.
        """
        s_idx = [self.node(s) for s in src]
        d_idx = [self.node(d) for d in dst]
        keys = [int(k) for k in key]
        if not (len(s_idx) == len(d_idx) == len(keys)):
            raise ConfigError(field="plan", value=len(keys), rule="needs one source, destination and key per flow",
                              fix="give three sequences of equal length")
        options: list[list[Path]] = []
        dists: dict[int, np.ndarray] = {}   # many flows share a destination: one search per destination
        for s, d in zip(s_idx, d_idx, strict=True):
            if d not in dists:
                dists[d] = distances_to(self.compiled, d, self.failed)
            options.append(equal_cost_paths(self.compiled, s, d, self.failed, dist=dists[d]) if s != d else [()])
        # 1. ports: NIC egress and ingress edges of each flow, least used first
        port_choice: list[tuple[int, int] | None] = []
        for opts in options:
            pairs = sorted({self._ports(p) for p in opts if self._ports(p) is not None})
            if not pairs:
                port_choice.append(None)
                continue
            best = min(pairs, key=lambda pr: (max(self.load[pr[0]], self.load[pr[1]]),
                                              self.load[pr[0]] + self.load[pr[1]], pr))
            self.load[list(best)] += 1
            port_choice.append(best)
        # 2. the middle (leaf -> spine -> leaf) by bipartite edge colouring
        middles: dict[int, dict[tuple[int, ...], Path]] = {}
        for i, (opts, ports) in enumerate(zip(options, port_choice, strict=True)):
            if ports is None:
                continue
            middles[i] = {self._middle(p): p for p in opts if self._ports(p) == ports}
        chosen = self._colour(middles, port_choice)
        for i, (s, d, k) in enumerate(zip(s_idx, d_idx, keys, strict=True)):
            if port_choice[i] is None:
                continue  # no NIC on the way: the router's own single path
            path = middles[i][chosen[i]]
            inner = [e for e in path if e not in port_choice[i]]
            self.load[inner] += 1
            self._store((s, d, k), path)

    def _ports(self, path: Path) -> tuple[int, int] | None:
        """(NIC egress edge, NIC ingress edge) of a ``device -> NIC ... NIC -> device`` path."""
        if len(path) < 4:
            return None
        c = self.compiled
        if not (self._nic[c.edge_dst[path[0]]] and self._nic[c.edge_src[path[-1]]]):
            return None
        return (path[1], path[-2])

    @staticmethod
    def _middle(path: Path) -> tuple[int, ...]:
        return tuple(path[2:-2])

    def _colour(self, middles: dict[int, dict[tuple[int, ...], Path]],
                ports: list[tuple[int, int] | None]) -> dict[int, tuple[int, ...]]:
        """Choose a middle segment per flow: Kempe-chain edge colouring on two-hop middles, greedy otherwise."""
        c = self.compiled
        chosen: dict[int, tuple[int, ...]] = {}
        colour_of: dict[int, int] = {}
        at_u: dict[int, dict[int, int]] = defaultdict(dict)   # source leaf -> spine -> flow
        at_v: dict[int, dict[int, int]] = defaultdict(dict)   # destination leaf -> spine -> flow
        ends: dict[int, tuple[int, int]] = {}
        by_spine: dict[int, dict[int, tuple[int, ...]]] = {}
        use: dict[int, int] = defaultdict(int)   # flows per spine so far
        for i, opts in middles.items():
            if list(opts) == [()]:
                chosen[i] = ()
                continue
            two_hop = all(len(m) == 2 for m in opts)
            if not two_hop:
                chosen[i] = self._least_loaded(list(opts))
                continue
            u = int(c.edge_src[next(iter(opts))[0]])
            v = int(c.edge_dst[next(iter(opts))[1]])
            spines = {int(c.edge_dst[m[0]]): m for m in opts}
            by_spine[i] = spines
            ends[i] = (u, v)
            free = [s for s in sorted(spines) if s not in at_u[u] and s not in at_v[v]]
            if free:
                # the least-used free spine: spreads the load over the spines, not only over links
                self._put(i, min(free, key=lambda s: (use[s], s)), ends, colour_of, at_u, at_v)
                use[colour_of[i]] += 1
                continue
            a = next((s for s in sorted(spines) if s not in at_u[u]), None)
            b = next((s for s in sorted(spines) if s not in at_v[v]), None)
            if a is None or b is None or not self._swap(v, a, b, ends, colour_of, at_u, at_v, by_spine):
                # more flows than spines at a leaf (or a failed link in the chain): share the least-loaded one
                ends.pop(i)
                by_spine.pop(i)
                chosen[i] = self._least_loaded(list(opts))
                continue
            self._put(i, a, ends, colour_of, at_u, at_v)
            use[a] += 1
        for i, spine in colour_of.items():
            chosen[i] = by_spine[i][spine]
        return chosen

    @staticmethod
    def _put(i: int, spine: int, ends: dict[int, tuple[int, int]], colour_of: dict[int, int],
             at_u: dict[int, dict[int, int]], at_v: dict[int, dict[int, int]]) -> None:
        u, v = ends[i]
        colour_of[i] = spine
        at_u[u][spine] = i
        at_v[v][spine] = i

    @staticmethod
    def _swap(v: int, a: int, b: int, ends: dict[int, tuple[int, int]], colour_of: dict[int, int],
              at_u: dict[int, dict[int, int]], at_v: dict[int, dict[int, int]],
              by_spine: dict[int, dict[int, tuple[int, ...]]]) -> bool:
        """Swap colours ``a``/``b`` along the alternating path that starts at destination leaf ``v`` with ``a``.

        Afterwards ``a`` is free at ``v`` (and still free at the source leaf, which
        the path cannot reach). Refused (False) when a flow on the path cannot use
        both spines (a failed link).
        """
        path: list[int] = []
        side, node, colour = "v", v, a
        while True:
            flow = (at_v if side == "v" else at_u)[node].get(colour)
            if flow is None:
                break
            path.append(flow)
            u_end, v_end = ends[flow]
            node, side = (u_end, "u") if side == "v" else (v_end, "v")
            colour = b if colour == a else a
        if any(a not in by_spine[f] or b not in by_spine[f] for f in path):
            return False
        for f in path:
            u_end, v_end = ends[f]
            del at_u[u_end][colour_of[f]]
            del at_v[v_end][colour_of[f]]
        for f in path:
            colour_of[f] = b if colour_of[f] == a else a
            u_end, v_end = ends[f]
            at_u[u_end][colour_of[f]] = f
            at_v[v_end][colour_of[f]] = f
        return True

    def _least_loaded(self, segments: list[tuple[int, ...]]) -> tuple[int, ...]:
        cap = self.compiled.edge_bandwidth
        return min(segments, key=lambda m: (max((self.load[e] + 1) / cap[e] for e in m) if m else 0.0,
                                            sum(self.load[e] for e in m), m))

    def _store(self, flow: tuple[int, int, int], path: Path) -> None:
        self.planned[flow] = path
        self._cache.pop(flow, None)

    # ------------------------------------------------------------------ routing
    def path(self, src: str | int, dst: str | int, key: int = 0) -> tuple[int, ...]:
        """The planned path of flow ``(src, dst, key)`` if it has a usable one, else the ECMP path."""
        s, d = self.node(src), self.node(dst)
        planned = self.planned.get((s, d, int(key)))
        if planned is not None and not self.failed.intersection(planned):
            return planned
        return super().path(s, d, key)

    def planned_path(self, src: str | int, dst: str | int, key: int) -> Path | None:
        """The path planned for a flow (None when it was not planned)."""
        return self.planned.get((self.node(src), self.node(dst), int(key)))

    def fail(self, edges: Iterable[int]) -> None:
        """Stop routing over ``edges``; with ``replan``, move the planned flows that crossed them."""
        super().fail(edges)
        if not self.replan:
            return
        broken = [f for f, p in self.planned.items() if self.failed.intersection(p)]
        for flow in broken:
            np.subtract.at(self.load, list(self.planned[flow]), 1)
        for flow in sorted(broken):
            s, d, _k = flow
            options = equal_cost_paths(self.compiled, s, d, self.failed)
            if not options:
                raise RoutingError(field="planned flow", value=f"{self.compiled.names[s]} -> {self.compiled.names[d]}",
                                   rule="has no path left after the failure", fix="restore a link")
            best = self._least_loaded(options)
            self.load[list(best)] += 1
            self._store(flow, best)
            self.replanned += 1
