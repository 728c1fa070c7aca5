"""Compressed data-parallel study: bytes on the wire, warm-ups, compression on the critical path, CO2, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from commsim.collectives import CollectiveConfig
from commsim.collectives.api import ring_path_parameters
from commsim.collectives.closed_form import ring_all_reduce_time
from commsim.compression import PayloadCounter, make_compressor
from commsim.config import validate
from commsim.devices.device import kernel_time
from commsim.errors import ConfigError
from commsim.network.inter_node import Fabric
from commsim.network.loader import load_topology
from commsim.systems import StudyContext, get_study
from commsim.systems.compressed_dp import analysis
from commsim.systems.compressed_dp.params import CompressedDPParams, CompressorEntry
from commsim.systems.compressed_dp.plan import build_plan
from commsim.systems.compressed_dp.regimes import regimes
from commsim.systems.compressed_dp.schedules import CollectivePlan, volume_per_rank
from commsim.systems.compressed_dp.workload import compute_time, device_of, simulate
from commsim.workloads.data_parallel import layout_from_buckets

FLOWS = CollectiveConfig(mode="flows")
COUNTER = PayloadCounter(chunk_elements=1 << 14, whole_limit=1 << 16)
TINY = """name: tiny-cdp
layers: 4
hidden: 128
heads: 2
ffn_hidden: 512
gated_ffn: false
vocab: 64
max_seq_len: 128
tied_embeddings: false
bias: false
norm: rmsnorm
position: rotary
nominal_params: 1M
published_params: null
source: a test model
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny.yaml"
    path.write_text(TINY)
    return str(path)


def case(spec: str, topology: str = "switch:4,50GB/s,1us", buckets=None, flops=(1e12,), **plan_kw):
    topo = load_topology(topology)
    layout = layout_from_buckets(buckets or [[(512, 256), (256,)]], backward_flops=list(flops))
    from commsim.systems.compressed_dp.analysis import _ranks_per_node

    coll = CollectivePlan.resolve(len(topo.devices), _ranks_per_node(topo, topo.devices), **plan_kw)
    return topo, layout, coll, build_plan(make_compressor(spec), layout, coll, COUNTER)


# ------------------------------------------------------------------ bytes on the wire
@pytest.mark.parametrize("topology", ["switch:4,50GB/s,1us", "rail_optimized:2,2,100Gbps"])
@pytest.mark.parametrize("spec", ["none", "int8", "topk:ratio=0.01", "dgc:ratio=0.01", "powersgd:rank=2", "signsgd",
                                  "liec:ratio=0.02"])
def test_wire_bytes_are_the_packed_payload_through_its_collectives_volume(spec: str, topology: str) -> None:
    topo, layout, coll, plan = case(spec, topology)
    counts = [COUNTER.count(make_compressor(spec), shape) for _, shape in layout.tensors[0]]
    # what the transfers carry is exactly the counted packed payload (uploads) plus the server's reply
    uploads = sum(t.nbytes for t in plan.transfers() if t.kind != "reply")
    assert uploads == sum(c.packed for c in counts) == plan.payload_packed
    assert sum(t.nbytes for t in plan.transfers() if t.kind == "reply") == plan.reply
    expected = sum(volume_per_rank(t.kind, coll.algorithm(t.kind), coll.n, t.nbytes,
                                   ranks_per_node=coll.ranks_per_node) for t in plan.transfers())
    stats = simulate(topo, layout, plan, coll, group=topo.devices, config=FLOWS)
    assert stats.wire_bytes == pytest.approx(expected, rel=1e-12)
    assert plan.wire == pytest.approx(expected, rel=1e-12)


def test_each_payload_takes_its_collective() -> None:
    kinds = {}
    for spec in ["none", "randomk:ratio=0.1", "topk:ratio=0.1", "dgc:ratio=0.1", "powersgd:rank=2", "signsgd",
                 "topk:ratio=0.1,index_coding=delta"]:
        _, _, _, plan = case(spec, buckets=[[(512, 256)]])
        kinds[spec] = [[(t.kind, t.label) for t in s.transfers] for s in plan.buckets[0].stages]
    assert kinds["none"] == kinds["randomk:ratio=0.1"] == [[("all_reduce", "body")]]
    assert kinds["topk:ratio=0.1"] == [[("all_gather", "body")]]
    # variable sizes: a size exchange precedes the body
    assert kinds["dgc:ratio=0.1"] == kinds["topk:ratio=0.1,index_coding=delta"] == [
        [("all_gather", "size_exchange"), ("all_gather", "body")]]
    assert kinds["powersgd:rank=2"] == [[("all_reduce", "P")], [("all_reduce", "Q")]]
    assert kinds["signsgd"] == [[("push", "push")], [("reply", "reply")]]


def test_naive_bytes_travel_when_packing_is_off() -> None:
    _, _, coll, packed = case("signsgd")
    _, layout, _, _ = case("signsgd")
    naive = build_plan(make_compressor("signsgd"), layout, coll, COUNTER, packed=False)
    push = [t.nbytes for t in naive.transfers() if t.kind == "push"]
    assert push == [512 * 256 + 256]  # one byte per sign
    assert [t.nbytes for t in packed.transfers() if t.kind == "push"] == [(512 * 256 + 256) / 8]


def test_all_gather_volume_grows_with_the_ranks_and_all_reduce_does_not() -> None:
    for n in (2, 4, 8):
        for topology in (f"switch:{n},50GB/s,1us",):
            topo, layout, coll, sparse = case("topk:ratio=0.01", topology)
            stats = simulate(topo, layout, sparse, coll, group=topo.devices, config=FLOWS)
            assert stats.wire_bytes == pytest.approx((n - 1) * sparse.payload_packed, rel=1e-12)
            topo, layout, coll, dense = case("none", topology)
            stats = simulate(topo, layout, dense, coll, group=topo.devices, config=FLOWS)
            assert stats.wire_bytes == pytest.approx(2 * (n - 1) / n * dense.payload_packed, rel=1e-12)


# ------------------------------------------------------------------ payload counting
@pytest.mark.parametrize("spec", ["int8", "topk:ratio=0.01", "powersgd:rank=2", "signsgd", "ef_signsgd",
                                  "liec:ratio=0.01", "fp4_e3m0"])
def test_row_chunk_counting_equals_counting_the_whole_tensor(spec: str) -> None:
    shape = (3100, 80)  # 248,000 elements: 15 chunks and a leftover
    chunked = PayloadCounter(chunk_elements=1 << 14, whole_limit=1 << 14).count(make_compressor(spec), shape)
    whole = PayloadCounter(chunk_elements=1 << 20, whole_limit=1 << 20).count(make_compressor(spec), shape)
    assert chunked.how == "affine in rows (exact)" and whole.how == "whole tensor"
    assert chunked.messages == whole.messages
    assert (chunked.reply_packed, chunked.sparse_values) == (whole.reply_packed, whole.sparse_values)


def test_data_dependent_codings_are_labelled_estimates() -> None:
    counter = PayloadCounter(chunk_elements=1 << 12, whole_limit=1 << 14)
    dgc = counter.count(make_compressor("dgc:ratio=0.01"), (3100, 80))
    assert dgc.how.startswith("estimate") and 0 <= dgc.deviation < 0.5
    assert dgc.messages[0].label == "size_exchange" and dgc.messages[0].packed == 4  # a per-tensor count, not scaled
    assert dgc.packed == pytest.approx(0.01 * 248_000 * 8, rel=0.25)


# ------------------------------------------------------------------ warm-ups
def test_warm_up_steps_send_dense() -> None:
    entry = CompressorEntry(spec="powersgd:rank=2", dense_steps=3)
    plan = regimes(entry, 10)
    assert [(r.label, r.steps) for r in plan] == [("dense warm-up", 3), ("steady", 7)]
    topo = load_topology("switch:4,50GB/s,1us")
    layout = layout_from_buckets([[(512, 256)]], backward_flops=[1e12])
    coll = CollectivePlan.resolve(4, None)
    dense = build_plan(plan[0].compressor, layout, coll, COUNTER)
    assert [(t.kind, t.nbytes) for t in dense.transfers()] == [("all_reduce", 4 * 512 * 256)]
    low_rank = build_plan(plan[1].compressor, layout, coll, COUNTER)
    assert [(t.kind, t.nbytes) for t in low_rank.transfers()] == [("all_reduce", 4 * 512 * 2),
                                                                   ("all_reduce", 4 * 256 * 2)]
    wire = simulate(topo, layout, dense, coll, group=topo.devices, config=FLOWS).wire_bytes
    assert wire == pytest.approx(2 * 3 / 4 * 4 * 512 * 256)


def test_dgc_warm_up_stages_send_their_densities() -> None:
    plan = regimes(CompressorEntry(spec="dgc:warmup_steps=2"), 20)
    assert [r.steps for r in plan] == [2, 2, 2, 2, 12]
    layout = layout_from_buckets([[(30, 30)]], backward_flops=[1.0])  # 900 < DGC's 1000 samples: exact threshold
    coll = CollectivePlan.resolve(4, None)
    sent = [build_plan(r.compressor, layout, coll, COUNTER).payload_packed for r in plan]
    k = [math.ceil(d * 900) for d in (0.25, 0.0625, 0.015625, 0.004, 0.001)]
    assert sent == [4 + 8 * x for x in k]  # a 4-byte count, then fp32 value + int32 index per entry


def test_run_means_weight_regimes_by_their_steps(tiny: str) -> None:
    params = CompressedDPParams(model=tiny, tokens_per_rank=128, train_steps=100, inter_node_gbps=[10.0],
                                variants=["sync"], compressors=[CompressorEntry(spec="none"), CompressorEntry(
                                    spec="powersgd:rank=1", label="p", dense_steps=40)],
                                convergence={"enabled": False})
    prep = analysis.prepare(params, load_topology("switch:4,10Gbps,1us"))
    runs = analysis.sweep(prep)
    means = analysis.run_means(prep, runs).set_index(["compressor", "gbit_per_s"])
    steady = analysis.iterations(prep, runs).set_index(["compressor", "gbit_per_s"])
    dense = float(steady.loc[("none", 10.0), "iteration_time"])  # the dense warm-up is the none plan
    low = float(steady.loc[("p", 10.0), "iteration_time"])
    assert float(means.loc[("p", 10.0), "mean_iteration_time"]) == pytest.approx(0.4 * dense + 0.6 * low)
    assert low < dense


# ------------------------------------------------------------------ compression on the critical path
@pytest.mark.parametrize("spec", ["none", "topk:ratio=0.01", "int8", "powersgd:rank=2"])
def test_compression_delays_the_send_by_exactly_its_kernel_time(spec: str) -> None:
    topo, layout, coll, plan = case(spec, buckets=[[(2048, 1024)]], flops=(2e12,))
    stats = simulate(topo, layout, plan, coll, group=topo.devices, config=FLOWS, release="after_backward")
    spec_ = device_of(topo, topo.devices[0])
    backward_end = compute_time(layout, spec_)
    first = plan.buckets[0].stages[0].kernel
    kernel = kernel_time(spec_, float(first[0, 0]), float(first[1, 0]), "fp32")
    assert stats.first_send[0] == pytest.approx(backward_end + kernel, rel=1e-12, abs=1e-15)
    assert (kernel == 0.0) == (spec == "none")


def test_unlimited_network_iteration_is_compute_plus_serial_compression() -> None:
    topo, layout, coll, plan = case("int8", buckets=[[(2048, 1024)], [(1024, 1024)]], flops=(2e12, 2e12))
    spec = device_of(topo, topo.devices[0])
    serial = sum(kernel_time(spec, float(w[0, 0]), float(w[1, 0]), "fp32")
                 for b in plan.buckets for w in [*(s.kernel for s in b.stages), b.finish])
    stats = simulate(topo, layout, plan, coll, group=topo.devices, config=FLOWS, release="after_backward",
                     unlimited=True)
    latency = 2 * 1e-6 * (2 * 3) * 2  # two collectives' ring latencies (link latency both ways) at most
    assert compute_time(layout, spec) + serial <= stats.iteration_time <= compute_time(layout, spec) + serial + latency


def test_server_rank_alone_aggregates_for_a_star_server() -> None:
    _, _, _, plan = case("signsgd", "switch:4,50GB/s,1us", root=2)
    server_stage = plan.buckets[0].stages[1]
    assert (server_stage.kernel[:, 2] > 0).all() and not server_stage.kernel[:, [0, 1, 3]].any()
    _, _, _, sharded = case("signsgd", "switch:4,50GB/s,1us", server="sharded")
    kernel = sharded.buckets[0].stages[1].kernel
    assert np.allclose(kernel[:, 0], kernel[:, 1]) and np.allclose(kernel.sum(axis=1), server_stage.kernel.sum(axis=1))


# ------------------------------------------------------------------ CO2
def _co2_case(comm_over_compute: float, tau: int = 1):
    topo, layout, coll, plan = case("none", "switch:4,50GB/s,1us", buckets=[[(4096, 1024)]], flops=(4e12,))
    spec = device_of(topo, topo.devices[0])
    compute = compute_time(layout, spec)
    alpha, _ = ring_path_parameters(topo, topo.devices)
    size = plan.transfers()[0].nbytes
    # bandwidth at which one step's all-reduce takes comm_over_compute x the compute
    bandwidth = 2 * 3 / 4 * size / (comm_over_compute * compute - 6 * alpha)
    comm = ring_all_reduce_time(4, size, alpha=alpha, bandwidth=bandwidth)
    fab = Fabric.of(topo)
    run = {v: simulate(topo, layout, plan, coll, group=topo.devices, config=FLOWS, variant=v, tau=tau, fabric=fab,
                       port_bandwidth=bandwidth) for v in ("sync", "co2")}
    return compute, comm, run


def test_co2_hides_exactly_what_fits_in_tau_steps() -> None:
    compute, comm, run = _co2_case(0.99)
    assert comm == pytest.approx(0.99 * compute)
    assert run["co2"].iteration_time == pytest.approx(compute, rel=1e-9)  # hidden behind the next step
    assert run["sync"].iteration_time == pytest.approx(compute + comm, rel=1e-9)  # one bucket: nothing overlaps
    compute, comm, run = _co2_case(1.01)
    assert run["co2"].iteration_time == pytest.approx(comm, rel=1e-9)  # the communication sets the pace
    compute, comm, run = _co2_case(1.9, tau=3)
    assert run["co2"].iteration_time == pytest.approx(comm, rel=1e-9)  # more overlap cannot beat the throughput
    assert run["co2"].periodic and run["co2"].steps > 4 + 3  # the backlog had to build up first


def test_co2_with_tau_zero_is_synchronous() -> None:
    topo, layout, coll, plan = case("topk:ratio=0.01")
    sync = simulate(topo, layout, plan, coll, group=topo.devices, config=FLOWS)
    co2 = simulate(topo, layout, plan, coll, group=topo.devices, config=FLOWS, variant="co2", tau=0)
    assert co2.iteration_time == pytest.approx(sync.iteration_time, rel=1e-9)


# ------------------------------------------------------------------ bandwidth sweep
def test_sweep_scales_only_inter_node_links() -> None:
    topo = load_topology("rail_optimized:2,2,100Gbps")
    fab = Fabric.of(topo)
    assert fab.port_bandwidth == pytest.approx(100e9 / 8)
    compiled = topo.compile()
    nodes = topo.graph.nodes
    swept = set(fab.inter_node.tolist())
    for e in range(compiled.edge_src.shape[0]):
        a, b = compiled.names[compiled.edge_src[e]], compiled.names[compiled.edge_dst[e]]
        leaves_server = nodes[a].get("server") is None or nodes[b].get("server") is None
        assert (e in swept) == leaves_server  # NVLink and the PCIe link to the NIC stay, ports and fabric scale
    assert 0 < len(swept) < compiled.edge_src.shape[0]
    topo, layout, coll, plan = case("none", "rail_optimized:2,2,100Gbps", buckets=[[(4096, 4096)]])
    slow = [simulate(topo, layout, plan, coll, group=topo.devices, config=FLOWS, fabric=fab, port_bandwidth=b,
                     release="after_backward").iteration_time for b in (1e9, 2e9)]
    compute = compute_time(layout, device_of(topo, "gpu0"))
    # inter-node bound: the exposed all-reduce halves when the ports double
    assert (slow[0] - compute) / (slow[1] - compute) == pytest.approx(2.0, rel=0.02)


# ------------------------------------------------------------------ the study
def test_study_runs_end_to_end_on_a_small_case(tiny: str) -> None:
    study = get_study("compressed_dp")
    params = study.parse({
        "model": tiny, "tokens_per_rank": 128, "inter_node_gbps": [1, 100],
        "compressors": [{"spec": "none"}, {"spec": "topk:ratio=0.05", "label": "topk"},
                        {"spec": "dgc:ratio=0.05,warmup_steps=10", "label": "dgc"},
                        {"spec": "powersgd:rank=1", "dense_steps": 5}, {"spec": "signsgd"}],
        "train_steps": 100, "convergence": {"compressors": ["none", "topk:ratio=0.05"], "steps": 4,
                                            "eval_every": 2},
        "timeline": {"compressor": "topk", "steps": 1}})
    out = study.run(params, StudyContext(topology=load_topology("rail_optimized:2,2,100Gbps")))
    table = out.csv["iteration_vs_bandwidth"]
    assert set(table["compressor"]) == {"none", "topk", "dgc", "powersgd:rank=1", "signsgd"}
    assert set(table["gbit_per_s"]) == {1.0, 100.0}
    for (_, _), part in table.groupby(["compressor", "variant"]):
        part = part.sort_values("gbit_per_s")
        assert part["iteration_time"].is_monotonic_decreasing or np.allclose(part["iteration_time"],
                                                                             part["iteration_time"].iloc[0])
    parts = table["compute"] + table["compression"] + table["exposed_comm"]
    assert np.allclose(parts, table["iteration_time"])
    assert {"iterations", "regimes", "run_means", "payloads", "convergence", "convergence_summary"} <= set(out.tables)
    assert len(out.tables["regimes"].query("compressor == 'dgc'")["regime"].unique()) == 5
    assert out.result is not None and len(out.result.spans) > 0
    assert {"compute", "compression", "comm"} <= set(out.result.spans["stream"])
    assert len(out.figures) == 6 and out.metrics["ranks"] == (4.0, "count")


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("data", "words"), [
    ({"compressors": [{"spec": "topk:ratio=2"}]}, "ratio"),
    ({"compressors": [{"spec": "nosuch"}]}, "not a known compressor"),
    ({"compressors": [{"spec": "powersgd:rank=0"}]}, "rank"),
    ({"compressors": [{"spec": "none"}, {"spec": "none"}]}, "more than once"),
    ({"compressors": [{"spec": "none", "dense_steps": 20}], "train_steps": 10}, "dense_steps"),
    ({"model": "gpt-9"}, "model"),
    ({"inter_node_gbps": [0]}, "inter_node_gbps"),
    ({"co2_tau": -1}, "co2_tau"),
    ({"variants": ["async"]}, "variants"),
    ({"timeline": {"compressor": "nosuch"}}, "timeline"),
    ({"convergence": {"compressors": ["topk:ratio=0"]}}, "ratio"),
])
def test_bad_parameters_get_clear_errors(data: dict, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate(CompressedDPParams, data, prefix="workload.params")
    assert words in str(error.value)
    assert "Fix" in str(error.value) or "fix" in str(error.value).lower()


def test_bad_groups_and_algorithms_get_clear_errors(tiny: str) -> None:
    params = CompressedDPParams(model=tiny, tokens_per_rank=128, ranks=9, convergence={"enabled": False})
    with pytest.raises(ConfigError, match="does not fit the topology's 4 devices"):
        analysis.prepare(params, load_topology("switch:4,50GB/s,1us"))
    params = CompressedDPParams(model=tiny, tokens_per_rank=128, all_gather_algorithm="hierarchical",
                                convergence={"enabled": False})
    with pytest.raises(ConfigError, match="hierarchical"):
        analysis.prepare(params, load_topology("switch:4,50GB/s,1us"))
    with pytest.raises(ConfigError, match="multiple of"):
        analysis.prepare(CompressedDPParams(model=tiny, tokens_per_rank=200, convergence={"enabled": False}),
                         load_topology("switch:4,50GB/s,1us"))


# ------------------------------------------------------------------ the training trace
def test_the_step_trace_chains_each_bucket_on_issue_order_queues_with_a_star_server_apart() -> None:
    from commsim.systems.compressed_dp.workload import step_trace

    _, layout, coll, plan = case("signsgd", buckets=[[(512, 256)], [(256,)]], flops=(1e12, 1e12), root=2)
    trace = step_trace(plan, layout, coll, steps=2, lag=2, release="backward")
    server, workers = sorted(trace.programs, key=lambda p: p.name)
    assert (server.name, server.ranks, workers.rank_list()) == ("server", [2], [0, 1, 3])
    ops = {op.id: op for op in workers.ops}
    push, reply = ops["s0.b1.t0.0"], ops["s0.b1.t1.0"]
    assert (push.op, push.algorithm, push.root, reply.op, reply.algorithm) == ("reduce", "star", 2, "broadcast", "star")
    assert ops["s0.b1.k0"].deps == ["s0.bwd1"]  # bucket 1 is released by its own backward kernel
    assert ops["s0.b1.k1"].kind == "delay" and ops["s0.b1.k1"].seconds == 0  # the server's aggregation, waited for
    assert {op.id: op for op in server.ops}["s0.b1.k1"].flops > 0
    assert {ops[i].tags["queue"] for i in ("s0.b1.k0", "s0.b1.t0.0", "s0.fwd")} == {"compression", "comm", "compute"}
    # step 2 (the measurement's end) waits for the sync of step 0; step 1 for nothing
    assert ops["s2.fwd"].deps == ["s0.sync"] and ops["s1.fwd"].deps == []
    assert set(ops["s0.sync"].deps) == {"s0.b0.finish", "s0.b1.finish"}
    after = step_trace(plan, layout, coll, steps=1, lag=1, release="after_backward")
    assert {op.id: op for op in after.programs[0].ops}["s0.b1.k0"].deps == ["s0.bwd0"]


def test_scenario_faults_reach_the_study_and_a_failed_link_changes_its_result(tiny: str) -> None:
    from commsim.scenario import simulate as run_scenario

    params = {"model": tiny, "tokens_per_rank": 128, "inter_node_gbps": [100], "variants": ["sync", "co2"],
              "compressors": [{"spec": "none"}], "train_steps": 10, "convergence": {"enabled": False},
              "timeline": {"compressor": "none", "steps": 1}}
    scenario = {"name": "cdp-faults", "topology": "rail_optimized:2,2,100Gbps",
                "workload": {"kind": "study", "study": "compressed_dp", "params": params}}
    clean = run_scenario(scenario).tables["iterations"].set_index("variant")["iteration_time"]
    # gpu0's NVLink is down: its intra-server traffic goes round through its NIC, the rail and a spine
    failed = run_scenario({**scenario, "faults": [{"kind": "link_down", "at": 0, "link": ["gpu0", "nvsw0"]}]})
    slow = failed.tables["iterations"].set_index("variant")["iteration_time"]
    for variant in ("sync", "co2"):
        assert slow[variant] > clean[variant] * 1.1, variant
    with pytest.raises(ConfigError, match="not a link of the topology"):
        run_scenario({**scenario, "faults": [{"kind": "link_down", "at": 0, "link": ["gpu0", "gpu3"]}]})


def test_the_study_drives_no_simulation_clock_of_its_own() -> None:
    from pathlib import Path

    import commsim.systems.compressed_dp as package

    sources = {p.name: p.read_text() for p in Path(package.__file__).parent.glob("*.py")}
    assert "workload.py" in sources and "engine.py" not in sources
    assert not [name for name, text in sources.items() if "simpy" in text or "env.timeout" in text or "env.process" in text]
