"""Fit the NCCL model's parameters to nccl-tests logs, and read/write calibration files.

The free parameters are the physically meaningful few of
:class:`~commsim.collectives.nccl.NcclParameters`: per protocol a launch latency,
a per-step latency inside a server and one between servers, and a bandwidth
factor (Simple's is 1 by definition); per link class the fraction of the link
the Simple protocol achieves; and the one-rank copy's launch and memory
efficiency. None depends on the size or the GPU count: the step counts, chunk
sizes and the tuner's choice bring the scale dependence, so a calibration fitted
on small runs predicts larger runs of the same cluster. Parameters the logs
cannot inform (remote hops without a multi-server log, the copy without a
one-rank log) keep their starting values, except the NIC's efficiency, which
without a multi-server log takes the NVLink's.

The fit minimises, over every row of every log, a soft-L1 loss (quadratic up to
3 %, linear beyond) of ``log(predicted / measured time)`` (rows of 1 MiB and
more weigh 1, smaller ones 0.3) plus a weak pull towards the starting values,
with a bounded Levenberg-Marquardt in numpy. A fit that leaves a parameter at
its bound is refused: the model then lacks a mechanism the logs show.
Errors are reported as nccl-tests would see them: ``measured time / predicted
time - 1`` is the relative error of the predicted bus bandwidth (and of algbw).

>>> import numpy as np
>>> p = params_from_vector(NAMES, vector_from_params(NAMES, NCCL_DEFAULTS))
>>> p.protocols["LL"].launch == NCCL_DEFAULTS.protocols["LL"].launch
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from commsim.collectives.closed_form import bus_factor
from commsim.collectives.nccl import (
    NCCL_DEFAULTS,
    P2P_OPS,
    PROTOCOLS,
    Cluster,
    NcclParameters,
    ProtocolCosts,
    describe_cluster,
    model_algorithms,
    p2p_remote_peers,
    predict_many,
    protocols_for,
    protocols_of,
)
from commsim.collectives.nccl_run import simulate_nccl_sizes, spread_group
from commsim.collectives.nccl_tests import NcclTestsLog
from commsim.collectives.nccl_tuner import nccl_view_time, uses_nccl_view
from commsim.config import StrictModel, dump_yaml, load_yaml, validate
from commsim.errors import ConfigError
from commsim.network.loader import load_topology
from commsim.network.topology import Topology
from commsim.units import Bandwidth, Duration, format_time

__all__ = ["LATENCY_SIZES", "NAMES", "CalibrationFit", "at_bounds", "compare_model", "compare_simulation", "fit_nccl",
           "informed_parameters", "leave_one_out", "leave_scale_out", "load_calibration", "params_from_vector",
           "refit_start", "save_calibration", "scale_of", "summarise", "topology_for", "vector_from_params"]

# name -> (lower, upper bound); latencies in seconds
_BOUNDS: dict[str, tuple[float, float]] = {}
for _p in PROTOCOLS:
    _BOUNDS[f"{_p}.launch"] = (0.1e-6, 200e-6)
    _BOUNDS[f"{_p}.hop_latency"] = (0.01e-6, 50e-6)
# a hop between servers costs the protocol's local hop plus the network's own latency (one number for all
# protocols: the NIC and switch transit does not depend on the protocol)
_BOUNDS["network_latency"] = (0.0, 100e-6)
# LL carries 4 data bytes per 8-byte store, LL128 120 per 128-byte line: their payload share caps the factor
_BOUNDS["LL.bandwidth_factor"] = (0.005, 0.5)
_BOUNDS["LL128.bandwidth_factor"] = (0.005, 120 / 128)
_BOUNDS["local_efficiency"] = (0.05, 1.0)
_BOUNDS["remote_efficiency"] = (0.05, 1.0)
_BOUNDS["copy_launch"] = (0.1e-6, 100e-6)
_BOUNDS["copy_efficiency"] = (0.05, 1.0)
# NVLink SHARP inside H100 servers, and the point-to-point collectives across servers
_BOUNDS["nvls_efficiency"] = (0.05, 1.0)
_BOUNDS["nvls_latency"] = (0.1e-6, 200e-6)
_BOUNDS["p2p_efficiency"] = (0.02, 1.0)
_BOUNDS["p2p_local_efficiency"] = (0.05, 1.0)
_BOUNDS["p2p_peer_bandwidth"] = (0.5e9, 2e12)
# one point-to-point channel (one thread block copying over NVLink) inside a server, bytes/s
_BOUNDS["p2p_channel_bandwidth"] = (1e9, 400e9)
# a remote peer of a point-to-point call, served in series by the host's proxy thread
_BOUNDS["p2p_peer_latency"] = (0.01e-6, 100e-6)
# one network message above the NIC's eager limit: a rendezvous handshake before its payload moves
_BOUNDS["rendezvous_latency"] = (0.1e-6, 200e-6)

NAMES: tuple[str, ...] = tuple(_BOUNDS)
"""Every parameter the fit may move (Simple's bandwidth factor is 1 by definition)."""

_REMOTE = {"network_latency", "remote_efficiency"}
_COPY = {"copy_launch", "copy_efficiency"}
_NVLS = {"nvls_efficiency", "nvls_latency"}
_P2P = {"p2p_efficiency", "p2p_peer_bandwidth", "p2p_peer_latency"}
_RING = {n for n in _BOUNDS if n.startswith(("LL.", "LL128.")) or n == "local_efficiency"}
# Simple's launch, a fixed cost per call, stays free: large calls show it as their intercept (with the ring's
# latency hidden behind its slices, per-step latencies no longer masquerade as one)
_LATENCY = {n for n in _BOUNDS if n.endswith(("launch", "latency")) or n.startswith(("LL.", "LL128."))} - {
    "copy_launch", "Simple.launch"}
LATENCY_SIZES = 4.0 * 2**20
"""Logs need sizes below this (bytes) to inform latencies and the low-latency protocols."""
_PRIOR = 0.01  # weight of the pull towards the starting values (log scale)
_SMALL = 0.3   # weight of rows below 1 MiB
_ROBUST = 0.03  # residual (log time) where the loss turns from quadratic to linear


def network_latency(params: NcclParameters) -> float:
    """Mean extra latency of a remote hop over a local one across protocols (>= 0), seconds."""
    extra = [c.remote_hop_latency - c.hop_latency for c in params.protocols.values()]
    return max(0.0, float(np.mean(extra)))


def vector_from_params(names: Sequence[str], params: NcclParameters) -> np.ndarray:
    """The values of ``names`` in ``params`` (seconds and fractions)."""
    out = []
    for name in names:
        head, _, attr = name.partition(".")
        if name == "network_latency":
            out.append(network_latency(params))
        elif name == "p2p_local_efficiency" and params.p2p_local_efficiency is None:
            out.append(params.local_efficiency)
        else:
            out.append(getattr(params.protocols[head], attr) if attr else getattr(params, head))
    return np.array(out, dtype=float)


def params_from_vector(names: Sequence[str], values: np.ndarray, base: NcclParameters = NCCL_DEFAULTS,
                       source: str | None = None) -> NcclParameters:
    """``base`` with ``names`` set to ``values``.

    When a hop latency or ``network_latency`` is among ``names``, every remote
    hop becomes the protocol's local hop plus the network latency.
    """
    protocols = {p: dict(vars(c)) for p, c in base.protocols.items()}
    top: dict[str, Any] = {}
    net = network_latency(base)
    for name, value in zip(names, values.tolist(), strict=True):
        head, _, attr = name.partition(".")
        if name == "network_latency":
            net = value
        elif attr:
            protocols[head][attr] = value
        else:
            top[head] = value
    if any(n == "network_latency" or n.endswith(".hop_latency") for n in names):
        for costs in protocols.values():
            costs["remote_hop_latency"] = costs["hop_latency"] + net
    return replace(base, protocols={p: ProtocolCosts(**v) for p, v in protocols.items()}, **top,
                   source=source or base.source)


# ---------------------------------------------------------------------------------------------------- logs
def topology_for(topology: Any, servers: int) -> Topology:
    """``topology`` with ``servers`` servers: a generator's ``servers`` parameter is overridden when it has one."""
    if isinstance(topology, Topology):
        return topology
    try:
        return load_topology(topology, overrides={"servers": servers})
    except ConfigError:
        return load_topology(topology)


@dataclass(frozen=True)
class _Case:
    log: NcclTestsLog
    cluster: Cluster
    sizes: np.ndarray
    times: np.ndarray
    weights: np.ndarray


def _case(log: NcclTestsLog, topology: Any) -> _Case:
    topo = topology_for(topology, log.servers)
    group = spread_group(topo, log.ranks, log.servers)
    rows = log.measured()
    sizes = rows["size"].to_numpy(dtype=float)
    return _Case(log, describe_cluster(topo, group), sizes, rows["time"].to_numpy(dtype=float),
                 np.where(sizes >= 2**20, 1.0, _SMALL))


def _envelope(case: _Case, params: NcclParameters) -> tuple[np.ndarray, list[str]]:
    """Predicted time of every size under the tuner's choice (or the forced one), and that choice."""
    if case.cluster.ranks == 1:
        return predict_many(case.cluster, case.log.op, case.sizes, params), ["copy"] * len(case.sizes)
    labels, times = [], []
    algorithms = model_algorithms(case.log.op, case.cluster)
    if params.algorithm != "auto" and params.algorithm in algorithms:
        algorithms = [params.algorithm]
    for algorithm in algorithms:
        protocols = protocols_for(algorithm, case.cluster)
        if params.protocol != "auto" and params.protocol in protocols_of(algorithm):
            protocols = (params.protocol,)
        for protocol in protocols:
            times.append(predict_many(case.cluster, case.log.op, case.sizes, params, algorithm=algorithm,
                                      protocol=protocol))
            labels.append(f"{algorithm}/{protocol}")
    stack = np.vstack(times)
    best = np.argmin(stack, axis=0)
    pairs = [tuple(label.split("/")) for label in labels]
    if uses_nccl_view(case.cluster, pairs, params.nccl_version):
        # NCCL picks on its own constants (see nccl_tuner); the pick costs what the calibrated model says
        view = np.array([[nccl_view_time(case.cluster, case.log.op, size, a, p) for size in case.sizes.tolist()]
                         for a, p in pairs])
        best = np.argmin(view, axis=0)
    return stack[best, np.arange(stack.shape[1])], [labels[i] for i in best]


# ---------------------------------------------------------------------------------------------------- the fit
@dataclass(frozen=True)
class CalibrationFit:
    """The fitted parameters, which ones moved, and the model's error on every row of every log."""

    params: NcclParameters
    free: tuple[str, ...]
    errors: pd.DataFrame
    cost: float
    iterations: int

    def summary(self) -> pd.DataFrame:
        """Per log: median and max |error| over sizes >= 1 MiB, and the row count."""
        return summarise(self.errors)


def summarise(errors: pd.DataFrame) -> pd.DataFrame:
    """Median and max |error| over sizes >= 1 MiB per log (``log``, ``size``, ``error`` columns)."""
    big = errors[errors["size"] >= 2**20]
    grouped = big.groupby("log", sort=False)["error"]
    return pd.DataFrame({"median_abs_error": grouped.apply(lambda e: float(np.median(np.abs(e)))),
                         "max_abs_error": grouped.apply(lambda e: float(np.max(np.abs(e)))),
                         "sizes": grouped.size()})


def informed_parameters(cases: Sequence[_Case], protocol: str = "auto") -> tuple[str, ...]:
    """The parameters the logs can inform; the others keep their starting values.

    Network costs need a log across servers; the copy a one-rank log; the ring
    protocols a log of a ring collective, the NVLink efficiency one inside a
    single server (across servers a ring shows only the slower link class); NVLS
    a log NCCL could run with NVLS; the point-to-point costs a log of all-to-all
    or send/recv across servers, and the per-peer cap a send/recv across servers
    (all-to-all talks to many peers at once); the point-to-point NVLink
    efficiency and channel rate a single-server log of all-to-all or send/recv.
    Latencies and the LL/LL128 bandwidth factors need sizes below
    ``LATENCY_SIZES``, except Simple's launch (the intercept every log shows);
    LL128's costs need a log where the tuner may pick LL128, or runs that forced it
    (``protocol``, the environment's ``NCCL_PROTO``). The rendezvous of a network
    message needs a ring log across servers whose NICs have an eager limit; there
    LL's bandwidth factor keeps NCCL's constant, the per-message cost taking the
    mid sizes (on Polaris fitting both moved the factor to 0.12 and predicted the
    left-out 32 GPUs worse: all-gather 10.2% vs 8.6%, all-reduce 11.1% vs 10.4%).
    """
    rings = [c for c in cases if c.cluster.ranks > 1 and c.log.op not in P2P_OPS]
    multi = any(c.cluster.servers > 1 for c in cases)
    single = any(c.cluster.ranks == 1 for c in cases)
    several = any(c.cluster.ranks > 1 for c in cases)
    # a ring across servers runs at the slower of NVLink and NIC: only a log inside one server tells them apart
    inside = any(c.cluster.servers == 1 and c.cluster.ranks > 1 for c in rings)
    nvls = any(a.startswith("nvls") for c in rings for a in model_algorithms(c.log.op, c.cluster))
    p2p = any(c.log.op in P2P_OPS and c.cluster.servers > 1 for c in cases)
    peer = any(c.log.op == "sendrecv" and c.cluster.servers > 1 for c in cases)
    # a per-peer cost shows as a slope over the number of remote peers: at one count it is the launch's
    remote_peers = {p2p_remote_peers(c.cluster, c.log.op) for c in cases if c.log.op in P2P_OPS} - {0}
    # inside a server the point-to-point rate shows only where no NIC is slower: single-server logs
    p2p_local = any(c.log.op in P2P_OPS and c.cluster.servers == 1 and c.cluster.ranks > 1 for c in cases)
    # latencies and the low-latency protocols show only where a call takes tens of microseconds: without sizes
    # below LATENCY_SIZES they keep NCCL's constants
    small = any(c.cluster.ranks > 1 and c.sizes.min() < LATENCY_SIZES for c in cases)
    # LL128 shows only where NCCL's tuner may pick it (not across servers whose GPUs reach their NICs through the
    # CPU's host bridge)
    ll128 = protocol == "LL128" or any("LL128" in protocols_for(a, c.cluster) for c in rings
                                       for a in model_algorithms(c.log.op, c.cluster))
    # a rendezvous shows only across servers whose NICs have an eager limit
    rendezvous = any(c.cluster.servers > 1 and math.isfinite(c.cluster.eager_limit) for c in rings)
    wanted = []
    for n in NAMES:
        ok = ((multi or n not in _REMOTE) and (single or n not in _COPY) and (several or n in _COPY)
              and (rings or n not in _RING) and (inside or n != "local_efficiency")
              and (nvls or n not in _NVLS) and (p2p or n not in _P2P)
              and (peer or n != "p2p_peer_bandwidth")
              and (len(remote_peers) > 1 or n != "p2p_peer_latency")
              and (p2p_local or n not in ("p2p_local_efficiency", "p2p_channel_bandwidth"))
              and (small or n not in _LATENCY) and (ll128 or not n.startswith("LL128."))
              and (rendezvous or n != "rendezvous_latency")
              # LL's mid sizes cost per byte (its payload share) and per message (the rendezvous): with a
              # rendezvous to fit, the share keeps NCCL's constant (fitting both predicts a left-out scale worse)
              and not (rendezvous and n == "LL.bandwidth_factor"))
        if ok:
            wanted.append(n)
    return tuple(wanted)


def at_bounds(free: Sequence[str], params: NcclParameters, margin: float = 0.002) -> list[str]:
    """Fitted parameters within ``margin`` (fraction of their range) of a bound, with the bound they hit.

    A parameter pressed against its bound means the model lacks a mechanism the
    logs show; such a fit is refused rather than written.
    """
    values = vector_from_params(free, params)
    hit = []
    for name, value in zip(free, values.tolist(), strict=True):
        lo, hi = _BOUNDS[name]
        if value <= lo + margin * (hi - lo):
            hit.append(f"{name} = {value:.4g} at its lower bound {lo:.4g}")
        elif value >= hi - margin * (hi - lo):
            hit.append(f"{name} = {value:.4g} at its upper bound {hi:.4g}")
    return hit


def fit_nccl(logs: Iterable[NcclTestsLog], topology: Any, *, initial: NcclParameters = NCCL_DEFAULTS,
             iterations: int = 300, allow_bounds: bool = False) -> CalibrationFit:
    """Fit the model to ``logs`` measured on ``topology`` (file, shorthand or Topology).

    Each log is placed on ``topology`` with its server count (a generator's
    ``servers`` parameter is overridden) and its ranks spread evenly over them.
    A fit with a parameter at its bound is refused (``ConfigError`` naming them)
    unless ``allow_bounds``.
    """
    logs = list(logs)
    if not logs:
        raise ConfigError(field="logs", value=[], rule="is empty", fix="give at least one nccl-tests log")
    cases = [_case(log, topology) for log in logs]
    free = informed_parameters(cases, initial.protocol)
    lo = np.array([_BOUNDS[n][0] for n in free])
    hi = np.array([_BOUNDS[n][1] for n in free])
    start = vector_from_params(free, initial)
    # an absent cap (infinite) starts low, where it binds and the logs can move it; a cap that never binds would
    # have no gradient
    start = np.where(np.isfinite(start), start, 10.0 * lo)
    x0 = np.clip(start, lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo))

    def to_x(u: np.ndarray) -> np.ndarray:
        return lo + (hi - lo) / (1.0 + np.exp(-np.clip(u, -50.0, 50.0)))

    def to_u(x: np.ndarray) -> np.ndarray:
        z = (x - lo) / (hi - lo)
        return np.log(z / (1.0 - z))

    def residuals(u: np.ndarray) -> np.ndarray:
        x = to_x(u)
        params = _tied(free, params_from_vector(free, x, initial))
        parts = [_soft_l1(c.weights * np.log(_envelope(c, params)[0] / c.times)) for c in cases]
        parts.append(_PRIOR * np.log(x / x0))
        return np.concatenate(parts)

    u, cost, done = _levenberg_marquardt(residuals, to_u(x0), iterations)
    names = ", ".join(log.name for log in logs)
    params = _tied(free, params_from_vector(free, to_x(u), initial, source=f"fit to {names}"))
    hit = at_bounds(free, params)
    if hit and not allow_bounds:
        raise ConfigError(field="calibration", value=", ".join(h.split(" = ")[0] for h in hit),
                          rule=f"is a fit to {names} with parameters pressed against their bounds ({'; '.join(hit)}): "
                               "the model lacks a mechanism these logs show (or the topology's link rates are wrong)",
                          fix="check the topology against the hardware of the logs (NICs per GPU, link rates), "
                              "fit fewer logs, or pass allow_bounds=True to inspect the fit anyway")
    return CalibrationFit(params=params, free=free, errors=compare_model(logs, topology, params), cost=cost,
                          iterations=done)


def _tied(free: Sequence[str], params: NcclParameters) -> NcclParameters:
    """Without a log across servers, the NIC reached at the fraction the logs show of NVLink.

    Nothing then shows how much of a NIC the Simple protocol reaches; the best
    guess is the fraction it reaches of the other link class, not the whole link.
    (The converse is not assumed: without a one-server log the NVLink efficiency
    keeps its default, as H100 servers reach more of NVLink than of their NICs.)
    """
    if "local_efficiency" in free and "remote_efficiency" not in free:
        return replace(params, remote_efficiency=params.local_efficiency)
    return params


def _soft_l1(r: np.ndarray) -> np.ndarray:
    """Soft-L1 residuals: quadratic within ``_ROBUST`` (relative), linear beyond, so that a few sizes the model
    does not describe (a benchmark's warm-up ramp) pull less on the parameters than the rest."""
    return np.sign(r) * np.sqrt(2.0 * _ROBUST * _ROBUST * (np.sqrt(1.0 + (r / _ROBUST) ** 2) - 1.0))


def _levenberg_marquardt(f: Any, u: np.ndarray, iterations: int) -> tuple[np.ndarray, float, int]:
    """Minimise ``|f(u)|^2`` (forward-difference Jacobian, adaptive damping); returns (u, cost, iterations)."""
    r = f(u)
    cost = float(r @ r)
    lam = 1e-2
    h = 1e-6
    for it in range(iterations):
        jac = np.empty((r.shape[0], u.shape[0]))
        for j in range(u.shape[0]):
            du = np.zeros_like(u)
            du[j] = h
            jac[:, j] = (f(u + du) - r) / h
        a = jac.T @ jac
        g = jac.T @ r
        improved = False
        while lam < 1e10:
            step = np.linalg.solve(a + lam * np.diag(np.diag(a) + 1e-12), -g)
            r2 = f(u + step)
            c2 = float(r2 @ r2)
            if c2 < cost:
                improved = cost - c2 > 1e-12 * max(cost, 1e-300)
                u, r, cost = u + step, r2, c2
                lam = max(lam / 3.0, 1e-12)
                break
            lam *= 4.0
        if not improved:
            return u, cost, it + 1
    return u, cost, iterations


# ---------------------------------------------------------------------------------------------------- errors
def _table(case: _Case, predicted: np.ndarray, choice: list[str], label: str) -> pd.DataFrame:
    log = case.log
    rows = log.measured()
    factor = bus_factor(log.op, log.ranks)
    return pd.DataFrame({
        "log": log.name, "ranks": log.ranks, "servers": log.servers, "size": case.sizes.astype(np.int64),
        "choice": choice, "measured_time": case.times, label: predicted,
        "measured_busbw": rows["busbw"].to_numpy(), "predicted_busbw": case.sizes / predicted * factor,
        "error": case.times / predicted - 1.0,
    })


def compare_model(logs: Iterable[NcclTestsLog], topology: Any, params: NcclParameters) -> pd.DataFrame:
    """Per log and size: measured vs the model's (closed-form) time and bus bandwidth, and the error."""
    out = []
    for log in logs:
        case = _case(log, topology)
        predicted, choice = _envelope(case, params)
        out.append(_table(case, predicted, choice, "predicted_time"))
    return pd.concat(out, ignore_index=True)


def compare_simulation(logs: Iterable[NcclTestsLog], topology: Any, params: NcclParameters, *,
                       min_size: float = 0.0) -> pd.DataFrame:
    """Like :func:`compare_model`, but each size is simulated (sizes below ``min_size`` are skipped)."""
    out = []
    for log in logs:
        case = _case(log, topology)
        keep = case.sizes >= min_size
        case = replace(case, sizes=case.sizes[keep], times=case.times[keep], weights=case.weights[keep])
        topo = topology_for(topology, log.servers)
        results = simulate_nccl_sizes(topo, log.op, case.sizes.tolist(), ranks=log.ranks, servers=log.servers,
                                      calibration=params)
        times = [r.time for r in results]
        choice = ["copy" if r.ranks == 1 else f"{r.algorithm}/{r.protocol}" for r in results]
        table = _table(case, np.array(times), choice, "predicted_time")
        keep_rows = log.measured()["size"].to_numpy() >= min_size
        table["measured_busbw"] = log.measured()["busbw"].to_numpy()[keep_rows]
        out.append(table)
    return pd.concat(out, ignore_index=True)


def leave_one_out(logs: Sequence[NcclTestsLog], topology: Any, *, initial: NcclParameters = NCCL_DEFAULTS,
                  iterations: int = 300) -> pd.DataFrame:
    """Fit on all logs but one and predict the one left out, for each log; the held-out rows.

    The fits are checks, not calibrations: one with a parameter at its bound is
    used anyway and named in the ``bounds`` column.
    """
    out = []
    for i, held in enumerate(logs):
        rest = [log for j, log in enumerate(logs) if j != i]
        if not rest:
            continue
        out.append(_predict_held(rest, [held], topology, initial, iterations))
    if not out:
        raise ConfigError(field="logs", value=len(logs), rule="needs at least two logs to leave one out",
                          fix="give two or more nccl-tests logs")
    return pd.concat(out, ignore_index=True)


def scale_of(log: NcclTestsLog) -> int:
    """The scale of a log for the leave-one-scale-out check: its GPU count."""
    return log.ranks


def leave_scale_out(logs: Sequence[NcclTestsLog], topology: Any, *, initial: NcclParameters = NCCL_DEFAULTS,
                    iterations: int = 300) -> pd.DataFrame:
    """Fit on the logs of every scale but the largest and predict the largest (every op measured there).

    This is the question a user asks of a calibration: fitted on small runs,
    does it predict the big one? Needs logs at two scales or more; the fit is
    a check (a parameter at its bound is named in ``bounds``, not refused).
    """
    scales = sorted({scale_of(log) for log in logs})
    if len(scales) < 2:
        raise ConfigError(field="logs", value=[log.name for log in logs],
                          rule=f"all measure one scale ({scales[0]} GPUs), so none can be left out",
                          fix="give logs of at least two GPU counts (e.g. 8 and 32 GPUs)")
    largest = scales[-1]
    held = [log for log in logs if scale_of(log) == largest]
    rest = [log for log in logs if scale_of(log) != largest]
    return _predict_held(rest, held, topology, initial, iterations)


def _predict_held(rest: Sequence[NcclTestsLog], held: Sequence[NcclTestsLog], topology: Any,
                  initial: NcclParameters, iterations: int) -> pd.DataFrame:
    fit = fit_nccl(rest, topology, initial=initial, iterations=iterations, allow_bounds=True)
    table = compare_model(held, topology, fit.params)
    table["fitted_on"] = ", ".join(log.name for log in rest)
    table["bounds"] = "; ".join(at_bounds(fit.free, fit.params))
    return table


def refit_start(params: NcclParameters) -> NcclParameters:
    """Where a refit of ``params``' logs starts: NCCL's defaults under the environment ``params`` records.

    The runs' forced algorithm and protocol and their NCCL version are facts about
    the logs, not fitted numbers: a refit (or a leave-one-scale-out check) keeps them.
    """
    return replace(NCCL_DEFAULTS, algorithm=params.algorithm, protocol=params.protocol,
                   nccl_version=params.nccl_version)


# ---------------------------------------------------------------------------------------------------- files
_Time = Annotated[Duration, Field(ge=0)]
_Fraction = Annotated[float, Field(gt=0, le=1)]


class _ProtocolFile(StrictModel):
    launch: _Time
    hop_latency: _Time
    remote_hop_latency: _Time
    bandwidth_factor: _Fraction = 1.0


class _DeviceCopyFile(StrictModel):
    launch: _Time
    efficiency: _Fraction


class _NvlsFile(StrictModel):
    efficiency: _Fraction = NCCL_DEFAULTS.nvls_efficiency
    latency: _Time = NCCL_DEFAULTS.nvls_latency


class _P2PFile(StrictModel):
    efficiency: _Fraction = 1.0
    local_efficiency: _Fraction | None = None
    peer_bandwidth: Annotated[Bandwidth, Field(gt=0)] | None = None
    channels: Annotated[int, Field(ge=1)] = NCCL_DEFAULTS.p2p_channels
    channel_bandwidth: Annotated[Bandwidth, Field(gt=0)] | None = None
    peer_latency: _Time = 0.0


class _NetworkFile(StrictModel):
    rendezvous_latency: _Time = 0.0


class _EnvironmentFile(StrictModel):
    algorithm: Literal["auto", "ring", "tree", "nvls", "nvls_tree"] = "auto"
    protocol: Literal["auto", "LL", "LL128", "Simple"] = "auto"
    nccl_version: Annotated[str, Field(pattern=r"^(\d+(\.\d+)*)?$")] = ""
    note: str = ""


class CalibrationFile(StrictModel):
    """A calibration file: the NCCL model's parameters with units, and where they came from."""

    kind: str = "commsim/nccl-calibration"
    description: str = ""
    topology: str = ""
    fitted_on: list[str] = []
    fitted: list[str] = []
    protocols: dict[str, _ProtocolFile]
    local_efficiency: _Fraction
    remote_efficiency: _Fraction
    device_copy: _DeviceCopyFile
    nvls: _NvlsFile = _NvlsFile()
    p2p: _P2PFile = _P2PFile()
    network: _NetworkFile = _NetworkFile()
    environment: _EnvironmentFile = _EnvironmentFile()
    quality: dict[str, dict[str, float]] = {}
    leave_scale_out: dict[str, dict[str, float]] = {}


def load_calibration(path: str | Path) -> NcclParameters:
    """Read a calibration file written by :func:`save_calibration` (or by hand)."""
    data = load_yaml(path)
    spec = validate(CalibrationFile, data, source=str(path))
    if spec.kind != "commsim/nccl-calibration":
        raise ConfigError(field="kind", value=spec.kind, rule="is not a commsim NCCL calibration",
                          fix="give a file written by 'commsim calibrate nccl-tests'", source=str(path))
    missing = [p for p in PROTOCOLS if p not in spec.protocols]
    unknown = [p for p in spec.protocols if p not in PROTOCOLS]
    if missing or unknown:
        raise ConfigError(field="protocols", value=sorted(spec.protocols),
                          rule=f"must list exactly {', '.join(PROTOCOLS)}", fix="add or rename the protocol entries",
                          source=str(path))
    return NcclParameters(
        protocols={p: ProtocolCosts(**spec.protocols[p].model_dump()) for p in PROTOCOLS},
        local_efficiency=spec.local_efficiency, remote_efficiency=spec.remote_efficiency,
        copy_launch=spec.device_copy.launch, copy_efficiency=spec.device_copy.efficiency,
        nvls_efficiency=spec.nvls.efficiency, nvls_latency=spec.nvls.latency, p2p_efficiency=spec.p2p.efficiency,
        p2p_local_efficiency=spec.p2p.local_efficiency,
        p2p_peer_bandwidth=math.inf if spec.p2p.peer_bandwidth is None else spec.p2p.peer_bandwidth,
        p2p_channels=spec.p2p.channels,
        p2p_channel_bandwidth=math.inf if spec.p2p.channel_bandwidth is None else spec.p2p.channel_bandwidth,
        p2p_peer_latency=spec.p2p.peer_latency,
        rendezvous_latency=spec.network.rendezvous_latency, algorithm=spec.environment.algorithm, protocol=spec.environment.protocol,
        nccl_version=spec.environment.nccl_version, source=str(path))


def _t(value: float) -> str:
    return format_time(value, digits=5)


def save_calibration(params: NcclParameters, path: str | Path, *, topology: str = "",
                     fitted_on: Sequence[str] = (), quality: pd.DataFrame | None = None,
                     description: str = "", held_out: pd.DataFrame | None = None,
                     environment_note: str = "", fitted: Sequence[str] = ()) -> None:
    """Write ``params`` as a calibration YAML (times with units, fractions as numbers)."""
    data: dict[str, Any] = {
        "kind": "commsim/nccl-calibration",
        "description": description or "NCCL protocol costs fitted by 'commsim calibrate nccl-tests'. Launch: "
                                      "once per call; hop latencies: per ring/tree step inside a server and between "
                                      "servers, on top of the topology's route latency; bandwidth_factor: share of "
                                      "Simple's bandwidth; efficiencies: fraction of the link the Simple protocol "
                                      "reaches; device_copy: the one-rank out-of-place copy; nvls: NVLink SHARP "
                                      "inside a server; p2p: all-to-all and send/recv (NIC and NVLink fractions, the "
                                      "most one peer connection moves across servers, NCCL's point-to-point channels "
                                      "and the most one moves inside a server, the serial cost of each remote "
                                      "peer); network: the rendezvous of a network "
                                      "message above the NIC's eager limit; environment: an algorithm or "
                                      "protocol the runs forced. quality: the fit's |busbw error| over sizes >= 1 "
                                      "MiB per log; leave_scale_out: the largest scale predicted by a fit to the "
                                      "smaller ones; fitted: the parameters the logs informed (the others keep "
                                      "NCCL's constants or the defaults).",
        "topology": topology,
        "fitted_on": list(fitted_on),
        "fitted": list(fitted),
        "protocols": {p: {"launch": _t(c.launch), "hop_latency": _t(c.hop_latency),
                          "remote_hop_latency": _t(c.remote_hop_latency),
                          "bandwidth_factor": round(c.bandwidth_factor, 5)} for p, c in params.protocols.items()},
        "local_efficiency": round(params.local_efficiency, 5),
        "remote_efficiency": round(params.remote_efficiency, 5),
        "device_copy": {"launch": _t(params.copy_launch), "efficiency": round(params.copy_efficiency, 5)},
        "nvls": {"efficiency": round(params.nvls_efficiency, 5), "latency": _t(params.nvls_latency)},
        "p2p": {"efficiency": round(params.p2p_efficiency, 5)},
        "network": {"rendezvous_latency": _t(params.rendezvous_latency)},
        "environment": {"algorithm": params.algorithm, "protocol": params.protocol,
                        "nccl_version": params.nccl_version, "note": environment_note},
    }
    if params.p2p_local_efficiency is not None:
        data["p2p"]["local_efficiency"] = round(params.p2p_local_efficiency, 5)
    if math.isfinite(params.p2p_peer_bandwidth):
        data["p2p"]["peer_bandwidth"] = f"{params.p2p_peer_bandwidth / 1e9:.5g} GB/s"
    if params.p2p_peer_latency > 0:
        data["p2p"]["peer_latency"] = _t(params.p2p_peer_latency)
    if math.isfinite(params.p2p_channel_bandwidth):
        data["p2p"]["channels"] = params.p2p_channels
        data["p2p"]["channel_bandwidth"] = f"{params.p2p_channel_bandwidth / 1e9:.5g} GB/s"
    for key, table in (("quality", quality), ("leave_scale_out", held_out)):
        if table is not None:
            data[key] = {str(name): {k: (round(float(v), 4) if isinstance(v, float) else int(v))
                                     for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
                         for name, row in table.to_dict("index").items()}
    dump_yaml(data, path)

