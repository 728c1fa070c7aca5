"""An NCCL-like cost model: protocols, a tuner that picks algorithm x protocol, and its parameters.

NCCL moves data with one of three protocols, trading latency for bandwidth:

* **LL** (low latency): 8-byte stores of 4 bytes of data and a 4-byte flag, so
  at most half the wire carries payload, and little more than one hop of latency
  per step;
* **LL128**: 128-byte lines of 120 bytes of data and an 8-byte flag (120/128 of
  the wire), with more latency per step;
* **Simple**: plain chunks with a fence per step: the full wire, the largest latency.

For each collective NCCL predicts ``time = base latency + steps x hop latency +
bytes / bandwidth`` for every algorithm x protocol and runs the fastest. This
module does the same with costs that describe *this simulator's* schedules
exactly (so the tuner and the fit agree with what :mod:`commsim.collectives.nccl_run`
simulates):

``T = launch_p + steps x max(local hop, remote hop)``, a hop costing
``hop latency_p + route latency + chunk / (link bandwidth x efficiency x factor_p)``,

where ``launch_p``, the hop latencies and ``factor_p`` belong to the protocol and
``efficiency`` to the link class (local: inside a server, e.g. NVLink; remote:
between servers, e.g. InfiniBand). Step counts and chunk sizes come from the
algorithm, so the scale dependence is the algorithm's, not a fitted one:

* ``ring``: ``2 (n - 1)`` steps of ``bytes / (n x channels)`` for all-reduce
  (``n - 1`` for reduce-scatter and all-gather), one channel per rail across
  servers, each step as slow as its slowest hop; a step's slices hide part of its
  hop latency, which is then paid once per call (:func:`ring_latency`);
* ``tree`` (all-reduce across servers): NCCL's chain inside a server and double
  binary tree across servers, run as the registry's ``hierarchical`` schedule
  with an inter-node double binary tree (same hop count ``2 (L - 1)`` local +
  ``2 log2 M`` remote, same rails); timed by its closed form plus ``launch_p``.

A single rank copies its buffer (read + write on the device memory).

Defaults are NCCL's own ring constants, from ``src/graph/tuning.cc`` of NCCL
v2.11/v2.12 (``baseLat`` and ``hwLat`` in microseconds, NVLink row for local and
NET row for remote hops; the ring LL bus bandwidth x 1/4 for all-reduce and LL128
x 0.92): LL 3.6 / 0.47 / 2.7 us and factor 1/4, LL128 10.0 / 1.9 / 4.0 us and
0.92, Simple 8.4 / 3.4 / 9.6 us and 1. Link efficiencies default to 1; a
calibration (:mod:`commsim.collectives.calibrate`) replaces all of these.

>>> from commsim.network.loader import load_topology
>>> topo = load_topology("nvswitch_node:8,300GB/s")
>>> cluster = describe_cluster(topo, topo.devices)
>>> [tune(cluster, "all_reduce", size).protocol for size in (8.0, 2.0**22, 2.0**30)]
['LL', 'LL128', 'Simple']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from commsim.collectives._registry import ALGORITHMS
from commsim.collectives.nccl_tuner import nccl_pick, uses_nccl_view
from commsim.devices.spec import device_spec
from commsim.errors import ConfigError
from commsim.network.pcie_paths import DEFAULT_GPU_PATH, path_worse_than
from commsim.network.topology import Topology

__all__ = [
    "NCCL_DEFAULTS",
    "NCCL_OPS",
    "LL128_GPU_PATH",
    "P2P_NET_CHUNK",
    "P2P_NVL_CHUNK",
    "P2P_OPS",
    "PIPELINE_CHUNK",
    "PROTOCOLS",
    "RAMP_BYTES",
    "RING_SLICES",
    "RING_SLICE_BYTES",
    "WIRE_BYTES",
    "Choice",
    "Cluster",
    "NcclParameters",
    "ProtocolCosts",
    "RingLatency",
    "describe_cluster",
    "model_algorithms",
    "nvls_chunks",
    "nvls_stages",
    "p2p_channels",
    "p2p_message",
    "p2p_rates",
    "p2p_remote_hop_latency",
    "p2p_remote_peers",
    "p2p_serial_latency",
    "ring_channels",
    "ring_latency",
    "tree_remote_hop_latency",
    "predict",
    "predict_many",
    "protocols_for",
    "protocols_of",
    "rendezvous_cost",
    "resolve_parameters",
    "schedule_of",
    "steps_of",
    "tune",
]

PROTOCOLS: tuple[str, ...] = ("LL", "LL128", "Simple")
"""NCCL's protocols, lowest latency first."""

NCCL_OPS: tuple[str, ...] = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "sendrecv")
"""Collectives the model covers: rings, trees and NVLS for the first three, point-to-point for the others."""

P2P_OPS: tuple[str, ...] = ("all_to_all", "sendrecv")
"""Collectives NCCL runs as point-to-point sends and receives (no ring, no tree)."""

RAMP_BYTES: dict[str, float] = {"LL": 512 * 8.0, "LL128": 640 * 8.0, "Simple": 512 * 64.0}
"""Bytes per rank one ring channel needs before NCCL adds another (threads x per-thread threshold).

NCCL drops channels while ``bytes < channels x threads x threshold x ranks`` (the
thread thresholds of ``src/graph/tuning.cc`` and ``enqueue.cc``: 8 B for LL and
LL128, 64 B for Simple, with 512/640/512 threads), so a small message runs on fewer
rings and, across servers, on fewer NICs."""

P2P_NVL_CHUNK = 512.0 * 2**10
"""Bytes of one point-to-point step on one server (NCCL's ``NCCL_P2P_NVL_CHUNKSIZE`` default, ``src/init.cc``)."""

P2P_NET_CHUNK = 128.0 * 2**10
"""Most bytes of one point-to-point network message: a peer's data crosses the network in steps of
``NCCL_P2P_NET_CHUNKSIZE`` (default 128 KiB, ``src/init.cc``), one network send each."""

RING_SLICES: dict[str, int] = {"LL": 1, "LL128": 1, "Simple": 2}
"""Slices a ring step's chunk is sent in (Simple: ``ALLREDUCE_CHUNKSTEPS / ALLREDUCE_SLICESTEPS`` of NCCL)."""

RING_SLICE_BYTES: dict[str, float] = {"LL": 32.0 * 2**10, "LL128": 576_000.0, "Simple": 1.0 * 2**20}
"""Most data bytes of one ring slice: a step of the protocol's buffer (``buffSize / NCCL_STEPS``; LL carries 8 data
bytes per 16-byte line of its 512 KiB buffer, LL128 120 of 128 bytes of its 4.9 MB one), two steps for Simple
(``ALLREDUCE_SLICESTEPS``, 4 MiB buffer), from NCCL's ``src/include/device.h``, ``collectives.h`` and ``init.cc``."""

WIRE_BYTES: dict[str, float] = {"LL": 2.0, "LL128": 128.0 / 120.0, "Simple": 1.0}
"""Bytes on the wire per data byte: LL's 16-byte lines carry 8 data bytes, LL128's 128-byte lines 120, Simple all."""

PIPELINE_CHUNK = 4.0 * 2**20
"""Bytes per NVLS pipeline chunk: the reduction and the multicast of consecutive chunks overlap."""


@dataclass(frozen=True)
class ProtocolCosts:
    """What one protocol costs: seconds and a bandwidth fraction.

    ``launch`` is paid once per collective (kernel launch and set-up);
    ``hop_latency`` per step on a hop inside a server and ``remote_hop_latency``
    on a hop between servers (on top of the route's own latency);
    ``bandwidth_factor`` is the share of the Simple protocol's bandwidth the
    protocol reaches (LL's payload is at most half of the wire).
    """

    launch: float
    hop_latency: float
    remote_hop_latency: float
    bandwidth_factor: float

    def __post_init__(self) -> None:
        for name in ("launch", "hop_latency", "remote_hop_latency"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(field=name, value=value, rule="must be a finite time >= 0",
                                  fix="give a latency in seconds, e.g. 2e-6")
        if not 0 < self.bandwidth_factor <= 1:
            raise ConfigError(field="bandwidth_factor", value=self.bandwidth_factor, rule="must be in (0, 1]",
                              fix="give the protocol's share of the Simple bandwidth, e.g. 0.25")


@dataclass(frozen=True)
class NcclParameters:
    """Protocol costs, link-class efficiencies and the single-rank copy.

    ``local_efficiency`` / ``remote_efficiency``: fraction of a local / remote
    link's bandwidth the Simple protocol achieves. ``copy_launch`` and
    ``copy_efficiency``: a one-rank collective copies its buffer on the device
    (``2 x bytes`` of memory traffic at ``efficiency x`` the memory bandwidth).
    ``nvls_efficiency`` / ``nvls_latency``: NVLink SHARP (NVLS) all-reduce inside
    a server, the fraction of the NVLink bandwidth it reaches and its extra latency
    (NCCL: 0.85 on Hopper, 25 us). ``p2p_efficiency``: fraction of a NIC the
    point-to-point collectives (all-to-all, send/recv) reach across servers;
    ``p2p_local_efficiency``: the same inside a server, as a fraction of the
    NVLink (``None``: ``local_efficiency``, as the rings reach);
    ``p2p_peer_bandwidth``: the most one peer connection moves across servers,
    bytes/s (NCCL spreads a peer's data over only a few channels).
    ``p2p_channels``: NCCL's point-to-point channel count (``p2pnChannels``, 32 on
    an NVSwitch H100 server); ``p2p_channel_bandwidth``: the most one of those
    channels (one thread block copying) moves inside a server, bytes/s
    (``inf``: no cap); with it a small send uses few channels (:func:`p2p_channels`).
    ``p2p_peer_latency``: what every remote peer of a point-to-point call adds in
    series, seconds (the host's proxy thread serves them in turn, :func:`p2p_serial_latency`).
    ``rendezvous_latency``: what one network message above the NIC's eager limit
    (``Cluster.eager_limit``) costs on top, seconds: the transport's rendezvous
    handshake before the payload moves (:func:`rendezvous_cost`).
    ``algorithm`` / ``protocol``: what the run's environment forced
    (``NCCL_ALGO`` / ``NCCL_PROTO``), ``auto`` for NCCL's tuner. ``nccl_version``:
    the NCCL the runs used (``""``: not known); where its tuning constants are known
    NCCL's own tuner view picks ring or tree across servers (:func:`tune`).
    ``source`` says where the numbers come from.
    """

    protocols: Mapping[str, ProtocolCosts]
    local_efficiency: float = 1.0
    remote_efficiency: float = 1.0
    copy_launch: float = 4e-6
    copy_efficiency: float = 0.8
    nvls_efficiency: float = 0.85
    nvls_latency: float = 25e-6
    p2p_efficiency: float = 1.0
    p2p_local_efficiency: float | None = None
    p2p_peer_bandwidth: float = math.inf
    p2p_channels: int = 32
    p2p_channel_bandwidth: float = math.inf
    p2p_peer_latency: float = 0.0
    rendezvous_latency: float = 0.0
    algorithm: str = "auto"
    protocol: str = "auto"
    nccl_version: str = ""
    source: str = "NCCL defaults"

    def __post_init__(self) -> None:
        missing = [p for p in PROTOCOLS if p not in self.protocols]
        if missing:
            raise ConfigError(field="protocols", value=sorted(self.protocols), rule=f"lacks {', '.join(missing)}",
                              fix=f"give costs for each of {', '.join(PROTOCOLS)}")
        for name in ("local_efficiency", "remote_efficiency", "copy_efficiency"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ConfigError(field=name, value=value, rule="must be in (0, 1]",
                                  fix="give the achieved fraction of the link or memory bandwidth, e.g. 0.8")
        for name in ("nvls_efficiency", "p2p_efficiency", "p2p_local_efficiency"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ConfigError(field=name, value=value, rule="must be in (0, 1]",
                                  fix="give the achieved fraction of the link bandwidth, e.g. 0.8")
        if not self.p2p_peer_bandwidth > 0:
            raise ConfigError(field="p2p_peer_bandwidth", value=self.p2p_peer_bandwidth, rule="must be > 0",
                              fix="give bytes/s (a unit string in a calibration file, e.g. '25 GB/s')")
        if not self.p2p_channel_bandwidth > 0:
            raise ConfigError(field="p2p_channel_bandwidth", value=self.p2p_channel_bandwidth, rule="must be > 0",
                              fix="give bytes/s (a unit string in a calibration file, e.g. '20 GB/s')")
        if not (isinstance(self.p2p_channels, int) and self.p2p_channels >= 1):
            raise ConfigError(field="p2p_channels", value=self.p2p_channels, rule="must be a whole number >= 1",
                              fix="give NCCL's point-to-point channel count, e.g. 32 (NCCL prints it at init)")
        if not (math.isfinite(self.p2p_peer_latency) and self.p2p_peer_latency >= 0):
            raise ConfigError(field="p2p_peer_latency", value=self.p2p_peer_latency, rule="must be a finite time >= 0",
                              fix="give the serial cost of one remote peer in seconds, e.g. 10e-6")
        if not (math.isfinite(self.rendezvous_latency) and self.rendezvous_latency >= 0):
            raise ConfigError(field="rendezvous_latency", value=self.rendezvous_latency,
                              rule="must be a finite time >= 0",
                              fix="give the cost of one rendezvous handshake in seconds, e.g. 20e-6")
        if not (math.isfinite(self.nvls_latency) and self.nvls_latency >= 0):
            raise ConfigError(field="nvls_latency", value=self.nvls_latency, rule="must be a finite time >= 0",
                              fix="give a latency in seconds, e.g. 25e-6")
        if self.nccl_version and not all(part.isdigit() for part in self.nccl_version.split(".")):
            raise ConfigError(field="nccl_version", value=self.nccl_version, rule="is not an NCCL version",
                              fix="give the version the runs used, e.g. 2.21.5 (NCCL prints it at init), or leave "
                                  "it empty")
        if self.protocol not in ("auto", *PROTOCOLS):
            raise ConfigError(field="protocol", value=self.protocol, rule="is not an NCCL protocol",
                              fix=f"use auto or one of {', '.join(PROTOCOLS)}")
        if not (math.isfinite(self.copy_launch) and self.copy_launch >= 0):
            raise ConfigError(field="copy_launch", value=self.copy_launch, rule="must be a finite time >= 0",
                              fix="give the launch latency of a device copy in seconds, e.g. 4e-6")

    def with_source(self, source: str) -> NcclParameters:
        """The same parameters labelled with ``source``."""
        return replace(self, source=source)


NCCL_DEFAULTS = NcclParameters(
    protocols={
        # NCCL v2.11/v2.12 src/graph/tuning.cc: ring baseLat, hwLat[NVLINK], hwLat[NET] (us); ring LL busBw x 1/4
        # for all-reduce, LL128 x 0.92
        "LL": ProtocolCosts(launch=3.6e-6, hop_latency=0.47e-6, remote_hop_latency=2.7e-6, bandwidth_factor=0.25),
        "LL128": ProtocolCosts(launch=10.0e-6, hop_latency=1.9e-6, remote_hop_latency=4.0e-6,
                               bandwidth_factor=0.92),
        "Simple": ProtocolCosts(launch=8.4e-6, hop_latency=3.4e-6, remote_hop_latency=9.6e-6, bandwidth_factor=1.0),
    },
    # assumptions, not NCCL numbers: a device-to-device copy launches in ~4 us and reaches ~80 % of HBM bandwidth
    copy_launch=4e-6,
    copy_efficiency=0.8,
)
"""The uncalibrated model: NCCL's published tuning constants on the topology's raw link rates."""


def resolve_parameters(parameters: Any) -> NcclParameters:
    """``None`` (NCCL defaults), :class:`NcclParameters`, or a calibration file path."""
    if parameters is None:
        return NCCL_DEFAULTS
    if isinstance(parameters, NcclParameters):
        return parameters
    if isinstance(parameters, (str, Path)):
        from commsim.collectives.calibrate import load_calibration

        return load_calibration(parameters)
    raise ConfigError(field="calibration", value=parameters, rule="is not a calibration",
                      fix="give a calibration YAML file (commsim calibrate nccl-tests ...) or nothing for NCCL's "
                          "defaults")


# ---------------------------------------------------------------------------------------------------- the cluster
@dataclass(frozen=True)
class Cluster:
    """What the model needs to know about a group of ranks on a topology.

    ``server[i]`` and ``local[i]`` are rank ``i``'s server (0..servers-1, in order
    of appearance) and its index inside the server. Bandwidths are bytes/s per
    direction of one rank's path to a local / remote peer, latencies the routes'
    seconds. ``rails`` is how many ranks of a server can reach other servers on
    disjoint bottlenecks (one NIC per GPU: all of them). ``memory_bandwidth`` is
    rank 0's device memory bandwidth (for the one-rank copy). ``nvls``: the
    switch inside the servers reduces and multicasts (NVLink SHARP, a switch
    node with ``nvls: true``); ``switches`` names that switch of every server.
    ``local_port_bandwidth``: what rank 0 can send to all its local peers at once,
    bytes/s (the sum of the distinct first links of its paths to them: one
    NVSwitch port, or every link of a direct NVLink mesh). ``gpu_path``: NCCL's
    PCIe path type between a GPU and its NIC (the worst over rank 0's server,
    from the NICs' ``gpu_path``; :mod:`commsim.network.pcie_paths`). ``device``: rank
    0's device name; ``host_cpu``: the vendor of the CPU its NIC hangs off (``intel``
    unless the NIC says ``amd``); both feed NCCL's tuner view
    (:mod:`commsim.collectives.nccl_tuner`). ``eager_limit``: the largest network
    message rank 0's NIC transport sends eagerly, bytes (the NIC's ``eager_limit``;
    ``inf``: no rendezvous), see :func:`rendezvous_cost`.
    """

    ranks: int
    servers: int
    ranks_per_server: int
    server: np.ndarray = field(repr=False)
    local: np.ndarray = field(repr=False)
    local_bandwidth: float
    remote_bandwidth: float
    local_latency: float
    remote_latency: float
    rails: int
    memory_bandwidth: float
    nvls: bool = False
    switches: tuple[str, ...] = ()
    local_port_bandwidth: float = math.nan
    gpu_path: str = DEFAULT_GPU_PATH
    device: str = ""
    host_cpu: str = "intel"
    eager_limit: float = math.inf


def describe_cluster(topology: Topology, group: list[str]) -> Cluster:
    """Measure the paths of ``group`` (device names, by rank) on ``topology``.

    Servers come from the devices' ``server`` attribute (devices without one
    count as one server).
    """
    from commsim.network.routing import Router

    if not group:
        raise ConfigError(field="ranks", value=0, rule="is an empty group", fix="give at least one rank")
    labels = [topology.node_attributes(g).get("server", 0) for g in group]
    order: dict[Any, int] = {}
    server = np.array([order.setdefault(lab, len(order)) for lab in labels], dtype=np.int64)
    local = np.zeros(len(group), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, s in enumerate(server.tolist()):
        local[i] = seen.get(s, 0)
        seen[s] = local[i] + 1
    servers = len(order)
    per_server = int(max(seen.values()))
    router = Router(topology, policy="shortest")
    compiled = topology.compile()

    def measure(a: str, b: str) -> tuple[float, float, tuple[int, ...]]:
        path = router.path(a, b)
        bandwidth = float(compiled.edge_bandwidth[list(path)].min()) if path else math.inf
        return bandwidth, router.latency(path), path

    local_bw, local_lat, nvls = math.inf, 0.0, False
    pair = next(((i, j) for i in range(len(group)) for j in range(i + 1, len(group)) if server[i] == server[j]),
                None)
    if pair is not None:
        local_bw, local_lat, local_path = measure(group[pair[0]], group[pair[1]])
        # NVLS needs every local hop to go through one switch that can reduce and multicast
        inner = router.nodes_of(local_path)[1:-1]
        nvls = len(inner) == 1 and bool(topology.node_attributes(compiled.names[inner[0]]).get("nvls", False))
    port = math.nan
    if pair is not None:
        firsts = {router.path(group[0], group[j])[0] for j in range(1, len(group)) if server[j] == server[0]}
        port = float(compiled.edge_bandwidth[list(firsts)].sum()) if firsts else math.nan
    switches: list[str] = []
    for s in range(len(order) if nvls else 0):
        members = [group[i] for i in range(len(group)) if server[i] == s]
        inner = router.nodes_of(router.path(members[0], members[1]))[1:-1] if len(members) > 1 else []
        if len(inner) != 1 or not topology.node_attributes(compiled.names[inner[0]]).get("nvls", False):
            nvls, switches = False, []
            break
        switches.append(compiled.names[inner[0]])
    remote_bw, remote_lat, rails, gpu_path, host_cpu = math.inf, 0.0, 1, DEFAULT_GPU_PATH, "intel"
    eager_limit = math.inf
    if servers > 1:
        first = [i for i in range(len(group)) if server[i] == 0]
        second = {int(local[i]): i for i in range(len(group)) if server[i] == 1}
        bottlenecks = set()
        for i in first:
            peer = second.get(int(local[i]), next(iter(second.values())))
            bw, lat, path = measure(group[i], group[peer])
            remote_bw, remote_lat = min(remote_bw, bw), max(remote_lat, lat)
            for node in router.nodes_of(path):
                if compiled.kinds[node] == "nic":
                    # the first NIC on the way out is this GPU's own
                    nic = topology.node_attributes(compiled.names[node])
                    own = nic.get("gpu_path", DEFAULT_GPU_PATH)
                    gpu_path = own if path_worse_than(own, gpu_path) else gpu_path
                    host_cpu = str(nic.get("host_cpu", host_cpu))
                    eager_limit = min(eager_limit, float(nic.get("eager_limit", math.inf)))
                    break
            edges = np.asarray(path, dtype=np.int64)
            bottlenecks.add(int(edges[np.argmin(compiled.edge_bandwidth[edges])]))
        rails = max(1, len(bottlenecks))
    spec = device_spec(topology.device_spec(group[0]), field=f"devices.{group[0]}")
    return Cluster(ranks=len(group), servers=servers, ranks_per_server=per_server, server=server, local=local,
                   local_bandwidth=local_bw, remote_bandwidth=remote_bw, local_latency=local_lat,
                   remote_latency=remote_lat, rails=rails, memory_bandwidth=float(spec.memory_bandwidth),
                   nvls=nvls, switches=tuple(switches), local_port_bandwidth=port, gpu_path=gpu_path,
                   device=spec.name, host_cpu=host_cpu, eager_limit=eager_limit)


# ---------------------------------------------------------------------------------------------------- time models
def steps_of(op: str, n: int) -> int:
    """Ring steps of ``op`` on ``n`` ranks (all-reduce: 2 (n - 1); reduce-scatter, all-gather: n - 1)."""
    return 2 * (n - 1) if op == "all_reduce" else n - 1


def ring_channels(cluster: Cluster, nbytes: Any = None, protocol: str = "Simple") -> Any:
    """Channels the ring uses: one per rail across servers (so every NIC carries one), else one.

    With ``nbytes`` the channel ramp applies: a channel needs
    ``ranks x RAMP_BYTES[protocol]`` bytes, so small messages use fewer rings (and
    fewer NICs). Returns an int, or an array for an array of sizes.
    """
    full = cluster.rails if cluster.servers > 1 else 1
    if nbytes is None:
        return full
    ramp = np.floor(np.asarray(nbytes, dtype=float) / (cluster.ranks * RAMP_BYTES[protocol]))
    channels = np.clip(ramp, 1, full).astype(np.int64)
    return int(channels) if channels.ndim == 0 else channels


def rendezvous_cost(cluster: Cluster, params: NcclParameters, protocol: str, message: Any) -> Any:
    """Extra seconds of one network message of ``message`` data bytes sent with ``protocol``.

    A network transport sends a message up to its eager limit with its header;
    a larger one first needs a rendezvous (a handshake, then the receiver pulls
    the payload): ``params.rendezvous_latency`` on top. The wire size counts the
    protocol's flags (:data:`WIRE_BYTES`). Zero on one server.
    """
    wire = np.asarray(message, dtype=float) * WIRE_BYTES[protocol]
    if cluster.servers == 1:
        return np.zeros_like(wire)
    return np.where(wire > cluster.eager_limit, params.rendezvous_latency, 0.0)


@dataclass(frozen=True)
class RingLatency:
    """Per-step protocol latencies of a ring after the part its slices hide, and the part paid once (seconds).

    ``local`` / ``remote``: what every step still waits on a hop inside a server /
    between servers (the route's latency comes on top); ``once``: the rest, paid
    once per call (the pipeline's fill); ``remote_hop``: a step's whole protocol
    latency between servers before any is hidden (the rendezvous of its messages
    included, :func:`rendezvous_cost`). Arrays when sizes are.
    """

    local: Any
    remote: Any
    once: Any
    remote_hop: Any = 0.0


def _ring_rates(cluster: Cluster, channels: Any, params: NcclParameters, costs: ProtocolCosts) -> tuple[Any, Any]:
    """Bytes/s of one channel's hop inside a server and between servers (``inf`` where there is none)."""
    local: Any = math.inf
    if cluster.ranks_per_server > 1:
        # channels leaving the server at this rank do not use its local port
        sharing = channels if cluster.servers == 1 else np.maximum(1.0, channels - np.ceil(
            channels / cluster.ranks_per_server))
        local = cluster.local_bandwidth * params.local_efficiency * costs.bandwidth_factor / sharing
    remote: Any = math.inf
    if cluster.servers > 1:
        remote = cluster.remote_bandwidth * params.remote_efficiency * costs.bandwidth_factor / np.ceil(
            channels / cluster.rails)
    return local, remote


def ring_latency(cluster: Cluster, nbytes: Any, params: NcclParameters, protocol: str) -> RingLatency:
    """How much of a ring step's protocol latency the step's own slices hide.

    NCCL sends a ring step's chunk ``C`` in slices (Simple: two per chunk, at most
    ``RING_SLICE_BYTES``; LL and LL128: steps of their buffer, ``RING_SLICE_BYTES``
    of data each) and forwards a slice as soon as it has arrived, with up to
    ``NCCL_STEPS`` of them in flight: the latency of the next slice overlaps the
    transfer of the current one. Per step only ``max(0, latency - (C - slice) /
    rate)`` stays exposed; the hidden rest is paid once, when the pipeline fills.
    A step then takes ``max(latency + slice / rate, C / rate)`` instead of
    ``latency + C / rate``: latency-bound steps shorten by the transfer of the
    other slices, bandwidth-bound ones pay the latency only once per call. A slice
    is one network message: above the NIC's eager limit its rendezvous adds to the
    remote hop latency (:func:`rendezvous_cost`).
    """
    channels = np.asarray(ring_channels(cluster, nbytes, protocol), dtype=float)
    chunk = np.asarray(nbytes, dtype=float) / (cluster.ranks * channels)
    piece = np.minimum(chunk / RING_SLICES[protocol], RING_SLICE_BYTES[protocol])
    local_rate, remote_rate = _ring_rates(cluster, channels, params, params.protocols[protocol])
    costs = params.protocols[protocol]
    remote_hop = costs.remote_hop_latency + rendezvous_cost(cluster, params, protocol, piece)
    local = np.maximum(0.0, costs.hop_latency - (chunk - piece) / local_rate)
    remote = np.maximum(0.0, remote_hop - (chunk - piece) / remote_rate)
    hidden_local = costs.hop_latency - local if cluster.ranks_per_server > 1 else 0.0
    hidden_remote = remote_hop - remote if cluster.servers > 1 else 0.0
    return RingLatency(local=local, remote=remote, once=np.maximum(hidden_local, hidden_remote),
                       remote_hop=remote_hop)


def _ring_time(cluster: Cluster, op: str, nbytes: Any, costs: ProtocolCosts, params: NcclParameters,
               protocol: str) -> Any:
    n = cluster.ranks
    c = np.asarray(ring_channels(cluster, nbytes, protocol), dtype=float)
    chunk = nbytes / (n * c)
    local_rate, remote_rate = _ring_rates(cluster, c, params, costs)
    exposed = ring_latency(cluster, nbytes, params, protocol)
    per_step: Any = 0.0
    if cluster.ranks_per_server > 1:
        per_step = exposed.local + cluster.local_latency + chunk / local_rate
    if cluster.servers > 1:
        per_step = np.maximum(per_step, exposed.remote + cluster.remote_latency + chunk / remote_rate)
    return costs.launch + exposed.once + steps_of(op, n) * per_step


def tree_remote_hop_latency(cluster: Cluster, params: NcclParameters, protocol: str, nbytes: float) -> float:
    """A tree hop's protocol latency between servers, seconds: its rendezvous included.

    The tree pipelines the buffer in steps of the protocol's buffer (at most
    ``RING_SLICE_BYTES`` of data per channel, one channel per rail): one network
    message per step (:func:`rendezvous_cost`).
    """
    message = min(nbytes / max(1, cluster.rails), RING_SLICE_BYTES[protocol])
    return params.protocols[protocol].remote_hop_latency + float(rendezvous_cost(cluster, params, protocol, message))


def _tree_time(cluster: Cluster, op: str, nbytes: Any, costs: ProtocolCosts, params: NcclParameters,
               protocol: str) -> Any:
    from commsim.collectives.closed_form import hierarchical_all_reduce_time

    local = cluster.local_bandwidth * params.local_efficiency * costs.bandwidth_factor
    # every GPU carries its rail's share across servers: GPUs that share a NIC share its bandwidth
    remote = cluster.remote_bandwidth * min(1.0, cluster.rails / cluster.ranks_per_server) \
        * params.remote_efficiency * costs.bandwidth_factor
    times = [hierarchical_all_reduce_time(cluster.ranks, float(size), alpha=costs.hop_latency + cluster.local_latency,
                                          bandwidth=local, alpha_inter=cluster.remote_latency
                                          + tree_remote_hop_latency(cluster, params, protocol, float(size)),
                                          bandwidth_inter=remote, ranks_per_node=cluster.ranks_per_server,
                                          inter="tree", channels=1)
             for size in np.atleast_1d(nbytes).tolist()]
    return costs.launch + np.array(times).reshape(np.shape(nbytes))


def nvls_chunks(nbytes: float) -> int:
    """Pipeline chunks of an NVLS all-reduce of ``nbytes`` (chunks of ``PIPELINE_CHUNK``, at most 64)."""
    return int(min(64, max(1, math.ceil(nbytes / PIPELINE_CHUNK))))


def nvls_stages(cluster: Cluster, params: NcclParameters, costs: ProtocolCosts) -> tuple[float, float]:
    """Seconds per byte of a chunk: the NVLS reduce (and, alike, the multicast) and the exchange between servers.

    Every GPU sends the chunk to the switch, which reduces it, and the ``1 / L``
    share it is in charge of once more to be multicast; it receives that share
    reduced and the whole chunk multicast: ``(1 + 1 / L) chunk / (NVLink x
    nvls_efficiency)`` each way, the two ways overlapping (so NVLS reaches a busbw
    of ``2 (L - 1) / (L + 1)`` of NVLink, against ``1`` for a ring). Across servers each GPU carries ``1 / ranks_per_server`` of the
    chunk on its NIC ``2 (M - 1) / M`` times (a reduce-scatter and an all-gather
    among the ``M`` servers on its rail: once with two servers, which swap halves,
    nearly twice with many, as NCCL's tuner charges its tree).
    """
    intra = (1.0 + 1.0 / cluster.ranks_per_server) / (cluster.local_bandwidth * params.nvls_efficiency)
    if cluster.servers == 1:
        return intra, 0.0
    per_gpu_nic = cluster.remote_bandwidth * min(1.0, cluster.rails / cluster.ranks_per_server)
    trips = 2.0 * (cluster.servers - 1) / cluster.servers
    return intra, trips / (cluster.ranks_per_server * per_gpu_nic * params.remote_efficiency
                           * costs.bandwidth_factor)


def _nvls_time(cluster: Cluster, op: str, nbytes: Any, costs: ProtocolCosts, params: NcclParameters,
               protocol: str) -> Any:
    """NVLS (one server) and NVLS-tree (across servers): chunks pipelined through reduce, exchange, multicast."""
    intra, inter = nvls_stages(cluster, params, costs)
    latency = costs.launch + params.nvls_latency + 2 * cluster.local_latency
    if cluster.servers > 1:
        # the exchange between servers is two direct hops (scatter, gather) on the critical path
        latency += 2 * (costs.remote_hop_latency + cluster.remote_latency)
    out = []
    for size in np.atleast_1d(nbytes).tolist():
        k = nvls_chunks(size)
        stages = np.array([intra, inter, intra]) * size / k
        out.append(latency + k * stages.max() + stages.sum() - stages.max())
    return np.array(out).reshape(np.shape(nbytes))


def _pow2_down(x: int) -> int:
    return 1 << (max(1, x).bit_length() - 1)


def p2p_channels(cluster: Cluster, op: str, nbytes: float, params: NcclParameters) -> int:
    """Channels NCCL stripes one peer's point-to-point send of ``nbytes`` (the op's whole buffer) over, in one server.

    NCCL's rules for a communicator inside one server (``src/enqueue.cc``, v2.2x):
    a send starts on ``p2p_channels / ranks`` channels (halved to a power of two)
    and doubles them, up to ``p2p_channels``, while a channel's part exceeds 32
    steps of ``P2P_NVL_CHUNK`` (16 MiB); a tiny send uses one channel per eighth
    of a step. All-to-all sends ``1 / ranks`` of the buffer to each peer, send/recv
    all of it to one.
    """
    most = params.p2p_channels
    least = _pow2_down(most)
    while least * cluster.ranks > most and least > 1:
        least //= 2
    min_part, max_part = P2P_NVL_CHUNK / 8, P2P_NVL_CHUNK * 32
    peer_bytes = nbytes / cluster.ranks if op == "all_to_all" else nbytes
    channels = max(1, min(least, math.ceil(peer_bytes / min_part)))
    while peer_bytes / channels > max_part and channels <= most // 2:
        channels *= 2
    return channels


def p2p_rates(cluster: Cluster, op: str, params: NcclParameters, costs: ProtocolCosts,
              nbytes: Any = None) -> tuple[Any, Any]:
    """Bytes/s a rank's point-to-point traffic reaches inside its server and across servers.

    Inside a server a rank reaches ``p2p_local_efficiency`` of its NVLink port
    (all-to-all sends to every local peer at once; send/recv uses one path),
    and, in a one-server communicator given ``nbytes`` (the op's buffer), at most
    ``p2p_channel_bandwidth`` per channel of :func:`p2p_channels` per peer (an
    array of sizes gives arrays; across servers ``p2p_peer_bandwidth`` caps the
    peers instead). Across servers a GPU gets its share of the server's NICs (``rails /
    ranks_per_server`` of a NIC when GPUs share NICs) at ``p2p_efficiency``, and
    each peer connection at most ``p2p_peer_bandwidth``: all-to-all talks to
    ``ranks - ranks_per_server`` remote peers at once, send/recv to one.
    """
    efficiency = params.local_efficiency if params.p2p_local_efficiency is None else params.p2p_local_efficiency
    port = cluster.local_port_bandwidth if math.isfinite(cluster.local_port_bandwidth) else cluster.local_bandwidth
    local: Any = (port if op == "all_to_all" else cluster.local_bandwidth) * efficiency * costs.bandwidth_factor
    if nbytes is not None and math.isfinite(params.p2p_channel_bandwidth) and cluster.servers == 1:
        peers = cluster.ranks_per_server - 1 if op == "all_to_all" else 1
        sizes = np.asarray(nbytes, dtype=float)
        channels = np.array([p2p_channels(cluster, op, size, params) for size in sizes.ravel().tolist()],
                            dtype=float).reshape(sizes.shape)
        local = np.minimum(local, max(1, peers) * channels * params.p2p_channel_bandwidth)
        local = float(local) if np.ndim(local) == 0 else local
    # all-to-all: every GPU of a server sends at once and they share the NICs; send/recv: one GPU per server (the
    # last in rank order) sends to the next server, alone on its NIC
    shared = min(1.0, cluster.rails / cluster.ranks_per_server) if op == "all_to_all" else 1.0
    nic = cluster.remote_bandwidth * shared
    peers = cluster.ranks - cluster.ranks_per_server if op == "all_to_all" else 1
    remote = min(nic * params.p2p_efficiency * costs.bandwidth_factor, max(1, peers) * params.p2p_peer_bandwidth)
    return local, remote


def p2p_message(cluster: Cluster, op: str, nbytes: Any) -> Any:
    """Data bytes of one point-to-point network message for a call of ``nbytes`` (the op's buffer).

    All-to-all sends ``1 / ranks`` of the buffer to each peer, send/recv all of it
    to one; a peer's data crosses the network in messages of at most
    :data:`P2P_NET_CHUNK`. Arrays when sizes are.
    """
    peer = np.asarray(nbytes, dtype=float) / (cluster.ranks if op == "all_to_all" else 1)
    return np.minimum(peer, P2P_NET_CHUNK)


def p2p_remote_hop_latency(cluster: Cluster, params: NcclParameters, op: str, nbytes: Any) -> Any:
    """A point-to-point hop's protocol latency between servers, seconds: its messages' rendezvous included.

    Point-to-point sends go through the same network transport as ring and tree
    steps, so a message above the NIC's eager limit pays the rendezvous
    (:func:`rendezvous_cost`); a peer's later messages follow in the pipeline, so
    one rendezvous shows per call. Arrays when sizes are.
    """
    message = p2p_message(cluster, op, nbytes)
    return params.protocols["Simple"].remote_hop_latency + rendezvous_cost(cluster, params, "Simple", message)


def p2p_remote_peers(cluster: Cluster, op: str) -> int:
    """Peers in other servers one rank of a point-to-point call exchanges data with.

    All-to-all: ``ranks - ranks_per_server``; send/recv: one where a rank sends to
    another server, else none.
    """
    if cluster.servers == 1:
        return 0
    if op == "all_to_all":
        return cluster.ranks - cluster.ranks_per_server
    return int(bool(np.any(cluster.server != np.roll(cluster.server, -1))))


def p2p_serial_latency(cluster: Cluster, op: str, params: NcclParameters) -> float:
    """Seconds a point-to-point call spends on its remote peers one after another.

    The network transport has one proxy thread per GPU on the host: it posts and
    progresses every peer connection's network sends and receives in turn, while
    peers inside the server are reached by the GPU itself over NVLink. Each remote
    peer (:func:`p2p_remote_peers`) then costs ``p2p_peer_latency`` in series.
    """
    return p2p_remote_peers(cluster, op) * params.p2p_peer_latency


def _p2p_time(cluster: Cluster, op: str, nbytes: Any, costs: ProtocolCosts, params: NcclParameters,
              protocol: str) -> Any:
    """All-to-all: ``1/n`` of the buffer to every peer at once; send/recv: the buffer to the next rank."""
    n, per = cluster.ranks, cluster.ranks_per_server
    local_rate, remote_rate = p2p_rates(cluster, op, params, costs, nbytes)
    local_hop = costs.hop_latency + cluster.local_latency
    remote_hop = p2p_remote_hop_latency(cluster, params, op, nbytes) + cluster.remote_latency
    launch = costs.launch + p2p_serial_latency(cluster, op, params)
    if op == "all_to_all":
        local = local_hop + nbytes * (per - 1) / n / local_rate if per > 1 else 0.0
        remote = remote_hop + nbytes * (n - per) / n / remote_rate if cluster.servers > 1 else 0.0
        return launch + np.maximum(local, remote)
    crosses = bool(np.any(cluster.server != np.roll(cluster.server, -1)))
    return launch + (remote_hop + nbytes / remote_rate if crosses else local_hop + nbytes / local_rate)


TimeModel = Callable[[Cluster, str, Any, ProtocolCosts, NcclParameters, str], Any]


@dataclass(frozen=True)
class _Algorithm:
    """An NCCL algorithm: the registry schedule that runs it (``None``: its own driver), its ops, its time
    model, its protocols and where it applies."""

    schedule: str | None
    ops: tuple[str, ...]
    time: TimeModel
    applies: Callable[[Cluster], bool]
    protocols: tuple[str, ...] = PROTOCOLS


def _even_servers(cluster: Cluster) -> bool:
    counts = np.bincount(cluster.server)
    return cluster.servers > 1 and bool(np.all(counts == cluster.ranks_per_server))


_RING_OPS = ("all_reduce", "reduce_scatter", "all_gather")
_MODELS: dict[str, _Algorithm] = {
    "ring": _Algorithm("ring", _RING_OPS, _ring_time, lambda _c: True),
    # NCCL's tree: a chain inside each server and a double binary tree across servers, each tree carrying half the
    # data. The registry's closest schedule is `hierarchical` with an inter-node double binary tree: the same hop
    # count (2 (L - 1) local + 2 log2 M remote) and the same rails; NCCL uses it across servers only.
    "tree": _Algorithm("hierarchical", ("all_reduce",), _tree_time, _even_servers),
    # NVLink SHARP inside one server (NCCL disables plain NVLS across servers without CollNet) and NVLS-tree across
    # them; Simple protocol only, as in NCCL
    "nvls": _Algorithm(None, ("all_reduce",), _nvls_time,
                       lambda c: c.nvls and c.servers == 1 and c.ranks_per_server > 2, ("Simple",)),
    "nvls_tree": _Algorithm(None, ("all_reduce",), _nvls_time,
                            lambda c: c.nvls and _even_servers(c) and c.ranks_per_server > 2, ("Simple",)),
    "p2p": _Algorithm("direct", P2P_OPS, _p2p_time, lambda _c: True, ("Simple",)),
}
"""NCCL's algorithms by name."""


def model_algorithms(op: str, cluster: Cluster | None = None) -> list[str]:
    """NCCL algorithms the model can time and the simulator can run for ``op`` (on ``cluster``)."""
    return [name for name, a in _MODELS.items() if op in a.ops
            and (a.schedule is None or (op, a.schedule) in ALGORITHMS) and (cluster is None or a.applies(cluster))]


def protocols_of(algorithm: str) -> tuple[str, ...]:
    """Protocols NCCL runs ``algorithm`` with (NVLS and point-to-point: Simple only)."""
    return _MODELS[algorithm].protocols


LL128_GPU_PATH = "PXB"
"""The farthest GPU-NIC path over which NCCL's tuner enables LL128 across servers (``src/graph/tuning.cc``:
``typeInter <= PATH_PXB``, or ``PATH_PXN`` on Hopper, which is still nearer than the host bridge)."""


def protocols_for(algorithm: str, cluster: Cluster) -> tuple[str, ...]:
    """Protocols NCCL's tuner considers for ``algorithm`` on ``cluster`` (a forced protocol may still run others).

    Across servers NCCL enables LL128 only when the GPU reaches its NIC without
    crossing the CPU's host bridge (:data:`LL128_GPU_PATH`): LL128 relies on the
    128-byte stores of a line arriving together, which NCCL trusts only for NVLink
    and PCIe switches. GPUs on a CPU's root ports (``PHB``) then run LL and Simple.
    """
    protocols = protocols_of(algorithm)
    if cluster.servers > 1 and path_worse_than(cluster.gpu_path, LL128_GPU_PATH):
        protocols = tuple(p for p in protocols if p != "LL128")
    return protocols


def schedule_of(algorithm: str) -> str | None:
    """The registry schedule that runs NCCL's ``algorithm`` (``None``: a driver of its own)."""
    return _MODELS[algorithm].schedule


def _copy_time(cluster: Cluster, nbytes: Any, params: NcclParameters) -> Any:
    return params.copy_launch + 2.0 * nbytes / (cluster.memory_bandwidth * params.copy_efficiency)


def predict(cluster: Cluster, op: str, nbytes: float, params: NcclParameters | None = None, *,
            algorithm: str = "ring", protocol: str = "Simple") -> float:
    """Predicted time of ``op`` with ``algorithm`` and ``protocol``, seconds.

    >>> from commsim.network.loader import load_topology
    >>> topo = load_topology("nvswitch_node:8,300GB/s,350ns")
    >>> c = describe_cluster(topo, topo.devices)
    >>> round(predict(c, "all_reduce", 2.0**30) * 1e6, 1)  # 8.4 + 3.4 + 14 x (0.85 + 128 MiB / 300 GB/s) us
    6287.2
    """
    return float(predict_many(cluster, op, np.array([nbytes]), params, algorithm=algorithm, protocol=protocol)[0])


def predict_many(cluster: Cluster, op: str, sizes: np.ndarray, params: NcclParameters | None = None, *,
                 algorithm: str = "ring", protocol: str = "Simple") -> np.ndarray:
    """:func:`predict` for an array of sizes (bytes) at once."""
    params = params or NCCL_DEFAULTS
    sizes = np.asarray(sizes, dtype=float)
    for size in sizes.tolist():
        _check(op, protocol, size)
    if cluster.ranks == 1:
        return np.asarray(_copy_time(cluster, sizes, params), dtype=float)
    if algorithm not in model_algorithms(op, cluster):
        raise ConfigError(field="algorithm", value=algorithm, rule=f"has no NCCL model for {op} on "
                          f"{cluster.ranks} ranks over {cluster.servers} server(s)",
                          fix=f"use one of {', '.join(model_algorithms(op, cluster))} or 'auto'")
    if protocol not in protocols_of(algorithm):
        raise ConfigError(field="protocol", value=protocol, rule=f"is not a protocol of NCCL's {algorithm}",
                          fix=f"use {' or '.join(protocols_of(algorithm))}")
    model = _MODELS[algorithm].time
    return np.broadcast_to(np.asarray(model(cluster, op, sizes, params.protocols[protocol], params, protocol),
                                      dtype=float), sizes.shape).copy()


def _check(op: str, protocol: str, nbytes: float) -> None:
    if op not in NCCL_OPS:
        raise ConfigError(field="op", value=op, rule="is not covered by the NCCL model",
                          fix=f"use one of {', '.join(NCCL_OPS)}")
    if protocol not in PROTOCOLS:
        raise ConfigError(field="protocol", value=protocol, rule="is not an NCCL protocol",
                          fix=f"use one of {', '.join(PROTOCOLS)} or 'auto'")
    if not (nbytes > 0 and math.isfinite(nbytes)):
        raise ConfigError(field="size", value=nbytes, rule="must be a positive number of bytes",
                          fix="give a message size above 0, e.g. '1 MiB'")


# ---------------------------------------------------------------------------------------------------- the tuner
@dataclass(frozen=True)
class Choice:
    """The tuner's pick: algorithm, protocol, channels and the predicted time (s).

    ``candidates`` maps every ``(algorithm, protocol)`` considered to its predicted time.
    """

    op: str
    algorithm: str
    protocol: str
    channels: int
    time: float
    candidates: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)


def tune(cluster: Cluster, op: str, nbytes: float, params: NcclParameters | None = None, *,
         algorithm: str = "auto", protocol: str = "auto") -> Choice:
    """Pick algorithm x protocol as NCCL's tuner does (``auto``), or time a forced one.

    For runs of an NCCL version whose tuning constants are known
    (``params.nccl_version``, :data:`~commsim.collectives.nccl_tuner.TUNER_VERSIONS`),
    across servers, between ring and tree, the pick is NCCL's own
    (:func:`~commsim.collectives.nccl_tuner.nccl_pick`, on NCCL's constants); else
    the fastest under ``params``. The time is always the calibrated one.

    >>> from commsim.network.loader import load_topology
    >>> topo = load_topology("nvswitch_node:8,300GB/s")
    >>> tune(describe_cluster(topo, topo.devices), "all_reduce", 2.0**30, algorithm="ring").protocol
    'Simple'
    """
    params = params or NCCL_DEFAULTS
    _check(op, "Simple" if protocol == "auto" else protocol, nbytes)
    if cluster.ranks == 1:
        return Choice(op, "copy", "Simple" if protocol == "auto" else protocol, 1,
                      _copy_time(cluster, nbytes, params))
    algorithm = params.algorithm if algorithm == "auto" else algorithm
    protocol = params.protocol if protocol == "auto" else protocol
    algorithms = model_algorithms(op, cluster) if algorithm == "auto" else [algorithm]
    if not algorithms:
        raise ConfigError(field="op", value=op, rule="has no algorithm the NCCL model can time",
                          fix=f"use one of {', '.join(NCCL_OPS)}")
    candidates = {(a, p): predict(cluster, op, nbytes, params, algorithm=a, protocol=p)
                  for a in algorithms for p in (protocols_for(a, cluster) if protocol == "auto" else [protocol])}
    if uses_nccl_view(cluster, list(candidates), params.nccl_version):
        # NCCL picks on its own constants, which may misjudge the hardware; the pick then costs what it costs
        best_a, best_p = nccl_pick(cluster, op, nbytes, list(candidates))
        best = candidates[(best_a, best_p)]
    else:
        (best_a, best_p), best = min(candidates.items(), key=lambda item: item[1])
    channels = ring_channels(cluster, nbytes, best_p) if best_a == "ring" else 1
    return Choice(op, best_a, best_p, channels, best, candidates)
