"""Layouts whose steps replay alike are predicted once, and each row is what predicting it alone gives."""

from __future__ import annotations

import pytest

from commsim import search as search_module
from commsim.errors import ConfigError
from commsim.network.generators import rail_optimized
from commsim.simulation import Simulation
from commsim.workloads import TrainingConfig, prediction, training_trace
from commsim.workloads.models import TransformerSpec
from commsim.workloads.prediction import predict_training_step, replay_equivalent, restate

TINY = TransformerSpec(name="tiny", layers=8, hidden=512, heads=8, ffn_hidden=2048, vocab=8000, max_seq_len=512)
BASE = {"tp": 2, "pp": 2, "dp": 2, "sequence_parallel": True, "num_micro_batches": 6, "seq_len": 256}


def cluster() -> Simulation:
    return Simulation(rail_optimized(servers=1, gpus_per_server=8, device="h100_sxm", nvlink_bandwidth="450 GB/s",
                                     port_bandwidth="400 Gbps", servers_per_leaf=1, spines=1), record_usage=False)


def ops_of(trace):
    return [[op.model_dump() for op in program.ops] for program in trace.programs], trace.communicators


@pytest.mark.parametrize("extra", [{}, {"virtual_pipeline_stages": 2, "num_micro_batches": 4},
                                   {"distributed_optimizer": True}])
def test_selective_recompute_under_flash_attention_is_the_step_without_recompute(extra):
    selective = TrainingConfig(**{**BASE, **extra, "recompute": "selective"})
    none = TrainingConfig(**{**BASE, **extra, "recompute": "none"})
    assert replay_equivalent(selective) == none
    assert ops_of(training_trace(TINY, selective)) == ops_of(training_trace(TINY, none))


@pytest.mark.parametrize("optimizer", [{"distributed_optimizer": True}, {"zero_stage": 1}])
def test_the_distributed_optimizer_without_data_parallelism_is_the_step_without_it(optimizer):
    alone = {**BASE, "dp": 1, "tp": 4}
    sharded = TrainingConfig(**alone, **optimizer)
    assert replay_equivalent(sharded) == TrainingConfig(**alone)
    assert ops_of(training_trace(TINY, sharded)) == ops_of(training_trace(TINY, alone))
    # with two data-parallel ranks it reduce-scatters and gathers: another step
    assert ops_of(training_trace(TINY, {**BASE, **optimizer})) != ops_of(training_trace(TINY, BASE))


def test_other_configurations_stand_for_themselves():
    for update in ({"recompute": "full"}, {"recompute": "none"}, {"recompute": "selective", "flash_attention": False},
                   {"distributed_optimizer": True}, {"dp": 1, "tp": 4, "zero_stage": 2}):
        config = TrainingConfig(**{**BASE, **update})
        assert replay_equivalent(config) is config
    # without flash attention, selective recomputation re-runs the attention scores: another step
    slow = {**BASE, "flash_attention": False}
    assert ops_of(training_trace(TINY, {**slow, "recompute": "selective"})) != \
        ops_of(training_trace(TINY, {**slow, "recompute": "none"}))


@pytest.mark.parametrize(("config", "standing"), [
    ({**BASE, "recompute": "selective"}, {**BASE, "recompute": "none"}),
    ({**BASE, "dp": 1, "tp": 4, "distributed_optimizer": True}, {**BASE, "dp": 1, "tp": 4})])
def test_a_restated_prediction_equals_predicting_the_configuration(config, standing):
    options = {"fold": "always", "reuse_collectives": True}
    alone = predict_training_step(TINY, config, cluster, **options)
    base = predict_training_step(TINY, standing, cluster, **options)
    restated = restate(base, TINY, config)
    assert restated.metrics == alone.metrics
    if config.get("recompute") == "selective":      # Megatron counts the selective recomputation
        assert restated.metrics["hfu"][0] > base.metrics["hfu"][0]
    assert restated.cohorts.equals(alone.cohorts) and restated.notes == alone.notes
    assert restated.config == alone.config


def test_restating_for_a_configuration_with_another_step_is_refused():
    base = predict_training_step(TINY, {**BASE, "recompute": "none"}, cluster)
    with pytest.raises(ConfigError, match="does not replay as the configuration"):
        restate(base, TINY, {**BASE, "recompute": "full"})


def test_the_search_predicts_alike_layouts_once_with_the_rows_of_each_alone(monkeypatch):
    spec = TransformerSpec(name="t", layers=4, hidden=512, heads=8, ffn_hidden=2048, vocab=8000, max_seq_len=256)
    space = search_module.SearchSpace(tp=[2, 4], pp=[2], micro_batch_size=[1], virtual_pipeline_stages=[1],
                                      recompute=["none", "selective", "full"], distributed_optimizer=[False])
    runnable, _ = search_module.enumerate_candidates(spec, 8, 8, 256, space)
    topology, params = "switch:8,450GB/s,1us", ()
    options = {"fast": True, "fold": "always", "reuse_collectives": True}
    alone = {tuple(layout.values()): search_module.predict_candidate(spec.model_dump(), topology, params, layout, 256,
                                                                     options) for layout in runnable}
    calls = []
    real = prediction.predict_training_step

    def counted(*args, **kwargs):
        calls.append(args[1]["recompute"])
        return real(*args, **kwargs)

    monkeypatch.setattr(prediction, "predict_training_step", counted)
    out = search_module.search(spec, topology, global_batch=8, seq_len=256, space=space)
    assert sorted(calls) == ["full", "full", "none", "none"]     # selective: as none, not replayed again
    for row in out.table.drop(columns="rank").to_dict("records"):
        expected = alone[tuple(row[k] for k in runnable[0])]
        assert {k: row[k] for k in expected} == expected


def test_groups_come_longest_first():
    layouts = [{"tp": 8, "pp": 1, "dp": 16, "micro_batch_size": 1, "num_micro_batches": 64,
                "virtual_pipeline_stages": 1, "recompute": r, "distributed_optimizer": False}
               for r in ("none", "selective", "full")]
    deep = {**layouts[0], "tp": 1, "pp": 8, "recompute": "full"}
    groups = search_module.alike_layouts([*layouts, deep], 4096)
    assert [[g["recompute"] for g in group] for group in groups] == [["full"], ["none", "selective"], ["full"]]
    assert groups[0][0]["pp"] == 8
    costs = [search_module.expected_cost(group[0]) for group in groups]
    assert costs == sorted(costs, reverse=True)
