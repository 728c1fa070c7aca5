"""The typer application behind the ``commsim`` command and its error handling."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from commsim.errors import CommsimError, SimulationError

app = typer.Typer(
    name="commsim",
    help="Simulate accelerators, links and switches to study communication/computation overlap.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
trace_app = typer.Typer(help="Workload traces: schema, generation, import, validation.", no_args_is_help=True)
topology_app = typer.Typer(help="Inspect topologies.", no_args_is_help=True)
calibrate_app = typer.Typer(help="Fit model parameters to measurements.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")
app.add_typer(topology_app, name="topology")
app.add_typer(calibrate_app, name="calibrate")

console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2
"""Exit code of a bad input (file, field, flag): nothing was simulated."""
EXIT_SIMULATION = 3
"""Exit code of a simulation that could not finish (a stall, out of memory): partial outputs are written."""


def exit_code(error: CommsimError) -> int:
    """The exit code for ``error``: 3 for a failed simulation, 2 for bad input."""
    return EXIT_SIMULATION if isinstance(error, SimulationError) else EXIT_BAD_INPUT


def print_error(error: CommsimError) -> None:
    """Print ``error`` as one paragraph on stderr; its text is shown as is, never read as rich markup."""
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)


def fail(error: CommsimError) -> typer.Exit:
    """Print ``error`` as one paragraph on stderr and return the exit to raise."""
    print_error(error)
    return typer.Exit(exit_code(error))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``commsim`` console script: errors become one message and exit code 2 or 3."""
    try:
        app(args=argv, prog_name="commsim")
    except CommsimError as error:
        print_error(error)
        sys.exit(exit_code(error))
