"""Rules of the trace format that span ops, programs and ranks.

:func:`validate_trace` checks, in this order, and raises the first problem as a
:class:`~commsim.errors.TraceError` whose field path points at the culprit
(``programs[2].ops[17].deps[0]``):

1. communicators: member ranks exist, no rank twice in one communicator;
2. programs: ranks exist, no rank in two programs;
3. per program: unique op ids, known dependencies, no dependency cycle (the
   in-order execution of each stream counts as dependencies), known
   communicators, explicit groups that contain the issuing ranks, roots inside
   their group, relative peers that exist, a free only for an allocated buffer;
4. collectives: the members of each group issue the same collectives (op,
   size, root, algorithm) in the same order;
5. point-to-point: every send has a recv with the same (source, destination,
   tag) and size, in order, and vice versa.

It works per program, not per rank, where it can: a group whose members all run
the same program needs no comparison, so a 1,024-rank trace validates quickly.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from commsim.errors import ConfigError, TraceError
from commsim.units import format_bytes
from commsim.workloads._index import TraceIndex, _short
from commsim.workloads.trace import CollectiveOp, FreeOp, Program, RecvOp, SendOp, Trace, _PointToPoint

__all__ = ["validate_against", "validate_trace"]


def validate_trace(trace: Trace) -> TraceIndex:
    """Check every cross-op rule of ``trace``; return its :class:`TraceIndex` when it passes.

    >>> from commsim.workloads.trace import Trace, Program, ComputeOp
    >>> bad = Trace(ranks=1, programs=[Program(name="p", ranks=[0], ops=[
    ...     ComputeOp(id="a", deps=["b"]), ComputeOp(id="b", deps=["a"])])])
    >>> try:
    ...     validate_trace(bad)
    ... except TraceError as error:
    ...     print(error.field, "|", error.rule)
    programs[0].ops[0].deps | is on a dependency cycle, where → reads 'waits for': a → b → a (edges from deps)
    """
    _check_communicators(trace)
    _check_program_ranks(trace)
    index = TraceIndex(trace)
    peers: dict[tuple[int, int | str], list[int]] = {}
    for p, program in enumerate(trace.programs):
        _check_program(trace, index, p, program, peers)
    _check_collectives(trace, index)
    _check_point_to_point(trace, peers)
    return index


def validate_against(trace: Trace, n_devices: int) -> None:
    """Check that every rank the trace uses maps to one of ``n_devices`` devices (ranks 0 .. n-1)."""
    if trace.ranks <= n_devices:
        return
    for p, program in enumerate(trace.programs):
        beyond = [r for r in program.rank_list() if r >= n_devices]
        if beyond:
            raise TraceError(field=f"programs[{p}].ranks", value=program.ranks,
                             rule=f"uses rank {beyond[0]}, but the topology has only {n_devices} devices "
                                  f"(ranks 0..{n_devices - 1})",
                             fix=f"use a topology with at least {trace.ranks} devices, or a trace for "
                                 f"{n_devices} ranks")
    raise TraceError(field="ranks", value=trace.ranks, rule=f"exceeds the {n_devices} devices of the topology",
                     fix=f"use a topology with at least {trace.ranks} devices, or a trace for {n_devices} ranks")


# --------------------------------------------------------------------------- structure


def _check_communicators(trace: Trace) -> None:
    for name, groups in trace.communicators.items():
        owner: dict[int, int] = {}
        for g, members in enumerate(groups):
            if not members:
                raise TraceError(field=f"communicators.{name}[{g}]", value=members, rule="is an empty group",
                                 fix="list at least one rank or remove the group")
            for i, rank in enumerate(members):
                if not 0 <= rank < trace.ranks:
                    raise TraceError(field=f"communicators.{name}[{g}][{i}]", value=rank,
                                     rule=f"is outside the trace's ranks 0..{trace.ranks - 1}",
                                     fix=f"use ranks below {trace.ranks} or raise 'ranks'")
                if rank in owner:
                    where = "twice in this group" if owner[rank] == g else f"also in group {owner[rank]}"
                    raise TraceError(field=f"communicators.{name}[{g}][{i}]", value=rank,
                                     rule=f"is {where} of communicator '{name}' (groups must be disjoint)",
                                     fix="put each rank in at most one group of a communicator; use another "
                                         "communicator for overlapping groups")
                owner[rank] = g


def _check_program_ranks(trace: Trace) -> None:
    owner: dict[int, int] = {}
    for p, program in enumerate(trace.programs):
        for rank in program.rank_list():
            if rank >= trace.ranks:
                raise TraceError(field=f"programs[{p}].ranks", value=program.ranks,
                                 rule=f"contains rank {rank}, outside the trace's ranks 0..{trace.ranks - 1}",
                                 fix=f"use ranks below {trace.ranks} or raise 'ranks'")
            if rank in owner:
                other = trace.programs[owner[rank]].name
                raise TraceError(field=f"programs[{p}].ranks", value=program.ranks,
                                 rule=f"contains rank {rank}, which already runs programs[{owner[rank]}] "
                                      f"('{other}'); a rank runs at most one program",
                                 fix="remove the rank from one of the two programs")
            owner[rank] = p


def _check_program(trace: Trace, index: TraceIndex, p: int, program: Program,
                   peers: dict[tuple[int, int | str], list[int]]) -> None:
    """Per-program rules; fills ``peers`` with (program, peer) -> the peer's rank for each program rank."""
    where = f"programs[{p}]"
    ranks = program.rank_list()
    group_sizes: dict[Any, int] = {}
    ids: dict[str, int] = {}
    for j, op in enumerate(program.ops):
        if op.id in ids:
            raise TraceError(field=f"{where}.ops[{j}].id", value=op.id,
                             rule=f"repeats the id of {where}.ops[{ids[op.id]}]",
                             fix="give every op of a program its own id")
        ids[op.id] = j
    allocated = {op.buffer for op in program.ops if op.kind == "alloc"}
    for j, op in enumerate(program.ops):
        for k, dep in enumerate(op.deps):
            if dep not in ids:
                raise TraceError(field=f"{where}.ops[{j}].deps[{k}]", value=dep,
                                 rule=f"is not the id of an op in program '{program.name}'",
                                 fix="name an op of the same program (dependencies do not cross programs; "
                                     "use send/recv or a collective to synchronise ranks)")
        if isinstance(op, CollectiveOp):
            key = op.group if isinstance(op.group, str) else tuple(op.group)
            if key not in group_sizes:
                group_sizes[key] = _check_group(trace, index, f"{where}.ops[{j}]", op, ranks)
            _check_root(f"{where}.ops[{j}]", op, group_sizes[key])
        elif isinstance(op, _PointToPoint):
            if (p, op.peer) in peers:
                continue
            resolved = peers[(p, op.peer)] = []
            for rank in ranks:
                try:
                    peer = index.resolve_peer(rank, op.peer)
                except ConfigError as error:
                    raise error.with_prefix(f"{where}.ops[{j}]") from None
                if not 0 <= peer < trace.ranks:
                    raise TraceError(field=f"{where}.ops[{j}].peer", value=op.peer,
                                     rule=f"is outside the trace's ranks 0..{trace.ranks - 1}",
                                     fix="name an existing rank")
                if peer == rank:
                    raise TraceError(field=f"{where}.ops[{j}].peer", value=op.peer,
                                     rule=f"is the {op.kind}ing rank {rank} itself",
                                     fix="name another rank (a copy within a rank is a compute op)")
                resolved.append(peer)
        elif isinstance(op, FreeOp) and op.buffer not in allocated:
            raise TraceError(field=f"{where}.ops[{j}].buffer", value=op.buffer,
                             rule=f"is never allocated in program '{program.name}'",
                             fix="add an alloc op for this buffer or correct its name")
    _check_cycles(where, program, ids)


def _check_group(trace: Trace, index: TraceIndex, where: str, op: CollectiveOp, ranks: list[int]) -> int:
    """Check a collective's group as seen from every rank of the program; return the smallest group size."""
    if isinstance(op.group, str):
        if op.group not in trace.communicators:
            known = ", ".join(sorted(trace.communicators)) or "none are defined"
            raise TraceError(field=f"{where}.group", value=op.group, rule="is not a communicator of the trace",
                             fix=f"use one of: {known}; or add it under 'communicators'")
        sizes = set()
        for rank in ranks:
            if index.group_index(op.group, rank) is None:
                raise TraceError(field=f"{where}.group", value=op.group,
                                 rule=f"has no group containing rank {rank}, which runs this op",
                                 fix=f"add rank {rank} to a group of communicator '{op.group}'")
            sizes.add(len(index.group(op.group, rank)))
        smallest = min(sizes)
    else:
        members = op.group
        for i, rank in enumerate(members):
            if not 0 <= rank < trace.ranks:
                raise TraceError(field=f"{where}.group[{i}]", value=rank,
                                 rule=f"is outside the trace's ranks 0..{trace.ranks - 1}", fix="name existing ranks")
        if len(set(members)) != len(members):
            raise TraceError(field=f"{where}.group", value=members, rule="lists a rank twice",
                             fix="list each rank once")
        missing = [r for r in ranks if r not in set(members)]
        if missing:
            raise TraceError(field=f"{where}.group", value=members,
                             rule=f"does not contain rank {missing[0]}, which runs this op",
                             fix="make every rank that issues a collective a member of its group "
                                 "(or split the program)")
        smallest = len(members)
    return smallest


def _check_root(where: str, op: CollectiveOp, smallest: int) -> None:
    if op.root is not None and op.op not in ("broadcast", "reduce"):
        raise TraceError(field=f"{where}.root", value=op.root, rule=f"does not apply to {op.op}",
                         fix="remove root (it is for broadcast and reduce)")
    if op.root_index >= smallest:
        raise TraceError(field=f"{where}.root", value=op.root,
                         rule=f"is not an index into a group of {smallest} ranks",
                         fix=f"give an index from 0 to {smallest - 1} (root is a position in the group, not a rank)")


def _check_cycles(where: str, program: Program, ids: dict[str, int]) -> None:
    """Kahn's algorithm over deps plus in-order stream edges; name the ops on a cycle if one remains."""
    ops = program.ops
    n = len(ops)
    preds: list[list[tuple[int, str]]] = [[] for _ in range(n)]
    last_on_stream: dict[str, int] = {}
    for j, op in enumerate(ops):
        for dep in op.deps:
            preds[j].append((ids[dep], "deps"))
        before = last_on_stream.get(op.stream)
        if before is not None:
            preds[j].append((before, f"stream '{op.stream}' order"))
        last_on_stream[op.stream] = j
    succs: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for j in range(n):
        for i, _ in preds[j]:
            succs[i].append(j)
            indegree[j] += 1
    ready = [j for j in range(n) if indegree[j] == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for j in succs[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                ready.append(j)
    if done == n:
        return
    remaining = {j for j in range(n) if indegree[j] > 0}
    # Walk predecessors inside the remaining set until an op repeats: that loop is a cycle.
    node = min(remaining)
    path: list[int] = []
    via: list[str] = []
    seen: dict[int, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        pred, how = next((i, how) for i, how in preds[node] if i in remaining)
        via.append(how)
        node = pred
    loop = path[seen[node]:]
    hows = via[seen[node]:]
    names = [ops[j].id for j in loop] + [ops[loop[0]].id]
    kinds = sorted(set(hows))
    first = loop[0]
    raise TraceError(field=f"{where}.ops[{first}].deps", value=ops[first].deps,
                     rule=f"is on a dependency cycle, where → reads 'waits for': {' → '.join(names)} "
                          f"(edges from {', '.join(kinds)})",
                     fix="remove one of these dependencies" if kinds == ["deps"] else
                     "remove one of these dependencies or move an op so that no op waits for a later op "
                     "of its own stream")


# --------------------------------------------------------------------------- collectives


def _signature(op: CollectiveOp) -> tuple[Any, ...]:
    return (op.op, op.bytes, op.root_index if op.op in ("broadcast", "reduce") else None, op.algorithm)


def _describe(op: CollectiveOp) -> str:
    root = f" (root {op.root_index})" if op.op in ("broadcast", "reduce") else ""
    algo = f" [{op.algorithm}]" if op.algorithm != "auto" else ""
    return f"{op.op} of {format_bytes(op.bytes)}{root}{algo}"


def _check_collectives(trace: Trace, index: TraceIndex) -> None:
    named: list[dict[str, list[int]]] = []      # per program: communicator -> op indices in issue order
    explicit: list[dict[tuple[int, ...], list[int]]] = []
    for program in trace.programs:
        by_name: dict[str, list[int]] = defaultdict(list)
        by_list: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for j, op in enumerate(program.ops):
            if isinstance(op, CollectiveOp):
                if isinstance(op.group, str):
                    by_name[op.group].append(j)
                else:
                    by_list[tuple(op.group)].append(j)
        named.append(by_name)
        explicit.append(by_list)

    compared: set[tuple[Any, ...]] = set()
    for name in sorted({c for table in named for c in table}):
        for members in trace.communicators[name]:
            programs = [index.program_of(r) for r in members]
            _compare_group(trace, f"{name} group {_short(members)}", members, programs,
                           [None if p is None else named[p].get(name, []) for p in programs], compared, name)
    for key in sorted({k for table in explicit for k in table}):
        members = list(key)
        programs = [index.program_of(r) for r in members]
        _compare_group(trace, f"group {_short(members)}", members, programs,
                       [None if p is None else explicit[p].get(key, []) for p in programs], compared, key)


def _compare_group(trace: Trace, label: str, members: list[int], programs: list[int | None],
                   sequences: list[list[int] | None], compared: set[tuple[Any, ...]], channel: Any) -> None:
    """All members of one group must issue the same collectives on it, in the same order."""
    reference = next((i for i, seq in enumerate(sequences) if seq), None)
    if reference is None:
        return
    ref_prog = programs[reference]
    assert ref_prog is not None
    ref_seq = sequences[reference]
    assert ref_seq is not None
    ref_ops = trace.programs[ref_prog].ops
    for i, seq in enumerate(sequences):
        prog = programs[i]
        if prog == ref_prog:
            continue
        key = (channel, ref_prog, prog)
        if key in compared:
            continue
        compared.add(key)
        rank, ref_rank = members[i], members[reference]
        if seq is None:
            j = ref_seq[0]
            raise TraceError(field=f"programs[{ref_prog}].ops[{j}]", value=ref_ops[j].id,
                             rule=f"is a collective on the {label}, but member rank {rank} runs no program",
                             fix=f"give rank {rank} a program that issues the same collectives, or drop it from "
                                 "the group")
        ops = trace.programs[prog].ops
        for n in range(min(len(seq), len(ref_seq))):
            a, b = ref_ops[ref_seq[n]], ops[seq[n]]
            assert isinstance(a, CollectiveOp) and isinstance(b, CollectiveOp)
            if _signature(a) != _signature(b):
                raise TraceError(field=f"programs[{ref_prog}].ops[{ref_seq[n]}]", value=a.id,
                                 rule=f"is collective #{n + 1} of rank {ref_rank} on the {label}: {_describe(a)}; "
                                      f"but member rank {rank} issues {_describe(b)} as its #{n + 1} "
                                      f"(programs[{prog}].ops[{seq[n]}] '{b.id}')",
                                 fix="make every member of a group issue the same collectives (op, size, root, "
                                     "algorithm) in the same order")
        if len(seq) != len(ref_seq):
            longer, lp, lr, other_rank, count = (ref_seq, ref_prog, ref_rank, rank, len(seq)) \
                if len(ref_seq) > len(seq) else (seq, prog, rank, ref_rank, len(ref_seq))
            j = longer[count]
            raise TraceError(field=f"programs[{lp}].ops[{j}]", value=trace.programs[lp].ops[j].id,
                             rule=f"is collective #{count + 1} of rank {lr} on the {label}, but member rank "
                                  f"{other_rank} issues only {count} collective{'s' if count != 1 else ''} there",
                             fix="give every member of the group the same number of collectives on it")


# --------------------------------------------------------------------------- point-to-point


def _check_point_to_point(trace: Trace, peers: dict[tuple[int, int | str], list[int]]) -> None:
    """Every send has its recv (the n-th of a source, destination and tag matches the n-th) of the same size."""
    if not _point_to_point_matches(trace, peers):
        _point_to_point_error(trace, peers)


def _point_to_point_matches(trace: Trace, peers: dict[tuple[int, int | str], list[int]]) -> bool:
    """True when the sends and recvs pair up with equal sizes (the check of :func:`_point_to_point_error`, in bulk).

    Sends sorted by (source, destination, tag, program, op) and recvs sorted the same way pair the
    n-th send of a channel with its n-th recv, in list order: the two sorted tables must agree on the
    channel of every row and on its size.
    """
    sides: dict[str, list[tuple[np.ndarray, np.ndarray, int, int, int, float]]] = {"send": [], "recv": []}
    for p, program in enumerate(trace.programs):
        ranks: np.ndarray | None = None
        resolved: dict[Any, np.ndarray] = {}
        for j, op in enumerate(program.ops):
            if op.kind not in sides:
                continue
            if ranks is None:
                ranks = np.asarray(program.rank_list(), dtype=np.int64)
            other = resolved.get(op.peer)
            if other is None:
                other = resolved[op.peer] = np.asarray(peers[(p, op.peer)], dtype=np.int64)
            src, dst = (ranks, other) if op.kind == "send" else (other, ranks)
            sides[op.kind].append((src, dst, int(op.tag), p, j, float(op.bytes)))
    tables = []
    for rows in sides.values():
        if not rows:
            tables.append(np.empty((5, 0)))
            continue
        counts = [len(r[0]) for r in rows]
        columns = [np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]),
                   *(np.repeat(np.array([r[k] for r in rows]), counts) for k in (2, 3, 4))]
        size = np.repeat(np.array([r[5] for r in rows]), counts)
        order = np.lexsort(columns[::-1])
        tables.append(np.stack([*(c[order] for c in columns[:3]), size[order]]))
    sent, received = tables
    return sent.shape == received.shape and bool(np.array_equal(sent, received))


def _point_to_point_error(trace: Trace, peers: dict[tuple[int, int | str], list[int]]) -> None:
    sends: dict[tuple[int, int, int], list[tuple[int, int]]] = defaultdict(list)
    recvs: dict[tuple[int, int, int], list[tuple[int, int]]] = defaultdict(list)
    for p, program in enumerate(trace.programs):
        p2p = [(j, op, peers[(p, op.peer)]) for j, op in enumerate(program.ops) if isinstance(op, (SendOp, RecvOp))]
        if not p2p:
            continue
        for r, rank in enumerate(program.rank_list()):
            for j, op, resolved in p2p:
                peer = resolved[r]
                if isinstance(op, SendOp):
                    sends[(rank, peer, op.tag)].append((p, j))
                else:
                    recvs[(peer, rank, op.tag)].append((p, j))
    for key in sorted(set(sends) | set(recvs)):
        src, dst, tag = key
        out, into = sends.get(key, []), recvs.get(key, [])
        for (sp, sj), (rp, rj) in zip(out, into, strict=False):
            s_op, r_op = trace.programs[sp].ops[sj], trace.programs[rp].ops[rj]
            assert isinstance(s_op, SendOp) and isinstance(r_op, RecvOp)
            if s_op.bytes != r_op.bytes:
                raise TraceError(field=f"programs[{sp}].ops[{sj}].bytes", value=s_op.bytes,
                                 rule=f"is the size of a send from rank {src} to rank {dst} (tag {tag}) whose "
                                      f"matching recv programs[{rp}].ops[{rj}] '{r_op.id}' expects "
                                      f"{format_bytes(r_op.bytes)}",
                                 fix="give the send and its recv the same size")
        if len(out) > len(into):
            sp, sj = out[len(into)]
            op = trace.programs[sp].ops[sj]
            raise TraceError(field=f"programs[{sp}].ops[{sj}]", value=op.id,
                             rule=f"is send #{len(into) + 1} from rank {src} to rank {dst} with tag {tag}, but "
                                  f"rank {dst} posts only {len(into)} matching recv{'s' if len(into) != 1 else ''}",
                             fix=f"add a recv from rank {src} with tag {tag} to rank {dst}'s program, or remove "
                                 "the send")
        if len(into) > len(out):
            rp, rj = into[len(out)]
            op = trace.programs[rp].ops[rj]
            raise TraceError(field=f"programs[{rp}].ops[{rj}]", value=op.id,
                             rule=f"is recv #{len(out) + 1} on rank {dst} from rank {src} with tag {tag}, but "
                                  f"rank {src} posts only {len(out)} matching send{'s' if len(out) != 1 else ''}",
                             fix=f"add a send to rank {dst} with tag {tag} to rank {src}'s program, or remove "
                                 "the recv")
