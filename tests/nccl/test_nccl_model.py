"""The NCCL model: the tuner's choices, the simulator agreeing with the model, rails, executor costs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nccl_data import TOPOLOGY

from commsim.collectives import CollectiveConfig, simulate_collective
from commsim.collectives.calibrate import topology_for
from commsim.collectives.nccl import NCCL_DEFAULTS, NcclParameters, describe_cluster, predict, tune
from commsim.collectives.nccl_run import channel_orders, simulate_nccl, spread_group
from commsim.errors import ConfigError
from commsim.network.loader import load_topology


def _cluster(servers: int, ranks: int | None = None):
    topo = topology_for(TOPOLOGY, servers)
    return describe_cluster(topo, spread_group(topo, ranks or 8 * servers, servers))


def test_cluster_of_the_azure_topology() -> None:
    c = _cluster(2)
    assert (c.ranks, c.servers, c.ranks_per_server, c.rails) == (16, 2, 8, 8)
    assert c.local_bandwidth == pytest.approx(300e9) and c.remote_bandwidth == pytest.approx(25e9)
    assert c.memory_bandwidth == pytest.approx(1.555e12)
    assert c.remote_latency > c.local_latency > 0


@pytest.mark.parametrize("params", [NCCL_DEFAULTS, "calibrated"])
def test_tuner_picks_ll_for_tiny_and_simple_for_large(params: NcclParameters | str, calibrated) -> None:
    p = calibrated if params == "calibrated" else params
    for servers in (1, 2):
        c = _cluster(servers)
        assert tune(c, "all_reduce", 8.0, p).protocol == "LL"
        assert tune(c, "all_reduce", 2.0**32, p).protocol == "Simple"
        protocols = [tune(c, "all_reduce", 2.0**k, p).protocol for k in range(3, 33)]
        # LL, then LL128, then Simple, never back
        order = [["LL", "LL128", "Simple"].index(x) for x in protocols]
        assert order == sorted(order) and "LL128" in protocols


def test_tuner_picks_tree_vs_ring_by_scale(calibrated) -> None:
    # one server: NCCL's tree is for multi-node communicators, the ring runs everything
    single = _cluster(1)
    assert {tune(single, "all_reduce", 2.0**k, calibrated).algorithm for k in range(3, 33)} == {"ring"}
    # across servers: the tree's log-depth latency wins small messages, the ring's bandwidth large ones
    for servers in (2, 16):
        c = _cluster(servers)
        assert tune(c, "all_reduce", 1024.0, calibrated).algorithm == "tree"
        assert tune(c, "all_reduce", 2.0**33, calibrated).algorithm == "ring"
    # beyond a pair of servers (whose "tree" is a single edge), the larger the cluster the larger the sizes the
    # tree keeps: the ring's 2 (n - 1) steps of latency grow, the tree's 2 log2(servers) barely do
    def crossover(servers: int) -> int:
        c = _cluster(servers)
        return next(k for k in range(10, 36) if tune(c, "all_reduce", 2.0**k, calibrated).algorithm == "ring")
    points = [crossover(s) for s in (4, 8, 16, 32)]
    assert points == sorted(points) and points[0] < points[-1]


def test_tuner_candidates_and_forced_choices(calibrated) -> None:
    c = _cluster(2)
    choice = tune(c, "all_reduce", 2.0**24, calibrated)
    assert choice.time == min(choice.candidates.values()) and len(choice.candidates) == 6
    forced = tune(c, "all_reduce", 2.0**24, calibrated, algorithm="ring", protocol="LL")
    assert (forced.algorithm, forced.protocol, forced.channels) == ("ring", "LL", 8)
    assert forced.time >= choice.time
    assert tune(c, "reduce_scatter", 2.0**24, calibrated).algorithm == "ring"  # NCCL has no tree for it
    with pytest.raises(ConfigError, match="not an NCCL protocol"):
        tune(c, "all_reduce", 1e6, calibrated, protocol="LL64")
    with pytest.raises(ConfigError, match="not covered by the NCCL model"):
        tune(c, "broadcast", 1e6, calibrated)
    assert tune(c, "all_to_all", 1e6, calibrated).algorithm == "p2p"  # point-to-point, Simple only
    with pytest.raises(ConfigError, match="has no NCCL model"):
        tune(_cluster(1), "all_reduce", 1e6, calibrated, algorithm="tree")


@pytest.mark.parametrize(("servers", "algorithm", "protocol"), [
    (1, "ring", "LL"), (1, "ring", "Simple"), (2, "ring", "LL128"), (2, "ring", "Simple"), (2, "tree", "LL"),
    (2, "tree", "Simple"), (3, "ring", "Simple"), (4, "tree", "LL128"),
])
def test_simulation_agrees_with_the_model(servers: int, algorithm: str, protocol: str, calibrated) -> None:
    topo = topology_for(TOPOLOGY, servers)
    for size in (4096.0, 2.0**22, 2.0**28):
        r = simulate_nccl(topo, "all_reduce", size, ranks=8 * servers, servers=servers, calibration=calibrated,
                          algorithm=algorithm, protocol=protocol)
        assert (r.algorithm, r.protocol) == (algorithm, protocol)
        assert r.time == pytest.approx(r.predicted, rel=1e-6)


def test_reduce_scatter_and_all_gather_run_as_rings(calibrated) -> None:
    topo = topology_for(TOPOLOGY, 2)
    for op in ("reduce_scatter", "all_gather"):
        r = simulate_nccl(topo, op, 2.0**26, calibration=calibrated)
        assert r.algorithm == "ring" and r.time == pytest.approx(r.predicted, rel=1e-6)


def test_one_rank_is_a_device_copy(calibrated) -> None:
    r = simulate_nccl(TOPOLOGY, "all_reduce", 2.0**30, ranks=1, calibration=calibrated, overrides={"servers": 1})
    expected = calibrated.copy_launch + 2 * 2**30 / (1.555e12 * calibrated.copy_efficiency)
    assert r.algorithm == "copy" and r.busbw == 0 and r.time == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("servers", [2, 3, 4, 5])
def test_channel_rings_stay_on_their_rails(servers: int) -> None:
    c = _cluster(servers)
    orders = channel_orders(c, 8)
    hops: dict[tuple[int, int], list[int]] = {}
    for ring in orders:
        assert sorted(ring.tolist()) == list(range(c.ranks))  # a permutation
        src, dst = ring, np.roll(ring, -1)
        cross = c.server[src] != c.server[dst]
        assert cross.sum() == servers  # each server entered and left once
        assert np.all(c.local[src][cross] == c.local[dst][cross])  # the hand-over stays on one rail
        for a, b in zip(src[cross].tolist(), dst[cross].tolist(), strict=True):
            hops.setdefault((int(c.server[a]), int(c.server[b])), []).append(int(c.local[a]))
    # between two servers the 8 channels use 8 different rails in each direction
    assert all(sorted(rails) == list(range(8)) for rails in hops.values())


def test_ring_bandwidth_uses_every_nic() -> None:
    # uncalibrated large ring across 2 servers: 8 rails x 25 GB/s, nearly all of it
    r = simulate_nccl(TOPOLOGY, "all_reduce", 2.0**32, protocol="Simple", algorithm="ring")
    assert 190e9 < r.busbw <= 200e9


def test_executor_remote_latency_efficiency_and_launch() -> None:
    topo = load_topology(TOPOLOGY, overrides={"servers": 2})
    group = [topo.devices[0], topo.devices[8]]  # same rail, different servers
    base = simulate_collective(topo, "all_reduce", 2.0**20, ranks=group, config=CollectiveConfig(step_latency=1e-6))
    remote = simulate_collective(topo, "all_reduce", 2.0**20, ranks=group,
                                 config=CollectiveConfig(step_latency=1e-6, remote_step_latency=5e-6,
                                                         remote_efficiency=0.5, launch_latency=3e-6))
    bytes_per_step = 2.0**20 / 2
    expected = 3e-6 + 2 * (4e-6 + bytes_per_step / 25e9)  # 2 steps: +4 us latency, half the rate
    assert remote.time - base.time == pytest.approx(expected, rel=1e-6)
    local = [topo.devices[0], topo.devices[1]]
    a = simulate_collective(topo, "all_reduce", 2.0**20, ranks=local, config=CollectiveConfig(step_latency=1e-6))
    b = simulate_collective(topo, "all_reduce", 2.0**20, ranks=local,
                            config=CollectiveConfig(step_latency=1e-6, remote_step_latency=5e-6,
                                                    remote_efficiency=0.5))
    assert a.time == pytest.approx(b.time, rel=1e-12)  # local transfers keep the local costs
    with pytest.raises(ConfigError, match="remote_efficiency"):
        CollectiveConfig(remote_efficiency=1.5)
    with pytest.raises(ConfigError, match="launch_latency"):
        CollectiveConfig(launch_latency=-1.0)


def test_predict_matches_hand_calculation() -> None:
    c = describe_cluster(load_topology("nvswitch_node:8,300GB/s,350ns"), load_topology(
        "nvswitch_node:8,300GB/s,350ns").devices)
    costs = NCCL_DEFAULTS.protocols["Simple"]
    # a 128 MiB step hides the 3.4 us step latency behind its second slice: paid once, not per step
    hop = 0.85e-6 + 2**30 / 8 / 300e9
    once = costs.launch + costs.hop_latency
    assert predict(c, "all_reduce", 2.0**30) == pytest.approx(once + 14 * hop, rel=1e-12)
    assert math.isclose(predict(c, "all_gather", 2.0**30), once + 7 * hop, rel_tol=1e-12)
    # a 64 KiB all-reduce (8 KiB steps, two 4 KiB slices) is latency-bound: each step shows the latency less the
    # second slice's transfer, the hidden rest is paid once
    step, piece = 2.0**16 / 8, 2.0**16 / 16
    exposed = costs.hop_latency - (step - piece) / 300e9
    small = costs.launch + (costs.hop_latency - exposed) + 14 * (exposed + 0.85e-6 + step / 300e9)
    assert predict(c, "all_reduce", 2.0**16, algorithm="ring") == pytest.approx(small, rel=1e-12)
