"""A small helper that appends ops to a program and keeps ids unique (used by the generators)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from commsim.workloads._costs import Cost
from commsim.workloads.trace import (
    AllocOp,
    CollectiveOp,
    ComputeOp,
    DelayOp,
    FreeOp,
    Program,
    RecvOp,
    SendOp,
    _OpBase,
)

__all__ = ["ProgramBuilder"]


class ProgramBuilder:
    """Collects the ops of one program in issue order.

    Ops are created with ``model_construct`` (no re-validation): the generators
    compute every value themselves, and :func:`~commsim.workloads.validate_trace`
    checks the finished trace.
    """

    def __init__(self, name: str, ranks: list[int] | str, *, dtype: str) -> None:
        self.name = name
        self.ranks = ranks
        self.dtype = dtype
        self.ops: list[_OpBase] = []
        self._ids: set[str] = set()
        self._last: dict[str, str] = {}

    def _add(self, op: _OpBase) -> str:
        if op.id in self._ids:
            raise AssertionError(f"generator bug: op id {op.id!r} used twice in program {self.name!r}")
        self._ids.add(op.id)
        self.ops.append(op)
        self._last[op.stream] = op.id
        return op.id

    @staticmethod
    def _deps(deps: Iterable[str | None]) -> list[str]:
        out: list[str] = []
        for dep in deps:
            if dep is not None and dep not in out:
                out.append(dep)
        return out

    def compute(self, op_id: str, cost: Cost, *, deps: Iterable[str | None] = (), tags: dict[str, Any],
                stream: str = "compute") -> str:
        """Append a compute op with ``cost``; return its id."""
        return self._add(ComputeOp.model_construct(
            id=op_id, stream=stream, deps=self._deps(deps), tags=tags, flops=float(cost.flops),
            bytes=float(cost.bytes), dtype=self.dtype, kernel=cost.kernel, gemms=[tuple(g) for g in cost.gemms],
            launches=cost.launches))

    def collective(self, op_id: str, op: str, nbytes: float, group: str, *, deps: Iterable[str | None] = (),
                   tags: dict[str, Any], stream: str, algorithm: str = "auto") -> str:
        """Append a collective on communicator ``group``; return its id."""
        return self._add(CollectiveOp.model_construct(
            id=op_id, stream=stream, deps=self._deps(deps), tags=tags, op=op, bytes=float(nbytes), group=group,
            algorithm=algorithm))

    def send(self, op_id: str, peer: str, nbytes: float, tag: int, *, deps: Iterable[str | None] = (),
             tags: dict[str, Any], stream: str) -> str:
        """Append a send to ``peer``; return its id."""
        return self._add(SendOp.model_construct(
            id=op_id, stream=stream, deps=self._deps(deps), tags=tags, peer=peer, bytes=float(nbytes), tag=tag))

    def recv(self, op_id: str, peer: str, nbytes: float, tag: int, *, deps: Iterable[str | None] = (),
             tags: dict[str, Any], stream: str) -> str:
        """Append a recv from ``peer``; return its id."""
        return self._add(RecvOp.model_construct(
            id=op_id, stream=stream, deps=self._deps(deps), tags=tags, peer=peer, bytes=float(nbytes), tag=tag))

    def alloc(self, op_id: str, buffer: str, nbytes: float, *, deps: Iterable[str | None] = (),
              tags: dict[str, Any], stream: str = "compute") -> str:
        """Append an allocation of ``nbytes`` named ``buffer`` on ``stream``; return its id."""
        return self._add(AllocOp.model_construct(id=op_id, stream=stream, deps=self._deps(deps), tags=tags,
                                                 buffer=buffer, bytes=float(nbytes)))

    def free(self, op_id: str, buffer: str, *, deps: Iterable[str | None] = (), tags: dict[str, Any],
             stream: str = "compute") -> str:
        """Append the release of ``buffer`` on ``stream``; return its id."""
        return self._add(FreeOp.model_construct(id=op_id, stream=stream, deps=self._deps(deps), tags=tags,
                                                buffer=buffer))

    def delay(self, op_id: str, seconds: float, *, deps: Iterable[str | None] = (), tags: dict[str, Any],
              stream: str = "compute") -> str:
        """Append an op that holds ``stream`` for ``seconds``; return its id."""
        return self._add(DelayOp.model_construct(id=op_id, stream=stream, deps=self._deps(deps), tags=tags,
                                                 seconds=float(seconds)))

    def last_on(self, stream: str) -> str | None:
        """The id of the last op appended on ``stream`` so far, or ``None``."""
        return self._last.get(stream)

    def build(self) -> Program:
        """The finished :class:`Program`."""
        return Program.model_construct(name=self.name, ranks=self.ranks, ops=list(self.ops))
