"""The training job C4 studies and its iteration time on a given fabric.

**Model.** ``gpt-22b`` (the catalog's 22B GPT of Korthikanti et al. 2022,
"Reducing Activation Recomputation in Large Transformer Models", Table 3: 48
layers, hidden 6144, 64 heads, sequence 2048), or any other catalog model.

**Iteration time: a two-level estimate.** Replaying a whole 512-GPU step takes
tens of seconds, too slow to repeat for every routing variant and every fault.
The step is split where the fabric enters:

1. *one data-parallel replica* (``tp x pp`` GPUs) is replayed with
   :func:`commsim.workloads.replay.replay` -- compute on the roofline devices,
   tensor-parallel collectives on NVLink, pipeline sends -- which gives the time
   of a micro-batch, when each gradient bucket becomes ready in the last
   backward pass and the optimizer's time. With ``pp = 1`` one micro-batch is
   replayed and the others are identical and sequential on the compute stream,
   so the step's compute path is ``(M - 1) x T_mb`` plus the replayed
   micro-batch; with ``pp > 1`` the replica is replayed with all ``M``
   micro-batches (1F1B);
2. *the data-parallel gradient all-reduce* runs on the real fabric as rail rings
   (:class:`~commsim.systems.c4.traffic.RingSim`, ECMP or planned), whose bytes
   per second do not depend on the message size; bucket ``b`` of ``s_b`` bytes
   then takes ``L + s_b x (T - L) / S`` (``T`` the simulated ring time for ``S``
   bytes, ``L`` its latency). The step is then a trace of delays
   (:func:`step_trace`: the compute path up to each bucket's ready time, the
   buckets, the optimizer) replayed by the shared replay engine, whose rules
   run the buckets one after another on the data-parallel stream from their
   ready times and start the optimizer when the last one and the backward pass
   are done.

The data-parallel traffic shares no resource with compute or NVLink (it runs
GPU -> PCIe -> NIC), so the split loses nothing in the fluid model; a
validation row compares it with a full replay.

>>> from commsim.workloads import parameter_count
>>> spec = load_model("gpt-22b")
>>> spec.layers, spec.hidden, round(parameter_count(spec) / 1e9, 1)
(48, 6144, 22.1)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field, model_validator

from commsim.collectives import CollectiveConfig
from commsim.config import StrictModel
from commsim.errors import ConfigError
from commsim.network.generators import switch
from commsim.network.topology import Topology
from commsim.simulation import Simulation
from commsim.units import Bytes
from commsim.workloads import Dtype, load_model, training_trace
from commsim.workloads.replay import Replay
from commsim.workloads.trace import DelayOp, Program, Trace

__all__ = ["JobModel", "ComputeProfile", "compute_profile", "iteration_time",
           "step_trace", "BucketTime"]

BucketTime = Callable[[np.ndarray], np.ndarray]
"""Time (s) of the data-parallel all-reduce of each bucket size (bytes) given."""


class JobModel(StrictModel):
    """What the training job runs (defaults: the 22B GPT on 512 GPUs).

    Attributes
    ----------
    model:
        A catalog name (default ``gpt-22b``).
    tp, pp:
        Tensor-parallel degree (default 8: one server) and pipeline stages (default 1);
        the data-parallel degree follows from the job's GPUs.
    micro_batch_size:
        Sequences per micro-batch (default 1).
    global_batch:
        Sequences per step (default 2048: 4.2 M tokens of 2048, the usual 2-4 M-token
        batch of LLM pre-training; not fitted to any claim).
    seq_len:
        Tokens per sequence (default: the model's, 2048 for gpt-22b).
    grad_dtype:
        Gradient element type of the data-parallel all-reduce (default fp32, Megatron's default).
    bucket_size:
        Gradient bucket size (default 25 MiB).
    """

    model: str = "gpt-22b"
    tp: Annotated[int, Field(ge=1)] = 8
    pp: Annotated[int, Field(ge=1)] = 1
    micro_batch_size: Annotated[int, Field(ge=1)] = 1
    global_batch: Annotated[int, Field(ge=1)] = 2048
    seq_len: Annotated[int, Field(ge=1)] | None = None
    grad_dtype: Dtype = "fp32"
    bucket_size: Annotated[Bytes, Field(gt=0)] = 25 * 2**20

    @model_validator(mode="after")
    def _known_model(self) -> JobModel:
        load_model(self.model)   # an unknown name fails listing the catalog
        return self

    def micro_batches(self, dp: int) -> int:
        """Micro-batches per step for data-parallel degree ``dp``."""
        per = self.global_batch / (dp * self.micro_batch_size)
        if per != int(per) or per < 1:
            raise ConfigError(field="job.global_batch", value=self.global_batch,
                              rule=f"is not a whole number of micro-batches of {self.micro_batch_size} on dp={dp}",
                              fix=f"use a multiple of {dp * self.micro_batch_size}")
        return int(per)


@dataclass(frozen=True)
class ComputeProfile:
    """What one data-parallel replica does in a step, from a replay (seconds, bytes).

    Per pipeline stage: ``backward_end`` (end of its last compute or tensor-parallel
    op before the optimizer), ``optimizer`` (the optimizer's duration) and its
    gradient buckets (``bucket_bytes``, ``bucket_ready``), all for the full step
    of ``micro_batches`` micro-batches.
    """

    micro_batches: int
    micro_batch_time: float
    backward_end: tuple[float, ...]
    optimizer: tuple[float, ...]
    bucket_bytes: tuple[np.ndarray, ...]
    bucket_ready: tuple[np.ndarray, ...]
    tokens_per_step: float
    dp_bytes: tuple[float, ...]
    replayed_micro_batches: int

    def scaled(self, factor: float) -> ComputeProfile:
        """The same step with every compute time ``factor`` times longer (a straggler sets the pace)."""
        return ComputeProfile(
            micro_batches=self.micro_batches, micro_batch_time=self.micro_batch_time * factor,
            backward_end=tuple(t * factor for t in self.backward_end),
            optimizer=tuple(t * factor for t in self.optimizer), bucket_bytes=self.bucket_bytes,
            bucket_ready=tuple(r * factor for r in self.bucket_ready), tokens_per_step=self.tokens_per_step,
            dp_bytes=self.dp_bytes, replayed_micro_batches=self.replayed_micro_batches)


_CACHE: dict[str, ComputeProfile] = {}


def _fingerprint(topology: Topology, devices: list[str], job: JobModel, dp: int, extra: Any) -> str:
    graph = topology.graph
    links = sorted((a, b, d["bandwidth"], d["latency"]) for a, b, d in graph.edges(data=True)
                   if a in devices or b in devices)
    specs = [str(graph.nodes[d].get("device")) for d in devices]
    return json.dumps([job.model_dump(mode="json"), dp, links, specs, repr(extra)], default=str)


def compute_profile(topology: Topology, job: JobModel, dp: int, *,
                    collective: CollectiveConfig | None = None, replay_micro_batches: int | None = None
                    ) -> ComputeProfile:
    """Replay one data-parallel replica of ``job`` (data-parallel degree ``dp``) on ``topology``'s first GPUs.

    ``replay_micro_batches`` forces how many micro-batches are replayed (default:
    1 when ``pp = 1``, all otherwise). Results are cached per topology, job and ``dp``.
    """
    spec = load_model(job.model)
    width = job.tp * job.pp
    devices = topology.devices[:width]
    if len(devices) < width:
        raise ConfigError(field="job.tp", value=job.tp, rule=f"x pp={job.pp} needs {width} GPUs per replica",
                          fix=f"use tp x pp <= {len(topology.devices)}")
    M = job.micro_batches(dp)
    replayed = replay_micro_batches or (1 if job.pp == 1 else M)
    if replayed != M and job.pp != 1:
        raise ConfigError(field="replay_micro_batches", value=replayed, rule="can differ from the step's "
                          "micro-batches only without pipeline parallelism", fix="leave it unset for pp > 1")
    config = collective or CollectiveConfig(mode="flows", record="none")
    key = _fingerprint(topology, devices, job, dp, (replayed, config))
    if key in _CACHE:
        return _CACHE[key]
    common = dict(tp=job.tp, pp=job.pp, micro_batch_size=job.micro_batch_size, seq_len=job.seq_len,
                  grad_dtype=job.grad_dtype, bucket_size=job.bucket_size, track_memory=False,
                  num_micro_batches=replayed)
    single = training_trace(spec, dp=1, **common)
    paired = training_trace(spec, dp=2, **common)   # the same step with its data-parallel buckets
    sim = Simulation(topology, record_usage=False)
    out = Replay(sim, single, devices=devices, collective=config, record="none").run()
    ops = out.ops
    backward_end, optimizer, buckets, ready, dp_bytes = [], [], [], [], []
    for stage, program in enumerate(paired.programs):
        mine = ops[ops["cohort"] == stage]
        end_of = dict(zip(mine["op_id"], mine["end"], strict=True))
        opt = mine[mine["op_id"] == "optimizer"]
        optimizer.append(float(opt["end"].iloc[0] - opt["start"].iloc[0]))
        work = mine[(mine["op_id"] != "optimizer") & (mine["stream"] != "dp_comm")]
        backward_end.append(float(work["end"].max()))
        sizes, times = [], []
        for op in program.ops:
            if op.kind == "collective" and op.stream == "dp_comm":
                sizes.append(float(op.bytes))
                times.append(max(end_of[d] for d in op.deps if d in end_of))
        buckets.append(np.array(sizes))
        ready.append(np.array(times))
        dp_bytes.append(float(sum(sizes)))
    t_mb = float(backward_end[0]) if job.pp == 1 else float("nan")
    if replayed != M:
        shift = (M - replayed) * t_mb
        backward_end = [b + shift for b in backward_end]
        ready = [r + shift for r in ready]
    tokens = float(job.global_batch * (job.seq_len or spec.default_seq_len))
    profile = ComputeProfile(micro_batches=M, micro_batch_time=t_mb, backward_end=tuple(backward_end),
                             optimizer=tuple(optimizer), bucket_bytes=tuple(buckets), bucket_ready=tuple(ready),
                             tokens_per_step=tokens, dp_bytes=tuple(dp_bytes), replayed_micro_batches=replayed)
    _CACHE[key] = profile
    return profile


def step_trace(profile: ComputeProfile, durations: list[np.ndarray]) -> Trace:
    """The step as the fabric sees it, one program per pipeline stage, with buckets of ``durations`` seconds.

    A stage's compute path is a chain of delays on its ``compute`` stream ending at
    each bucket's ready time, then at the end of its backward pass; bucket ``b`` is a
    delay of ``durations[stage][b]`` on the ``dp_comm`` stream that waits for the
    compute reaching its ready time; the optimizer follows the backward pass on the
    compute stream and waits for the last bucket.
    """
    programs = []
    for stage, (ready, spent) in enumerate(zip(profile.bucket_ready, durations, strict=True)):
        ops: list[Any] = []
        mark: dict[float, str] = {}
        clock = 0.0
        for t in sorted(set(ready.tolist())):
            mark[t] = f"ready{len(mark)}"
            ops.append(DelayOp(id=mark[t], seconds=max(0.0, t - clock)))
            clock = max(clock, t)
        ops.append(DelayOp(id="backward", seconds=max(0.0, profile.backward_end[stage] - clock)))
        buckets = [DelayOp(id=f"bucket{b}", stream="dp_comm", seconds=float(d), deps=[mark[r]])
                   for b, (r, d) in enumerate(zip(ready.tolist(), np.asarray(spent, dtype=float).tolist(),
                                                  strict=True))]
        ops += [*buckets, DelayOp(id="optimizer", seconds=profile.optimizer[stage],
                                  deps=[buckets[-1].id] if buckets else [])]
        programs.append(Program(name=f"stage{stage}", ranks=[stage], ops=ops))
    return Trace(name="c4 step", ranks=len(programs), programs=programs)


def iteration_time(profile: ComputeProfile, bucket_time: BucketTime | list[BucketTime]) -> tuple[float, float]:
    """Step time and exposed data-parallel time (seconds) with buckets taking ``bucket_time(bytes)``.

    ``bucket_time`` is one function for every stage or one per stage. The step is
    :func:`step_trace` replayed by :class:`~commsim.workloads.replay.Replay` (its
    delays only: no device or link takes part), so the replay's rules order it:
    buckets in turn on the data-parallel stream, each from when it is ready, the
    optimizer after the last bucket and the backward pass. The exposed time is that
    of the stage that finishes last: its optimizer's start past its backward pass.
    """
    funcs = bucket_time if isinstance(bucket_time, list) else [bucket_time] * len(profile.backward_end)
    durations = [fn(sizes) if sizes.size else np.zeros(0) for fn, sizes in zip(funcs, profile.bucket_bytes,
                                                                                strict=True)]
    trace = step_trace(profile, durations)
    replay = Replay(Simulation(switch(n=trace.ranks), record_usage=False), trace, record="none")
    replay.run_to_end()
    step, exposed = 0.0, 0.0
    for stage in range(trace.ranks):
        index, start, end = replay.op_times(stage)
        total = float(end[index["optimizer"]])
        if total > step:
            step, exposed = total, float(start[index["optimizer"]] - end[index["backward"]])
    return step, exposed
