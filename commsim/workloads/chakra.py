"""Import MLCommons Chakra execution traces (one file per rank) as a commsim :class:`Trace`.

Input: binary Chakra ET files (``<prefix>.<rank>.et``, the protobuf streams
Chakra's tools and ASTRA-sim use; read by :mod:`commsim.workloads.chakra_et`
with the optional package ``mlc-chakra``), or what Chakra's ``chakra_jsonizer`` writes — a ``GlobalMetadata`` object
followed by one JSON object per ``Node`` (protobuf JSON: ``camelCase`` or
``snake_case`` keys, 64-bit integers as strings, enums by name or number) —
or the same objects in a JSON array, or ``{"metadata": {...}, "nodes": [...]}``.

A node has ``id``, ``name``, ``type``, ``ctrl_deps``, ``data_deps``,
``duration_micros`` and ``attr`` (a list of ``{"name": ..., "<type>Val": ...}``).
Mapping, one program per rank, op id = node id:

=================  ==========================================================
Chakra node        commsim op
=================  ==========================================================
COMP_NODE          compute: ``num_ops`` FLOP, ``tensor_size`` bytes (default
                   0), stream ``compute``; without ``num_ops`` but with
                   ``duration_micros`` a delay of that time; with
                   ``is_cpu_op`` true a delay on stream ``cpu``
MEM_LOAD_NODE      compute of 0 FLOP and ``tensor_size`` bytes, stream ``mem``
MEM_STORE_NODE     the same (the node type is kept in ``tags.chakra_type``)
COMM_COLL_NODE     collective: ``comm_type`` (ALL_REDUCE, REDUCE, ALL_GATHER,
                   BROADCAST, ALL_TO_ALL, REDUCE_SCATTER[_BLOCK]; BARRIER as
                   an all-reduce of ``comm_size`` or 0 bytes), ``comm_size``
                   bytes, over all ranks unless ``pg_name`` names a process
                   group given to :func:`import_chakra`; stream ``coll:<pg>``
COMM_SEND_NODE     send to ``comm_dst``, ``comm_size`` bytes, ``comm_tag``
                   (default 0); stream ``send:<dst>``
COMM_RECV_NODE     recv from ``comm_src``; stream ``recv:<src>``
METADATA_NODE      dropped; nodes that depend on it inherit its dependencies
=================  ==========================================================

Data and control dependencies both become ``deps``. Ops are listed in a
topological order (file order among ready nodes), so the in-order streams add
no false dependencies. ``comm_size`` is taken in the nccl-tests convention of
the trace format. Other node types (STORAGE, BATCH, CHECKPOINT, INVALID) and
GATHER / SCATTER collectives raise :class:`TraceError`.

Process groups: a collective's ``pg_name`` names a group of
``process_groups``; without that argument, the ``<prefix>.comm_group.json``
next to the files (ASTRA-sim's ``{"pg_name": [ranks]}`` form) is read when it
exists. A node that carries the ``commsim`` attribute (written by
:func:`~commsim.workloads.chakra_et.export_chakra`) gets back its op id,
stream, dtype, tags and the other fields Chakra has no place for.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from commsim.config import config_error_from
from commsim.errors import ConfigError, TraceError
from commsim.workloads._dtypes import dtype_bytes
from commsim.workloads.trace import (
    OP_TYPES,
    CollectiveOp,
    ComputeOp,
    DelayOp,
    DiskReadOp,
    Program,
    RecvOp,
    SendOp,
    Trace,
    _OpBase,
)

__all__ = ["NODE_TYPES", "chakra_files", "import_chakra", "read_chakra_json"]

NODE_TYPES = {
    0: "INVALID_NODE", 1: "METADATA_NODE", 2: "MEM_LOAD_NODE", 3: "MEM_STORE_NODE", 4: "COMP_NODE",
    5: "COMM_SEND_NODE", 6: "COMM_RECV_NODE", 7: "COMM_COLL_NODE", 8: "STORAGE_NODE", 9: "BATCH_NODE",
    10: "CHECKPOINT_NODE",
}
"""Chakra's ``NodeType`` enum (``et_def.proto``)."""

_COMM_TYPES = {
    0: "ALL_REDUCE", 1: "REDUCE", 2: "ALL_GATHER", 3: "GATHER", 4: "SCATTER", 5: "BROADCAST", 6: "ALL_TO_ALL",
    7: "REDUCE_SCATTER", 8: "REDUCE_SCATTER_BLOCK", 9: "BARRIER",
}
_COLLECTIVE = {
    "ALL_REDUCE": "all_reduce", "REDUCE": "reduce", "ALL_GATHER": "all_gather", "BROADCAST": "broadcast",
    "ALL_TO_ALL": "all_to_all", "REDUCE_SCATTER": "reduce_scatter", "REDUCE_SCATTER_BLOCK": "reduce_scatter",
    "BARRIER": "all_reduce",
}
_COMM_GROUP_SUFFIX = ".comm_group.json"   # the same as chakra_et.COMM_GROUP_SUFFIX (not imported: lazy)
_SUPPORTED = ("COMP_NODE", "MEM_LOAD_NODE", "MEM_STORE_NODE", "COMM_COLL_NODE", "COMM_SEND_NODE",
              "COMM_RECV_NODE", "METADATA_NODE")


def _key(obj: dict[str, Any], snake: str) -> Any:
    """Read a protobuf JSON field by its snake_case name or its lowerCamelCase JSON name."""
    if snake in obj:
        return obj[snake]
    head, *rest = snake.split("_")
    return obj.get(head + "".join(part.title() for part in rest))


def read_chakra_json(path: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read one Chakra JSON file; return (global metadata or ``None``, list of node objects)."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(field="file", value=str(path), rule="does not exist or is not a file",
                         fix="give the path of a Chakra JSON trace (one file per rank)")
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    objects: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise TraceError(field="JSON syntax", value=f"line {exc.lineno}, column {exc.colno}",
                             rule=f"cannot be parsed ({exc.msg})", fix="correct the JSON at that place",
                             source=str(path)) from None
        objects.append(obj)
    if len(objects) == 1 and isinstance(objects[0], list):
        objects = objects[0]
    elif len(objects) == 1 and isinstance(objects[0], dict) and "nodes" in objects[0]:
        head = objects[0]
        meta = head.get("metadata", _key(head, "global_metadata"))
        return meta, list(head["nodes"])
    metadata = None
    nodes: list[dict[str, Any]] = []
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise TraceError(field=f"objects[{i}]", value=obj, rule="is not a JSON object",
                             fix="write the metadata and each node as a JSON object", source=str(path))
        if "version" in obj and "type" not in obj and not nodes and metadata is None:
            metadata = obj
        else:
            nodes.append(obj)
    return metadata, nodes


def _attrs(node: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, entry in enumerate(node.get("attr") or []):
        if not isinstance(entry, dict) or "name" not in entry:
            raise TraceError(field=f"{where}.attr[{k}]", value=entry, rule="is not an attribute with a name",
                             fix='write attributes as {"name": "num_ops", "int64Val": "1000"}', source=source)
        value = None
        for key, raw in entry.items():
            if key in ("name", "doc_string", "docString"):
                continue
            kind = key.replace("_", "").lower()
            if kind.endswith("list"):
                value = list((raw or {}).get("values", []))
            elif kind in ("doubleval", "floatval"):
                value = float(raw)
            elif kind == "boolval":
                value = bool(raw)
            elif kind in ("stringval", "bytesval"):
                value = raw
            elif kind.endswith("val"):
                try:
                    value = int(raw)
                except (TypeError, ValueError):
                    raise TraceError(field=f"{where}.attr[{k}].{key}", value=raw, rule="is not an integer",
                                     fix="give an integer (64-bit values may be written as strings)",
                                     source=source) from None
            else:
                raise TraceError(field=f"{where}.attr[{k}].{key}", value=raw, rule="is not an attribute value field",
                                 fix="use one of int64Val, int32Val, uint64Val, doubleVal, boolVal, stringVal, ...",
                                 source=source)
        out[entry["name"]] = value
    return out


def _need(attrs: dict[str, Any], name: str, where: str, node_type: str, source: str) -> Any:
    value = attrs.get(name)
    if value is None:
        raise TraceError(field=f"{where}.attr", value=sorted(attrs), rule=f"lacks '{name}', which a {node_type} needs",
                         fix=f'add {{"name": "{name}", "int64Val": "..."}} to the node\'s attr list', source=source)
    return value


def _node_type(node: dict[str, Any], where: str, source: str) -> str:
    raw = node.get("type", 0)
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
        name = NODE_TYPES.get(int(raw), f"type {raw}")
    else:
        name = str(raw)
    if name not in _SUPPORTED:
        raise TraceError(field=f"{where}.type", value=raw, rule="is not a node type commsim can import",
                         fix=f"use one of {', '.join(_SUPPORTED)}", source=source)
    return name


def _ranks_from_names(paths: list[Path]) -> list[int]:
    numbers = []
    for path in paths:
        found = re.findall(r"\d+", path.name)
        numbers.append(int(found[-1]) if found else None)
    if None not in numbers and len(set(numbers)) == len(numbers):
        return [int(n) for n in numbers]  # type: ignore[arg-type]
    return list(range(len(paths)))


def chakra_files(spec: str | Path) -> list[Path]:
    """The per-rank files a user names: a file, a directory (its ``*.et`` files, else its
    ``*.json`` files) or a prefix (``dir/all_reduce`` for ``dir/all_reduce.<rank>.et``), by rank."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.glob("*.et")) or sorted(path.glob("*.et.gz")) or sorted(
            p for p in path.glob("*.json") if not p.name.endswith(_COMM_GROUP_SUFFIX))
    else:
        pattern = re.compile(re.escape(path.name) + r"\.(\d+)\.(et|et\.gz|json)$")
        found = [p for p in path.parent.glob(path.name + ".*") if pattern.match(p.name)] if path.parent.is_dir() else []
    if not found:
        raise TraceError(field="files", value=str(spec), rule="names no Chakra trace file",
                         fix="give a file, a directory of <name>.<rank>.et files, or their common prefix "
                             "(e.g. 'traces/all_reduce' for traces/all_reduce.0.et ...)")
    return sorted(found, key=lambda p: (int(re.findall(r"\d+", p.name)[-1]) if re.findall(r"\d+", p.name) else 0,
                                        p.name))


def _read_nodes(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if path.suffix == ".json":
        return read_chakra_json(path)
    from commsim.workloads.chakra_et import read_chakra_et

    return read_chakra_et(path)


def _comm_groups(files: list[Path]) -> dict[str, list[int]] | None:
    """ASTRA-sim's ``<prefix>.comm_group.json`` beside the files, when there is one."""
    match = re.match(r"(.*)\.\d+\.(?:et|et\.gz|json)$", files[0].name)
    if match is None:
        return None
    path = files[0].with_name(match.group(1) + _COMM_GROUP_SUFFIX)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): [int(r) for r in v] for k, v in data.items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise TraceError(field="file", value=str(path), rule="is not a mapping of process-group names to rank lists",
                         fix='write e.g. {"1": [0, 1, 2, 3]}, or delete the file') from None


def import_chakra(
    paths: Sequence[str | Path],
    *,
    ranks: Sequence[int] | None = None,
    process_groups: dict[str, list[int]] | None = None,
    dtype: str = "fp16",
    name: str = "chakra-import",
    check: bool = True,
) -> Trace:
    """Convert Chakra traces (binary ``.et`` or JSON, one per rank) into one :class:`Trace`, a program per rank.

    Each path is a file, a directory or a prefix (see :func:`chakra_files`).
    ``ranks`` gives each file's rank; by default the last number in each file
    name (``trace.3.json`` → 3) when those are distinct, else the file order.
    ``process_groups`` maps a collective's ``pg_name`` to its member ranks;
    without it every collective spans all ranks. ``dtype`` is the element type
    given to compute ops (Chakra nodes carry none). With ``check`` (default) the
    result passes :func:`~commsim.workloads.validate_trace`.
    """
    files = [f for p in paths for f in chakra_files(p)]
    if not files:
        raise TraceError(field="files", rule="is empty", fix="give one Chakra JSON file per rank")
    dtype_bytes(dtype)
    rank_list = list(ranks) if ranks is not None else _ranks_from_names(files)
    if len(rank_list) != len(files) or len(set(rank_list)) != len(rank_list) or min(rank_list) < 0:
        raise TraceError(field="ranks", value=rank_list, rule="must give one distinct rank >= 0 per file",
                         fix="list as many distinct ranks as files")
    world = sorted(rank_list)
    size = max(rank_list) + 1
    if process_groups is None:
        process_groups = _comm_groups(files)
    groups = {key: list(value) for key, value in (process_groups or {}).items()}
    programs = []
    metadata: dict[str, Any] = {"source": "chakra", "files": [str(f) for f in files], "dtype": dtype}
    communicators: dict[str, list[list[int]]] = {"world": [world]}
    origin = None   # the trace-level fields of a trace commsim exported
    for path, rank in zip(files, rank_list, strict=True):
        meta, nodes = _read_nodes(path)
        if meta is not None and "commsim_trace" in meta:
            origin = json.loads(meta.pop("commsim_trace"))
        if meta is not None and "chakra_metadata" not in metadata:
            metadata["chakra_metadata"] = meta
        ops = _convert(nodes, rank, groups, dtype, str(path))
        if ops or origin is None:
            programs.append(Program.model_construct(name=f"rank{rank}", ranks=[rank], ops=ops))
    if origin is not None:
        name, size, communicators, metadata = (origin["name"], origin["ranks"], origin["communicators"],
                                               origin["metadata"])
    trace = Trace.model_construct(name=name, ranks=size, communicators=communicators,
                                  programs=programs, metadata=metadata)
    if check:
        from commsim.workloads._validate import validate_trace

        try:
            validate_trace(trace)
        except ConfigError as error:
            found = re.match(r"programs\[(\d+)\]", error.field)
            raise (error.with_source(str(files[int(found.group(1))])) if found else error) from None
    return trace


def _convert(nodes: list[dict[str, Any]], rank: int, groups: dict[str, list[int]], dtype: str,
             source: str) -> list[_OpBase]:
    ids: dict[str, int] = {}
    types: list[str] = []
    for i, node in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(node, dict):
            raise TraceError(field=where, value=node, rule="is not a JSON object", fix="write each node as an object",
                             source=source)
        node_id = str(node.get("id", 0))   # protobuf JSON leaves out a zero id
        if node_id in ids:
            raise TraceError(field=f"{where}.id", value=node_id, rule=f"repeats the id of nodes[{ids[node_id]}]",
                             fix="give every node of a rank its own id", source=source)
        ids[node_id] = i
        types.append(_node_type(node, where, source))

    deps: list[list[int]] = []
    for i, node in enumerate(nodes):
        mine: list[int] = []
        for field in ("data_deps", "ctrl_deps"):
            for k, dep in enumerate(_key(node, field) or []):
                if str(dep) not in ids:
                    raise TraceError(field=f"nodes[{i}].{field}[{k}]", value=dep,
                                     rule="is not the id of a node in this file",
                                     fix="name a node of the same rank's trace", source=source)
                j = ids[str(dep)]
                if j not in mine:
                    mine.append(j)
        deps.append(mine)

    order = _topological(nodes, deps, source)
    attrs = [_attrs(node, f"nodes[{i}]", source) for i, node in enumerate(nodes)]
    extras = [_extra(a.get("commsim"), f"nodes[{i}]", source) for i, a in enumerate(attrs)]
    dropped = [types[i] == "METADATA_NODE" and extras[i] is None for i in range(len(nodes))]
    kept: dict[int, list[int]] = {}   # metadata nodes resolve to the kept nodes they depend on
    ops: list[_OpBase] = []
    op_id: dict[int, str] = {}
    for i in order:
        mine = deps[i]
        if extras[i] is not None:   # a commsim export: its ctrl_deps only restate stream order
            data = {ids[str(d)] for d in _key(nodes[i], "data_deps") or []}
            mine = [j for j in mine if j in data]
        effective: list[int] = []
        for j in mine:
            for k in kept[j] if dropped[j] else [j]:
                if k not in effective:
                    effective.append(k)
        kept[i] = effective
        if dropped[i]:
            continue
        op = _node_op(nodes[i], types[i], attrs[i], extras[i], f"nodes[{i}]", rank, groups, dtype, source)
        op_id[i] = op.id
        op.deps = [op_id[k] for k in effective]
        ops.append(op)
    return ops


def _extra(raw: Any, where: str, source: str) -> dict[str, Any] | None:
    """The ``commsim`` attribute of a node commsim exported: the op fields Chakra has no place for."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        value = None
    if not isinstance(value, dict) or value.get("kind") not in OP_TYPES or "id" not in value:
        raise TraceError(field=f"{where}.attr.commsim", value=raw, rule="is not the op record commsim writes",
                         fix="remove the attribute, or re-export the trace with commsim trace export-chakra",
                         source=source)
    return value


def _topological(nodes: list[dict[str, Any]], deps: list[list[int]], source: str) -> list[int]:
    indegree = [len(d) for d in deps]
    users: list[list[int]] = [[] for _ in nodes]
    for i, mine in enumerate(deps):
        for j in mine:
            users[j].append(i)
    ready = [i for i, n in enumerate(indegree) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users[i]:
            indegree[user] -= 1
            if indegree[user] == 0:
                heapq.heappush(ready, user)
    if len(order) < len(nodes):
        stuck = [str(nodes[i].get("id", 0)) for i in range(len(nodes)) if indegree[i] > 0]
        raise TraceError(field="nodes", value=stuck[:10], rule="contain a dependency cycle",
                         fix="remove the dependency that closes the loop among these node ids", source=source)
    return order


def _node_op(node: dict[str, Any], node_type: str, attrs: dict[str, Any], extra: dict[str, Any] | None, where: str,
             rank: int, groups: dict[str, list[int]], dtype: str, source: str) -> _OpBase:
    op_id = str(node.get("id", 0))
    common: dict[str, Any] = {"id": op_id, "name": node.get("name") or None, "tags": {"chakra_type": node_type}}
    try:
        if extra is not None:
            return _restore(node, node_type, attrs, dict(extra), where, rank, groups, dtype, source, common)
        return _build(node, node_type, attrs, where, rank, groups, dtype, source, common)
    except TraceError:
        raise
    except ValidationError as exc:  # a value that breaks a rule of the op it becomes
        error = config_error_from(exc)
        raise TraceError(field=f"{where} (as {error.field})", value=error.value, rule=error.rule, fix=error.fix,
                         source=source) from None


def _restore(node: dict[str, Any], node_type: str, attrs: dict[str, Any], extra: dict[str, Any], where: str,
             rank: int, groups: dict[str, list[int]], dtype: str, source: str, common: dict[str, Any]) -> _OpBase:
    """An op commsim exported: Chakra's own fields (sizes, times, peers) and the ``commsim`` extras on top."""
    kind = extra.pop("kind")
    extra.setdefault("tags", {})
    extra.setdefault("name", common["name"])
    if kind in ("alloc", "free"):
        return OP_TYPES[kind].model_validate(extra)
    if kind == "disk_read":
        return DiskReadOp(**{"bytes": _need(attrs, "tensor_size", where, node_type, source), **extra})
    built = _build(node, node_type, attrs, where, rank, groups, dtype, source, common)
    if built.kind != kind and not (kind == "delay" and built.kind == "compute"):
        raise TraceError(field=f"{where}.attr.commsim", value=kind, rule=f"says {kind} but the node is a {node_type}",
                         fix="re-export the trace with commsim trace export-chakra")
    native = built.model_dump(exclude={"kind", "id", "name", "tags", "deps", "stream", "group"})
    if kind == "delay":
        native = {"seconds": float(node.get("duration_micros") or 0) / 1e6}
        if "seconds" in extra and round(extra["seconds"] * 1e6) != round(native["seconds"] * 1e6):
            extra.pop("seconds")   # the Chakra duration was edited: it wins
    for key in ("bytes", "flops"):
        if key in extra and key in native and round(extra[key]) != round(native[key]):
            extra.pop(key)
    if kind in ("send", "recv") and _resolves_elsewhere(extra.get("peer"), built.peer):
        extra.pop("peer")
    return OP_TYPES[kind].model_validate({**native, **extra})


def _resolves_elsewhere(peer: Any, absolute: int) -> bool:
    """A relative peer is kept as written (it resolves later); an absolute one must match Chakra's."""
    return isinstance(peer, int) and peer != absolute


def _build(node: dict[str, Any], node_type: str, attrs: dict[str, Any], where: str, rank: int,
           groups: dict[str, list[int]], dtype: str, source: str, common: dict[str, Any]) -> _OpBase:
    duration = _key(node, "duration_micros")
    if node_type == "COMP_NODE":
        if attrs.get("is_cpu_op"):
            return DelayOp(stream="cpu", seconds=float(duration or 0) / 1e6, **common)
        if attrs.get("num_ops") is None and duration:
            return DelayOp(seconds=float(duration) / 1e6, **common)
        flops = _need(attrs, "num_ops", where, node_type, source)
        return ComputeOp(flops=flops, bytes=attrs.get("tensor_size") or 0, dtype=dtype, **common)
    if node_type in ("MEM_LOAD_NODE", "MEM_STORE_NODE"):
        size = _need(attrs, "tensor_size", where, node_type, source)
        return ComputeOp(stream="mem", flops=0, bytes=size, dtype=dtype, **common)
    if node_type == "COMM_COLL_NODE":
        raw = _need(attrs, "comm_type", where, node_type, source)
        kind = _COMM_TYPES.get(raw, str(raw)) if isinstance(raw, int) else str(raw)
        if kind not in _COLLECTIVE:
            raise TraceError(field=f"{where}.attr.comm_type", value=raw, rule="is not a collective commsim models",
                             fix="use ALL_REDUCE, REDUCE, ALL_GATHER, BROADCAST, ALL_TO_ALL, REDUCE_SCATTER or "
                                 "BARRIER", source=source)
        size = attrs.get("comm_size")
        if size is None and kind != "BARRIER":
            _need(attrs, "comm_size", where, node_type, source)
        pg = attrs.get("pg_name")
        group: str | list[int] = "world"
        if pg is not None and groups:
            if str(pg) not in groups:
                raise TraceError(field=f"{where}.attr.pg_name", value=pg, rule="is not one of the process groups given",
                                 fix=f"add it to the process groups (known: {', '.join(sorted(groups))})",
                                 source=source)
            group = groups[str(pg)]
        op = _COLLECTIVE[kind]
        root = attrs.get("root", 0) if op in ("broadcast", "reduce") else None
        return CollectiveOp(stream=f"coll:{pg if pg is not None and groups else 'world'}", op=op,
                            bytes=size or 0, group=group, root=root, **common)
    if node_type == "COMM_SEND_NODE":
        dst = _need(attrs, "comm_dst", where, node_type, source)
        size = _need(attrs, "comm_size", where, node_type, source)
        src = attrs.get("comm_src")
        if src is not None and src != rank:
            raise TraceError(field=f"{where}.attr.comm_src", value=src,
                             rule=f"of a send differs from the rank {rank} of this file",
                             fix="check which rank this file belongs to (see the ranks option)", source=source)
        return SendOp(stream=f"send:{dst}", peer=dst, bytes=size, tag=attrs.get("comm_tag") or 0, **common)
    # COMM_RECV_NODE
    src = _need(attrs, "comm_src", where, node_type, source)
    size = _need(attrs, "comm_size", where, node_type, source)
    dst = attrs.get("comm_dst")
    if dst is not None and dst != rank:
        raise TraceError(field=f"{where}.attr.comm_dst", value=dst,
                         rule=f"of a recv differs from the rank {rank} of this file",
                         fix="check which rank this file belongs to (see the ranks option)", source=source)
    return RecvOp(stream=f"recv:{src}", peer=src, bytes=size, tag=attrs.get("comm_tag") or 0, **common)
