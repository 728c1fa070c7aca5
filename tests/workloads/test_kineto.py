"""PyTorch profiler import on traces recorded here from a real two-process gloo run, replayed and re-networked."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from commsim.errors import TraceError
from commsim.scenario import simulate
from commsim.workloads.kineto import GLOO_COMPLETION_SKEW, import_pytorch_profile

RECORDER = Path(__file__).with_name("record_profile.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profile")
    done = subprocess.run([sys.executable, str(RECORDER), str(out), str(_free_port())], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["rank0.json", "rank1.json"]
    return out


def _recorded_collectives(path: Path) -> list[tuple[str, float]]:
    events = json.loads(path.read_text())["traceEvents"]
    gloo = sorted((e for e in events if e.get("ph") == "X" and str(e.get("name", "")).startswith("gloo:")),
                  key=lambda e: e["ts"])
    return [(e["name"][5:], e["ts"]) for e in gloo]


def test_import_keeps_collectives_sizes_and_measured_times(recorded):
    trace = import_pytorch_profile([recorded])
    assert trace.ranks == 2 and [p.name for p in trace.programs] == ["rank0", "rank1"]
    params = (64 * 128 + 128) + (128 * 8 + 8)                       # DDP's one gradient bucket, fp32
    for program in trace.programs:
        colls = [op for op in program.ops if op.kind == "collective"]
        names = [c.op for c in colls]
        recorded_names = [n for n, _ in _recorded_collectives(recorded / f"{program.name}.json")]
        assert names == [{"all_reduce": "all_reduce", "broadcast": "broadcast"}[n] for n in recorded_names]
        assert [c.bytes for c in colls if c.op == "all_reduce"] == [params * 4, params * 4, 4000]
        assert colls[-1].op == "broadcast" and colls[-1].bytes == 4000
        compute = [op for op in program.ops if op.kind == "delay" and op.name != "host"]
        assert compute and all(op.seconds == pytest.approx(op.tags["recorded_end"] - op.tags["recorded_start"])
                               for op in compute)
        assert any(op.name == "aten::linear" or op.name.startswith("DistributedDataParallel") or "addmm" in op.name
                   or op.name.startswith("autograd::engine") for op in compute)


def test_replay_preserves_recorded_order_and_a_slower_network_moves_only_the_waits(recorded):
    trace = import_pytorch_profile([recorded])
    scenario = {"name": "kineto", "workload": {"kind": "trace", "file": str(recorded)}}
    fast = simulate({**scenario, "topology": "switch:2,50GB/s,1us"})
    ops = fast.tables["ops"]
    for cohort, program in enumerate(trace.programs):
        mine = ops[ops["cohort"] == cohort].set_index("op_id")
        for stream in {op.stream for op in program.ops}:     # each stream (thread, gloo) in recorded order
            recorded_ops = sorted((op for op in program.ops if op.stream == stream and "recorded_start" in op.tags),
                                  key=lambda op: op.tags["recorded_start"])
            starts = list(mine.loc[[op.id for op in recorded_ops], "start"])
            assert starts == sorted(starts) and len(starts) > 1
        by_id = {op.id: op for op in program.ops}
        waits = [(op, d) for op in program.ops for d in op.deps if by_id[d].kind == "collective"]
        assert waits                                         # DDP and the final all-reduce make the host wait
        if program.name == "rank0":                          # rank 1 joins the final all-reduce 20 ms late
            final_all_reduce = [op for op in program.ops if op.kind == "collective" and op.op == "all_reduce"][-1]
            assert final_all_reduce.id in {d for _, d in waits}
        for op, d in waits:                                  # ... and the replay keeps every wait
            assert mine.loc[op.id, "start"] >= mine.loc[d, "end"]
            recorded_end = by_id[d].tags["recorded_end"] - GLOO_COMPLETION_SKEW
            assert op.tags.get("recorded_start", 0) >= recorded_end or op.name == "host"
    # The what-if: every collective's transfer (from the last rank's arrival to its end) takes longer,
    # and every wait follows it. The step itself may not grow much: on a loaded host a recorded
    # compute op can outlast the collectives it overlaps.
    slow = simulate({**scenario, "topology": "switch:2,10MB/s,1us"})
    assert slow.metrics["step_time"][0] >= fast.metrics["step_time"][0]
    transfer = []
    for run in (fast, slow):
        colls = run.tables["ops"].query("kind == 'collective'")
        per_rank = [colls[colls["cohort"] == c].reset_index() for c in range(trace.ranks)]
        last_arrival = per_rank[0]["start"].combine(per_rank[1]["start"], max)
        transfer.append(per_rank[0]["end"] - last_arrival)
        assert (per_rank[0]["end"] == per_rank[1]["end"]).all()          # the i-th collectives match
    assert len(transfer[0]) == 6 and (transfer[1] > transfer[0]).all()
    waits_slow = slow.tables["ops"]
    for cohort, program in enumerate(trace.programs):
        mine = waits_slow[waits_slow["cohort"] == cohort].set_index("op_id")
        by_id = {op.id: op for op in program.ops}
        for op in program.ops:
            for d in op.deps:
                if by_id[d].kind == "collective":
                    assert mine.loc[op.id, "start"] >= mine.loc[d, "end"]
    delays = [run.tables["ops"].query("kind == 'delay'") for run in (fast, slow)]
    assert list(delays[0]["end"] - delays[0]["start"]) == pytest.approx(list(delays[1]["end"] - delays[1]["start"]))


def test_cli_import_and_errors(recorded, tmp_path, capsys):
    from commsim.cli import main
    from commsim.workloads import load_trace

    with pytest.raises(SystemExit) as info:
        main(["trace", "import-pytorch", str(recorded), "-o", str(tmp_path / "k.json")])
    assert (info.value.code or 0) == 0 and load_trace(tmp_path / "k.json").ranks == 2
    (tmp_path / "not_a_profile.json").write_text('{"hello": 1}')
    with pytest.raises(TraceError, match=r"traceEvents = .*is missing: this is not a Chrome-trace JSON"):
        import_pytorch_profile([tmp_path / "not_a_profile.json"])
    with pytest.raises(TraceError, match="names no PyTorch profiler trace"):
        import_pytorch_profile([tmp_path / "nowhere"])


def _gpu_rank(rank: int) -> dict:
    """The shape of a CUDA/NCCL profile: kernels on GPU streams, record_param_comms on the launching thread."""
    t0 = 1000.0 + rank   # the ranks' clocks differ by 1 us
    return {"distributedInfo": {"rank": rank, "world_size": 2, "backend": "nccl"}, "traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": t0, "dur": 5.0},
        {"ph": "X", "cat": "cpu_op", "name": "record_param_comms", "pid": 1, "tid": 1, "ts": t0 + 6, "dur": 1.0,
         "args": {"Collective name": "allreduce", "In msg nelems": 1024, "Out msg nelems": 1024, "dtype": "BFloat16",
                  "Process Group Ranks": "[0, 1]"}},
        {"ph": "X", "cat": "kernel", "name": "sm90_gemm_bf16", "pid": 0, "tid": 7, "ts": t0 + 8, "dur": 40.0,
         "args": {"device": 0, "stream": 7}},
        {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "pid": 0, "tid": 20,
         "ts": t0 + 9, "dur": 30.0, "args": {"device": 0, "stream": 20}},
        {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_SendRecv", "pid": 0, "tid": 20,
         "ts": t0 + 60, "dur": 3.0, "args": {"device": 0, "stream": 20}},
    ]}


def test_gpu_kernels_and_nccl_collectives_map_to_streams_sizes_and_groups(tmp_path):
    for rank in (0, 1):
        data = _gpu_rank(rank)
        data["traceEvents"].pop()   # without the point-to-point kernel
        (tmp_path / f"rank{rank}.json").write_text(json.dumps(data))
    trace = import_pytorch_profile([tmp_path])
    ops = trace.programs[1].ops
    kernels = [op for op in ops if op.kind == "delay" and op.name != "host"]
    assert [(op.name, op.stream) for op in kernels] == [("aten::mm", "cpu:1"), ("sm90_gemm_bf16", "gpu0:7")]
    (coll,) = [op for op in ops if op.kind == "collective"]
    assert (coll.op, coll.bytes, coll.group, coll.stream) == ("all_reduce", 2048, "world", "comm:world")
    assert kernels[1].seconds == pytest.approx(40e-6)
    for rank in (0, 1):
        (tmp_path / f"rank{rank}.json").write_text(json.dumps(_gpu_rank(rank)))
    with pytest.raises(TraceError, match=r"ncclDevKernel_SendRecv.*is an NCCL kernel without a collective"):
        import_pytorch_profile([tmp_path])
