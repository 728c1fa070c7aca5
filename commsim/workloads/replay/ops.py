"""Op handlers of the replay that run on a cohort's own devices: compute, delay, memory, disk reads.

Communication ops go to the rendezvous (:mod:`.matching`) first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from simpy.events import AllOf

from commsim.devices.device import launch_delay, start_kernels
from commsim.errors import ConfigError, OutOfMemoryError, SimulationError
from commsim.workloads.replay.plan import _Cohort

__all__: list[str] = []


class _OpHandlers:
    """Starting ops and running the local ones (a part of :class:`~commsim.workloads.replay.Replay`)."""

    def _begin(self, cohort: _Cohort, i: int) -> None:
        if self.plugins:
            op = cohort.plan.ops[i]
            gates = [gate for plugin in self.plugins if (gate := plugin.before(self, cohort.ranks, op)) is not None]
            if gates:
                gate = gates[0] if len(gates) == 1 else AllOf(self.env, gates)
                gate.callbacks.append(lambda _ev: self._run_op(cohort, i))
                return
        self._run_op(cohort, i)

    def _run_op(self, cohort: _Cohort, i: int) -> None:
        op = cohort.plan.ops[i]
        cohort.start[i] = self.env.now
        kind = op.kind
        if kind == "compute":
            self._compute(cohort, i, op)
        elif kind == "delay":
            self.env.timeout(op.seconds).callbacks.append(lambda _ev: self._finish(cohort, i))
        elif kind in ("alloc", "free"):
            self._memory(cohort, i, op)
        elif kind == "disk_read":
            self._disk(cohort, i, op)
        elif kind == "collective":
            self._arrive(cohort, i, op)
        elif kind in ("send", "recv"):
            self._post(cohort, i, op)
        else:  # the trace model admits no other kind
            raise SimulationError(f"op kind {kind!r} cannot be replayed")

    def _per_rank(self, cohort: _Cohort, i: int) -> tuple[np.ndarray, Any]:
        """Per-rank end times of op ``i`` and the kernel callback that fills them and finishes the op."""
        n = len(cohort.devices)
        cohort.pending_parts[i] = n
        ends = np.full(n, math.nan)
        cohort.rank_end[i] = ends

        def parts_done(_ids: np.ndarray, tags: np.ndarray) -> None:
            ends[tags] = self.env.now
            cohort.pending_parts[i] -= tags.shape[0]
            if cohort.pending_parts[i] == 0:
                self._finish(cohort, i)

        return ends, parts_done

    def _compute(self, cohort: _Cohort, i: int, op: Any) -> None:
        if self.shortcuts is not None and self.shortcuts.compute and (op.flops or op.bytes):
            self._compute_alone(cohort, i, op)
            return
        devices = [self.sim.devices[d] for d in cohort.devices]
        n = len(devices)
        ends, parts_done = self._per_rank(cohort, i)
        shape = op.kernel_shape()
        overhead = launch_delay(devices[0].spec, shape)

        def launch(_ev: Any = None) -> None:
            start_kernels(devices, np.full(n, op.flops), np.full(n, op.bytes), dtype=op.dtype,
                          efficiency=op.efficiency, on_done=parts_done, kernel=shape,
                          describe=lambda tag: f"compute {op.id!r} on {cohort.devices[tag]}")

        if op.flops == 0 and op.bytes == 0:
            ends[:] = self.env.now
            self._finish(cohort, i)
        elif overhead > 0:
            self.env.timeout(overhead).callbacks.append(launch)
        else:
            launch()

    def _compute_alone(self, cohort: _Cohort, i: int, op: Any) -> None:
        """A compute op on devices nothing else uses: its roofline time, without the kernel (see ``fast``)."""
        assert self.shortcuts is not None
        longest, times = self.shortcuts.compute_times(cohort.index, [self.sim.devices[d] for d in cohort.devices]
                                                      if cohort.index not in self.shortcuts.known else None, op)
        begun = self.env.now
        if times is not None or self._recorded[cohort.index]:
            ends = np.full(len(cohort.ranks), begun + longest) if times is None else begun + times
            cohort.rank_end[i] = ends
        self.env.timeout(longest).callbacks.append(lambda _ev: self._finish(cohort, i))

    def _memory(self, cohort: _Cohort, i: int, op: Any) -> None:
        held = cohort.buffers.setdefault(op.buffer, [[] for _ in cohort.devices])
        if op.kind == "alloc":
            for k, (rank, node) in enumerate(zip(cohort.ranks.tolist(), cohort.devices, strict=True)):
                try:
                    held[k].append(self.sim.devices[node].memory.allocate(op.bytes, op.buffer))
                except OutOfMemoryError as exc:
                    raise OutOfMemoryError(f"{node} (rank {rank}, op {op.id!r})", exc.requested, exc.in_use,
                                           exc.capacity) from None
        else:
            for node, handles in zip(cohort.devices, cohort.buffers.pop(op.buffer), strict=True):
                for handle in handles:
                    self.sim.devices[node].memory.free(handle)
        self._finish(cohort, i)

    def _disk(self, cohort: _Cohort, i: int, op: Any) -> None:
        devices = [self.sim.devices[d] for d in cohort.devices]
        for device in devices:
            if device.disk_resource is None:
                raise ConfigError(field=f"devices.{device.name}.disk_read_bandwidth", rule="is not set",
                                  fix=f"give the device a disk to replay disk_read op {op.id!r}")
        n = len(devices)
        res = np.array([(d.disk_resource, d.memory_resource) for d in devices], dtype=np.int64).reshape(-1)
        indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
        _, parts_done = self._per_rank(cohort, i)
        self.sim.kernel.start(np.full(n, op.bytes), (indptr, res), tags=np.arange(n), on_done=parts_done,
                              describe=lambda tag: f"disk read {op.id!r} on {cohort.devices[tag]}")
