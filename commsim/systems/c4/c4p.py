"""C4P comparison: ECMP hashing versus planned paths (and re-planning after a link failure).

For every job on the fabric two collectives are simulated QP by QP
(:class:`~commsim.systems.c4.traffic.RingSim`):

* **dp** -- the job's data-parallel gradient all-reduce: one ring per (pipeline
  stage, tensor rank), i.e. per rail, over the job's servers, with the gradient
  bytes of a rank (from the replayed training step);
* **hierarchical** -- an nccl-tests-style all-reduce of ``allreduce_size`` over all
  the job's GPUs, the shared hierarchical all-reduce
  (:func:`commsim.collectives.hierarchical.hierarchical_phases`): ring
  reduce-scatter inside every server (NVLink), ring all-reduce of ``1/8`` of the
  buffer per rail across servers (the fabric), ring all-gather inside every
  server; the phases run one after the other.

Variants: ECMP with ``ecmp_seeds`` hash seeds, planned (C4P), and with a failed
leaf-spine link: ECMP (switches re-hash), planned without re-planning (broken
flows fall back to the hash) and planned with re-planning. *Ideal* is the
alpha-beta time with every NIC at its bonded bandwidth (both ports) and the
simulated latency (and, for the hierarchical all-reduce, the simulated NVLink phases). Iteration times combine the replayed compute path with
the simulated data-parallel rings (:func:`~commsim.systems.c4.model.iteration_time`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from commsim.errors import ConfigError
from commsim.faults import LinkDown
from commsim.network.topology import Topology
from commsim.systems.c4.layout import dp_rings, job_devices, place_jobs, server_devices
from commsim.systems.c4.model import ComputeProfile, compute_profile, iteration_time
from commsim.systems.c4.params import C4Params
from commsim.systems.c4.traffic import Ring, RingResult, RingSim, switch_links

__all__ = ["C4PResult", "run_c4p", "nic_bandwidth", "bucket_time_of", "uplink_table"]

Progress = Callable[[float, float, str], None]


@dataclass
class C4PResult:
    """Tables, metrics and notes of the C4P comparison, and a representative run for the dashboard."""

    allreduce: pd.DataFrame
    iteration: pd.DataFrame
    uplinks: pd.DataFrame
    ports: pd.DataFrame
    metrics: dict[str, tuple[float, str]]
    notes: list[str]
    representative: RingResult | None = None
    job_servers: list[list[int]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def nic_bandwidth(topology: Topology, device: str) -> float:
    """Injection bandwidth of a device's NIC, bytes/s: min(PCIe, sum of its switch ports)."""
    graph = topology.graph
    nics = [n for n in graph.successors(device) if topology.kind(n) == "nic"]
    if not nics:
        raise ConfigError(field="topology", value=device, rule="has no NIC of its own",
                          fix="use a topology with one NIC per GPU (rail_optimized)")
    nic = nics[0]
    ports = sum(d["bandwidth"] for _, n, d in graph.out_edges(nic, data=True) if topology.kind(n) == "switch")
    return float(min(graph.edges[device, nic]["bandwidth"], ports))


def bucket_time_of(result: RingResult, rings: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    """Time of a ring all-reduce of ``s`` bytes on these rings: ``max_r L_r + s (T_r - L_r) / S_r``.

    The fluid rates of the flows do not depend on the buffer size, so the
    simulated time for ``S_r`` bytes scales linearly past the latency ``L_r``.
    """
    latency = result.ring_latency[rings]
    slope = (result.ring_time[rings] - latency) / np.array([result.rings[r].nbytes for r in rings])

    def fn(sizes: np.ndarray) -> np.ndarray:
        return np.max(latency[None, :] + np.asarray(sizes, dtype=float)[:, None] * slope[None, :], axis=1)

    return fn


def uplink_table(topology: Topology, result: RingResult, variant: str) -> pd.DataFrame:
    """QPs and bytes on every leaf->spine uplink and spine->leaf downlink of a run."""
    c = topology.compile()
    rows = []
    for a, b in switch_links(topology):
        for src, dst, direction in ((a, b, "up"), (b, a, "down")):
            e = c.edge_index[(c.index[src], c.index[dst])]
            leaf, spine = (src, dst) if direction == "up" else (dst, src)
            rows.append({"variant": variant, "leaf": leaf, "spine": spine, "direction": direction,
                         "qps": int(result.edge_flows[e]), "bytes": float(result.edge_bytes[e])})
    return pd.DataFrame(rows)


def _port_balance(topology: Topology, result: RingResult, variant: str) -> dict[str, Any]:
    """How evenly the NICs' egress QPs use their ports."""
    c = topology.compile()
    counts: dict[int, list[int]] = {}
    for v, kind in enumerate(c.kinds):
        if kind != "nic":
            continue
        out = [int(result.edge_flows[e]) for w, e in c.out_edges[v] if c.kinds[w] == "switch"]
        if sum(out) > 0:
            counts[v] = out
    one_port = sum(1 for v in counts.values() if len(v) > 1 and max(v) == sum(v)) if counts else 0
    spread = [max(v) / (sum(v) / len(v)) for v in counts.values()] if counts else [math.nan]
    return {"variant": variant, "nics_used": len(counts), "nics_on_one_port": one_port,
            "max_port_load_over_mean": float(np.max(spread)), "mean_port_load_over_mean": float(np.mean(spread))}


def _failed_links(topology: Topology, planned: RingResult, given: list[tuple[str, str]] | None
                  ) -> list[tuple[str, str]]:
    links = switch_links(topology)
    known = {frozenset(link) for link in links}
    if given is not None:
        for i, (a, b) in enumerate(given):
            if frozenset((a, b)) not in known:
                raise ConfigError(field=f"workload.params.c4p.failed_links[{i}]", value=[a, b],
                                  rule="is not a switch-to-switch link of the topology",
                                  fix=f"name a leaf-spine link such as {list(links[0]) if links else '[leaf, spine]'}")
        return list(given)
    busiest = max(links, key=lambda link: planned.qps_on(*link), default=None)   # the first of equals
    return [busiest] if busiest is not None and planned.qps_on(*busiest) > 0 else []


def run_c4p(topology: Topology, params: C4Params, *, seed: int = 0, step_latency: float = 0.0,
            progress: Progress | None = None, faults: list[Any] | None = None) -> C4PResult:
    """Run the C4P comparison for ``params.c4p`` on ``topology``.

    ``faults`` (:mod:`commsim.faults` link models, times from each collective's start)
    hit every variant's fabric, on top of the failure variants' own failed link.
    """
    p = params.c4p
    job = params.job
    servers = server_devices(topology)
    local = len(servers[0])
    if job.tp > local or local % job.tp:
        raise ConfigError(field="workload.params.job.tp", value=job.tp,
                          rule=f"must divide the {local} GPUs of a server", fix=f"use tp in 1..{local} dividing it")
    sizes = [j.servers for j in p.jobs]
    placed = place_jobs(len(servers), sizes, p.placement, seed)
    notes: list[str] = []
    profiles: list[ComputeProfile] = []
    dp_ring_list: list[Ring] = []
    hier_ring_list: list[Ring] = []
    dp_owner: list[tuple[int, int]] = []     # (job, stage) of each dp ring
    for j, job_servers in enumerate(placed):
        gpus = len(job_servers) * local
        if gpus % (job.tp * job.pp):
            raise ConfigError(field=f"workload.params.c4p.jobs[{j}].servers", value=len(job_servers),
                              rule=f"gives {gpus} GPUs, not a multiple of tp x pp = {job.tp * job.pp}",
                              fix="choose a server count that tp x pp divides")
        dp = gpus // (job.tp * job.pp)
        profile = compute_profile(topology, job, dp)
        profiles.append(profile)
        rings = dp_rings(servers, job_servers, tp=job.tp, pp=job.pp, nbytes=profile.dp_bytes, job=j)
        dp_ring_list += rings
        dp_owner += [(j, r // job.tp) for r in range(len(rings))]
        hier_ring_list.append(Ring(members=tuple(job_devices(servers, job_servers)), nbytes=p.allreduce_size, job=j,
                                   label=f"job{j} hierarchical", ranks_per_node=local))
    b_nic = nic_bandwidth(topology, servers[0][0])

    variants: list[tuple[str, str, int, bool, bool]] = [
        (f"ecmp (seed {seed + i})", "ecmp", seed + i, False, True) for i in range(p.ecmp_seeds)]
    variants.append(("planned", "planned", seed, False, True))
    runs: dict[tuple[str, str], RingResult] = {}
    total = len(variants) + 3
    step = 0

    def simulate(name: str, routing: str, s: int, fail: list[tuple[str, str]], replan: bool, record: bool) -> None:
        nonlocal step
        for coll, rings in (("dp", dp_ring_list), ("hierarchical", hier_ring_list)):
            down = [LinkDown(at=0.0, link=link) for link in fail]   # after planning: C4P re-plans around them
            sim = RingSim(topology, rings, qps=p.qps, routing=routing, seed=s, replan=replan,
                          step_latency=step_latency, record_usage=record and coll == "dp",
                          faults=[*(faults or []), *down])
            runs[(name, coll)] = sim.run()
            runs[(name, coll)].check_finished(f"the C4P {coll} all-reduce ({name})")
        step += 1
        if progress is not None:
            progress(step, total, f"C4P {name}")

    for name, routing, s, _fail, _replan in variants:
        simulate(name, routing, s, [], True, record=name.startswith("ecmp") and s == seed)
    failed = _failed_links(topology, runs[("planned", "dp")], p.failed_links)
    if failed:
        label = ", ".join(f"{a}-{b}" for a, b in failed)
        simulate("ecmp, link down", "ecmp", seed, failed, True, record=False)
        simulate("planned, link down, no re-plan", "planned", seed, failed, False, record=False)
        simulate("planned, link down, re-planned", "planned", seed, failed, True, record=False)
        notes.append(f"C4P failure variants take down {label} (the leaf-spine link carrying the most planned QPs "
                     "unless c4p.failed_links names others) before the collectives start.")
    else:
        notes.append("C4P: no job QP crosses a leaf-spine link, so there are no failure variants.")

    # ------------------------------------------------------------------ tables
    rows, iter_rows = [], []
    names = [v[0] for v in variants] + ([n for n in ("ecmp, link down", "planned, link down, no re-plan",
                                                     "planned, link down, re-planned")] if failed else [])
    planned_dp = runs[("planned", "dp")]
    planned_h = runs[("planned", "hierarchical")]
    for j, job_servers in enumerate(placed):
        gpus = len(job_servers) * local
        mine_dp = [r for r, (owner, _) in enumerate(dp_owner) if owner == j]
        # ideal: both NIC ports, the simulated route latency
        conn = np.array([dp_ring_list[r].connection_bytes for r in mine_dp])
        ideal_dp = float(np.max(planned_dp.ring_latency[mine_dp] + conn / b_nic))
        # the NVLink phases as simulated, the fabric phase at its latency plus both NIC ports' bandwidth
        fabric = 1 if local > 1 else 0    # the phase across servers (after the intra-server reduce-scatter)
        ideal_h = float(planned_h.ring_time[j] - planned_h.phase_time[j][fabric]
                        + planned_h.phase_latency[j][fabric] + hier_ring_list[j].connection_bytes / b_nic)
        factor = 2.0 * (gpus - 1) / gpus
        dp_factor = dp_ring_list[mine_dp[0]].connection_bytes / dp_ring_list[mine_dp[0]].nbytes
        for name in names:
            res = runs[(name, "dp")]
            t = float(np.max(res.ring_time[mine_dp]))
            s_dp = dp_ring_list[mine_dp[0]].nbytes
            rows.append({"job": j, "servers": len(job_servers), "collective": "dp", "variant": name,
                         "bytes": s_dp, "time": t, "busbw": dp_factor * s_dp / t,
                         "ideal_busbw": dp_factor * s_dp / ideal_dp, "fraction_of_ideal": ideal_dp / t})
            res_h = runs[(name, "hierarchical")]
            t_h = float(res_h.ring_time[j])
            rows.append({"job": j, "servers": len(job_servers), "collective": "hierarchical", "variant": name,
                         "bytes": p.allreduce_size, "time": t_h, "busbw": factor * p.allreduce_size / t_h,
                         "ideal_busbw": factor * p.allreduce_size / ideal_h, "fraction_of_ideal": ideal_h / t_h})
            stages = [[r for r in mine_dp if dp_owner[r][1] == st] for st in range(job.pp)]
            fns = [bucket_time_of(res, st) for st in stages]
            step_time, exposed = iteration_time(profiles[j], fns)
            iter_rows.append({"job": j, "variant": name, "iteration_time": step_time, "exposed_dp": exposed,
                              "compute_path": max(profiles[j].backward_end) + max(profiles[j].optimizer),
                              "tokens_per_s": profiles[j].tokens_per_step / step_time,
                              "micro_batches": profiles[j].micro_batches})
    allreduce = pd.DataFrame(rows)
    iteration = pd.DataFrame(iter_rows)
    uplinks = pd.concat([uplink_table(topology, runs[(n, "dp")], n) for n in names], ignore_index=True)
    ports = pd.DataFrame([_port_balance(topology, runs[(n, "dp")], n) for n in names])

    # ------------------------------------------------------------------ metrics (job 0 and all jobs)
    def mean_of(coll: str, prefix: str, col: str, job_index: int | None = 0) -> float:
        picked = allreduce["variant"] == prefix if prefix == "planned" else allreduce["variant"].str.startswith(prefix)
        sel = allreduce[(allreduce["collective"] == coll) & picked]
        if job_index is not None:
            sel = sel[sel["job"] == job_index]
        return float(sel[col].mean())

    def iter_of(prefix: str, job_index: int = 0) -> float:
        picked = iteration["variant"] == prefix if prefix == "planned" else iteration["variant"].str.startswith(prefix)
        sel = iteration[(iteration["job"] == job_index) & picked]
        return float(sel["iteration_time"].mean())

    metrics: dict[str, tuple[float, str]] = {
        "c4p_allreduce_ecmp_fraction_of_ideal": (mean_of("hierarchical", "ecmp (", "fraction_of_ideal"), "fraction"),
        "c4p_allreduce_planned_fraction_of_ideal": (mean_of("hierarchical", "planned", "fraction_of_ideal"),
                                                    "fraction"),
        "c4p_allreduce_ecmp_busbw": (mean_of("hierarchical", "ecmp (", "busbw"), "B/s"),
        "c4p_allreduce_planned_busbw": (mean_of("hierarchical", "planned", "busbw"), "B/s"),
        "c4p_dp_ecmp_fraction_of_ideal": (mean_of("dp", "ecmp (", "fraction_of_ideal"), "fraction"),
        "c4p_dp_planned_fraction_of_ideal": (mean_of("dp", "planned", "fraction_of_ideal"), "fraction"),
        "c4p_iteration_ecmp": (iter_of("ecmp ("), "s"),
        "c4p_iteration_planned": (iter_of("planned"), "s"),
    }
    metrics["c4p_iteration_speedup"] = (metrics["c4p_iteration_ecmp"][0] / metrics["c4p_iteration_planned"][0] - 1,
                                        "fraction")
    if len(placed) > 1:
        metrics["c4p_dp_ecmp_fraction_of_ideal_all_jobs"] = (mean_of("dp", "ecmp (", "fraction_of_ideal", None),
                                                             "fraction")
        metrics["c4p_dp_planned_fraction_of_ideal_all_jobs"] = (mean_of("dp", "planned", "fraction_of_ideal", None),
                                                                "fraction")
    if failed:
        for tag, prefix in (("ecmp", "ecmp, link"), ("static", "planned, link down, no"),
                            ("replanned", "planned, link down, re")):
            metrics[f"c4p_dp_link_down_{tag}_fraction_of_ideal"] = (
                mean_of("dp", prefix, "fraction_of_ideal", None), "fraction")
    exposed_planned = float(iteration[(iteration["job"] == 0) & (iteration["variant"] == "planned")]["exposed_dp"]
                            .iloc[0])
    metrics["c4p_comm_share_planned"] = (exposed_planned / metrics["c4p_iteration_planned"][0], "fraction")
    notes += [
        f"C4P: {len(placed)} job(s) of {sizes} servers placed {p.placement}; tp={job.tp}, pp={job.pp}, "
        f"{p.qps} QPs per ring connection, each hashed (ECMP) or planned on its own; bytes split evenly over QPs "
        "(NCCL/ACCL behaviour), so a QP on a shared port or uplink slows its ring; ring step latency "
        f"{step_latency * 1e6:g} us (scenario collective.step_latency) plus route latency.",
        f"C4P ideal: NIC at {b_nic / 1e9:.1f} GB/s (both ports of a bonded NIC), alpha-beta with the simulated route "
        "latency; 'dp' is the job's gradient all-reduce on rail rings (every byte crosses a NIC), "
        "'hierarchical' an all-reduce of all the job's GPUs whose NVLink phases the fabric does not affect.",
        f"C4P iteration times: replayed compute path of one replica ({profiles[0].micro_batches} micro-batches of "
        f"{profiles[0].micro_batch_time * 1e3:.1f} ms) + data-parallel buckets on the simulated rings.",
    ]
    return C4PResult(allreduce=allreduce, iteration=iteration, uplinks=uplinks, ports=ports, metrics=metrics,
                     notes=notes, representative=runs[(variants[0][0], "dp")], job_servers=placed, failed=failed)
