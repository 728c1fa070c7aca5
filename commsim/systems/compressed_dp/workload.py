"""Data-parallel training steps as a commsim trace, replayed on the shared engine.

:func:`step_trace` writes ``steps`` training steps of a :class:`~.plan.StepPlan` as a
:class:`~commsim.workloads.trace.Trace` of the shared data-parallel workload
(:func:`commsim.workloads.data_parallel.training_trace`; the study writes each bucket's
sync). Every rank runs three queues, as a CUDA training process does:

- ``compute``: the forward pass (one kernel), then one backward kernel per bucket
  from the last block to the first (:func:`commsim.workloads.data_parallel.catalog_layout`),
  bf16 device kernels;
- ``compression``: the bucket's compression, server and decompression kernels
  (:mod:`.plan`) on the same device, where they share compute and memory
  bandwidth with the backward kernels by max-min fairness (``compression_dtype``);
- ``comm``: the bucket's collectives over the ``dp`` communicator, from the
  collective registry (all-reduce, hierarchical or ring all-gather, a star push
  (``reduce``) and reply (``broadcast``) to and from the server rank, or the
  sharded server's all-to-all and all-gather), one at a time as NCCL runs one
  communicator's collectives.

A bucket is released when its backward kernel ends (``release="backward"``) or
when the whole backward pass has ended (``"after_backward"``); its ops are a
chain (stage kernel, its collectives, the next stage, ..., the final kernel).
Compression and collectives run in *issue order* — the order they become ready,
known only at run time — through the
:class:`~commsim.workloads.issue_order.IssueQueues` plug-in; each bucket's chain
sits on trace streams of its own (``compression.s<step>.b<bucket>``, and one
``comm.s<step>.b<bucket>.t<stage>.<i>`` per collective: a stage's collectives are
issued together). Ranks run in lockstep: ranks whose kernels differ
(a star server's aggregation) form a program of their own, and a queued op
starts when every program holding it is ready. The step's ``sync`` op ends when
its last bucket has; the forward pass of step ``s`` waits for the sync of step
``s - lag`` (``sync``: lag 1; ``co2``: ``tau + 1``, CO2's asynchronous all-reduce
overlapped with ``tau`` further steps).

:func:`simulate` measures the iteration time: ``sync`` replays one step from idle
(every step is a copy of it); ``co2`` replays until the run repeats itself
(:func:`commsim.workloads.periodic.replay_until_periodic`: a pattern of 1 to
:data:`MAX_PERIOD` steps seen :data:`MEASURE_STEPS` times, with the syncs'
completions measured from their steps' starts repeating too) and averages the
pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from commsim.collectives import CollectiveConfig
from commsim.devices.device import kernel_time
from commsim.errors import ConfigError
from commsim.network.inter_node import Fabric
from commsim.systems.compressed_dp.plan import StepPlan
from commsim.systems.compressed_dp.schedules import CollectivePlan
from commsim.workloads.data_parallel import LayerLayout, step_times, training_trace
from commsim.workloads.issue_order import IssueQueues
from commsim.workloads.periodic import replay_until_periodic
from commsim.workloads.replay import Replay
from commsim.workloads.trace import CollectiveOp, ComputeOp, DelayOp, Trace

__all__ = ["RunStats", "simulate", "step_trace", "compute_time", "device_of", "MEASURE_STEPS", "MAX_CO2_STEPS",
           "MAX_PERIOD"]

MEASURE_STEPS = 3
"""Times the ``co2`` variant's repeating pattern must be seen (and is averaged over)."""
MAX_CO2_STEPS = 60
"""Steps after the first wait at which a ``co2`` run stops even if it has not become periodic."""
MAX_PERIOD = 4
"""Longest period (steps) a ``co2`` run is recognised to repeat with (syncs of consecutive steps interleave)."""


@dataclass
class RunStats:
    """What one run measured (seconds; bytes per rank and step).

    ``result`` is the replay's :class:`~commsim.workloads.replay.ReplayResult` when recorded.
    """

    variant: str
    tau: int
    steps: int
    iteration_time: float
    step_start: np.ndarray
    stall: float
    wire_bytes: float
    transfers: int
    first_send: dict[int, float] = field(default_factory=dict)
    periodic: bool = True
    period: int = 1
    result: Any = None


def device_of(topology: Any, node: str) -> Any:
    """The :class:`~commsim.devices.spec.DeviceSpec` of device ``node`` (presets resolved)."""
    from commsim.devices.spec import device_spec

    return device_spec(topology.device_spec(node), field=f"devices.{node}")


def compute_time(layout: LayerLayout, spec: Any) -> float:
    """Forward (one kernel) plus backward kernels of one step alone on the device (seconds, bf16)."""
    forward, backward = layout.forward, layout.backward[0]
    total = kernel_time(spec, float(forward.flops.sum()), float(forward.bytes.sum()), "bf16")
    for f, b in zip(backward.flops.tolist(), backward.bytes.tolist(), strict=True):
        total += kernel_time(spec, f, b, "bf16")
    return total


# --------------------------------------------------------------------------- the trace


def _programs(plan: StepPlan, n: int) -> list[list[int]]:
    """Ranks grouped by the kernels they run (every rank alike, or a star server apart)."""
    work = np.concatenate([s.kernel for b in plan.buckets for s in b.stages] + [b.finish for b in plan.buckets])
    groups: dict[bytes, list[int]] = {}
    for r in range(n):
        groups.setdefault(work[:, r].tobytes(), []).append(r)
    return list(groups.values())


def step_trace(plan: StepPlan, layout: LayerLayout, coll: CollectivePlan, *, steps: int, lag: int,
               release: str = "backward", dtype: str = "fp32") -> Trace:
    """``steps`` training steps of ``plan`` and the start of the next (see the module docstring)."""
    groups = _programs(plan, coll.n)
    programs = [("ranks" if len(groups) == 1 else ("server" if coll.root in members else "workers"), members)
                for members in groups]

    def sync(s: int, b: int, after: str, rank: int) -> list[Any]:
        return _bucket(plan, coll, s, b, rank, dtype, after=after)

    return training_trace(layout, sync, steps=steps, ranks=coll.n, communicators={"dp": [list(range(coll.n))]},
                          programs=programs, overlap=lag - 1, wait="step", release=release, fused_forward=True,
                          marker=True, tags={"queue": "compute"}, name=f"{plan.compressor} data-parallel")


def _bucket(plan: StepPlan, coll: CollectivePlan, s: int, b: int, rank: int, dtype: str, *,
            after: str) -> list[Any]:
    """Bucket ``b``'s chain of ops in step ``s`` (for the program of ``rank``), released by op ``after``.

    A stage's collectives are issued together once its kernel has ended (they queue in
    order); the next stage, or the final kernel, waits for the last of them.
    """
    bucket = plan.buckets[b]
    lane = f"s{s}.b{b}"
    tags = {"step": s, "bucket": b}
    chain: list[Any] = []
    ready = [after]

    def kernel(work: np.ndarray, op_id: str, name: str) -> None:
        if work[:, rank].any():
            chain.append(ComputeOp(id=op_id, stream=f"compression.{lane}", deps=ready, flops=float(work[0, rank]),
                                   bytes=float(work[1, rank]), dtype=dtype, tags={**tags, "queue": "compression"},
                                   name=name))
        elif work.any():  # only other ranks work (a star server): this rank waits for it where they do
            chain.append(DelayOp(id=op_id, stream=f"compression.{lane}", deps=ready, seconds=0.0,
                                 tags={**tags, "queue": "compression"}, name=name))
        else:
            return
        ready[:] = [op_id]

    for k, stage in enumerate(bucket.stages):
        server = any(t.kind == "reply" for t in stage.transfers)
        kernel(stage.kernel, f"{lane}.k{k}", f"{'server' if server else 'compress'} block {b} stage {k}")
        # each on a stream of its own: they join the comm queue together, in list order
        sent = [CollectiveOp(id=f"{lane}.t{k}.{i}", stream=f"comm.{lane}.t{k}.{i}", group="dp", deps=list(ready),
                             tags={**tags, "queue": "comm"}, name=f"step {s} block {b} {item.kind} {item.label}",
                             **coll.collective(item.kind, item.nbytes))
                for i, item in enumerate(stage.transfers) if item.nbytes > 0]
        chain += sent
        if sent:
            ready[:] = [sent[-1].id]
    kernel(bucket.finish, f"{lane}.finish", f"decompress block {b}")
    return chain


# --------------------------------------------------------------------------- the runs


def simulate(topology: Any, layout: LayerLayout, plan: StepPlan, collectives: CollectivePlan, *, group: list[str],
             port_bandwidth: float | None = None, unlimited: bool = False, fabric: Fabric | None = None,
             variant: str = "sync", tau: int = 1, release: str = "backward", compression_dtype: str = "fp32",
             config: CollectiveConfig | None = None, record: bool = False, steps: int | None = None,
             seed: int = 0, faults: list[Any] | None = None) -> RunStats:
    """Replay ``plan`` on ``topology`` and measure the iteration time (see the module docstring).

    ``port_bandwidth`` (bytes/s per NIC port, None: the topology's) scales the inter-node
    links through ``fabric``; ``unlimited`` makes every link infinitely fast. ``steps``
    overrides the number of replayed steps (timelines). ``faults`` (:mod:`commsim.faults`
    models) happen at their times from the first step's start, in every replay.
    """
    from commsim.simulation import Simulation

    if variant not in ("sync", "co2"):
        raise ConfigError(field="variant", value=variant, rule="is not a variant", fix="use sync or co2")
    if release not in ("backward", "after_backward"):
        raise ConfigError(field="release", value=release, rule="is not a release mode",
                          fix="use backward or after_backward")
    if len(group) != collectives.n:
        raise ConfigError(field="ranks", value=len(group), rule=f"do not match the collectives' {collectives.n} ranks",
                          fix="build the collective plan for the group")
    lag = 1 if variant == "sync" else int(tau) + 1
    last: dict[str, Any] = {}

    def run(count: int) -> tuple[np.ndarray, np.ndarray, Any]:
        sim = Simulation(topology, seed=seed, record_usage=record, name=f"{plan.compressor} {variant}")
        if unlimited:
            Fabric.unlimited(sim)
        elif port_bandwidth is not None:
            (fabric or Fabric.of(topology)).apply(sim, port_bandwidth)
        if faults:
            sim.schedule_faults(faults)
        trace = step_trace(plan, layout, collectives, steps=count, lag=lag, release=release, dtype=compression_dtype)
        replay = Replay(sim, trace, devices=group, collective=config, plugins=[IssueQueues()],
                        record="all" if record else "none")
        result = replay.run() if record else replay.run_to_end()
        times = step_times(replay, layout, count, fused_forward=True)
        last.update(replay=replay, sim=sim, result=result, count=count, times=times)
        return times.starts, times.settle, replay

    if steps is not None or variant == "sync":
        count = int(steps) if steps is not None else 1
        starts, _, _ = run(count)
        window = max(1, min(count, 1 if variant == "sync" else MEASURE_STEPS))
        measured = count
        iteration = float((starts[-1] - starts[-1 - window]) / window)
        periodic, period = True, 1
    else:
        found = replay_until_periodic(run, lag=lag, limit=lag + MAX_CO2_STEPS, max_period=MAX_PERIOD,
                                      repeats=MEASURE_STEPS)
        starts, measured, iteration = found.starts, found.steps, found.iteration
        periodic, period = found.periodic, found.period
    replay, sim, times = last["replay"], last["sim"], last["times"]
    stall = float(np.sum(starts[1:measured + 1] - times.compute_end[:measured]))
    per_step = sum(1 for op in replay.trace.programs[0].ops if op.kind == "collective") / last["count"]
    first_send: dict[int, float] = {}
    for op in replay.trace.programs[0].ops:
        if op.kind == "collective" and op.tags["step"] == 0:
            first_send.setdefault(int(op.tags["bucket"]), times.of(op.id)[0])
    return RunStats(variant=variant, tau=int(tau), steps=measured, iteration_time=iteration, step_start=starts,
                    stall=stall, wire_bytes=sim.network.bytes_sent / (collectives.n * last["count"]),
                    transfers=int(per_step * measured), first_send=first_send, periodic=periodic, period=period,
                    result=last["result"] if record else None)
