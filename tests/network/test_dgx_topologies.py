"""The DGX A100 (Selene) and DGX H100 files scale with ``servers``: NVSwitch inside, one NIC per GPU on rails."""

from __future__ import annotations

from pathlib import Path

import pytest

from commsim.network.loader import load_topology

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


@pytest.mark.parametrize(("name", "nvlink", "port", "model", "memory"), [
    ("dgx_a100.yaml", 300e9, 200e9 / 8, "a100_80gb", 80e9),
    ("dgx_h100.yaml", 450e9, 400e9 / 8, "h100_sxm", 80e9),
])
@pytest.mark.parametrize("servers", [1, 3, 24])
def test_servers_scale_the_cluster_rail_by_rail(name, nvlink, port, model, memory, servers):
    topo = load_topology(TOPOLOGIES / name, overrides={"servers": servers})
    assert len(topo.devices) == 8 * servers
    graph = topo.graph
    last = f"gpu{8 * servers - 1}"
    assert graph.edges[last, f"nvsw{servers - 1}"]["bandwidth"] == pytest.approx(nvlink)
    nic = f"nic{servers - 1}.7"
    leaves = [b for b in graph.successors(nic) if b.startswith("leaf")]
    assert len(leaves) == 1 and leaves[0].startswith("leafA7.")          # NIC 7 sits on rail 7
    assert graph.edges[nic, leaves[0]]["bandwidth"] == pytest.approx(port)
    spec = topo.device_spec(last)
    assert spec.compute_model == model and spec.memory == pytest.approx(memory)


def test_the_selene_fabric_is_non_blocking():
    # 40 servers: two leaves per rail (20 servers each); every leaf's uplink carries all its down-links
    topo = load_topology(TOPOLOGIES / "dgx_a100.yaml", overrides={"servers": 40})
    down = sum(d["bandwidth"] for a, b, d in topo.links() if b == "leafA0.1" and a.startswith("nic"))
    up = sum(d["bandwidth"] for a, b, d in topo.links() if a == "leafA0.1" and b.startswith("spine"))
    assert down == pytest.approx(20 * 25e9) and up == pytest.approx(down)
