"""A prediction replays its generated traces without re-checking them: those traces do pass the checks, and
skipping them changes nothing but the time taken."""

from __future__ import annotations

import pytest

from commsim.network.generators import rail_optimized
from commsim.simulation import Simulation
from commsim.workloads import folding, prediction, training_trace, validate_trace
from commsim.workloads.models import TransformerSpec
from commsim.workloads.prediction import predict_training_step
from commsim.workloads.replay import Replay

TINY = TransformerSpec(name="tiny", layers=8, hidden=512, heads=8, ffn_hidden=2048, vocab=8000, max_seq_len=512)


def cluster() -> Simulation:
    return Simulation(rail_optimized(servers=2, gpus_per_server=8, device="h100_sxm", nvlink_bandwidth="450 GB/s",
                                     port_bandwidth="400 Gbps", servers_per_leaf=2, spines=1), record_usage=False)


@pytest.mark.parametrize("config", [
    {"tp": 2, "pp": 4, "dp": 2, "sequence_parallel": True, "num_micro_batches": 8, "recompute": "full"},
    {"tp": 2, "pp": 2, "dp": 4, "num_micro_batches": 16, "virtual_pipeline_stages": 2, "distributed_optimizer": True},
    {"tp": 4, "pp": 2, "dp": 2, "sequence_parallel": True, "num_micro_batches": 6, "zero_stage": 2}])
def test_the_traces_a_prediction_replays_unchecked_pass_the_checks(monkeypatch, config):
    seen = []

    class Recording(Replay):
        def __init__(self, sim, trace, **options):
            seen.append((trace, options.get("validate", True)))
            super().__init__(sim, trace, **options)

    monkeypatch.setattr(prediction, "Replay", Recording)
    monkeypatch.setattr(folding, "Replay", Recording)
    predict_training_step(TINY, config, cluster, fold="always", reuse_collectives=True)
    names = [trace.name for trace, _ in seen]
    assert len(seen) == 4 and names[0] == "layer-probe"        # the probe and three periodic replays
    for trace, validated in seen:
        assert validated is False
        validate_trace(trace)                                   # raises TraceError on any broken rule


def test_an_unchecked_replay_equals_the_checked_one():
    trace = training_trace(TINY, tp=2, pp=2, dp=4, num_micro_batches=4, sequence_parallel=True)
    checked = Replay(cluster(), trace, fast=True).run()
    unchecked = Replay(cluster(), trace, fast=True, validate=False).run()
    assert unchecked.step_time == checked.step_time
    assert unchecked.cohorts.equals(checked.cohorts) and unchecked.ops.equals(checked.ops)
