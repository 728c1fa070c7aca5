"""A dragonfly of multi-GPU servers (HPE Slingshot style): switches in all-to-all groups, groups joined by global links.

Each server holds ``gpus_per_server`` GPUs joined pairwise by NVLink and
``nics_per_server`` NICs; GPU ``g`` reaches NIC ``g * nics / gpus`` over PCIe
(GPUs share a NIC when there are fewer NICs than GPUs). NICs of
``servers_per_switch`` consecutive servers hang off one switch; ``switches_per_group``
switches form a group with a link between every pair; every pair of groups is
joined by ``global_links`` links spread over the groups' switches. Servers fill
switches and groups in order, so small jobs stay inside one switch or group as a
scheduler would place them. Routing is minimal (shortest path): at most one
global hop.

>>> topo = dragonfly(servers=8, servers_per_switch=2, switches_per_group=2)
>>> len(topo.devices), topo.summary()["switch"]
(32, 4)
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Any, Literal

from pydantic import Field, validate_call

from commsim.network._params import GENERATOR_CALL, NonNegativeDuration, PositiveBandwidth, PositiveInt
from commsim.network.pcie_paths import DEFAULT_GPU_PATH, GpuPath
from commsim.network.topology import Topology
from commsim.units import Bytes

__all__ = ["dragonfly"]



@validate_call(**GENERATOR_CALL)
def dragonfly(
    servers: PositiveInt = 2,
    gpus_per_server: PositiveInt = 4,
    nics_per_server: PositiveInt = 2,
    device: Any = "a100_sxm4_40gb",
    nvlink_bandwidth: PositiveBandwidth = 100e9,
    nvlink_latency: NonNegativeDuration = 350e-9,
    pcie_bandwidth: PositiveBandwidth = 31.5e9,
    pcie_latency: NonNegativeDuration = 500e-9,
    nic_bandwidth: PositiveBandwidth = 25e9,
    servers_per_switch: PositiveInt = 16,
    switches_per_group: PositiveInt = 8,
    local_bandwidth: PositiveBandwidth = 25e9,
    global_links: PositiveInt = 4,
    global_bandwidth: PositiveBandwidth = 25e9,
    link_latency: NonNegativeDuration = 500e-9,
    switch_latency: NonNegativeDuration = 350e-9,
    gpu_nic_path: GpuPath = DEFAULT_GPU_PATH,
    host_cpu: Literal["intel", "amd"] = "intel",
    eager_limit: Annotated[Bytes, Field(gt=0)] = math.inf,
) -> Topology:
    """``servers`` servers on a dragonfly; bandwidths are per direction, bytes/s (or unit strings).

    ``nvlink_bandwidth`` joins every pair of GPUs of a server (A100 4-GPU boards:
    4 NVLink 3 links x 25 GB/s per pair); ``local_bandwidth`` every pair of
    switches of a group; ``global_links`` links of ``global_bandwidth`` every pair
    of groups. ``gpu_nic_path`` is NCCL's PCIe path type between a GPU and its NIC
    (``PHB``: both on the CPU's root ports, as on nodes without PCIe switches),
    recorded on every NIC (see :mod:`commsim.network.pcie_paths`), as is ``host_cpu``,
    the vendor of the CPU the NICs hang off (NCCL's tuner constants depend on it), and
    ``eager_limit``, bytes: the largest message the NICs' transport sends eagerly
    (larger ones pay a rendezvous, see :func:`commsim.collectives.nccl.rendezvous_cost`;
    ``inf``: none).
    """
    from commsim.errors import TopologyError

    if nics_per_server > gpus_per_server or gpus_per_server % nics_per_server:
        raise TopologyError(field="nics_per_server", value=nics_per_server,
                            rule=f"must divide gpus_per_server ({gpus_per_server})",
                            fix="give 1 NIC per GPU or one per group of GPUs of equal size")
    switches = -(-servers // servers_per_switch)
    groups = -(-switches // switches_per_group)
    topo = Topology(f"dragonfly{servers}x{gpus_per_server}",
                    f"{servers} servers x {gpus_per_server} GPUs, {nics_per_server} NICs each, dragonfly of "
                    f"{groups} group(s) of up to {switches_per_group} switches")
    for w in range(switches):
        topo.add_node(f"sw{w}", "switch", latency=switch_latency, tier=1, group=w // switches_per_group)
    for g in range(groups):
        members = [w for w in range(switches) if w // switches_per_group == g]
        for a, b in itertools.combinations(members, 2):
            topo.add_link(f"sw{a}", f"sw{b}", bandwidth=local_bandwidth, latency=link_latency, tier="local")
    wires: dict[tuple[int, int], int] = {}
    for ga, gb in itertools.combinations(range(groups), 2):
        ends_a = [w for w in range(switches) if w // switches_per_group == ga]
        ends_b = [w for w in range(switches) if w // switches_per_group == gb]
        for k in range(global_links):
            # spread the links of a pair over both groups' switches, offset by the peer group so that links to
            # different groups leave from different switches
            pair = (ends_a[(k + gb) % len(ends_a)], ends_b[(k + ga) % len(ends_b)])
            wires[pair] = wires.get(pair, 0) + 1
    for (a, b), count in wires.items():
        # parallel cables between the same two switches act as one link of their summed bandwidth
        topo.add_link(f"sw{a}", f"sw{b}", bandwidth=count * global_bandwidth, latency=link_latency, tier="global")
    per_nic = gpus_per_server // nics_per_server
    for s in range(servers):
        names = []
        for g in range(gpus_per_server):
            name = f"gpu{s * gpus_per_server + g}"
            topo.add_node(name, "device", device=device, server=s, local_rank=g)
            names.append(name)
        for a, b in itertools.combinations(names, 2):
            topo.add_link(a, b, bandwidth=nvlink_bandwidth, latency=nvlink_latency, tier="nvlink")
        for n in range(nics_per_server):
            nic = f"nic{s}.{n}"
            transport = {"eager_limit": eager_limit} if math.isfinite(eager_limit) else {}
            topo.add_node(nic, "nic", server=s, rail=n, gpu_path=gpu_nic_path, host_cpu=host_cpu, **transport)
            topo.add_link(nic, f"sw{s // servers_per_switch}", bandwidth=nic_bandwidth, latency=link_latency,
                          tier="edge")
            for g in range(n * per_nic, (n + 1) * per_nic):
                topo.add_link(names[g], nic, bandwidth=pcie_bandwidth, latency=pcie_latency, tier="pcie")
    topo.check()
    return topo
