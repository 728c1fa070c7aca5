"""Import PyTorch profiler traces (Kineto's Chrome-trace JSON, one file per rank) as a commsim :class:`Trace`.

``torch.profiler.profile(...).export_chrome_trace(path)`` writes one JSON file
per rank with ``traceEvents`` (complete events ``ph: "X"`` with ``ts`` and
``dur`` in microseconds) and ``distributedInfo`` (rank, world size, process
groups). The import keeps what a network what-if needs:

* **compute**: the outermost CPU operator of each host thread (``cpu_op``) and
  every GPU kernel or memory copy (``kernel``, ``gpu_memcpy``, ``gpu_memset``)
  become :class:`DelayOp` ops of their recorded duration, on stream
  ``cpu:<tid>`` or ``gpu<device>:<stream>``. They keep their measured time:
  the profile says how long they took, not how many FLOP they did.
* **communication**: gloo collectives (``gloo:all_reduce`` ... on gloo's
  worker threads) and NCCL kernels (``ncclDevKernel_*`` / ``ncclKernel_*``)
  become :class:`CollectiveOp` ops on stream ``comm:<pg>``; the size comes from
  the event's input shape and element type (gloo) or from the
  ``record_param_comms`` event that launched it (NCCL: message size, element
  type, process-group ranks). Sizes follow the nccl-tests convention of the
  trace format (an all-gather's size is its whole output).
* **host time between operators** on a compute stream (Python, launch
  overhead) becomes a delay op ``host`` of the gap's length.
* **order and overlap**: each stream runs its ops in recorded order. An op
  that starts after a collective ended, on a stream that sat idle while that
  collective finished, waited for it: it depends on the collective (and only
  the part of the gap after the collective's end is host time; a gloo waiter may
  resume up to :data:`GLOO_COMPLETION_SKEW` before the recorded end). A collective
  depends, on every compute stream, on the last op (or host gap) that ended
  before it started.
  So replaying on the recorded network keeps the recorded order, and a slower
  or faster network moves exactly the waits.

Ranks come from ``distributedInfo.rank`` (else the file order); collectives
must appear in the same order on every member of their group (the trace
validation checks it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from commsim.errors import TraceError
from commsim.workloads.trace import CollectiveOp, DelayOp, Program, Trace, _OpBase

__all__ = ["GLOO_COMPLETION_SKEW", "import_pytorch_profile", "profile_files"]

_GLOO = {"all_reduce": "all_reduce", "allreduce": "all_reduce", "broadcast": "broadcast", "reduce": "reduce",
         "all_gather": "all_gather", "allgather": "all_gather", "_allgather_base": "all_gather",
         "reduce_scatter": "reduce_scatter", "_reduce_scatter_base": "reduce_scatter", "alltoall": "all_to_all",
         "all_to_all": "all_to_all", "alltoall_base": "all_to_all", "barrier": "all_reduce",
         "allreduce_coalesced": "all_reduce"}
# NCCL's point-to-point kernels (SendRecv) are not collectives: they are refused with a clear error
_NCCL = {"AllReduce": "all_reduce", "ReduceScatter": "reduce_scatter", "AllGather": "all_gather",
         "Broadcast": "broadcast", "Reduce": "reduce"}
_ELEMENT_BYTES = {"float": 4, "c10::float": 4, "double": 8, "c10::half": 2, "half": 2, "c10::bfloat16": 2,
                  "bfloat16": 2, "int": 4, "long int": 8, "long": 8, "short int": 2, "signed char": 1,
                  "unsigned char": 1, "bool": 1, "c10::float8_e4m3fn": 1, "c10::float8_e5m2": 1}
_GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
_HOST_GAP = 1e-6   # shorter host gaps are timer noise; they are left out
# gloo completes a collective's future (waking the thread that waits on it) before its worker thread closes
# the profiler range, so on a busy host the waiter can resume up to a scheduler time slice (Linux CFS:
# 0.75-3 ms) before the recorded end. A resume that early on an idle stream is still a wait.
GLOO_COMPLETION_SKEW = 2e-3


def profile_files(spec: str | Path) -> list[Path]:
    """The per-rank profiler traces a user names: a JSON file or a directory of them (``*.json``, ``*.pt.trace.json``)."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.endswith(".json") or p.name.endswith(".json.gz"))
        if found:
            return found
    raise TraceError(field="files", value=str(spec), rule="names no PyTorch profiler trace",
                     fix="give the JSON files torch.profiler's export_chrome_trace wrote (one per rank), "
                         "or their directory")


def _load(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            import gzip

            raw = gzip.decompress(raw)
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise TraceError(field="file", value=str(path), rule=f"cannot be read as JSON ({exc})",
                         fix="give the file torch.profiler's export_chrome_trace wrote") from None
    if isinstance(data, list):
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise TraceError(field="traceEvents", value=str(path), rule="is missing: this is not a Chrome-trace JSON",
                         fix="give the file torch.profiler's export_chrome_trace wrote", source=str(path))
    return data


def _element_bytes(name: Any, where: str, source: str) -> int:
    key = str(name).strip().lower()
    if key not in _ELEMENT_BYTES and f"c10::{key}" in _ELEMENT_BYTES:
        key = f"c10::{key}"
    if key not in _ELEMENT_BYTES:
        raise TraceError(field=where, value=name, rule="is an element type commsim does not know the size of",
                         fix=f"use one of {', '.join(sorted(_ELEMENT_BYTES))}", source=source)
    return _ELEMENT_BYTES[key]


def _elements(dims: Any) -> int:
    total = 0
    for shape in dims or []:
        if isinstance(shape, list) and shape and isinstance(shape[0], list):
            total += sum(math.prod(s) for s in shape)
        elif isinstance(shape, list):
            total += math.prod(shape) if shape else 0
    return total


class _Event:
    __slots__ = ("args", "end", "kind", "name", "start", "stream")

    def __init__(self, kind: str, name: str, stream: str, start: float, end: float, args: dict[str, Any]) -> None:
        self.kind, self.name, self.stream, self.start, self.end, self.args = kind, name, stream, start, end, args


def _events(data: dict[str, Any], source: str) -> tuple[list[_Event], list[_Event], list[dict[str, Any]]]:
    """(compute events, collective events, record_param_comms args in order) of one rank."""
    spans: dict[Any, list[dict[str, Any]]] = {}
    gpu: list[_Event] = []
    comms: list[_Event] = []
    params: list[dict[str, Any]] = []
    for e in data["traceEvents"]:
        if not isinstance(e, dict) or e.get("ph") != "X" or "dur" not in e or "ts" not in e:
            continue
        name, cat, args = str(e.get("name", "")), e.get("cat"), e.get("args") or {}
        start = float(e["ts"]) * 1e-6
        end = start + float(e["dur"]) * 1e-6
        if name == "record_param_comms":
            params.append(args)
        elif name.startswith("gloo:"):
            comms.append(_Event("gloo", name[5:], "comm", start, end, args))
        elif cat in _GPU_CATS:
            stream = f"gpu{args.get('device', 0)}:{args.get('stream', e.get('tid'))}"
            if name.startswith(("ncclDevKernel_", "ncclKernel_")):
                comms.append(_Event("nccl", name, stream, start, end, args))
            else:
                gpu.append(_Event(str(cat), name, stream, start, end, args))
        elif cat == "cpu_op":
            spans.setdefault(e.get("tid"), []).append(e)
    compute: list[_Event] = []
    for tid, events in spans.items():   # the outermost operators of each thread
        events.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        reach = -math.inf
        for e in events:
            start = float(e["ts"]) * 1e-6
            end = start + float(e["dur"]) * 1e-6
            if start >= reach:
                compute.append(_Event("cpu_op", str(e["name"]), f"cpu:{tid}", start, end, e.get("args") or {}))
                reach = end
    compute.extend(gpu)
    compute.sort(key=lambda ev: (ev.start, ev.stream))
    comms.sort(key=lambda ev: ev.start)
    return compute, comms, params


def _collective(ev: _Event, param: dict[str, Any] | None, world: list[int], where: str,
                source: str) -> tuple[str, float, list[int]]:
    """(op, bytes in the nccl-tests convention, group ranks) of a collective event."""
    group = world
    if param is not None and param.get("Process Group Ranks"):
        raw = param["Process Group Ranks"]
        group = json.loads(raw) if isinstance(raw, str) else list(raw)
    if ev.kind == "gloo":
        op = _GLOO.get(ev.name)
        if op is None:
            raise TraceError(field=f"{where}.name", value=f"gloo:{ev.name}", rule="is not a collective commsim models",
                             fix="profile a run with all_reduce, broadcast, reduce, all_gather, reduce_scatter, "
                                 "all_to_all or barrier", source=source)
        types = ev.args.get("Input type") or ["float"]
        size = _elements(ev.args.get("Input Dims")) * _element_bytes(types[0], f"{where}.args.Input type", source)
        if ev.name == "barrier":
            size = 0
    else:
        found = next((v for k, v in _NCCL.items() if k in ev.name), None)
        if found is None or param is None:
            raise TraceError(field=f"{where}.name", value=ev.name,
                             rule="is an NCCL kernel without a collective commsim models and its record_param_comms",
                             fix="profile with record_shapes=True so each NCCL launch carries its sizes", source=source)
        op = found
        nelems = max(int(param.get("In msg nelems", 0) or 0), int(param.get("Out msg nelems", 0) or 0))
        size = nelems * _element_bytes(param.get("dtype", "float"), f"{where}.record_param_comms.dtype", source)
        if op == "all_gather":
            size = int(param.get("Out msg nelems", 0) or 0) * _element_bytes(param.get("dtype", "float"), where, source)
        return op, float(size), group
    if op == "all_gather":
        size *= len(group)   # the input is one rank's share; the trace format counts the whole output
    return op, float(size), group


def _program(compute: list[_Event], comms: list[_Event], params: list[dict[str, Any]], origin: float,
             world: list[int], source: str) -> list[_OpBase]:
    timeline: list[tuple[float, int, _Event]] = [(ev.start, 0, ev) for ev in compute]
    timeline += [(ev.start, 1, ev) for ev in comms]
    timeline.sort(key=lambda item: (item[0], item[1]))
    ops: list[_OpBase] = []
    last_end: dict[str, float] = {}          # stream -> end time of its last op
    ended: dict[str, list[tuple[float, str]]] = {}    # compute stream -> (end, id) of its ops and gaps, in order
    done_comms: list[tuple[float, str, float]] = []   # (end, id, completion skew) of collectives, in start order
    counter = 0
    for _, is_comm, ev in timeline:
        counter += 1
        op_id = f"{counter}"
        if is_comm:
            k = len([o for o in ops if o.kind == "collective"])
            param = params[k] if ev.kind == "nccl" and k < len(params) else None
            if ev.kind == "gloo" and params and k < len(params):
                param = params[k]
            op, size, group = _collective(ev, param, world, f"traceEvents[{ev.name}]", source)
            pg = "world" if group == world else "-".join(map(str, group))
            deps = []
            for history in ended.values():   # the launching op may still run: take the last one already done
                done = next((cid for end, cid in reversed(history[-3:]) if end <= ev.start), None)
                if done is not None:
                    deps.append(done)
            ops.append(CollectiveOp(id=op_id, name=f"{op} {size:.0f} B", stream=f"comm:{pg}", op=op, bytes=size,
                                    group="world" if group == world else group, deps=deps,
                                    tags={"recorded_start": ev.start, "recorded_end": ev.end, "source": ev.kind}))
            done_comms.append((ev.end, op_id, GLOO_COMPLETION_SKEW if ev.kind == "gloo" else 0.0))
            last_end[ops[-1].stream] = ev.end
            continue
        previous = last_end.get(ev.stream)
        deps: list[str] = []
        host_from = origin if previous is None else previous   # ranks start where they started in the recording
        if previous is not None:
            waited = [(end, cid) for end, cid, skew in done_comms if previous <= end <= ev.start + skew]
            if waited:   # this stream sat idle until a collective finished: it waited for it
                end, cid = max(waited)
                deps.append(cid)
                host_from = end
        if host_from is not None and ev.start - host_from > _HOST_GAP:
            counter += 1
            ops.append(DelayOp(id=f"{counter}", name="host", stream=ev.stream, seconds=ev.start - host_from,
                               deps=list(deps), tags={"kind": "host gap"}))
            ended.setdefault(ev.stream, []).append((ev.start, f"{counter}"))
            deps = []
        counter += 1
        op_id = f"{counter}"
        ops.append(DelayOp(id=op_id, name=ev.name, stream=ev.stream, seconds=ev.end - ev.start, deps=deps,
                           tags={"recorded_start": ev.start, "recorded_end": ev.end, "source": ev.kind}))
        last_end[ev.stream] = ev.end
        ended.setdefault(ev.stream, []).append((ev.end, op_id))
    return ops


def import_pytorch_profile(paths: Sequence[str | Path], *, name: str = "pytorch-profile",
                           check: bool = True) -> Trace:
    """Convert PyTorch profiler traces (Chrome-trace JSON, one per rank) into one :class:`Trace`.

    Each path is a file or a directory of them. Times are relative to the
    earliest event of all ranks (the profiler's clocks are the hosts' clocks).
    With ``check`` (default) the result passes :func:`~commsim.workloads.validate_trace`.
    """
    files = [f for p in paths for f in profile_files(p)]
    loaded = [(_load(f), f) for f in files]
    ranks = []
    world_size = 0
    for k, (data, _path) in enumerate(loaded):
        info = data.get("distributedInfo") or {}
        ranks.append(int(info.get("rank", k)))
        world_size = max(world_size, int(info.get("world_size", 0) or 0))
    if len(set(ranks)) != len(ranks):
        raise TraceError(field="distributedInfo.rank", value=ranks, rule="repeats a rank across the files",
                         fix="give one profiler trace per rank")
    size = max(world_size, max(ranks) + 1)
    world = list(range(size))
    programs = []
    events = {rank: _events(data, str(path)) for (data, path), rank in zip(loaded, ranks, strict=True)}
    origin = min((ev.start for compute, comms, _ in events.values() for ev in (*compute, *comms)), default=0.0)
    for (_, path), rank in sorted(zip(loaded, ranks, strict=True), key=lambda item: item[1]):
        compute, comms, params = events[rank]
        ops = _program(compute, comms, params, origin, world, str(path))
        programs.append(Program.model_construct(name=f"rank{rank}", ranks=[rank], ops=ops))
    trace = Trace.model_construct(name=name, ranks=size, communicators={"world": [world]}, programs=programs,
                                  metadata={"source": "pytorch-profiler", "files": [str(f) for f in files]})
    if check:
        from commsim.workloads._validate import validate_trace

        validate_trace(trace)
    return trace
