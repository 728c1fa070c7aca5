"""Where jobs run: servers of a fabric, job placement, rank layout and the rings of their collectives.

Ranks follow the training generator's layout: ``rank = p (dp tp) + d tp + t`` over
the job's GPUs in server order, so with ``tp`` equal to the GPUs of a server the
data-parallel group of ``(p, t)`` holds GPU ``t`` of every server of stage ``p``
-- one rail -- and its ring all-reduce crosses the fabric NIC to NIC on that rail.

>>> from commsim.network.generators import rail_optimized
>>> topo = rail_optimized(servers=4, gpus_per_server=2, nic_ports=2, servers_per_leaf=2, spines=2)
>>> servers = server_devices(topo)
>>> servers[1]
['gpu2', 'gpu3']
>>> place_jobs(4, [2, 2], "interleaved")
[[0, 2], [1, 3]]
>>> [r.members for r in dp_rings(servers, [0, 1, 2, 3], tp=2, pp=1, nbytes=[1e6])]
[('gpu0', 'gpu2', 'gpu4', 'gpu6'), ('gpu1', 'gpu3', 'gpu5', 'gpu7')]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from commsim.errors import ConfigError
from commsim.network.topology import Topology
from commsim.systems.c4.traffic import Ring

__all__ = ["server_devices", "place_jobs", "dp_rings", "job_devices", "server_of_device"]


def server_devices(topology: Topology) -> list[list[str]]:
    """Devices of each server (the ``server`` attribute of device nodes), servers in order of appearance."""
    groups: dict[object, list[str]] = {}
    for dev in topology.devices:
        server = topology.graph.nodes[dev].get("server")
        if server is None:
            raise ConfigError(field="topology", value=topology.name,
                              rule="has devices without a server attribute, so C4 cannot tell nodes apart",
                              fix="use a multi-GPU server topology such as rail_optimized "
                                  "(topologies/h800_cluster_512.yaml)")
        groups.setdefault(server, []).append(dev)
    sizes = {len(v) for v in groups.values()}
    if len(sizes) != 1:
        raise ConfigError(field="topology", value=topology.name, rule="has servers with different GPU counts",
                          fix="give every server the same number of GPUs")
    return list(groups.values())


def server_of_device(servers: list[list[str]]) -> dict[str, int]:
    """Server index of every device."""
    return {d: s for s, devs in enumerate(servers) for d in devs}


def place_jobs(total: int, sizes: Sequence[int], placement: str, seed: int = 0) -> list[list[int]]:
    """Server indices of each job, in rank order.

    ``packed``: consecutive servers; ``interleaved``: servers dealt round-robin to
    the jobs that still need some; ``random``: a seeded shuffle of all servers,
    handed out in that order.
    """
    need = int(sum(sizes))
    if need > total:
        raise ConfigError(field="c4p.jobs", value=list(sizes), rule=f"need {need} servers but the fabric has {total}",
                          fix=f"make the jobs fit in {total} servers")
    if placement == "packed":
        order = list(range(total))
    elif placement == "random":
        order = np.random.default_rng(seed).permutation(total).tolist()
    elif placement == "interleaved":
        out: list[list[int]] = [[] for _ in sizes]
        server = 0
        while server < need:
            for j, size in enumerate(sizes):
                if len(out[j]) < size and server < need:
                    out[j].append(server)
                    server += 1
        return out
    else:
        raise ConfigError(field="c4p.placement", value=placement, rule="is not a placement",
                          fix="use packed, interleaved or random")
    jobs, at = [], 0
    for size in sizes:
        jobs.append([int(s) for s in order[at:at + size]])
        at += size
    return jobs


def job_devices(servers: list[list[str]], job_servers: Sequence[int]) -> list[str]:
    """The job's GPUs in rank order."""
    return [d for s in job_servers for d in servers[s]]


def dp_rings(servers: list[list[str]], job_servers: Sequence[int], *, tp: int, pp: int,
             nbytes: Sequence[float], job: int = 0) -> list[Ring]:
    """The data-parallel rings of a job: one per (stage, tensor rank), ``nbytes[stage]`` each."""
    devices = job_devices(servers, job_servers)
    world = len(devices)
    if world % (tp * pp):
        raise ConfigError(field="job.tp", value=tp, rule=f"x pp={pp} does not divide the job's {world} GPUs",
                          fix="choose tp and pp that divide the GPUs of the job")
    dp = world // (tp * pp)
    rings = []
    for p in range(pp):
        for t in range(tp):
            members = tuple(devices[p * dp * tp + d * tp + t] for d in range(dp))
            rings.append(Ring(members=members, nbytes=float(nbytes[p]), job=job, label=f"job{job} dp p{p} t{t}"))
    return rings

