"""Extension points of the collectives for studies: one flow per channel in flows mode, an observer of every
transfer, the flows a run will send (for routers that plan paths), and the hierarchical all-reduce's phases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from commsim.collectives import CollectiveConfig, CollectiveRun, build_schedule
from commsim.collectives.hierarchical import hierarchical_all_reduce, hierarchical_phases
from commsim.errors import ConfigError
from commsim.network.generators import leaf_spine, rail_optimized, switch
from commsim.network.routing import Router
from commsim.simulation import Simulation

FLOWS = CollectiveConfig(mode="flows", record="none")


def _run(topo, schedule, config, observer=None, seed=0):
    sim = Simulation(topo, seed=seed, record_usage=False)
    run = CollectiveRun(sim, schedule, topo.devices[:schedule.ranks], config, observer=observer)
    return sim, run


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_channel_flows_keep_one_flow_per_connection_and_channel_with_the_same_bytes(channels):
    topo = switch(n=4, bandwidth=50e9)
    schedule = build_schedule("all_reduce", "ring", 4, 2**24, channels=channels)
    merged = _run(topo, schedule, FLOWS)[1].schedule.steps[0]
    split = _run(topo, schedule, CollectiveConfig(mode="flows", record="none", channel_flows=True))[1].schedule.steps[0]
    assert len(merged) == 4 and len(split) == 4 * channels
    assert sorted(set(split.channel.tolist())) == list(range(channels))
    assert split.nbytes.sum() == pytest.approx(merged.nbytes.sum())
    # the same connections: per (src, dst), the channels' bytes add up to the merged flow's
    per_pair = np.bincount(split.src * 4 + split.dst, weights=split.nbytes, minlength=16)
    assert per_pair[merged.src * 4 + merged.dst] == pytest.approx(merged.nbytes)


def test_channels_hashed_apart_collide_or_not_by_seed_only_with_channel_flows():
    """Two channels of a connection over two spines: each its own hash, so some seed puts both on one spine."""
    topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=1, bandwidth=50e9)
    schedule = build_schedule("all_reduce", "ring", 2, 2**28, channels=2)
    times = set()
    for seed in range(8):
        sim, run = _run(topo, schedule, CollectiveConfig(mode="flows", record="none", channel_flows=True), seed=seed)
        run.start()
        sim.run()
        times.add(round(run.time, 9))
    assert len(times) == 2   # both channels on one spine (half speed) or one on each


class Watch:
    """A transfer observer that keeps what it saw."""

    def __init__(self):
        self.left, self.arrived = [], []

    def sent(self, run, step, entries, batch):
        self.left.append((step, entries.copy(), len(batch.routes)))

    def done(self, run, step, entries, time):
        self.arrived.append((step, entries.copy(), time))


@pytest.mark.parametrize("mode", ["steps", "flows"])
def test_an_observer_sees_every_transfer_leave_and_arrive(mode):
    topo = switch(n=4, bandwidth=50e9, latency=1e-6)
    schedule = build_schedule("all_reduce", "ring", 4, 2**20)
    watch = Watch()
    sim, run = _run(topo, schedule, CollectiveConfig(mode=mode, record="none"), observer=watch)
    run.start()
    sim.run()
    steps = run.schedule.steps
    for seen in (watch.left, watch.arrived):
        counts = np.zeros(len(steps), dtype=np.int64)
        for step, entries, _ in seen:
            counts[step] += entries.shape[0]
        assert counts.tolist() == [len(s) for s in steps]
    assert all(n == entries.shape[0] for _, entries, n in watch.left)
    assert max(t for _, _, t in watch.arrived) == pytest.approx(run.end_time)


def test_run_flows_are_the_flows_it_sends_so_a_planned_path_is_taken():
    topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=2, bandwidth=50e9)
    names = topo.compile().names
    schedule = build_schedule("all_reduce", "ring", 4, 2**24)
    seen = []

    class Paths:
        """Keeps the paths the pinned flow took."""

        def sent(self, run, step, entries, batch):
            seen.extend(batch.routes.paths[j] for j in range(len(entries)) if (
                int(batch.routes.src[j]), int(batch.routes.dst[j]), int(batch.routes.key[j])) == flow)

        def done(self, run, step, entries, time):
            pass

    sim, run = _run(topo, schedule, FLOWS, observer=Paths())
    src, dst, key = run.flows()
    assert len(src) == 4 and len(set(zip(src.tolist(), dst.tolist(), key.tolist(), strict=True))) == 4
    crossing = next(i for i in range(4) if {names[src[i]], names[dst[i]]} == {"gpu1", "gpu2"})
    flow = (int(src[crossing]), int(dst[crossing]), int(key[crossing]))
    hashed = [names[v] for v in sim.network.router.nodes_of(sim.network.router.path(*flow))]
    other = "spine1" if "spine0" in hashed else "spine0"   # plan the spine the hash did not pick
    planned = [hashed[0], hashed[1], other, hashed[3], hashed[4]]

    class Planned(Router):
        def path(self, s, d, k=0):
            if (self.node(s), self.node(d), int(k)) == flow:
                return self.set_path(planned)
            return super().path(s, d, k)

    sim.network.use_router(Planned(topo))
    run.start()
    sim.run()
    assert [[names[v] for v in sim.network.router.nodes_of(p)] for p in seen] == [planned]


def test_a_router_of_another_topology_is_refused_and_links_down_stay_down_for_a_new_one():
    topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=2, bandwidth=50e9)
    sim = Simulation(topo)
    with pytest.raises(ConfigError, match=r"router.*not built on this network's topology"):
        sim.network.use_router(Router(switch(n=4)))
    sim.network.fail_link("leaf0", "spine0")
    router = Router(topo, seed=3)
    sim.network.use_router(router)
    assert router.failed and sim.network.router is router
    names = topo.compile().names
    for key in range(16):
        assert "spine0" not in [names[v] for v in router.nodes_of(router.path("gpu0", "gpu3", key))]


def test_hierarchical_phases_are_the_hierarchical_all_reduce_cut_at_its_phase_boundaries():
    whole = hierarchical_all_reduce(16, 2**24, ranks_per_node=4, channels=2)
    phases = hierarchical_phases(16, 2**24, ranks_per_node=4, channels=2)
    assert [p.op for p in phases] == ["reduce_scatter", "all_reduce", "all_gather"]
    assert sum(len(p.steps) for p in phases) == len(whole.steps)
    assert sum(p.wire_bytes for p in phases) == pytest.approx(whole.wire_bytes)
    assert [p.op for p in hierarchical_phases(4, 2**20, ranks_per_node=1)] == ["all_reduce"]
    assert [p.op for p in hierarchical_phases(4, 2**20, ranks_per_node=4)] == ["reduce_scatter", "all_gather"]


def test_hierarchical_phases_one_after_another_take_the_sum_of_their_times():
    topo = rail_optimized(servers=4, gpus_per_server=2, nic_ports=1, port_bandwidth=25e9, spines=2)
    config = CollectiveConfig(mode="flows", record="none", channel_flows=True)
    sim = Simulation(topo, record_usage=False)
    runs = [CollectiveRun(sim, p, topo.devices, config) for p in hierarchical_phases(8, 2**26, ranks_per_node=2)]
    for prev, nxt in itertools.pairwise(runs):
        prev.done.callbacks.append(lambda _ev, n=nxt: n.start())
    runs[0].start()
    sim.run()
    assert runs[-1].end_time == pytest.approx(sum(r.time for r in runs))
    alone = []
    for p in hierarchical_phases(8, 2**26, ranks_per_node=2):
        s = Simulation(topo, record_usage=False)
        r = CollectiveRun(s, p, topo.devices, config)
        r.start()
        s.run()
        alone.append(r.time)
    assert [r.time for r in runs] == pytest.approx(alone)
