"""``commsim search``: rank the parallel layouts of a training job on a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from commsim.cli._app import app, console, err_console
from commsim.cli._progress import progress_bar
from commsim.cli._train import ParamOption, TopologyOption, load_cluster, topology_params
from commsim.errors import ConfigError
from commsim.paths import output_dir
from commsim.units import format_bytes, format_time


def _ints(text: str | None, field: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(field=field, value=text, rule="is not a comma-separated list of integers",
                          fix=f"give e.g. {field} 1,2,4,8") from None
    if not values or min(values) < 1:
        raise ConfigError(field=field, value=text, rule="needs positive integers", fix=f"give e.g. {field} 1,2,4")
    return values


def _choices(text: str | None, field: str, allowed: dict[str, object]) -> list[object] | None:
    """A comma-separated list of named choices, each one of ``allowed`` (name -> value)."""
    if text is None:
        return None
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    wrong = [name for name in names if name not in allowed]
    if not names or wrong:
        raise ConfigError(field=field, value=text, rule=f"needs a comma-separated list of {', '.join(allowed)}",
                          fix=f"give e.g. {field} {','.join(allowed)}")
    return [allowed[name] for name in names]


@app.command("search")
def search_command(
    model: Annotated[str, typer.Option("--model", help="Catalog model or YAML file.")],
    topology: TopologyOption,
    global_batch: Annotated[int, typer.Option("--global-batch-size", help="Sequences per step.")],
    params: ParamOption = None,
    num_gpus: Annotated[int | None, typer.Option("--num-gpus", help="GPUs of the job (default: all the "
                                                                     "topology's devices).")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-length", help="Tokens per sequence (default: the "
                                                                     "model's).")] = None,
    tp: Annotated[str | None, typer.Option("--tp", help="Tensor-parallel sizes, e.g. 1,2,4,8.")] = None,
    pp: Annotated[str | None, typer.Option("--pp", help="Pipeline sizes (default: divisors of the layers).")] = None,
    micro: Annotated[str | None, typer.Option("--micro-batch-sizes", help="Micro-batch sizes, e.g. 1,2,4,8.")] = None,
    virtual: Annotated[str | None, typer.Option("--virtual-stages", help="Virtual pipeline stages, e.g. 1,2,4.")
                       ] = None,
    recompute: Annotated[str | None, typer.Option("--recompute", help="none,selective,full.")] = None,
    distributed_optimizer: Annotated[str | None, typer.Option("--distributed-optimizer",
                                                              help="false,true (ZeRO-1 or not).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Local worker processes.")] = 2,
    dask: Annotated[str | None, typer.Option("--dask", help="Address of an existing Dask scheduler.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory for search.csv and "
                                         "search.html.")] = Path("dashboards/search"),
    top: Annotated[int, typer.Option("--top", help="Rows of the ranking to print.")] = 10,
) -> None:
    """Enumerate TP/PP/DP/micro-batch/virtual-stage/recompute/optimizer layouts, reject what cannot run (with the
    reason), predict the rest in parallel and rank them by step time; a CSV and a dashboard."""
    from commsim.search import SearchSpace, rank_table, search
    from commsim.views.search_view import layout_label, write_search_dashboard
    from commsim.workloads.models import load_model

    spec = load_model(model)
    load_cluster(topology, params)  # a bad topology or parameter fails here, before any work starts
    space = SearchSpace(tp=_ints(tp, "--tp"), pp=_ints(pp, "--pp"), micro_batch_size=_ints(micro, "--micro-batch-sizes"),
                        virtual_pipeline_stages=_ints(virtual, "--virtual-stages"),
                        recompute=_choices(recompute, "--recompute", {m: m for m in ("none", "selective", "full")}),
                        distributed_optimizer=_choices(distributed_optimizer, "--distributed-optimizer",
                                                       {"false": False, "true": True}))
    csv_path = output_dir(output, field="--output") / "search.csv"
    try:
        with progress_bar(f"searching layouts of {spec.name}") as update:
            result = search(spec, topology, global_batch=global_batch, gpus=num_gpus, topology_params=topology_params(params),
                            seq_len=seq_len, space=space, jobs=jobs, dask=dask, csv_path=csv_path,
                            progress=lambda done, total: update(done, total, "layouts"))
    except KeyboardInterrupt:
        import pandas as pd

        finished = pd.read_csv(csv_path) if csv_path.exists() else pd.DataFrame()
        if len(finished):
            write_search_dashboard(rank_table(finished.to_dict("records")), output / "search.html",
                                   title=f"{spec.name}: layout search (interrupted)")
        err_console.print(f"interrupted: the {len(finished)} rows that finished are in {escape(str(csv_path))}")
        raise typer.Exit(130) from None
    table = result.table
    table.to_csv(csv_path, index=False)
    dashboard = write_search_dashboard(table, output / "search.html", title=f"{spec.name}: layout search",
                                       notes=result.notes)
    ranked = result.ranked
    shown = Table(title=f"{spec.name}, global batch {global_batch}: {len(ranked)} layouts ranked, "
                        f"{len(result.rejected)} rejected")
    for column in ("rank", "layout", "step time", "MFU", "TFLOP/s/GPU", "memory/GPU", "bubble", "exposed comm"):
        shown.add_column(column, justify="right")
    for i, row in ranked.head(top).iterrows():
        exposed = sum(row[c] for c in ranked.columns if c.startswith("exposed_") and row[c] == row[c])
        shown.add_row(str(i + 1), layout_label(row), format_time(row["step_time"]), f"{row['mfu']:.1%}",
                      f"{row['tflops_per_gpu']:.0f}", format_bytes(row["peak_memory_per_gpu"]),
                      format_time(row["pipeline_bubble"]), format_time(exposed))
    console.print(shown)
    for note in result.notes:
        console.print(f"[dim]note: {note}[/]")
    console.print(f"table: [bold]{escape(str(csv_path))}[/]  dashboard: [bold]{escape(str(dashboard))}[/]")
