"""``commsim collective``: simulate one collective over a range of sizes, as nccl-tests prints it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from commsim.cli._app import app, console, fail
from commsim.errors import CommsimError, ConfigError
from commsim.paths import output_file

if TYPE_CHECKING:
    import pandas as pd

_CLUSTERS: dict[tuple[int, tuple[str, ...]], Any] = {}
_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8, "int8": 1, "int32": 4, "int64": 8, "fp8": 1}


@app.command("collective")
def collective_command(
    topology: Annotated[str, typer.Option("--topology", "-t", help="Topology YAML file or shorthand "
                                          "(e.g. topologies/azure_ndv4.yaml or switch:8,50GB/s,500ns).")],
    op: Annotated[str | None, typer.Option("--op", help="all_reduce, reduce_scatter, all_gather, all_to_all, "
                                           "sendrecv, ... \\[default: all_reduce, or the op of --compare].")] = None,
    algo: Annotated[str, typer.Option("--algo", help="auto (NCCL's tuner), an NCCL algorithm (ring, tree, nvls, "
                                      "nvls_tree, p2p) or any registered schedule (double_binary_tree, "
                                      "halving_doubling, ...).")] = "auto",
    sizes: Annotated[str | None, typer.Option("--sizes", help="MIN:MAX in powers of two, MIN:MAX:xF or a list "
                                              "\\[default: 1KiB:4GiB, or the sizes of --compare].")] = None,
    ranks: Annotated[int | None, typer.Option("--ranks", help="Ranks \\[default: every device, or the ranks of "
                                              "--compare].")] = None,
    servers: Annotated[int | None, typer.Option("--servers", help="Servers: sets a generator's 'servers' "
                                                "parameter and spreads the ranks over them \\[default: the "
                                                "topology's, or the hosts of --compare].")] = None,
    calibration: Annotated[str | None, typer.Option("--calibration", help="Calibration YAML (commsim calibrate "
                                                    "nccl-tests), or 'none' for NCCL's constants \\[default: "
                                                    "TOPOLOGY.calibration.yaml beside a topology file, if "
                                                    "there is one].")] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="auto, LL, LL128 or Simple.")] = "auto",
    dtype: Annotated[str | None, typer.Option("--dtype", help="Element type for the count column \\[default: fp32, "
                                              "or the type of --compare].")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write the table(s) to this CSV (SI units; with "
                                             "several --compare logs, a 'log' column tells them apart).")] = None,
    compare: Annotated[list[Path] | None, typer.Option("--compare", help="An nccl-tests log (repeat for several): "
                                                       "op, ranks, servers and sizes come from it; adds its "
                                                       "measured time, busbw and the error per size, one table "
                                                       "per log.")] = None,
    estimate: Annotated[bool, typer.Option("--estimate", help="Closed form only, no simulation: instant for "
                                           "any scale, exact on uncongested fabrics.")] = False,
) -> None:
    """Simulate OP on the topology for every size; print time, algbw, busbw and the closed form like nccl-tests."""
    import pandas as pd

    from commsim.collectives.nccl_tests import read_nccl_tests

    try:
        for flag, value in (("--servers", servers), ("--ranks", ranks)):
            if value is not None and value < 1:
                raise ConfigError(field=flag, value=value, rule="must be at least 1",
                                  fix=f"give a positive count, or leave {flag} out for the default")
        if csv is not None:
            output_file(csv, field="--csv")
        params, used = _calibration(topology, calibration)
        logs = [read_nccl_tests(path) for path in compare or []]
        runs = [(log, _run(topology, op, algo, sizes, ranks, servers, params, protocol, dtype, log, estimate))
                for log in logs] or [(None, _run(topology, op, algo, sizes, ranks, servers, params, protocol,
                                                 dtype, None, estimate))]
    except CommsimError as error:
        raise fail(error) from None
    for log, table in runs:
        _print(table, str(table["op"].iloc[0]), log, used, estimate)
    if csv is not None:
        tables = [t.assign(log=log.name) if log is not None and len(runs) > 1 else t for log, t in runs]
        pd.concat(tables, ignore_index=True).to_csv(csv, index=False)
        console.print(f"wrote [bold]{escape(str(csv))}[/]")


def default_calibration(topology: str) -> Path | None:
    """``<name>.calibration.yaml`` beside a topology file ``<name>.yaml`` (a path or a shipped name), if it exists."""
    from commsim.network.shipped import calibration_beside

    return calibration_beside(topology)


def _calibration(topology: str, calibration: str | None) -> tuple[Any, str]:
    """The NCCL parameters to use and a sentence saying which they are."""
    from commsim.collectives.nccl import NCCL_DEFAULTS, resolve_parameters

    if calibration is not None and calibration.strip().lower() == "none":
        return NCCL_DEFAULTS, "NCCL's default constants (--calibration none)"
    if calibration is not None:
        return resolve_parameters(Path(calibration)), f"calibration {calibration}"
    beside = default_calibration(topology)
    if beside is None:
        return NCCL_DEFAULTS, "NCCL's default constants (no calibration beside the topology)"
    return resolve_parameters(beside), f"calibration {beside} (beside the topology; --calibration none to turn off)"


def _agree(flag: str, given: int | str | None, logged: int | str, log: Any) -> int | str:
    """A value given on the command line must agree with what the log says."""
    if given is not None and given != logged:
        raise ConfigError(field=flag, value=given, rule=f"disagrees with {log.name}, which measures {logged}",
                          fix=f"drop {flag} (it is taken from the log) or compare a log of that run")
    return logged


def _run(topology: str, op: str | None, algo: str, sizes: str | None, ranks: int | None, servers: int | None,
         params: Any, protocol: str, dtype: str | None, log: Any, estimate: bool = False) -> pd.DataFrame:
    import pandas as pd

    from commsim.collectives.calibrate import topology_for
    from commsim.collectives.nccl import NCCL_OPS
    from commsim.network.loader import load_topology
    from commsim.units import parse_size_range

    dtype = dtype or (log.dtype if log is not None and log.dtype in _ELEMENT else "fp32")
    if dtype not in _ELEMENT:
        raise ConfigError(field="--dtype", value=dtype, rule="is not an element type",
                          fix=f"use one of {', '.join(_ELEMENT)}")
    if log is not None:
        op = str(_agree("--op", op, log.op, log))
        ranks = int(_agree("--ranks", ranks, log.ranks, log))
        servers = int(_agree("--servers", servers, log.servers, log))
    op = op or "all_reduce"
    if servers is not None and servers < 1:
        raise ConfigError(field="--servers", value=servers, rule="must be at least 1", fix="give a server count")
    size_list = parse_size_range(sizes, field="--sizes") if sizes else (
        log.measured()["size"].astype(float).tolist() if log is not None else parse_size_range("1KiB:4GiB"))
    topo = topology_for(topology, servers) if servers else load_topology(topology)
    nccl = op in NCCL_OPS and algo in ("auto", "ring", "tree", "nvls", "nvls_tree", "p2p")
    simulated = _nccl(topo, op, size_list, ranks, servers, params, algo, protocol) if nccl and not estimate else []
    rows = []
    for i, size in enumerate(size_list):
        row: dict[str, Any] = {"op": op, "size": int(size), "count": int(size // _ELEMENT[dtype]), "dtype": dtype}
        if estimate:
            row |= _estimate(topo, op, size, ranks, servers, params, algo, protocol)
        elif nccl:
            row |= simulated[i]
        else:  # any registered schedule, with the protocol's costs (ops NCCL's tuner does not cover: a ring)
            row |= _schedule(topo, op, size, ranks, servers, params, "ring" if algo == "auto" else algo, protocol)
        rows.append(row)
    table = pd.DataFrame(rows)
    if log is not None:
        measured = log.measured().set_index("size")
        table["measured_time_s"] = [float(measured["time"].get(s, math.nan)) for s in table["size"]]
        table["measured_busbw_Bps"] = [float(measured["busbw"].get(s, math.nan)) for s in table["size"]]
        # relative error of the predicted bandwidth = measured time / simulated time - 1
        table["error"] = table["measured_time_s"] / table["time_s"] - 1.0
    return table


def _group(topo: Any, ranks: int | None, servers: int | None) -> Any:
    from commsim.collectives.nccl_run import spread_group

    if ranks is None:
        return None
    return ranks if not servers else spread_group(topo, ranks, servers)


def _nccl(topo: Any, op: str, sizes: list[float], ranks: int | None, servers: int | None, params: Any, algo: str,
          protocol: str) -> list[dict[str, Any]]:
    from commsim.collectives.nccl_run import simulate_nccl_sizes

    results = simulate_nccl_sizes(topo, op, sizes, ranks=_group(topo, ranks, servers), calibration=params,
                                  algorithm=algo, protocol=protocol)
    return [{"ranks": r.ranks, "algorithm": r.algorithm, "protocol": r.protocol, "channels": r.channels,
             "time_s": r.time, "algbw_Bps": r.algbw, "busbw_Bps": r.busbw, "closed_form_s": r.predicted}
            for r in results]


def _estimate(topo: Any, op: str, size: float, ranks: int | None, servers: int | None, params: Any, algo: str,
              protocol: str) -> dict[str, Any]:
    """The closed form alone: the NCCL model's prediction, or the schedule's alpha-beta time."""
    from commsim.collectives import bus_factor, resolve_group
    from commsim.collectives.api import estimate_collective
    from commsim.collectives.nccl import NCCL_OPS, describe_cluster, tune
    from commsim.collectives.nccl_run import collective_config, spread_group

    group = spread_group(topo, ranks, servers) if (ranks and servers) else resolve_group(topo, ranks)
    if op in NCCL_OPS and algo in ("auto", "ring", "tree", "nvls", "nvls_tree", "p2p"):
        key = (id(topo), tuple(group))
        if key not in _CLUSTERS:  # measuring the paths is the costly part: once per topology and group
            _CLUSTERS.clear()
            _CLUSTERS[key] = describe_cluster(topo, group)
        choice = tune(_CLUSTERS[key], op, size, params, algorithm=algo, protocol=protocol)
        time, algorithm, proto, channels = choice.time, choice.algorithm, choice.protocol, choice.channels
    else:
        proto = "Simple" if protocol == "auto" else protocol
        config = collective_config(params, proto)
        algorithm, channels = ("ring" if algo == "auto" else algo), 1
        time = estimate_collective(topo, op, size, algorithm=algorithm, ranks=group, config=config).time
        time += config.launch_latency
    algbw = size / time if time > 0 else math.inf
    return {"ranks": len(group), "algorithm": algorithm, "protocol": proto, "channels": channels, "time_s": time,
            "algbw_Bps": algbw, "busbw_Bps": algbw * bus_factor(op, len(group)), "closed_form_s": time}


def _schedule(topo: Any, op: str, size: float, ranks: int | None, servers: int | None, params: Any, algo: str,
              protocol: str) -> dict[str, Any]:
    from commsim.collectives.api import simulate_collective
    from commsim.collectives.nccl_run import collective_config

    proto = "Simple" if protocol == "auto" else protocol
    if proto not in params.protocols:
        raise ConfigError(field="--protocol", value=protocol, rule="is not an NCCL protocol",
                          fix="use auto, LL, LL128 or Simple")
    config = collective_config(params, proto)
    r = simulate_collective(topo, op, size, algorithm=algo, ranks=_group(topo, ranks, servers), config=config)
    closed = r.closed_form + config.launch_latency if math.isfinite(r.closed_form) else math.nan
    return {"ranks": r.ranks, "algorithm": algo, "protocol": proto, "channels": 1, "time_s": r.time,
            "algbw_Bps": r.algbw, "busbw_Bps": r.busbw, "closed_form_s": closed}


def _fmt(value: float, scale: float, digits: int = 2) -> str:
    return "-" if not math.isfinite(value) else f"{value * scale:.{digits}f}"


def _us(value: float) -> str:
    """Microseconds with nccl-tests' precision (fewer decimals for long times)."""
    if not math.isfinite(value):
        return "-"
    us = value * 1e6
    return f"{us:.0f}" if us >= 1e4 else f"{us:.1f}" if us >= 1e3 else f"{us:.2f}"


def _print(table: pd.DataFrame, op: str, log: Any, used: str, estimated: bool = False) -> None:
    import numpy as np
    compared = log is not None
    first = table.iloc[0]
    how = "estimated from the closed form" if estimated else "simulated"
    against = f" vs {log.name} ({log.servers} server(s) x {log.ranks_per_server} GPUs)" if compared else ""
    view = Table(title=escape(f"{op} on {int(first['ranks'])} ranks{against}, {how} (time in us, bandwidth in GB/s "
                              "= 1e9 B/s)"), box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("size (B)", "count", "algo/proto", "time", "algbw", "busbw", "closed form"):
        view.add_column(name, justify="right", no_wrap=True)
    if compared:
        for name in ("measured", "meas. busbw", "error"):
            view.add_column(name, justify="right", no_wrap=True)
    for row in table.to_dict("records"):
        cells = [str(row["size"]), str(row["count"]), f"{row['algorithm']}/{row['protocol']}",
                 _us(row["time_s"]), _fmt(row["algbw_Bps"], 1e-9), _fmt(row["busbw_Bps"], 1e-9),
                 _us(row["closed_form_s"])]
        if compared:
            error = row["error"]
            cells += [_us(row["measured_time_s"]), _fmt(row["measured_busbw_Bps"], 1e-9),
                      "-" if not np.isfinite(error) else f"{error * 100:+.1f}%"]
        view.add_row(*cells)
    # a pipe or file gets the whole table (rich would squeeze it to 80 columns)
    (console if console.is_terminal else Console(width=132, highlight=False)).print(view)
    console.print(f"NCCL model: {escape(used)}", soft_wrap=True)
    if compared:
        big = table[(table["size"] >= 2**20) & np.isfinite(table["error"])]
        if len(big):
            console.print(f"{escape(log.name)}: median |error| over sizes >= 1 MiB: "
                          f"{np.median(np.abs(big['error'])) * 100:.1f}% (max {np.max(np.abs(big['error'])) * 100:.1f}%,"
                          f" {len(big)} sizes); error = measured time / simulated time - 1 = relative busbw error")
