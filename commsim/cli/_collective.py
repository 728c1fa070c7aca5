"""``commsim collective``: simulate one collective over a range of sizes, as nccl-tests prints it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from commsim.cli._app import app, console, fail
from commsim.errors import CommsimError, ConfigError

if TYPE_CHECKING:
    import pandas as pd

_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8, "int8": 1, "int32": 4, "int64": 8, "fp8": 1}


@app.command("collective")
def collective_command(
    topology: Annotated[str, typer.Option("--topology", "-t", help="Topology YAML file or shorthand "
                                          "(e.g. topologies/azure_ndv4.yaml or switch:8,50GB/s,500ns).")],
    op: Annotated[str, typer.Option("--op", help="all_reduce, reduce_scatter, all_gather, ...")] = "all_reduce",
    algo: Annotated[str, typer.Option("--algo", help="auto (NCCL's tuner), an NCCL algorithm (ring, tree) or any "
                                      "registered schedule (double_binary_tree, halving_doubling, ...).")] = "auto",
    sizes: Annotated[str | None, typer.Option("--sizes", help="MIN:MAX in powers of two, MIN:MAX:xF or a list "
                                              "[default: 1KiB:4GiB, or the sizes of --compare].")] = None,
    ranks: Annotated[int | None, typer.Option("--ranks", help="Ranks [default: every device, or the ranks of "
                                              "--compare].")] = None,
    servers: Annotated[int | None, typer.Option("--servers", help="Servers: sets a generator's 'servers' "
                                                "parameter and spreads the ranks over them.")] = None,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="Calibration YAML "
                                                     "(commsim calibrate nccl-tests); default: NCCL's "
                                                     "constants.")] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="auto, LL, LL128 or Simple.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="Element type for the count column.")] = "fp32",
    csv: Annotated[Path | None, typer.Option("--csv", help="Write the table to this CSV (SI units).")] = None,
    compare: Annotated[Path | None, typer.Option("--compare", help="An nccl-tests log: add its measured time, "
                                                 "busbw and the error per size.")] = None,
    estimate: Annotated[bool, typer.Option("--estimate", help="Closed form only, no simulation: instant for "
                                           "any scale, exact on uncongested fabrics.")] = False,
) -> None:
    """Simulate OP on the topology for every size; print time, algbw, busbw and the closed form like nccl-tests."""
    try:
        table = _run(topology, op, algo, sizes, ranks, servers, calibration, protocol, dtype, compare, estimate)
    except CommsimError as error:
        raise fail(error) from None
    _print(table, op, compare is not None, estimate)
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        console.print(f"wrote [bold]{csv}[/]")


def _run(topology: str, op: str, algo: str, sizes: str | None, ranks: int | None, servers: int | None,
         calibration: Path | None, protocol: str, dtype: str, compare: Path | None,
         estimate: bool = False) -> pd.DataFrame:
    import pandas as pd

    from commsim.collectives.calibrate import topology_for
    from commsim.collectives.nccl import NCCL_OPS, resolve_parameters
    from commsim.collectives.nccl_tests import read_nccl_tests
    from commsim.network.loader import load_topology
    from commsim.units import parse_size_range

    if dtype not in _ELEMENT:
        raise ConfigError(field="--dtype", value=dtype, rule="is not an element type",
                          fix=f"use one of {', '.join(_ELEMENT)}")
    log = read_nccl_tests(compare) if compare is not None else None
    if log is not None:
        if log.op != op:
            raise ConfigError(field="--compare", value=str(compare), rule=f"measures {log.op}, not {op}",
                              fix=f"pass --op {log.op} or a log of {op}")
        ranks = ranks or log.ranks
        servers = servers or log.servers
    size_list = parse_size_range(sizes, field="--sizes") if sizes else (
        log.measured()["size"].astype(float).tolist() if log is not None else parse_size_range("1KiB:4GiB"))
    topo = topology_for(topology, servers) if servers else load_topology(topology)
    params = resolve_parameters(calibration)
    rows = []
    for size in size_list:
        row: dict[str, Any] = {"size": int(size), "count": int(size // _ELEMENT[dtype]), "dtype": dtype}
        if estimate:
            row |= _estimate(topo, op, size, ranks, servers, params, algo, protocol)
        elif op in NCCL_OPS and algo in ("auto", "ring", "tree"):
            row |= _nccl(topo, op, size, ranks, servers, params, algo, protocol)
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


def _nccl(topo: Any, op: str, size: float, ranks: int | None, servers: int | None, params: Any, algo: str,
          protocol: str) -> dict[str, Any]:
    from commsim.collectives.nccl_run import simulate_nccl

    r = simulate_nccl(topo, op, size, ranks=_group(topo, ranks, servers), calibration=params, algorithm=algo,
                      protocol=protocol)
    return {"ranks": r.ranks, "algorithm": r.algorithm, "protocol": r.protocol, "channels": r.channels,
            "time_s": r.time, "algbw_Bps": r.algbw, "busbw_Bps": r.busbw, "closed_form_s": r.predicted}


def _estimate(topo: Any, op: str, size: float, ranks: int | None, servers: int | None, params: Any, algo: str,
              protocol: str) -> dict[str, Any]:
    """The closed form alone: the NCCL model's prediction, or the schedule's alpha-beta time."""
    from commsim.collectives import bus_factor, resolve_group
    from commsim.collectives.api import estimate_collective
    from commsim.collectives.nccl import NCCL_OPS, describe_cluster, tune
    from commsim.collectives.nccl_run import collective_config, spread_group

    group = spread_group(topo, ranks, servers) if (ranks and servers) else resolve_group(topo, ranks)
    if op in NCCL_OPS and algo in ("auto", "ring", "tree"):
        choice = tune(describe_cluster(topo, group), op, size, params, algorithm=algo, protocol=protocol)
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


def _print(table: pd.DataFrame, op: str, compared: bool, estimated: bool = False) -> None:
    import numpy as np

    first = table.iloc[0]
    how = "estimated from the closed form" if estimated else "simulated"
    view = Table(title=f"{op} on {int(first['ranks'])} ranks, {how} (time in us, bandwidth in GB/s = 1e9 B/s)",
                 box=box.SIMPLE_HEAD, pad_edge=False)
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
    if compared:
        big = table[(table["size"] >= 2**20) & np.isfinite(table["error"])]
        if len(big):
            console.print(f"median |error| over sizes >= 1 MiB: {np.median(np.abs(big['error'])) * 100:.1f}% "
                          f"(max {np.max(np.abs(big['error'])) * 100:.1f}%, {len(big)} sizes); error = measured "
                          "time / simulated time - 1 = relative busbw error")
