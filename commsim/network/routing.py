"""Routing: shortest paths, ECMP with a seeded per-flow hash, explicit paths, failures.

Routes are computed hop by hop as a fabric does: from each node, the next hop is
one of the neighbours one step closer to the destination; with ECMP the choice
is a hash of the flow and the node, so two flows can collide on one uplink as in
a real fabric, and the same flow always takes the same path. Devices and hosts
never forward traffic unless built to (direct-connect rings and tori). Failed
links are left out; routes recompute around them.

>>> from commsim.network.generators import leaf_spine
>>> topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=2, bandwidth=50e9)
>>> router = Router(topo, policy="ecmp", seed=1)
>>> [topo.compile().names[v] for v in router.nodes_of(router.path("gpu0", "gpu3", key=7))]
['gpu0', 'leaf0', 'spine0', 'leaf1', 'gpu3']
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from commsim.errors import ConfigError, RoutingError
from commsim.network.topology import CompiledTopology, Topology

__all__ = ["Router", "RoutingPolicy", "distances_to", "equal_cost_paths", "flow_hash"]

RoutingPolicy = Literal["ecmp", "shortest"]
_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-spread 64-bit hash of an integer."""
    x &= _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _shared_tables(topo: CompiledTopology, policy: str, seed: int
                   ) -> tuple[dict[int, list[int]], dict[tuple[int, int, int], tuple[int, ...]]]:
    """The distance and route tables of the intact ``topo`` under ``policy`` and ``seed``, kept on ``topo``."""
    tables = getattr(topo, "_route_tables", None)
    if tables is None:
        tables = {}
        object.__setattr__(topo, "_route_tables", tables)
    found = tables.get((policy, seed))
    if found is None or len(found[1]) > 1 << 20:
        found = tables[(policy, seed)] = ({}, {})
    return found


def flow_hash(src: int, dst: int, key: int, seed: int) -> int:
    """The 64-bit ECMP hash of a flow (its endpoints, key and the fabric seed)."""
    return _mix(_mix(_mix(seed * 0x9E3779B97F4A7C15 + src) + dst) + key)


def distances_to(topo: CompiledTopology, dst: int, failed: frozenset[int] | set[int]) -> np.ndarray:
    """Hop counts to ``dst`` from every node (-1 where unreachable).

    Only forwarding nodes pass distances on: a device or host has a distance
    when it is next to a forwarding node that reaches ``dst``, but no route runs
    through it. Breadth-first, one numpy pass per hop.
    """
    n = len(topo.names)
    dist = np.full(n, -1, dtype=np.int64)
    dist[dst] = 0
    usable = np.ones(topo.edge_src.shape[0], dtype=bool)
    if failed:
        usable[list(failed)] = False
    # edges grouped by destination node, so the in-edges of a frontier are contiguous slices
    order, starts = _in_edge_index(topo)
    frontier = np.array([dst], dtype=np.int64)
    hops = 0
    while frontier.size:
        hops += 1
        lo, hi = starts[frontier], starts[frontier + 1]
        counts = hi - lo
        if not counts.sum():
            break
        edges = order[np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())]
        edges = edges[usable[edges]]
        seen = np.zeros(n, dtype=bool)
        seen[topo.edge_src[edges]] = True
        pred = np.flatnonzero(seen & (dist < 0))
        dist[pred] = hops
        frontier = pred[topo.transit[pred]]
    return dist


def equal_cost_paths(topo: CompiledTopology, src: int, dst: int, failed: frozenset[int] | set[int] = frozenset(),
                     *, limit: int = 4096, dist: np.ndarray | None = None) -> list[tuple[int, ...]]:
    """Every shortest path from ``src`` to ``dst`` (edge tuples) avoiding ``failed`` edges: ECMP's choices.

    Only forwarding nodes relay, as in :class:`Router`; at most ``limit`` paths (a
    two-tier fabric has ports x spines x ports). ``dist`` are the hop counts to
    ``dst`` with those failures (:func:`distances_to`), when already known.

    >>> from commsim.network.generators import leaf_spine
    >>> topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=1).compile()
    >>> len(equal_cost_paths(topo, topo.index["gpu0"], topo.index["gpu1"]))   # over spine0 or spine1
    2
    """
    if dist is None:
        dist = distances_to(topo, dst, failed)
    if dist[src] < 0:
        return []
    out: list[tuple[int, ...]] = []
    stack: list[tuple[int, tuple[int, ...]]] = [(src, ())]
    while stack and len(out) < limit:
        u, prefix = stack.pop()
        if u == dst:
            out.append(prefix)
            continue
        want = dist[u] - 1
        for w, e in reversed(topo.out_edges[u]):
            if dist[w] == want and e not in failed and (w == dst or topo.transit_list[w]):
                stack.append((w, (*prefix, e)))
    return out


def _in_edge_index(topo: CompiledTopology) -> tuple[np.ndarray, np.ndarray]:
    cached = getattr(topo, "_in_index", None)
    if cached is None:
        order = np.argsort(topo.edge_dst, kind="stable")
        starts = np.zeros(len(topo.names) + 1, dtype=np.int64)
        np.cumsum(np.bincount(topo.edge_dst, minlength=len(topo.names)), out=starts[1:])
        cached = (order, starts)
        object.__setattr__(topo, "_in_index", cached)
    return cached


class Router:
    """Chooses the path of each flow.

    Parameters
    ----------
    topology:
        The topology to route on.
    policy:
        ``"ecmp"`` hashes each flow over the equal-cost next hops; ``"shortest"``
        always takes the lowest-numbered next hop (deterministic single path).
    seed:
        Seed of the ECMP hash (a different seed is a different fabric hash).
    """

    def __init__(self, topology: Topology, *, policy: RoutingPolicy = "ecmp", seed: int = 0) -> None:
        if policy not in ("ecmp", "shortest"):
            raise ConfigError(field="routing", value=policy, rule="is not a routing policy",
                              fix="use 'ecmp' or 'shortest' (or give explicit paths)")
        self.topology = topology
        self.compiled = topology.compile()
        self.policy = policy
        self.seed = int(seed)
        self.failed: set[int] = set()
        self._explicit: dict[tuple[int, int], tuple[int, ...]] = {}
        # routes on the intact fabric are a function of the topology, policy and seed alone: routers of one
        # compiled topology (a simulation per replay of a search) share them until one fails or pins a link
        self._dist, self._cache = _shared_tables(self.compiled, policy, self.seed)

    def _own_tables(self) -> None:
        """Stop sharing route tables (failures or explicit paths make this router's routes its own)."""
        self._dist, self._cache = {}, {}

    # ------------------------------------------------------------------ lookups
    def node(self, name: str | int) -> int:
        """Index of a node given by name (or index)."""
        if isinstance(name, (int, np.integer)):
            if not 0 <= int(name) < len(self.compiled.names):
                raise ConfigError(field="node", value=int(name), rule="is not a node index of the topology",
                                  fix=f"use 0..{len(self.compiled.names) - 1} or a node name")
            return int(name)
        try:
            return self.compiled.index[name]
        except KeyError:
            raise ConfigError(field="node", value=name, rule="is not a node of the topology",
                              fix=f"use one of {', '.join(self.compiled.names[:8])}...") from None

    def nodes_of(self, path: Sequence[int]) -> list[int]:
        """Node indices along a path given as edge indices."""
        if not path:
            return []
        src = self.compiled.edge_src
        dst = self.compiled.edge_dst
        return [int(src[path[0]])] + [int(dst[e]) for e in path]

    def latency(self, path: Sequence[int]) -> float:
        """Propagation plus forwarding latency of a path, in seconds."""
        if not path:
            return 0.0
        edges = np.asarray(path, dtype=np.int64)
        inner = self.compiled.edge_dst[edges[:-1]]
        return float(self.compiled.edge_latency[edges].sum() + self.compiled.node_latency[inner].sum())

    # ------------------------------------------------------------------ routes
    def path(self, src: str | int, dst: str | int, key: int = 0) -> tuple[int, ...]:
        """Edge indices of the route of flow ``key`` from ``src`` to ``dst``.

        Raises :class:`RoutingError` when no route exists (for example after failures).
        """
        s, d = self.node(src), self.node(dst)
        cache_key = (s, d, key if self.policy == "ecmp" else 0)
        found = self._cache.get(cache_key)
        if found is not None:
            return found
        explicit = self._explicit.get((s, d))
        if explicit is not None and not self.failed.intersection(explicit):
            route = explicit
        else:
            route = self._hop_by_hop(s, d, key)
        self._cache[cache_key] = route
        return route

    def _hop_by_hop(self, s: int, d: int, key: int) -> tuple[int, ...]:
        if s == d:
            return ()
        short = self._short_route(s, d, key)
        if short is not None:
            return short
        dist = self._dist.get(d)
        if dist is None:
            dist = distances_to(self.compiled, d, self.failed).tolist()
            self._dist[d] = dist
        if dist[s] < 0:
            names = self.compiled.names
            raise RoutingError(
                field="route", value=f"{names[s]} -> {names[d]}",
                rule=(f"has no path avoiding {len(self.failed)} failed link direction(s)" if self.failed
                      else "has no path in the topology"),
                fix="restore a failed link or add a path between them")
        transit = self.compiled.transit_list
        out_edges = self.compiled.out_edges
        ecmp = self.policy == "ecmp"
        flow = flow_hash(s, d, key, self.seed) if ecmp else 0
        route = []
        u = s
        edge_index = self.compiled.edge_index
        while u != d:
            want = dist[u] - 1
            if want == 0:
                last = edge_index[(u, d)]
                if last not in self.failed:
                    route.append(last)
                    break
            hops = [(w, e) for w, e in out_edges[u]
                    if dist[w] == want and e not in self.failed and (w == d or transit[w])]
            pick = hops[_mix(flow ^ (u * 0xD6E8FEB86659FD93)) % len(hops)] if ecmp and len(hops) > 1 else hops[0]
            route.append(pick[1])
            u = pick[0]
        return tuple(route)

    def _short_route(self, s: int, d: int, key: int) -> tuple[int, ...] | None:
        """Routes of one or two hops without a breadth-first search (devices on one switch).

        The same choice the hop-by-hop rule makes: a direct link if there is one,
        else among the forwarding neighbours linked to ``d``, the ECMP pick at ``s``.
        """
        edge_index = self.compiled.edge_index
        direct = edge_index.get((s, d))
        if direct is not None and direct not in self.failed:
            return (direct,)
        transit = self.compiled.transit_list
        hops = []
        for w, e in self.compiled.out_edges[s]:
            if e in self.failed or not transit[w]:
                continue
            last = edge_index.get((w, d))
            if last is not None and last not in self.failed:
                hops.append((e, last))
        if not hops:
            return None
        if self.policy == "ecmp" and len(hops) > 1:
            flow = flow_hash(s, d, key, self.seed)
            return hops[_mix(flow ^ (s * 0xD6E8FEB86659FD93)) % len(hops)]
        return hops[0]

    def set_path(self, nodes: Sequence[str | int]) -> tuple[int, ...]:
        """Pin the route between the first and last of ``nodes`` to exactly these hops."""
        idx = [self.node(n) for n in nodes]
        if len(idx) < 2:
            raise ConfigError(field="path", value=list(nodes), rule="needs at least two nodes",
                              fix="list the source, every hop and the destination")
        edges = []
        for a, b in itertools.pairwise(idx):
            e = self.compiled.edge_index.get((a, b))
            if e is None:
                names = self.compiled.names
                raise ConfigError(field="path", value=[names[i] for i in idx],
                                  rule=f"has no link from {names[a]} to {names[b]}",
                                  fix="give consecutive nodes that are linked")
            edges.append(e)
        for inner in idx[1:-1]:
            if not self.compiled.transit[inner]:
                raise ConfigError(field="path", value=self.compiled.names[inner],
                                  rule="passes through a device or host, which does not forward traffic",
                                  fix="route through switches, routers or NICs only")
        route = tuple(edges)
        self._explicit[(idx[0], idx[-1])] = route
        self._own_tables()
        return route

    def clear_paths(self) -> None:
        """Forget every explicit path."""
        self._explicit.clear()
        self._own_tables()

    # ------------------------------------------------------------------ failures
    def fail(self, edges: Iterable[int]) -> None:
        """Stop routing over these directed edges."""
        self.failed.update(int(e) for e in edges)
        self._own_tables()

    def restore(self, edges: Iterable[int]) -> None:
        """Route over these directed edges again."""
        self.failed.difference_update(int(e) for e in edges)
        self._own_tables()

    def uses_failed(self, path: Sequence[int]) -> bool:
        """Whether ``path`` crosses a failed edge."""
        return bool(self.failed.intersection(path))
