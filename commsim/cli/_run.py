"""``commsim run`` and ``commsim sweep``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from commsim.cli._app import app, console, err_console, fail
from commsim.cli._progress import progress_bar
from commsim.errors import ConfigError, SimulationError
from commsim.limits import allow_large
from commsim.paths import output_dir
from commsim.units import format_quantity

SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a field: PATH=VALUE "
                                                      "(e.g. workload.tp=4). Repeatable.")]


def _format(value: float, unit: str) -> str:
    return format_quantity(value, unit)


@app.command("run")
def run_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output directory "
                                                "(default: dashboards/<scenario>).")] = None,
    sets: SetOption = None,
    table_format: Annotated[str | None, typer.Option("--format", help="Table format: parquet or csv.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run even inputs above the size limits "
                                        "(topology nodes, ranks).")] = False,
) -> None:
    """Run a scenario: print the summary, write tables, a dashboard and a Perfetto trace.

    Exit codes: 0 done, 2 bad input (nothing simulated), 3 the simulation could not
    finish (a stall: the tables up to the stall are written).
    """
    from commsim.scenario import load_scenario, simulate

    grid = _set_grid(sets)
    overrides = {}
    for path, values in grid.items():
        if len(values) != 1:
            raise ConfigError(field="--set", value=f"{path}={','.join(map(str, values))}",
                              rule="gives several values to run",
                              fix="give one value per --set with run (use commsim sweep for several)")
        overrides[path] = values[0]
    if table_format:
        overrides["outputs.tables"] = table_format
    spec = load_scenario(scenario, overrides=overrides)
    out = output_dir(output or spec.output_dir(), field="-o" if output else "outputs.dir")
    try:
        with progress_bar(f"running {spec.name}") as update, allow_large(force):
            result = simulate(spec, progress=update)
    except SimulationError as error:
        partial = getattr(error, "run", None)
        if partial is not None:
            paths = partial.write(out)
            err_console.print(f"wrote {len(paths)} files up to the failure to {escape(str(out))}", highlight=False)
        raise fail(error) from None
    paths = result.write(out)
    table = Table(title=f"{escape(spec.name)}: summary", show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, (value, unit) in result.metrics.items():
        table.add_row(name, _format(value, unit))
    console.print(table)
    for note in result.notes:
        console.print(f"[dim]assumption: {escape(note)}[/]")
    console.print(f"wrote {len(paths)} files to [bold]{escape(str(out))}[/]")
    if "dashboard" in paths:
        console.print(f"dashboard: [bold]{escape(str(paths['dashboard']))}[/] (open it in a browser)")


def _set_grid(sets: list[str] | None) -> dict[str, list]:
    """The ``--set`` options as ``{path: values}``; a path given twice is an error, not a silent override."""
    from commsim.scenario import parse_set

    grid: dict[str, list] = {}
    for text in sets or []:
        path, values = parse_set(text)
        if path in grid:
            raise ConfigError(field="--set", value=path, rule="is given more than once (the earlier values "
                              "would be dropped)", fix=f"give every value of {path} in one --set, "
                              f"e.g. --set {path}=V1,V2")
        grid[path] = values
    return grid


@app.command("sweep")
def sweep_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    sets: SetOption = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Local worker processes.")] = 1,
    dask: Annotated[str | None, typer.Option("--dask", help="Address of an existing Dask scheduler.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output directory "
                                                "(default: dashboards/<scenario>-sweep).")] = None,
    plots: Annotated[list[str] | None, typer.Option("--plot", help="A metric to plot first in the dashboard, even "
                                                    "if it does not change (repeatable).")] = None,
) -> None:
    """Run the grid product of --set values in parallel; write one table and a what-if dashboard."""
    from commsim.scenario import load_scenario
    from commsim.sweeps import grid_points, sweep

    grid = _set_grid(sets)
    spec = load_scenario(scenario)
    out = output_dir(output or spec.output_dir().with_name(f"{spec.name}-sweep"),
                     field="-o" if output else "outputs.dir")
    csv_path = out / "sweep.csv"
    total = len(grid_points(grid))
    try:
        with progress_bar(f"sweeping {spec.name} ({total} runs)") as update:
            result = sweep(spec, grid, jobs=jobs, dask=dask, csv_path=csv_path,
                           progress=lambda done, n: update(done, n, "runs"))
    except KeyboardInterrupt:
        err_console.print(f"interrupted: the runs that finished are in {escape(str(csv_path))}")
        raise typer.Exit(130) from None
    result.table.to_parquet(out / "sweep.parquet", index=False)
    unknown = [name for name in plots or [] if name not in result.metrics]
    if unknown:
        raise ConfigError(field="--plot", value=unknown[0], rule="is not a metric of this sweep",
                          fix=f"name one of {', '.join(result.metrics)}")
    dashboard = result.dashboard(out / "sweep.html", show=plots or ())
    table = Table(title=escape(f"{spec.name}: sweep over {', '.join(result.parameters)}"))
    for column in result.table.columns:
        table.add_column(escape(str(column)), justify="right")
    for row in result.table.to_dict("records"):
        table.add_row(*[format_quantity(v, result.units.get(k, "")) if isinstance(v, float) else escape(str(v))
                        for k, v in row.items()])
    console.print(table)
    console.print(f"table: [bold]{escape(str(csv_path))}[/]  dashboard: [bold]{escape(str(dashboard))}[/]")
