"""Rank layout (tp-cp-dp-pp, EP inside DP), op tags for time attribution, models from YAML files, scenarios."""

from __future__ import annotations

import itertools

import pytest
import yaml

from commsim.errors import ConfigError
from commsim.scenario.runner import simulate
from commsim.scenario.spec import scenario_from_dict
from commsim.workloads import training_trace, validate_trace

GROUPS = {"tp", "cp", "ep", "dp", "edp", "pp", "embd"}
COMPUTE_PHASES = {"fwd", "bwd", "recompute", "optimizer"}


def test_megatron_rank_order(tiny):
    trace = training_trace(tiny, tp=2, cp=2, dp=4, pp=2, ep=2, num_experts=2, top_k=1, num_micro_batches=2,
                           sequence_parallel=True)
    validate_trace(trace)

    def rank(p, d, c, t):
        return ((p * 4 + d) * 2 + c) * 2 + t

    comms = trace.communicators
    assert trace.ranks == 32 and [p.ranks for p in trace.programs] == ["0:16", "16:32"]
    assert comms["tp"][0] == [0, 1] and comms["cp"][0] == [0, 2]
    assert comms["dp"][0] == [rank(0, d, c, 0) for d in range(4) for c in range(2)] == [0, 2, 4, 6, 8, 10, 12, 14]
    assert comms["pp"][0] == [0, 16]
    # expert parallelism takes consecutive data-parallel indices; ranks with the same experts form edp
    assert comms["ep"][0] == [rank(0, 0, 0, 0), rank(0, 1, 0, 0)] == [0, 4]
    assert comms["edp"][0] == [rank(0, d, c, 0) for d in (0, 2) for c in range(2)] == [0, 2, 8, 10]
    for name, groups in comms.items():     # every communicator partitions all ranks
        assert sorted(itertools.chain(*groups)) == list(range(32)), name


def test_every_op_is_tagged_for_attribution(tiny):
    trace = training_trace(tiny, tp=2, cp=2, dp=4, pp=2, ep=2, num_experts=2, top_k=1, num_micro_batches=4,
                           virtual_pipeline_stages=1, recompute="full", zero_stage=1, sequence_parallel=True)
    seen_groups, seen_phases = set(), set()
    for program in trace.programs:
        for op in program.ops:
            if op.kind == "compute":
                assert op.tags["phase"] in COMPUTE_PHASES, op.id
                seen_phases.add(op.tags["phase"])
            elif op.kind in ("collective", "send", "recv"):
                assert op.tags["group"] in GROUPS, op.id
                if op.kind == "collective":
                    assert op.tags["group"] == op.group, op.id
                else:
                    assert op.peer.split(":")[0] == op.tags["group"], op.id
                seen_groups.add(op.tags["group"])
    assert seen_phases == COMPUTE_PHASES
    assert seen_groups == GROUPS


def test_model_from_a_yaml_path(tmp_path, tiny):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny.model_dump(exclude={"aliases", "source"})))
    a = training_trace(str(path), pp=2, num_micro_batches=2)
    b = training_trace(tiny, pp=2, num_micro_batches=2)
    assert a.op_count() == b.op_count() and a.metadata["parameters"] == b.metadata["parameters"]
    with pytest.raises(ConfigError) as info:
        training_trace("no_such_dir/missing.yaml")
    assert str(info.value).startswith("model = 'no_such_dir/missing.yaml': names a model YAML file that does "
                                      "not exist. Fix: check the path")


def test_scenario_fields_and_a_model_file_next_to_the_scenario(tmp_path, tiny):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny.model_dump(exclude={"aliases", "source"})))
    data = {"name": "moe", "topology": "switch:8,100GB/s,1us", "outputs": {"dir": str(tmp_path / "out"),
            "dashboard": False, "perfetto": False, "tables": "csv"},
            "workload": {"kind": "training", "model": "tiny.yaml", "pp": 2, "dp": 2, "cp": 2, "ep": 2,
                         "num_experts": 2, "top_k": 1, "recompute": "full", "virtual_pipeline_stages": 1,
                         "zero_stage": 1, "num_micro_batches": 2, "sequence_parallel": False,
                         "distributed_optimizer": True}}
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(data))
    scenario = scenario_from_dict(data, source=tmp_path / "scenario.yaml")
    result = simulate(scenario)
    assert result.metrics["step_time"][0] > 0
    assert set(result.result.memory["device"]) == {f"gpu{i}" for i in range(8)}
    with pytest.raises(ConfigError, match=r"workload\.recompute = 'some'"):
        scenario_from_dict({**data, "workload": {**data["workload"], "recompute": "some"}})
    with pytest.raises(ConfigError, match=r"workload\.experts = 8: is not a known field"):
        scenario_from_dict({**data, "workload": {**data["workload"], "experts": 8}})
