"""The inference run: a TPI-LLM setup as a trace, replayed by the shared replay engine.

One :class:`InferenceSetup` says what runs where; :func:`simulate_inference`
writes it as a trace (:func:`~.workload.inference_trace`: per device and token
the block kernels, the all-reduces, the input sends) and replays it with
:class:`~commsim.workloads.replay.Replay` on a
:class:`~commsim.simulation.Simulation`, the sliding-window loader
(:class:`~.loader.WindowLoader`) taking part as its plug-in. Everything that
takes time goes through the shared models: kernels are roofline activities on
the device's compute and DRAM, weight loads read the device's disk into DRAM
(sharing DRAM bandwidth with the kernels), all-reduces are the collective
library's schedules (``star``, ``kary_tree``, ``ring``; ``ps`` a star rooted at
a server) on the topology's links, the input broadcast and pipeline hand-offs
are sends, and memory is the device's :class:`~commsim.devices.MemoryPool`
(``OutOfMemoryError`` beyond RAM + swap ends the run as ``"out of memory"``).

The loader keeps prefetching one token past the last one replayed, so the
last token sees the disk and the window as every token of a longer
generation does (a token's latency does not depend on how many follow it).

A block is released after its all-reduce (``release="after_sync"``, the
paper's analysis) or right after its kernel (``"after_compute"``, as the public
code does: it starts the next loads while the all-reduce runs). TTFT counts
from ``t0`` (pinned blocks and the first window loaded, see :mod:`.loader`) to
the master's first sampled token: the prompt's forward pass over all its
tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from commsim.collectives import CollectiveConfig
from commsim.errors import CommsimError, ConfigError, OutOfMemoryError, StallError
from commsim.faults.injector import faults_on
from commsim.network.topology import Topology
from commsim.simulation import Simulation
from commsim.systems.tpi_llm.hardware import SERVER, with_server
from commsim.systems.tpi_llm.partition import COMPUTE_BYTES, Block
from commsim.systems.tpi_llm.workload import ALGORITHM_OF, inference_trace
from commsim.workloads.models import TransformerSpec
from commsim.workloads.replay import Replay
from commsim.workloads.window import Blocks, WindowLoader

__all__ = ["BREAKDOWN", "InferenceSetup", "InferenceStats", "needed_memory", "simulate_inference"]

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
    prompt_tokens, decode_tokens, file_bytes, staging, runtime_memory, release, tree_fanout:
        As the same-named fields of :class:`~commsim.systems.tpi_llm.params.TPIParams` (SI units).
    collective:
        Per-step latency, efficiency and reduction cost of the all-reduces.
    record:
        Keep spans for the dashboard's timeline.
    lockstep:
        Run the devices of one program (workers with the same slices) as one
        replay cohort (exact when they are alike, as here) or each alone.
    faults:
        Faults (:mod:`commsim.faults` models) at their times from the start of the
        run; those naming a link or device ``topology`` lacks are left out
        (:func:`~commsim.faults.injector.faults_on`).
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
    lockstep: bool = True
    faults: list[Any] = field(default_factory=list)


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


def _stats_of(setup: InferenceSetup, replay: Replay, loader: WindowLoader, result: Any) -> InferenceStats:
    """Token times and per-device breakdown from the replayed ops and the loader."""
    n = len(setup.devices)
    tokens = 1 + setup.decode_tokens
    acc = np.zeros((n, tokens, len(BREAKDOWN)))
    ends = np.full(tokens, math.nan)
    for c in range(len(replay.cohorts)):
        ranks = [r for r in replay.cohorts[c].ranks.tolist() if r < n]
        index, start, end = replay.op_times(c)
        ops = replay.cohorts[c].plan.ops
        for op_id, i in index.items():
            op = ops[i]
            category = _CATEGORY.get(op.kind)
            if category is None or "token" not in op.tags:
                continue
            acc[ranks, int(op.tags["token"]), category] += end[i] - start[i]
            if 0 in ranks and op_id.endswith(".head"):
                ends[int(op.tags["token"])] = end[i]
    for d in range(n):   # per use -> per token (a token uses every block once)
        acc[d, :, BREAKDOWN.index("stall")] += loader.stall[d].reshape(tokens, -1).sum(axis=1)
        acc[d, :, BREAKDOWN.index("swap")] += loader.swap[d].reshape(tokens, -1).sum(axis=1)
    if np.isnan(ends).any():
        raise ConfigError(field="run", value=setup.mode, rule="ended before every token was sampled",
                          fix="check the block sequences: the master must hold the head")
    t0 = loader.t0
    times = np.diff(np.concatenate([[t0], ends]))
    pools = [replay.sim.devices[name].memory for name in setup.devices]
    windows = [loader.window_of(d) for d in range(n)]
    loader.close()
    return InferenceStats(
        status="ok", ttft=float(times[0]), token_latency=float(times[1:].mean()), token_times=times.tolist(),
        startup=float(t0), devices=list(setup.devices),
        peak_memory=np.array([p.peak for p in pools]), peak_swapped=np.array([p.peak_swapped for p in pools]),
        allocated=np.array([p.allocated_total for p in pools]), freed=np.array([p.freed_total for p in pools]),
        breakdown=acc[:, 1:, :].mean(axis=1), prefill=acc[:, 0, :],
        disk_busy=np.array([w.load_busy for w in windows]) / tokens,
        max_held=np.array([w.max_held for w in windows]),
        bytes_loaded=np.array([w.bytes_loaded for w in windows]),
        t0=float(t0), token_ends=ends.tolist(), result=result if setup.record else None)


_CATEGORY = {"compute": BREAKDOWN.index("compute"), "collective": BREAKDOWN.index("allreduce"),
             "recv": BREAKDOWN.index("input_wait")}
"""Breakdown category of each op kind (sends run beside the compute stream: not counted)."""


def _sizes(setup: InferenceSetup, blocks: list[Block]) -> Blocks:
    """What the window holds and reads of ``blocks``: FP32 in memory, ``file_bytes`` per parameter on disk."""
    cold = setup.staging and setup.file_bytes < COMPUTE_BYTES     # the file's copy is held while it is converted
    return Blocks(labels=tuple(b.name for b in blocks), resident=tuple(b.nbytes for b in blocks),
                  read=tuple(b.params * setup.file_bytes for b in blocks),
                  staging=tuple(b.params * setup.file_bytes if cold else 0.0 for b in blocks))


def _check(setup: InferenceSetup) -> None:
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
    if setup.mode == "tp" and setup.allreduce not in ALGORITHM_OF:
        raise ConfigError(field="allreduce", value=setup.allreduce, rule="is not an all-reduce algorithm of the "
                          "study", fix=f"use one of {', '.join(ALGORITHM_OF)}")
    if setup.tree_fanout < 1:
        raise ConfigError(field="tree_fanout", value=setup.tree_fanout, rule="must be a whole number of at least 1",
                          fix="give the number of children per tree node, e.g. 2 (binary) or 3")


def _replay(setup: InferenceSetup, tokens: int, *, unbounded_memory: bool = False,
            ) -> tuple[Simulation, Replay, WindowLoader, Any, CommsimError | None]:
    """Replay the first ``tokens`` tokens of ``setup`` (0: start-up and allocations only); ``unbounded_memory``
    gives every device an unbounded memory pool."""
    _check(setup)
    server = setup.mode == "tp" and setup.allreduce == "ps" and len(setup.devices) > 1
    topo = with_server(setup.topology) if server and SERVER not in setup.topology.graph else setup.topology
    sim = Simulation(topo, seed=setup.seed, routing="shortest", record_usage=setup.record,
                     unbounded_memory=unbounded_memory)
    sim.schedule_faults(faults_on(setup.faults, topo))
    base = setup.collective or CollectiveConfig()
    config = CollectiveConfig(step_latency=base.step_latency, bandwidth_efficiency=base.bandwidth_efficiency,
                              reduction=base.reduction, dtype="fp32", mode=base.mode,
                              launch_latency=base.launch_latency, record="none")
    trace = inference_trace(setup, tokens=tokens)
    n = len(setup.devices)
    # the ranks of one program run in lockstep: they share one window (the server holds no blocks)
    groups = [ranks for p in trace.programs if (ranks := [r for r in p.rank_list() if r < n])]
    loader = WindowLoader(sim, setup.devices, [_sizes(setup, seq) for seq in setup.blocks], periods=max(tokens, 1),
                          window=setup.window, pinned=setup.pinned, prefetch=setup.prefetch, record=setup.record,
                          groups=groups, lookahead=True)
    replay = Replay(sim, trace, devices=[*setup.devices, SERVER] if server else list(setup.devices),
                    collective=config, record="all" if setup.record else "none", lockstep=setup.lockstep,
                    algorithm_options={"kary_tree": {"fanout": setup.tree_fanout}}, plugins=[loader])
    error: CommsimError | None = None
    result = None
    try:
        if setup.record:
            result = replay.run_to_end()
        else:   # only times and peaks are read: the result tables are not built
            replay.start()
            sim.advance()
            if not replay.done.triggered and loader.error is None:
                raise StallError(sim.env.now, [f"the {setup.mode} inference trace of {setup.model.name} stopped "
                                               "before its last op: ops wait for each other"])
    except OutOfMemoryError as exc:
        error = exc
    except StallError:
        if loader.error is None:
            raise
    error = error or loader.error
    if error is not None and not isinstance(error, OutOfMemoryError):
        raise error
    return sim, replay, loader, result, error


def simulate_inference(setup: InferenceSetup) -> InferenceStats:
    """Replay ``setup``'s trace; an allocation beyond RAM + swap ends it with status ``"out of memory"``."""
    sim, replay, loader, result, error = _replay(setup, 1 + setup.decode_tokens)
    if error is not None:
        stats = InferenceStats(status="out of memory", message=str(error), devices=list(setup.devices))
        stats.peak_memory = np.array([sim.devices[d].memory.peak for d in setup.devices])
        return stats
    return _stats_of(setup, replay, loader, result)


def needed_memory(setup: InferenceSetup) -> np.ndarray:
    """Per device, the bytes ``setup`` needs (its peak), measured on its devices given unbounded memory pools.

    With the scheduler off every block is pinned: after the start-up (which loads them) and the
    trace's first ops (the runtime, KV cache and workspace allocations) nothing is allocated until
    the end, so only those are replayed (the same peak as a whole run, without its tokens).
    """
    sim, *_ = _replay(replace(setup, record=False), 0 if setup.window is None else 1 + setup.decode_tokens,
                      unbounded_memory=True)
    return np.array([sim.devices[d].memory.peak for d in setup.devices])
