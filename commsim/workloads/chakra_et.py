"""Chakra execution traces in their binary form: one ``<prefix>.<rank>.et`` protobuf stream per rank.

Reading and writing use the MLCommons package ``mlc-chakra`` (its
``et_def_pb2`` schema and ``protolib`` length-prefixed stream coding), an
optional dependency: ``pip install commsim[chakra]``. It is imported only when
a binary trace is read or written, so ``import commsim`` stays light.

:func:`read_chakra_et` turns one file into the same node objects the JSON form
gives, so :func:`~commsim.workloads.import_chakra` converts both alike.
:func:`export_chakra` writes a :class:`~commsim.workloads.Trace` as Chakra ET,
one file per rank, that ASTRA-sim reads:

=============  ================================================================
commsim op     Chakra node
=============  ================================================================
compute        COMP_NODE: ``num_ops`` = FLOP, ``tensor_size`` = bytes
delay          COMP_NODE: ``duration_micros`` (``is_cpu_op`` on stream ``cpu``)
collective     COMM_COLL_NODE: ``comm_type``, ``comm_size`` (bytes), ``pg_name``
               (an id of ``<prefix>.comm_group.json``, ASTRA-sim's
               ``{"id": [ranks]}`` form; left out for all ranks), ``root``
send / recv    COMM_SEND_NODE / COMM_RECV_NODE: ``comm_src``, ``comm_dst``,
               ``comm_size``, ``comm_tag``
disk_read      MEM_LOAD_NODE: ``tensor_size``
alloc / free   METADATA_NODE (no time; simulators skip it)
=============  ================================================================

An op's explicit ``deps`` become ``data_deps``; the in-order execution of a
commsim stream becomes a ``ctrl_deps`` edge to the previous op of that stream,
so a simulator without streams keeps the order. What Chakra has no field for
(op id, stream, dtype, efficiency, kernel shape, algorithm, group and peer as written, tags,
buffer names, sub-microsecond times, fractional FLOP) travels in one string
attribute ``commsim`` per node and the trace's communicators in the global
metadata, so export → import gives back the same trace (one program per rank).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from commsim.errors import ConfigError, TraceError
from commsim.workloads.trace import Trace

__all__ = ["COMM_GROUP_SUFFIX", "chakra_modules", "export_chakra", "read_chakra_et"]

COMM_GROUP_SUFFIX = ".comm_group.json"
"""File next to an exported trace that maps each ``pg_name`` to its ranks (ASTRA-sim's format)."""

_COMM_TYPE = {"all_reduce": 0, "reduce": 1, "all_gather": 2, "broadcast": 5, "all_to_all": 6, "reduce_scatter": 7}


def chakra_modules() -> tuple[Any, Any]:
    """Chakra's schema module (``et_def_pb2``) and stream coder (``protolib``), imported on first use.

    Raises :class:`~commsim.errors.ConfigError` telling how to install them when absent.
    """
    try:
        from chakra.schema.protobuf import et_def_pb2
        from chakra.src.third_party.utils import protolib
    except ImportError as exc:
        raise ConfigError(field="Chakra ET support", value=str(exc),
                          rule="needs the package mlc-chakra (and protobuf >= 6.31), which could not be imported",
                          fix="install it with: pip install 'commsim[chakra]'") from None
    except Exception as exc:  # protobuf's runtime-version check raises its own error type
        raise ConfigError(field="Chakra ET support", value=str(exc),
                          rule="mlc-chakra's schema does not load with the installed protobuf",
                          fix="install a matching protobuf with: pip install 'commsim[chakra]'") from None
    return et_def_pb2, protolib


# --------------------------------------------------------------------------- reading


def _attr_object(attr: Any) -> dict[str, Any]:
    kind = attr.WhichOneof("value")
    if kind is None:
        return {"name": attr.name}
    raw = getattr(attr, kind)
    if kind.endswith("_list"):
        raw = {"values": list(raw.values)}
    return {"name": attr.name, kind: raw}


def _metadata_object(meta: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"version": meta.version}
    for attr in meta.attr:
        kind = attr.WhichOneof("value")
        value = getattr(attr, kind) if kind else None
        if kind and kind.endswith("_list"):
            value = list(value.values)
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        out[attr.name] = value
    return out


def read_chakra_et(path: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read one binary Chakra ET file (gzip-compressed or not).

    Returns the global metadata (``{"version": ..., <attr name>: value}``) and
    the nodes as objects of the JSON form (``id``, ``name``, ``type``,
    ``ctrl_deps``, ``data_deps``, ``duration_micros``, ``attr``).
    """
    pb2, protolib = chakra_modules()
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise TraceError(field="file", value=str(path), rule="does not exist or is not a file",
                         fix="give the path of a Chakra ET file (one per rank, e.g. trace.0.et)")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    import io

    stream = io.BytesIO(data)
    meta = pb2.GlobalMetadata()
    nodes: list[dict[str, Any]] = []
    try:
        if not protolib.decodeMessage(stream, meta):
            if data:
                raise DecodeError("empty global metadata")
            return None, []
        while True:
            start = stream.tell()
            node = pb2.Node()
            if not protolib.decodeMessage(stream, node):
                if stream.tell() < len(data) or start < len(data):
                    raise DecodeError(f"an empty or truncated message at byte {start}")
                break
            nodes.append({"id": node.id, "name": node.name, "type": int(node.type),
                          "ctrl_deps": list(node.ctrl_deps), "data_deps": list(node.data_deps),
                          "duration_micros": node.duration_micros,
                          "attr": [_attr_object(a) for a in node.attr]})
    except (DecodeError, ValueError) as exc:
        raise TraceError(field="file", value=str(path), rule=f"is not a Chakra ET protobuf stream ({exc})",
                         fix="give a file written by Chakra's tools (a GlobalMetadata message, then one Node "
                             "message per node, each prefixed by its varint length)") from None
    return _metadata_object(meta), nodes


# --------------------------------------------------------------------------- writing


def _exact(value: float) -> int | None:
    """``value`` as an int when it is one, else ``None`` (then the exact value goes in the extras)."""
    return int(value) if float(value).is_integer() and abs(value) < 2**63 else None


def export_chakra(trace: Trace, prefix: str | Path) -> list[Path]:
    """Write ``trace`` as Chakra ET files ``<prefix>.<rank>.et`` (one per rank) and, when a
    collective runs on fewer than all ranks, ``<prefix>.comm_group.json``; return the paths written.

    The trace is validated first (its groups and peers are resolved per rank).
    """
    from commsim.workloads._validate import validate_trace

    pb2, protolib = chakra_modules()
    index = validate_trace(trace)
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[int, ...], str] = {}
    world = tuple(range(trace.ranks))
    header = json.dumps({"name": trace.name, "ranks": trace.ranks, "communicators": trace.communicators,
                         "metadata": trace.metadata}, separators=(",", ":"))
    written = []
    for rank in range(trace.ranks):
        program = index.program_of(rank)
        ops = trace.programs[program].ops if program is not None else []
        path = Path(f"{prefix}.{rank}.et")
        with path.open("wb") as out:
            meta = pb2.GlobalMetadata(version="0.0.4")
            meta.attr.append(pb2.AttributeProto(name="commsim_trace", string_val=header))
            protolib.encodeMessage(out, meta)
            ids = {op.id: k for k, op in enumerate(ops)}
            last_on: dict[str, int] = {}
            for k, op in enumerate(ops):
                node = _node(pb2, op, k, rank, index, groups, world)
                node.data_deps.extend(ids[d] for d in op.deps)
                before = last_on.get(op.stream)
                if before is not None and before not in node.data_deps:
                    node.ctrl_deps.append(before)
                last_on[op.stream] = k
                protolib.encodeMessage(out, node)
        written.append(path)
    if groups:
        path = Path(f"{prefix}{COMM_GROUP_SUFFIX}")
        path.write_text(json.dumps({pg: list(members) for members, pg in groups.items()}, indent=1) + "\n",
                        encoding="utf-8")
        written.append(path)
    return written


def _node(pb2: Any, op: Any, k: int, rank: int, index: Any, groups: dict[tuple[int, ...], str],
          world: tuple[int, ...]) -> Any:
    attr = pb2.AttributeProto
    node = pb2.Node(id=k, name=op.name or op.id)
    extra: dict[str, Any] = {"kind": op.kind, "id": op.id, "stream": op.stream}
    if op.name is None:
        extra["name"] = None
    if op.tags:
        extra["tags"] = op.tags
    node.attr.append(attr(name="is_cpu_op", bool_val=op.kind == "delay" and op.stream == "cpu"))
    if op.kind == "compute":
        node.type = pb2.COMP_NODE
        flops, nbytes = _exact(op.flops), _exact(op.bytes)
        node.attr.append(attr(name="num_ops", int64_val=flops if flops is not None else round(op.flops)))
        node.attr.append(attr(name="tensor_size", uint64_val=nbytes if nbytes is not None else round(op.bytes)))
        extra["dtype"] = op.dtype
        if flops is None:
            extra["flops"] = op.flops
        if nbytes is None:
            extra["bytes"] = op.bytes
        if op.efficiency is not None:
            extra["efficiency"] = op.efficiency
        # what the per-kernel compute model reads; Chakra has no field for it
        if op.kernel is not None:
            extra["kernel"] = op.kernel
        if op.gemms:
            extra["gemms"] = [list(g) for g in op.gemms]
        if op.launches != 1:
            extra["launches"] = op.launches
    elif op.kind == "delay":
        node.type = pb2.COMP_NODE
        node.duration_micros = round(op.seconds * 1e6)
        if node.duration_micros != op.seconds * 1e6:
            extra["seconds"] = op.seconds
    elif op.kind == "collective":
        node.type = pb2.COMM_COLL_NODE
        node.attr.append(attr(name="comm_type", int64_val=_COMM_TYPE[op.op]))
        node.attr.append(attr(name="comm_size", int64_val=round(op.bytes)))
        members = tuple(index.resolve_group(rank, op.group))
        if members != world:
            node.attr.append(attr(name="pg_name", string_val=groups.setdefault(members, str(len(groups) + 1))))
        if op.root is not None:
            node.attr.append(attr(name="root", int64_val=op.root))
        extra.update(group=op.group, algorithm=op.algorithm, root=op.root)
        if not float(op.bytes).is_integer():
            extra["bytes"] = op.bytes
    elif op.kind in ("send", "recv"):
        node.type = pb2.COMM_SEND_NODE if op.kind == "send" else pb2.COMM_RECV_NODE
        peer = index.resolve_peer(rank, op.peer)
        src, dst = (rank, peer) if op.kind == "send" else (peer, rank)
        node.attr.extend([attr(name="comm_src", int32_val=src), attr(name="comm_dst", int32_val=dst),
                          attr(name="comm_size", int64_val=round(op.bytes)), attr(name="comm_tag", int32_val=op.tag)])
        extra["peer"] = op.peer
        if not float(op.bytes).is_integer():
            extra["bytes"] = op.bytes
    elif op.kind == "disk_read":
        node.type = pb2.MEM_LOAD_NODE
        node.attr.append(attr(name="tensor_size", uint64_val=round(op.bytes)))
        if not float(op.bytes).is_integer():
            extra["bytes"] = op.bytes
    else:  # alloc / free: no time, no Chakra counterpart
        node.type = pb2.METADATA_NODE
        extra["buffer"] = op.buffer
        if op.kind == "alloc":
            extra["bytes"] = op.bytes
    node.attr.append(attr(name="commsim", string_val=json.dumps(extra, separators=(",", ":"))))
    return node
