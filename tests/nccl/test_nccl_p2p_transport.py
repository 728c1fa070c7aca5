"""Point-to-point calls on a network transport: their messages pay the rendezvous above the NIC's eager limit, as
ring and tree steps do, and the host's proxy thread serves the remote peers one after another (Polaris's all-to-all
takes ~62 us on 8 GPUs, 4 remote peers, and ~290 us on 32 GPUs, 28 remote peers, at sizes that move next to nothing).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nccl_data import CLUSTERS, spread_cluster

from commsim.collectives.calibrate import (
    at_bounds,
    fit_nccl,
    load_calibration,
    save_calibration,
    topology_for,
)
from commsim.collectives.nccl import (
    NCCL_DEFAULTS,
    P2P_NET_CHUNK,
    p2p_message,
    p2p_remote_peers,
    p2p_serial_latency,
    predict,
)
from commsim.collectives.nccl_run import simulate_nccl
from commsim.collectives.nccl_tests import read_nccl_tests
from commsim.errors import ConfigError

POLARIS = CLUSTERS["alcf_polaris"].topology
H100 = CLUSTERS["h100_cluster01"].topology
EAGER = 4097.0  # fi_cxi's defaults, as Polaris's NICs state


def _p2p(cluster, op: str, size: float, params) -> float:
    return predict(cluster, op, size, params, algorithm="p2p", protocol="Simple")


# ---------------------------------------------------------------------------------------------- messages
def test_a_peer_message_is_its_share_of_the_buffer_up_to_the_net_chunk() -> None:
    cluster = spread_cluster(POLARIS, 8, 4)
    assert float(p2p_message(cluster, "all_to_all", 32 * 1024.0)) == 1024.0
    assert float(p2p_message(cluster, "all_to_all", 2.0**30)) == P2P_NET_CHUNK == 128 * 1024.0
    assert float(p2p_message(cluster, "sendrecv", 4096.0)) == 4096.0


@settings(max_examples=40, deadline=None)
@given(size=st.floats(min_value=64.0, max_value=2.0**30))
def test_all_to_all_pays_one_rendezvous_exactly_when_a_peer_message_exceeds_the_limit(size: float) -> None:
    cluster = spread_cluster(POLARIS, 2, 4)
    base = replace(NCCL_DEFAULTS, rendezvous_latency=0.0)
    slow = replace(NCCL_DEFAULTS, rendezvous_latency=20e-6)
    extra = _p2p(cluster, "all_to_all", size, slow) - _p2p(cluster, "all_to_all", size, base)
    expected = 20e-6 if min(size / cluster.ranks, P2P_NET_CHUNK) > EAGER else 0.0
    assert extra == pytest.approx(expected, abs=1e-12)


def test_inside_one_server_point_to_point_pays_no_rendezvous() -> None:
    cluster = spread_cluster(POLARIS, 1, 4)
    base = replace(NCCL_DEFAULTS, rendezvous_latency=0.0)
    slow = replace(NCCL_DEFAULTS, rendezvous_latency=20e-6)
    assert _p2p(cluster, "all_to_all", 2.0**26, slow) == _p2p(cluster, "all_to_all", 2.0**26, base)


# ---------------------------------------------------------------------------------------------- remote peers in series
@pytest.mark.parametrize(("servers", "per", "op", "peers"), [
    (1, 4, "all_to_all", 0), (2, 4, "all_to_all", 4), (8, 4, "all_to_all", 28), (8, 4, "sendrecv", 1),
    (1, 4, "sendrecv", 0)])
def test_remote_peers_are_the_ranks_in_other_servers(servers: int, per: int, op: str, peers: int) -> None:
    assert p2p_remote_peers(spread_cluster(POLARIS, servers, per), op) == peers


def test_each_remote_peer_adds_its_latency_to_a_call() -> None:
    params = replace(NCCL_DEFAULTS, p2p_peer_latency=10e-6)
    for servers in (2, 8):
        cluster = spread_cluster(POLARIS, servers, 4)
        extra = _p2p(cluster, "all_to_all", 2.0**20, params) - _p2p(cluster, "all_to_all", 2.0**20, NCCL_DEFAULTS)
        assert extra == pytest.approx(10e-6 * 4 * (servers - 1)) == pytest.approx(
            p2p_serial_latency(cluster, "all_to_all", params))


@pytest.mark.parametrize("op", ["all_to_all", "sendrecv"])
def test_simulated_point_to_point_pays_the_same_serial_peers_and_rendezvous(op: str) -> None:
    params = replace(load_calibration(CLUSTERS["alcf_polaris"].calibration), p2p_peer_latency=30e-6,
                     rendezvous_latency=40e-6)
    topo = topology_for(POLARIS, 4)
    r = simulate_nccl(topo, op, 2.0**22, ranks=16, servers=4, calibration=params)
    assert r.algorithm == "p2p" and r.time == pytest.approx(r.predicted, rel=0.02)
    plain = simulate_nccl(topo, op, 2.0**22, ranks=16, servers=4,
                          calibration=replace(params, p2p_peer_latency=0.0, rendezvous_latency=0.0))
    peers = 12 if op == "all_to_all" else 1
    assert r.time - plain.time == pytest.approx(peers * 30e-6 + 40e-6, rel=0.05)


def test_peer_latency_must_be_a_finite_time() -> None:
    for bad in (-1e-6, math.inf, math.nan):
        with pytest.raises(ConfigError, match="p2p_peer_latency"):
            replace(NCCL_DEFAULTS, p2p_peer_latency=bad)


def test_calibration_file_round_trips_the_peer_latency(tmp_path) -> None:
    save_calibration(replace(NCCL_DEFAULTS, p2p_peer_latency=9.5e-6), tmp_path / "c.yaml")
    assert load_calibration(tmp_path / "c.yaml").p2p_peer_latency == pytest.approx(9.5e-6)
    save_calibration(NCCL_DEFAULTS, tmp_path / "d.yaml")
    assert "peer_latency" not in (tmp_path / "d.yaml").read_text()
    assert load_calibration(tmp_path / "d.yaml").p2p_peer_latency == 0.0


# ---------------------------------------------------------------------------------------------- what the fit learns
def test_the_peer_latency_needs_two_remote_peer_counts() -> None:
    """At one peer count a per-peer cost is indistinguishable from the launch: the fit leaves it alone."""
    folder = CLUSTERS["alcf_polaris"]
    logs = {p.name: read_nccl_tests(p) for p in folder.logs()}
    both = fit_nccl([logs["alltoall_8gpu.log"], logs["alltoall_32gpu.log"], logs["all_gather_8gpu.log"]], POLARIS,
                    iterations=1, allow_bounds=True).free
    one = fit_nccl([logs["alltoall_8gpu.log"], logs["all_gather_8gpu.log"]], POLARIS, iterations=1,
                   allow_bounds=True).free
    assert "p2p_peer_latency" in both and "p2p_peer_latency" not in one


def test_h100_logs_without_small_sizes_leave_the_peer_latency_alone() -> None:
    folder = CLUSTERS["h100_cluster01"]
    logs = [read_nccl_tests(p) for p in folder.logs() if "alltoall" in p.name]
    assert "p2p_peer_latency" not in fit_nccl(logs, H100, iterations=1, allow_bounds=True).free
    assert load_calibration(folder.calibration).p2p_peer_latency == 0.0


def test_shipped_polaris_fit_puts_a_remote_peer_near_the_measured_slope() -> None:
    """The measured slope: (~290 us - ~62 us) / (28 - 4) remote peers, about 9.5 us, at sizes of a few KiB."""
    params = load_calibration(CLUSTERS["alcf_polaris"].calibration)
    assert 7e-6 < params.p2p_peer_latency < 12e-6 and not at_bounds(["p2p_peer_latency"], params)
    small = {servers: _p2p(spread_cluster(POLARIS, servers, 4), "all_to_all", 2.0**13, params) for servers in (2, 8)}
    # 24 more remote peers; the few KiB they move add well under a microsecond
    assert small[8] - small[2] == pytest.approx(24 * params.p2p_peer_latency, rel=0.01)
    assert 250e-6 < small[8] < 330e-6 and 45e-6 < small[2] < 80e-6
