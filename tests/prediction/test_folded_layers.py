"""Folded layers: a pass's layers as three timed ops equal the op-by-op replay where the module says so."""

from __future__ import annotations

import math

import pytest

from commsim.errors import ConfigError
from commsim.network.generators import rail_optimized
from commsim.simulation import Simulation
from commsim.workloads._training import _Step, resolve_config, step_trace
from commsim.workloads.breakdown import BREAKDOWN_COLUMNS
from commsim.workloads.folding import probe_layers
from commsim.workloads.models import TransformerSpec
from commsim.workloads.prediction import predict_training_step

TINY = TransformerSpec(name="tiny", layers=8, hidden=512, heads=8, ffn_hidden=2048, vocab=8000, max_seq_len=512)


def cluster() -> Simulation:
    return Simulation(rail_optimized(servers=2, gpus_per_server=8, device="h100_sxm", nvlink_bandwidth="450 GB/s",
                                     port_bandwidth="400 Gbps", servers_per_leaf=2, spines=1), record_usage=False)


def _compare(config: dict, tolerance: float, simulation=cluster) -> tuple[object, object]:
    folded = predict_training_step(TINY, config, simulation, fold="always")
    plain = predict_training_step(TINY, config, simulation)
    step = plain.metrics["step_time"][0]
    for name, (value, _unit) in plain.metrics.items():
        assert math.isclose(folded.metrics[name][0], value, rel_tol=tolerance, abs_tol=tolerance * step), name
    for column in ("end", "compute_busy", *BREAKDOWN_COLUMNS):
        for a, b in zip(plain.cohorts[column], folded.cohorts[column], strict=True):
            assert math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance * step), column
    return folded, plain


# TP 8 fills a server: TP groups own their NVLink ports, so folding is exact (to rounding)
@pytest.mark.parametrize("extra", [
    {},
    {"recompute": "full"},
    {"recompute": "selective", "virtual_pipeline_stages": 2},
    {"zero_stage": 1},
    {"zero_stage": 2},
    {"sequence_parallel": False},
    {"pp": 1, "dp": 2},
])
def test_folded_prediction_equals_the_op_by_op_replay_where_groups_are_private(extra):
    config = {"tp": 8, "pp": 2, "dp": 1, "sequence_parallel": True, "num_micro_batches": 12, **extra}
    folded, _ = _compare(config, 1e-9)
    assert any("folded layers" in note and "exact" in note and "approximate" not in note for note in folded.notes)


def four_servers() -> Simulation:
    return Simulation(rail_optimized(servers=4, gpus_per_server=8, device="h100_sxm", nvlink_bandwidth="450 GB/s",
                                     port_bandwidth="400 Gbps", servers_per_leaf=4, spines=1), record_usage=False)


# data-parallel buckets wait for the folded ops that end with their last gradient: with TP 8 and DP over the
# NICs, exact (ZeRO-2 reduces every micro-batch's gradients, so every backward pass is cut at its gradients)
@pytest.mark.parametrize("zero", [0, 1, 2])
def test_buckets_fed_by_folded_backward_passes_start_as_in_the_op_by_op_replay(zero):
    config = {"tp": 8, "pp": 2, "dp": 2, "sequence_parallel": True, "num_micro_batches": 6, "zero_stage": zero}
    _compare(config, 1e-9, four_servers)
    step = _Step(TINY, resolve_config(config, {}))
    trace = step_trace(step, probe_layers(step, four_servers, {}))
    kinds = {op.id: op.kind for op in trace.programs[0].ops}
    buckets = [op for op in trace.programs[0].ops if op.kind == "collective" and op.tags.get("phase") == "grad_sync"]
    assert any("layers" in d for op in buckets for d in op.deps)
    assert all(kinds[d] == "delay" for op in buckets for d in op.deps if "layers" in d)


def test_folding_without_tensor_parallelism_is_exact():
    folded, _ = _compare({"tp": 1, "pp": 4, "dp": 4, "num_micro_batches": 12}, 1e-9)
    assert any("folded layers" in note for note in folded.notes)


def test_shared_links_make_folding_an_approximation_that_says_so():
    # TP 2 x DP 2 in one server: DP buckets and pipeline sends share NVLink ports with the TP groups
    config = {"tp": 2, "pp": 4, "dp": 2, "sequence_parallel": True, "num_micro_batches": 12}
    folded = predict_training_step(TINY, config, cluster, fold="always")
    plain = predict_training_step(TINY, config, cluster)
    assert any("approximate" in note for note in folded.notes)
    assert math.isclose(folded.metrics["step_time"][0], plain.metrics["step_time"][0], rel_tol=0.01)


def test_a_folded_trace_has_few_ops_per_pass_and_the_same_peak_memory():
    config = resolve_config({"tp": 8, "pp": 2, "sequence_parallel": True, "num_micro_batches": 4,
                             "recompute": "full"}, {})
    step = _Step(TINY, config)
    folder = probe_layers(step, cluster, {})
    folded, plain = step_trace(step, folder), step_trace(step)
    for f, p in zip(folded.programs, plain.programs, strict=True):
        assert len(f.ops) < len(p.ops) / 2
        # only the last micro-batch's backward feeds the gradient buckets: it alone is cut where gradients end
        layer_ops = {m: [op for op in f.ops if op.kind == "delay" and op.id.startswith(f"b{m}.layers")]
                     for m in range(4)}
        assert all(len(layer_ops[m]) == 2 for m in range(3)) and len(layer_ops[3]) > 4     # head and body
    sims = [cluster(), cluster()]
    from commsim.workloads.replay import Replay
    for sim, trace in zip(sims, (folded, plain), strict=True):
        Replay(sim, trace, fast=True, record="none").run()
    peaks = [max(d.memory.peak for d in sim.devices.values()) for sim in sims]
    assert peaks[0] == peaks[1] > 0


def test_probe_times_each_layer_kind_once_per_stage_and_direction():
    step = _Step(TINY, resolve_config({"tp": 8, "pp": 2, "sequence_parallel": True, "num_micro_batches": 2}, {}))
    folder = probe_layers(step, cluster, {})
    assert sorted(folder.timings) == [(0, "bwd", False), (0, "fwd", False), (1, "bwd", False), (1, "fwd", False)]
    fwd = folder.timings[(0, "fwd", False)]
    # forward: layer norm, then from the first all-gather on, ending in the TP reduce-scatter (the tail)
    assert fwd.tail is not None and fwd.tail_stream == "tp_comm" and fwd.body_stream == "tp_comm"
    assert set(fwd.tail.classes) == {"exposed_tp_comm"}
    assert math.isclose(sum(fwd.body.classes.values()), fwd.body.seconds, rel_tol=1e-9)


def test_context_parallelism_is_not_folded_and_says_why():
    out = predict_training_step(TINY, {"tp": 2, "cp": 2, "pp": 2, "dp": 1, "num_micro_batches": 4}, cluster,
                                fold="always")
    assert any("folded layers: off because context parallelism" in note for note in out.notes)


def test_reused_collectives_are_noted_and_stay_close_where_links_are_shared():
    # TP 2 x DP 2 in a server, pipeline over both: groups share links; reuse is an approximation, close here
    config = {"tp": 2, "pp": 4, "dp": 2, "sequence_parallel": True, "num_micro_batches": 12, "zero_stage": 1}
    reused = predict_training_step(TINY, config, cluster, fold="always", reuse_collectives=True)
    plain = predict_training_step(TINY, config, cluster)
    assert any("reused collectives" in note for note in reused.notes)
    assert math.isclose(reused.metrics["step_time"][0], plain.metrics["step_time"][0], rel_tol=0.01)
    assert reused.metrics["step_time"][0] != plain.metrics["step_time"][0]   # it is an approximation here


def test_reused_collectives_on_private_links_change_nothing():
    # no pipeline: the DP groups (one GPU per server, over the NIC rails) share links with no one
    config = {"tp": 8, "pp": 1, "dp": 4, "sequence_parallel": True, "num_micro_batches": 4, "zero_stage": 1}
    reused = predict_training_step(TINY, config, four_servers, reuse_collectives=True)
    plain = predict_training_step(TINY, config, four_servers)
    assert math.isclose(reused.metrics["step_time"][0], plain.metrics["step_time"][0], rel_tol=1e-9)


def test_exact_folding_falls_back_to_op_by_op_where_links_are_shared():
    config = {"tp": 2, "pp": 4, "dp": 2, "sequence_parallel": True, "num_micro_batches": 12}
    exact = predict_training_step(TINY, config, cluster, fold="exact")
    plain = predict_training_step(TINY, config, cluster)
    assert exact.metrics["step_time"][0] == plain.metrics["step_time"][0]
    assert any("folded layers: off because in-layer collectives share links" in note for note in exact.notes)
    private = predict_training_step(TINY, {**config, "tp": 8, "pp": 2, "dp": 1}, cluster, fold="exact")
    assert any("folded layers" in note and "exact" in note for note in private.notes)


def test_an_unknown_folding_mode_names_the_choices():
    with pytest.raises(ConfigError, match="off, exact or always"):
        predict_training_step(TINY, {"tp": 8, "pp": 2, "num_micro_batches": 4}, cluster, fold="sometimes")
