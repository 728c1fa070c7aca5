"""``commsim trace ...``: the JSON Schema, generation, validation, Chakra import/export and PyTorch profiler import."""

from __future__ import annotations

import json
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from commsim import workloads  # names load on first use, so `commsim --help` does not pay for them
from commsim.cli._app import console, trace_app
from commsim.config import load_yaml
from commsim.errors import ConfigError
from commsim.limits import MAX_RANKS, check_limit
from commsim.paths import output_file
from commsim.units import format_bytes, format_quantity, parse_quantity

if TYPE_CHECKING:
    from commsim.workloads.trace import Trace


class Mode(str, Enum):
    """What ``trace generate`` produces."""

    training = "training"
    inference = "inference"


@trace_app.command("schema")
def schema(
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the schema to this file instead of stdout."),
) -> None:
    """Print the JSON Schema of the trace format."""
    text = json.dumps(workloads.trace_json_schema(), indent=2)
    if output is None:
        typer.echo(text)
    else:
        output_file(output, field="--output").write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote the trace JSON Schema to [bold]{escape(str(output))}[/]")


@trace_app.command("generate")
def generate(
    model: str = typer.Argument(..., help="Catalog name (e.g. gpt3-175b) or path of a model YAML file."),
    output: Path = typer.Option(..., "-o", "--output", help="Trace file to write (JSON)."),
    mode: Mode = typer.Option(Mode.training, "--mode", help="A training step or an inference run."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel degree (training)."),
    dp: int = typer.Option(1, "--dp", help="Data-parallel degree (training)."),
    cp: int = typer.Option(1, "--cp", help="Context-parallel degree: ring attention (training)."),
    recompute: str = typer.Option("none", "--recompute", help="Activation recomputation: none, selective, full."),
    virtual_stages: int = typer.Option(1, "--virtual-stages",
                                       help="Model chunks per pipeline stage: interleaved 1F1B above 1."),
    zero_stage: int = typer.Option(0, "--zero-stage", help="ZeRO stage 0-3 (1 = Megatron's distributed optimizer)."),
    experts: int = typer.Option(0, "--experts", help="Experts per MoE layer (0: dense)."),
    top_k: int = typer.Option(2, "--top-k", help="Experts per token (MoE)."),
    capacity_factor: float = typer.Option(1.0, "--capacity-factor", help="Expert capacity factor (MoE)."),
    ep: int = typer.Option(1, "--ep", help="Expert-parallel degree, inside the data-parallel one (MoE)."),
    micro_batch_size: int = typer.Option(1, "--micro-batch-size", help="Sequences per micro-batch (training)."),
    micro_batches: int | None = typer.Option(None, "--micro-batches",
                                             help="Micro-batches per step \\[default: 2 x pp, or 1 without PP]."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per sequence \\[default: the model's]."),
    dtype: str = typer.Option("bf16", "--dtype", help="Weights and activations: fp32, tf32, fp16, bf16, fp8, int8."),
    grad_dtype: str = typer.Option("fp32", "--grad-dtype", help="Gradients all-reduced by data parallelism."),
    bucket_size: str = typer.Option("25 MiB", "--bucket-size", help="Data-parallel gradient bucket size."),
    sequence_parallel: bool = typer.Option(False, "--sequence-parallel", help="Reduce-scatter + all-gather for TP."),
    no_flash: bool = typer.Option(False, "--no-flash-attention", help="Keep the attention score matrix in memory."),
    loose_heads: bool = typer.Option(False, "--loose-heads",
                                     help="Allow TP not dividing the heads (size GEMMs by hidden width, as T3)."),
    uneven_layers: bool = typer.Option(False, "--uneven-layers",
                                       help="Allow PP not dividing the layers (first stages take one more)."),
    tp_algorithm: str = typer.Option("auto", "--tp-algorithm", help="Algorithm for TP collectives."),
    dp_algorithm: str = typer.Option("auto", "--dp-algorithm", help="Algorithm for DP collectives."),
    batch_size: int = typer.Option(1, "--batch-size", help="Sequences decoded together (inference)."),
    prompt_len: int = typer.Option(512, "--prompt-len", help="Prompt tokens (inference)."),
    decode_steps: int = typer.Option(32, "--decode-steps", help="Generated tokens (inference)."),
    indent: int | None = typer.Option(None, "--indent", help="Indent the JSON (default compact)."),
) -> None:
    """Generate a training-step or inference trace from a model of the catalog."""
    output_file(output, field="--output")
    for flag, value in (("--tp", tp), ("--pp", pp), ("--dp", dp)):
        if value < 1:
            raise ConfigError(field=flag, value=value, rule="must be at least 1", fix="give a positive degree")
    check_limit("--tp/--pp/--dp", (tp, pp, dp), tp * pp * dp, MAX_RANKS, "ranks",
                fix="use smaller parallel degrees")
    if mode is Mode.training:
        trace = workloads.training_trace(
            model, tp=tp, pp=pp, dp=dp, micro_batch_size=micro_batch_size, num_micro_batches=micro_batches,
            seq_len=seq_len, dtype=dtype, grad_dtype=grad_dtype,
            bucket_size=parse_quantity(bucket_size, "bytes", field="--bucket-size"),
            sequence_parallel=sequence_parallel, flash_attention=not no_flash, strict_heads=not loose_heads,
            uneven_layers=uneven_layers, tp_algorithm=tp_algorithm, dp_algorithm=dp_algorithm, cp=cp,
            recompute=recompute, virtual_pipeline_stages=virtual_stages, zero_stage=zero_stage,
            num_experts=experts, top_k=top_k, capacity_factor=capacity_factor, ep=ep)
    else:
        if pp != 1 or dp != 1:
            raise ConfigError(field="--pp/--dp", value=(pp, dp), rule="apply to training only",
                              fix="leave them at 1 for --mode inference (inference traces are tensor-parallel)")
        trace = workloads.inference_trace(model, tp=tp, batch_size=batch_size, prompt_len=prompt_len,
                                          decode_steps=decode_steps, dtype=dtype, tp_algorithm=tp_algorithm,
                                          flash_attention=not no_flash, strict_heads=not loose_heads)
    workloads.validate_trace(trace)
    _write(trace, output, indent)


@trace_app.command("validate")
def validate_cmd(
    file: Path = typer.Argument(..., help="Trace file (JSON)."),
    devices: int | None = typer.Option(None, "--devices", help="Also check that the ranks fit N devices."),
) -> None:
    """Check a trace file against every rule of the format and summarise it."""
    trace = workloads.load_trace(file)
    if devices is not None:
        if devices < 1:
            raise ConfigError(field="--devices", value=devices, rule="must be at least 1",
                              fix="give the number of devices the trace should run on")
        try:
            workloads.validate_against(trace, devices)
        except ConfigError as error:
            raise error.with_source(str(file)) from None
    console.print(f"[green]valid[/]: {escape(str(file))}")
    _summary(trace)


@trace_app.command("import-chakra")
def import_chakra_cmd(
    files: list[Path] = typer.Argument(..., help="Chakra traces (.et protobuf or JSON, one per rank): files, a "
                                                 "directory, or a prefix such as traces/all_reduce for "
                                                 "traces/all_reduce.<rank>.et."),
    output: Path = typer.Option(..., "-o", "--output", help="Trace file to write (JSON)."),
    ranks: str | None = typer.Option(None, "--ranks",
                                      help="Comma-separated rank of each file \\[default: from the file names]."),
    process_groups: Path | None = typer.Option(None, "--process-groups",
                                               help="YAML/JSON mapping pg_name -> list of ranks \\[default: "
                                                    "<prefix>.comm_group.json when present]."),
    dtype: str = typer.Option("fp16", "--dtype", help="Element type given to compute ops."),
    indent: int | None = typer.Option(None, "--indent", help="Indent the JSON (default compact)."),
) -> None:
    """Convert Chakra execution traces (binary .et or JSON, one file per rank) into a commsim trace."""
    output_file(output, field="--output")
    rank_list = None
    if ranks is not None:
        try:
            rank_list = [int(part) for part in ranks.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(field="--ranks", value=ranks, rule="is not a comma-separated list of ranks",
                              fix="write e.g. --ranks 0,1,2,3") from None
    groups = None
    if process_groups is not None:
        data = load_yaml(process_groups)
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ConfigError(field="--process-groups", value=str(process_groups),
                              rule="is not a mapping of group names to rank lists",
                              fix="write e.g. {\"0\": [0, 1, 2, 3]}")
        groups = {str(k): [int(r) for r in v] for k, v in data.items()}
    trace = workloads.import_chakra(files, ranks=rank_list, process_groups=groups, dtype=dtype)
    _write(trace, output, indent)


@trace_app.command("export-chakra")
def export_chakra_cmd(
    file: Path = typer.Argument(..., help="A trace in any format commsim reads (commsim JSON, Chakra, PyTorch)."),
    output: Path = typer.Option(..., "-o", "--output",
                                help="Prefix of the files to write: PREFIX.<rank>.et (and PREFIX.comm_group.json)."),
) -> None:
    """Write a trace as Chakra ET files (one protobuf stream per rank) for ASTRA-sim and Chakra's tools."""
    from commsim.workloads.chakra_et import export_chakra
    from commsim.workloads.sources import load_any_trace

    output_file(output.with_name(f"{output.name}.0.et"), field="--output")
    trace = load_any_trace(file)
    paths = export_chakra(trace, output)
    size = sum(p.stat().st_size for p in paths)
    console.print(f"wrote {len(paths)} files [bold]{escape(str(output))}.*[/] ({format_bytes(size)})")
    _summary(trace)


@trace_app.command("import-pytorch")
def import_pytorch_cmd(
    files: list[Path] = typer.Argument(..., help="torch.profiler Chrome-trace JSON files (one per rank) or their "
                                                 "directory."),
    output: Path = typer.Option(..., "-o", "--output", help="Trace file to write (JSON)."),
    indent: int | None = typer.Option(None, "--indent", help="Indent the JSON (default compact)."),
) -> None:
    """Convert PyTorch profiler (Kineto) traces into a commsim trace: measured op times, collectives, their order."""
    from commsim.workloads.kineto import import_pytorch_profile

    output_file(output, field="--output")
    trace = import_pytorch_profile(files)
    _write(trace, output, indent)


def _write(trace: Trace, output: Path, indent: int | None) -> None:
    """Save ``trace`` as JSON at ``output``, say so and summarise it."""
    size = workloads.save_trace(trace, output, indent=indent)
    console.print(f"wrote [bold]{escape(str(output))}[/] ({format_bytes(size)})")
    _summary(trace)


def _summary(trace: Trace, limit: int = 24) -> None:
    table = Table(title=escape(f"{trace.name}: {trace.ranks} ranks, {len(trace.programs)} programs, "
                               f"communicators {', '.join(trace.communicators) or '-'}"))
    for column in ("program", "ranks", "ops", "comp", "coll", "p2p", "mem", "other", "FLOP/rank", "coll bytes/rank"):
        table.add_column(column, justify="left" if column == "program" else "right")
    for program in trace.programs[:limit]:
        kinds = Counter(op.kind for op in program.ops)
        flops = sum(getattr(op, "flops", 0.0) for op in program.ops)
        coll = sum(op.bytes for op in program.ops if op.kind == "collective")
        table.add_row(escape(program.name), str(len(program.rank_list())), str(len(program.ops)), str(kinds["compute"]),
                      str(kinds["collective"]), str(kinds["send"] + kinds["recv"]),
                      str(kinds["alloc"] + kinds["free"]), str(kinds["disk_read"] + kinds["delay"]),
                      format_quantity(flops, "FLOP"), format_bytes(coll))
    if len(trace.programs) > limit:
        table.add_row(f"… {len(trace.programs) - limit} more", *[""] * 9)
    console.print(table)
