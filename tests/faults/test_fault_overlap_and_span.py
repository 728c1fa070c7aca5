"""Overlapping faults combine as a union, faults keep bytes conserved, and faults after the workload
change nothing (properties over random fault histories), plus the hand-checked cases behind them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.network.generators import leaf_spine, switch
from commsim.simulation import Simulation

GB = 1e9
LINKS = [("gpu0", "sw"), ("gpu1", "sw")]


def _transfer_run(faults, nbytes=1e8):
    """gpu0 -> gpu1 over a 10 GB/s switch (10 ms of data) under ``faults``; (end of transfer, result, sim)."""
    sim = Simulation(switch(n=2, bandwidth="10 GB/s", latency="1 us"))
    ends = {}

    def body():
        yield sim.network.transfer("gpu0", "gpu1", nbytes)
        ends["t"] = sim.now

    sim.process(body())
    sim.schedule_faults(faults)
    result = sim.run()
    return ends["t"], result, sim


def _outage(link, start, length):
    return {"kind": "link_down", "at": start, "link": list(link), "duration": length}


def _union(intervals):
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def test_a_link_comes_back_only_when_every_outage_covering_it_has_ended():
    # outages 1-6 ms and 2-3 ms: the link is down 1-6 ms; 10 ms of data then ends at 15 ms (+ latency)
    end, _, _ = _transfer_run([_outage(LINKS[0], 1e-3, 5e-3), _outage(LINKS[0], 2e-3, 1e-3)])
    alone, _, _ = _transfer_run([_outage(LINKS[0], 1e-3, 5e-3)])
    assert end == pytest.approx(alone, rel=1e-12)
    assert end == pytest.approx(15e-3 + 2e-6, rel=1e-9)


def test_link_up_ends_open_outages_but_not_a_timed_one_still_running():
    # a permanent outage at 1 ms, a timed one 2-8 ms, link_up at 4 ms: down 1-8 ms
    faults = [{"kind": "link_down", "at": 1e-3, "link": ["gpu0", "sw"]}, _outage(LINKS[0], 2e-3, 6e-3),
              {"kind": "link_up", "at": 4e-3, "link": ["sw", "gpu0"]}]
    end, _, _ = _transfer_run(faults)
    assert end == pytest.approx(17e-3 + 2e-6, rel=1e-9)


def test_overlapping_degradations_apply_the_worst_factor_while_it_lasts():
    # 0.5 from 0 to 4 ms and 0.25 from 1 to 2 ms: 0-1 ms at 5 GB/s, 1-2 ms at 2.5, 2-4 ms at 5, then 10 GB/s
    faults = [{"kind": "link_degraded", "at": 0, "link": ["gpu0", "sw"], "factor": 0.5, "duration": 4e-3},
              {"kind": "link_degraded", "at": 1e-3, "link": ["gpu0", "sw"], "factor": 0.25, "duration": 1e-3}]
    end, _, _ = _transfer_run(faults)
    sent_by_4ms = (5 + 2.5 + 10) * GB * 1e-3
    assert end == pytest.approx(4e-3 + (1e8 - sent_by_4ms) / (10 * GB) + 2e-6, rel=1e-9)


@settings(max_examples=40)
@given(st.lists(st.tuples(st.sampled_from(LINKS), st.floats(0, 20e-3), st.floats(1e-5, 8e-3)), min_size=1,
                max_size=6))
def test_any_overlapping_outages_equal_their_union(outages):
    by_link = {}
    for link, start, length in outages:
        by_link.setdefault(link, []).append((start, start + length))
    merged = [_outage(link, start, end - start) for link, spans in by_link.items() for start, end in _union(spans)]
    end_overlapping, result_a, _ = _transfer_run([_outage(*o) for o in outages])
    end_union, result_b, _ = _transfer_run(merged)
    assert end_overlapping == pytest.approx(end_union, rel=1e-9, abs=1e-15)
    assert result_a.metrics["bytes_delivered"] == result_b.metrics["bytes_delivered"]


@settings(max_examples=25)
@given(st.lists(st.tuples(st.sampled_from(["link_down", "link_degraded", "straggler"]), st.integers(0, 11),
                          st.floats(0, 5e-3), st.floats(1e-5, 3e-3), st.floats(0.1, 1.0)), max_size=8),
       st.integers(0, 3))
def test_bytes_sent_equal_bytes_delivered_under_random_faults(drawn, seed):
    topo = leaf_spine(leaves=2, spines=2, hosts_per_leaf=2, bandwidth="10 GB/s")
    links = sorted({tuple(sorted((a, b))) for a, b, _ in topo.links()})
    sim = Simulation(topo, seed=seed)
    faults = []
    for kind, which, at, length, factor in drawn:
        if kind == "straggler":
            faults.append({"kind": kind, "at": at, "device": topo.devices[which % 4], "slowdown": 1 / factor,
                           "duration": length})
        elif kind == "link_down":
            faults.append({"kind": kind, "at": at, "link": list(links[which % len(links)]), "duration": length})
        else:
            faults.append({"kind": kind, "at": at, "link": list(links[which % len(links)]), "factor": factor,
                           "duration": length})
    sim.schedule_faults(faults)

    def body(src, dst):
        yield sim.network.transfer(src, dst, 2e7)

    for i, src in enumerate(topo.devices):
        sim.process(body(src, topo.devices[(i + 1) % 4]))
    result = sim.run()
    assert result.metrics["bytes_sent"][0] == pytest.approx(4 * 2e7)
    assert result.metrics["bytes_delivered"][0] == pytest.approx(result.metrics["bytes_sent"][0])


@settings(max_examples=20)
@given(st.lists(st.tuples(st.sampled_from(LINKS), st.floats(1e-3, 1e30)), min_size=1, max_size=4),
       st.sampled_from(["link_down", "link_degraded"]))
def test_a_fault_after_the_workload_changes_nothing(late, kind):
    clean_end, clean, _ = _transfer_run([])
    faults = [{"kind": kind, "at": clean_end + offset, "link": list(link)}
              | ({"factor": 0.5} if kind == "link_degraded" else {}) for link, offset in late]
    end, result, sim = _transfer_run(faults)
    assert end == clean_end
    assert result.metrics == clean.metrics
    assert result.flows.equals(clean.flows) and result.link_usage.equals(clean.link_usage)
    assert sim.faults.applied == [] and len(sim.faults.not_reached) == len(faults)
    reported = result.events[result.events["kind"] == "fault_not_reached"]
    assert len(reported) == len(faults)


def test_a_repair_long_after_the_work_does_not_stretch_the_makespan():
    # the link fails for 1 ms mid-transfer; a second, unrelated outage at 10^30 s must not become the makespan
    end, result, sim = _transfer_run([_outage(LINKS[1], 1e-3, 1e-3), _outage(LINKS[0], 1e30, 1.0)])
    assert result.makespan == pytest.approx(end) and end == pytest.approx(11e-3 + 2e-6, rel=1e-9)
    assert 0.9 < result.metrics["busiest_link_utilisation"][0] <= 1.0
    assert [f.at for f in sim.faults.not_reached] == [1e30]
