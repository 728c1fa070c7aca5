"""C4 study: C4P planning and ECMP collisions, C4D detection/localisation, the long-run timeline, bad input.

A small dual-plane rail fabric (8 servers x 2 GPUs, 4 servers per leaf, 4
spines) and a 3B model keep the tests fast; the 512-GPU claims run in
``commsim validate --only c4``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.errors import ConfigError
from commsim.network.generators import rail_optimized
from commsim.network.loader import load_topology
from commsim.network.routing import Router
from commsim.scenario.runner import simulate
from commsim.scenario.spec import load_scenario
from commsim.simulation import Simulation
from commsim.systems import StudyContext, get_study
from commsim.systems.c4.c4d import evaluate_fault
from commsim.systems.c4.detector import Diagnosis, baseline_of, correct
from commsim.systems.c4.episode import Fault, build_setup, draw_history, given_history, observe, simulate_episode
from commsim.systems.c4.layout import dp_rings, place_jobs, server_devices
from commsim.systems.c4.model import ComputeProfile, JobModel, compute_profile, iteration_time, step_trace
from commsim.systems.c4.params import C4Params
from commsim.systems.c4.timeline import FaultOutcome, run_timeline
from commsim.systems.c4.traffic import Ring, RingSim, switch_links
from commsim.workloads import load_model, training_trace
from commsim.workloads.replay import Replay

SMALL = dict(servers=8, gpus_per_server=2, device="h800", nvlink_bandwidth="200 GB/s", nic_ports=2,
             port_bandwidth="200 Gbps", servers_per_leaf=4, spines=4)
PORT = 25e9   # 200 Gbps in bytes/s
PARAMS = {"job": {"model": "open-llama-3b", "tp": 2, "global_batch": 64},
          "c4d": {"servers": 8, "horizon": "20 days", "episodes_per_class": 0},
          "c4p": {"jobs": [{"servers": 8}], "ecmp_seeds": 2}}


@pytest.fixture(scope="module")
def topo():
    return rail_optimized(**SMALL)


@pytest.fixture(scope="module")
def params() -> C4Params:
    return C4Params.model_validate(PARAMS)


@pytest.fixture(scope="module")
def setup(topo, params):
    return build_setup(topo, params.c4d, params.job, seed=0)


@pytest.fixture(scope="module")
def base(setup):
    return baseline_of(observe(setup, simulate_episode(setup, None), np.random.default_rng(7), 8))


def _diagnose(setup, base, fault, seed=3) -> Diagnosis:
    return evaluate_fault(setup, fault, base, np.random.default_rng(seed))[1]


# ---------------------------------------------------------------------- C4P: ECMP collisions and planning
def _max_load_on_paths(res, topo) -> np.ndarray:
    """Per QP: the most QPs sharing one 200 Gbps link of its path."""
    c = topo.compile()
    port = np.isclose(c.edge_bandwidth, PORT)
    return np.array([max((res.edge_flows[e] for e in path if port[e]), default=0) for path in res.qps["path"]])


def test_ecmp_collisions_slow_the_ring_by_the_load_of_the_worst_shared_link(topo):
    """Each QP gets 25 GB/s / (QPs on its busiest port or uplink); the ring lasts as long as its slowest QP."""
    servers = server_devices(topo)
    ring = Ring(tuple(servers[s][0] for s in range(8)), nbytes=8e9)
    seen = set()
    for seed in range(8):
        res = RingSim(topo, [ring], qps=2, routing="ecmp", seed=seed).run()
        load = _max_load_on_paths(res, topo)
        expected = float(np.max(res.qps["bytes"].to_numpy() * load / PORT)) + res.ring_latency[0]
        assert res.ring_time[0] == pytest.approx(expected, abs=5e-6)   # up to a route latency (us)
        seen.add(int(load.max()))
    assert max(seen) >= 2      # some seed hashes two QPs onto one link: the ring runs at half speed or worse


def test_planned_paths_balance_ports_and_reach_ideal(topo):
    servers = server_devices(topo)
    ring = Ring(tuple(servers[s][0] for s in range(8)), nbytes=8e9)
    res = RingSim(topo, [ring], qps=2, routing="planned").run()
    assert _max_load_on_paths(res, topo).max() == 1
    ideal = ring.connection_bytes / (2 * PORT) + res.ring_latency[0]
    assert res.ring_time[0] == pytest.approx(ideal, rel=1e-6)


ROOT = Path(__file__).resolve().parents[2]
H800 = load_topology(ROOT / "topologies" / "h800_cluster_512.yaml")


@settings(max_examples=12)
@given(sizes=st.lists(st.integers(2, 24), min_size=1, max_size=5), seed=st.integers(0, 10_000),
       placement=st.sampled_from(["packed", "interleaved", "random"]))
def test_planned_paths_never_put_two_flows_of_a_job_on_one_uplink(sizes, seed, placement):
    total, keep = 64, []
    for size in sizes:
        if sum(keep) + size <= total:
            keep.append(size)
    sizes = keep
    servers = server_devices(H800)
    placed = place_jobs(total, sizes, placement, seed)
    rings = [r for j, s in enumerate(placed) for r in dp_rings(servers, s, tp=8, pp=1, nbytes=[1e6], job=j)]
    sim = RingSim(H800, rings, qps=2, routing="planned", seed=seed)
    c = H800.compile()
    load = sim.router.load
    for a, b in switch_links(H800):
        for u, v in ((a, b), (b, a)):
            assert load[c.edge_index[(c.index[u], c.index[v])]] <= 1, f"{u}->{v} carries two planned QPs"
    # both ports of every NIC carry one QP each way
    nic = [v for v, k in enumerate(c.kinds) if k == "nic"]
    for v in nic:
        out = [load[e] for w, e in c.out_edges[v] if c.kinds[w] == "switch"]
        assert max(out) - min(out) <= 1


def test_replanning_moves_flows_off_a_failed_link_and_a_static_plan_falls_back_to_the_hash(topo):
    servers = server_devices(topo)
    ring = Ring(tuple(servers[s][1] for s in range(8)), nbytes=1e9)
    for replan in (True, False):
        sim = RingSim(topo, [ring], qps=2, routing="planned", replan=replan)
        router = sim.router
        c = topo.compile()
        crossing = [(f, p) for f, p in router.planned.items()
                    if any(c.kinds[c.edge_src[e]] == c.kinds[c.edge_dst[e]] == "switch" for e in p)]
        flow, path = crossing[0]
        up = next(e for e in path if c.kinds[c.edge_src[e]] == c.kinds[c.edge_dst[e]] == "switch")
        a, b = c.names[c.edge_src[up]], c.names[c.edge_dst[up]]
        sim.network.fail_link(a, b)
        new = router.path(*flow)
        assert up not in new
        if replan:
            assert router.replanned >= 1 and router.planned[flow] == new
            switch_edges = [e for e in range(len(c.edge_src))
                            if c.kinds[c.edge_src[e]] == c.kinds[c.edge_dst[e]] == "switch"]
            assert router.load[switch_edges].max() <= 1
        else:
            hashed = Router(topo, policy="ecmp", seed=0)
            hashed.fail([up, c.edge_index[(c.edge_dst[up], c.edge_src[up])]])
            assert new == hashed.path(*flow)


def test_c4p_comparison_tables(topo, params):
    from commsim.systems.c4.c4p import run_c4p

    out = run_c4p(topo, params, seed=0)
    ar = out.allreduce.set_index(["collective", "variant"])
    assert ar.loc[("dp", "planned"), "fraction_of_ideal"] == pytest.approx(1.0, abs=1e-3)
    assert ar.loc[("dp", "planned, link down, re-planned"), "fraction_of_ideal"] == pytest.approx(1.0, abs=1e-3)
    for variant in ar.loc["dp"].index:
        assert ar.loc[("dp", variant), "fraction_of_ideal"] <= 1.0 + 1e-9
    it = out.iteration.set_index("variant")["iteration_time"]
    assert it["planned"] <= it.filter(like="ecmp (").min() + 1e-12
    assert set(out.uplinks["direction"]) == {"up", "down"}


def test_the_hierarchical_all_reduce_is_the_shared_one_phase_after_phase(topo):
    """NVLink phases as the shared ring collectives time them alone; the fabric phase on the planned rail rings."""
    from commsim.collectives import simulate_collective

    servers = server_devices(topo)
    ring = Ring(tuple(d for s in servers for d in s), nbytes=2**30, ranks_per_node=2)
    res = RingSim(topo, [ring], qps=2, routing="planned").run()
    phases = res.phase_time[0]
    assert len(phases) == 3 and res.ring_time[0] == pytest.approx(sum(phases))
    for op, t in (("reduce_scatter", phases[0]), ("all_gather", phases[2])):
        assert t == pytest.approx(simulate_collective(topo, op, 2**30, algorithm="ring", ranks=servers[0]).time)
    # rail rings of 1/2 the buffer over 8 servers, both NIC ports busy: 2 x 7/8 x 2^29 B at 50 GB/s
    assert phases[1] == pytest.approx(res.phase_latency[0][1] + ring.connection_bytes / (2 * PORT), rel=1e-6)
    assert ring.connection_bytes == pytest.approx(2 * 7 / 8 * 2**29)


# ---------------------------------------------------------------------- C4D: detection and localisation
def test_a_single_slow_link_is_localised_to_that_link(setup, base):
    link = setup.used_links[0]
    d = _diagnose(setup, base, Fault("slow_link", 0.0, link=link))
    assert d.category == "communication slow"
    assert d.component == ("link", tuple(sorted(link)))
    assert tuple(sorted(link)) in d.candidates


def test_a_non_communication_hang_is_localised_to_that_rank(setup, base):
    device = setup.servers[5][1]
    d = _diagnose(setup, base, Fault("gpu_hang", 0.0, server=5, device=device))
    assert d.category == "non-communication hang"
    assert d.suspects == [device]
    assert d.component == ("node", 5)


@pytest.mark.parametrize("kind,category", [("nic_down", "communication hang"), ("slow_nic", "communication slow"),
                                           ("straggler", "non-communication slow")])
def test_node_faults_are_localised_to_their_server(setup, base, kind, category):
    fault = Fault(kind, 0.0, server=3, device=setup.servers[3][0])
    d = _diagnose(setup, base, fault)
    assert (d.category, d.component) == (category, ("node", 3))


@pytest.mark.parametrize("kind,category", [("link_down", "communication hang"), ("link_flap", "communication slow")])
def test_link_faults_are_localised_to_their_link(setup, base, kind, category):
    link = setup.used_links[-1]
    d = _diagnose(setup, base, Fault(kind, 0.0, link=link))
    assert (d.category, d.component) == (category, ("link", tuple(sorted(link))))


def test_healthy_iterations_raise_no_alarm_and_hidden_slowness_is_missed(setup, base, topo, params):
    assert not _diagnose(setup, base, None).detected
    # a PCIe link degraded to 0.9 x 64 GB/s is still faster than the NIC: nothing to see, nothing reported
    mild = build_setup(topo, params.c4d.model_copy(update={"slow_nic_factor": 0.9}), params.job, seed=0)
    d = _diagnose(mild, base, Fault("slow_nic", 0.0, server=2, device=mild.servers[2][0]))
    assert not d.detected and not correct(d, ("node", 2))


def test_noise_beyond_the_thresholds_breaks_localisation(topo, params):
    noisy = build_setup(topo, params.c4d.model_copy(update={"measurement_noise": 0.6}), params.job, seed=0)
    rng = np.random.default_rng(1)
    b = baseline_of(observe(noisy, simulate_episode(noisy, None), rng, 8))
    faults = [Fault("slow_link", 0.0, link=noisy.used_links[i % len(noisy.used_links)]) for i in range(6)]
    hits = [correct(evaluate_fault(noisy, f, b, rng)[1], f.truth) for f in faults]
    assert not all(hits)


# ---------------------------------------------------------------------- fault histories and the timeline
def test_same_seed_same_fault_history(setup):
    assert setup.params.job_rate(len(setup.devices)) == pytest.approx(419 / (54 * 86400) / 16384 * 16)
    busy = replace(setup, params=setup.params.model_copy(update={"rate_per_gpu": 0.05 / 86400}))
    one = draw_history(busy, np.random.default_rng([5, 0xC4D]))
    two = draw_history(busy, np.random.default_rng([5, 0xC4D]))
    other = draw_history(busy, np.random.default_rng([6, 0xC4D]))
    assert one == two and len(one) > 5
    assert one != other
    assert all(f.truth[0] == "node" or f.link in busy.used_links for f in one)


def _outcome(fault: Fault, slowdown: float = math.inf, ok: bool = True) -> FaultOutcome:
    diag = Diagnosis("x", fault.truth if ok else None)
    return FaultOutcome(fault=fault, slowdown=slowdown, iteration=4.0, diagnosis=diag, correct=ok)


def test_one_hang_costs_detection_diagnosis_restart_and_the_work_since_the_checkpoint(params):
    p = params.c4d
    fault = Fault("gpu_hang", 2.5 * 3600, server=1, device="gpu2")
    base = run_timeline([_outcome(fault)], "baseline", p)
    c4d = run_timeline([_outcome(fault)], "c4d", p)
    lost = 0.5 * 3600   # checkpoints every hour: half an hour since the last
    assert base.breakdown == pytest.approx({"detection": p.timeout, "diagnosis": p.diagnosis_time,
                                            "restart": p.restart_time, "lost work": lost})
    assert c4d.breakdown == pytest.approx({"detection": p.c4d_hang_timeout, "diagnosis": p.c4d_analysis_time,
                                           "restart": p.restart_time, "lost work": lost})
    for tl in (base, c4d):
        assert tl.useful + tl.downtime == pytest.approx(p.horizon)


def test_slow_faults_cost_the_throughput_lost_while_slow_and_a_wrong_verdict_falls_back_to_manual(params):
    p = params.c4d
    fault = Fault("straggler", 3600.0, server=1, device="gpu2")
    base = run_timeline([_outcome(fault, slowdown=1.25)], "baseline", p)
    assert base.breakdown["detection"] == pytest.approx(p.slow_notice_time * (1 - 1 / 1.25))
    assert base.breakdown["diagnosis"] == pytest.approx(p.diagnosis_time * (1 - 1 / 1.25))
    wrong = run_timeline([_outcome(fault, slowdown=1.25, ok=False)], "c4d", p)
    assert wrong.faults["manual_diagnosis"].iloc[0]
    assert wrong.breakdown["restart"] == pytest.approx(2 * p.restart_time)   # the wasted one and the right one
    assert wrong.useful + wrong.downtime == pytest.approx(p.horizon)


def test_restarts_wait_for_a_spare_when_none_is_free(params):
    p = params.c4d.model_copy(update={"spare_nodes": 1, "repair_time": 86400.0})
    faults = [Fault("gpu_hang", 3600.0 * (1 + i), server=i, device=f"gpu{2 * i}") for i in range(2)]
    tl = run_timeline([_outcome(f) for f in faults], "c4d", p)
    waits = tl.faults["spare_wait"].tolist()
    assert waits[0] == 0.0 and waits[1] > 0.8 * 86400


def test_c4d_beats_the_baseline_over_a_drawn_history(topo, params):
    from commsim.systems.c4.c4d import run_c4d

    busy = params.model_copy(update={"c4d": params.c4d.model_copy(update={"rate_per_gpu": 0.03 / 86400})})
    out = run_c4d(topo, busy, seed=3)
    b, c = out.timelines["baseline"], out.timelines["c4d"]
    assert len(out.history) > 0
    assert c.downtime < b.downtime
    for tl in (b, c):
        assert tl.useful + tl.downtime == pytest.approx(params.c4d.horizon, rel=1e-9)


# ---------------------------------------------------------------------- iteration time
def test_one_replayed_micro_batch_extrapolates_to_the_step(topo):
    job = JobModel(model="open-llama-3b", tp=2, global_batch=3 * 8)
    short = compute_profile(topo, job, dp=8)
    full = compute_profile(topo, job, dp=8, replay_micro_batches=3)
    assert short.micro_batches == full.micro_batches == 3
    assert short.backward_end[0] == pytest.approx(full.backward_end[0], rel=1e-6)
    np.testing.assert_allclose(short.bucket_ready[0], full.bucket_ready[0], rtol=1e-6)
    # the single replica replay agrees with the generator's step structure
    trace = training_trace(load_model("open-llama-3b"), tp=2, dp=1, num_micro_batches=3, track_memory=False)
    out = Replay(Simulation(topo), trace, devices=topo.devices[:2]).run()
    assert out.step_time == pytest.approx(full.backward_end[0] + full.optimizer[0], rel=1e-6)


def test_the_step_is_its_buckets_replayed_on_the_data_parallel_stream_from_their_ready_times():
    # stage 0: buckets ready at 0.5 and 0.2 (in that order on the stream), 0.5 s each, backward ends at 1.0;
    # stage 1: one bucket hidden behind its backward pass
    profile = ComputeProfile(micro_batches=1, micro_batch_time=1.0, backward_end=(1.0, 1.1), optimizer=(0.1, 0.1),
                             bucket_bytes=(np.array([5.0, 5.0]), np.array([1.0])),
                             bucket_ready=(np.array([0.5, 0.2]), np.array([0.3])), tokens_per_step=1.0,
                             dp_bytes=(10.0, 1.0), replayed_micro_batches=1)
    step, exposed = iteration_time(profile, lambda sizes: sizes / 10.0)   # 0.5 s and 0.1 s
    assert step == pytest.approx(1.6, rel=1e-12)       # 0.5 + 0.5 + 0.5 (the second waits for the first) + 0.1
    assert exposed == pytest.approx(0.5, rel=1e-12)
    step, exposed = iteration_time(profile, [lambda sizes: sizes / 100.0, lambda sizes: sizes / 10.0])
    assert step == pytest.approx(1.2, rel=1e-12) and exposed == 0.0   # stage 1 finishes last, nothing exposed
    trace = step_trace(profile, [np.array([0.5, 0.5]), np.array([0.1])])
    assert [op.id for op in trace.programs[0].ops] == ["ready0", "ready1", "backward", "bucket0", "bucket1",
                                                       "optimizer"]


# ---------------------------------------------------------------------- bad input
def test_bad_input_fails_with_clear_messages(topo):
    study = get_study("c4")
    with pytest.raises(ConfigError, match="rate_per_gpu"):
        study.parse({"c4d": {"rate_per_gpu": "-1 /day"}})
    with pytest.raises(ConfigError, match="reference_interruptions"):
        study.parse({"c4d": {"reference_interruptions": -5}})
    with pytest.raises(ConfigError, match=r"checkpoint_interval = 0: must be above 0"):
        study.parse({"c4d": {"checkpoint_interval": 0}})
    with pytest.raises(ConfigError, match="needs a node"):
        study.parse({"c4d": {"faults": [{"kind": "gpu_hang", "at": "1 h"}]}})
    bad_node = study.parse({**PARAMS, "part": "c4d",
                            "c4d": {**PARAMS["c4d"], "faults": [{"kind": "gpu_hang", "at": "1 h", "node": "gpu999"}]}})
    with pytest.raises(ConfigError, match=r"c4d\.faults\[0\]\.node") as err:
        study.run(bad_node, StudyContext(topology=topo))
    assert "gpu999" in str(err.value) and "Fix:" in str(err.value)
    bad_link = study.parse({**PARAMS, "part": "c4d",
                            "c4d": {**PARAMS["c4d"], "faults": [{"kind": "link_down", "at": "1 h",
                                                                "link": ["leafA0.0", "leafB0.0"]}]}})
    with pytest.raises(ConfigError, match="switch-to-switch link"):
        study.run(bad_link, StudyContext(topology=topo))
    with pytest.raises(ConfigError, match="servers"):
        study.run(study.parse({**PARAMS, "part": "c4p", "c4p": {"jobs": [{"servers": 9}]}}),
                  StudyContext(topology=topo))


# ---------------------------------------------------------------------- scenarios and the study end to end
@pytest.mark.parametrize("name", ["c4", "c4_c4p_multijob", "c4_c4d_injected"])
def test_scenario_files_validate(name):
    scenario = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    get_study("c4").parse(scenario.workload.params)


def test_the_injected_faults_scenario_names_only_links_its_job_uses():
    """The shipped scenario must pass the study's own up-front check (the job's links follow its routing)."""
    scenario = load_scenario(ROOT / "scenarios" / "c4_c4d_injected.yaml")
    params = get_study("c4").parse(scenario.workload.params)
    setup = build_setup(load_topology(ROOT / scenario.topology), params.c4d, params.job, seed=scenario.seed,
                        qps=params.c4p.qps)
    faults = given_history(setup, params.c4d.faults)
    assert [f.kind for f in faults] == [f.kind for f in params.c4d.faults]
    assert all(f.link in setup.used_links for f in faults if f.link is not None)


def test_study_runs_from_a_scenario_with_tables_figures_and_metrics(tmp_path):
    run = simulate({"name": "c4-small", "seed": 1, "topology": {"generator": "rail_optimized", "params": SMALL},
                    "workload": {"kind": "study", "study": "c4", "params": {**PARAMS, "c4d": {
                        **PARAMS["c4d"], "horizon": "10 days", "episodes_per_class": 1, "rate_per_gpu": "0.03 /day"}}},
                    "outputs": {"dir": str(tmp_path), "tables": "csv"}})
    for table in ("c4p_allreduce", "c4p_iteration", "c4p_uplinks", "c4d_faults", "c4d_breakdown", "c4d_episodes"):
        assert table in run.tables and len(run.tables[table])
    assert len(run.figures) == 8
    sens = run.tables["c4d_sensitivity"]
    # more manual diagnosis time -> C4D saves more; longer checkpoint intervals dilute it (more lost work)
    for _, part in sens.groupby("checkpoint_hours"):
        part = part.sort_values("diagnosis_hours")["reduction"]
        assert part.iloc[-1] > part.iloc[0]
    for _, part in sens.groupby("diagnosis_hours"):
        part = part.sort_values("checkpoint_hours")["reduction"]
        assert part.iloc[0] > part.iloc[-1]
    m = run.metrics
    assert m["c4p_dp_planned_fraction_of_ideal"][0] >= m["c4p_dp_ecmp_fraction_of_ideal"][0]
    assert m["c4d_downtime_fraction_c4d"][0] <= m["c4d_downtime_fraction_baseline"][0]
    written = run.write(tmp_path)
    assert (tmp_path / "c4d_breakdown.csv").exists() and written


# ---------------------------------------------------------------------- scenario faults reach the study
def _small_run(**extra):
    params = {**PARAMS, "c4p": {**PARAMS["c4p"], "ecmp_seeds": 1, "failed_links": []}}
    return simulate({"name": "c4-faults", "topology": {"generator": "rail_optimized", "params": SMALL},
                     "workload": {"kind": "study", "study": "c4", "params": params}, **extra})


def test_a_scenario_link_fault_changes_the_c4_study_result():
    """A NIC port at a quarter of its bandwidth slows the planned rings (C4P) and the watched job (C4D)."""
    clean = _small_run().metrics
    port = {"kind": "link_degraded", "at": 0, "link": ["nic0.0", "leafA0.0"], "factor": 0.25}
    faulty = _small_run(faults=[port])
    hit = faulty.metrics
    # planned: each port carries one QP of the connection; one at 1/4 makes that QP, so its ring, 4x slower
    assert hit["c4p_dp_planned_fraction_of_ideal"][0] == pytest.approx(
        clean["c4p_dp_planned_fraction_of_ideal"][0] / 4, rel=0.02)
    assert hit["c4p_iteration_planned"][0] > clean["c4p_iteration_planned"][0]
    assert hit["c4d_healthy_iteration"][0] > clean["c4d_healthy_iteration"][0]
    assert any("Scenario faults" in note for note in faulty.notes)


def test_a_scenario_link_down_changes_the_c4p_comparison():
    clean = _small_run().metrics
    down = _small_run(faults=[{"kind": "link_down", "at": 0, "link": ["nic0.0", "leafA0.0"]}]).metrics
    # the rings route around the dead port: gpu0's connection shares its NIC's other port
    assert down["c4p_dp_planned_fraction_of_ideal"][0] < clean["c4p_dp_planned_fraction_of_ideal"][0] - 0.1


def test_device_faults_given_to_the_c4_study_are_refused_and_unknown_links_named():
    with pytest.raises(ConfigError, match=r"faults\[0\].*not applied by the c4 study"):
        _small_run(faults=[{"kind": "straggler", "at": 0, "device": "gpu0", "slowdown": 2}])
    with pytest.raises(ConfigError, match=r"faults\[0\]\.link.*is not a link of the topology"):
        _small_run(faults=[{"kind": "link_down", "at": 0, "link": ["gpu0", "gpu1"]}])
    # a link that dies under running QPs stalls them (RDMA keeps its paths): nothing to measure, said so
    with pytest.raises(ConfigError, match=r"faults.*stall the C4P dp all-reduce.*duration"):
        _small_run(faults=[{"kind": "link_down", "at": "1 ms", "link": ["nic0.0", "leafA0.0"]}])
