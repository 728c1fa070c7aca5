"""``commsim compress``: compare gradient compressors on real tensors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from commsim.cli._app import app, console, fail
from commsim.errors import ConfigError
from commsim.limits import MAX_TENSOR_ELEMENTS, allow_large, check_limit
from commsim.paths import output_file
from commsim.units import format_bytes, format_time

_TABLE_WIDTH = 140
_COLLECTIVE_NAMES = {
    "all_reduce": "all-reduce",
    "all_gather": "all-gather",
    "parameter_server": "param. server",
    "chained_all_reduce": "chained all-reduce",
}

if TYPE_CHECKING:
    import pandas as pd
    import torch


@app.command("compress")
def compress_command(
    compressor: list[str] | None = typer.Option(
        None,
        "--compressor",
        "-c",
        help="Compressor spec, repeatable: name or name:param=value,... (e.g. topk:ratio=0.01,ef=true). "
        "Default: every method. See --list.",
    ),
    shape: list[str] | None = typer.Option(
        None, "--shape", "-s", help="Synthetic tensor shape, repeatable (e.g. 1024x1024)."
    ),
    layers: str | None = typer.Option(
        None, "--layers", help="Synthetic tensors of a model's layer shapes: resnet18 (CIFAR, the default source) "
        "or resnet18-imagenet."
    ),
    file: Path | None = typer.Option(None, "--file", "-f", help="A .pt file with a tensor or a dict of tensors."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Gradients of one real backward pass: transformer or convnet."
    ),
    kind: str = typer.Option("gradient", "--kind", help="Values of synthetic tensors: gradient or weight."),
    seed: int = typer.Option(0, "--seed", help="Seed of synthetic tensors and model data."),
    csv: Path | None = typer.Option(None, "--csv", help="Also write the table (all columns) to this CSV file."),
    list_compressors: bool = typer.Option(False, "--list", help="List the compressors and their parameters."),
    force: bool = typer.Option(False, "--force", help="Allow tensors above the size limit."),
) -> None:
    """Compress real tensors with each compressor: exact bytes (naive and packed), ratio, error, time."""
    from commsim.compression import describe_compressors, evaluate

    if list_compressors:
        table = Table(title="Compressors", title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("what (parameters with defaults)")
        for name, summary in describe_compressors().items():
            table.add_row(name, summary)
        console.print(table)
        console.print("Every compressor also takes [bold]ef=true[/] (error feedback).")
        return
    try:
        if seed < 0:
            raise ConfigError(field="--seed", value=seed, rule="must be at least 0", fix="give a seed of 0 or more")
        if csv is not None:
            output_file(csv, field="--csv")
        tensors, description = _load_source(shape, layers, file, model, kind, seed, force)
        results = evaluate(compressor or None, tensors)
    except ConfigError as error:
        raise fail(error) from None
    numel = int(results["numel"].iloc[0])
    console.print(
        f"[bold]{escape(description)}[/]: {len(tensors)} tensor{'s' if len(tensors) != 1 else ''}, "
        f"{numel:,} elements, {format_bytes(numel * 4)} in fp32",
        soft_wrap=True,
    )
    # A comparison table reads badly when squeezed (and Console.print never widens past
    # the console): render it at least 140 columns wide into the same stream.
    wide = Console(file=console.file, width=max(console.width, _TABLE_WIDTH), force_terminal=console.is_terminal)
    wide.print(_table(results))
    console.print(
        "ratio = dense fp32 bytes / payload bytes. naive: 1 byte per sign or code, int64 indices, fp32 scales; "
        "packed: bits packed, int32 or delta-coded indices, Huffman codes. time = compress + decompress on this CPU.",
        soft_wrap=True,
    )
    if csv is not None:
        try:
            results.to_csv(csv, index=False)
        except OSError as error:
            raise fail(
                ConfigError(field="--csv", value=str(csv), rule=f"cannot be written ({error.strerror})",
                            fix="give a path in an existing, writable directory")
            ) from None
        console.print(f"wrote {escape(str(csv))}")


def _load_source(
    shapes: list[str] | None, layers: str | None, file: Path | None, model: str | None, kind: str, seed: int,
    force: bool = False,
) -> tuple[dict[str, torch.Tensor], str]:
    from commsim.compression import load_tensors, model_gradients, parse_shape, resnet18_shapes, synthetic_tensors

    chosen = [name for name, value in (("--shape", shapes), ("--layers", layers), ("--file", file),
                                       ("--model", model)) if value]  # fmt: skip
    if len(chosen) > 1:
        raise ConfigError(
            field="tensor source",
            value=" and ".join(chosen),
            rule="only one source can be used at a time",
            fix="give one of --shape, --layers, --file or --model",
        )
    if kind not in ("gradient", "weight"):
        raise ConfigError(field="--kind", value=kind, rule="must be gradient or weight", fix="pick one of them")
    if shapes:
        parsed = [parse_shape(text) for text in shapes]
        elements = sum(math.prod(s) for s in parsed)
        with allow_large(force):
            check_limit("--shape", " ".join(shapes), elements, MAX_TENSOR_ELEMENTS, "tensor elements",
                        fix=f"use smaller shapes (each element takes 4 B; {elements:,} would need "
                            f"{format_bytes(elements * 4)} per copy)")
        named = {f"tensor{i}[{'x'.join(map(str, s))}]": s for i, s in enumerate(parsed)}
        return synthetic_tensors(named, kind=kind, seed=seed), f"synthetic {kind}s"
    if file is not None:
        return load_tensors(file), str(file)
    if model is not None:
        if model == "transformer":
            return model_gradients("transformer", seed=seed), "transformer gradients (one backward pass)"
        if model == "convnet":
            return model_gradients("convnet", seed=seed), "convnet gradients (one backward pass)"
        raise ConfigError(field="--model", value=model, rule="must be transformer or convnet", fix="pick one of them")
    layers = layers or "resnet18"
    if layers in ("resnet18", "resnet18-cifar"):
        shapes_of = resnet18_shapes("cifar")
    elif layers == "resnet18-imagenet":
        shapes_of = resnet18_shapes("imagenet")
    else:
        raise ConfigError(
            field="--layers",
            value=layers,
            rule="must be resnet18 (CIFAR shapes) or resnet18-imagenet",
            fix="pick one of them, or pass any shapes with --shape",
        )
    return synthetic_tensors(shapes_of, kind=kind, seed=seed), f"{layers} synthetic {kind}s"


def _table(results: pd.DataFrame) -> Table:
    table = Table(show_lines=True)
    table.add_column("compressor (parameters)", min_width=26, max_width=40)
    for title in ("bytes naive", "bytes packed", "ratio naive", "ratio packed", "rel. error", "cosine", "time"):
        table.add_column(title, justify="right", no_wrap=True, style="bold" if title == "ratio packed" else "")
    table.add_column("collective", min_width=18)
    for row in results.itertuples(index=False):
        table.add_row(
            f"[bold]{escape(str(row.compressor))}[/]" + (f"\n[dim]{escape(str(row.params))}[/]" if row.params else ""),
            f"{row.bytes_naive:,}",
            f"{row.bytes_packed:,}",
            _number(row.ratio_naive),
            _number(row.ratio_packed),
            _number(row.rel_error, 3),
            _number(row.cosine, 4),
            format_time(row.compress_s + row.decompress_s, 3),
            ", ".join(_COLLECTIVE_NAMES.get(c, c) for c in row.collectives.split("+")),
        )
    return table


def _number(value: float, digits: int = 4) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"
