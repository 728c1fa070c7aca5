"""Replay a trace on a simulation: streams, dependencies, rendezvous, contention.

Each stream of a program is an in-order queue; an op starts when the op before
it on its stream and all its ``deps`` have finished. Collectives start when every
member of the group has reached them and run on the collective engine;
send/recv pairs start when both sides are posted. Compute, memory traffic and
communication contend through the fluid kernel.

**Cohorts.** The ranks of one program run its ops together as a *cohort* (the
default, ``lockstep=True``): op ``i`` starts on all of them at once, as one batch
for the kernel, and each rank's own finish time is recorded. This is exact when
the ranks of a program behave alike (the SPMD case) and keeps a 1,024-GPU step
to thousands of batches instead of millions of events. It is a stated
assumption: when ranks of one program differ (a straggler among them), an op
waits for the slowest before the next one starts on all of them.
``lockstep=False`` runs every rank as its own cohort (exact per rank, slower).

**Plug-ins.** A mechanism the trace does not spell out (a memory scheduler that
loads weights from disk into a window, a cache, a rate limiter) joins the replay
as a :class:`ReplayPlugin`: it may hold the start of the whole trace
(``start``), hold each op before it begins (``before``: the op starts when the
returned event fires; the wait is not part of the op's time) and learn when an
op has finished (``after``, before its dependents are released).

**Modules**, one concern each: :mod:`.plan` (per program its op order,
dependencies and rendezvous keys; per cohort its ops' state), :mod:`.ops` (starting
ops, the local op handlers: compute, delay, memory, disk reads), :mod:`.matching`
(rendezvous of collectives and send/recv pairs across ranks, batched per instant),
:mod:`.communication` (matched collectives on the collective engine, pairs on the
network), :mod:`.metrics` (step time, busy, exposed communication, overlap,
critical path) and :mod:`.engine` (:class:`Replay`, which drives them and
records completions).

>>> from commsim.simulation import Simulation
>>> from commsim.network.loader import load_topology
>>> from commsim.workloads.trace import Trace, Program, ComputeOp, CollectiveOp
>>> trace = Trace(ranks=2, communicators={"world": [[0, 1]]}, programs=[
...     Program(name="step", ranks="0:2", ops=[
...         ComputeOp(id="gemm", flops=989e12 * 0.7 * 1e-3),
...         CollectiveOp(id="ar", op="all_reduce", bytes=50e6, group="world", algorithm="ring", deps=["gemm"]),
...     ])])
>>> sim = Simulation(load_topology("switch:2,50GB/s,1us"))
>>> out = replay(sim, trace)
>>> round(out.step_time * 1e3, 4)     # 1 ms of compute, then 2 steps of 25 MB at 50 GB/s (+2 us each)
2.004
"""

from commsim.workloads.replay.communication import DEFAULT_ALGORITHMS
from commsim.workloads.replay.engine import Replay, ReplayPlugin, replay
from commsim.workloads.replay.metrics import ReplayResult

__all__ = ["Replay", "ReplayPlugin", "ReplayResult", "replay", "DEFAULT_ALGORITHMS"]
