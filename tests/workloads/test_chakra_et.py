"""Binary Chakra ET: fixtures built by Chakra's own tools, every node type, replay against closed forms, round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from commsim.cli import main
from commsim.collectives.api import estimate_collective
from commsim.errors import ConfigError, TraceError
from commsim.scenario import simulate
from commsim.workloads import import_chakra, load_trace, training_trace
from commsim.workloads._index import TraceIndex
from commsim.workloads.chakra_et import export_chakra, read_chakra_et
from commsim.workloads.replay import DEFAULT_ALGORITHMS
from commsim.workloads.trace import ComputeOp, DelayOp, Program, Trace

BIN = Path(sys.executable).parent
MIB = 2**20
OPS = {"ALL_REDUCE": "all_reduce", "ALL_GATHER": "all_gather", "ALL_TO_ALL": "all_to_all",
       "REDUCE_SCATTER": "reduce_scatter", "BROADCAST": "broadcast"}


def _tool(name: str, *args: str, cwd: Path) -> None:
    done = subprocess.run([str(BIN / name), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Chakra's generator: every node type it knows, for 4, 8 and 16 NPUs, collectives of 1 MiB."""
    out = {}
    for npus in (4, 8, 16):
        folder = tmp_path_factory.mktemp(f"chakra{npus}")
        _tool("chakra_generator", "--num_npus", str(npus), "--default_comm_size", str(MIB),
              "--default_runtime", "7", "--default_tensor_size", "4096", cwd=folder)
        out[npus] = folder
    return out


def _switch(npus: int) -> str:
    return f"switch:{npus},50GB/s,500ns"


@pytest.mark.parametrize("npus", [4, 8, 16])
@pytest.mark.parametrize("name", list(OPS))
def test_generated_microbenchmark_replays_at_the_closed_form(generated, npus, name):
    op = OPS[name]
    run = simulate({"name": "micro", "topology": _switch(npus),
                    "workload": {"kind": "trace", "file": str(generated[npus] / name)}})   # a prefix, format auto
    expected = estimate_collective(_switch(npus), op, MIB, algorithm=DEFAULT_ALGORITHMS[op]).time
    assert run.metrics["step_time"][0] == pytest.approx(expected, rel=1e-9)
    ops = run.tables["ops"]
    assert len(ops) == npus and set(ops["kind"]) == {"collective"}


@pytest.mark.parametrize("npus", [4, 8, 16])
def test_text_converter_all_reduce_microbenchmark(tmp_path, npus):
    """ASTRA-sim's microbenchmark form: Chakra's text converter from a MICRO description, 1 MiB all-reduce."""
    (tmp_path / "ar.txt").write_text(f"MICRO\n1\nallreduce -1 0 NONE 0 0 NONE 0 0 ALLREDUCE {MIB} 1\n")
    _tool("chakra_converter", "Text", "--input", "ar.txt", "--output", "all_reduce", "--num-npus", str(npus),
          "--num-passes", "2", cwd=tmp_path)
    trace = import_chakra([tmp_path])                                       # a directory
    assert trace.ranks == npus and [op.op for op in trace.programs[0].ops] == ["all_reduce", "all_reduce"]
    assert trace.metadata["chakra_metadata"]["schema"].startswith("1.0.2-chakra")
    run = simulate({"name": "micro", "topology": _switch(npus), "workload": {"kind": "trace", "file": str(tmp_path)}})
    one = estimate_collective(_switch(npus), "all_reduce", MIB, algorithm="ring").time
    assert run.metrics["step_time"][0] == pytest.approx(2 * one, rel=1e-9)   # two passes, in order


def test_every_generated_node_type_imports(generated):
    folder = generated[4]
    delay = import_chakra([folder / "one_comp_node"]).programs[0].ops
    assert [(op.kind, op.stream, op.seconds) for op in delay] == [("delay", "compute", 7e-6)]
    pair = import_chakra([folder / "two_comp_nodes_dependent"]).programs[2].ops
    assert [op.kind for op in pair] == ["delay", "delay"] and pair[1].deps == [pair[0].id]
    free = import_chakra([folder / "two_comp_nodes_independent"]).programs[0].ops
    assert free[1].deps == []
    for name in ("one_remote_mem_load_node", "one_remote_mem_store_node"):
        (op,) = import_chakra([folder / name]).programs[3].ops
        assert (op.kind, op.stream, op.flops, op.bytes) == ("compute", "mem", 0, 4096)
        assert op.tags["chakra_type"] == name.upper().replace("ONE_REMOTE_", "").replace("_NODE", "_NODE")
    meta = import_chakra([folder / "one_metadata_node_all_types"])
    assert all(p.ops == [] for p in meta.programs) and meta.metadata["chakra_metadata"]["version"] == "1.0.0"
    (barrier,) = import_chakra([folder / "BARRIER"]).programs[0].ops
    assert (barrier.op, barrier.bytes) == ("all_reduce", 0)
    # Chakra's generator writes send/recv nodes without comm_src/comm_dst: refused, naming what is missing
    with pytest.raises(TraceError, match="lacks 'comm_dst', which a COMM_SEND_NODE needs"):
        import_chakra([folder / "one_comm_send_node"])


def _write_rank(pb2, protolib, path: Path, nodes: list) -> None:
    with path.open("wb") as out:
        protolib.encodeMessage(out, pb2.GlobalMetadata(version="0.0.4"))
        for node in nodes:
            protolib.encodeMessage(out, node)


def test_send_recv_process_groups_and_compute_built_with_chakras_protobuf_api(tmp_path):
    """What Chakra's PyTorch converter writes for pipeline parallelism: send/recv with src/dst/tag, pg_name groups."""
    from chakra.schema.protobuf import et_def_pb2 as pb2
    from chakra.src.third_party.utils import protolib

    attr = pb2.AttributeProto
    for rank in range(4):
        peer = rank ^ 1
        comp = pb2.Node(id=10, name="gemm", type=pb2.COMP_NODE,
                        attr=[attr(name="num_ops", int64_val=2 * 10**12), attr(name="tensor_size", uint64_val=3 * MIB)])
        p2p = pb2.Node(id=11, name="p2p", type=pb2.COMM_SEND_NODE if rank % 2 == 0 else pb2.COMM_RECV_NODE,
                       data_deps=[10],
                       attr=[attr(name="comm_src", int32_val=rank if rank % 2 == 0 else peer),
                             attr(name="comm_dst", int32_val=peer if rank % 2 == 0 else rank),
                             attr(name="comm_size", int64_val=MIB), attr(name="comm_tag", int32_val=5)])
        coll = pb2.Node(id=12, name="ar", type=pb2.COMM_COLL_NODE, ctrl_deps=[11],
                        attr=[attr(name="comm_type", int64_val=pb2.ALL_REDUCE), attr(name="comm_size", int64_val=MIB),
                              attr(name="pg_name", string_val=str(1 + rank % 2))])
        _write_rank(pb2, protolib, tmp_path / f"pp.{rank}.et", [comp, p2p, coll])
    (tmp_path / "pp.comm_group.json").write_text(json.dumps({"1": [0, 2], "2": [1, 3]}))
    trace = import_chakra([tmp_path / "pp"])
    ops = {op.id: op for op in trace.programs[1].ops}
    assert (ops["10"].flops, ops["10"].bytes, ops["10"].stream) == (2e12, 3 * MIB, "compute")
    assert (ops["11"].kind, ops["11"].peer, ops["11"].tag, ops["11"].deps) == ("recv", 0, 5, ["10"])
    assert (ops["12"].group, ops["12"].deps, ops["12"].stream) == ([1, 3], ["11"], "coll:2")
    run = simulate({"name": "pp", "topology": _switch(4), "workload": {"kind": "trace", "file": str(tmp_path)}})
    assert run.metrics["step_time"][0] > 0


def _per_rank(trace: Trace) -> dict[int, list[dict]]:
    index = TraceIndex(trace)
    out = {}
    for rank in range(trace.ranks):
        program = index.program_of(rank)
        if program is not None:
            out[rank] = [op.model_dump() for op in trace.programs[program].ops]
    return out


def test_export_import_round_trip_is_lossless(tmp_path):
    trace = training_trace("llama-2-7b", tp=2, pp=2, dp=2, seq_len=64, num_micro_batches=2, sequence_parallel=True)
    paths = export_chakra(trace, tmp_path / "step")
    assert len([p for p in paths if p.suffix == ".et"]) == 8 and (tmp_path / "step.comm_group.json").exists()
    back = import_chakra([tmp_path / "step"])
    assert (back.name, back.ranks, back.communicators, back.metadata) == (trace.name, trace.ranks,
                                                                         trace.communicators, trace.metadata)
    assert _per_rank(back) == _per_rank(trace)
    # what a Chakra reader sees: native fields carry sizes, groups and stream order
    meta, nodes = read_chakra_et(tmp_path / "step.0.et")
    assert meta["version"] == "0.0.4"
    kinds = {node["type"] for node in nodes}
    assert {1, 4, 5, 6, 7} <= kinds                    # metadata (alloc/free), comp, send, recv, coll


def test_round_trip_keeps_sub_microsecond_times_fractional_flops_and_replays_the_same(tmp_path):
    trace = Trace(ranks=2, communicators={"pair": [[0, 1]]}, programs=[Program(name="p", ranks=[0, 1], ops=[
        DelayOp(id="host", seconds=1.25e-7, stream="cpu"),
        ComputeOp(id="k", flops=1.5e9 + 0.5, bytes=1000, dtype="bf16", efficiency=0.5, tags={"layer": 3}),
        {"kind": "collective", "id": "ar", "op": "broadcast", "bytes": 4096, "group": "pair", "deps": ["k"]},
        {"kind": "send", "id": "s", "peer": "pair:+1%", "bytes": 64, "tag": 2, "deps": ["ar"]},
        {"kind": "recv", "id": "r", "peer": "pair:-1%", "bytes": 64, "tag": 2, "stream": "rx"},
        {"kind": "disk_read", "id": "d", "bytes": 10},
    ])])
    export_chakra(trace, tmp_path / "t")
    back = import_chakra([tmp_path / "t"])
    assert _per_rank(back) == _per_rank(trace)
    scenario = {"name": "rt", "topology": _switch(2), "workload": {"kind": "trace", "file": str(tmp_path / "t")}}
    (tmp_path / "orig.json").write_text(json.dumps(trace.model_dump(mode="json")))
    original = simulate({**scenario, "workload": {"kind": "trace", "file": str(tmp_path / "orig.json")}})
    assert simulate(scenario).metrics["step_time"] == original.metrics["step_time"]


def test_errors_name_the_file_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(TraceError, match="names no Chakra trace file"):
        import_chakra([tmp_path / "nothing"])
    (tmp_path / "bad.0.et").write_bytes(b"\x05not a protobuf at all")
    with pytest.raises(TraceError, match="is not a Chakra ET protobuf stream"):
        import_chakra([tmp_path / "bad"])
    monkeypatch.setitem(sys.modules, "chakra.schema.protobuf", None)   # as if mlc-chakra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'commsim\[chakra\]'"):
        read_chakra_et(tmp_path / "bad.0.et")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out = capsys.readouterr()
    return info.value.code or 0, out.out, out.err


def test_export_and_import_commands(capsys, tmp_path, generated):
    code, out, _ = _run(capsys, "trace", "import-chakra", str(generated[8] / "ALL_GATHER"), "-o", str(tmp_path / "a.json"))
    assert code == 0 and load_trace(tmp_path / "a.json").ranks == 8
    code, out, _ = _run(capsys, "trace", "export-chakra", str(tmp_path / "a.json"), "-o", str(tmp_path / "out" / "ag"))
    assert code == 0 and "wrote 8 files" in out
    assert import_chakra([tmp_path / "out"]).programs[5].ops[0].op == "all_gather"
    code, _, err = _run(capsys, "trace", "export-chakra", str(tmp_path / "missing.json"), "-o", str(tmp_path / "x"))
    assert code == 2 and "does not exist" in err


def test_scenario_file_names_a_chakra_prefix_relative_to_itself(generated, tmp_path, monkeypatch):
    import shutil

    from commsim.scenario import load_scenario

    (tmp_path / "traces").mkdir()
    for path in generated[4].glob("ALL_GATHER.*.et"):
        shutil.copy(path, tmp_path / "traces" / path.name)
    (tmp_path / "micro.yaml").write_text("name: micro\ntopology: switch:4,50GB/s,500ns\n"
                                         "workload: {kind: trace, file: traces/ALL_GATHER, format: chakra}\n")
    monkeypatch.chdir(generated[8])          # elsewhere: the prefix is found next to the scenario
    run = simulate(load_scenario(tmp_path / "micro.yaml"))
    expected = estimate_collective(_switch(4), "all_gather", MIB, algorithm="ring").time
    assert run.metrics["step_time"][0] == pytest.approx(expected, rel=1e-9)
