"""Topologies: typed nodes joined by full-duplex links, each direction with its own capacity.

A :class:`Topology` wraps a ``networkx.DiGraph``: a full-duplex link is two
directed edges. Nodes have a *kind*:

* ``device`` — an accelerator or CPU that runs work (its ``device`` attribute
  names a preset or holds a :class:`~commsim.devices.DeviceSpec`);
* ``nic`` — a network interface between a device and the fabric;
* ``switch`` / ``router`` — forwarding elements with a per-hop latency;
* ``host`` — a CPU host or gateway endpoint that does not forward traffic.

Devices and hosts are endpoints: routes never pass *through* them, unless the
node is added with ``forwards=True`` (direct-connect rings, tori and meshes,
where accelerators relay traffic for their neighbours).

>>> topo = Topology("pair")
>>> topo.add_node("gpu0", "device", device="h100_sxm")
>>> topo.add_node("gpu1", "device", device="h100_sxm")
>>> topo.add_link("gpu0", "gpu1", bandwidth=450e9, latency=500e-9)
>>> topo.check()
>>> topo.devices
['gpu0', 'gpu1']
>>> topo.link_count
1
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from commsim.errors import TopologyError

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["NODE_KINDS", "TRANSIT_KINDS", "CompiledTopology", "NodeKind", "Topology"]

NodeKind = Literal["device", "nic", "switch", "router", "host"]
NODE_KINDS: tuple[str, ...] = ("device", "nic", "switch", "router", "host")
TRANSIT_KINDS: frozenset[str] = frozenset({"nic", "switch", "router"})
"""Kinds of node that forward traffic by default; devices and hosts are endpoints."""


@dataclass(frozen=True)
class CompiledTopology:
    """Integer-indexed arrays of a topology, for fast routing and resource set-up.

    ``edge_src[e] -> edge_dst[e]`` is directed edge ``e`` with ``edge_bandwidth[e]``
    bytes/s and ``edge_latency[e]`` seconds; ``node_latency[v]`` is the forwarding
    latency of node ``v``; ``out_edges[v]`` lists ``(neighbour, edge)`` pairs.
    """

    names: list[str]
    index: dict[str, int]
    kinds: list[str]
    transit: np.ndarray
    transit_list: list[bool]
    node_latency: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_bandwidth: np.ndarray
    edge_latency: np.ndarray
    edge_index: dict[tuple[int, int], int]
    out_edges: list[list[tuple[int, int]]]
    in_edges: list[list[tuple[int, int]]]


class Topology:
    """A network of typed nodes and full-duplex links.

    Parameters
    ----------
    name:
        A short name used in reports and file names.
    """

    def __init__(self, name: str = "topology", description: str = "") -> None:
        self.name = name
        self.description = description
        # nodes and directed links in insertion order; networkx is only imported for :attr:`graph`
        self._nodes: dict[str, dict[str, Any]] = {}
        self._succ: dict[str, dict[str, dict[str, Any]]] = {}
        self._graph: nx.DiGraph | None = None
        self._compiled: CompiledTopology | None = None

    @property
    def graph(self) -> nx.DiGraph:
        """The topology as a networkx ``DiGraph`` (a read-only snapshot, rebuilt after changes).

        Node attributes: ``kind``, ``latency``, ``device``, ``forwards`` and the extras given
        to :meth:`add_node`; edge attributes: ``bandwidth``, ``latency`` and extras. Change the
        topology through its methods (:meth:`add_node`, :meth:`add_link`, :meth:`set_device`).
        """
        if self._graph is None:
            import networkx as nx

            graph = nx.DiGraph(name=self.name)
            graph.add_nodes_from((n, dict(attrs)) for n, attrs in self._nodes.items())
            graph.add_edges_from((a, b, dict(attrs)) for a, out in self._succ.items() for b, attrs in out.items())
            self._graph = graph
        return self._graph

    def _changed(self) -> None:
        self._graph = None
        self._compiled = None

    # ------------------------------------------------------------------ building
    def add_node(
        self,
        name: str,
        kind: NodeKind,
        *,
        latency: float = 0.0,
        device: Any = None,
        forwards: bool | None = None,
        **attrs: Any,
    ) -> None:
        """Add a node.

        ``latency`` (seconds) is charged to every route that passes through the
        node (switch or router forwarding delay). ``device`` names the preset or
        spec of a ``device`` node. ``forwards`` says whether routes may pass
        through the node (default: switches, routers and NICs do, devices and
        hosts do not). Other keyword attributes (``server``, ``rail``, ``pod``,
        ``pos``...) are kept for grouping and drawing.
        """
        if kind not in NODE_KINDS:
            raise TopologyError(field=f"nodes.{name}.kind", value=kind, rule="is not a node kind",
                                fix=f"use one of {', '.join(NODE_KINDS)}")
        if name in self._nodes:
            raise TopologyError(field=f"nodes.{name}", value=name, rule="is defined twice",
                                fix="give every node a unique name")
        if latency < 0:
            raise TopologyError(field=f"nodes.{name}.latency", value=latency, rule="must be >= 0",
                                fix="give a non-negative forwarding latency")
        if kind == "device" and device is None:
            raise TopologyError(field=f"nodes.{name}.device", rule="is required for a device node",
                                fix="name a device preset (e.g. 'h100_sxm') or give a device spec")
        if forwards is None:
            forwards = kind in TRANSIT_KINDS
        self._nodes[name] = {"kind": kind, "latency": float(latency), "device": device, "forwards": bool(forwards),
                             **attrs}
        self._succ[name] = {}
        self._changed()

    def add_link(
        self,
        a: str,
        b: str,
        *,
        bandwidth: float,
        latency: float = 0.0,
        bandwidth_back: float | None = None,
        **attrs: Any,
    ) -> None:
        """Add a full-duplex link: ``bandwidth`` bytes/s from ``a`` to ``b`` and
        ``bandwidth_back`` (default: the same) from ``b`` to ``a``; ``latency`` in seconds
        each way."""
        for end in (a, b):
            if end not in self._nodes:
                raise TopologyError(field=f"links[{a}-{b}]", value=end, rule="names a node that does not exist",
                                    fix="define the node first or correct the name")
        if a == b:
            raise TopologyError(field=f"links[{a}-{b}]", value=a, rule="joins a node to itself",
                                fix="give two different nodes")
        if self.has_link(a, b):
            raise TopologyError(field=f"links[{a}-{b}]", value=f"{a}-{b}", rule="is defined twice",
                                fix="give each pair of nodes at most one link (raise its bandwidth instead)")
        back = bandwidth if bandwidth_back is None else bandwidth_back
        for field_name, value in (("bandwidth", bandwidth), ("bandwidth_back", back)):
            if not 0 < value < math.inf:
                raise TopologyError(field=f"links[{a}-{b}].{field_name}", value=value, rule="must be positive and finite",
                                    fix="give a bandwidth above 0 (model a failed link with a fault instead)")
        if not 0 <= latency < math.inf:
            # an infinite latency would turn into NaN times in the kernel
            raise TopologyError(field=f"links[{a}-{b}].latency", value=latency, rule="must be >= 0 and finite",
                                fix="give a non-negative, finite latency")
        self._succ[a][b] = {"bandwidth": float(bandwidth), "latency": float(latency), **attrs}
        self._succ[b][a] = {"bandwidth": float(back), "latency": float(latency), **attrs}
        self._changed()

    def copy(self) -> Topology:
        """An independent copy (same nodes, links and attributes) to extend without changing this one."""
        out = Topology(self.name, self.description)
        out._nodes = {n: dict(attrs) for n, attrs in self._nodes.items()}
        out._succ = {a: {b: dict(attrs) for b, attrs in succ.items()} for a, succ in self._succ.items()}
        return out

    def set_device(self, node: str, device: Any) -> None:
        """Replace the device (preset name or spec) of device node ``node``."""
        if self._nodes.get(node, {}).get("kind") != "device":
            raise TopologyError(field=f"nodes.{node}", value=node, rule="is not a device node",
                                fix="name a device node of the topology")
        self._nodes[node]["device"] = device
        self._changed()

    # ------------------------------------------------------------------ queries
    def nodes(self, kind: str | None = None) -> list[str]:
        """Node names in insertion order, optionally of one kind."""
        return [n for n, attrs in self._nodes.items() if kind is None or attrs["kind"] == kind]

    @property
    def devices(self) -> list[str]:
        """Device nodes in insertion order: rank ``i`` of a workload runs on ``devices[i]``."""
        return self.nodes("device")

    @property
    def link_count(self) -> int:
        """Number of full-duplex links."""
        return sum(len(out) for out in self._succ.values()) // 2

    def has_node(self, node: str) -> bool:
        """Whether ``node`` is a node of the topology."""
        return node in self._nodes

    def has_link(self, a: str, b: str) -> bool:
        """Whether a link joins ``a`` to ``b``."""
        return b in self._succ.get(a, {})

    def node_attributes(self, node: str) -> dict[str, Any]:
        """The attributes of ``node`` (``kind``, ``latency``, ``device``, ``forwards`` and extras); do not modify."""
        return self._nodes[node]

    def kind(self, node: str) -> str:
        """Kind of ``node``."""
        return self._nodes[node]["kind"]

    def links(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Directed links ``(a, b, attributes)``."""
        return ((a, b, attrs) for a, out in self._succ.items() for b, attrs in out.items())

    def device_spec(self, node: str) -> Any:
        """The ``device`` attribute of a device node (preset name or spec)."""
        return self._nodes[node]["device"]

    def check(self) -> None:
        """Raise :class:`TopologyError` unless the topology is usable.

        Rules: at least one device; connected; every device reachable from every
        other through forwarding nodes only.
        """
        devices = self.devices
        if not devices:
            raise TopologyError(field=f"topology {self.name!r}", rule="has no device node",
                                fix="add at least one node of kind 'device'")
        parts = self._weak_components()
        if len(parts) > 1:
            sample = sorted(parts[0])[:5]
            raise TopologyError(field=f"topology {self.name!r}", value=sample,
                                rule=f"is disconnected ({len(parts)} parts; the smallest holds these nodes)",
                                fix="add links that join every part to the rest")
        compiled = self.compile()
        # every device must reach the first device through forwarding nodes
        from commsim.network.routing import distances_to

        dist = distances_to(compiled, compiled.index[devices[0]], failed=frozenset())
        unreachable = [d for d in devices if dist[compiled.index[d]] < 0]
        if unreachable:
            raise TopologyError(field=f"topology {self.name!r}", value=unreachable[:5],
                                rule=f"has devices that cannot reach {devices[0]} without passing through "
                                     "a node that does not forward traffic",
                                fix="connect them through a switch, router or NIC, link them directly, "
                                    "or mark relaying devices with forwards: true")

    def compile(self) -> CompiledTopology:
        """Integer-indexed view for routing (cached until the topology changes)."""
        if self._compiled is not None:
            return self._compiled
        names = list(self._nodes)
        index = {n: i for i, n in enumerate(names)}
        kinds = [self._nodes[n]["kind"] for n in names]
        transit = np.array([self._nodes[n]["forwards"] for n in names], dtype=bool)
        node_latency = np.array([self._nodes[n]["latency"] for n in names], dtype=float)
        edges = list(self.links())
        edge_src = np.array([index[a] for a, _, _ in edges], dtype=np.int64)
        edge_dst = np.array([index[b] for _, b, _ in edges], dtype=np.int64)
        edge_bw = np.array([d["bandwidth"] for _, _, d in edges], dtype=float)
        edge_lat = np.array([d["latency"] for _, _, d in edges], dtype=float)
        edge_index = {(int(s), int(d)): e for e, (s, d) in enumerate(zip(edge_src, edge_dst, strict=True))}
        out_edges: list[list[tuple[int, int]]] = [[] for _ in names]
        in_edges: list[list[tuple[int, int]]] = [[] for _ in names]
        for e, (s, d) in enumerate(zip(edge_src.tolist(), edge_dst.tolist(), strict=True)):
            out_edges[s].append((d, e))
            in_edges[d].append((s, e))
        for lst in out_edges:
            lst.sort()
        self._compiled = CompiledTopology(
            names=names, index=index, kinds=kinds, transit=transit, transit_list=transit.tolist(),
            node_latency=node_latency,
            edge_src=edge_src, edge_dst=edge_dst, edge_bandwidth=edge_bw, edge_latency=edge_lat,
            edge_index=edge_index, out_edges=out_edges, in_edges=in_edges,
        )
        return self._compiled

    def summary(self) -> dict[str, Any]:
        """Counts of nodes by kind and of links, and the total device injection bandwidth."""
        counts: dict[str, int] = {}
        for attrs in self._nodes.values():
            counts[attrs["kind"]] = counts.get(attrs["kind"], 0) + 1
        return {"name": self.name, "nodes": len(self._nodes), "links": self.link_count, **counts}

    def _weak_components(self) -> list[set[str]]:
        """Connected parts, links taken both ways, smallest first."""
        seen: set[str] = set()
        parts: list[set[str]] = []
        for start in self._nodes:
            if start in seen:
                continue
            part, stack = {start}, [start]
            while stack:
                for nbr in self._succ[stack.pop()]:
                    if nbr not in part:
                        part.add(nbr)
                        stack.append(nbr)
            seen |= part
            parts.append(part)
        return sorted(parts, key=len)

    def __repr__(self) -> str:
        s = self.summary()
        return f"Topology({self.name!r}, {s['nodes']} nodes, {s['links']} links)"
