"""``commsim validate``: every check as one table; a failure makes the exit code 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from commsim.cli._app import app, console
from commsim.cli._progress import progress_bar
from commsim.paths import output_file


@app.command("validate")
def validate_command(
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this area (repeatable).")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the table as CSV.")] = None,
) -> None:
    """Check the simulator against closed forms, measurements and the studies' published claims."""
    from commsim.validators import run_validation

    if csv is not None:
        output_file(csv, field="--csv")
    with progress_bar("validating") as update:
        table = run_validation(only or None, progress=lambda i, n, area: update(i, n, area))
    view = Table(title="commsim validate")
    for column in ("area", "case", "expected", "simulated", "error", "tolerance", "status"):
        view.add_column(column, justify="right" if column in ("expected", "simulated", "error", "tolerance") else "left")
    colours = {"pass": "green", "fail": "bold red", "skipped": "yellow"}
    for row in table.itertuples(index=False):
        error = "" if row.error != row.error else (f"{row.error * 100:+.3g}%" if row.relative else f"{row.error:+.4g}")
        tolerance = f"±{row.tolerance * 100:.3g}%" if row.relative else f"±{row.tolerance:.4g}"
        view.add_row(escape(str(row.area)), escape(str(row.case)), f"{row.expected:.6g}", f"{row.simulated:.6g}", error, tolerance,
                     f"[{colours[row.status]}]{row.status}[/]")
    console.print(view)
    if csv is not None:
        table.to_csv(csv, index=False)
    failed = int((table["status"] == "fail").sum())
    console.print(f"{len(table)} checks: {int((table['status'] == 'pass').sum())} passed, {failed} failed, "
                  f"{int((table['status'] == 'skipped').sum())} skipped")
    if failed:
        raise typer.Exit(1)
