"""The four all-reduce algorithms the study compares, as collective schedules on the real topology.

* ``star`` (TPI-LLM's): workers send their partial sums to the master, which
  adds them and sends the result back — one route each way, so ``2 h tau`` of
  link latency for routes of ``h`` links (the shared ``star`` schedule, root 0).
* ``tree``: the collective library's ``kary_tree`` all-reduce, rooted at the
  master (heap order: the children of position ``i`` are ``k i + 1 ... k i + k``); ``2 D`` routes in sequence for a tree of depth ``D``. The paper quotes
  ``16 tau`` on 8 devices behind 4-link routes, i.e. a depth-2 tree: fan-out 3
  is the smallest heap fan-out with depth 2 on 8 ranks and is the default
  (stated calibration of the tree's shape; fan-out 2, a binary tree, gives
  depth 3 and ``24 tau``).
* ``ring`` (Galaxy's): reduce-scatter then all-gather around the ring, ``2 (N -
  1)`` routes in sequence (the shared ``ring`` schedule).
* ``ps``: parameter-server style (MXNet KV-store): every device, master
  included, pushes to a server outside the group, which sums and answers the
  pulls; the group gains the :data:`~commsim.systems.tpi_llm.hardware.SERVER`
  node as its last position.

:func:`link_latency` measures the latency part of one all-reduce by running it
on the simulated network with a vanishing message (1e-9 bytes).

>>> from commsim.systems.tpi_llm.hardware import edge_topology
>>> topo = edge_topology(8, latency=1e-3)
>>> [round(link_latency(topo, alg) * 1e3, 6) for alg in ("star", "tree", "ring")]   # tau = 1 ms per link
[8.0, 16.0, 56.0]
"""

from __future__ import annotations

from typing import Any

from commsim.collectives import CollectiveConfig, CollectiveRun, Schedule, build_schedule
from commsim.errors import ConfigError
from commsim.network.topology import Topology
from commsim.systems.tpi_llm.hardware import SERVER, with_server

__all__ = ["ALGORITHMS", "allreduce_schedule", "group_of", "link_latency", "time_allreduce"]

ALGORITHMS: tuple[str, ...] = ("star", "tree", "ring", "ps")
"""All-reduce algorithms of the study."""


def group_of(devices: list[str], algorithm: str) -> list[str]:
    """The collective's group: the devices, plus the parameter server for ``ps``."""
    return [*devices, SERVER] if algorithm == "ps" else list(devices)


def allreduce_schedule(algorithm: str, n: int, nbytes: float, *, tree_fanout: int = 3) -> Schedule:
    """The schedule of ``algorithm`` over ``n`` devices (``n + 1`` positions for ``ps``, server last)."""
    if algorithm == "star":
        return build_schedule("all_reduce", "star", n, nbytes, root=0)
    if algorithm == "ring":
        return build_schedule("all_reduce", "ring", n, nbytes)
    if algorithm == "tree":
        if not isinstance(tree_fanout, int) or tree_fanout < 1:
            raise ConfigError(field="tree_fanout", value=tree_fanout, rule="must be a whole number of at least 1",
                              fix="give the number of children per tree node, e.g. 2 (binary) or 3")
        return build_schedule("all_reduce", "kary_tree", n, nbytes, fanout=tree_fanout)
    if algorithm == "ps":
        return build_schedule("all_reduce", "star", n + 1, nbytes, root=n)
    raise ConfigError(field="allreduce", value=algorithm, rule="is not an all-reduce algorithm of the study",
                      fix=f"use one of {', '.join(ALGORITHMS)}")


def time_allreduce(topology: Topology, algorithm: str, nbytes: float, *, devices: int | None = None,
                   tree_fanout: int = 3, config: CollectiveConfig | None = None) -> float:
    """Seconds one all-reduce of ``nbytes`` takes alone on ``topology`` (its first ``devices`` devices)."""
    from commsim.simulation import Simulation

    names = topology.devices[: devices or len(topology.devices)]
    topo = with_server(topology) if algorithm == "ps" else topology
    sim = Simulation(topo, record_usage=False, routing="shortest")
    schedule = allreduce_schedule(algorithm, len(names), nbytes, tree_fanout=tree_fanout)
    run = CollectiveRun(sim, schedule, group_of(names, algorithm), config or CollectiveConfig(record="none"))
    run.start()
    sim.run()
    return float(run.time)


def link_latency(topology: Topology, algorithm: str, **kwargs: Any) -> float:
    """The link-latency part of one all-reduce: its time for a 1e-9-byte message (bandwidth term < 1e-15 s)."""
    return time_allreduce(topology, algorithm, 1e-9, **kwargs)
