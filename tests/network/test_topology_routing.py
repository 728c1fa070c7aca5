"""Topology files, generators and routing: everything loads, checks, and routes where it should."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
import simpy

from commsim.errors import ConfigError, RoutingError, TopologyError
from commsim.kernel import FluidKernel
from commsim.network import GENERATORS, Network, Router, Topology
from commsim.network.generators import leaf_spine, ring
from commsim.network.loader import load_topology
from commsim.results import Recorder

TOPOLOGY_DIR = Path(__file__).resolve().parents[2] / "topologies"
# every topology file (calibration files that sit beside them are not topologies)
ALL_FILES = sorted(p.name for p in TOPOLOGY_DIR.glob("*.yaml") if ".calibration." not in p.name)

# what the descriptions of the study files promise: device count and one characteristic directed link
FILES = {
    "dgx_h100.yaml": (8, ("gpu0", "nvsw0"), 450e9, 350e-9),
    "dgx_a100.yaml": (8, ("gpu0", "nvsw0"), 300e9, 350e-9),
    "edge_home_8.yaml": (8, ("dev0", "router0"), 300e6 / 8, 1e-3),
    "fat_tree_k8.yaml": (128, ("gpu0", "edge0.0"), 400e9 / 8, 500e-9),
    "h800_cluster_512.yaml": (512, ("leafA0.0", "spine0"), 200e9 / 8, 600e-9),
    "mi210_ring8.yaml": (8, ("gpu0", "gpu1"), 75e9, 500e-9),
    "two_dc_wan.yaml": (16, ("dc0.gw", "dc1.gw"), 10e9 / 8, 20e-3),
    "azure_ndv4.yaml": (16, ("gpu0", "nvsw0"), 300e9, 350e-9),
}


def test_the_study_files_exist():
    assert set(FILES) <= set(ALL_FILES)


@pytest.mark.parametrize("name", ALL_FILES)
def test_topology_file_loads_checks_and_routes(name):
    topo = load_topology(TOPOLOGY_DIR / name)
    topo.check()
    assert topo.description, f"{name} has no description"
    router = Router(topo)
    first = topo.devices[0]
    for other in topo.devices[1:]:  # every device reaches the first one and back
        assert_valid_route(router, other, first, router.path(other, first))
        assert_valid_route(router, first, other, router.path(first, other))
    if name in FILES:
        devices, (a, b), bandwidth, latency = FILES[name]
        assert len(topo.devices) == devices
        edge = topo.graph.edges[a, b]
        assert edge["bandwidth"] == pytest.approx(bandwidth, rel=1e-12)
        assert edge["latency"] == pytest.approx(latency, rel=1e-12)


def test_h800_cluster_is_non_blocking():
    # 16 servers per leaf, each NIC port 200 Gbps down; 16 spines: 16 x 200 Gbps up = 1:1
    topo = load_topology(TOPOLOGY_DIR / "h800_cluster_512.yaml")
    down = sum(d["bandwidth"] for a, b, d in topo.links() if b == "leafA0.0" and a.startswith("nic"))
    up = sum(d["bandwidth"] for a, b, d in topo.links() if a == "leafA0.0" and b.startswith("spine"))
    assert down == up == 16 * 25e9


def test_server_count_override():
    topo = load_topology(TOPOLOGY_DIR / "azure_ndv4.yaml", overrides={"servers": 1})
    assert len(topo.devices) == 8


def test_edge_file_routes_are_four_links_of_one_ms():
    topo = load_topology(TOPOLOGY_DIR / "edge_home_8.yaml")
    router = Router(topo)
    path = router.path("dev0", "dev5")
    assert len(path) == 4
    assert router.latency(path) == pytest.approx(4e-3, rel=1e-12)


SMALL = {
    "ring": {"n": 5},
    "fully_connected": {"n": 4},
    "switch": {"n": 4},
    "nvswitch_node": {"gpus": 4},
    "leaf_spine": {"leaves": 3, "spines": 2, "hosts_per_leaf": 2},
    "fat_tree": {"k": 4},
    "rail_optimized": {"servers": 3, "gpus_per_server": 2},
    "torus": {"dims": [3, 2, 2]},
    "home_router_edge": {"devices": 5, "devices_per_router": 2},
    "wan": {"datacenters": 3, "devices_per_dc": 2},
    "dragonfly": {"servers": 6, "servers_per_switch": 2, "switches_per_group": 2, "global_links": 1},
}


def test_every_generator_has_a_small_instance():
    assert sorted(SMALL) == sorted(GENERATORS)


def assert_valid_route(router: Router, src: str, dst: str, path: tuple[int, ...]):
    c = router.compiled
    nodes = router.nodes_of(path)
    assert c.names[nodes[0]] == src and c.names[nodes[-1]] == dst
    for e, f in itertools.pairwise(path):  # consecutive edges join up
        assert c.edge_dst[e] == c.edge_src[f]
    for inner in nodes[1:-1]:  # only forwarding nodes in between
        assert c.transit[inner], f"{src}->{dst} passes through {c.names[inner]}, which does not forward"
    assert len(set(nodes)) == len(nodes), "a route visits a node twice"


@pytest.mark.parametrize("generator", sorted(SMALL))
@pytest.mark.parametrize("policy", ["ecmp", "shortest"])
def test_generator_builds_and_routes_every_pair(generator, policy):
    topo = GENERATORS[generator](**SMALL[generator])
    topo.check()
    router = Router(topo, policy=policy, seed=3)
    for src, dst in itertools.permutations(topo.devices, 2):
        assert_valid_route(router, src, dst, router.path(src, dst, key=hash((src, dst)) % 1000))


def test_default_rail_optimized_cluster_builds():
    # Regression: with one leaf per rail the leaves had no spines, so GPUs on different rails of
    # different servers could not reach each other and the default call failed its own check.
    topo = GENERATORS["rail_optimized"]()
    router = Router(topo)
    assert_valid_route(router, "gpu31", "gpu0", router.path("gpu31", "gpu0"))
    with pytest.raises(TopologyError, match="spines = 0: cannot be 0"):
        GENERATORS["rail_optimized"](servers=2, gpus_per_server=2, spines=0)
    # one GPU per server (one rail) or one server need no spines
    assert "spine0" not in GENERATORS["rail_optimized"](servers=3, gpus_per_server=1, spines=0).graph
    assert "spine0" not in GENERATORS["rail_optimized"](servers=1, gpus_per_server=4, spines=0).graph


def spine_of(router: Router, src: str, dst: str, key: int) -> str:
    return router.compiled.names[router.nodes_of(router.path(src, dst, key=key))[2]]


def test_ecmp_spreads_keys_over_spines_but_is_stable_per_key():
    topo = leaf_spine(leaves=2, spines=4, hosts_per_leaf=2)
    router = Router(topo, policy="ecmp", seed=0)
    counts = Counter(spine_of(router, "gpu0", "gpu3", k) for k in range(64))
    assert len(counts) >= 3, counts
    assert max(counts.values()) < 64 * 0.6, counts
    # the same key always takes the same path: again, from a fresh router, and after the caches are dropped
    again = Router(topo, policy="ecmp", seed=0)
    first = {k: router.path("gpu0", "gpu3", key=k) for k in range(64)}
    router.fail([0])
    router.restore([0])
    for k in range(64):
        assert router.path("gpu0", "gpu3", key=k) == first[k] == again.path("gpu0", "gpu3", key=k)
    # a different hash seed is a different fabric: some keys move
    other = Router(topo, policy="ecmp", seed=1)
    assert any(other.path("gpu0", "gpu3", key=k) != first[k] for k in range(64))


def test_shortest_is_deterministic():
    topo = leaf_spine(leaves=2, spines=4, hosts_per_leaf=2)
    a = Router(topo, policy="shortest", seed=0)
    b = Router(topo, policy="shortest", seed=9)
    paths = {a.path("gpu0", "gpu3", key=k) for k in range(32)} | {b.path("gpu0", "gpu3", key=k) for k in range(32)}
    assert len(paths) == 1
    assert spine_of(a, "gpu0", "gpu3", 0) == "spine0"  # the lowest-numbered next hop


def chain(middle_forwards: bool) -> Topology:
    """gpu0 - gpu1 - gpu2 directly linked, and a longer detour gpu0 - swA - swB - gpu2."""
    topo = Topology("chain")
    for name in ("gpu0", "gpu1", "gpu2"):
        topo.add_node(name, "device", device="h100_sxm", forwards=(name == "gpu1" and middle_forwards))
    topo.add_node("swA", "switch")
    topo.add_node("swB", "switch")
    topo.add_link("gpu0", "gpu1", bandwidth=1e9)
    topo.add_link("gpu1", "gpu2", bandwidth=1e9)
    topo.add_link("gpu0", "swA", bandwidth=1e9)
    topo.add_link("swA", "swB", bandwidth=1e9)
    topo.add_link("swB", "gpu2", bandwidth=1e9)
    return topo


@pytest.mark.parametrize("policy", ["ecmp", "shortest"])
def test_routes_never_pass_through_a_device_that_does_not_forward(policy):
    topo = chain(middle_forwards=False)
    topo.check()
    router = Router(topo, policy=policy)
    names = router.compiled.names
    assert [names[v] for v in router.nodes_of(router.path("gpu0", "gpu2"))] == ["gpu0", "swA", "swB", "gpu2"]
    # a forwarding device is used when it is the shorter way
    router = Router(chain(middle_forwards=True), policy=policy)
    assert [names[v] for v in router.nodes_of(router.path("gpu0", "gpu2"))] == ["gpu0", "gpu1", "gpu2"]


def test_ring_relays_through_devices():
    topo = ring(n=6)
    router = Router(topo, policy="shortest")
    nodes = [router.compiled.names[v] for v in router.nodes_of(router.path("gpu0", "gpu2"))]
    assert nodes == ["gpu0", "gpu1", "gpu2"]
    assert all(topo.graph.nodes[n]["forwards"] for n in topo.devices)


def test_devices_that_only_meet_through_a_non_forwarding_device_fail_the_check():
    topo = Topology("bad-chain")
    for name in ("gpu0", "gpu1", "gpu2"):
        topo.add_node(name, "device", device="h100_sxm")
    topo.add_link("gpu0", "gpu1", bandwidth=1e9)
    topo.add_link("gpu1", "gpu2", bandwidth=1e9)
    with pytest.raises(TopologyError) as info:
        topo.check()
    text = str(info.value)
    assert "gpu2" in text and "cannot reach gpu0" in text and "forwards: true" in text


def test_failed_links_are_avoided_and_no_route_is_an_error():
    topo = chain(middle_forwards=True)
    router = Router(topo, policy="shortest")
    c = router.compiled
    direct = router.path("gpu0", "gpu2")
    router.fail([c.edge_index[(c.index["gpu1"], c.index["gpu2"])]])
    detour = router.path("gpu0", "gpu2")
    assert detour != direct
    assert [c.names[v] for v in router.nodes_of(detour)] == ["gpu0", "swA", "swB", "gpu2"]
    router.fail([c.edge_index[(c.index["swB"], c.index["gpu2"])]])
    with pytest.raises(RoutingError) as caught:
        router.path("gpu0", "gpu2")
    error = caught.value
    assert (error.field, error.value) == ("route", "gpu0 -> gpu2")
    assert error.rule == "has no path avoiding 2 failed link direction(s)"
    assert str(error).endswith("Fix: restore a failed link or add a path between them.")
    router.restore(list(router.failed))
    assert router.path("gpu0", "gpu2") == direct


def test_explicit_paths_are_used_by_transfers():
    topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=2, bandwidth=10e9, latency=0.0, switch_latency=0.0)
    env = simpy.Environment()
    recorder = Recorder()
    net = Network(FluidKernel(env), topo, routing="shortest", recorder=recorder)
    assert spine_of(net.router, "gpu0", "gpu3", 0) == "spine0"
    pinned = net.router.set_path(["gpu0", "leaf0", "spine1", "leaf1", "gpu3"])
    assert net.router.path("gpu0", "gpu3") == pinned
    net.transfer("gpu0", "gpu3", 1e9)
    env.run()
    assert recorder.flows[0][5] == "gpu0 leaf0 spine1 leaf1 gpu3"
    # the pinned path is not used when it crosses a failed link; clear_paths forgets it
    c = net.router.compiled
    net.router.fail([c.edge_index[(c.index["leaf0"], c.index["spine1"])]])
    assert spine_of(net.router, "gpu0", "gpu3", 0) == "spine0"
    net.router.restore(list(net.router.failed))
    net.router.clear_paths()
    assert spine_of(net.router, "gpu0", "gpu3", 0) == "spine0"


@pytest.mark.parametrize(
    ("nodes", "words"),
    [
        (["gpu0", "spine0", "leaf1", "gpu3"], ["path", "has no link from gpu0 to spine0", "linked"]),
        (["gpu0", "leaf0", "gpu1", "leaf0"], ["path = 'gpu1'", "passes through a device", "switches"]),
        (["gpu0"], ["needs at least two nodes", "destination"]),
        (["gpu0", "leaf9"], ["node = 'leaf9'", "is not a node of the topology"]),
    ],
)
def test_explicit_paths_are_validated(nodes, words):
    router = Router(leaf_spine(leaves=2, spines=2, hosts_per_leaf=2))
    with pytest.raises(ConfigError) as info:
        router.set_path(nodes)
    for word in words:
        assert word in str(info.value)


def test_shorthands_build_the_named_generator():
    topo = load_topology("leaf_spine:2,2,2,100Gbps")
    assert len(topo.devices) == 4 and topo.graph.edges["gpu0", "leaf0"]["bandwidth"] == 12.5e9
    topo = load_topology("torus:2x3,10GB/s,1us")
    assert len(topo.devices) == 6
    topo = load_topology("fat_tree:k=4,bandwidth=400Gbps", overrides={"k": 2})
    assert len(topo.devices) == 2


def test_equal_cost_paths_are_every_ecmp_choice_and_avoid_failed_edges():
    from commsim.network.routing import equal_cost_paths

    topo = leaf_spine(leaves=2, spines=3, hosts_per_leaf=2, bandwidth=50e9)
    c = topo.compile()
    src, dst = c.index["gpu0"], c.index["gpu3"]
    paths = equal_cost_paths(c, src, dst)
    spines = sorted(c.names[c.edge_dst[p[1]]] for p in paths)
    assert spines == ["spine0", "spine1", "spine2"] and all(len(p) == 4 for p in paths)
    router = Router(topo, policy="ecmp", seed=5)
    assert {router.path("gpu0", "gpu3", key) for key in range(64)} <= set(paths)
    up = c.edge_index[(c.index["leaf0"], c.index["spine1"])]
    left = equal_cost_paths(c, src, dst, {up})
    assert len(left) == 2 and all(up not in p for p in left)
    assert equal_cost_paths(c, src, dst, {p[0] for p in paths}) == []   # the host's only link is down


def test_the_graph_is_a_snapshot_that_follows_the_topology_s_changes():
    topo = Topology("t")
    topo.add_node("gpu0", "device", device="h100_sxm")
    topo.add_node("sw", "switch", latency=1e-6)
    first = topo.graph
    assert list(first.nodes) == ["gpu0", "sw"] and first.number_of_edges() == 0
    topo.add_link("gpu0", "sw", bandwidth=50e9, bandwidth_back=25e9)
    assert topo.graph is not first and topo.graph.edges["sw", "gpu0"]["bandwidth"] == 25e9
    assert topo.has_link("gpu0", "sw") and topo.has_link("sw", "gpu0") and not topo.has_link("gpu0", "gpu0")
    topo.set_device("gpu0", "a100_40gb")
    assert topo.graph.nodes["gpu0"]["device"] == "a100_40gb" == topo.device_spec("gpu0")
    assert topo.node_attributes("sw")["latency"] == 1e-6 and topo.link_count == 1
    with pytest.raises(TopologyError, match="is not a device node"):
        topo.set_device("sw", "a100_40gb")


def test_a_disconnected_topology_names_its_smallest_part():
    topo = Topology("t")
    for name in ("gpu0", "gpu1", "gpu2"):
        topo.add_node(name, "device", device="h100_sxm")
    topo.add_link("gpu0", "gpu1", bandwidth=1e9)
    with pytest.raises(TopologyError, match=r"disconnected \(2 parts") as caught:
        topo.check()
    assert caught.value.value == ["gpu2"]


def test_routers_of_one_topology_share_intact_routes_but_not_failed_ones():
    topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=2)
    a, b = Router(topo), Router(topo)
    src, dst = topo.devices[0], topo.devices[-1]
    first = a.path(src, dst, key=7)
    assert b._cache is a._cache and b.path(src, dst, key=7) == first
    a.fail([first[1]])                          # a's spine link down: a reroutes, b keeps the intact route
    assert first[1] not in a.path(src, dst, key=7)
    assert b.path(src, dst, key=7) == first and Router(topo).path(src, dst, key=7) == first


def test_a_copy_has_the_same_network_and_changes_alone():
    topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=2)
    twin = topo.copy()
    assert (twin.name, twin.nodes(), list(twin.links())) == (topo.name, topo.nodes(), list(topo.links()))
    assert twin.node_attributes(twin.devices[0]) == topo.node_attributes(topo.devices[0])
    twin.add_node("extra", "host")
    twin.add_link("extra", twin.nodes("switch")[0], bandwidth=1e9)
    assert not topo.has_node("extra") and twin.link_count == topo.link_count + 1
