"""Invariants over random training configurations: traces validate and replay without deadlock, memory matches the
trace's allocations, recomputation adds exactly the forward FLOPs, gradients cover every parameter once."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from commsim.errors import ConfigError
from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.workloads import TransformerSpec, training_memory, training_trace, validate_trace
from commsim.workloads.replay import replay

SPEC = TransformerSpec(name="prop", layers=4, hidden=16, heads=4, ffn_hidden=64, vocab=32, max_seq_len=16)

configs = st.fixed_dictionaries({
    "tp": st.sampled_from([1, 2]), "pp": st.sampled_from([1, 2, 4]), "dp": st.sampled_from([1, 2]),
    "cp": st.sampled_from([1, 2]), "num_micro_batches": st.integers(1, 6),
    "virtual_pipeline_stages": st.sampled_from([1, 2]), "recompute": st.sampled_from(["none", "selective", "full"]),
    "zero_stage": st.sampled_from([0, 1, 2, 3]), "sequence_parallel": st.booleans(),
    "num_experts": st.sampled_from([0, 2, 4]), "ep": st.sampled_from([1, 2]), "top_k": st.sampled_from([1, 2]),
})


def build(config):
    try:
        return training_trace(SPEC, seq_len=16, **config)
    except ConfigError:
        assume(False)
        raise


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(config=configs)
def test_trace_memory_and_flops_invariants(config, static_peak):
    trace = build(config)
    validate_trace(trace)
    for name, groups in trace.communicators.items():   # partitions of all ranks (embd: first and last stage)
        members = sorted(itertools.chain(*groups))
        assert members == (list(range(trace.ranks)) if name != "embd" else sorted(set(members)))
    memory = training_memory(SPEC, seq_len=16, **config)
    for peak, stage in zip(map(static_peak, trace.programs), memory.stages, strict=True):
        if config["zero_stage"] < 3:
            assert abs(peak - stage.total) <= 1e-9 * stage.total
        else:
            assert stage.total - stage.zero3_buffers <= peak <= stage.total
    if config["recompute"] == "full":
        plain = training_trace(SPEC, seq_len=16, **{**config, "recompute": "none"})
        for a, b in zip(trace.programs, plain.programs, strict=True):
            again = sum(op.flops for op in a.ops if op.kind == "compute" and op.tags["phase"] == "recompute")
            layers = sum(op.flops for op in b.ops if op.kind == "compute" and op.tags["phase"] == "fwd"
                         and "layer" in op.tags)
            assert again == layers


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(configs)
def test_every_configuration_replays_to_the_end(config):
    trace = build({**config, "tp": 1, "dp": min(config["dp"], config["ep"] * 2)})
    assume(trace.ranks <= 16)
    out = replay(Simulation(load_topology(f"switch:{trace.ranks},100GB/s,1us")), trace)
    assert out.step_time > 0 and len(out.ops) == sum(len(p.ops) for p in trace.programs)
