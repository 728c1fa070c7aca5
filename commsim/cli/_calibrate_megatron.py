"""``commsim calibrate megatron``: fit a GPU's per-kernel compute model to measured Megatron-LM iteration times."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from commsim.cli._app import calibrate_app, console, fail
from commsim.errors import CommsimError


@calibrate_app.command("megatron")
def megatron_command(
    csv: Annotated[Path | None, typer.Argument(help="Megatron-LM 2020 scaling table (iteration_time.csv); its DGX "
                                               "A100 rows are used \\[default: $COMMSIM_MEGATRON_DATA, else "
                                               "$COMMSIM_SHARED_DATA/megatron-lm-2020-scaling, else ../shared/data beside the checkout].")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Compute-model data file to write.")] = Path(
        "compute_model.yaml"),
    topology: Annotated[Path | None, typer.Option("--topology", "-t", help="The DGX A100 topology the rows ran on "
                                                  "\\[default: the shipped dgx_a100 topology].")] = None,
    nccl: Annotated[Path | None, typer.Option("--nccl-calibration", help="NCCL calibration for its collectives "
                                              "(default: the .calibration.yaml beside the topology).")] = None,
    device: Annotated[str, typer.Option("--device", help="GPU preset the rows ran on (the tables predate the "
                                        "80 GB A100).")] = "a100_sxm4_40gb",
    start: Annotated[str, typer.Option("--start", help="Shipped compute model to start from (its tile, tile "
                                       "prologue depth and launch overhead are kept).")] = "a100_40gb",
    recompute: Annotated[str, typer.Option("--recompute", help="Activation recomputation of the measured runs: "
                                           "full (Megatron-LM's 2020 scripts), selective or none.")] = "full",
    micro_batch_size: Annotated[int | None, typer.Option("--micro-batch-size", help="Sequences per micro-batch "
                                                         "(default: global batch / DP, one micro-batch).")] = None,
    tp_overlap: Annotated[bool, typer.Option("--tp-overlap/--no-tp-overlap", help="Overlap backward TP all-reduces "
                                             "with weight-gradient GEMMs (the 2020 code did not).")] = False,
    holdout: Annotated[bool, typer.Option("--holdout/--no-holdout", help="Also predict each one-server row from a "
                                          "fit to the others.")] = True,
) -> None:
    """Fit the GEMM main-loop and HBM efficiencies to the DGX A100 rows of CSV; write -o."""
    from commsim.devices import load_compute_model
    from commsim.network.shipped import calibration_beside
    from commsim.paths import output_file
    from commsim.workloads.megatron_calibration import (
        DGX_A100_TOPOLOGY,
        MegatronSetup,
        fit_megatron,
        leave_one_out,
        read_megatron_csv,
        save_compute_model,
        shared_table,
    )

    topology = topology or DGX_A100_TOPOLOGY
    try:
        output_file(output, field="--output")
        rows = read_megatron_csv(csv or shared_table())
        beside = calibration_beside(topology) or topology.with_suffix(".calibration.yaml")
        setup = MegatronSetup(topology=topology, nccl_calibration=nccl or beside,
                              device=device, recompute=recompute, micro_batch_size=micro_batch_size,
                              tp_overlap=tp_overlap)
        with console.status("fitting (each iteration replays the one-server rows)"):
            fit = fit_megatron(rows, load_compute_model(start), setup)
            held = leave_one_out(rows, fit.model, setup) if holdout else []
        save_compute_model(fit, output, held_out=held)
    except CommsimError as error:
        raise fail(error) from None
    view = Table(title="compute model parameters")
    for name in ("parameter", "value", "source"):
        view.add_column(name, justify="right" if name == "value" else "left")
    for name in ("tile_m", "tile_n", "gemm_efficiency", "gemm_k_overhead", "memory_efficiency", "launch_overhead"):
        value = getattr(fit.model, name)
        view.add_row(name, f"{value:.4g}", fit.model.sources.get(name, ""))
    console.print(view)
    errors = {p.row.label: p.error for p in held}
    view = Table(title=f"DGX A100 rows: measured vs simulated (recompute {recompute})")
    for name in ("row", "role", "measured (ms)", "simulated (ms)", "error", "held-out error"):
        view.add_column(name, justify="left" if name in ("row", "role") else "right")
    for p in fit.predictions:
        role = "fitted" if p.row.label in fit.fitted_on else "predicted"
        held_error = f"{errors[p.row.label] * 100:+.1f}%" if p.row.label in errors else "-"
        view.add_row(p.row.label, role, f"{p.row.measured * 1e3:.0f}", f"{p.predicted * 1e3:.0f}",
                     f"{p.error * 100:+.1f}%", held_error)
    console.print(view)
    console.print(f"wrote [bold]{output}[/] ({len(fit.fitted_on)} rows fitted, {fit.iterations} iterations)")
