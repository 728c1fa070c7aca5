"""Read the output of NVIDIA's nccl-tests (``all_reduce_perf`` and friends) into a tidy table.

A log is what ``*_perf`` prints: a ``# nThread ... nGpus ...`` header, one
``#  Rank  N Pid P on HOST device D [BUS] NAME`` line per rank, a column header
and one row per message size (out-of-place and in-place time, algbw, busbw and
error), then ``# Avg bus bandwidth``. Lines may carry MPI prefixes such as
``[1,0]<stdout>:`` anywhere (output of several ranks interleaved: every prefix
starts a new logical line) and Windows line ends; NCCL ``INFO``/``WARN`` lines are
skipped.

What the log says about the machine is cross-checked: the rank lines must number
``0..N-1`` once each, every process must drive ``nThread x nGpus`` of them (the
header's count), and a file name that states the scale (``all_reduce_16gpu.log``,
``..._10x2.log``) must agree with the rank lines and hosts; any disagreement is a
``ConfigError`` naming the line, because the rank and server counts decide the
bus factor and the layout the model is run on.

Inside, everything is SI: sizes in bytes, times in seconds, bandwidths in bytes/s
(nccl-tests prints microseconds and GB/s with GB = 1e9 bytes).

>>> text = '''# nThread 1 nGpus 2 minBytes 8 maxBytes 16 step: 2(factor) warmup iters: 5 iters: 20 validation: 1
... #   Rank  0 Pid  1 on node-a device  0 [0x00] A100-SXM4-40GB
... #   Rank  1 Pid  1 on node-a device  1 [0x00] A100-SXM4-40GB
... #       size         count      type   redop     time   algbw   busbw  error     time   algbw   busbw  error
...            8             2     float     sum     8.65    0.00    0.00  0e+00     8.51    0.00    0.00  0e+00
...      1048576        262144     float     sum    59.46   17.63   17.63  0e+00    60.17   17.43   17.43  0e+00
... # Avg bus bandwidth    : 8.8
... '''
>>> log = parse_nccl_tests(text, source="all_reduce_2gpu.log")
>>> log.op, log.ranks, log.servers, log.dtype
('all_reduce', 2, 1, 'fp32')
>>> row = log.measured().iloc[-1]
>>> int(row["size"]), round(float(row["time"]) * 1e6, 2), round(float(row["busbw"]) / 1e9, 2)
(1048576, 59.46, 17.63)
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from commsim.collectives.closed_form import bus_factor
from commsim.errors import ConfigError

__all__ = ["NcclTestsLog", "parse_nccl_tests", "read_nccl_tests"]

_PREFIX = re.compile(r"\[\d+(?:,\d+)*\]<(?:stdout|stderr)>:")
_HEADER = re.compile(r"nThread\s+(\d+)\s+nGpus\s+(\d+)")
_RANK = re.compile(r"Rank\s+(\d+)\s+(?:Group\s+\d+\s+)?Pid\s+(\d+)\s+on\s+(\S+)\s+device\s+(\d+)\s+\[[^\]]*\]\s+(.*)")
# the scale stated by a file name: "16gpu" and "10x2" (servers x GPUs per server)
_NAME_GPUS = re.compile(r"(?<![a-z0-9])(\d+)\s*-?gpus?(?![a-z])")
_NAME_LAYOUT = re.compile(r"(?<![a-z0-9])(\d+)x(\d+)(?![0-9])")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")

# nccl-tests type names -> commsim dtype names and element sizes (bytes)
_TYPES = {"int8": ("int8", 1), "uint8": ("uint8", 1), "char": ("int8", 1), "int32": ("int32", 4),
          "int": ("int32", 4), "uint32": ("uint32", 4), "int64": ("int64", 8), "uint64": ("uint64", 8),
          "half": ("fp16", 2), "float16": ("fp16", 2), "float": ("fp32", 4), "float32": ("fp32", 4),
          "double": ("fp64", 8), "float64": ("fp64", 8), "bfloat16": ("bf16", 2), "fp8_e4m3": ("fp8", 1),
          "fp8_e5m2": ("fp8", 1)}
_REDOPS = {"sum", "prod", "max", "min", "avg", "mulsum", "none", "premulsum"}
# op names found in file names (longest first, so "all_reduce" wins over "reduce")
_OP_NAMES = [("reduce_scatter", "reduce_scatter"), ("reducescatter", "reduce_scatter"),
             ("all_reduce", "all_reduce"), ("allreduce", "all_reduce"), ("all_gather", "all_gather"),
             ("allgather", "all_gather"), ("alltoall", "all_to_all"), ("all_to_all", "all_to_all"),
             ("sendrecv", "sendrecv"), ("send_recv", "sendrecv"), ("broadcast", "broadcast"), ("reduce", "reduce")]
_FIX_COPY = "give the complete, unedited output of an nccl-tests *_perf run (e.g. all_reduce_perf -b 8 -e 1G -f 2 -g 8)"


@dataclass(frozen=True)
class NcclTestsLog:
    """One nccl-tests run: its rows and what the header says about the machine.

    ``table`` is tidy: one row per (size, placement) with columns ``size``
    (bytes), ``count``, ``dtype``, ``redop``, ``root``, ``placement``
    (``out-of-place`` / ``in-place``), ``time`` (s), ``algbw`` and ``busbw``
    (bytes/s), ``error`` (NaN when nccl-tests printed N/A) and ``line`` (1-based
    line of the row in the file).
    """

    source: str
    op: str
    ranks: int
    servers: int
    dtype: str
    table: pd.DataFrame
    hosts: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    header: dict[str, Any] = field(default_factory=dict)
    avg_busbw: float = math.nan

    @property
    def ranks_per_server(self) -> int:
        """GPUs per server (the largest count on any host)."""
        return max(self.hosts.count(h) for h in set(self.hosts)) if self.hosts else self.ranks

    def measured(self, placement: str = "out-of-place") -> pd.DataFrame:
        """The rows of one placement, by size (``time``, ``algbw``, ``busbw`` in SI units)."""
        if placement not in ("out-of-place", "in-place"):
            raise ConfigError(field="placement", value=placement, rule="is not an nccl-tests placement",
                              fix="use 'out-of-place' or 'in-place'")
        rows = self.table[self.table["placement"] == placement]
        return rows.sort_values("size").reset_index(drop=True)

    @property
    def name(self) -> str:
        """The file name (or the source label) without directories."""
        return Path(self.source).name


def read_nccl_tests(path: str | Path, *, op: str | None = None, allow_truncated: bool = False) -> NcclTestsLog:
    """Parse the nccl-tests log at ``path`` (see :func:`parse_nccl_tests`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(field="nccl-tests log", rule="does not exist or is not a file",
                          fix="check the path (it is relative to the current directory)", source=str(path))
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ConfigError(field="nccl-tests log", rule="is not a text file", fix=_FIX_COPY,
                          source=str(path)) from None
    return parse_nccl_tests(text, source=str(path), op=op, allow_truncated=allow_truncated)


def parse_nccl_tests(text: str, *, source: str = "<text>", op: str | None = None,
                     allow_truncated: bool = False) -> NcclTestsLog:
    """Parse nccl-tests output; every problem is a ``ConfigError`` naming the file and line.

    ``op`` overrides the collective inferred from the file name and the bus
    factor of the rows. A log without the closing ``# Avg bus bandwidth`` line is
    refused as truncated unless ``allow_truncated`` (then the complete rows are used).
    """
    header: dict[str, Any] = {}
    ranks: dict[int, _RankLine] = {}
    columns: list[str] | None = None
    rows: list[dict[str, Any]] = []
    footer = False
    avg = math.nan
    lines = text.splitlines()
    last_row_line = 0
    for number, line in _logical_lines(lines):
        if not line or "NCCL INFO" in line or "NCCL WARN" in line:
            continue
        if line.startswith("#"):
            body = line.lstrip("#").strip()
            if _HEADER.search(body) is not None:
                header.update(_header_fields(body))
            elif (m := _RANK.search(body)) is not None:
                rank = _RankLine(int(m.group(1)), int(m.group(2)), m.group(3), m.group(5).strip(), number)
                if rank.rank in ranks and ranks[rank.rank][:3] != rank[:3]:
                    raise ConfigError(field=f"line {number}", value=_short(lines[number - 1]),
                                      rule=f"lists rank {rank.rank} a second time (first on line "
                                           f"{ranks[rank.rank].line}, on another process or host)",
                                      fix="give the output of one run; do not concatenate logs", source=source)
                ranks[rank.rank] = rank
            elif body.split()[:2] == ["size", "count"]:
                columns = body.split()
            elif body.startswith("Avg bus bandwidth"):
                footer = True
                value = body.partition(":")[2].strip()
                avg = float(value) * 1e9 if _NUMBER.match(value) else math.nan
            continue
        if columns is None or not line[0].isdigit():
            continue
        parsed = _row(line, number, columns, source)
        last_row_line = number
        # nccl-tests prints 0-byte rows when a size is below one element per rank (all-gather, all-to-all): they
        # measure only the launch of nothing and have no bandwidth, so they are left out
        if parsed[0]["size"] > 0:
            rows.extend(parsed)
    if columns is None or not rows:
        what = "a column header ('#  size  count  type ...')" if columns is None else "rows under its column header"
        raise ConfigError(field="nccl-tests log", rule=f"has no nccl-tests table: found no {what}", fix=_FIX_COPY,
                          source=source)
    if not footer and not allow_truncated:
        raise ConfigError(field=f"line {last_row_line}", value=_short(lines[last_row_line - 1]),
                          rule=f"is the last of {len(rows)} rows and no '# Avg bus bandwidth' line follows, so the "
                               "log looks truncated", fix="copy the whole output of the run, or pass "
                               "allow_truncated=True to use the complete rows only", source=source)
    _check_ranks(ranks, header, source, lines)
    n = len(ranks) if ranks else int(header.get("nGpus", 1)) * int(header.get("nThread", 1))
    hosts = tuple(ranks[r].host for r in sorted(ranks))
    devices = tuple(ranks[r].device for r in sorted(ranks))
    servers = len(set(hosts)) if hosts else 1
    _check_name(source, n, servers, max(hosts.count(h) for h in set(hosts)) if hosts else n)
    table = pd.DataFrame(rows)
    _check_rows(table, source, lines)
    dtypes = set(table["dtype"])
    resolved = _op(op, source, table, n)
    _check_bus_factor(table, resolved, n, source, lines)
    if resolved in ("all_reduce", "broadcast", "reduce"):
        bad = table[table["size"] != table["count"] * table["element"]]
        if len(bad):
            rec = bad.iloc[0]
            raise ConfigError(field=f"line {rec['line']}", value=_short(lines[rec["line"] - 1]),
                              rule=f"has size {rec['size']} B but count {rec['count']} x {rec['element']} B per "
                                   f"element = {rec['count'] * rec['element']} B", fix=_FIX_COPY, source=source)
    return NcclTestsLog(source=source, op=resolved, ranks=n, servers=servers,
                        dtype=dtypes.pop() if len(dtypes) == 1 else "mixed", table=table, hosts=hosts,
                        devices=devices, header=header, avg_busbw=avg)


class _RankLine(NamedTuple):
    """One ``#  Rank N ... Pid P on HOST device D [BUS] NAME`` line and where it stands."""

    rank: int
    pid: int
    host: str
    device: str
    line: int


def _logical_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every logical line: an MPI prefix anywhere starts a new one.

    Interleaved output of several ranks puts ``[1,3]<stdout>:`` in the middle of
    a physical line; what follows it belongs to another stream, so it is split off
    (and what precedes it stays whole, e.g. a host name is not glued to it).
    """
    for number, raw in enumerate(lines, start=1):
        for piece in _PREFIX.split(raw):
            yield number, piece.strip()


def _check_ranks(ranks: dict[int, _RankLine], header: dict[str, Any], source: str, lines: list[str]) -> None:
    """Rank lines number 0..N-1 and each process drives ``nThread x nGpus`` of them (the header's word)."""
    if not ranks:
        return
    missing = sorted(set(range(len(ranks))) - set(ranks))
    if missing:
        last = ranks[max(ranks)]
        raise ConfigError(field=f"line {last.line}", value=_short(lines[last.line - 1]),
                          rule=f"is rank {last.rank}, but the rank lines skip rank {missing[0]} "
                               f"({len(ranks)} rank lines for ranks 0..{max(ranks)})",
                          fix="give the complete '# Using devices' list of the run; " + _FIX_COPY, source=source)
    per_process = int(header.get("nGpus", 1)) * int(header.get("nThread", 1))
    if "nGpus" not in header:
        return
    counts: dict[tuple[str, int], list[_RankLine]] = {}
    for rank in ranks.values():
        counts.setdefault((rank.host, rank.pid), []).append(rank)
    for (host, pid), members in counts.items():
        if len(members) != per_process:
            first = min(members, key=lambda r: r.rank)
            raise ConfigError(
                field=f"line {first.line}", value=_short(lines[first.line - 1]),
                rule=f"belongs to process {pid} on {host}, which drives {len(members)} of the {len(ranks)} rank "
                     f"lines, but the header says nThread {header.get('nThread', 1)} x nGpus {header['nGpus']} = "
                     f"{per_process} GPU(s) per process, so the GPU count is ambiguous",
                fix="give the unedited output of one run (the header and the rank lines must come from the same "
                    "command)", source=source)


def _check_name(source: str, ranks: int, servers: int, per_server: int) -> None:
    """A file name stating the scale (``16gpu``, ``10x2``) must agree with the rank lines and hosts."""
    name = Path(source).name.lower()
    if (m := _NAME_GPUS.search(name)) is not None and int(m.group(1)) != ranks:
        raise ConfigError(field="nccl-tests log", value=Path(source).name,
                          rule=f"names {m.group(1)} GPUs, but the log's rank lines give {ranks}",
                          fix="rename the file after the run it holds, or give the log of that run", source=source)
    if (m := _NAME_LAYOUT.search(name)) is not None and (int(m.group(1)), int(m.group(2))) != (servers, per_server):
        raise ConfigError(field="nccl-tests log", value=Path(source).name,
                          rule=f"names {m.group(1)} servers x {m.group(2)} GPUs, but the rank lines give {servers} "
                               f"host(s) with up to {per_server} GPU(s) each",
                          fix="rename the file after the run it holds, or give the log of that run", source=source)


_HEADER_FIELDS = {"nThread": r"nThread\s+(\d+)", "nGpus": r"nGpus\s+(\d+)", "minBytes": r"minBytes\s+(\d+)",
                  "maxBytes": r"maxBytes\s+(\d+)", "warmup": r"warmup iters:\s*(\d+)",
                  "iters": r"(?<!warmup )iters:\s*(\d+)", "validation": r"validation:\s*(\d+)"}


def _header_fields(body: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, pattern in _HEADER_FIELDS.items():
        if (m := re.search(pattern, body)) is not None:
            out[key] = int(m.group(1))
    return out


def _short(line: str, limit: int = 70) -> str:
    line = _PREFIX.sub("", line).strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _row(line: str, number: int, columns: list[str], source: str) -> list[dict[str, Any]]:
    parts = line.split()
    has_root = "root" in columns
    expected = 13 if has_root else 12
    where = f"line {number}"
    if len(parts) != expected:
        layout = "size count type redop" + (" root" if has_root else "") + \
                 " time algbw busbw error time algbw busbw error"
        cut = " (the line is cut short: the file looks truncated)" if len(parts) < expected else ""
        raise ConfigError(field=where, value=_short(line), rule=f"has {len(parts)} fields where the column header "
                          f"announces {expected} ({layout}){cut}", fix=_FIX_COPY, source=source)
    size_s, count_s, type_s, redop = parts[:4]
    rest = parts[5:] if has_root else parts[4:]
    root = int(parts[4]) if has_root and parts[4].lstrip("-").isdigit() else -1
    if not (size_s.isdigit() and count_s.isdigit()):
        raise ConfigError(field=where, value=_short(line), rule="does not start with a size and a count in whole "
                          "numbers", fix=_FIX_COPY, source=source)
    if type_s not in _TYPES:
        raise ConfigError(field=where, value=type_s, rule="is not an nccl-tests data type",
                          fix=f"use one of {', '.join(sorted(_TYPES))}", source=source)
    if redop not in _REDOPS:
        raise ConfigError(field=where, value=redop, rule="is not an nccl-tests reduction",
                          fix=f"use one of {', '.join(sorted(_REDOPS))}", source=source)
    values = []
    for i in (0, 1, 2, 4, 5, 6):
        if not _NUMBER.match(rest[i]):
            names = ["time", "algbw", "busbw", "error", "time", "algbw", "busbw"]
            raise ConfigError(field=where, value=rest[i], rule=f"is not a number in the {names[i]} column",
                              fix=_FIX_COPY, source=source)
        values.append(float(rest[i]))
    errors = [_error(rest[3]), _error(rest[7])]
    dtype, element = _TYPES[type_s]
    base = {"size": int(size_s), "count": int(count_s), "dtype": dtype, "element": element, "redop": redop,
            "root": root, "line": number}
    oop = {"placement": "out-of-place", "time": values[0] * 1e-6, "algbw": values[1] * 1e9,
           "busbw": values[2] * 1e9, "error": errors[0]}
    inp = {"placement": "in-place", "time": values[3] * 1e-6, "algbw": values[4] * 1e9,
           "busbw": values[5] * 1e9, "error": errors[1]}
    return [base | oop, base | inp]


def _error(text: str) -> float:
    return float(text) if _NUMBER.match(text) else math.nan


def _check_rows(table: pd.DataFrame, source: str, lines: list[str]) -> None:
    sizes = table[table["placement"] == "out-of-place"][["size", "line"]].to_numpy()
    for (prev, _), (size, line) in itertools.pairwise(sizes):
        if size <= prev:
            raise ConfigError(field=f"line {line}", value=_short(lines[line - 1]),
                              rule=f"has size {size} B after {prev} B, but nccl-tests sizes grow row by row",
                              fix="keep the rows of one run in their printed order; do not concatenate runs",
                              source=source)
    for rec in table.to_dict("records"):
        time, algbw = rec["time"], rec["algbw"]
        if time <= 0:
            raise ConfigError(field=f"line {rec['line']}", value=_short(lines[rec["line"] - 1]),
                              rule=f"has a non-positive {rec['placement']} time", fix=_FIX_COPY, source=source)
        expected = rec["size"] / time
        # nccl-tests prints 2 decimals of GB/s (+-0.005) and 2-4 digits of the time
        if abs(algbw - expected) > 0.0051e9 + 0.03 * expected:
            raise ConfigError(field=f"line {rec['line']}", value=_short(lines[rec["line"] - 1]),
                              rule=f"has {rec['placement']} algbw {algbw / 1e9:.2f} GB/s, but size / time = "
                                   f"{expected / 1e9:.2f} GB/s (the columns disagree)",
                              fix="check that the columns were not shifted or edited; " + _FIX_COPY, source=source)


def _check_bus_factor(table: pd.DataFrame, op: str, n: int, source: str, lines: list[str]) -> None:
    factor = bus_factor(op, n)
    for rec in table.to_dict("records"):
        expected = rec["algbw"] * factor
        # both columns are rounded to 0.01 GB/s: the printed algbw may be 0.005 off, times the factor
        if abs(rec["busbw"] - expected) > 0.0051e9 * (1.0 + factor) + 0.03 * expected:
            raise ConfigError(field=f"line {rec['line']}", value=_short(lines[rec["line"] - 1]),
                              rule=f"has busbw {rec['busbw'] / 1e9:.2f} GB/s, but {op} on {n} ranks has bus factor "
                                   f"{factor:.3f}, so algbw {rec['algbw'] / 1e9:.2f} GB/s gives "
                                   f"{expected / 1e9:.2f} GB/s",
                              fix="check the rank list of the header (one '#  Rank' line per GPU) and the op "
                                  "(pass op=... if the file name does not tell it)", source=source)


def _op(op: str | None, source: str, table: pd.DataFrame, n: int) -> str:
    from commsim.collectives._registry import OPS

    if op is not None:
        if op not in OPS:
            raise ConfigError(field="op", value=op, rule="is not a collective operation",
                              fix=f"use one of {', '.join(OPS)}")
        return op
    stem = Path(source).name.lower()
    for needle, name in _OP_NAMES:
        if needle in stem:
            return name
    # no name: the bus factor of the well-resolved rows tells the family
    big = table[table["algbw"] >= 1e9]
    if n > 1 and len(big):
        ratio = float((big["busbw"] / big["algbw"]).median())
        reducing = bool((table["redop"] != "none").all())
        if abs(ratio - 2 * (n - 1) / n) < 0.02:
            return "all_reduce"
        if abs(ratio - (n - 1) / n) < 0.02 and n > 2:
            return "reduce_scatter" if reducing else "all_gather"
    raise ConfigError(field="op", value=Path(source).name, rule="cannot be told from the file name or the rows",
                      fix="name the file after the test (e.g. all_reduce_8gpu.log) or pass the op explicitly")
