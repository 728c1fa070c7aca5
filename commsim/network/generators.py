"""Topology generators: the shapes the studies and users need, built in one call.

Every generator takes SI numbers or strings with units (``"400 Gbps"``) and
returns a checked :class:`~commsim.network.Topology`. Devices are named
``gpu0, gpu1, ...`` in rank order (``dev0...`` for CPUs of the edge network);
their ``server`` and ``local_rank`` attributes tell which server they sit in.

>>> topo = fat_tree(k=4, bandwidth="100 Gbps")
>>> len(topo.devices), topo.summary()["switch"]
(16, 20)
>>> ring(n=8, bandwidth="75 GB/s", latency="500 ns").link_count
8
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, ValidationError, validate_call

from commsim.config import config_error_from
from commsim.limits import MAX_TOPOLOGY_NODES, check_limit
from commsim.network._params import GENERATOR_CALL, NonNegativeDuration, PositiveBandwidth, PositiveInt, Ratio
from commsim.network.dragonfly import dragonfly
from commsim.network.topology import Topology

__all__ = [
    "GENERATORS",
    "build",
    "dragonfly",
    "fat_tree",
    "fully_connected",
    "home_router_edge",
    "leaf_spine",
    "nvswitch_node",
    "rail_optimized",
    "ring",
    "switch",
    "torus",
    "wan",
]



def _expect(field: str, value: Any, nodes_and_links: int) -> None:
    """Refuse, before building, a topology whose size estimate is absurd (see :mod:`commsim.limits`)."""
    check_limit(field, value, nodes_and_links, MAX_TOPOLOGY_NODES, "nodes and links",
                fix=f"use a smaller {field}")


def _devices(topo: Topology, count: int, device: Any, *, prefix: str = "gpu", start: int = 0,
             forwards: bool = False, **attrs: Any) -> list[str]:
    names = []
    for i in range(count):
        name = f"{prefix}{start + i}"
        topo.add_node(name, "device", device=device, forwards=forwards, **attrs)
        names.append(name)
    return names


@validate_call(**GENERATOR_CALL)
def ring(
    n: Annotated[int, Field(ge=2)] = 8,
    bandwidth: PositiveBandwidth = 75e9,
    latency: NonNegativeDuration = 500e-9,
    device: Any = "mi210_t3",
) -> Topology:
    """``n`` devices in a ring, each joined to its two neighbours by a direct link.

    ``bandwidth`` is per direction (bytes/s); the T3 study's default is 75 GB/s
    per direction with 500 ns per link.
    """
    _expect('n', n, 2 * n)
    topo = Topology(f"ring{n}", f"{n} devices in a ring, direct links")
    names = _devices(topo, n, device, forwards=True)
    for i in range(n if n > 2 else 1):
        topo.add_link(names[i], names[(i + 1) % n], bandwidth=bandwidth, latency=latency)
    topo.check()
    return topo


@validate_call(**GENERATOR_CALL)
def fully_connected(
    n: Annotated[int, Field(ge=2)] = 8,
    bandwidth: PositiveBandwidth = 50e9,
    latency: NonNegativeDuration = 500e-9,
    device: Any = "mi210_t3",
) -> Topology:
    """``n`` devices with a direct link between every pair."""
    _expect('n', n, n + n * (n - 1) // 2)
    topo = Topology(f"full{n}", f"{n} devices, all pairs directly linked")
    names = _devices(topo, n, device, forwards=True)
    for a, b in itertools.combinations(names, 2):
        topo.add_link(a, b, bandwidth=bandwidth, latency=latency)
    topo.check()
    return topo


@validate_call(**GENERATOR_CALL)
def switch(
    n: PositiveInt = 8,
    bandwidth: PositiveBandwidth = 50e9,
    latency: NonNegativeDuration = 500e-9,
    switch_latency: NonNegativeDuration = 0.0,
    device: Any = "h100_sxm",
) -> Topology:
    """``n`` devices on one non-blocking switch; ``latency`` per link, ``switch_latency`` per traversal."""
    _expect('n', n, 2 * n + 1)
    topo = Topology(f"switch{n}", f"{n} devices on one switch")
    topo.add_node("sw", "switch", latency=switch_latency)
    for name in _devices(topo, n, device):
        topo.add_link(name, "sw", bandwidth=bandwidth, latency=latency)
    topo.check()
    return topo


def _server(
    topo: Topology,
    server: int,
    gpus: int,
    device: Any,
    nvlink_bandwidth: float,
    nvlink_latency: float,
    switch_latency: float,
    nvls: bool = False,
) -> list[str]:
    switch_name = f"nvsw{server}"
    topo.add_node(switch_name, "switch", latency=switch_latency, server=server, nvls=nvls)
    names = []
    for g in range(gpus):
        name = f"gpu{server * gpus + g}"
        topo.add_node(name, "device", device=device, server=server, local_rank=g)
        topo.add_link(name, switch_name, bandwidth=nvlink_bandwidth, latency=nvlink_latency, tier="nvlink")
        names.append(name)
    return names


@validate_call(**GENERATOR_CALL)
def nvswitch_node(
    gpus: PositiveInt = 8,
    device: Any = "h100_sxm",
    nvlink_bandwidth: PositiveBandwidth = 450e9,
    nvlink_latency: NonNegativeDuration = 350e-9,
    switch_latency: NonNegativeDuration = 150e-9,
) -> Topology:
    """One server: ``gpus`` GPUs on an NVSwitch fabric, modelled as one non-blocking switch.

    ``nvlink_bandwidth`` is each GPU's NVLink bandwidth per direction (H100 SXM:
    18 links x 25 GB/s = 450 GB/s).
    """
    _expect('gpus', gpus, 2 * gpus + 1)
    topo = Topology(f"nvswitch{gpus}", f"{gpus} GPUs on NVSwitch")
    _server(topo, 0, gpus, device, nvlink_bandwidth, nvlink_latency, switch_latency)
    topo.check()
    return topo


@validate_call(**GENERATOR_CALL)
def leaf_spine(
    leaves: PositiveInt = 4,
    spines: PositiveInt = 2,
    hosts_per_leaf: PositiveInt = 4,
    bandwidth: PositiveBandwidth = 50e9,
    oversubscription: Ratio = 1.0,
    latency: NonNegativeDuration = 500e-9,
    switch_latency: NonNegativeDuration = 300e-9,
    device: Any = "h100_sxm",
) -> Topology:
    """Two tiers: hosts on leaves, every leaf joined to every spine.

    Each leaf-spine link carries ``hosts_per_leaf * bandwidth / (spines * oversubscription)``
    so the leaf's uplink capacity is its downlink capacity divided by ``oversubscription``.
    """
    _expect('leaves', leaves, leaves * (1 + spines + 2 * hosts_per_leaf) + spines)
    topo = Topology(f"leafspine{leaves}x{spines}", f"{leaves} leaves x {hosts_per_leaf} hosts, {spines} spines, "
                    f"{oversubscription}:1")
    uplink = hosts_per_leaf * bandwidth / (spines * oversubscription)
    for s in range(spines):
        topo.add_node(f"spine{s}", "switch", latency=switch_latency, tier=2)
    for leaf in range(leaves):
        topo.add_node(f"leaf{leaf}", "switch", latency=switch_latency, tier=1)
        for s in range(spines):
            topo.add_link(f"leaf{leaf}", f"spine{s}", bandwidth=uplink, latency=latency, tier="spine")
        for name in _devices(topo, hosts_per_leaf, device, start=leaf * hosts_per_leaf, leaf=leaf):
            topo.add_link(name, f"leaf{leaf}", bandwidth=bandwidth, latency=latency, tier="leaf")
    topo.check()
    return topo


@validate_call(**GENERATOR_CALL)
def fat_tree(
    k: Annotated[int, Field(ge=2, multiple_of=2)] = 4,
    bandwidth: PositiveBandwidth = 50e9,
    oversubscription: Ratio = 1.0,
    latency: NonNegativeDuration = 500e-9,
    switch_latency: NonNegativeDuration = 300e-9,
    device: Any = "h100_sxm",
) -> Topology:
    """A three-tier k-ary fat-tree: ``k`` pods of ``k/2`` edge and ``k/2`` aggregation
    switches, ``(k/2)^2`` core switches and ``k^3/4`` hosts.

    Edge-to-aggregation links run at ``bandwidth / oversubscription``; the other
    tiers at ``bandwidth``.
    """
    half = k // 2
    _expect('k', k, 5 * k**2 // 4 + k**3)
    topo = Topology(f"fattree{k}", f"k={k} fat-tree, {k ** 3 // 4} hosts, {oversubscription}:1 at the edge")
    for c in range(half * half):
        topo.add_node(f"core{c}", "switch", latency=switch_latency, tier=3)
    host = 0
    for pod in range(k):
        for a in range(half):
            agg = f"agg{pod}.{a}"
            topo.add_node(agg, "switch", latency=switch_latency, tier=2, pod=pod)
            for c in range(half):
                topo.add_link(agg, f"core{a * half + c}", bandwidth=bandwidth, latency=latency, tier="core")
        for e in range(half):
            edge = f"edge{pod}.{e}"
            topo.add_node(edge, "switch", latency=switch_latency, tier=1, pod=pod)
            for a in range(half):
                topo.add_link(edge, f"agg{pod}.{a}", bandwidth=bandwidth / oversubscription, latency=latency,
                              tier="agg")
            for name in _devices(topo, half, device, start=host, pod=pod):
                topo.add_link(name, edge, bandwidth=bandwidth, latency=latency, tier="edge")
            host += half
    topo.check()
    return topo


@validate_call(**GENERATOR_CALL)
def rail_optimized(
    servers: PositiveInt = 4,
    gpus_per_server: PositiveInt = 8,
    device: Any = "h800",
    nvlink_bandwidth: PositiveBandwidth = 200e9,
    nvlink_latency: NonNegativeDuration = 350e-9,
    nvswitch_latency: NonNegativeDuration = 150e-9,
    pcie_bandwidth: PositiveBandwidth = 64e9,
    pcie_latency: NonNegativeDuration = 500e-9,
    nic_ports: Annotated[int, Field(ge=1, le=2)] = 1,
    port_bandwidth: PositiveBandwidth = 50e9,
    servers_per_leaf: PositiveInt | None = None,
    spines: Annotated[int, Field(ge=0)] = 4,
    oversubscription: Ratio = 1.0,
    link_latency: NonNegativeDuration = 500e-9,
    switch_latency: NonNegativeDuration = 300e-9,
    nvls: bool = False,
) -> Topology:
    """Multi-GPU servers with one NIC per GPU, each NIC wired to the leaf of its rail.

    ``nvls``: the servers' NVSwitch reduces and multicasts (NVLink SHARP, third-
    generation NVSwitch of HGX H100 and later), so NCCL's NVLS algorithms apply.

    Rail ``r`` gathers NIC ``r`` of every server. With ``nic_ports=2`` each NIC has
    two ports wired to leaves of two planes (``leafA*`` and ``leafB*``), as in
    dual-plane clusters; each port runs at ``port_bandwidth``. Leaves hold
    ``servers_per_leaf`` servers (default: all of them) and, when there is more
    than one leaf per plane and more than one server (so that traffic between rails
    or leaf groups has a path), join every spine with uplinks sized for
    ``oversubscription``. ``spines=0`` is allowed only when no leaf needs to join another.
    """
    spl = servers if servers_per_leaf is None else min(servers_per_leaf, servers)
    groups = -(-servers // spl)
    planes = "AB"[:nic_ports]
    _expect('servers', servers, servers * gpus_per_server * (4 + nic_ports) + servers + spines)
    topo = Topology(f"rail{servers}x{gpus_per_server}",
                    f"{servers} servers x {gpus_per_server} GPUs, rail-optimised, {nic_ports} port(s) per NIC")
    # leaves must be joined when servers reach each other over several rails or leaf groups
    joined = groups > 1 or (gpus_per_server > 1 and servers > 1)
    if joined and spines == 0:
        from commsim.errors import TopologyError

        raise TopologyError(field="spines", value=0,
                            rule=f"cannot be 0 with {groups * gpus_per_server} leaves per plane",
                            fix="add spines (traffic between rails or leaf groups crosses them)")
    for s in range(spines if joined else 0):
        topo.add_node(f"spine{s}", "switch", latency=switch_latency, tier=2)
    for plane in planes:
        for rail in range(gpus_per_server):
            for g in range(groups):
                leaf = f"leaf{plane}{rail}.{g}"
                topo.add_node(leaf, "switch", latency=switch_latency, tier=1, rail=rail, plane=plane)
                if joined:
                    down = min(spl, servers - g * spl) * port_bandwidth
                    for s in range(spines):
                        topo.add_link(leaf, f"spine{s}", bandwidth=down / (spines * oversubscription),
                                      latency=link_latency, tier="spine")
    for server in range(servers):
        gpus = _server(topo, server, gpus_per_server, device, nvlink_bandwidth, nvlink_latency, nvswitch_latency,
                       nvls)
        for rail, gpu in enumerate(gpus):
            nic = f"nic{server}.{rail}"
            topo.add_node(nic, "nic", server=server, rail=rail)
            topo.add_link(gpu, nic, bandwidth=pcie_bandwidth, latency=pcie_latency, tier="pcie")
            for plane in planes:
                topo.add_link(nic, f"leaf{plane}{rail}.{server // spl}", bandwidth=port_bandwidth,
                              latency=link_latency, tier="leaf", plane=plane)
    topo.check()
    return topo


@validate_call(**GENERATOR_CALL)
def torus(
    dims: Annotated[list[Annotated[int, Field(ge=2)]], Field(min_length=1, max_length=3)] = [4, 4],  # noqa: B006
    bandwidth: PositiveBandwidth = 50e9,
    latency: NonNegativeDuration = 500e-9,
    device: Any = "h100_sxm",
) -> Topology:
    """A 1-, 2- or 3-D torus of devices with wrap-around links (a dimension of 2 has one link)."""
    shape = tuple(dims)
    _expect('dims', dims, math.prod(shape) * (1 + len(shape)))
    topo = Topology("torus" + "x".join(map(str, shape)), f"{'x'.join(map(str, shape))} torus")
    coords = list(itertools.product(*(range(d) for d in shape)))
    index = {c: i for i, c in enumerate(coords)}
    for i, c in enumerate(coords):
        topo.add_node(f"gpu{i}", "device", device=device, forwards=True, coord=c)
    for c in coords:
        for axis, size in enumerate(shape):
            nxt = list(c)
            nxt[axis] = (c[axis] + 1) % size
            a, b = f"gpu{index[c]}", f"gpu{index[tuple(nxt)]}"
            if not topo.has_link(a, b):
                topo.add_link(a, b, bandwidth=bandwidth, latency=latency)
    topo.check()
    return topo


@validate_call(**GENERATOR_CALL)
def home_router_edge(
    devices: Annotated[int, Field(ge=2)] = 8,
    bandwidth: PositiveBandwidth = 300e6 / 8,
    latency: NonNegativeDuration = 1e-3,
    devices_per_router: PositiveInt = 1,
    device: Any = "edge_cpu_8core",
) -> Topology:
    """Edge devices behind home routers that meet at one core router (TPI-LLM's testbed).

    Every link runs at ``bandwidth`` with ``latency``; with one device per
    router any device-to-device route is 4 links. ``devices_per_router > 1``
    puts several devices behind one router (2 links between them).
    """
    _expect('devices', devices, 3 * devices)
    topo = Topology(f"edge{devices}", f"{devices} edge devices behind home routers")
    topo.add_node("core", "router")
    names = _devices(topo, devices, device, prefix="dev")
    for i, name in enumerate(names):
        router = f"router{i // devices_per_router}"
        if not topo.has_node(router):
            topo.add_node(router, "router")
            topo.add_link(router, "core", bandwidth=bandwidth, latency=latency)
        topo.add_link(name, router, bandwidth=bandwidth, latency=latency)
    topo.check()
    return topo


@validate_call(**GENERATOR_CALL)
def wan(
    datacenters: Annotated[int, Field(ge=2)] = 2,
    devices_per_dc: PositiveInt = 8,
    local_bandwidth: PositiveBandwidth = 400e9 / 8,
    local_latency: NonNegativeDuration = 1e-6,
    wan_bandwidth: PositiveBandwidth = 10e9 / 8,
    wan_latency: NonNegativeDuration = 10e-3,
    device: Any = "h100_sxm",
) -> Topology:
    """Data centres, each a switch of devices behind a gateway, joined pairwise by WAN links."""
    _expect('devices_per_dc', devices_per_dc, 3 * datacenters * devices_per_dc + datacenters ** 2)
    topo = Topology(f"wan{datacenters}x{devices_per_dc}",
                    f"{datacenters} data centres x {devices_per_dc} devices, WAN between gateways")
    for dc in range(datacenters):
        topo.add_node(f"dc{dc}.sw", "switch", dc=dc)
        topo.add_node(f"dc{dc}.gw", "router", dc=dc)
        topo.add_link(f"dc{dc}.sw", f"dc{dc}.gw", bandwidth=devices_per_dc * local_bandwidth, latency=local_latency)
        for name in _devices(topo, devices_per_dc, device, start=dc * devices_per_dc, dc=dc):
            topo.add_link(name, f"dc{dc}.sw", bandwidth=local_bandwidth, latency=local_latency)
    for a, b in itertools.combinations(range(datacenters), 2):
        topo.add_link(f"dc{a}.gw", f"dc{b}.gw", bandwidth=wan_bandwidth, latency=wan_latency, tier="wan")
    topo.check()
    return topo


GENERATORS: dict[str, Callable[..., Topology]] = {
    "ring": ring,
    "fully_connected": fully_connected,
    "switch": switch,
    "nvswitch_node": nvswitch_node,
    "leaf_spine": leaf_spine,
    "fat_tree": fat_tree,
    "rail_optimized": rail_optimized,
    "torus": torus,
    "home_router_edge": home_router_edge,
    "wan": wan,
    "dragonfly": dragonfly,
}


def build(generator: str, params: dict[str, Any] | None = None, *, field: str = "topology") -> Topology:
    """Call the generator named ``generator`` with ``params``; errors name ``field``."""
    from commsim.errors import ConfigError

    if generator not in GENERATORS:
        raise ConfigError(field=f"{field}.generator", value=generator, rule="is not a topology generator",
                          fix=f"use one of {', '.join(GENERATORS)}")
    known = list(inspect.signature(GENERATORS[generator]).parameters)
    for name in params or {}:
        if name not in known:
            raise ConfigError(field=f"{field}.params.{name}", rule=f"is not a parameter of the {generator} generator",
                              fix=f"use one of {', '.join(known)}")
    try:
        return GENERATORS[generator](**(params or {}))
    except ValidationError as exc:
        raise config_error_from(exc, prefix=f"{field}.params") from None
    except ConfigError as exc:
        raise exc.with_prefix(f"{field}.params") if not exc.field.startswith(field) else exc from None
