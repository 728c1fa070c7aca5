"""The study's computations: the bandwidth sweep, the threshold table, the per-method summary.

:func:`prepare` resolves the link and builds every model's layout, every
method's sync plan and its trace; :func:`sweep` replays each (model, method) at
each grid bandwidth; :func:`thresholds` turns the CU curves into the table of the
first grid bandwidth reaching each CU level (:func:`threshold_csv` writes the
cells never reached as ``>`` the grid's top); :func:`summary` adds bytes, peak
demand, CU and wall-clock at the user's link.

>>> first_reaching(np.array([0.1, 1.0, 10.0]), np.array([0.4, 0.9, 0.99]), [0.5, 0.95, 0.999])
[1.0, 10.0, nan]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from commsim.errors import ConfigError
from commsim.systems.streaming_diloco.layout import build_layout, derived_step_time
from commsim.systems.streaming_diloco.params import StreamingDilocoParams
from commsim.systems.streaming_diloco.schedule import Payload, SyncPlan, build_plan
from commsim.systems.streaming_diloco.workload import Prepared as PreparedTrace
from commsim.systems.streaming_diloco.workload import RunStats, check_wan_faults, prepare_trace, replay_at
from commsim.units import gbit_per_s as gbit
from commsim.workloads.data_parallel import LayerLayout

__all__ = ["Link", "Prepared", "link_of", "prepare", "payloads", "sweep", "run", "first_reaching", "thresholds",
           "threshold_csv", "summary", "cu_label"]

Progress = Callable[[float, float, str], None]
_CU_RTOL = 1e-9  # a CU within this of a level counts as reaching it (float noise of exact 1.0)


@dataclass(frozen=True)
class Link:
    """The user's WAN link (one direction) and where its numbers came from."""

    bandwidth: float
    latency: float
    source: str
    devices_per_replica: int | None = None
    device: str | None = None
    datacenters: int | None = None


def link_of(params: StreamingDilocoParams, topology: Any) -> Link:
    """Bandwidth and latency of the user's link: the params, else the topology's WAN links, else defaults."""
    bandwidth, latency, source = None, None, []
    devices, device, dcs = None, None, None
    if topology is not None:
        wan_links = [d for _a, _b, d in topology.links() if d.get("tier") == "wan"]
        if wan_links:
            bandwidth = min(d["bandwidth"] for d in wan_links)
            latency = max(d["latency"] for d in wan_links)
            source.append(f"WAN links of topology {topology.name!r}")
        dc_of = {n: topology.graph.nodes[n].get("dc") for n in topology.devices}
        if any(v is not None for v in dc_of.values()):
            dcs = len({v for v in dc_of.values() if v is not None})
            first = [n for n, v in dc_of.items() if v == 0]
            devices = len(first) or None
            device = topology.device_spec(first[0]) if first else None
    if params.wan_bandwidth is not None:
        bandwidth = params.wan_bandwidth
        source.append("wan_bandwidth parameter")
    if params.wan_latency is not None:
        latency = params.wan_latency
        source.append("wan_latency parameter")
    if bandwidth is None:
        bandwidth = 10e9 / 8
        source.append("default 10 Gbit/s")
    if latency is None:
        latency = 0.0
        source.append("default latency 0 s")
    if not isinstance(device, str):
        device = None  # an inline device spec: give the preset with the device parameter
    return Link(bandwidth=float(bandwidth), latency=float(latency), source="; ".join(source),
                devices_per_replica=params.devices_per_replica or devices, device=params.device or device,
                datacenters=dcs)


@dataclass
class Prepared:
    """Layouts and plans of every model and method, ready to simulate."""

    params: StreamingDilocoParams
    link: Link
    layouts: dict[str, LayerLayout]
    plans: dict[tuple[str, str], SyncPlan]
    traces: dict[tuple[str, str], PreparedTrace]
    notes: list[str] = field(default_factory=list)
    faults: list[Any] = field(default_factory=list)


def payloads(params: StreamingDilocoParams, block_size: int | None = None) -> tuple[Payload, Payload]:
    """The dense and the quantised payload of the study (``block_size`` overrides the quantised one's)."""
    block = params.quantised_block_size if block_size is None else block_size
    return (Payload(params.dense_bits, None, collective="all_reduce"),
            Payload(params.quantised_bits, block, collective="all_gather"))


def prepare(params: StreamingDilocoParams, link: Link, faults: Sequence[Any] = ()) -> Prepared:
    """Build layouts (deriving step times where none is given), sync plans and their traces.

    ``faults`` (WAN link faults, see :func:`~.workload.check_wan_faults`) act in every replay.
    """
    from commsim.devices import device_spec
    from commsim.workloads import load_model, parameter_count

    dense, quantised = payloads(params)
    notes: list[str] = []
    layouts: dict[str, LayerLayout] = {}
    for case in params.models:
        step_time = None
        if case.step_time is None:
            if link.devices_per_replica is None or link.device is None:
                raise ConfigError(field=f"workload.params.models[{case.name}].step_time", rule="is missing and cannot "
                                  "be derived without devices_per_replica and device (or a topology with data "
                                  "centres)", fix="give a step time such as '0.8 s', or devices_per_replica and device")
            spec = device_spec(link.device)
            n = parameter_count(load_model(case.model))
            step_time = derived_step_time(n, params.tokens_per_step, link.devices_per_replica,
                                          spec.peak_flops["bf16"], params.mfu)
            notes.append(f"{case.name}: step time {step_time:.4g} s derived as 6·N·tokens/(devices·peak·MFU) with "
                         f"N = {n:.4g}, {params.tokens_per_step} tokens, {link.devices_per_replica} x {link.device} "
                         f"at {spec.peak_flops['bf16']:.4g} FLOP/s bf16, MFU {params.mfu}.")
        layouts[case.name] = build_layout(case, backward_to_forward=params.backward_to_forward, step_time=step_time,
                                          parameters=params.parameters)
    plans = {}
    for name, layout in layouts.items():
        for method in params.methods:
            plans[name, method] = build_plan(
                method, layout, inner_steps=params.inner_steps, tau=params.overlap_steps,
                fragment_layers=params.fragment_layers, assignment=params.fragment_assignment,
                remainder=params.fragment_remainder, dense=dense, quantised=quantised, replicas=params.replicas)
    traces = {key: prepare_trace(plan, layouts[key[0]], sharing=params.sharing) for key, plan in plans.items()}
    return Prepared(params=params, link=link, layouts=layouts, plans=plans, traces=traces, notes=notes,
                    faults=check_wan_faults(faults, params.replicas))


def sweep(prep: Prepared, progress: Progress | None = None) -> pd.DataFrame:
    """CU of every (model, method) at every grid bandwidth: the curves table.

    Columns: model, method, gbit_per_s, cu, stall_s (per period), mode. Once a bandwidth
    gives no stall at all, the higher ones are not replayed: a faster link delays no sync
    (every sync shares the same links, max-min fairly or in one queue), so they give
    CU = 1 as well (mode ``no stall below``).
    """
    grid = prep.params.grid_gbit()
    rows = []
    total = len(prep.plans) * grid.shape[0]
    done = 0
    for name, method in prep.plans:
        stalled = True
        for g in grid.tolist():
            if stalled:
                stats = run(prep, (name, method), g * 1e9 / 8)
                rows.append((name, method, g, stats.cu, stats.stall, stats.mode))
                stalled = stats.stall > 0.0
            else:
                rows.append((name, method, g, 1.0, 0.0, "no stall below"))
            done += 1
        if progress is not None:
            progress(done, total, f"{name} {method}")
    return pd.DataFrame(rows, columns=["model", "method", "gbit_per_s", "cu", "stall_s", "mode"])


def run(prep: Prepared, key: tuple[str, str], bandwidth: float, *, trace: PreparedTrace | None = None,
        record: bool = False) -> RunStats:
    """Replay the (model, method) ``key``'s steady-state trace (or ``trace``) at ``bandwidth`` bytes/s."""
    return replay_at(trace or prep.traces[key], prep.plans[key], prep.layouts[key[0]], bandwidth=bandwidth,
                     latency=prep.link.latency, record=record, faults=prep.faults)


def first_reaching(grid: np.ndarray, cu: np.ndarray, levels: Sequence[float]) -> list[float]:
    """The first grid value where ``cu`` reaches each level (NaN when it never does)."""
    out = []
    for level in levels:
        hit = np.flatnonzero(cu >= level * (1.0 - _CU_RTOL))
        out.append(float(grid[hit[0]]) if hit.size else math.nan)
    return out


def cu_label(level: float) -> float | int:
    """A CU level in percent, as an integer when it is a whole percent (0.95 -> 95)."""
    pct = round(level * 100.0, 9)
    return int(pct) if pct == int(pct) else pct


def thresholds(curves: pd.DataFrame, levels: Sequence[float]) -> pd.DataFrame:
    """The ``bandwidth_for_cu`` table: model, method, cu (percent), gbit_per_s (NaN: never reached)."""
    rows = []
    for (name, method), part in curves.groupby(["model", "method"], sort=False):
        part = part.sort_values("gbit_per_s")
        firsts = first_reaching(part["gbit_per_s"].to_numpy(), part["cu"].to_numpy(), levels)
        rows += [(name, method, cu_label(level), g) for level, g in zip(levels, firsts, strict=True)]
    return pd.DataFrame(rows, columns=["model", "method", "cu", "gbit_per_s"])


def threshold_csv(table: pd.DataFrame, grid_top: float) -> pd.DataFrame:
    """The table as written: a level never reached on the grid reads ``>TOP`` (e.g. ``>1000``), never empty."""
    out = table.copy()
    out["gbit_per_s"] = [f">{grid_top:g}" if math.isnan(g) else g for g in table["gbit_per_s"].tolist()]
    return out


def summary(prep: Prepared, table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per model and method: bytes, peak demand, CU and wall-clock at the user's link, bandwidth for ``level``."""
    p = prep.params
    rows = []
    scaled = payloads(p, block_size=128)[1]
    for (name, method), plan in prep.plans.items():
        layout = prep.layouts[name]
        stats = run(prep, (name, method), prep.link.bandwidth)
        budget_tokens = p.tokens_per_parameter * layout.parameters
        steps = budget_tokens / p.tokens_per_step
        per_step = plan.bytes_per_step()
        dp = prep.plans.get((name, "data_parallel"))
        dp_per_step = dp.bytes_per_step() if dp is not None else math.nan
        hit = table[(table["model"] == name) & (table["method"] == method) & (table["cu"] == cu_label(level))]
        rows.append({
            "model": name, "method": method, "parameters": layout.parameters, "step_time_s": layout.step_time,
            "parameters_counted": p.parameters, "fragments": len(plan.fragments), "period_steps": plan.period,
            "tau": plan.tau, "payload": plan.payload.describe(), "collective": plan.collective,
            "largest_layer_sync_bytes": float(plan.wire_bytes.max()),
            "bytes_per_inner_step": per_step,
            "bytes_for_budget": per_step * steps,
            "bits_ratio_dp_over_method": dp_per_step / per_step,
            "bits_ratio_with_scales_per_128": (dp_per_step / (per_step * _scaled(plan, scaled))
                                               if plan.collective == "all_gather" else math.nan),
            "peak_demand_gbit_per_s": gbit(plan.peak_demand(layout.step_time)),
            "link_gbit_per_s": gbit(prep.link.bandwidth),
            "cu_at_link": stats.cu,
            "wall_clock_days_at_link": steps * layout.step_time / stats.cu / 86400.0,
            "token_budget": budget_tokens,
            f"gbit_for_cu{cu_label(level)}": float(hit["gbit_per_s"].iloc[0]) if len(hit) else math.nan,
        })
    return pd.DataFrame(rows)


def _scaled(plan: SyncPlan, scaled: Payload) -> float:
    """How much a quantised plan's bytes grow with one fp32 scale per 128 values."""
    return scaled.bytes(1.0e6) / plan.payload.bytes(1.0e6)
