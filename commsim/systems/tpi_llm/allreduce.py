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

from commsim.collectives import CollectiveConfig, run_collective
from commsim.errors import ConfigError
from commsim.network.topology import Topology
from commsim.simulation import Simulation
from commsim.systems.tpi_llm.hardware import SERVER, with_server
from commsim.systems.tpi_llm.workload import ALGORITHM_OF

__all__ = ["ALGORITHMS", "link_latency", "time_allreduce"]

ALGORITHMS: tuple[str, ...] = tuple(ALGORITHM_OF)
"""All-reduce algorithms of the study."""


def time_allreduce(topology: Topology, algorithm: str, nbytes: float, *, devices: int | None = None,
                   tree_fanout: int = 3, config: CollectiveConfig | None = None) -> float:
    """Seconds one all-reduce of ``nbytes`` takes alone on ``topology`` (its first ``devices`` devices)."""
    if algorithm not in ALGORITHM_OF:
        raise ConfigError(field="allreduce", value=algorithm, rule="is not an all-reduce algorithm of the study",
                          fix=f"use one of {', '.join(ALGORITHMS)}")
    group = topology.devices[: devices or len(topology.devices)]
    if algorithm == "ps":   # the server joins the group, last, as the star's root
        topology, group = with_server(topology), [*group, SERVER]
    shape = {"fanout": tree_fanout} if algorithm == "tree" else {"root": len(group) - 1 if algorithm == "ps" else 0}
    sim = Simulation(topology, record_usage=False, routing="shortest")
    run = run_collective(sim, "all_reduce", group, nbytes, algorithm=ALGORITHM_OF[algorithm],
                         config=config or CollectiveConfig(record="none"), **({} if algorithm == "ring" else shape))
    sim.run()
    return float(run.time)


def link_latency(topology: Topology, algorithm: str, **kwargs: Any) -> float:
    """The link-latency part of one all-reduce: its time for a 1e-9-byte message (bandwidth term < 1e-15 s)."""
    return time_allreduce(topology, algorithm, 1e-9, **kwargs)
