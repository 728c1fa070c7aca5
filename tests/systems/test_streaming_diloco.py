"""Streaming DiLoCo study: the per-layer trace, its replay, payload bits, steady state, bad input, outputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from commsim.collectives.closed_form import ring_all_gather_time, ring_all_reduce_time
from commsim.errors import ConfigError
from commsim.systems import StudyContext, get_study
from commsim.systems.streaming_diloco import analysis
from commsim.systems.streaming_diloco.layout import build_layout
from commsim.systems.streaming_diloco.params import METHODS, ModelCase, StreamingDilocoParams
from commsim.systems.streaming_diloco.schedule import Payload, build_plan, fragments, independent_periods
from commsim.systems.streaming_diloco.workload import (
    forward_id,
    prepare_trace,
    replay_at,
    simulate,
    sync_id,
    sync_trace,
    wan_of,
)

GBIT = 1e9 / 8  # bytes/s per Gbit/s
DENSE, FP4 = Payload(16, None), Payload(4, None, collective="all_gather")
FOUR_LAYERS = """name: four-layers
layers: 4
hidden: 256
heads: 2
ffn_hidden: 1024
gated_ffn: false
vocab: 8
max_seq_len: 128
tied_embeddings: false
bias: false
norm: rmsnorm
position: rotary
nominal_params: 40M
published_params: null
source: a test model of four layers
"""


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("models") / "four.yaml"
    path.write_text(FOUR_LAYERS)
    return str(path)


def setup(method: str, model: str = "diloco-1b", step_time: float = 0.1, *, tau: int = 1, h: int = 100,
          k: int = 3, replicas: int = 2, assignment: str = "strided", parameters: str = "nominal"):
    layout = build_layout(ModelCase(model=model, step_time=step_time), backward_to_forward=2.0,
                          parameters=parameters)
    plan = build_plan(method, layout, inner_steps=h, tau=tau, fragment_layers=k, assignment=assignment,
                      remainder="reject", dense=DENSE, quantised=FP4, replicas=replicas)
    return plan, layout


# ------------------------------------------------------------------ the per-layer DAG, by hand
@pytest.mark.parametrize("tau", [0, 1, 2])
def test_four_layer_trace_releases_and_deadlines_by_hand(four: str, tau: int) -> None:
    """Fragments (0, 2) at step 0 and (1, 3) at step 2 of H = 4; every op 1/12 s of a 1 s step."""
    plan, layout = setup("streaming_overlap", model=four, step_time=1.0, tau=tau, h=4, k=2)
    assert plan.fragments == ((0, 2), (1, 3)) and plan.layer_offset.tolist() == [0, 2, 0, 2]
    trace = sync_trace(plan, layout, steps=8)
    ops = {op.id: op for op in trace.programs[0].ops}
    syncs = {op.id for op in ops.values() if op.kind == "collective"}
    # each layer's reduction is its own op, released by that layer's backward-for-weights op, in steps 0, 2, 4, 6
    assert syncs == {sync_id(s, layer) for s in (0, 4) for layer in (0, 2)} | \
        {sync_id(s, layer) for s in (2, 6) for layer in (1, 3)}
    for sid in syncs:
        step, layer = int(sid.split(".")[0][1:]), int(sid.split("sync")[1])
        assert ops[sid].deps == [f"s{step}.bww{layer}"]
        due = step + 1 + tau
        if due < 8:  # required before that layer's forward tau + 1 steps later, and by nothing else
            assert ops[forward_id(due, layer)].deps == [sid]
        waiting = [op.id for op in ops.values() if sid in op.deps]
        assert waiting == ([forward_id(due, layer)] if due < 8 else [])
    # replayed at infinite bandwidth: release = end of the layer's backward-for-weights, nothing stalls
    t = 1.0 / 12.0
    prepared = prepare_trace(plan, layout, steps=8, coalesce=False)
    stats = replay_at(prepared, plan, layout, bandwidth=math.inf, latency=0.0, record=True)
    table = stats.replay.ops.set_index("op_id")
    for layer in range(4):
        step = plan.layer_offset[layer]
        release = step * 1.0 + 4 * t + 2 * t * (4 - layer)  # forward of 4 layers, backward of layers 3..layer
        assert table.loc[sync_id(step, layer), "start"] == pytest.approx(release, abs=1e-12)
        assert table.loc[sync_id(step, layer), "end"] == pytest.approx(release, abs=1e-12)
        deadline = (step + 1 + tau) * 1.0 + layer * t
        assert table.loc[forward_id(step + 1 + tau, layer), "start"] == pytest.approx(deadline, abs=1e-12)
    assert stats.stall == 0.0


def test_a_fragments_layers_are_reduced_independently(four: str) -> None:
    """Fragment (0, 2): layer 2's sync is released at 8t, layer 0's at 12t; each alone would take 6t."""
    plan, layout = setup("streaming", model=four, step_time=1.0, tau=0, h=4, k=2)
    t = 1.0 / 12.0
    bandwidth = float(plan.wire_bytes[0]) / (6 * t)  # every layer the same size (nominal)
    stats = simulate(plan, layout, bandwidth=bandwidth, latency=0.0, steps=2, record=True, coalesce=False)
    table = stats.replay.ops.set_index("op_id")
    # layer 2 alone for 4t (2/3 done), then both at half rate: layer 2 ends at 16t, layer 0 (1/3 done) at 20t
    assert table.loc[sync_id(0, 2), "end"] == pytest.approx(16 * t, rel=1e-9)
    assert table.loc[sync_id(0, 0), "end"] == pytest.approx(20 * t, rel=1e-9)
    # layer 0's forward of step 1 (due at 12t) waits for its own sync; layers 1 and 2 follow without waiting
    assert table.loc[forward_id(1, 0), "start"] == pytest.approx(20 * t, rel=1e-9)
    assert table.loc[forward_id(1, 2), "start"] == pytest.approx(22 * t, rel=1e-9)
    assert stats.stall == pytest.approx(8 * t, rel=1e-9)


def test_coalescing_the_trace_changes_no_time(four: str) -> None:
    for method in METHODS:
        plan, layout = setup(method, model=four, step_time=1.0, tau=1, h=4, k=2)
        for gbit in (0.05, 0.4, 3.0):
            full = simulate(plan, layout, bandwidth=gbit * GBIT, latency=0.001, coalesce=False)
            short = simulate(plan, layout, bandwidth=gbit * GBIT, latency=0.001)
            assert short.cu == pytest.approx(full.cu, rel=1e-12)
    plan, layout = setup("diloco")
    full = prepare_trace(plan, layout, coalesce=False).trace.op_count()
    short = prepare_trace(plan, layout).trace.op_count()
    assert short < full / 50


# ------------------------------------------------------------------ mechanism
@pytest.mark.parametrize("method", METHODS)
def test_infinite_bandwidth_gives_full_utilisation(method: str) -> None:
    plan, layout = setup(method)
    stats = simulate(plan, layout, bandwidth=math.inf, latency=0.0)
    assert stats.cu == 1.0
    assert stats.stall == 0.0
    assert stats.syncs == plan.layer_offset.shape[0]  # one period: every layer synced once


def test_latency_alone_stalls_diloco_by_its_ring_steps_and_overlap_hides_it() -> None:
    latency = 0.03
    plan, layout = setup("diloco")
    stats = simulate(plan, layout, bandwidth=math.inf, latency=latency)
    # the first layer's sync is released at the end of the period and needed at once: 2 (M - 1) latencies
    assert stats.stall == pytest.approx(2 * latency, rel=1e-9)
    plan, layout = setup("streaming_overlap")
    assert simulate(plan, layout, bandwidth=math.inf, latency=latency).cu == 1.0


@pytest.mark.parametrize(("method", "replicas"), [("streaming", 2), ("streaming", 3), ("streaming_overlap_fp4", 2),
                                                  ("streaming_overlap_fp4", 4)])
def test_an_isolated_sync_takes_the_ring_closed_form(four: str, method: str, replicas: int) -> None:
    plan, layout = setup(method, model=four, step_time=1.0, h=4, k=1, replicas=replicas)  # one layer per step
    bandwidth, latency = 0.5 * GBIT, 0.02  # each sync over before the next one is released
    stats = simulate(plan, layout, bandwidth=bandwidth, latency=latency, steps=3, record=True, coalesce=False)
    table = stats.replay.ops.set_index("op_id")
    duration = float(table.loc[sync_id(0, 0), "end"] - table.loc[sync_id(0, 0), "start"])
    size = plan.layer_payload[0]
    if plan.collective == "all_reduce":
        closed = ring_all_reduce_time(replicas, size, alpha=latency, bandwidth=bandwidth)
    else:  # every replica's payload reaches every other one
        closed = ring_all_gather_time(replicas, size * replicas, alpha=latency, bandwidth=bandwidth)
    assert duration == pytest.approx(closed, rel=1e-9)


def test_fifo_sharing_serves_syncs_one_at_a_time_in_release_order(four: str) -> None:
    plan, layout = setup("diloco", model=four, step_time=1.0, h=2)
    ends = {}
    for sharing in ("fair", "fifo"):
        prepared = prepare_trace(plan, layout, sharing=sharing, steps=3, coalesce=False)
        table = replay_at(prepared, plan, layout, bandwidth=0.2 * GBIT, latency=0.0, record=True).replay.ops
        comm = table[table["kind"] == "collective"].sort_values("start")
        ends[sharing] = comm["end"].to_numpy()
        starts = comm["start"].to_numpy()
        if sharing == "fifo":  # each starts when the one before it ends
            assert np.allclose(starts[1:], ends[sharing][:-1], rtol=1e-12)
        else:  # all start at their release, so some overlap
            assert np.any(starts[1:] < ends[sharing][:-1])
    # same bytes on the same link: the last one ends at the same time either way
    assert ends["fifo"][-1] == pytest.approx(ends["fair"][-1], rel=1e-9)


def test_cu_grows_with_bandwidth_and_overlap_and_quantisation_help() -> None:
    grid = [1.0, 4.0, 16.0, 64.0]
    cu = {}
    for method in METHODS:
        plan, layout = setup(method)
        cu[method] = [simulate(plan, layout, bandwidth=g * GBIT, latency=0.0).cu for g in grid]
        assert np.all(np.diff(cu[method]) >= -1e-12)
    for i in range(len(grid)):
        assert cu["streaming_overlap_fp4"][i] >= cu["streaming_overlap"][i] >= cu["streaming"][i] - 1e-12
        assert cu["streaming"][i] > cu["data_parallel"][i]


def test_streaming_without_overlap_beats_diloco_at_high_utilisation() -> None:
    """The paper's argument: per-fragment syncs spread over the period need far less bandwidth than DiLoCo."""
    params = StreamingDilocoParams(wan_latency=0.0, methods=["diloco", "streaming"],
                                   bandwidth_grid={"log10_min": 0, "log10_max": 3, "points": 13})
    prep = analysis.prepare(params, analysis.link_of(params, None))
    table = analysis.thresholds(analysis.sweep(prep), [0.95, 0.99]).set_index(["model", "method", "cu"])["gbit_per_s"]
    for name in ("1B", "10B", "100B"):
        for level in (95, 99):
            assert table[name, "streaming", level] < table[name, "diloco", level], (name, level)
        assert table[name, "streaming", 99] * 2 < table[name, "diloco", 99]


# ------------------------------------------------------------------ sizes and payloads
def test_nominal_counting_spreads_the_nominal_size_and_catalog_counts_shapes() -> None:
    nominal, _ = setup("diloco", model="diloco-10b", parameters="nominal")
    catalog, layout = setup("diloco", model="diloco-10b", parameters="catalog")
    assert nominal.layer_payload.sum() == pytest.approx(10e9 * 2, rel=1e-12)
    assert np.allclose(nominal.layer_payload, nominal.layer_payload[0])
    assert catalog.layer_payload.sum() == pytest.approx(layout.parameters * 2, rel=1e-12)
    assert catalog.layer_payload[-1] > catalog.layer_payload[1]  # the head rides with the last layer


def test_bits_ratio_of_fp4_streaming_to_data_parallel() -> None:
    dp, _ = setup("data_parallel")
    fp4, _ = setup("streaming_overlap_fp4")
    assert dp.bytes_per_step() / fp4.bytes_per_step() == pytest.approx(400.0, rel=1e-12)  # 16 bits / (4 bits / 100)
    layout = build_layout(ModelCase(model="diloco-1b", step_time=0.1), backward_to_forward=2.0)
    scaled = build_plan("streaming_overlap_fp4", layout, inner_steps=100, tau=1, fragment_layers=3,
                        assignment="strided", remainder="reject", dense=DENSE,
                        quantised=Payload(4, 128, collective="all_gather"), replicas=2)
    assert dp.bytes_per_step() / scaled.bytes_per_step() == pytest.approx(1600 / 4.25, rel=1e-6)


# ------------------------------------------------------------------ schedule and steady state
def test_fragments_and_remainder_rules() -> None:
    assert fragments(24, 3, "strided", "reject")[0] == (0, 8, 16)
    assert sorted(sum(fragments(24, 5, "sequential", "ceil"), ())) == list(range(24))
    assert [len(f) for f in fragments(24, 5, "strided", "ceil")] == [5, 5, 5, 5, 4]
    assert [len(f) for f in fragments(24, 5, "sequential", "floor")] == [5, 5, 5, 9]
    with pytest.raises(ConfigError, match="remainder"):
        fragments(24, 5, "strided", "reject")


@pytest.mark.parametrize("method", METHODS)
def test_one_period_is_the_steady_state(method: str) -> None:
    plan, layout = setup(method)
    assert independent_periods(plan, layout)
    for gbit in (0.5, 20.0, 300.0):
        one = simulate(plan, layout, bandwidth=gbit * GBIT, latency=0.01)
        repeated = simulate(plan, layout, bandwidth=gbit * GBIT, latency=0.01, steady="periodic")
        assert one.mode == "period" and repeated.mode == "periodic"
        assert one.cu == pytest.approx(repeated.cu, rel=1e-9)


@pytest.mark.parametrize(("sharing", "tolerance"), [("fifo", 1e-9), ("fair", 0.01)])
def test_overlapping_periods_are_replayed_until_they_repeat(sharing: str, tolerance: float) -> None:
    from commsim.simulation import Simulation
    from commsim.workloads.replay import Replay

    plan, layout = setup("streaming_overlap", h=4, tau=3, k=1)  # 24 fragments over 4 steps, tau = 3
    assert not independent_periods(plan, layout)
    stats = simulate(plan, layout, bandwidth=30 * GBIT, latency=0.0, sharing=sharing)
    assert stats.mode == ("periodic" if stats.periodic else "aperiodic") and 0 < stats.cu < 1
    assert stats.window_steps == 4 and stats.stall == pytest.approx(stats.wall - 4 * 0.1)
    # a long run settles into the same periods: its last 12 last what the repeating pattern does (one queue
    # repeats exactly; fair sharing among a changing set of syncs only nearly does)
    periods = 48
    trace = sync_trace(plan, layout, steps=4 * periods + 1, release_before=4 * periods, sharing=sharing)
    replay = Replay(Simulation(wan_of(2, 30 * GBIT, 0.0)), trace, record="none")
    replay.run_to_end()
    index, start, _ = replay.op_times()
    starts = [float(start[index[forward_id(4 * j, 0)]]) for j in range(periods + 1)]
    assert (starts[-1] - starts[-13]) / 12 == pytest.approx(stats.wall, rel=tolerance)
    if sharing == "fifo":
        assert stats.periodic


def test_removed_window_parameters_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as info:
        get_study("streaming_diloco").parse({"warmup_periods": 2})
    assert "warmup_periods" in str(info.value) and "repeat" in str(info.value) and "Fix: remove" in str(info.value)
    with pytest.raises(ConfigError, match="steady"):
        simulate(*setup("diloco"), bandwidth=GBIT, latency=0.0, steady="window")


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("params", "field", "needle"), [
    ({"inner_steps": 0}, "workload.params.inner_steps", "at least 1"),
    ({"fragment_layers": 5}, "workload.params.fragment_layers", "remainder"),
    ({"overlap_steps": 100}, "workload.params.overlap_steps", "not below inner_steps"),
    ({"inner_steps": 10, "overlap_steps": 12}, "workload.params.overlap_steps", "not below inner_steps"),
    ({"replicas": 1}, "workload.params.replicas", "at least 2"),
    ({"models": [{"model": "diloco-2b"}]}, "workload.params.models", "catalog"),
    ({"sharing": "lifo"}, "workload.params.sharing", "fair"),
    ({"quantised_bits": 0}, "workload.params.quantised_bits", "above 0"),
    ({"timeline_model": "7B"}, "workload.params.timeline_model", "not one of"),
])
def test_bad_parameters_fail_with_clear_messages(params: dict, field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_study("streaming_diloco").parse(params)
    message = str(info.value)
    assert message.startswith(field)
    assert needle in message
    assert "Fix:" in message


def test_a_stated_remainder_rule_accepts_a_non_divisor() -> None:
    params = get_study("streaming_diloco").parse({"fragment_layers": 5, "fragment_remainder": "ceil"})
    assert isinstance(params, StreamingDilocoParams) and params.fragment_layers == 5


# ------------------------------------------------------------------ outputs
def test_scenario_writes_the_threshold_table(tmp_path: Path) -> None:
    from commsim.scenario import simulate as run_scenario

    root = Path(__file__).resolve().parents[2]
    run = run_scenario(root / "scenarios" / "streaming_diloco.yaml", overrides={
        "workload.params.models": [{"model": "diloco-1b", "label": "1B", "step_time": "0.1 s"}],
        "workload.params.bandwidth_grid": {"log10_min": -1, "log10_max": 2, "points": 7},
        "workload.params.timeline_periods": 1})
    table = run.csv["bandwidth_for_cu"]
    assert list(table.columns) == ["model", "method", "cu", "gbit_per_s"]
    assert list(dict.fromkeys(table["method"])) == list(METHODS)
    assert sorted(set(table["cu"])) == [50, 80, 90, 95, 99]
    grid = np.logspace(-1, 2, 7)
    reached = [g for g in table["gbit_per_s"] if not isinstance(g, str)]
    assert reached and np.all(np.isin(reached, grid))
    written = run.write(tmp_path)
    text = written["bandwidth_for_cu.csv"].read_text().splitlines()
    assert text[0] == "model,method,cu,gbit_per_s"
    assert "1B,data_parallel,99,>100" in text  # never reached on this grid: said so
    assert not any(line.endswith(",") for line in text)
    assert (tmp_path / "dashboard.html").stat().st_size > 10_000
    assert run.metrics["bits_ratio_dp_over_fp4_1B"][0] == pytest.approx(400.0, rel=1e-9)


def test_sweep_over_study_parameters() -> None:
    from commsim import sweep

    scenario = {"name": "s", "workload": {"kind": "study", "study": "streaming_diloco", "params": {
        "models": [{"model": "diloco-1b", "label": "1B", "step_time": "0.1 s"}],
        "methods": ["streaming", "streaming_overlap"], "bandwidth_grid": {"points": 5}, "timeline_periods": 1}}}
    result = sweep(scenario, {"workload.params.overlap_steps": [0, 2]})
    cu = result.table["cu_at_link_1B_streaming_overlap"].tolist()
    assert cu[1] > cu[0]  # more overlap, more utilisation at the same 10 Gbit/s link


def test_validation_rows_pass_on_the_1b_model() -> None:
    """1B only (the full three-model check is ``commsim validate --only streaming_diloco``)."""
    params = StreamingDilocoParams(models=[ModelCase(model="diloco-1b", label="1B", step_time=0.1)],
                                   wan_latency=0.0)
    prep = analysis.prepare(params, analysis.link_of(params, None))
    table = analysis.thresholds(analysis.sweep(prep), [0.95])
    best = table["gbit_per_s"].min()
    assert 1.0 <= best <= 5.0  # published: roughly 1-5 Gbit/s
    from commsim.systems.streaming_diloco.study import dp_floor_gbit

    dp = table.set_index("method").loc["data_parallel", "gbit_per_s"]
    floor = dp_floor_gbit(prep.layouts["1B"], prep.plans["1B", "data_parallel"], 0.95)
    assert floor == pytest.approx(16.0 / (0.1 * (1 - 1 / 3 - 1 / 36) + 0.1 * (1 / 0.95 - 1)), rel=1e-9)
    assert floor <= dp <= floor * 10 ** (4 / 49)  # the first grid point above the model's floor


def test_study_runs_without_a_topology_and_states_its_link() -> None:
    study = get_study("streaming_diloco")
    params = study.parse({"models": [{"model": "diloco-1b", "label": "1B", "step_time": "0.1 s"}],
                          "methods": ["diloco", "streaming_overlap_fp4"], "bandwidth_grid": {"points": 4},
                          "timeline_periods": 1})
    out = study.run(params, StudyContext())
    assert out.metrics["link_bandwidth"] == (10.0, "Gbit/s")
    assert any("default 10 Gbit/s" in n for n in out.notes)
    assert len(out.result.spans) > 0


def test_timeline_shows_compute_waits_and_syncs_of_one_replica() -> None:
    from commsim.systems.streaming_diloco.figures import worker_spans

    plan, layout = setup("streaming")
    stats = simulate(plan, layout, bandwidth=2 * GBIT, latency=0.0, steps=100, record=True)
    spans = worker_spans(stats.replay.result.spans)
    waits = spans[spans["kind"] == "delay"]
    computing = spans[spans["kind"] == "compute"]
    assert len(waits) > 0 and set(spans["device"]) == {spans["device"].iloc[0]}
    assert (waits["end"] - waits["start"]).sum() == pytest.approx(stats.stall, rel=1e-9)
    assert (computing["end"] - computing["start"]).sum() == pytest.approx(100 * layout.step_time, rel=1e-9)
    assert len(spans[spans["kind"] == "comm"]) == plan.layer_offset.shape[0]


# ------------------------------------------------------------------ scenario faults reach the study
def test_a_degraded_wan_link_is_the_same_as_a_slower_one() -> None:
    plan, layout = setup("diloco")
    half = [{"kind": "link_degraded", "at": 0, "link": ["dc0.gw", "dc1.gw"], "factor": 0.5}]
    degraded = simulate(plan, layout, bandwidth=20 * GBIT, latency=0.0, faults=half)
    slower = simulate(plan, layout, bandwidth=10 * GBIT, latency=0.0)
    assert degraded.cu == pytest.approx(slower.cu, rel=1e-9) and degraded.cu < 1.0
    assert simulate(plan, layout, bandwidth=20 * GBIT, latency=0.0).cu > degraded.cu


def _scenario(**extra):
    from commsim.scenario import simulate as run_scenario

    return run_scenario({"name": "diloco-faults", "topology": "topologies/two_dc_wan.yaml", "workload": {
        "kind": "study", "study": "streaming_diloco", "params": {
            "models": [{"model": "diloco-1b", "label": "1B", "step_time": "0.1 s"}],
            "methods": ["diloco", "streaming_overlap_fp4"], "bandwidth_grid": {"points": 4},
            "timeline_periods": 1}}, **extra})


def test_a_scenario_wan_fault_changes_the_streaming_diloco_result() -> None:
    clean = _scenario().metrics
    quarter = {"kind": "link_degraded", "at": 0, "link": ["dc0.gw", "dc1.gw"], "factor": 0.25}
    hit = _scenario(faults=[quarter])
    for method in ("diloco", "streaming_overlap_fp4"):   # both stall more on a quarter of the 10 Gbit/s link
        assert hit.metrics[f"cu_at_link_1B_{method}"][0] < clean[f"cu_at_link_1B_{method}"][0]
    assert any("Scenario faults (1)" in note for note in hit.notes)


@pytest.mark.parametrize("fault", [
    {"kind": "straggler", "at": 0, "device": "gpu0", "slowdown": 2},
    {"kind": "link_down", "at": 0, "link": ["gpu0", "dc0.sw"]},
])
def test_faults_the_study_cannot_apply_are_refused(fault: dict) -> None:
    with pytest.raises(ConfigError, match=r"faults\[0\].*not a fault of a WAN link"):
        _scenario(faults=[fault])
