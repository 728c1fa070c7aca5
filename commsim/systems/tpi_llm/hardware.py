"""The devices and networks of the TPI-LLM study: the 8-device edge testbed and 4 laptops on Wi-Fi.

**Testbed.** Every device is the ``edge_cpu_8core`` preset (8 cores, 8 GB RAM +
4 GB swap, FP32 on CPU; its numbers and their sources are in
:mod:`commsim.devices.presets`), each behind its own home router, all routers
on one core router (:func:`commsim.network.generators.home_router_edge`): any
device-to-device route is 4 links.

**Laptops.** The paper's home testbed: one 8-core M1 at 510 Mbps / 5 ms, one
4-core i5 at 320 Mbps / 7 ms and two 8-core i7 at 610 Mbps / 3 ms, each on its
own Wi-Fi link to one access point (a star; a laptop-to-laptop route is 2
links). The paper gives cores and links only; the compute, memory and disk
figures of the ``laptop_*`` device presets (:data:`commsim.devices.PRESETS`) are
assumptions stated in each spec's ``source``.
Wi-Fi airtime is shared in reality; here each laptop's link is its own
full-duplex link (an optimistic simplification, stated in the study notes).

**Parameter server.** The ``ps`` all-reduce needs a server outside the group:
:func:`with_server` adds one more endpoint behind its own home router (or on
the access point), with the master's link figures.

>>> topo = edge_topology(8)
>>> len(topo.devices), round(path_latency(topo, "dev0", "dev7") * 1e3, 6)   # 4 links of 1 ms
(8, 4.0)
>>> wifi = wifi_topology()
>>> wifi.devices, round(path_latency(wifi, "m1", "i5") * 1e3, 3)
(['m1', 'i5', 'i7a', 'i7b'], 12.0)
"""

from __future__ import annotations

from typing import Any

from commsim.devices.spec import device_spec
from commsim.network.generators import home_router_edge
from commsim.network.routing import Router
from commsim.network.topology import Topology

__all__ = ["LAPTOP_LINKS", "SERVER", "edge_topology", "path_latency", "wifi_topology", "with_server"]

SERVER = "ps"
"""Node name of the parameter server added by :func:`with_server`."""

_MBPS = 1e6 / 8  # bytes/s per Mbit/s

LAPTOP_LINKS: list[tuple[str, str, float, float]] = [
    ("m1", "laptop_m1_8core", 510 * _MBPS, 5e-3),
    ("i5", "laptop_i5_4core", 320 * _MBPS, 7e-3),
    ("i7a", "laptop_i7_8core", 610 * _MBPS, 3e-3),
    ("i7b", "laptop_i7_8core", 610 * _MBPS, 3e-3),
]
"""``(node, device spec, Wi-Fi bandwidth bytes/s, latency s)`` of the 4 laptops, the M1 (master) first."""


def edge_topology(devices: int, *, bandwidth: float = 300 * _MBPS, latency: float = 1e-3,
                  devices_per_router: int = 1, device: Any = "edge_cpu_8core") -> Topology:
    """The home-router edge network of ``devices`` devices (``dev0`` is the master)."""
    return home_router_edge(devices=devices, bandwidth=bandwidth, latency=latency,
                            devices_per_router=devices_per_router, device=device_spec(device))


def wifi_topology(laptops: list[tuple[str, Any, float, float]] | None = None) -> Topology:
    """Laptops on one Wi-Fi access point, each with its own link bandwidth and latency (first = master)."""
    laptops = LAPTOP_LINKS if laptops is None else laptops
    topo = Topology("wifi-laptops", f"{len(laptops)} laptops on one Wi-Fi access point")
    topo.add_node("ap", "router")
    for name, spec, bandwidth, latency in laptops:
        resolved = device_spec(spec, field=f"laptops.{name}")
        topo.add_node(name, "device", device=resolved)
        topo.add_link(name, "ap", bandwidth=bandwidth, latency=latency)
    topo.check()
    return topo


def with_server(topo: Topology, *, device: Any = "edge_cpu_8core") -> Topology:
    """A copy of ``topo`` with a parameter server :data:`SERVER` attached like one more device.

    On a home-router network the server sits behind its own router on the core
    router (4 links to any device); on an access point it joins the access
    point directly. Its links copy the master's first link (stated assumption).
    """
    out = topo.copy()
    hub = "core" if "core" in out.graph else "ap"
    first = topo.devices[0]
    neighbour = next(iter(out.graph.successors(first)))
    attrs = out.graph.edges[first, neighbour]
    bandwidth, latency = attrs["bandwidth"], attrs["latency"]
    out.add_node(SERVER, "device", device=device_spec(device))
    if hub == "core":
        out.add_node("router_ps", "router")
        out.add_link("router_ps", "core", bandwidth=bandwidth, latency=latency)
        out.add_link(SERVER, "router_ps", bandwidth=bandwidth, latency=latency)
    else:
        out.add_link(SERVER, hub, bandwidth=bandwidth, latency=latency)
    out.check()
    return out


def path_latency(topo: Topology, a: str, b: str) -> float:
    """Latency of the shortest route from ``a`` to ``b``, seconds."""
    router = Router(topo, policy="shortest")
    return router.latency(router.path(a, b))
