"""The nccl-tests log parser: real logs with and without MPI prefixes, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from commsim.collectives.nccl_tests import parse_nccl_tests, read_nccl_tests
from commsim.errors import ConfigError

HEADER = """# nThread 1 nGpus 2 minBytes 1048576 maxBytes 4194304 step: 2(factor) warmup iters: 5 iters: 20 validation: 1
#
# Using devices
#   Rank  0 Pid  10 on host-a device  0 [0x07] A100-SXM4-40GB
#   Rank  1 Pid  10 on host-a device  1 [0x0b] A100-SXM4-40GB
#   Rank  2 Pid  11 on host-b device  0 [0x07] A100-SXM4-40GB
#   Rank  3 Pid  11 on host-b device  1 [0x0b] A100-SXM4-40GB
#
#                                                       out-of-place                       in-place
#       size         count      type   redop     time   algbw   busbw  error     time   algbw   busbw  error
#        (B)    (elements)                       (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
"""
ROWS = """     1048576        262144     float     sum    100.0   10.49   15.73  2e-07    100.0   10.49   15.73  2e-07
     2097152        524288     float     sum    150.0   13.98   20.97  2e-07    150.0   13.98   20.97  2e-07
     4194304       1048576     float     sum    250.0   16.78   25.17  2e-07    250.0   16.78   25.17  2e-07
"""
FOOTER = """# Out of bounds values : 0 OK
# Avg bus bandwidth    : 20.62
#
"""


def test_plain_log_rows_and_metadata(log_paths: dict[int, Path]) -> None:
    log = read_nccl_tests(log_paths[8])
    assert (log.op, log.ranks, log.servers, log.ranks_per_server, log.dtype) == ("all_reduce", 8, 1, 8, "fp32")
    assert log.header["nGpus"] == 8 and log.header["iters"] == 20 and log.header["warmup"] == 5
    assert set(log.devices) == {"A100-SXM4-40GB"}
    table = log.measured()
    assert len(table) == 28 and len(log.table) == 56  # out-of-place and in-place rows
    last = table.iloc[-1]
    assert int(last["size"]) == 2**30 and int(last["count"]) == 2**28
    assert float(last["time"]) == pytest.approx(8139.2e-6)
    assert float(last["busbw"]) == pytest.approx(230.86e9)
    assert float(log.measured("in-place").iloc[-1]["time"]) == pytest.approx(8139.6e-6)
    assert log.avg_busbw == pytest.approx(59.3571e9)


def test_mpi_prefixed_log_counts_ranks_and_servers(log_paths: dict[int, Path]) -> None:
    log = read_nccl_tests(log_paths[16])
    assert (log.ranks, log.servers, log.ranks_per_server) == (16, 2, 8)
    assert log.header["nGpus"] == 1  # one GPU per MPI process
    assert int(log.measured()["size"].max()) == 16 * 2**30
    assert log.measured()["error"].isna().all()  # "N/A": validation was off


def test_prefix_crlf_and_nccl_info_lines_are_tolerated() -> None:
    lines = (HEADER + ROWS + FOOTER).splitlines()
    lines.insert(12, "host-a:10:10 [0] NCCL INFO Channel 00/08 : 0 1 2 3")
    text = "\r\n".join(f"[1,0]<stdout>:{line}" for line in lines)
    log = parse_nccl_tests(text, source="all_reduce_perf.out")
    assert (log.ranks, log.servers, log.op) == (4, 2, "all_reduce")
    assert log.measured()["size"].tolist() == [2**20, 2**21, 2**22]
    plain = parse_nccl_tests(HEADER + ROWS + FOOTER).measured()
    assert plain.drop(columns="line").equals(log.measured().drop(columns="line"))
    assert (log.measured()["line"] - plain["line"]).tolist() == [0, 1, 1]  # the INFO line among the rows


def test_op_comes_from_the_bus_factor_when_the_name_does_not_tell() -> None:
    assert parse_nccl_tests(HEADER + ROWS + FOOTER, source="run.txt").op == "all_reduce"


def test_root_column_of_newer_nccl_tests_is_read() -> None:
    header = HEADER.replace("redop     time", "redop    root     time")
    rows = "\n".join(" ".join([*r.split()[:4], "-1", *r.split()[4:]]) for r in ROWS.strip().splitlines())
    log = parse_nccl_tests(header + rows + "\n" + FOOTER)
    assert log.measured()["root"].tolist() == [-1, -1, -1]


@pytest.mark.parametrize("cut", [40, 200])
def test_truncated_log_is_a_clear_error(cut: int) -> None:
    text = HEADER + ROWS[:cut]
    with pytest.raises(ConfigError) as info:
        parse_nccl_tests(text, source="all_reduce_4gpu.log")
    message = str(info.value)
    assert "all_reduce_4gpu.log" in message and "line 1" in message and "Fix:" in message
    assert "truncated" in message


def test_truncated_log_can_be_read_on_purpose() -> None:
    log = parse_nccl_tests(HEADER + ROWS, allow_truncated=True)
    assert len(log.measured()) == 3


def test_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("name: pair\nnodes: []\n# a comment\n42 is the answer\n")
    with pytest.raises(ConfigError) as info:
        read_nccl_tests(path)
    assert "notes.txt" in str(info.value) and "no nccl-tests table" in str(info.value) and "Fix:" in str(info.value)


def test_binary_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "x.log"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match="not a text file"):
        read_nccl_tests(binary)
    with pytest.raises(ConfigError, match="does not exist"):
        read_nccl_tests(tmp_path / "missing.log")


def _broken(old: str, new: str) -> str:
    assert old in ROWS
    return HEADER + ROWS.replace(old, new, 1) + FOOTER


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("100.0   10.49", "100.0   30.49", "columns disagree"),           # algbw is not size / time
    ("2097152        524288", "1048576        262144", "sizes grow"),  # sizes out of order
    ("15.73  2e-07    100.0", "19.73  2e-07    100.0", "bus factor"),  # busbw is not algbw x 2(n-1)/n
    ("float     sum    150.0", "float     sum    abc", "not a number"),
    ("float     sum    150.0", "float     sun    150.0", "not an nccl-tests reduction"),
    ("262144     float", "262145     float", "count"),                 # size != count x 4 B
])
def test_inconsistent_rows_name_the_line(old: str, new: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_nccl_tests(_broken(old, new), source="all_reduce_4gpu.log")
    message = str(info.value)
    assert expected in message and "all_reduce_4gpu.log" in message and "line 1" in message and "Fix:" in message


def test_extra_field_names_the_layout() -> None:
    with pytest.raises(ConfigError, match="has 13 fields where the column header announces 12"):
        parse_nccl_tests(_broken("sum    100.0", "sum  7  100.0"))


# ---------------------------------------------------------------------------------------------- what the log says
def test_prefixes_anywhere_on_a_line_split_the_streams() -> None:
    # rank 1's stdout interleaved into rank 0's lines: the host name must not swallow the prefix
    lines = (HEADER + ROWS + FOOTER).splitlines()
    lines[4] = lines[4].replace("A100-SXM4-40GB", "A100-SXM4-40GB[1,1]<stdout>:host-b:11:11 [1] NCCL INFO Bootstrap")
    lines[6] = "[1,3]<stderr>:host-b:11:11 [1] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB[1,0]<stdout>:" + lines[6]
    text = "\n".join(f"[1,0]<stdout>:{line}" for line in lines)
    log = parse_nccl_tests(text, source="all_reduce_4gpu.log")
    assert (log.ranks, log.servers, log.ranks_per_server) == (4, 2, 2)
    assert log.hosts == ("host-a", "host-a", "host-b", "host-b")


def test_ngpus_disagreeing_with_the_rank_lines_is_a_clear_error() -> None:
    text = HEADER.replace("nGpus 2", "nGpus 4") + ROWS + FOOTER
    with pytest.raises(ConfigError) as info:
        parse_nccl_tests(text, source="run.log")
    message = str(info.value)
    assert "nGpus 4" in message and "process 10 on host-a" in message and "2 of the 4 rank lines" in message
    assert "line 4" in message and "Fix:" in message


@pytest.mark.parametrize(("name", "expected"), [
    ("all_reduce_8gpu.log", "names 8 GPUs, but the log's rank lines give 4"),
    ("all_reduce_4gpu_1x4.log", "names 1 servers x 4 GPUs, but the rank lines give 2 host(s) with up to 2 GPU(s)"),
])
def test_file_name_disagreeing_with_the_rank_lines_is_a_clear_error(name: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_nccl_tests(HEADER + ROWS + FOOTER, source=name)
    assert expected in str(info.value) and name in str(info.value) and "Fix:" in str(info.value)


def test_missing_or_repeated_ranks_are_clear_errors() -> None:
    skipped = HEADER.replace("#   Rank  1 Pid  10 on host-a device  1 [0x0b] A100-SXM4-40GB\n", "")
    with pytest.raises(ConfigError, match="skip rank 1"):
        parse_nccl_tests(skipped + ROWS + FOOTER)
    repeated = HEADER.replace("Rank  3 Pid  11 on host-b", "Rank  3 Pid  11 on host-b").replace(
        "#\n#      ", "#   Rank  2 Pid  12 on host-c device  0 [0x07] A100-SXM4-40GB\n#\n#      ", 1)
    with pytest.raises(ConfigError, match="lists rank 2 a second time"):
        parse_nccl_tests(repeated + ROWS + FOOTER)


def test_zero_byte_rows_are_left_out() -> None:
    rows = ("           0             0     float    none      -1     0.23    0.00    0.00      0     0.24    0.00"
            "    0.00      0\n")
    header = HEADER.replace("redop     time", "redop    root     time")
    body = "\n".join(" ".join([*r.split()[:4], "-1", *r.split()[4:]]) for r in ROWS.strip().splitlines())
    log = parse_nccl_tests(header + rows + rows + body + "\n" + FOOTER)
    assert log.measured()["size"].tolist() == [2**20, 2**21, 2**22]


def test_every_shared_log_parses_including_the_mpi_prefixed_one() -> None:
    from nccl_data import CLUSTERS

    paths = [p for c in CLUSTERS.values() for p in sorted(c.data.glob("*.log"))]
    if not paths:
        pytest.skip("the shared nccl-tests logs are not checked out")
    prefixed = [p for p in paths if "<stdout>:" in p.read_text()]
    assert prefixed, "the Azure 16-GPU log carries MPI prefixes"
    for path in paths:
        log = read_nccl_tests(path)
        assert log.ranks >= 1 and log.servers >= 1 and len(log.measured()) >= 10, path.name
