"""``commsim calibrate nccl-tests``: fit the NCCL model to measured nccl-tests logs and write a calibration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from commsim.cli._app import calibrate_app, console, fail
from commsim.errors import CommsimError

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
) -> None:
    """Fit protocol latencies, bandwidth factors and link efficiencies to LOGS; print the fit and write -o."""
    from commsim.collectives.calibrate import fit_nccl, leave_one_out, save_calibration, summarise
    from commsim.collectives.nccl_tests import read_nccl_tests

    try:
        parsed = [read_nccl_tests(path) for path in logs]
        fit = fit_nccl(parsed, topology)
        quality = fit.summary()
        save_calibration(fit.params, output, topology=str(topology), fitted_on=[p.name for p in parsed],
                         quality=quality)
        held = summarise(leave_one_out(parsed, topology)) if holdout and len(parsed) > 1 else None
    except CommsimError as error:
        raise fail(error) from None
    _print_parameters(fit.params, fit.free)
    _print_quality(quality, "fit: |busbw error| over sizes >= 1 MiB (model vs measured)")
    if held is not None:
        _print_quality(held, "held out: each log predicted by a fit to the others")
    if details:
        _print_details(fit.errors)
    console.print(f"wrote [bold]{output}[/] ({len(fit.free)} parameters fitted to {len(parsed)} logs, "
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
