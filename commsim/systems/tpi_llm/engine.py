"""The inference run: prefill of a prompt, then decode, on simulated devices, disks and links.

One :class:`InferenceSetup` says what runs where; :func:`simulate_inference`
plays it on a :class:`~commsim.simulation.Simulation` and returns
:class:`InferenceStats`. Everything that takes time goes through the shared
models: kernels are roofline activities on the device's compute and DRAM
(``Device.compute``), weight loads read the device's disk into DRAM
(``Device.read_disk``, sharing DRAM bandwidth with the kernels), all-reduces
are collective schedules on the topology's links (``CollectiveRun``), the
input broadcast and pipeline hand-offs are network flows, and memory is the
device's :class:`~commsim.devices.MemoryPool` (which raises
``OutOfMemoryError`` beyond RAM + swap).

**Per device**, for each token (token 0 is the prefill of ``prompt_tokens``,
then one token at a time, each after the context so far):

1. a worker waits for the master's input (tensor parallel: the embedded
   tokens; pipeline: the previous stage's activations);
2. for each of its blocks: wait until the memory scheduler has loaded it (a
   wait is a *stall*); fault in the part of it that sits in swap, if any, at
   the device's swap bandwidth; run its kernel; then its synchronisation —
   after attention and FFN an all-reduce of ``T x hidden`` FP32 values over
   all devices (a rendezvous: it starts when the last device arrives); after
   the embedding the master sends the input to every worker; the head ends
   the token (its end is when the master has sampled it);
3. the block is released after its synchronisation (``release="after_sync"``,
   the paper's analysis) or right after its kernel (``"after_compute"``, as
   the public code does: it starts the next loads while the all-reduce runs).

**Start-up.** Before the prompt arrives (time ``t0``) every pinned block is
loaded and each windowed device has filled its window; TTFT counts from ``t0``
to the master's first sampled token, so a model that is loaded once is not
charged its load time per request (``startup`` reports it).

**Swap.** A device whose allocations exceed its RAM holds the excess in swap;
each block it runs first reads ``swapped / in_use`` of its bytes at the swap
bandwidth (a lower bound: evictions and LRU thrashing are not charged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import simpy
from simpy.core import StopSimulation
from simpy.events import Event

from commsim.collectives import CollectiveConfig, CollectiveRun
from commsim.collectives._schedule import Schedule
from commsim.devices.device import kernel_activity
from commsim.errors import CommsimError, ConfigError, OutOfMemoryError
from commsim.network.topology import Topology
from commsim.simulation import Simulation
from commsim.systems.tpi_llm.allreduce import allreduce_schedule, group_of
from commsim.systems.tpi_llm.hardware import SERVER, with_server
from commsim.systems.tpi_llm.partition import COMPUTE_BYTES, Block, block_work
from commsim.systems.tpi_llm.scheduler import SlidingWindow
from commsim.workloads.models import TransformerSpec

__all__ = ["BREAKDOWN", "InferenceSetup", "InferenceStats", "simulate_inference"]

BREAKDOWN = ("compute", "allreduce", "input_wait", "stall", "swap")
"""Where a device's time goes, per token (they add up to the token's time on the device)."""


@dataclass
class InferenceSetup:
    """What to run.

    Attributes
    ----------
    model:
        The transformer.
    topology:
        The network; ``devices`` are the nodes that run blocks, master first.
    blocks:
        Per device, its blocks in execution order for one token.
    mode:
        ``"tp"`` (tensor parallel, all-reduce after attention and FFN) or
        ``"pipeline"`` (stages in sequence, activations handed on).
    allreduce:
        ``star``, ``tree``, ``ring`` or ``ps`` (tensor parallel only).
    window:
        Blocks the scheduler keeps per device; ``None`` turns it off (everything pinned).
    pinned:
        Per device, block positions kept resident (an offloading baseline's budget).
    prefetch:
        Load ahead (the scheduler) or on demand (offloading).
    prompt_tokens, decode_tokens:
        Prompt length and how many tokens to decode after the first.
    file_bytes:
        Bytes per parameter on disk (2: FP16 checkpoint slices, converted to FP32 on load).
    staging:
        Hold the file-dtype copy of a block while it loads.
    runtime_memory:
        Bytes every device holds for its runtime (Python, PyTorch, buffers).
    release:
        ``"after_sync"`` or ``"after_compute"`` (see the module notes).
    tree_fanout:
        Fan-out of the ``tree`` all-reduce.
    collective:
        Per-step latency, efficiency and reduction cost of the all-reduces.
    record:
        Keep spans for the dashboard's timeline.
    """

    model: TransformerSpec
    topology: Topology
    devices: list[str]
    blocks: list[list[Block]]
    mode: Literal["tp", "pipeline"] = "tp"
    allreduce: str = "star"
    window: int | None = 2
    pinned: list[list[int]] | None = None
    prefetch: bool = True
    prompt_tokens: int = 16
    decode_tokens: int = 3
    file_bytes: float = 2.0
    staging: bool = True
    runtime_memory: float = 0.5e9
    release: Literal["after_sync", "after_compute"] = "after_sync"
    tree_fanout: int = 3
    collective: CollectiveConfig | None = None
    record: bool = False
    seed: int = 0


@dataclass
class InferenceStats:
    """What one run measured.

    ``ttft`` and ``token_latency`` (mean over the decode tokens) in seconds;
    ``token_times`` every token's latency (the first is the TTFT); ``peak_memory``
    per device in bytes (``peak_swapped`` of it in swap); ``breakdown`` per device
    and :data:`BREAKDOWN` category, seconds per decode token (``prefill`` the same
    for token 0); ``disk_busy`` seconds per decode token each device's disk
    reads; ``max_held`` the most windowed blocks a device held at once;
    ``status`` is ``"ok"`` or ``"out of memory"`` with ``message``.
    """

    status: str
    message: str = ""
    ttft: float = math.nan
    token_latency: float = math.nan
    token_times: list[float] = field(default_factory=list)
    startup: float = math.nan
    devices: list[str] = field(default_factory=list)
    peak_memory: np.ndarray = field(default_factory=lambda: np.zeros(0))
    peak_swapped: np.ndarray = field(default_factory=lambda: np.zeros(0))
    allocated: np.ndarray = field(default_factory=lambda: np.zeros(0))
    freed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    breakdown: np.ndarray = field(default_factory=lambda: np.zeros((0, len(BREAKDOWN))))
    prefill: np.ndarray = field(default_factory=lambda: np.zeros((0, len(BREAKDOWN))))
    disk_busy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    max_held: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bytes_loaded: np.ndarray = field(default_factory=lambda: np.zeros(0))
    needed_memory: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per device, bytes the run needs (its peak on devices that hold anything; set by the study)."""
    t0: float = 0.0
    token_ends: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def max_peak_memory(self) -> float:
        """Peak memory of the most loaded device, bytes (NaN when the run failed)."""
        return float(self.peak_memory.max()) if self.ok and self.peak_memory.size else math.nan


class _Run:
    """The processes of one run (internal)."""

    def __init__(self, setup: InferenceSetup) -> None:
        self.s = setup
        topo = setup.topology
        if setup.mode == "tp" and setup.allreduce == "ps" and SERVER not in topo.graph:
            topo = with_server(topo)
        self.sim = Simulation(topo, seed=setup.seed, routing="shortest", record_usage=setup.record)
        self.env: simpy.Environment = self.sim.env
        self.n = len(setup.devices)
        self.dev = [self.sim.devices[name] for name in setup.devices]
        self.tokens = 1 + setup.decode_tokens
        self.seq_len = setup.prompt_tokens + setup.decode_tokens
        base = setup.collective or CollectiveConfig()
        self.cfg = CollectiveConfig(step_latency=base.step_latency, bandwidth_efficiency=base.bandwidth_efficiency,
                                    reduction=base.reduction, dtype="fp32", mode=base.mode,
                                    launch_latency=base.launch_latency, record="rank" if setup.record else "none")
        self.group = group_of(setup.devices, setup.allreduce)
        self._schedules: dict[float, Schedule] = {}
        self._rendezvous: dict[tuple[int, str], tuple[list[int], Event]] = {}
        self.inputs = [[Event(self.env) for _ in range(self.n)] for _ in range(self.tokens)]
        self.returned = [Event(self.env) for _ in range(self.tokens)]
        self.token_end = [math.nan] * self.tokens
        self.acc = np.zeros((self.n, self.tokens, len(BREAKDOWN)))
        self.windows: list[SlidingWindow] = []
        self.fixed: list[list[int]] = [[] for _ in range(self.n)]
        self.t0 = math.nan
        self.error: CommsimError | None = None
        for d, device in enumerate(self.dev):
            blocks = setup.blocks[d]
            staging = [b.params * setup.file_bytes if setup.staging and setup.file_bytes < COMPUTE_BYTES else 0.0
                       for b in blocks]
            pinned = setup.pinned[d] if setup.pinned is not None else ()
            window = SlidingWindow(self.env, range(len(blocks)), self.tokens * len(blocks),
                                   [b.nbytes for b in blocks], staging, setup.window, self._loader(d), device.memory,
                                   pinned=pinned, prefetch=setup.prefetch, labels=[b.name for b in blocks])
            self.windows.append(window)
        if setup.mode == "tp" and self.n > 1:
            master = setup.devices[0]
            self.bcast_routes = self.sim.network.routes([master] * (self.n - 1), setup.devices[1:])

    # ------------------------------------------------------------------ pieces
    def _loader(self, d: int):
        device = self.dev[d]
        blocks = self.s.blocks[d]
        if device.disk_resource is None:
            raise ConfigError(field=f"devices.{device.name}.disk_read_bandwidth", rule="is not set, so weights "
                              "cannot be loaded from disk", fix="give the device a disk_read_bandwidth")
        res = [device.disk_resource, device.memory_resource]

        def load(block: int, use: int) -> Event:
            b = blocks[block]
            nbytes = b.params * self.s.file_bytes
            done = device.kernel.start([nbytes], [res], [[1.0, 1.0]]).done
            if self.s.record:
                start = self.env.now
                done.callbacks.append(lambda _ev: self.sim.recorder.span(
                    device.name, "io", "disk", f"load {b.name}", start, self.env.now, nbytes=nbytes))
            return done
        return load

    def _kernel(self, d: int, flops: float, nbytes: float) -> Event:
        """Start a roofline kernel on device ``d`` (one kernel activity, no process)."""
        device = self.dev[d]
        amount, (c_compute, c_memory) = kernel_activity(device.spec, flops, nbytes, "fp32", None)
        if c_memory > 0:
            return device.kernel.start([amount], [[device.compute_resource, device.memory_resource]],
                                       [[c_compute, c_memory]]).done
        return device.kernel.start([amount], [[device.compute_resource]], [[c_compute]]).done

    def _schedule(self, nbytes: float) -> Schedule:
        sched = self._schedules.get(nbytes)
        if sched is None:
            sched = allreduce_schedule(self.s.allreduce, self.n, nbytes, tree_fanout=self.s.tree_fanout)
            self._schedules[nbytes] = sched
        return sched

    def _allreduce(self, key: tuple[int, str], nbytes: float) -> Event:
        """Join the all-reduce ``key``; it starts when the last device joins."""
        entry = self._rendezvous.get(key)
        if entry is None:
            entry = ([0], Event(self.env))
            self._rendezvous[key] = entry
        count, done = entry
        count[0] += 1
        if count[0] == self.n:
            del self._rendezvous[key]
            run = CollectiveRun(self.sim, self._schedule(nbytes), self.group, self.cfg,
                                label=f"all-reduce {self.s.allreduce}")
            run.start().callbacks.append(lambda _ev: done.succeed())
        return done

    def _swap_in(self, d: int, block: Block) -> Event | None:
        pool = self.dev[d].memory
        if pool.swapped <= 0 or pool.in_use <= 0:
            return None
        nbytes = block.nbytes * pool.swapped / pool.in_use
        device = self.dev[d]
        rate = device.spec.swap_bandwidth or device.spec.disk_read_bandwidth or device.spec.memory_bandwidth
        res = [device.disk_resource, device.memory_resource] if device.disk_resource is not None \
            else [device.memory_resource]
        batch = device.kernel.start([nbytes], [res], [[1.0] * len(res)], cap=rate,
                                    describe=lambda _t: f"swap-in of {block.name} on {device.name}")
        return batch.done

    def guard(self, body):
        """Run a process body; a commsim error (e.g. out of memory) is kept and stops the simulation.

        SimPy cannot re-raise errors whose constructors take more than a message,
        so they are caught here and the run ends at once.
        """
        try:
            yield from body
        except CommsimError as exc:
            if self.error is None:
                self.error = exc
                stop = Event(self.env)
                stop.callbacks.append(StopSimulation.callback)
                stop.succeed()

    def _span(self, d: int, stream: str, kind: str, name: str, start: float) -> None:
        if self.s.record and self.env.now > start:
            self.sim.recorder.span(self.s.devices[d], stream, kind, name, start, self.env.now)

    # ------------------------------------------------------------------ processes
    def device(self, d: int):
        s = self.s
        blocks = s.blocks[d]
        window = self.windows[d]
        device = self.dev[d]
        hidden_bytes = s.model.hidden * COMPUTE_BYTES
        period = len(blocks)
        handoff = max(i for i, b in enumerate(blocks) if b.kind != "head")
        for tok in range(self.tokens):
            tokens, cached = (s.prompt_tokens, 0) if tok == 0 else (1, s.prompt_tokens + tok - 1)
            acc = self.acc[d, tok]
            if d > 0:
                start = self.env.now
                yield self.inputs[tok][d]
                acc[2] += self.env.now - start
                self._span(d, "compute", "delay", "waiting for input", start)
            for i, blk in enumerate(blocks):
                use = tok * period + i
                if s.mode == "pipeline" and blk.kind == "head" and self.n > 1:
                    start = self.env.now
                    yield self.returned[tok]
                    acc[2] += self.env.now - start
                    self._span(d, "compute", "delay", "waiting for the last stage", start)
                start = self.env.now
                yield window.ready(use)
                acc[3] += self.env.now - start
                self._span(d, "compute", "delay", f"stall: {blk.name} not loaded", start)
                swap = self._swap_in(d, blk)
                if swap is not None:
                    start = self.env.now
                    yield swap
                    acc[4] += self.env.now - start
                    self._span(d, "io", "swap", f"swap-in {blk.name}", start)
                flops, nbytes = block_work(blk, s.model, tokens, cached)
                if device.spec.launch_overhead:
                    yield self.env.timeout(device.spec.launch_overhead)
                start = self.env.now
                yield self._kernel(d, flops, nbytes)
                acc[0] += self.env.now - start
                if s.record:
                    self.sim.recorder.span(device.name, "compute", "compute", blk.name, start, self.env.now,
                                           flops=flops, nbytes=nbytes)
                if s.release == "after_compute":
                    window.release(use)
                if s.mode == "tp" and blk.kind in ("attn", "ffn") and self.n > 1:
                    start = self.env.now
                    yield self._allreduce((tok, blk.name), tokens * hidden_bytes)
                    acc[1] += self.env.now - start
                elif blk.kind == "embed" and self.n > 1:
                    self._send_input(tok, tokens * hidden_bytes)
                elif blk.kind == "head":
                    self.token_end[tok] = self.env.now
                if s.mode == "pipeline" and self.n > 1 and i == handoff:
                    self._hand_off(d, tok, tokens * hidden_bytes)
                if s.release == "after_sync":
                    window.release(use)

    def _hand_off(self, d: int, tok: int, nbytes: float) -> None:
        """Pipeline: send the stage's activations on (the last stage sends the last row back to the master)."""
        s = self.s
        if d + 1 < self.n:
            done = self.sim.network.transfer(s.devices[d], s.devices[d + 1], nbytes, label="activations",
                                             record=s.record)
            done.callbacks.append(lambda _ev: self.inputs[tok][d + 1].succeed())
        else:
            row = s.model.hidden * COMPUTE_BYTES
            done = self.sim.network.transfer(s.devices[d], s.devices[0], row, label="last hidden state",
                                             record=s.record)
            done.callbacks.append(lambda _ev: self.returned[tok].succeed())

    def _send_input(self, tok: int, nbytes: float) -> None:
        """Master: send the embedded input to every worker (tensor parallel)."""
        if self.s.mode != "tp":
            return
        events = self.inputs[tok]

        def arrived(idx: np.ndarray) -> None:
            for i in idx.tolist():
                events[i + 1].succeed()
        self.sim.network.send(self.bcast_routes, nbytes, label="input broadcast", on_delivered=arrived,
                              record=self.s.record)

    def startup(self):
        """Load pinned blocks and fill the windows, then start the devices (at ``t0``)."""
        s = self.s
        for d, device in enumerate(self.dev):
            tdev = [b for b in s.blocks[d] if b.kind == "attn"]
            kv = sum(2.0 * b.kv_width for b in tdev) * self.seq_len * COMPUTE_BYTES
            self.fixed[d] = [device.memory.allocate(s.runtime_memory, "runtime"),
                             device.memory.allocate(kv, "KV cache"),
                             device.memory.allocate(_workspace(s.model, s.blocks[d], s.prompt_tokens), "activations")]
        loads = [self.env.process(self.guard(w.preload())) for w in self.windows]
        yield simpy.AllOf(self.env, loads)
        for w in self.windows:
            w.process = self.env.process(self.guard(w._run()))
        if s.prefetch and s.window is not None:
            first = []
            for w in self.windows:
                streamed = [k for k in range(min(len(w.order), s.window * 4))
                            if not w.pinned[int(w.order[k])]][: s.window]
                first += [w.ready(k) for k in streamed]
            yield simpy.AllOf(self.env, first)
        self.t0 = self.env.now
        for d in range(self.n):
            self.env.process(self.guard(self.device(d)))


def _workspace(spec: TransformerSpec, blocks: list[Block], tokens: int) -> float:
    """Activation bytes the largest block needs during the prefill (FP32)."""
    t = float(tokens)
    need = 0.0
    for b in blocks:
        if b.kind == "attn":
            heads = b.q_width / spec.head_dim
            need = max(need, t * (2 * spec.hidden + b.q_width + 2 * b.kv_width) + heads * t * t)
        elif b.kind == "ffn":
            need = max(need, t * (2 * spec.hidden + 3 * b.ffn_width))
        elif b.kind == "head":
            need = max(need, 2.0 * spec.vocab)
        else:
            need = max(need, 2 * t * spec.hidden)
    return need * COMPUTE_BYTES


def simulate_inference(setup: InferenceSetup) -> InferenceStats:
    """Run ``setup``; an allocation beyond RAM + swap ends it with status ``"out of memory"``."""
    if setup.window is not None and setup.window < 1:
        raise ConfigError(field="window", value=setup.window, rule="must be at least 1 block",
                          fix="give a window of 1 or more blocks, or None to turn the scheduler off")
    if setup.prompt_tokens < 1 or setup.decode_tokens < 1:
        raise ConfigError(field="tokens", value=(setup.prompt_tokens, setup.decode_tokens),
                          rule="needs a prompt of at least 1 token and at least 1 decoded token",
                          fix="give prompt_tokens >= 1 and decode_tokens >= 1")
    if len(setup.blocks) != len(setup.devices):
        raise ConfigError(field="blocks", value=len(setup.blocks),
                          rule=f"does not give one block list per device ({len(setup.devices)})",
                          fix="give each device its block sequence")
    run = _Run(setup)
    run.env.process(run.guard(run.startup()))
    result = run.sim.run(on_stall="report")
    if isinstance(run.error, OutOfMemoryError):
        stats = InferenceStats(status="out of memory", message=str(run.error), devices=list(setup.devices))
        stats.peak_memory = np.array([d.memory.peak for d in run.dev])
        return stats
    if run.error is not None:
        raise run.error
    t0 = run.t0
    ends = np.array(run.token_end, dtype=float)
    if np.isnan(ends).any():
        raise ConfigError(field="run", value=setup.mode, rule="ended before every token was sampled",
                          fix="check the block sequences: the master must hold the head")
    times = np.diff(np.concatenate([[t0], ends]))
    for w, device, handles in zip(run.windows, run.dev, run.fixed, strict=True):
        w.close()
        for handle in handles:
            device.memory.free(handle)
    decode = run.acc[:, 1:, :]
    return InferenceStats(
        status="ok", ttft=float(times[0]), token_latency=float(times[1:].mean()), token_times=times.tolist(),
        startup=float(t0), devices=list(setup.devices),
        peak_memory=np.array([d.memory.peak for d in run.dev]),
        peak_swapped=np.array([d.memory.peak_swapped for d in run.dev]),
        allocated=np.array([d.memory.allocated_total for d in run.dev]),
        freed=np.array([d.memory.freed_total for d in run.dev]),
        breakdown=decode.mean(axis=1), prefill=run.acc[:, 0, :],
        disk_busy=np.array([w.load_busy for w in run.windows]) / max(run.tokens, 1),
        max_held=np.array([w.max_held for w in run.windows]),
        bytes_loaded=np.array([w.bytes_loaded for w in run.windows]),
        t0=float(t0), token_ends=ends.tolist(), result=result if setup.record else None,
    )
