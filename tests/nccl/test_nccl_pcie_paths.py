"""NCCL's GPU-NIC PCIe path types: a NIC behind the CPU's host bridge (PHB, as on Polaris) turns LL128 off across
servers, in the tuner and in what the fit may learn; one server and PCIe-switch clusters keep it."""

from __future__ import annotations

import pytest
from nccl_data import CLUSTERS, spread_cluster

from commsim.collectives.calibrate import fit_nccl, load_calibration
from commsim.collectives.nccl import NCCL_DEFAULTS, protocols_for, protocols_of, tune
from commsim.collectives.nccl_tests import read_nccl_tests
from commsim.errors import CommsimError, TopologyError
from commsim.network.dragonfly import dragonfly
from commsim.network.loader import load_topology
from commsim.network.pcie_paths import GPU_PATHS, path_worse_than, validate_gpu_path

POLARIS = CLUSTERS["alcf_polaris"].topology
AZURE = CLUSTERS["azure_ndv4"].topology


def test_path_types_are_ordered_nearest_first() -> None:
    assert GPU_PATHS == ("PIX", "PXB", "PHB", "SYS")
    assert [path_worse_than(p, "PXB") for p in GPU_PATHS] == [False, False, True, True]
    assert not path_worse_than("PXB", "PXB")


def test_an_unknown_path_type_is_a_clear_error() -> None:
    with pytest.raises(TopologyError, match="not an NCCL PCIe path type"):
        validate_gpu_path("NVL")
    # a topology file's value goes through the generator's checks
    with pytest.raises(CommsimError, match="gpu_nic_path"):
        load_topology(POLARIS, overrides={"servers": 2, "gpu_nic_path": "PCIE"})


def test_dragonfly_records_the_path_on_every_nic() -> None:
    topo = dragonfly(servers=2, gpu_nic_path="PHB")
    nics = topo.nodes("nic")
    assert len(nics) == 4 and {topo.node_attributes(n)["gpu_path"] for n in nics} == {"PHB"}
    assert {dragonfly(servers=2).node_attributes(n)["gpu_path"] for n in nics} == {"PIX"}


def test_polaris_gpus_reach_their_nics_through_the_host_bridge() -> None:
    assert spread_cluster(POLARIS, 2, 4).gpu_path == "PHB"
    assert spread_cluster(AZURE, 2, 8).gpu_path == "PIX"


@pytest.mark.parametrize("algorithm", ["ring", "tree"])
def test_ll128_is_off_across_servers_behind_the_host_bridge(algorithm: str) -> None:
    across = spread_cluster(POLARIS, 2, 4)
    assert protocols_for(algorithm, across) == ("LL", "Simple")
    assert protocols_for(algorithm, spread_cluster(AZURE, 2, 8)) == protocols_of(algorithm)
    # inside one server NVLink carries the ring: LL128 stays
    assert "LL128" in protocols_for("ring", spread_cluster(POLARIS, 1, 4))


@pytest.mark.parametrize("size", [2.0**12, 2.0**18, 2.0**22, 2.0**26])
def test_the_tuner_never_picks_ll128_on_polaris_but_a_forced_ll128_runs(size: float) -> None:
    c = spread_cluster(POLARIS, 8, 4)
    params = load_calibration(CLUSTERS["alcf_polaris"].calibration)
    choice = tune(c, "all_reduce", size, params)
    assert choice.protocol != "LL128" and all(p != "LL128" for _, p in choice.candidates)
    # NCCL_PROTO=LL128 overrides the hardware rule in NCCL too
    assert tune(c, "all_reduce", size, params, protocol="LL128").protocol == "LL128"


def test_uncalibrated_tuner_picks_ll128_where_the_path_allows_it() -> None:
    size = 2.0**22
    phb, pix = (dragonfly(servers=2, gpu_nic_path=p) for p in ("PHB", "PIX"))
    from commsim.collectives.nccl import describe_cluster

    picks = {name: {p for _, p in tune(describe_cluster(t, t.devices), "all_reduce", size, NCCL_DEFAULTS).candidates}
             for name, t in (("PHB", phb), ("PIX", pix))}
    assert "LL128" in picks["PIX"] and "LL128" not in picks["PHB"]


def test_polaris_logs_do_not_inform_ll128() -> None:
    logs = [read_nccl_tests(CLUSTERS["alcf_polaris"].data / "all_reduce_8gpu.log")]
    free = fit_nccl(logs, POLARIS, iterations=1, allow_bounds=True).free
    assert not any(n.startswith("LL128.") for n in free) and "LL.launch" in free


def test_topology_file_states_polaris_path() -> None:
    topo = load_topology(POLARIS, overrides={"servers": 2})
    assert {topo.node_attributes(n)["gpu_path"] for n in topo.nodes("nic")} == {"PHB"}


def test_runs_that_forced_ll128_inform_its_costs_even_behind_the_host_bridge() -> None:
    from dataclasses import replace

    logs = [read_nccl_tests(CLUSTERS["alcf_polaris"].data / "all_reduce_8gpu.log")]
    forced = replace(NCCL_DEFAULTS, protocol="LL128")
    free = fit_nccl(logs, POLARIS, initial=forced, iterations=1, allow_bounds=True).free
    assert "LL128.launch" in free and "LL128.bandwidth_factor" in free
