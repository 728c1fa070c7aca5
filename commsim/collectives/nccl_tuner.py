"""NCCL's own tuner: the cost model with which NCCL picks an algorithm and a protocol (not what they then cost).

NCCL (v2.21, ``src/graph/tuning.cc``) predicts ``time = latency + bytes /
bandwidth`` for each algorithm x protocol from *published constants* (base and
per-hop latencies, per-channel bandwidth caps, a tree correction per size) and
its topology search's channel count and per-channel bandwidth, and runs the
fastest. Where the constants misjudge the hardware (a libfabric network whose
LL and Simple steps cost tens of microseconds, not NCCL's 2.7 and 14), NCCL
picks an algorithm that is *not* the fastest: the measured time then jumps up
at the switch. The model reproduces that by choosing with this module's NCCL
view and timing the choice with the calibrated costs
(:func:`commsim.collectives.nccl.tune`), for runs of an NCCL version whose
constants this module holds (:data:`TUNER_VERSIONS`; the calibration's
``environment.nccl_version``): later versions changed them.

The view covers the choice between ring and tree (LL, LL128, Simple) across
servers. NCCL's topology search is read off the cluster: one channel per rail
(NIC) at the NIC's bandwidth. The GPU generation comes from the device name
(Hopper: H100/H200/H800/GH200; Ampere otherwise, Volta for V100); the host CPU
from the NICs' ``host_cpu`` attribute (``amd`` or ``intel``, default ``intel``).

>>> from commsim.network.dragonfly import dragonfly
>>> from commsim.collectives.nccl import describe_cluster
>>> topo = dragonfly(servers=8, gpu_nic_path="PHB", host_cpu="amd")
>>> view = describe_cluster(topo, topo.devices)
>>> [nccl_pick(view, "all_reduce", s, [("ring", "LL"), ("ring", "Simple"), ("tree", "LL"), ("tree", "Simple")])
...  for s in (2.0**16, 2.0**20, 2.0**23, 2.0**26)]
[('tree', 'LL'), ('ring', 'LL'), ('tree', 'Simple'), ('ring', 'Simple')]
>>> has_tuner_view("2.21.5"), has_tuner_view("2.29.2"), has_tuner_view("")
(True, False, False)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commsim.collectives.nccl import Cluster

__all__ = ["NCCL_VIEW_ALGORITHMS", "TUNER_VERSIONS", "compute_generation", "has_tuner_view", "nccl_pick",
           "nccl_view_time", "uses_nccl_view"]

NCCL_VIEW_ALGORITHMS: frozenset[str] = frozenset({"ring", "tree"})
"""Algorithms NCCL's tuner view covers (NVLS and point-to-point keep the fastest calibrated choice)."""

TUNER_VERSIONS: tuple[str, ...] = ("2.21",)
"""NCCL versions (major.minor) whose tuning constants this module holds; other versions changed them."""


def has_tuner_view(nccl_version: str) -> bool:
    """Whether this module holds the tuning constants of ``nccl_version`` (e.g. ``2.21.5``; ``""``: unknown)."""
    return ".".join(nccl_version.split(".")[:2]) in TUNER_VERSIONS

_PROTO = {"LL": 0, "LL128": 1, "Simple": 2}
# baseLat[algorithm][protocol], us
_BASE_LAT = {"tree": (6.8, 14.0, 0.0), "ring": (6.6, 14.0, 8.4)}
# hwLat[NVLINK / NET][algorithm][protocol], us
_HW_LAT = {"nvlink": {"tree": (0.6, 1.25, 28.0), "ring": (0.6, 1.9, 3.4)},
           "net": {"tree": (5.0, 8.5, 28.0), "ring": (2.7, 4.0, 14.0)}}
# llMaxBws[Intel / AMD][1, 2, >2 nodes] across servers, GB/s
_LL_MAX_BW = {"intel": (39.0, 39.0, 20.4), "amd": (87.7, 22.5, 19.0)}
# [Volta, Ampere, Hopper][1, 2, >2 nodes], GB/s
_PER_CH_MAX_TREE_BW = ((26.5, 18.5, 10.0), (24.0, 23.6, 17.8), (38.7, 41.4, 36.0))
_PER_CH_MAX_RING_LL128_BW = ((20.0, 20.0, 20.0), (20.0, 20.0, 20.0), (36.7, 36.7, 36.7))
_PER_CH_MAX_TREE_LL128_BW = ((20.0, 20.0, 20.0), (20.0, 20.0, 20.0), (36.7, 36.7, 29.0))
# a ring step's network overhead per CPU vendor, us (x3 for Simple)
_NET_OVERHEAD = {"intel": 1.0, "amd": 2.0}
# treeCorrectionFactor[protocol][log2(bytes / 64)], powers of two from 64 B to 256 MiB
_TREE_CORRECTION = (
    (1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0, 1.0, 1.0),
    (1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9, .9, .9, 1.0, 1.0),
    (.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9),
)


def compute_generation(device: str) -> int:
    """NCCL's compute-capability index of a device name: 0 Volta, 1 Ampere, 2 Hopper."""
    name = device.lower()
    if name.startswith(("h100", "h200", "h800", "gh200")):
        return 2
    return 0 if name.startswith("v100") else 1


def uses_nccl_view(cluster: Cluster, candidates: Sequence[tuple[str, str]], nccl_version: str) -> bool:
    """Whether NCCL's tuner view picks among ``candidates``: runs of an NCCL version whose constants are known
    (:data:`TUNER_VERSIONS`), across servers, ring and tree only."""
    return has_tuner_view(nccl_version) and cluster.servers > 1 and cluster.ranks > 1 and len(candidates) > 1 and all(
        a in NCCL_VIEW_ALGORITHMS for a, _ in candidates)


def _bandwidth_latency(cluster: Cluster, op: str, algorithm: str, protocol: str) -> tuple[float, float]:
    """NCCL's algorithm bandwidth (GB/s) and latency (us) of ``op`` (``ncclTopoTuneModel``)."""
    n, nodes = cluster.ranks, cluster.servers
    ppn = n / nodes
    p = _PROTO[protocol]
    generation = compute_generation(cluster.device)
    index2 = min(nodes, 3) - 1
    channels = cluster.rails
    bw = cluster.remote_bandwidth / 1e9
    bus = channels * bw
    ll_max = _LL_MAX_BW[cluster.host_cpu][index2]
    if algorithm == "ring" and protocol == "LL":
        bus = min(ll_max, bus * 0.5)
    if algorithm == "ring" and protocol == "LL128":
        bus = min(bus * (0.7 if ppn < 2 else 0.92), channels * _PER_CH_MAX_RING_LL128_BW[generation][index2])
    if algorithm == "tree":
        bus = min(bus * 0.92, channels * _PER_CH_MAX_TREE_BW[generation][index2])
        if protocol == "LL":
            bus = min(bus / 3.8, ll_max)
        if protocol == "LL128":
            bus = min(bus * 120.0 / 128.0, channels * _PER_CH_MAX_TREE_LL128_BW[generation][index2])
    steps = 2 * (n - 1) if op == "all_reduce" else n - 1
    inter_steps = 2 * nodes if op == "all_reduce" else nodes - 1
    algbw = bus * (n / steps if algorithm == "ring" else 0.5)
    latency = _BASE_LAT[algorithm][p]
    intra = _HW_LAT["nvlink"][algorithm][p]
    inter = _HW_LAT["net"][algorithm][p]
    if algorithm == "ring":
        overhead = _NET_OVERHEAD[cluster.host_cpu] * (3 if protocol == "Simple" else 1)
        latency += (steps - inter_steps) * max(intra, overhead) + inter_steps * inter
    else:
        latency += 2 * ((ppn - 1) * intra + int(math.log2(nodes)) * inter)
    return algbw, latency


def nccl_view_time(cluster: Cluster, op: str, nbytes: float, algorithm: str, protocol: str) -> float:
    """The time NCCL's tuner predicts for ``op`` of ``nbytes`` with ``algorithm`` x ``protocol``, seconds."""
    algbw, latency = _bandwidth_latency(cluster, op, algorithm, protocol)
    log_size = int(math.log2(max(1.0, nbytes / 64)))
    if algorithm == "tree" and log_size < len(_TREE_CORRECTION[0]):
        algbw *= _TREE_CORRECTION[_PROTO[protocol]][log_size]
    if algorithm == "ring" and protocol == "Simple" and op == "all_reduce" and \
            nbytes / (cluster.rails * cluster.ranks) >= 64:
        latency *= 1.4 if compute_generation(cluster.device) >= 1 else 1.9  # NCCL's "plateau effect of ring"
    return (latency + nbytes / (1000.0 * algbw)) * 1e-6


def nccl_pick(cluster: Cluster, op: str, nbytes: float, candidates: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The ``(algorithm, protocol)`` of ``candidates`` NCCL's tuner picks for ``op`` of ``nbytes``."""
    return min(candidates, key=lambda c: nccl_view_time(cluster, op, nbytes, *c))
