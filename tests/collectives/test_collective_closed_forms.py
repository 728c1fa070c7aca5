"""Every algorithm on uncongested topologies takes exactly its closed-form time (within 0.5 %).

The sample covers 2 to 1,024 ranks and 1 KiB to 4 GiB: every size on small
groups, few sizes on large ones (a 1,024-rank run costs about a second), on a
single switch, an NVSwitch node, a ring of up to 64 links (ring algorithms only: a
ring is uncongested only for neighbour traffic, and routing a 1,024-link ring
costs more than simulating it) and a rail-optimised cluster (hierarchical). Pipelined trees get chunk sizes that give a handful to a few
dozen chunks so fill, drain and steady state all show.
"""

from __future__ import annotations

import math

import pytest

from commsim.collectives import simulate_collective

KiB, MiB, GiB = 2**10, 2**20, 2**30
SIZES = (KiB, 3 * MiB + 17, 4 * GiB)
TOL = 5e-3


def switch(n: int) -> str:
    return f"switch:{n},50GB/s,500ns"


def nvswitch(n: int) -> str:
    return f"nvswitch_node:{n},450GB/s,350ns"


def ring(n: int) -> str:
    return f"ring:{n},75GB/s,500ns"


def _cases() -> list:
    cases = []

    def add(topo, op, algorithm, ns, sizes, **params):
        for n in ns:
            for size in sizes:
                label = f"{op}/{algorithm}-{topo(n).split(',')[0]}-{size}B-" + "-".join(
                    f"{k}={v}" for k, v in params.items())
                cases.append(pytest.param(topo(n), op, algorithm, size, params, id=label))

    small = (2, 3, 4, 8)
    # ring algorithms (also on a ring of links)
    add(switch, "all_reduce", "ring", small, SIZES, channels=2)
    add(ring, "all_reduce", "ring", (2, 5, 64), SIZES)
    add(switch, "all_reduce", "ring", (1024,), (4 * GiB,))
    add(ring, "reduce_scatter", "ring", (3, 8), SIZES)
    add(nvswitch, "all_gather", "ring", (8, 64), SIZES)
    add(ring, "broadcast", "ring", (3, 8), SIZES, chunk_size=128 * MiB, root=1)
    add(switch, "reduce", "ring", (6,), SIZES, chunk_size=256 * MiB, root=5)
    # double binary tree
    add(switch, "all_reduce", "double_binary_tree", (*small, 6, 12), SIZES, chunk_size=256 * MiB)
    add(nvswitch, "all_reduce", "double_binary_tree", (8, 64), SIZES, chunk_size=64 * MiB, channels=2)
    add(switch, "all_reduce", "double_binary_tree", (1024,), (KiB, 4 * GiB), chunk_size=512 * MiB)
    add(switch, "all_reduce", "double_binary_tree", (100,), (64 * MiB,), chunk_size=None)
    # recursive halving-doubling (fallback on 3, 6, 12, 100)
    add(switch, "all_reduce", "halving_doubling", (2, 4, 8, 64), SIZES)
    add(switch, "all_reduce", "halving_doubling", (3, 6, 12, 100), SIZES, fallback=True)
    add(nvswitch, "all_reduce", "halving_doubling", (8, 1024), (KiB, 4 * GiB))
    # direct all-to-all
    add(switch, "all_to_all", "direct", (*small, 64), SIZES)
    add(nvswitch, "all_to_all", "direct", (8, 12), SIZES, rounds=3)
    add(switch, "all_to_all", "direct", (256,), (4 * GiB,), rounds=4)
    # tree broadcast and reduce
    for op in ("broadcast", "reduce"):
        add(switch, op, "tree", (*small, 5, 6, 12), SIZES, chunk_size=256 * MiB, root=1)
        add(switch, op, "tree", (*small, 5, 13), SIZES, chunk_size=512 * MiB, tree="binomial")
        add(nvswitch, op, "tree", (64,), SIZES, chunk_size=64 * MiB, channels=2)
        add(switch, op, "tree", (1024,), (4 * GiB,), chunk_size=256 * MiB, root=513)
        add(switch, op, "tree", (1024,), (KiB,), tree="binomial")
    # star
    add(switch, "all_reduce", "star", small, SIZES, root=1)
    add(nvswitch, "all_reduce", "star", (64, 1024), (KiB, 4 * GiB))
    # star reduce (a parameter server's push) and broadcast (its reply)
    add(switch, "reduce", "star", small, SIZES, root=0)
    add(switch, "broadcast", "star", small, SIZES, root=1)
    add(nvswitch, "reduce", "star", (64,), (KiB, 4 * GiB), root=63)
    # hierarchical
    add(switch, "all_gather", "hierarchical", (8, 12), SIZES, ranks_per_node=4)
    for servers, gpus in ((2, 4), (3, 2)):
        add(lambda _n, s=servers, g=gpus: f"rail_optimized:{s},{g},50GB/s", "all_gather", "hierarchical",
            (servers * gpus,), SIZES[::2])
    add(switch, "all_reduce", "hierarchical", (8, 12), SIZES, ranks_per_node=4)
    add(switch, "all_reduce", "hierarchical", (8,), SIZES, ranks_per_node=2, inter="tree", chunk_size=256 * MiB)
    add(nvswitch, "all_reduce", "hierarchical", (1024,), (4 * GiB,), ranks_per_node=8, channels=2)
    add(nvswitch, "all_reduce", "hierarchical", (1024,), (KiB,), ranks_per_node=32, inter="tree")
    for servers, gpus in ((2, 4), (3, 2), (8, 8)):
        add(lambda _n, s=servers, g=gpus: f"rail_optimized:{s},{g},50GB/s", "all_reduce", "hierarchical",
            (servers * gpus,), SIZES[::2], inter="ring")
        add(lambda _n, s=servers, g=gpus: f"rail_optimized:{s},{g},50GB/s", "all_reduce", "hierarchical",
            (servers * gpus,), (MiB, 4 * GiB), inter="tree", chunk_size=512 * MiB)
    return cases


@pytest.mark.parametrize(("topology", "op", "algorithm", "size", "params"), _cases())
def test_simulated_time_matches_closed_form(topology, op, algorithm, size, params):
    result = simulate_collective(topology, op, size, algorithm=algorithm, seed=7, **params)
    assert not math.isnan(result.closed_form), "no closed form reported"  # NaN when the algorithm has none
    assert result.time == pytest.approx(result.closed_form, rel=TOL)
