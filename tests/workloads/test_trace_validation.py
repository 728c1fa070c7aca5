"""Every rule of the trace format, each with the message a user sees."""

from __future__ import annotations

import copy
import json

import pytest

from commsim.errors import TraceError
from commsim.workloads import (
    Trace,
    TraceIndex,
    load_trace,
    parse_trace,
    save_trace,
    validate_against,
    validate_trace,
)
from commsim.workloads.trace import parse_ranks

# Two pipeline stages of two TP ranks each: stage 0 computes, all-reduces over tp and sends to stage 1.
BASE = {
    "format": "commsim-trace",
    "version": 1,
    "name": "base",
    "ranks": 4,
    "communicators": {"tp": [[0, 1], [2, 3]], "pp": [[0, 2], [1, 3]], "world": [[0, 1, 2, 3]]},
    "programs": [
        {"name": "s0", "ranks": "0:2", "ops": [
            {"kind": "compute", "id": "a", "flops": "1 GFLOP", "bytes": "1 MiB"},
            {"kind": "collective", "id": "ar", "op": "all_reduce", "bytes": "1 MiB", "group": "tp",
             "deps": ["a"], "stream": "tp_comm"},
            {"kind": "send", "id": "tx", "peer": "pp:+1", "bytes": "4 MiB", "tag": 0, "deps": ["a"]},
            {"kind": "collective", "id": "w", "op": "all_gather", "bytes": "8 MiB", "group": "world"},
        ]},
        {"name": "s1", "ranks": [2, 3], "ops": [
            {"kind": "recv", "id": "rx", "peer": "pp:-1", "bytes": "4 MiB", "tag": 0},
            {"kind": "compute", "id": "b", "flops": 1e9, "deps": ["rx"]},
            {"kind": "collective", "id": "ar", "op": "all_reduce", "bytes": "1 MiB", "group": "tp", "deps": ["b"]},
            {"kind": "collective", "id": "w", "op": "all_gather", "bytes": "8 MiB", "group": "world"},
        ]},
    ],
    "metadata": {},
}


def check(data: dict) -> TraceIndex:
    return validate_trace(parse_trace(data))


def fails(data: dict) -> str:
    with pytest.raises(TraceError) as info:
        check(data)
    return str(info.value)


def edit(**changes):
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is None:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return data


def test_base_trace_is_valid_and_indexed():
    index = check(BASE)
    assert index.program_of(3) == 1
    assert index.resolve_peer(1, "pp:+1") == 3
    assert index.group("world", 2) == [0, 1, 2, 3]


def test_unknown_dependency():
    message = fails(edit(programs__0__ops__1__deps=["nope"]))
    assert message == ("programs[0].ops[1].deps[0] = 'nope': is not the id of an op in program 's0'. Fix: name an op "
                       "of the same program (dependencies do not cross programs; use send/recv or a collective to "
                       "synchronise ranks).")


def test_dependency_cycle_names_the_ops():
    message = fails(edit(programs__0__ops__0__deps=["ar"]))
    assert message.startswith("programs[0].ops[0].deps = ['ar']: is on a dependency cycle")
    assert "a → ar → a (edges from deps)" in message


def test_cycle_through_stream_order():
    data = edit(programs__0__ops__0__deps=["later"])
    data["programs"][0]["ops"].append({"kind": "compute", "id": "later"})   # same stream, after "a"
    message = fails(data)
    assert "a → later → a" in message and "stream 'compute' order" in message


def test_duplicate_op_id():
    message = fails(edit(programs__1__ops__1__id="rx"))
    assert message.startswith("programs[1].ops[1].id = 'rx': repeats the id of programs[1].ops[0]")


def test_collective_op_disagreement():
    message = fails(edit(programs__1__ops__3__op="reduce_scatter"))
    assert "programs[0].ops[3] = 'w': is collective #1 of rank 0 on the world group [0, 1, 2, 3]: all_gather of " \
           "8 MiB; but member rank 2 issues reduce_scatter of 8 MiB as its #1" in message


def test_collective_size_disagreement():
    message = fails(edit(programs__1__ops__3__bytes="4 MiB"))
    assert "all_gather of 8 MiB; but member rank 2 issues all_gather of 4 MiB" in message


def test_collective_count_disagreement():
    data = copy.deepcopy(BASE)
    data["programs"][1]["ops"].append({"kind": "collective", "id": "w2", "op": "all_gather", "bytes": 8,
                                       "group": "world"})
    message = fails(data)
    assert message.startswith("programs[1].ops[4] = 'w2': is collective #2 of rank 2 on the world group")
    assert "member rank 0 issues only 1 collective there" in message


def test_collective_with_idle_member():
    data = edit(programs__1__ranks=[2])
    data["communicators"]["tp"] = [[0, 1], [2], [3]]
    data["communicators"]["pp"] = [[0, 2], [1, 3]]
    data["programs"][0]["ops"][2]["peer"] = 2     # both stage-0 ranks send to rank 2
    message = fails(data)
    assert "member rank 3 runs no program" in message


def test_send_without_recv():
    data = edit(programs__1__ops__0=None, programs__1__ops__0__deps=None)
    message = fails(data)
    assert message == ("programs[0].ops[2] = 'tx': is send #1 from rank 0 to rank 2 with tag 0, but rank 2 posts "
                       "only 0 matching recvs. Fix: add a recv from rank 0 with tag 0 to rank 2's program, or "
                       "remove the send.")


def test_recv_without_send_and_tag_mismatch():
    message = fails(edit(programs__0__ops__2__tag=5))    # the recv (tag 0) is reported first
    assert "is recv #1 on rank 2 from rank 0 with tag 0, but rank 0 posts only 0 matching sends" in message
    data = edit(programs__0__ops__2=None)
    message = fails(data)
    assert message.startswith("programs[1].ops[0] = 'rx': is recv #1 on rank 2 from rank 0 with tag 0, but rank 0 "
                              "posts only 0 matching sends")


def test_send_recv_size_disagreement():
    message = fails(edit(programs__1__ops__0__bytes="2 MiB"))
    assert message.startswith("programs[0].ops[2].bytes = 4194304.0: is the size of a send from rank 0 to rank 2 "
                              "(tag 0) whose matching recv programs[1].ops[0] 'rx' expects 2 MiB")


def test_program_rank_outside_trace():
    message = fails(edit(programs__1__ranks="2:5"))
    assert message.startswith("programs[1].ranks = '2:5': contains rank 4, outside the trace's ranks 0..3")


def test_communicator_rank_outside_trace():
    message = fails(edit(communicators__tp=[[0, 1], [2, 7]]))
    assert message.startswith("communicators.tp[1][1] = 7: is outside the trace's ranks 0..3")


def test_rank_in_two_programs():
    message = fails(edit(programs__1__ranks="1:4"))
    assert message == ("programs[1].ranks = '1:4': contains rank 1, which already runs programs[0] ('s0'); a rank "
                       "runs at most one program. Fix: remove the rank from one of the two programs.")


def test_overlapping_communicator_groups():
    message = fails(edit(communicators__tp=[[0, 1], [1, 2, 3]]))
    assert message.startswith("communicators.tp[1][0] = 1: is also in group 0 of communicator 'tp' "
                              "(groups must be disjoint)")


def test_rank_outside_topology():
    trace = parse_trace(BASE)
    validate_against(trace, 4)
    with pytest.raises(TraceError) as info:
        validate_against(trace, 3)
    assert str(info.value).startswith("programs[1].ranks = [2, 3]: uses rank 3, but the topology has only 3 devices")


def test_unknown_communicator_and_missing_group():
    assert "programs[0].ops[1].group = 'ep': is not a communicator of the trace. Fix: use one of: pp, tp, world" \
        in fails(edit(programs__0__ops__1__group="ep"))
    data = edit(communicators__tp=[[0], [2, 3]])
    assert "has no group containing rank 1, which runs this op" in fails(data)


def test_explicit_group_must_contain_the_issuing_ranks():
    message = fails(edit(programs__0__ops__1__group=[0, 2]))
    assert message.startswith("programs[0].ops[1].group = [0, 2]: does not contain rank 1, which runs this op")


def test_root_rules():
    data = edit(programs__0__ops__3__op="broadcast", programs__1__ops__3__op="broadcast",
                programs__0__ops__3__root=4, programs__1__ops__3__root=4)
    assert "programs[0].ops[3].root = 4: is not an index into a group of 4 ranks" in fails(data)
    assert "root = 1: does not apply to all_reduce" in fails(edit(programs__0__ops__1__root=1))


def test_relative_peer_off_the_end():
    data = edit(programs__1__ops__0__peer="pp:+1")
    message = fails(data)
    assert message.startswith("programs[1].ops[0].peer = 'pp:+1': has no member at offset +1 from rank 2, which is "
                              "the last in its pp group [0, 2]")
    assert "write 'pp:+1%' to wrap around" in message


def test_peer_is_self():
    assert "is the sending rank 0 itself" in fails(edit(programs__0__ops__2__peer=0))


def test_free_of_unknown_buffer():
    data = copy.deepcopy(BASE)
    data["programs"][0]["ops"].append({"kind": "free", "id": "f", "buffer": "acts"})
    assert "programs[0].ops[4].buffer = 'acts': is never allocated in program 's0'" in fails(data)


@pytest.mark.parametrize(("change", "expected"), [
    ({"programs__0__ops__0__kind": "matmul"},
     "programs[0].ops[0].kind = 'matmul': is not a known op kind. Fix: use one of compute, collective, send, recv, "
     "alloc, free, disk_read, delay."),
    ({"programs__0__ops__0__flopz": 3},
     "programs[0].ops[0].flopz = 3: is not a field of a compute op. Fix: remove it or correct its spelling; a "
     "compute op has: id, deps, tags, name, kind, stream, flops, bytes, dtype, efficiency, kernel, gemms, launches."),
    ({"programs__0__ops__0__bytes": "1 Mbps"},
     "programs[0].ops[0].bytes = '1 Mbps': has an unknown bytes unit 'Mbps'"),
    ({"programs__0__ops__0__bytes": -1}, "programs[0].ops[0].bytes = -1: must be at least 0"),
    ({"programs__0__ops__2__peer": "pp+1"}, "programs[0].ops[2].peer = 'pp+1': is not a rank or a relative peer"),
    ({"programs__0__ranks": "2:0"}, "programs[0].ranks = '2:0': is an empty rank range"),
    ({"programs__0__ops__1__op": "gather"}, "programs[0].ops[1].op = 'gather': is not one of the allowed values"),
    ({"programs__0__ops__1__bytes": None}, "programs[0].ops[1].bytes: is required but missing"),
    ({"version": 2}, "version = 2: is not one of the allowed values"),
])
def test_shape_errors(change, expected):
    with pytest.raises(TraceError) as info:
        parse_trace(edit(**change))
    assert str(info.value).startswith(expected)


def test_ranges():
    assert parse_ranks("4:10:3") == [4, 7]
    with pytest.raises(TraceError, match="is not a rank range"):
        parse_ranks("0-8")


def test_load_reports_file_and_json_position(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"format": "commsim-trace",\n "ranks": 2,,}')
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert str(info.value).startswith(f"{path}: JSON syntax = 'line 2, column 13': cannot be parsed")
    path.write_text(json.dumps(edit(programs__1__ranks="1:4")))
    with pytest.raises(TraceError, match=f"^{path}: programs\\[1\\].ranks"):
        load_trace(path)


def test_save_load_round_trip_keeps_everything(tmp_path):
    trace = parse_trace(BASE)
    path = tmp_path / "t.json"
    save_trace(trace, path, indent=1)
    again = load_trace(path)
    assert again.model_dump() == trace.model_dump()
    assert isinstance(again, Trace) and again.programs[0].ops[1].stream == "tp_comm"
    # Defaults are left out of the file, the kind is always written first.
    ops = json.loads(path.read_text())["programs"][0]["ops"]
    assert list(ops[0])[:2] == ["kind", "id"] and "stream" not in ops[0]
