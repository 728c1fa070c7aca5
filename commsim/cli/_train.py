"""``commsim train``: one training step predicted from Megatron-LM arguments on a topology."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from commsim.cli._app import app, console, err_console
from commsim.cli._progress import progress_bar
from commsim.errors import ConfigError
from commsim.units import format_bytes, format_time

TopologyOption = Annotated[str, typer.Option("-t", "--topology", help="Topology file or shorthand.")]
ParamOption = Annotated[list[str] | None, typer.Option("-p", "--topology-param",
                                                       help="Topology generator parameter KEY=VALUE, e.g. "
                                                            "servers=8. Repeatable.")]


def topology_params(params: list[str] | None) -> dict[str, Any]:
    """``-p KEY=VALUE`` topology generator parameters as a mapping (values read as YAML scalars)."""
    overrides: dict[str, Any] = {}
    for text in params or []:
        key, eq, value = text.partition("=")
        if not eq or not key.strip():
            raise ConfigError(field="--topology-param", value=text, rule="is not KEY=VALUE",
                              fix="give a generator parameter such as servers=8")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def load_cluster(topology: str, params: list[str] | None) -> Any:
    """The topology ``-t`` names, with ``-p KEY=VALUE`` generator parameters applied."""
    from commsim.network.loader import load_topology

    return load_topology(topology, overrides=topology_params(params) or None)


def simulation_factory(topology: Any) -> Any:
    """A function returning a fresh simulation of ``topology`` (one per replay)."""
    from commsim.simulation import Simulation

    return lambda: Simulation(topology, record_usage=False)


def cluster_gpus(topology: Any, num_gpus: int | None) -> int:
    """GPUs of the job: ``--num-gpus`` (at most the topology's devices) or all the topology's devices."""
    available = len(topology.devices)
    if num_gpus is None:
        return available
    if not 1 <= num_gpus <= available:
        raise ConfigError(field="--num-gpus", value=num_gpus, rule=f"must be between 1 and the topology's {available} "
                          "devices", fix=f"give at most {available}, or a larger topology (-p servers=N)")
    return num_gpus


def memory_capacity(topology: Any) -> float | None:
    """Memory of the topology's first device, bytes (``None`` when it states none)."""
    from commsim.devices.spec import device_spec

    spec = device_spec(topology.device_spec(topology.devices[0]))
    return getattr(spec, "memory", None)


def breakdown_rows(metrics: dict[str, tuple[float, str]]) -> list[tuple[str, float]]:
    """The breakdown of the slowest stage as (label, seconds), in the order they add up to the step."""
    labels = [("compute", "compute_time"), ("recomputation", "recompute_time"),
              ("exposed TP communication", "exposed_tp_comm"), ("exposed PP communication", "exposed_pp_comm"),
              ("exposed DP communication", "exposed_dp_comm"), ("exposed EP communication", "exposed_ep_comm"),
              ("exposed CP communication", "exposed_cp_comm"), ("exposed other communication", "exposed_other_comm"),
              ("pipeline bubble and waits", "pipeline_bubble")]
    return [(label, metrics[key][0]) for label, key in labels if key in metrics]


def summary_table(title: str, metrics: dict[str, tuple[float, str]], memory_capacity: float | None) -> Table:
    """The step's headline numbers and its breakdown as a rich table."""
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("share of step", justify="right")
    step = metrics["step_time"][0]
    table.add_row("step time", format_time(step), "")
    table.add_row("MFU", f"{metrics['mfu'][0]:.1%}", "")
    table.add_row("HFU (counts recomputation)", f"{metrics['hfu'][0]:.1%}", "")
    table.add_row("model TFLOP/s per GPU", f"{metrics['tflops_per_gpu'][0]:.1f}", "")
    memory = metrics["peak_memory_per_gpu"][0]
    of = f" of {format_bytes(memory_capacity)}" if memory_capacity else ""
    table.add_row("peak memory per GPU", format_bytes(memory) + of, "")
    table.add_section()
    for label, seconds in breakdown_rows(metrics):
        table.add_row(label, format_time(seconds), f"{seconds / step:.1%}" if step > 0 else "")
    return table


_HELP = """Predict one training step from Megatron-LM arguments, e.g.

  commsim train -t topologies/dgx_h100.yaml -p servers=8 --num-layers 96 --hidden-size 12288
  --num-attention-heads 96 --seq-length 2048 --max-position-embeddings 2048 --micro-batch-size 1
  --global-batch-size 64 --tensor-model-parallel-size 8 --pipeline-model-parallel-size 8 --sequence-parallel --bf16

Every other argument of pretrain_gpt.py is either used (model shape, parallel sizes, batch, recomputation,
sequence parallelism, distributed optimizer, MoE, context parallelism, precision) or ignored with a stated reason
(learning rate, data, logging); an unknown one is an error listing the closest known ones. Data parallelism is
GPUs / (TP x PP x CP); the GPUs are the topology's devices or --num-gpus."""


@app.command("train", help=_HELP, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_command(
    ctx: typer.Context,
    topology: TopologyOption,
    params: ParamOption = None,
    model: Annotated[str | None, typer.Option("--model", help="Catalog model or YAML file (Megatron shape flags "
                                                                "then change it).")] = None,
    num_gpus: Annotated[int | None, typer.Option("--num-gpus", help="GPUs of the job (default: all the "
                                                                     "topology's devices).")] = None,
    fast: Annotated[bool, typer.Option("--fast/--full", help="Fast periodic replay (exact where it applies) or "
                                                             "every micro-batch through the full replay.")] = True,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Directory for metrics.csv and "
                                                "stages.csv.")] = None,
) -> None:
    from commsim.workloads.megatron_args import parse_megatron_args
    from commsim.workloads.prediction import predict_training_step

    cluster = load_cluster(topology, params)
    gpus = cluster_gpus(cluster, num_gpus)
    parsed = parse_megatron_args(list(ctx.args), gpus=gpus)
    spec = parsed.spec(model)
    for note in parsed.ignored:
        err_console.print(f"[dim]ignored: {note}[/]")
    with progress_bar(f"predicting {spec.name} on {gpus} GPUs") as update:
        prediction = predict_training_step(spec, parsed.training, simulation_factory(cluster), fast=fast,
                                           periodic=fast, fold="exact" if fast else "off",
                                           progress=lambda done, total: update(done, total, "ops"))
    t = parsed.training
    title = (f"{spec.name}: TP {t.get('tp', 1)} x PP {t.get('pp', 1)} x DP {t['dp']} on {gpus} GPUs, "
             f"{t.get('num_micro_batches', 'default')} micro-batches of {t.get('micro_batch_size', 1)}")
    console.print(summary_table(title, prediction.metrics, memory_capacity(cluster)))
    for note in prediction.notes:
        console.print(f"[dim]note: {note}[/]")
    if output is not None:
        import pandas as pd

        output.mkdir(parents=True, exist_ok=True)
        rows = [(k, v, u) for k, (v, u) in prediction.metrics.items()]
        pd.DataFrame(rows, columns=["metric", "value", "unit"]).to_csv(output / "metrics.csv", index=False)
        prediction.cohorts.to_csv(output / "stages.csv", index=False)
        console.print(f"wrote [bold]{output / 'metrics.csv'}[/] and [bold]{output / 'stages.csv'}[/]")
