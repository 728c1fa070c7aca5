"""``commsim calibrate nccl-tests``: fit the NCCL model to measured nccl-tests logs and write a calibration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from commsim.cli._app import calibrate_app, console, fail
from commsim.errors import CommsimError
from commsim.paths import output_file

if TYPE_CHECKING:
    import pandas as pd

    from commsim.collectives.nccl import NcclParameters


@calibrate_app.command("nccl-tests")
def nccl_tests_command(
    logs: Annotated[list[Path], typer.Argument(help="nccl-tests output files (*_perf logs, MPI prefixes allowed).")],
    topology: Annotated[str, typer.Option("--topology", "-t", help="The cluster the logs were measured on; a "
                                          "generator's 'servers' parameter is set from each log.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Calibration YAML to write.")] = Path(
        "calibration.yaml"),
    details: Annotated[bool, typer.Option("--details", help="Also print the error of every size.")] = False,
    holdout: Annotated[bool, typer.Option("--holdout", help="Also fit without each log in turn and report how "
                                          "well the rest predicts it.")] = False,
    algo: Annotated[str, typer.Option("--algo", help="The algorithm the runs' environment forced (NCCL_ALGO): "
                                      "auto, ring, tree, nvls or nvls_tree; recorded in the calibration.")] = "auto",
    proto: Annotated[str, typer.Option("--proto", help="The protocol the runs' environment forced (NCCL_PROTO): "
                                       "auto, LL, LL128 or Simple; recorded in the calibration.")] = "auto",
    nccl_version: Annotated[str, typer.Option("--nccl-version", help="The NCCL version the runs used (e.g. "
                                              "2.21.5, printed by NCCL at init); where its tuning constants are "
                                              "known (2.21), NCCL's own tuner view picks ring or tree across "
                                              "servers. Recorded in the calibration.")] = "",
) -> None:
    """Fit protocol latencies, bandwidth factors and link efficiencies to LOGS; print the fit and write -o.

    Logs of any collectives and scales fit together. With logs at two GPU counts or
    more, the largest is also predicted by a fit to the smaller ones
    (leave-one-scale-out). A fit whose parameters end at their bounds is refused.
    """
    from dataclasses import replace

    from commsim.collectives.calibrate import fit_nccl, leave_one_out, leave_scale_out, save_calibration, summarise
    from commsim.collectives.nccl import NCCL_DEFAULTS
    from commsim.collectives.nccl_tests import read_nccl_tests

    try:
        output_file(output, field="--output")
        initial = replace(NCCL_DEFAULTS, algorithm=algo, protocol=proto, nccl_version=nccl_version)
        parsed = [read_nccl_tests(path) for path in logs]
        fit = fit_nccl(parsed, topology, initial=initial)
        quality = fit.summary()
        scales = {p.ranks for p in parsed}
        scale_rows = leave_scale_out(parsed, topology, initial=initial) if len(scales) > 1 else None
        scale_out = summarise(scale_rows) if scale_rows is not None else None
        forced = "" if algo == proto == "auto" else f"forced by the runs' environment: algorithm {algo}, " \
                                                   f"protocol {proto}"
        save_calibration(fit.params, output, topology=str(topology), fitted_on=[p.name for p in parsed],
                         quality=quality, held_out=scale_out, environment_note=forced, fitted=fit.free)
        held = summarise(leave_one_out(parsed, topology, initial=initial)) if holdout and len(parsed) > 1 else None
    except CommsimError as error:
        raise fail(error) from None
    _print_parameters(fit.params, fit.free)
    _print_quality(quality, "fit: |busbw error| over sizes >= 1 MiB (model vs measured)")
    if scale_rows is not None and scale_out is not None:
        largest = max(scales)
        bounds = str(scale_rows["bounds"].iloc[0])
        _print_quality(scale_out, f"leave-one-scale-out: {largest} GPUs predicted by a fit to "
                                  f"{', '.join(str(s) for s in sorted(scales - {largest}))} GPUs"
                                  + (f" (that fit has {bounds})" if bounds else ""))
    else:
        console.print(f"leave-one-scale-out: not possible, every log measures {next(iter(scales))} GPUs")
    if held is not None:
        _print_quality(held, "held out: each log predicted by a fit to the others")
    if details:
        _print_details(fit.errors)
    console.print(f"wrote [bold]{escape(str(output))}[/] ({len(fit.free)} parameters fitted to {len(parsed)} logs, "
                  f"{fit.iterations} iterations)")


def _print_parameters(params: NcclParameters, free: tuple[str, ...]) -> None:
    from commsim.units import format_time

    view = Table(title="NCCL model parameters")
    for name in ("protocol", "launch", "hop latency", "remote hop latency", "bandwidth factor"):
        view.add_column(name, justify="right")
    for name, costs in params.protocols.items():
        view.add_row(name, format_time(costs.launch), format_time(costs.hop_latency),
                     format_time(costs.remote_hop_latency), f"{costs.bandwidth_factor:.4f}")
    console.print(view)
    console.print(f"local link efficiency {params.local_efficiency:.4f}, remote link efficiency "
                  f"{params.remote_efficiency:.4f}, one-rank copy {format_time(params.copy_launch)} + "
                  f"{params.copy_efficiency:.4f} of memory bandwidth")
    peer = "none" if not math.isfinite(params.p2p_peer_bandwidth) else f"{params.p2p_peer_bandwidth / 1e9:.2f} GB/s"
    local_p2p = "as rings" if params.p2p_local_efficiency is None else f"{params.p2p_local_efficiency:.4f}"
    console.print(f"NVLS efficiency {params.nvls_efficiency:.4f} + {format_time(params.nvls_latency)}; "
                  f"point-to-point: NIC {params.p2p_efficiency:.4f}, NVLink {local_p2p}, per-peer cap {peer}")
    console.print(f"fitted: {', '.join(free)}")


def _print_quality(quality: pd.DataFrame, title: str) -> None:
    view = Table(title=title)
    for name in ("log", "median |error|", "max |error|", "sizes"):
        view.add_column(name, justify="right")
    for name, row in quality.iterrows():
        view.add_row(str(name), f"{row['median_abs_error'] * 100:.1f}%", f"{row['max_abs_error'] * 100:.1f}%",
                     str(int(row["sizes"])))
    console.print(view)


def _print_details(errors: pd.DataFrame) -> None:
    view = Table(title="per size: measured vs model")
    for name in ("log", "size (B)", "choice", "measured (us)", "model (us)", "measured busbw", "model busbw",
                 "error"):
        view.add_column(name, justify="right")
    for row in errors.to_dict("records"):
        view.add_row(row["log"], str(row["size"]), row["choice"], f"{row['measured_time'] * 1e6:.2f}",
                     f"{row['predicted_time'] * 1e6:.2f}", f"{row['measured_busbw'] / 1e9:.2f}",
                     f"{row['predicted_busbw'] / 1e9:.2f}",
                     f"{row['error'] * 100:+.1f}%" if math.isfinite(row["error"]) else "-")
    console.print(view)
