"""The study's sweep: every compressor, regime, variant and inter-node bandwidth, and the tables made from it.

:func:`prepare` resolves the topology, ranks, model layout and collectives, counts
every compressor's payloads (:class:`commsim.compression.PayloadCounter`) and builds one step plan per regime
(:mod:`.regimes`, :mod:`.plan`). :func:`sweep` simulates each distinct plan
(:mod:`.workload`: a trace replayed on the shared engine) at every bandwidth of the grid and on an unlimited network, for
each variant; :func:`iterations`, :func:`run_means`, :func:`payload_table` and
:func:`warmup_table` turn the runs into the output tables.

Time breakdown of an iteration (per variant and bandwidth):
``compute`` = the forward and backward kernels alone on the device;
``compression`` = the iteration on an unlimited network minus ``compute`` (what the
compression kernels add to the critical path, contention with the backward pass
included); ``exposed_comm`` = the iteration minus the iteration on an unlimited
network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from commsim.compression import PayloadCounter
from commsim.errors import ConfigError
from commsim.network.inter_node import Fabric
from commsim.systems.compressed_dp.params import DEFAULT_TOPOLOGY, CompressedDPParams
from commsim.systems.compressed_dp.plan import StepPlan, build_plan
from commsim.systems.compressed_dp.regimes import STEADY, Regime, regimes
from commsim.systems.compressed_dp.schedules import CollectivePlan
from commsim.systems.compressed_dp.workload import RunStats, compute_time, device_of, simulate
from commsim.units import gbit_per_s as gbit
from commsim.workloads.data_parallel import LayerLayout, catalog_layout

__all__ = ["Prepared", "prepare", "sweep", "iterations", "run_means", "payload_table", "warmup_table",
           "resolve_topology", "UNLIMITED_LABEL"]

UNLIMITED_LABEL = math.inf
"""The ``gbit_per_s`` of runs on an unlimited network (every link, intra-node too)."""


@dataclass
class Prepared:
    """Everything the runs share."""

    params: CompressedDPParams
    topology: Any
    topology_source: str
    group: list[str]
    layout: LayerLayout
    spec: Any
    compute: float
    collectives: CollectivePlan
    fabric: Fabric
    config: Any
    counter: PayloadCounter
    regimes: dict[str, list[Regime]]
    plans: dict[str, StepPlan]
    grid: list[float]
    faults: list[Any] = field(default_factory=list)

    @property
    def nominal_gbit(self) -> float:
        """The topology's own port bandwidth, Gbit/s."""
        return gbit(self.fabric.port_bandwidth)


def resolve_topology(topology: Any) -> tuple[Any, str]:
    """The scenario's topology, or the study's default (a shipped topology file)."""
    from commsim.network.loader import load_topology

    if topology is not None:
        return topology, getattr(topology, "name", "scenario topology")
    return load_topology(DEFAULT_TOPOLOGY), DEFAULT_TOPOLOGY


def _group(topology: Any, ranks: int | None) -> list[str]:
    devices = topology.devices
    if ranks is None:
        ranks = len(devices)
    if ranks > len(devices) or ranks < 2:
        raise ConfigError(field="workload.params.ranks", value=ranks,
                          rule=f"does not fit the topology's {len(devices)} devices (data-parallel needs 2 or more)",
                          fix=f"give 2..{len(devices)} ranks or a larger topology")
    return devices[:ranks]


def _ranks_per_node(topology: Any, group: list[str]) -> int | None:
    from commsim.collectives.hierarchical import ranks_per_node_of

    try:
        return ranks_per_node_of(topology, group)
    except ConfigError:
        return None


def prepare(params: CompressedDPParams, topology: Any = None, *, collective: Any = None,
            progress: Any = None, faults: list[Any] | None = None) -> Prepared:
    """Resolve inputs, count payloads and build the plan of every regime.

    ``faults`` (:mod:`commsim.faults` models or mappings) happen in every simulated run,
    at their times from the run's first step; they are checked against the topology here.
    """
    from commsim.collectives import CollectiveConfig
    from commsim.faults.injector import check_faults, parse_faults

    topo, source = resolve_topology(topology)
    faults = parse_faults(faults or [])
    check_faults(faults, topo)
    group = _group(topo, params.ranks)
    spec = device_of(topo, group[0])
    layout = catalog_layout(params.model, tokens_per_rank=params.tokens_per_rank, seq_len=params.seq_len)
    collectives = CollectivePlan.resolve(len(group), _ranks_per_node(topo, group),
                                         all_reduce=params.all_reduce_algorithm,
                                         all_gather=params.all_gather_algorithm, server=params.parameter_server,
                                         root=params.server_rank)
    base = collective or CollectiveConfig()
    config = CollectiveConfig(step_latency=base.step_latency, bandwidth_efficiency=base.bandwidth_efficiency,
                              reduction=base.reduction, dtype=base.dtype, mode=params.collective_mode,
                              launch_latency=base.launch_latency, remote_step_latency=base.remote_step_latency,
                              remote_efficiency=base.remote_efficiency)
    counter = PayloadCounter(params.count_chunk_elements, seed=params.seed)
    fabric = Fabric.of(topo)
    plans: dict[str, StepPlan] = {}
    by_entry: dict[str, list[Regime]] = {}
    keys = [(entry, regime) for entry in params.compressors for regime in regimes(entry, params.train_steps)]
    for i, (entry, regime) in enumerate(keys):
        if progress is not None:
            progress(i, len(keys), f"counting payloads: {entry.name} ({regime.label})")
        by_entry.setdefault(entry.name, []).append(regime)
        if regime.key not in plans:
            plans[regime.key] = build_plan(regime.compressor, layout, collectives, counter, packed=params.packed)
    counter.clear()
    grid = sorted(set(params.inter_node_gbps) | {round(gbit(fabric.port_bandwidth), 9)})
    return Prepared(params=params, topology=topo, topology_source=source, group=group, layout=layout, spec=spec,
                    compute=compute_time(layout, spec), collectives=collectives, fabric=fabric, config=config,
                    counter=counter, regimes=by_entry, plans=plans, grid=grid, faults=faults)


def run(prep: Prepared, key: str, variant: str, gbit_per_s: float, *, record: bool = False,
        steps: int | None = None) -> RunStats:
    """One simulation of the plan ``key`` (``gbit_per_s`` inf: unlimited network)."""
    p = prep.params
    unlimited = math.isinf(gbit_per_s)
    return simulate(prep.topology, prep.layout, prep.plans[key], prep.collectives, group=prep.group,
                    port_bandwidth=None if unlimited else gbit_per_s * 1e9 / 8, unlimited=unlimited,
                    fabric=prep.fabric, variant=variant, tau=p.co2_tau, release=p.release,
                    compression_dtype=p.compression_dtype, config=prep.config, record=record, steps=steps,
                    seed=p.seed, faults=prep.faults)


def sweep(prep: Prepared, progress: Any = None) -> pd.DataFrame:
    """Every distinct plan x variant x (grid + unlimited): one row per run."""
    p = prep.params
    points = [*prep.grid, UNLIMITED_LABEL]
    jobs = [(key, variant, g) for key in prep.plans for variant in p.variants for g in points]
    rows = []
    for i, (key, variant, g) in enumerate(jobs):
        if progress is not None:
            progress(i, len(jobs), "simulating steps")
        stats = run(prep, key, variant, g)
        rows.append({"key": key, "variant": variant, "gbit_per_s": g, "iteration_time": stats.iteration_time,
                     "stall": stats.stall / max(1, stats.steps), "wire_bytes": stats.wire_bytes,
                     "transfers": stats.transfers / max(1, stats.steps), "steps": stats.steps,
                     "periodic": stats.periodic})
    if progress is not None:
        progress(len(jobs), len(jobs), "simulating steps")
    return pd.DataFrame(rows)


def _regime_rows(prep: Prepared, runs: pd.DataFrame) -> pd.DataFrame:
    """Runs joined with compressors, regimes and the breakdown."""
    unl = runs[np.isinf(runs["gbit_per_s"])].set_index(["key", "variant"])["iteration_time"]
    rows = []
    for entry in prep.params.compressors:
        for regime in prep.regimes[entry.name]:
            plan = prep.plans[regime.key]
            part = runs[(runs["key"] == regime.key) & np.isfinite(runs["gbit_per_s"])]
            for r in part.itertuples(index=False):
                t_unl = float(unl.loc[(regime.key, r.variant)])
                rows.append({
                    "compressor": entry.name, "spec": entry.spec, "regime": regime.label, "regime_steps": regime.steps,
                    "variant": r.variant, "gbit_per_s": r.gbit_per_s, "iteration_time": r.iteration_time,
                    "compute": prep.compute, "compression": t_unl - prep.compute,
                    "exposed_comm": r.iteration_time - t_unl, "unlimited_network_time": t_unl,
                    "payload_packed": plan.payload_packed, "payload_naive": plan.payload_naive,
                    "reply_bytes": plan.reply, "dense_bytes": plan.dense, "wire_bytes": r.wire_bytes,
                    "plan_wire_bytes": plan.wire, "ratio_packed": plan.dense / plan.payload_packed,
                    "ratio_naive": plan.dense / plan.payload_naive, "stall": r.stall,
                    "simulated_steps": r.steps, "periodic": r.periodic,
                })
    return pd.DataFrame(rows)


def iterations(prep: Prepared, runs: pd.DataFrame) -> pd.DataFrame:
    """Steady-state rows (after every warm-up): iteration time, breakdown and bytes per compressor, variant
    and bandwidth, with the speed-up over the first compressor (``none`` by default)."""
    table = _regime_rows(prep, runs)
    steady = table[table["regime"] == STEADY].drop(columns=["regime", "regime_steps"]).reset_index(drop=True)
    base = prep.params.compressors[0].name
    ref = steady[steady["compressor"] == base].set_index(["variant", "gbit_per_s"])["iteration_time"]
    steady["speedup_vs_" + _safe(base)] = [float(ref.loc[(v, g)]) / t for v, g, t in
                                           zip(steady["variant"], steady["gbit_per_s"], steady["iteration_time"],
                                               strict=True)]
    return steady


def warmup_table(prep: Prepared, runs: pd.DataFrame) -> pd.DataFrame:
    """Every regime of every compressor (warm-up stages and steady state) at every bandwidth."""
    return _regime_rows(prep, runs)


def run_means(prep: Prepared, runs: pd.DataFrame) -> pd.DataFrame:
    """Mean iteration time and bytes per step over the ``train_steps`` of training, warm-ups included."""
    table = _regime_rows(prep, runs)
    total = prep.params.train_steps
    out = []
    for (name, variant, g), part in table.groupby(["compressor", "variant", "gbit_per_s"], sort=False):
        w = part["regime_steps"].to_numpy(dtype=float)
        steady = part[part["regime"] == STEADY].iloc[0]
        out.append({"compressor": name, "variant": variant, "gbit_per_s": g,
                    "mean_iteration_time": float((w * part["iteration_time"]).sum() / total),
                    "steady_iteration_time": float(steady["iteration_time"]),
                    "mean_payload_packed": float((w * part["payload_packed"]).sum() / total),
                    "warmup_steps": int(total - steady["regime_steps"]),
                    "run_time": float((w * part["iteration_time"]).sum())})
    return pd.DataFrame(out)


def payload_table(prep: Prepared) -> pd.DataFrame:
    """How every tensor shape's payload was counted, per compressor (steady state) and regime."""
    rows = []
    for entry in prep.params.compressors:
        for regime in prep.regimes[entry.name]:
            plan = prep.plans[regime.key]
            uses = _shape_uses(prep.layout)
            for shape, c in plan.counts.items():
                rows.append({"compressor": entry.name, "regime": regime.label, "shape": "x".join(map(str, shape)),
                             "tensors": uses[shape], "numel": c.numel, "fit": c.fit,
                             "messages": "; ".join(f"{m.collective} {m.label}" for m in c.messages),
                             "packed": c.packed, "naive": c.naive, "reply": c.reply_packed,
                             "ratio_packed": c.dense_bytes / c.packed if c.packed else math.inf,
                             "counted": c.how, "deviation": c.deviation,
                             "compress_flop": c.compress[0], "compress_bytes": c.compress[1],
                             "decompress_flop": c.decompress[0], "decompress_bytes": c.decompress[1]})
    return pd.DataFrame(rows)


def _shape_uses(layout: LayerLayout) -> dict[tuple[int, ...], int]:
    uses: dict[tuple[int, ...], int] = {}
    for bucket in layout.tensors:
        for _, shape in bucket:
            uses[shape] = uses.get(shape, 0) + 1
    return uses


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
