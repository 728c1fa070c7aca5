"""The NCCL model's mechanisms at scale: channel ramp, NVLS and NVLS-tree, point-to-point with PXN, shared NICs on
a dragonfly; each simulated schedule agrees with its closed form on an uncongested fabric."""

from __future__ import annotations

import numpy as np
import pytest
from nccl_data import CLUSTERS, spread_cluster

from commsim.collectives.calibrate import load_calibration, topology_for
from commsim.collectives.nccl import (
    NCCL_DEFAULTS,
    RAMP_BYTES,
    describe_cluster,
    model_algorithms,
    ring_channels,
    tune,
)
from commsim.collectives.nccl_run import PXN_CHUNKS, rail_local, simulate_nccl, spread_group
from commsim.collectives.nvls import nvls_schedule
from commsim.collectives.sendrecv import sendrecv
from commsim.network.dragonfly import dragonfly
from commsim.network.loader import load_topology

H100 = CLUSTERS["h100_cluster01"].topology
POLARIS = CLUSTERS["alcf_polaris"].topology


def test_channel_ramp_uses_fewer_rings_and_nics_for_small_messages() -> None:
    c = spread_cluster(H100, 4, 8)
    assert c.rails == 8 and ring_channels(c) == 8
    small = 32 * RAMP_BYTES["Simple"] * 2  # bytes for 2 channels on 32 ranks
    assert ring_channels(c, small, "Simple") == 2 and ring_channels(c, 2.0**30, "Simple") == 8
    assert ring_channels(c, small, "LL") == 8  # LL's thread threshold is 8x lower
    assert ring_channels(c, np.array([1.0, small, 2.0**30]), "Simple").tolist() == [1, 2, 8]


def test_nvls_only_where_the_switch_reduces() -> None:
    h100 = spread_cluster(H100, 1, 8)
    assert h100.nvls and len(h100.switches) == 1
    assert model_algorithms("all_reduce", h100) == ["ring", "nvls"]
    across = spread_cluster(H100, 2, 8)
    assert model_algorithms("all_reduce", across) == ["ring", "tree", "nvls_tree"]
    assert model_algorithms("all_gather", across) == ["ring"]
    a100 = spread_cluster(CLUSTERS["azure_ndv4"].topology, 1, 8)
    assert not a100.nvls and "nvls" not in model_algorithms("all_reduce", a100)


@pytest.mark.parametrize("per", [4, 8])
def test_nvls_busbw_is_2_l_minus_1_over_l_plus_1_of_nvlink(per: int) -> None:
    c = spread_cluster(H100, 1, per)
    size = 2.0**34
    t = tune(c, "all_reduce", size, NCCL_DEFAULTS, algorithm="nvls").time
    busbw = size / t * 2 * (per - 1) / per
    assert busbw == pytest.approx(2 * (per - 1) / (per + 1) * 450e9 * NCCL_DEFAULTS.nvls_efficiency, rel=0.03)


@pytest.mark.parametrize(("servers", "algorithm"), [(1, "nvls"), (2, "nvls_tree"), (4, "nvls_tree")])
def test_simulated_nvls_matches_its_closed_form(servers: int, algorithm: str) -> None:
    params = load_calibration(CLUSTERS["h100_cluster01"].calibration)
    topo = topology_for(H100, servers)
    for size in (2.0**24, 2.0**30):
        r = simulate_nccl(topo, "all_reduce", size, ranks=8 * servers, servers=servers, calibration=params,
                          algorithm=algorithm)
        # the closed form counts the pipeline fill once; with a few chunks the simulated fill is a little longer
        assert r.algorithm == algorithm and r.time == pytest.approx(r.predicted, rel=0.08)


def test_nvls_schedule_moves_each_byte_once_per_link() -> None:
    s = nvls_schedule([0, 0, 0, 0, 1, 1, 1, 1], [0, 1, 2, 3] * 2, 2.0**20, chunks=4)
    s.check()
    assert s.ranks == 10  # 8 GPUs and 2 switches
    up = [st for st in s.steps if st.phase.startswith("reduce")]
    assert sum(float(st.nbytes.sum()) for st in up) == pytest.approx(8 * 2.0**20 * (1 + 1 / 4))
    across = [st for st in s.steps if st.phase.startswith(("scatter", "gather"))]
    # each GPU's quarter of the buffer: half to the other server and half back
    assert sum(float(st.nbytes.sum()) for st in across) == pytest.approx(8 * 2.0**20 / 4)


def test_pxn_keeps_point_to_point_on_its_rail() -> None:
    c = spread_cluster(H100, 2, 8)
    moved = rail_local(sendrecv(16, 1e6), c)
    moved.check()
    assert len(moved.steps) == 2 * PXN_CHUNKS
    first, last = moved.steps[0], moved.steps[-1]
    # rank 7 (server 0, rail 7) sends to rank 8 (server 1, rail 0): first to rank 0 over NVLink, then on rail 0
    assert first.dst[7] == 0 and last.src.tolist() == [0, 8] and last.dst.tolist() == [8, 0]
    assert moved.wire_bytes == pytest.approx(16e6 + 2e6)  # the two moved sends cross NVLink once more
    for st in moved.steps[PXN_CHUNKS:]:
        assert all(c.local[a] == c.local[b] for a, b in zip(st.src, st.dst, strict=True))


@pytest.mark.parametrize("op", ["all_to_all", "sendrecv"])
def test_simulated_point_to_point_matches_its_closed_form(op: str) -> None:
    params = load_calibration(CLUSTERS["h100_cluster01"].calibration)
    for topology, servers, per in ((H100, 10, 1), (H100, 10, 2), (H100, 1, 8), (POLARIS, 2, 4)):
        topo = topology_for(topology, servers)
        r = simulate_nccl(topo, op, 2.0**28, ranks=servers * per, servers=servers, calibration=params)
        assert r.algorithm == "p2p" and r.time == pytest.approx(r.predicted, rel=0.02), (topology.name, servers)


def test_send_recv_across_servers_is_capped_per_peer() -> None:
    params = load_calibration(CLUSTERS["h100_cluster01"].calibration)
    one_peer = tune(spread_cluster(H100, 10, 1), "sendrecv", 2.0**30, params).time
    assert 2.0**30 / one_peer == pytest.approx(params.p2p_peer_bandwidth, rel=0.02)
    many = tune(spread_cluster(H100, 10, 1), "all_to_all", 2.0**30, params).time
    assert 2.0**30 * 9 / 10 / many > 1.5 * params.p2p_peer_bandwidth  # nine peers at once fill the NIC


def test_dragonfly_shares_nics_and_fills_switches_in_order() -> None:
    topo = dragonfly(servers=64, servers_per_switch=16, switches_per_group=2, global_links=2)
    assert len(topo.devices) == 256 and topo.summary()["switch"] == 4 and topo.summary()["nic"] == 128
    c = describe_cluster(topo, spread_group(topo, 8, 2))
    assert (c.rails, c.ranks_per_server, c.remote_bandwidth) == (2, 4, 25e9)
    assert c.local_port_bandwidth == pytest.approx(300e9)  # three NVLink peers of 100 GB/s


def test_polaris_ring_channels_leave_on_distinct_nics() -> None:
    params = load_calibration(CLUSTERS["alcf_polaris"].calibration)
    topo = topology_for(POLARIS, 8)
    r = simulate_nccl(topo, "all_gather", 2.0**28, ranks=32, servers=8, calibration=params, algorithm="ring")
    assert r.channels == 2 and r.time == pytest.approx(r.predicted, rel=1e-6)


def test_a_generator_loads_from_its_yaml_with_servers() -> None:
    topo = load_topology(POLARIS, overrides={"servers": 512})
    assert len(topo.devices) == 2048
