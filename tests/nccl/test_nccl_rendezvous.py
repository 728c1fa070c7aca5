"""A network transport's eager/rendezvous switch (Polaris's libfabric CXI path) and NCCL v2.21's own tuner view: what
the model charges per network message, where the limit comes from, what the fit learns, and which NCCL versions pick
with NCCL's constants."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nccl_data import CLUSTERS, spread_cluster
from typer.testing import CliRunner

from commsim.cli import app
from commsim.collectives.calibrate import (
    fit_nccl,
    load_calibration,
    refit_start,
    save_calibration,
)
from commsim.collectives.nccl import (
    NCCL_DEFAULTS,
    WIRE_BYTES,
    NcclParameters,
    describe_cluster,
    rendezvous_cost,
    ring_latency,
    tune,
)
from commsim.collectives.nccl_tests import read_nccl_tests
from commsim.collectives.nccl_tuner import has_tuner_view
from commsim.errors import ConfigError
from commsim.network.dragonfly import dragonfly
from commsim.network.loader import load_topology

POLARIS = CLUSTERS["alcf_polaris"].topology
EAGER = 4097.0  # fi_cxi defaults: FI_CXI_RDZV_THRESHOLD 2048 + FI_CXI_RDZV_GET_MIN 2049 bytes still go eagerly


# ---------------------------------------------------------------------------------------------- the NIC's limit
def test_polaris_nics_state_libfabric_cxi_eager_limit() -> None:
    topo = load_topology(POLARIS, overrides={"servers": 2})
    assert {topo.node_attributes(n)["eager_limit"] for n in topo.nodes("nic")} == {EAGER}
    assert describe_cluster(topo, topo.devices).eager_limit == EAGER


def test_without_an_eager_limit_no_message_pays_a_rendezvous() -> None:
    topo = dragonfly(servers=2)
    assert all("eager_limit" not in topo.node_attributes(n) for n in topo.nodes("nic"))
    cluster = describe_cluster(topo, topo.devices)
    assert math.isinf(cluster.eager_limit)
    params = replace(NCCL_DEFAULTS, rendezvous_latency=20e-6)
    assert float(rendezvous_cost(cluster, params, "Simple", 2.0**30)) == 0.0


def test_eager_limit_takes_a_unit_string_and_refuses_zero() -> None:
    topo = dragonfly(servers=2, eager_limit="16 KiB")
    assert describe_cluster(topo, topo.devices).eager_limit == 16384.0
    with pytest.raises(ConfigError, match="eager_limit"):
        load_topology("alcf_polaris", overrides={"eager_limit": 0})


# ---------------------------------------------------------------------------------------------- the cost per message
@settings(max_examples=60, deadline=None)
@given(message=st.floats(min_value=1.0, max_value=2.0**22), protocol=st.sampled_from(["LL", "LL128", "Simple"]))
def test_a_message_pays_the_rendezvous_exactly_when_its_wire_bytes_exceed_the_limit(message: float,
                                                                                     protocol: str) -> None:
    cluster = spread_cluster(POLARIS, 2, 4)
    params = replace(NCCL_DEFAULTS, rendezvous_latency=15e-6)
    cost = float(rendezvous_cost(cluster, params, protocol, message))
    assert cost == (15e-6 if message * WIRE_BYTES[protocol] > EAGER else 0.0)


def test_ll_flags_count_on_the_wire() -> None:
    """3 KiB of LL data is 6 KiB on the wire (a 4-byte flag per 4 data bytes): above the limit, as Simple's is not."""
    cluster = spread_cluster(POLARIS, 2, 4)
    params = replace(NCCL_DEFAULTS, rendezvous_latency=15e-6)
    assert float(rendezvous_cost(cluster, params, "LL", 3072.0)) == 15e-6
    assert float(rendezvous_cost(cluster, params, "Simple", 3072.0)) == 0.0


def test_inside_one_server_nothing_crosses_the_network() -> None:
    cluster = spread_cluster(POLARIS, 1, 4)
    params = replace(NCCL_DEFAULTS, rendezvous_latency=15e-6)
    assert float(rendezvous_cost(cluster, params, "Simple", 2.0**30)) == 0.0


def test_a_ring_step_above_the_limit_waits_a_rendezvous_longer() -> None:
    cluster = spread_cluster(POLARIS, 8, 4)
    base = replace(NCCL_DEFAULTS, rendezvous_latency=1e-7)
    slow = replace(NCCL_DEFAULTS, rendezvous_latency=20e-6 + 1e-7)
    # 1 MiB all-gather-sized ring on 32 GPUs: 16 KiB of LL data per channel and step, one message, nothing to hide
    step = ring_latency(cluster, 2.0**20, slow, "LL").remote - ring_latency(cluster, 2.0**20, base, "LL").remote
    assert float(step) == pytest.approx(20e-6)
    # 4 KiB calls: 128-byte steps go eagerly
    small = ring_latency(cluster, 2.0**12, slow, "LL").remote - ring_latency(cluster, 2.0**12, base, "LL").remote
    assert float(small) == 0.0


def test_rendezvous_latency_must_be_a_finite_time() -> None:
    for bad in (-1e-6, math.inf, math.nan):
        with pytest.raises(ConfigError, match="rendezvous_latency"):
            replace(NCCL_DEFAULTS, rendezvous_latency=bad)


# ---------------------------------------------------------------------------------------------- what the fit learns
def test_the_rendezvous_is_fitted_only_across_servers_with_an_eager_limit() -> None:
    logs = [read_nccl_tests(CLUSTERS["alcf_polaris"].data / "all_gather_8gpu.log")]
    polaris = fit_nccl(logs, POLARIS, iterations=1, allow_bounds=True).free
    # the rendezvous takes LL's mid sizes: LL's per-byte share keeps NCCL's constant
    assert "rendezvous_latency" in polaris and "LL.bandwidth_factor" not in polaris
    plain = fit_nccl(logs, dragonfly(servers=2), iterations=1, allow_bounds=True).free
    assert "rendezvous_latency" not in plain and "LL.bandwidth_factor" in plain


def test_shipped_polaris_fit_learns_a_rendezvous_inside_its_bounds() -> None:
    params = load_calibration(CLUSTERS["alcf_polaris"].calibration)
    assert 5e-6 < params.rendezvous_latency < 50e-6
    assert params.protocols["LL"].bandwidth_factor == NCCL_DEFAULTS.protocols["LL"].bandwidth_factor
    assert params.nccl_version == "2.21.5"


def test_calibration_file_round_trips_rendezvous_and_version(tmp_path) -> None:
    params = replace(NCCL_DEFAULTS, rendezvous_latency=12.5e-6, nccl_version="2.21.5")
    save_calibration(params, tmp_path / "c.yaml")
    back = load_calibration(tmp_path / "c.yaml")
    assert back.rendezvous_latency == pytest.approx(12.5e-6) and back.nccl_version == "2.21.5"
    assert refit_start(back) == replace(NCCL_DEFAULTS, nccl_version="2.21.5")


def test_a_malformed_nccl_version_is_refused() -> None:
    with pytest.raises(ConfigError, match="nccl_version"):
        NcclParameters(protocols=NCCL_DEFAULTS.protocols, nccl_version="v2.21")


# ---------------------------------------------------------------------------------------------- NCCL's own pick
def test_tuner_view_covers_the_versions_whose_constants_it_holds() -> None:
    assert has_tuner_view("2.21.5") and has_tuner_view("2.21")
    assert not has_tuner_view("2.29.2") and not has_tuner_view("")


def test_polaris_runs_of_nccl_2_21_pick_the_measured_sequence() -> None:
    """NCCL 2.21 on 32 Polaris GPUs: tree/LL to 128 KiB, ring/LL 256 KiB-4 MiB, tree/Simple at 8 MiB, ring/Simple
    beyond (the measured all-reduce's plateau and dip); without a stated version the fastest calibrated pick."""
    cluster = spread_cluster(POLARIS, 8, 4)
    params = load_calibration(CLUSTERS["alcf_polaris"].calibration)
    picks = {size: tune(cluster, "all_reduce", size, params) for size in (2.0**17, 2.0**20, 2.0**23, 2.0**26)}
    assert [(c.algorithm, c.protocol) for c in picks.values()] == [
        ("tree", "LL"), ("ring", "LL"), ("tree", "Simple"), ("ring", "Simple")]
    fastest = {size: tune(cluster, "all_reduce", size, replace(params, nccl_version="")) for size in picks}
    # NCCL's pick is never faster than the model's fastest, and at 1 MiB (ring/LL) it is slower
    assert all(picks[s].time >= fastest[s].time for s in picks)
    assert picks[2.0**20].time > 1.2 * fastest[2.0**20].time


def test_cli_records_the_nccl_version(tmp_path) -> None:
    log = CLUSTERS["alcf_polaris"].data / "all_gather_8gpu.log"
    if not log.is_file():
        pytest.skip(f"measured nccl-tests logs not found at {log.parent}")
    out = tmp_path / "c.yaml"
    result = CliRunner().invoke(app, ["calibrate", "nccl-tests", str(log), "-t", str(POLARIS), "--nccl-version",
                                      "2.21.5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert load_calibration(out).nccl_version == "2.21.5"
    bad = CliRunner().invoke(app, ["calibrate", "nccl-tests", str(log), "-t", str(POLARIS), "--nccl-version",
                                   "latest", "-o", str(tmp_path / "d.yaml")])
    assert bad.exit_code != 0 and "nccl_version" in bad.output and "Traceback" not in bad.output
