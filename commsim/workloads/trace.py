"""The commsim trace format: what every rank does, as operations with dependencies.

A :class:`Trace` is written for SPMD programs: a :class:`Program` lists the
operations that a whole set of ranks runs identically, so a 1,024-rank training
step is a handful of programs (one per pipeline stage), not 1,024 op lists.
Ranks that belong together are named through *communicators*: a communicator
(``"tp"``, ``"dp"``, ``"pp"``, …) partitions ranks into disjoint groups, and a
collective's ``group: "tp"`` means "this rank's group in the tp communicator".
Point-to-point peers may be relative: ``"pp:+1"`` is the next member of this
rank's pp group (pp groups are ordered by pipeline stage), ``"pp:-1"`` the
previous one; neither wraps around unless written ``"pp:+1%"``.

Execution rules (what a replay engine implements):

* A *stream* is an in-order queue, like a CUDA stream: an op starts only when
  the op before it in the program's list on the same stream has finished and
  every op in its ``deps`` has finished. Different streams run concurrently.
* A collective completes when every member of its group has reached it; each
  group's collectives are matched in issue (list) order per member.
* A send and a recv match by (source rank, destination rank, tag), in order.
* Sizes follow the nccl-tests conventions: all_reduce / broadcast / reduce give
  the buffer, reduce_scatter the full input, all_gather the full output,
  all_to_all the full send buffer.

Units: bytes, FLOP and seconds; files may write strings with units (``"4 MiB"``,
``"2.5 TFLOP"``, ``"3 us"``).

>>> trace = Trace(ranks=2, communicators={"world": [[0, 1]]}, programs=[
...     Program(name="step", ranks="0:2", ops=[
...         ComputeOp(id="gemm", flops="2 TFLOP", bytes="1 GiB"),
...         CollectiveOp(id="ar", op="all_reduce", bytes="64 MiB", group="world", deps=["gemm"]),
...     ])])
>>> trace.programs[0].rank_list()
[0, 1]
>>> trace.programs[0].ops[1].bytes
67108864.0
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PositiveInt, ValidationError, WithJsonSchema, field_validator

from commsim.config import StrictModel, config_error_from
from commsim.devices.compute_model import KernelKind, KernelShape
from commsim.errors import ConfigError, TraceError
from commsim.units import parse_quantity
from commsim.workloads._dtypes import Dtype

__all__ = [
    "ALGORITHMS",
    "COLLECTIVE_OPS",
    "OP_KINDS",
    "AllocOp",
    "CollectiveOp",
    "ComputeOp",
    "DelayOp",
    "DiskReadOp",
    "FreeOp",
    "Op",
    "Program",
    "RecvOp",
    "SendOp",
    "Trace",
    "dump_trace",
    "load_trace",
    "parse_peer",
    "parse_ranks",
    "parse_trace",
    "save_trace",
    "trace_json_schema",
]

FORMAT = "commsim-trace"
VERSION = 1

CollectiveKind = Literal["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast", "reduce"]
Algorithm = Literal["auto", "ring", "tree", "halving_doubling", "direct", "star", "hierarchical", "pipeline",
                    "kary_tree"]
COLLECTIVE_OPS: tuple[str, ...] = CollectiveKind.__args__  # type: ignore[attr-defined]
ALGORITHMS: tuple[str, ...] = Algorithm.__args__  # type: ignore[attr-defined]
_ROOTED = ("broadcast", "reduce")


def _quantity(kind: Any, example: str) -> Any:
    schema = {"anyOf": [{"type": "number", "minimum": 0},
                        {"type": "string", "description": f"a number with a unit, e.g. {example!r}"}]}
    return Annotated[float, BeforeValidator(lambda v: parse_quantity(v, kind)), Field(ge=0), WithJsonSchema(schema)]


TraceBytes = _quantity("bytes", "4 MiB")
TraceFlops = _quantity("flops", "2.5 TFLOP")
TraceSeconds = _quantity("time", "3 us")
TagValue = str | int | float
GemmShape = tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_PEER = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\-]*):([+-]\d+)(%?)$")
_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*(?::\s*(\d+)\s*)?$")


# --------------------------------------------------------------------------- ops


class _OpBase(StrictModel):
    id: str = Field(min_length=1, description="Unique within the program.")
    deps: list[str] = Field(default_factory=list, description="Ids of ops (any stream) that must finish first.")
    tags: dict[str, TagValue] = Field(default_factory=dict, description="Free-form labels: layer, phase, micro_batch…")
    name: str | None = Field(default=None, description="Display name (defaults to the id).")


class ComputeOp(_OpBase):
    """A kernel: ``flops`` of arithmetic in ``dtype`` and ``bytes`` of memory traffic.

    ``efficiency`` (0–1], when given, overrides the device's achievable fraction of peak.
    ``kernel``, ``gemms`` and ``launches`` say what the kernel is, for devices with a
    compute model (:mod:`commsim.devices.compute_model`); the roofline ignores them.
    """

    kind: Literal["compute"] = "compute"
    stream: str = Field(default="compute", min_length=1)
    flops: TraceFlops = 0.0
    bytes: TraceBytes = 0.0
    dtype: Dtype = "bf16"
    efficiency: float | None = Field(default=None, gt=0, le=1)
    kernel: KernelKind | None = Field(default=None, description="gemm, attention (unfused), fused_attention or "
                                      "memory (bandwidth-bound); None: a GEMM of unknown shape.")
    gemms: list[GemmShape] = Field(default_factory=list, description="(m, n, k, batch) of each matrix multiply.")
    launches: int = Field(default=1, ge=1, description="GPU kernels the op stands for (each pays the launch "
                                                       "overhead).")

    def kernel_shape(self) -> KernelShape | None:
        """The op as the compute model sees it (None when it carries no kernel description)."""
        if self.kernel is None and not self.gemms and self.launches == 1:
            return None
        return KernelShape(kind=self.kernel or "gemm", gemms=tuple(tuple(g) for g in self.gemms),
                           launches=self.launches)


class CollectiveOp(_OpBase):
    """A collective over ``group``: a communicator name (this rank's group in it) or an explicit rank list.

    ``bytes`` follows the nccl-tests convention (see the module docstring);
    ``root`` is an index into the group (broadcast and reduce only; default 0).
    """

    kind: Literal["collective"] = "collective"
    stream: str = Field(default="comm", min_length=1)
    op: CollectiveKind
    bytes: TraceBytes
    group: str | list[int]
    algorithm: Algorithm = "auto"
    root: int | None = Field(default=None, ge=0)

    @field_validator("group")
    @classmethod
    def _group_form(cls, value: str | list[int]) -> str | list[int]:
        if isinstance(value, str) and not _NAME.match(value):
            raise TraceError(field="group", value=value, rule="is not a communicator name",
                             fix="name a communicator of the trace, such as 'tp', or list the ranks")
        if isinstance(value, list) and not value:
            raise TraceError(field="group", value=value, rule="is an empty rank list",
                             fix="list at least one rank, or name a communicator")
        return value

    @property
    def root_index(self) -> int:
        """The root's index within the group (0 when not given)."""
        return self.root or 0


class _PointToPoint(_OpBase):
    peer: int | str = Field(description="A rank, or COMM:+k / COMM:-k (append % to wrap around).")
    bytes: TraceBytes
    tag: int = 0

    @field_validator("peer")
    @classmethod
    def _peer_form(cls, value: int | str) -> int | str:
        if isinstance(value, str):
            parse_peer(value)
        elif value < 0:
            raise TraceError(field="peer", value=value, rule="is a negative rank",
                             fix="give a rank number of at least 0, or a relative peer such as 'pp:+1'")
        return value


class SendOp(_PointToPoint):
    """Send ``bytes`` to ``peer`` (a rank, or ``"COMM:+k"`` / ``"COMM:-k"``, ``%`` to wrap), matched by ``tag``."""

    kind: Literal["send"] = "send"
    stream: str = Field(default="comm", min_length=1)


class RecvOp(_PointToPoint):
    """Receive ``bytes`` from ``peer`` (same forms as :class:`SendOp`), matched by ``tag``."""

    kind: Literal["recv"] = "recv"
    stream: str = Field(default="comm", min_length=1)


class AllocOp(_OpBase):
    """Allocate ``bytes`` of device memory under the name ``buffer``."""

    kind: Literal["alloc"] = "alloc"
    stream: str = Field(default="compute", min_length=1)
    buffer: str = Field(min_length=1)
    bytes: TraceBytes


class FreeOp(_OpBase):
    """Release the device memory held under ``buffer``."""

    kind: Literal["free"] = "free"
    stream: str = Field(default="compute", min_length=1)
    buffer: str = Field(min_length=1)


class DiskReadOp(_OpBase):
    """Read ``bytes`` from the rank's local disk into memory."""

    kind: Literal["disk_read"] = "disk_read"
    stream: str = Field(default="disk", min_length=1)
    bytes: TraceBytes


class DelayOp(_OpBase):
    """Occupy the stream for a fixed time (host work, a sleep)."""

    kind: Literal["delay"] = "delay"
    stream: str = Field(default="compute", min_length=1)
    seconds: TraceSeconds


Op = Annotated[
    ComputeOp | CollectiveOp | SendOp | RecvOp | AllocOp | FreeOp | DiskReadOp | DelayOp,
    Field(discriminator="kind"),
]
"""Any trace operation; the ``kind`` field says which."""

OP_TYPES: dict[str, type[_OpBase]] = {
    "compute": ComputeOp, "collective": CollectiveOp, "send": SendOp, "recv": RecvOp,
    "alloc": AllocOp, "free": FreeOp, "disk_read": DiskReadOp, "delay": DelayOp,
}
OP_KINDS: tuple[str, ...] = tuple(OP_TYPES)


# --------------------------------------------------------------------------- ranks and peers


def parse_ranks(spec: list[int] | str) -> list[int]:
    """Expand a rank list or a ``"start:stop[:step]"`` range (stop excluded, as in Python).

    >>> parse_ranks("0:8:2")
    [0, 2, 4, 6]
    >>> parse_ranks([3, 1])
    [3, 1]
    """
    if isinstance(spec, str):
        match = _RANGE.match(spec)
        if not match:
            raise TraceError(field="ranks", value=spec, rule="is not a rank range",
                             fix="write 'start:stop' or 'start:stop:step' (stop excluded), or list the ranks")
        start, stop, step = int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)
        if step < 1 or stop <= start:
            raise TraceError(field="ranks", value=spec, rule="is an empty rank range",
                             fix="give start < stop and a step of at least 1, e.g. '0:8'")
        return list(range(start, stop, step))
    return list(spec)


def parse_peer(peer: str) -> tuple[str, int, bool]:
    """Split a relative peer ``"COMM:+k"`` into (communicator, offset, wraps).

    >>> parse_peer("pp:-1")
    ('pp', -1, False)
    >>> parse_peer("ring:+1%")
    ('ring', 1, True)
    """
    match = _PEER.match(peer)
    if not match or int(match.group(2)) == 0:
        raise TraceError(field="peer", value=peer, rule="is not a rank or a relative peer",
                         fix="write a rank number, or COMM:+k / COMM:-k with k > 0 (add % to wrap around), "
                             "e.g. 'pp:+1'")
    return match.group(1), int(match.group(2)), bool(match.group(3))


class Program(StrictModel):
    """The ops that every rank in ``ranks`` runs identically (a rank belongs to at most one program)."""

    name: str = Field(min_length=1)
    ranks: list[int] | str = Field(description="A list of ranks, or 'start:stop[:step]' (stop excluded).")
    ops: list[Op] = Field(default_factory=list)

    @field_validator("ranks")
    @classmethod
    def _ranks_form(cls, value: list[int] | str) -> list[int] | str:
        ranks = parse_ranks(value)
        if not ranks:
            raise TraceError(field="ranks", value=value, rule="is empty", fix="list at least one rank")
        if min(ranks) < 0:
            raise TraceError(field="ranks", value=value, rule="contains a negative rank", fix="use ranks >= 0")
        if len(set(ranks)) != len(ranks):
            twice = sorted({r for r in ranks if ranks.count(r) > 1})
            raise TraceError(field="ranks", value=value, rule=f"lists rank {twice[0]} twice",
                             fix="list each rank once")
        return value

    def rank_list(self) -> list[int]:
        """The program's ranks as a list."""
        return parse_ranks(self.ranks)


class Trace(StrictModel):
    """A whole workload: ranks, communicators and the SPMD programs the ranks run.

    Build one in Python or read it with :func:`load_trace`; check the rules that
    span ops and ranks with :func:`~commsim.workloads.validate_trace`.
    """

    format: Literal["commsim-trace"] = FORMAT
    version: Literal[1] = VERSION
    name: str = "trace"
    ranks: int = Field(gt=0, description="Number of ranks; they are numbered 0 .. ranks-1.")
    communicators: dict[str, list[list[int]]] = Field(
        default_factory=dict,
        description="Name -> disjoint groups of ranks (pp groups ordered by pipeline stage).")
    programs: list[Program] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("communicators")
    @classmethod
    def _communicator_names(cls, value: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        for name in value:
            if not _NAME.match(name):
                raise TraceError(field=f"communicators.{name}", value=name, rule="is not a valid communicator name",
                                 fix="start with a letter or _ and use letters, digits, _ . - (no ':' or '%')")
        return value

    def op_count(self) -> int:
        """Ops summed over programs (each counted once, not once per rank)."""
        return sum(len(p.ops) for p in self.programs)


# --------------------------------------------------------------------------- reading and writing


_KIND_IN_LOC = set(OP_KINDS)


def _op_loc_cleanup(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None]:
    """Drop the discriminator tag pydantic inserts after ``ops[i]``; return the kind it named."""
    out: list[Any] = []
    kind = None
    for i, part in enumerate(loc):
        if (isinstance(part, str) and part in _KIND_IN_LOC and i >= 2 and loc[i - 2] == "ops"
                and isinstance(loc[i - 1], int)):
            kind = part
            continue
        out.append(part)
    return tuple(out), kind


def parse_trace(data: Any, *, source: str | None = None) -> Trace:
    """Validate ``data`` (parsed JSON) as a :class:`Trace`, raising one clear :class:`TraceError`.

    Only the shape of the data is checked here; :func:`load_trace` also runs
    :func:`~commsim.workloads.validate_trace`.
    """
    from commsim.errors import format_loc

    try:
        return Trace.model_validate(data)
    except ValidationError as exc:
        errors = sorted(exc.errors(include_url=False), key=lambda e: e.get("type") != "extra_forbidden")
        first = errors[0]
        loc, kind = _op_loc_cleanup(tuple(first.get("loc", ())))
        field = format_loc(loc)
        more = f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in this input)" \
            if len(errors) > 1 else ""
        etype = first.get("type")
        if etype == "union_tag_invalid":
            raise TraceError(field=f"{field}.kind", value=first.get("ctx", {}).get("tag"),
                             rule="is not a known op kind" + more, fix=f"use one of {', '.join(OP_KINDS)}",
                             source=source) from None
        if etype == "union_tag_not_found":
            raise TraceError(field=field, rule="has no 'kind'" + more,
                             fix=f"add kind: one of {', '.join(OP_KINDS)}", source=source) from None
        if etype == "extra_forbidden" and kind is not None:
            known = ", ".join(OP_TYPES[kind].model_fields)
            raise TraceError(field=field, value=first.get("input"), rule=f"is not a field of a {kind} op" + more,
                             fix=f"remove it or correct its spelling; a {kind} op has: {known}",
                             source=source) from None
        error = config_error_from(exc, Trace, source=source)
        raise TraceError(field=_strip_kind(error.field), value=error.value, rule=error.rule, fix=error.fix,
                         source=source) from None


def _strip_kind(field: str) -> str:
    return re.sub(r"(ops\[\d+\])\.(?:" + "|".join(OP_KINDS) + r")\b", r"\1", field)


def load_trace(path: str | Path, *, check: bool = True) -> Trace:
    """Read a trace JSON file, validate its shape and (with ``check``) every cross-op rule.

    Errors are :class:`TraceError` naming the file, the field path
    (``programs[2].ops[17].deps[0]``), the value, the rule and a fix.
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError(field="file", value=str(path), rule="does not exist or is not a file",
                         fix="check the path (it is relative to the current directory)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraceError(field="JSON syntax", value=f"line {exc.lineno}, column {exc.colno}",
                         rule=f"cannot be parsed ({exc.msg})", fix="correct the JSON at that place",
                         source=str(path)) from None
    except UnicodeDecodeError:
        raise TraceError(field="file", value=str(path), rule="is not UTF-8 text", fix="give a JSON text file") from None
    trace = parse_trace(data, source=str(path))
    if check:
        from commsim.workloads._validate import validate_trace

        try:
            validate_trace(trace)
        except ConfigError as error:
            raise error.with_source(str(path)) from None
    return trace


def dump_trace(trace: Trace) -> dict[str, Any]:
    """The trace as JSON-ready data, leaving out fields that hold their default (``kind`` is always kept)."""
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "name": trace.name, "ranks": trace.ranks,
                           "communicators": trace.communicators, "programs": [], "metadata": trace.metadata}
    for program in trace.programs:
        ops = []
        for op in program.ops:
            data = op.model_dump(mode="json", exclude_defaults=True)
            data.pop("kind", None)
            entry: dict[str, Any] = {"kind": op.kind}
            for key, value in data.items():
                entry[key] = int(value) if isinstance(value, float) and value.is_integer() and \
                    math.fabs(value) < 2**63 else value
            ops.append(entry)
        out["programs"].append({"name": program.name, "ranks": program.ranks, "ops": ops})
    return out


def save_trace(trace: Trace, path: str | Path, *, indent: int | None = None) -> int:
    """Write ``trace`` as JSON (compact unless ``indent``); return the number of bytes written."""
    text = json.dumps(dump_trace(trace), indent=indent, separators=None if indent else (",", ":"))
    Path(path).write_text(text + "\n", encoding="utf-8")
    return len(text) + 1


def trace_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the trace format, as pydantic derives it from the models."""
    schema = Trace.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "commsim-trace-v1", **schema}
