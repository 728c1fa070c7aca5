"""Faults: reroutes, stalls and repairs with hand-computed times, degraded links, stragglers, failed
devices, and drawing fault histories from rates with a seed."""

from __future__ import annotations

import itertools

import pytest

from commsim.errors import ConfigError, StallError
from commsim.faults import FaultRates, LinkDown, Straggler, draw_faults
from commsim.network import Topology
from commsim.network.generators import leaf_spine, switch
from commsim.simulation import Simulation

GB = 1e9
LINK_LATENCY = 1e-6
SWITCH_LATENCY = 100e-9


def detour_topology(detour: bool = True) -> Topology:
    """gpu0 - sw0 - sw1 - gpu1 at 10 GB/s; optionally a slower detour sw0 - sw2 - sw1 at 2 GB/s.

    Every link has 1 us of latency, every switch 100 ns.
    """
    topo = Topology("detour" if detour else "line")
    topo.add_node("gpu0", "device", device="h100_sxm")
    topo.add_node("gpu1", "device", device="h100_sxm")
    for name in ("sw0", "sw1", "sw2") if detour else ("sw0", "sw1"):
        topo.add_node(name, "switch", latency=SWITCH_LATENCY)
    topo.add_link("gpu0", "sw0", bandwidth=10 * GB, latency=LINK_LATENCY)
    topo.add_link("sw0", "sw1", bandwidth=10 * GB, latency=LINK_LATENCY)
    topo.add_link("sw1", "gpu1", bandwidth=10 * GB, latency=LINK_LATENCY)
    if detour:
        topo.add_link("sw0", "sw2", bandwidth=2 * GB, latency=LINK_LATENCY)
        topo.add_link("sw2", "sw1", bandwidth=2 * GB, latency=LINK_LATENCY)
    return topo


def transfer_end(sim, src="gpu0", dst="gpu1", nbytes=1 * GB, label="grads"):
    ends = {}

    def body():
        yield sim.network.transfer(src, dst, nbytes, label=label)
        ends["t"] = sim.now

    sim.process(body())
    return ends


def test_link_failure_mid_transfer_reroutes():
    # 1 GB at 10 GB/s over gpu0 sw0 sw1 gpu1. At 50 ms (0.5 GB sent) sw0-sw1 fails; the flow moves to
    # the 2 GB/s detour: 0.5 GB / 2 GB/s = 0.25 s -> fluid part ends at 0.3 s, then the new route's
    # latency: 4 links of 1 us and 3 switches of 100 ns.
    sim = Simulation(detour_topology(), routing="shortest", verify=True)
    sim.schedule_faults([{"kind": "link_down", "at": "50 ms", "link": ["sw0", "sw1"]}])
    end = transfer_end(sim)
    result = sim.run()
    assert end["t"] == pytest.approx(0.3 + 4 * LINK_LATENCY + 3 * SWITCH_LATENCY, rel=1e-12)
    path = result.flows.loc[0, "path"].split()
    assert path == ["gpu0", "sw0", "sw2", "sw1", "gpu1"]
    assert ("sw0", "sw1") not in list(itertools.pairwise(path))
    kinds = result.events.kind.tolist()
    assert kinds == ["link_down", "reroute"]
    assert "transfer grads gpu0->gpu1" in result.events.target.iloc[1]
    # nothing lost, and every link is credited with what it carried: the first half on sw0-sw1,
    # the second half on the detour, the whole on the access links
    carried = sim.kernel.carried()
    link = sim.network.link_resource
    assert carried[link("sw0", "sw1")] == pytest.approx(0.5 * GB, rel=1e-12)
    assert carried[link("sw0", "sw2")] == carried[link("sw2", "sw1")] == pytest.approx(0.5 * GB, rel=1e-12)
    assert carried[link("gpu0", "sw0")] == carried[link("sw1", "gpu1")] == pytest.approx(1 * GB, rel=1e-12)
    usage = result.link_usage
    for a, b in (("sw0", "sw1"), ("sw0", "sw2"), ("gpu0", "sw0")):
        rows = usage[usage.resource == f"link:{a}->{b}"]
        assert ((rows.end - rows.start) * rows.load).sum() == pytest.approx(carried[link(a, b)], rel=1e-9)
    assert result.metrics["bytes_delivered"][0] == result.metrics["bytes_sent"][0] == 1 * GB


def test_failure_without_detour_stalls_and_names_the_transfer():
    sim = Simulation(detour_topology(detour=False), verify=True)
    sim.schedule_faults([{"kind": "link_down", "at": "50 ms", "link": ["sw0", "sw1"]}])
    transfer_end(sim)
    with pytest.raises(StallError) as info:
        sim.run()
    error = info.value
    text = str(error)
    assert "1 activity can never finish" in text
    assert "transfer grads gpu0->gpu1 of 953.7 MiB via gpu0 sw0 sw1 gpu1" in text
    assert "Fix: restore the failed link" in text
    assert error.stalled == ["transfer grads gpu0->gpu1 of 953.7 MiB via gpu0 sw0 sw1 gpu1"]
    events = error.result.events
    assert events.kind.tolist() == ["link_down", "stall", "stall"]
    assert events.detail.tolist()[1:] == ["no route left", "can never finish"]
    assert error.result.metrics["bytes_delivered"][0] == 0.0


def test_stall_can_be_reported_instead_of_raised():
    sim = Simulation(detour_topology(detour=False))
    sim.schedule_faults([LinkDown(at=0.05, link=("sw0", "sw1"))])
    end = transfer_end(sim)
    result = sim.run(on_stall="report")
    assert "t" not in end
    stalls = result.events[result.events.kind == "stall"]
    assert len(stalls) == 2 and all("transfer grads gpu0->gpu1" in t for t in stalls.target)
    assert result.flows.empty


def test_link_down_with_duration_resumes_the_stalled_flow():
    # 0.5 GB sent by 50 ms; the link is down for 200 ms; the remaining 0.5 GB then take 50 ms on the
    # same route: fluid part ends at 0.3 s, plus 3 links of 1 us and 2 switches of 100 ns.
    sim = Simulation(detour_topology(detour=False), verify=True)
    sim.schedule_faults([{"kind": "link_down", "at": "50 ms", "link": ["sw0", "sw1"], "duration": "200 ms"}])
    end = transfer_end(sim)
    result = sim.run()
    assert end["t"] == pytest.approx(0.3 + 3 * LINK_LATENCY + 2 * SWITCH_LATENCY, rel=1e-12)
    assert result.events.kind.tolist() == ["link_down", "stall", "link_up"]
    assert result.events.time.tolist() == pytest.approx([0.05, 0.05, 0.25])


def test_explicit_link_up_repairs():
    sim = Simulation(detour_topology(detour=False))
    sim.schedule_faults([{"kind": "link_down", "at": 0.05, "link": ["sw0", "sw1"]},
                         {"kind": "link_up", "at": 0.1, "link": ["sw1", "sw0"]}])
    end = transfer_end(sim)
    sim.run()
    # stalled from 50 ms to 100 ms: the 1 GB transfer ends 50 ms late
    assert end["t"] == pytest.approx(0.15 + 3 * LINK_LATENCY + 2 * SWITCH_LATENCY, rel=1e-12)


def test_degraded_link_slows_the_flow_by_the_factor():
    # From 20 ms (0.2 GB sent) the sw0-sw1 link runs at a quarter: 2.5 GB/s for the last 0.8 GB -> 0.32 s
    # -> fluid part ends at 0.34 s. With a duration of 100 ms it is back to 10 GB/s at 0.12 s
    # (0.2 + 0.25 = 0.45 GB sent), and the last 0.55 GB take 55 ms -> 0.175 s.
    for duration, expected in ((None, 0.34), ("100 ms", 0.175)):
        sim = Simulation(detour_topology(detour=False), verify=True)
        sim.schedule_faults([{"kind": "link_degraded", "at": "20 ms", "link": ["sw0", "sw1"], "factor": 0.25,
                              "duration": duration}])
        end = transfer_end(sim)
        result = sim.run()
        assert end["t"] == pytest.approx(expected + 3 * LINK_LATENCY + 2 * SWITCH_LATENCY, rel=1e-12)
        assert result.events.kind.iloc[0] == "link_degraded" and result.events.detail.iloc[0] == "factor 0.25"


def test_straggler_slows_compute():
    # A compute-bound kernel of 1 s (H100: 989 TFLOP/s x 0.7) on gpu0; from 0.25 s the device runs 2x
    # slower: the remaining 0.75 s of work take 1.5 s -> ends at 1.75 s. With a duration of 0.5 s the
    # slowdown ends at 0.75 s (0.25 s of work done in it), and the last 0.5 s run at full speed -> 1.25 s.
    for duration, expected in ((None, 1.75), (0.5, 1.25)):
        sim = Simulation(switch(n=2), verify=True)
        sim.schedule_faults([Straggler(at=0.25, device="gpu0", slowdown=2.0, duration=duration)])
        ends = {}

        def body(sim=sim, ends=ends):
            yield sim.devices["gpu0"].compute(flops=989e12 * 0.7, nbytes=1e9)
            ends["t"] = sim.now

        sim.process(body())
        result = sim.run()
        assert ends["t"] == pytest.approx(expected, rel=1e-12)
        assert result.events.kind.iloc[0] == "straggler"


def test_failed_device_stalls_its_kernel():
    sim = Simulation(switch(n=2))
    sim.schedule_faults([{"kind": "device_failure", "at": 0.1, "device": "gpu1"}])
    sim.devices["gpu1"].compute(flops=989e12 * 0.7, nbytes=1e9, name="gemm")
    with pytest.raises(StallError) as info:
        sim.run()
    assert info.value.stalled == ["compute 'gemm' on gpu1"]
    assert info.value.result.events.kind.tolist() == ["device_failure", "stall"]


def test_failed_device_resumes_after_repair():
    # 1 s of compute; the device is down from 0.1 s for 0.4 s -> ends at 1.4 s.
    sim = Simulation(switch(n=2), verify=True)
    sim.schedule_faults([{"kind": "device_failure", "at": 0.1, "device": "gpu1", "duration": 0.4}])
    ends = {}

    def body():
        yield sim.devices["gpu1"].compute(flops=989e12 * 0.7, nbytes=1e9)
        ends["t"] = sim.now

    sim.process(body())
    result = sim.run()
    assert ends["t"] == pytest.approx(1.4, rel=1e-12)
    assert result.events.kind.tolist() == ["device_failure", "device_repair"]


def test_same_seed_same_fault_history_different_seed_different():
    topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=2)
    rates = FaultRates(link_down="2 /h", link_repair_time="10 min", link_degraded="1 /h", device_failure="0.5 /h",
                       straggler="1 /h", straggler_time="5 min")
    a = draw_faults(rates, topo, horizon="24 h", seed=7)
    b = draw_faults(rates, topo, horizon="24 h", seed=7)
    c = draw_faults(rates, topo, horizon="24 h", seed=8)
    assert a == b and len(a) > 10
    assert a != c
    assert [f.at for f in a] == sorted(f.at for f in a)
    assert {f.kind for f in a} == {"link_down", "link_degraded", "device_failure", "straggler"}
    assert all(0 <= f.at < 24 * 3600 for f in a)
    assert all(f.duration == 600.0 for f in a if f.kind == "link_down")
    # a drawn history can be scheduled as is; with no workload every fault comes after its end
    sim = Simulation(topo)
    sim.schedule_faults(a)
    result = sim.run()
    assert result.makespan == 0.0
    assert sim.faults.applied == [] and sim.faults.not_reached == a


def test_no_rates_no_faults():
    assert draw_faults(FaultRates(), switch(n=4), horizon="30 days", seed=1) == []


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"kind": "link_down", "at": "1 ms", "link": ["gpu0", "gpu1"]},
         ["faults[0].link", "['gpu0', 'gpu1']", "is not a link of the topology", "directly linked"]),
        ({"kind": "device_failure", "at": "1 ms", "device": "gpu7"},
         ["faults[0].device", "'gpu7'", "is not a device of the topology", "gpu0"]),
        ({"kind": "straggler", "at": 0, "device": "sw", "slowdown": 2},
         ["faults[0].device", "'sw'", "is not a device"]),
        ({"kind": "link_degraded", "at": "1 ms", "link": ["gpu0", "sw"], "factor": 0},
         ["factor", "= 0", "must be above 0", "Fix: give a value above 0"]),
        ({"kind": "link_down", "at": "-1 ms", "link": ["gpu0", "sw"]},
         ["at", "'-1 ms'", "must be at least 0"]),
        ({"kind": "straggler", "at": 0, "device": "gpu0", "slowdown": 0.5},
         ["slowdown", "0.5", "must be at least 1"]),
        ({"kind": "link_dwn", "at": 0, "link": ["gpu0", "sw"]},
         ["faults[0]", "'link_dwn'", "not one of the known kinds", "'link_down'"]),
        ({"kind": "link_down", "at": 0, "link": ["gpu0", "sw"], "duraton": 1},
         ["duraton", "is not a known field", "duration"]),
    ],
)
def test_bad_faults_are_config_errors(fault, words):
    sim = Simulation(switch(n=2))
    with pytest.raises(ConfigError) as info:
        sim.schedule_faults([fault])
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("rates", "words"),
    [
        ({"link_down": "-1 /day"}, ["link_down", "'-1 /day'", "must be at least 0", "Fix:"]),
        ({"straggler": "1 per fortnight"}, ["straggler", "unknown event_rate unit 'per fortnight'", "/day"]),
        ({"degraded_factor": 0}, ["degraded_factor", "must be above 0"]),
        ({"link_dwn": "1 /day"}, ["link_dwn", "is not a known field", "link_down"]),
    ],
)
def test_bad_fault_rates_are_config_errors(rates, words):
    from commsim.config import validate

    with pytest.raises(ConfigError) as info:
        validate(FaultRates, rates)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_degrade_factor_zero_is_refused_at_run_time_too():
    sim = Simulation(switch(n=2))
    with pytest.raises(ConfigError, match=r"factor = 0: must be in \(0, 1\]. Fix: .*use link_down for 0"):
        sim.network.degrade_link("gpu0", "sw", 0)
    with pytest.raises(ConfigError, match=r"slowdown = 0\.5: must be >= 1"):
        sim.devices["gpu0"].set_slowdown(0.5)


def test_faults_on_keeps_the_faults_a_network_has_a_target_for() -> None:
    from commsim.faults.injector import acts_on, faults_on

    small, large = switch(n=2), switch(n=4)
    faults = [LinkDown(at=0.0, link=("gpu1", "sw")), LinkDown(at=0.0, link=("gpu3", "sw")),
              Straggler(at=0.0, device="gpu3", slowdown=2.0)]
    assert faults_on(faults, small) == faults[:1]
    assert faults_on(faults, large) == faults
    assert acts_on(LinkDown(at=0.0, link=("sw", "gpu0")), small)     # either direction names the link
    assert not acts_on(LinkDown(at=0.0, link=("gpu0", "gpu1")), small)


def test_accepted_faults_parses_them_and_refuses_the_first_the_driver_cannot_apply() -> None:
    from commsim.faults.injector import accepted_faults

    links_only = {"rule": "is not a link fault", "fix": "fail a link"}
    given = [{"kind": "link_down", "at": 0, "link": ["gpu0", "sw"]}]
    assert accepted_faults(given, lambda f: hasattr(f, "link"), **links_only) == [LinkDown(at=0.0, link=("gpu0", "sw"))]
    with pytest.raises(ConfigError, match=r"faults\[1\] = 'straggler gpu1': is not a link fault\. Fix: fail a link"):
        accepted_faults([*given, Straggler(at=0.0, device="gpu1", slowdown=2.0)], lambda f: hasattr(f, "link"),
                        **links_only)
