"""Which links are inter-node, and setting their bandwidth (a sweep over the fabric's port bandwidth).

A directed link is *intra-node* when both its ends carry the same ``server``
attribute (NVLink/NVSwitch, the PCIe link to the GPU's NIC); every other link
(NIC ports to leaf switches, leaf to spine, a device's only link to a plain switch)
is *inter-node*. The sweep's bandwidth is per direction of one NIC port: every
inter-node link is scaled by ``bandwidth / port``, where ``port`` is the fastest
inter-node link that touches a NIC or a device, so the fabric keeps its shape
(a spine that is half a port stays half a port).

>>> from commsim.network.loader import load_topology
>>> fab = Fabric.of(load_topology("rail_optimized:2,8,200Gbps"))
>>> fab.port_bandwidth * 8 / 1e9, len(fab.inter_node) > 0
(200.0, True)
>>> Fabric.of(load_topology("switch:4,50GB/s,1us")).port_bandwidth
50000000000.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from commsim.errors import ConfigError
from commsim.kernel import UNBOUNDED

__all__ = ["Fabric"]


@dataclass(frozen=True)
class Fabric:
    """The topology's inter-node links (compiled edge indices) and its port bandwidth (bytes/s)."""

    inter_node: np.ndarray
    nominal: np.ndarray
    port_bandwidth: float

    @classmethod
    def of(cls, topology) -> Fabric:
        """Classify the links of ``topology``."""
        compiled = topology.compile()
        server = [topology.node_attributes(name).get("server") for name in compiled.names]
        kinds = compiled.kinds
        src, dst = compiled.edge_src, compiled.edge_dst
        inter = np.array([server[a] is None or server[a] != server[b] for a, b in zip(src.tolist(), dst.tolist(),
                                                                                       strict=True)], dtype=bool)
        edges = np.flatnonzero(inter)
        if edges.size == 0:
            raise ConfigError(field="topology", value=topology.name, rule="has no inter-node links to sweep",
                              fix="use a topology with more than one server (or a plain switch)")
        touching = [e for e in edges.tolist() if kinds[src[e]] in ("nic", "device") or kinds[dst[e]] in ("nic", "device")]
        bandwidth = compiled.edge_bandwidth
        port = float(bandwidth[touching].max()) if touching else float(bandwidth[edges].max())
        return cls(inter_node=edges, nominal=bandwidth[edges].copy(), port_bandwidth=port)

    def apply(self, sim, port_bandwidth: float | None) -> None:
        """Scale the inter-node links of ``sim`` to ``port_bandwidth`` per port (None: keep the topology's;
        ``inf``: unbounded, :data:`commsim.kernel.UNBOUNDED`)."""
        if port_bandwidth is None:
            return
        if not port_bandwidth > 0:
            raise ConfigError(field="inter_node_gbps", value=port_bandwidth, rule="must be positive",
                              fix="give a bandwidth above 0")
        caps = (np.full(self.inter_node.shape[0], UNBOUNDED) if math.isinf(port_bandwidth)
                else self.nominal * (port_bandwidth / self.port_bandwidth))
        _set_bandwidth(sim, self.inter_node, caps)

    @staticmethod
    def unlimited(sim) -> None:
        """Give every link of ``sim`` unlimited bandwidth (:data:`commsim.kernel.UNBOUNDED`; what remains is latency)."""
        edges = np.arange(sim.network.link_resources().shape[0])
        _set_bandwidth(sim, edges, np.full(edges.shape[0], UNBOUNDED))


def _set_bandwidth(sim, edges: np.ndarray, bandwidth: np.ndarray) -> None:
    """Make ``bandwidth`` the links' own (the network's nominal, which faults degrade from) and apply it now."""
    sim.network.nominal_bandwidth[edges] = bandwidth
    sim.kernel.set_capacity(sim.network.link_resources()[edges], bandwidth)
