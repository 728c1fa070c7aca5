"""``commsim run`` and ``commsim sweep``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from commsim.cli._app import app, console, err_console
from commsim.cli._progress import progress_bar
from commsim.units import format_bandwidth, format_bytes, format_time

SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a field: PATH=VALUE "
                                                      "(e.g. workload.tp=4). Repeatable.")]


def _format(value: float, unit: str) -> str:
    if unit == "s":
        return format_time(value)
    if unit == "B":
        return format_bytes(value)
    if unit == "B/s":
        return format_bandwidth(value)
    return f"{value:.6g}"


@app.command("run")
def run_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output directory "
                                                "(default: dashboards/<scenario>).")] = None,
    sets: SetOption = None,
    table_format: Annotated[str | None, typer.Option("--format", help="Table format: parquet or csv.")] = None,
) -> None:
    """Run a scenario: print the summary, write tables, a dashboard and a Perfetto trace."""
    from commsim.scenario import load_scenario, parse_set, simulate

    overrides = {}
    for text in sets or []:
        path, values = parse_set(text)
        if len(values) != 1:
            from commsim.errors import ConfigError

            raise ConfigError(field="--set", value=text, rule="gives several values to run",
                              fix="give one value per --set with run (use commsim sweep for several)")
        overrides[path] = values[0]
    if table_format:
        overrides["outputs.tables"] = table_format
    spec = load_scenario(scenario, overrides=overrides)
    with progress_bar(f"running {spec.name}") as update:
        result = simulate(spec, progress=update)
    out = output or spec.output_dir()
    paths = result.write(out)
    table = Table(title=f"{spec.name}: summary", show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, (value, unit) in result.metrics.items():
        table.add_row(name, _format(value, unit))
    console.print(table)
    for note in result.notes:
        console.print(f"[dim]assumption: {note}[/]")
    console.print(f"wrote {len(paths)} files to [bold]{out}[/]")
    if "dashboard" in paths:
        console.print(f"dashboard: [bold]{paths['dashboard']}[/] (open it in a browser)")


@app.command("sweep")
def sweep_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    sets: SetOption = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Local worker processes.")] = 1,
    dask: Annotated[str | None, typer.Option("--dask", help="Address of an existing Dask scheduler.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output directory "
                                                "(default: dashboards/<scenario>-sweep).")] = None,
) -> None:
    """Run the grid product of --set values in parallel; write one table and a what-if dashboard."""
    from commsim.scenario import load_scenario, parse_set
    from commsim.sweeps import grid_points, sweep

    grid = dict(parse_set(text) for text in sets or [])
    spec = load_scenario(scenario)
    out = output or spec.output_dir().with_name(f"{spec.name}-sweep")
    csv_path = out / "sweep.csv"
    total = len(grid_points(grid))
    try:
        with progress_bar(f"sweeping {spec.name} ({total} runs)") as update:
            result = sweep(spec, grid, jobs=jobs, dask=dask, csv_path=csv_path,
                           progress=lambda done, n: update(done, n, "runs"))
    except KeyboardInterrupt:
        err_console.print(f"interrupted: the runs that finished are in {csv_path}")
        raise typer.Exit(130) from None
    result.table.to_parquet(out / "sweep.parquet", index=False)
    dashboard = result.dashboard(out / "sweep.html")
    table = Table(title=f"{spec.name}: sweep over {', '.join(result.parameters)}")
    for column in result.table.columns:
        table.add_column(column, justify="right")
    for row in result.table.itertuples(index=False):
        table.add_row(*[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    console.print(f"table: [bold]{csv_path}[/]  dashboard: [bold]{dashboard}[/]")
