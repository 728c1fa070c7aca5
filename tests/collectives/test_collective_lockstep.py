"""Lockstep chains: whole steps that run alone are worked out together, with the same results.

Recording every transfer (``record="flows"``) sends each step through the network
and the kernel, so it is the reference: a run that may go in lockstep must give
the same times (bit for bit), bytes, carried bytes and usage log, whatever
interrupts its chains (other flows, faults, the end of ``run(until=...)``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.collectives import CollectiveConfig, run_collective
from commsim.network.generators import ring, switch
from commsim.simulation import Simulation

CASES = [("all_reduce", "ring", {}), ("all_reduce", "ring", {"channels": 2}), ("reduce_scatter", "ring", {}),
         ("all_gather", "ring", {}), ("broadcast", "ring", {"chunk_size": 2**18}), ("reduce", "ring", {}),
         ("all_reduce", "double_binary_tree", {}), ("all_reduce", "halving_doubling", {}),
         ("all_to_all", "direct", {}), ("all_reduce", "kary_tree", {})]


def _run(topo, op, algorithm, params, nbytes, config, *, record, before=None, until=None):
    sim = Simulation(topo, seed=3)
    cfg = CollectiveConfig(**{**config, "record": record})
    group = topo.devices
    if before is not None:
        before(sim)
    run = run_collective(sim, op, group, nbytes, algorithm=algorithm, config=cfg, **params)
    sim.advance(until)
    times, res, load = sim.kernel.usage_log()
    return {"run": run, "rank_end": run.rank_end.copy(), "end": run.end_time, "wire": run.wire_bytes,
            "sent": sim.network.bytes_sent, "delivered": sim.network.bytes_delivered,
            "carried": sim.kernel.carried(), "usage": (times, res, load), "now": sim.env.now,
            "completed": sim.kernel.stats.activities_completed}


def _same(fast, slow):
    np.testing.assert_array_equal(fast["rank_end"], slow["rank_end"])
    assert fast["end"] == slow["end"] or (np.isnan(fast["end"]) and np.isnan(slow["end"]))
    assert fast["now"] == slow["now"]
    assert fast["wire"] == pytest.approx(slow["wire"], rel=1e-12)  # summed in another order within an instant
    assert fast["sent"] == pytest.approx(slow["sent"], rel=1e-12)
    assert fast["delivered"] == pytest.approx(slow["delivered"], rel=1e-12)
    assert fast["completed"] == slow["completed"]
    np.testing.assert_allclose(fast["carried"], slow["carried"], rtol=1e-12)
    assert _load_steps(fast["usage"]) == _load_steps(slow["usage"])


def _load_steps(usage) -> dict[int, list[tuple[float, float]]]:
    """Each resource's load as a step function: the last record of each instant, changes only."""
    out: dict[int, list[tuple[float, float]]] = {}
    for t, r, load in zip(*(a.tolist() for a in usage), strict=True):
        steps = out.setdefault(r, [])
        if steps and steps[-1][0] == t:
            steps.pop()
        if not steps or abs(steps[-1][1] - load) > 1e-9 * max(abs(load), 1.0):
            steps.append((t, load))
    return out


@pytest.mark.parametrize(("op", "algorithm", "params"), CASES)
@pytest.mark.parametrize("config", [{}, {"step_latency": 3e-6, "bandwidth_efficiency": 0.7},
                                    {"reduction": True}, {"launch_latency": 1e-5}])
def test_lockstep_gives_the_times_of_sending_every_step(op, algorithm, params, config):
    topo = switch(8, bandwidth="50 GB/s", latency="500 ns")
    fast = _run(topo, op, algorithm, params, 2**22, config, record="rank")
    slow = _run(topo, op, algorithm, params, 2**22, config, record="flows")
    _same(fast, slow)


def test_an_idle_ring_all_reduce_runs_in_one_chain():
    topo = switch(16, bandwidth="50 GB/s", latency="500 ns")
    fast = _run(topo, "all_reduce", "ring", {}, 2**24, {}, record="rank")
    assert fast["run"].lockstep_steps == 2 * 15
    slow = _run(topo, "all_reduce", "ring", {}, 2**24, {}, record="flows")
    assert slow["run"].lockstep_steps == 0
    _same(fast, slow)


def test_flows_on_the_same_links_at_the_same_instant_are_seen():
    topo = switch(8, bandwidth="50 GB/s", latency="500 ns")

    def rival(sim):
        # started after the collective at the same instant, on links the ring uses
        def go():
            yield sim.env.timeout(0.0)
            sim.network.send(sim.network.routes(["gpu0"], ["gpu1"]), 2**22)
        sim.env.process(go())

    fast = _run(topo, "all_reduce", "ring", {}, 2**22, {}, record="rank", before=rival)
    slow = _run(topo, "all_reduce", "ring", {}, 2**22, {}, record="flows", before=rival)
    _same(fast, slow)
    assert fast["end"] > _run(topo, "all_reduce", "ring", {}, 2**22, {}, record="rank")["end"]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), at=st.floats(0.0, 4e-4), size=st.floats(1e3, 1e7),
       latency=st.sampled_from([0.0, 5e-7]), channels=st.integers(1, 2), until=st.sampled_from([None, 2e-4]))
def test_chains_stop_at_other_events(n, at, size, latency, channels, until):
    topo = switch(n, bandwidth="50 GB/s", latency=latency)

    def rival(sim):
        def go():
            yield sim.env.timeout(at)
            sim.network.send(sim.network.routes(["gpu0"], [f"gpu{n - 1}"]), 3e5)
        sim.env.process(go())

    fast = _run(topo, "all_reduce", "ring", {"channels": channels}, size, {}, record="rank", before=rival,
                until=until)
    slow = _run(topo, "all_reduce", "ring", {"channels": channels}, size, {}, record="flows", before=rival,
                until=until)
    _same(fast, slow)


def test_a_link_failure_mid_run_ends_the_chain_before_it():
    topo = ring(8, bandwidth="75 GB/s")

    def failure(sim):
        def go():
            yield sim.env.timeout(1e-4)
            sim.network.fail_link("gpu0", "gpu1")  # the ring's flow goes the other way round: shared links
        sim.env.process(go())

    fast = _run(topo, "all_reduce", "ring", {}, 2**24, {}, record="rank", before=failure)
    slow = _run(topo, "all_reduce", "ring", {}, 2**24, {}, record="flows", before=failure)
    _same(fast, slow)
    assert 0 < fast["run"].lockstep_steps < 2 * (len(topo.devices) - 1)


@settings(max_examples=20, deadline=None)
@given(case=st.sampled_from(CASES), n=st.integers(2, 9), size=st.floats(1e4, 1e7), at=st.floats(0.0, 2e-4),
       step_latency=st.sampled_from([0.0, 2e-6]), priority=st.sampled_from([0, 1]))
def test_any_algorithm_with_a_rival_gives_the_same_times(case, n, size, at, step_latency, priority):
    op, algorithm, params = case
    topo = switch(n, bandwidth="50 GB/s", latency="500 ns")

    def rival(sim):
        def go():
            yield sim.env.timeout(at)
            sim.network.send(sim.network.routes([f"gpu{n - 1}"], ["gpu0"]), 2e5)
        sim.env.process(go())

    config = {"step_latency": step_latency, "priority": priority}
    fast = _run(topo, op, algorithm, params, size, config, record="rank", before=rival)
    slow = _run(topo, op, algorithm, params, size, config, record="flows", before=rival)
    _same(fast, slow)
