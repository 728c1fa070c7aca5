"""Parameters of the compressed data-parallel study, with their defaults and checks.

Defaults: data-parallel training of the catalog's ``llama-2-7b`` (6.74B parameters) on
every GPU of the scenario's topology (the study's own default is the repository's
``topologies/dgx_h100_x2_rail.yaml``: two 8-GPU H100 servers, one 2 x 200 Gbit/s NIC per
GPU on a rail-optimised fabric), one 4,096-token sequence per GPU per step, gradients
released per transformer block during the backward pass. Compressors (specs of
:func:`commsim.compression.make_compressor`):

- ``none`` (fp32, the reference every ratio is measured against) and ``bf16``;
- ``int8`` (blockwise, 256 values per scale) and ``signsgd`` (1 bit, majority vote on a server);
- ``ef_signsgd`` (scaled sign with error feedback, all-gathered);
- ``topk:ratio=0.01`` and ``randomk:ratio=0.01`` (shared seed, all-reduced);
- ``dgc`` (99.9% sparsity, momentum correction; the paper's warm-up densities 25% / 6.25% /
  1.5625% / 0.4% for ``dgc_warmup_steps`` = 500 steps each, an assumption: the paper warms up
  over 4 epochs);
- ``powersgd:rank=4`` (dense fp32 for the first 1,000 steps, PyTorch's ``start_powerSGD_iter``);
- ``liec:ratio=0.01`` (bidirectional top-k through a server).

>>> p = CompressedDPParams()
>>> p.model, p.tokens_per_rank, [c.name for c in p.compressors][:3], p.co2_tau
('llama-2-7b', 4096, ['none', 'bf16', 'int8'], 1)
>>> from commsim.config import validate
>>> validate(CompressedDPParams, {"compressors": [{"spec": "topk:ratio=2"}]})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
commsim.errors.ConfigError: compressors[0].spec = 'topk:ratio=2': topk.ratio = 2: must be in (0, 1]...
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from commsim.config import StrictModel
from commsim.errors import ConfigError

__all__ = ["CompressorEntry", "ConvergenceParams", "CompressedDPParams", "TimelineParams", "VARIANTS",
           "DEFAULT_TOPOLOGY"]

VARIANTS: tuple[str, ...] = ("sync", "co2")
"""``sync``: every step waits for its own gradient sync; ``co2``: the sync of step t is waited for before step t+tau+1."""

DEFAULT_TOPOLOGY = "topologies/dgx_h100_x2_rail.yaml"
"""The topology used when the scenario gives none (relative to the repository root)."""


class CompressorEntry(StrictModel):
    """One compressor of the study.

    Attributes
    ----------
    spec:
        A :func:`commsim.compression.make_compressor` spec (``topk:ratio=0.01``, ``powersgd:rank=4``...).
    label:
        Name in tables and figures (default: the spec).
    dense_steps:
        Steps at the start of training that send the gradient dense (fp32, all-reduce) before the
        compressor takes over (PowerSGD's ``start_powerSGD_iter``, 1-bit methods' warm-up).
    """

    spec: str
    label: str | None = None
    dense_steps: Annotated[int, Field(ge=0)] = 0

    @field_validator("spec")
    @classmethod
    def _known(cls, value: str) -> str:
        _check_compressor(value, "spec")
        return value

    @property
    def name(self) -> str:
        """The label, or the spec."""
        return self.label or self.spec


def _default_compressors() -> list[CompressorEntry]:
    return [CompressorEntry(spec="none"), CompressorEntry(spec="bf16"), CompressorEntry(spec="int8"),
            CompressorEntry(spec="signsgd"), CompressorEntry(spec="ef_signsgd"),
            CompressorEntry(spec="topk:ratio=0.01", label="topk"),
            CompressorEntry(spec="randomk:ratio=0.01", label="randomk"),
            CompressorEntry(spec="dgc:warmup_steps=500", label="dgc"),
            CompressorEntry(spec="powersgd:rank=4", label="powersgd r4", dense_steps=1000),
            CompressorEntry(spec="liec:ratio=0.01", label="liec")]


class ConvergenceParams(StrictModel):
    """The tiny-model convergence run (:func:`commsim.compression.convergence_check`), on this CPU.

    It trains the compression module's 2-layer transformer LM (d_model 32, about 20k
    parameters, on a random Markov chain) with each compressor: a check of the *direction*
    (does a method converge, how much loss per byte), not of the large model's accuracy.
    Densities suited to 20k parameters replace the large-model ones (top-k 5% instead of 1%).
    """

    enabled: bool = True
    compressors: Annotated[list[str], Field(min_length=1)] = [
        "none", "signsgd", "ef_signsgd", "topk:ratio=0.05", "topk:ratio=0.05,ef=true", "dgc:ratio=0.05",
        "powersgd:rank=1"]
    steps: Annotated[int, Field(ge=1, le=2000)] = 60
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    eval_every: Annotated[int, Field(ge=1)] = 10
    model: Literal["transformer", "convnet"] = "transformer"

    @field_validator("compressors")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            _check_compressor(spec, "compressors")
        return value


class TimelineParams(StrictModel):
    """Which run the dashboard's timeline shows (recorded spans of every rank)."""

    compressor: str | None = None
    variant: Literal["sync", "co2"] = "sync"
    steps: Annotated[int, Field(ge=1, le=8)] = 2


class CompressedDPParams(StrictModel):
    """Everything the study needs; units in strings where they have units, SI inside.

    Attributes
    ----------
    model:
        Catalog name or YAML path of a transformer (:func:`commsim.workloads.load_model`).
    tokens_per_rank:
        Tokens one GPU processes per step (micro-batch x sequence length); sets the GEMM shapes.
    seq_len:
        Sequence length for the attention GEMMs (default: the model's default).
    ranks:
        Data-parallel ranks: the first ``ranks`` devices of the topology (default: all).
    compressors:
        The compressors compared (see the module docstring for the defaults).
    train_steps:
        Length of the training run over which warm-up and steady state are averaged.
    inter_node_gbps:
        The swept inter-node bandwidths, Gbit/s per direction of one NIC port: every link
        that leaves a server (NIC ports, leaf and spine links) is scaled by
        ``value / the topology's port bandwidth``, so the fabric keeps its shape.
    variants:
        ``sync`` and/or ``co2``.
    co2_tau:
        CO2's overlap: the sync of step t must be complete before the forward pass of step
        t + tau + 1 (0 would be synchronous data-parallel).
    release:
        ``backward``: a block's bucket is compressed and sent as soon as its backward pass ends
        (overlapped, as DDP does); ``after_backward``: all buckets after the whole backward pass.
    all_reduce_algorithm, all_gather_algorithm:
        ``auto`` picks ``hierarchical`` (intra-server rings, inter-server per rail) when the
        ranks span several servers of equal size, else ``ring``.
    parameter_server:
        ``star``: a server on rank ``server_rank`` gathers the uploads, aggregates and sends
        its reply back; ``sharded``: every rank serves 1/n of the tensor (all-to-all push,
        all-gather reply).
    server_rank:
        Rank hosting the star server (it trains too).
    packed:
        Send the packed payloads (bits packed, int32/delta indices); false sends the naive form.
    compression_dtype:
        Peak FLOP/s used for compression kernels (they run on CUDA cores, not tensor cores).
    collective_mode:
        ``flows`` (each connection's bytes as one flow after the schedule's latency; fast) or
        ``steps`` (every step of every schedule).
    count_chunk_elements:
        Largest real tensor compressed when counting bytes (see :class:`commsim.compression.PayloadCounter`).
    convergence:
        The tiny-model convergence run.
    timeline:
        The recorded run shown in the dashboard.
    seed:
        Seed of the real tensors the payloads are counted on.
    """

    model: str = "llama-2-7b"
    tokens_per_rank: Annotated[int, Field(ge=1)] = 4096
    seq_len: Annotated[int, Field(ge=1)] | None = None
    ranks: Annotated[int, Field(ge=2)] | None = None
    compressors: Annotated[list[CompressorEntry], Field(min_length=1)] = Field(default_factory=_default_compressors)
    train_steps: Annotated[int, Field(ge=1)] = 10_000
    inter_node_gbps: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = [
        10.0, 25.0, 50.0, 100.0, 200.0, 400.0]
    variants: Annotated[list[Literal["sync", "co2"]], Field(min_length=1)] = list(VARIANTS)
    co2_tau: Annotated[int, Field(ge=0, le=16)] = 1
    release: Literal["backward", "after_backward"] = "backward"
    all_reduce_algorithm: Literal["auto", "ring", "hierarchical", "double_binary_tree", "halving_doubling"] = "auto"
    all_gather_algorithm: Literal["auto", "ring", "hierarchical"] = "auto"
    parameter_server: Literal["star", "sharded"] = "star"
    server_rank: Annotated[int, Field(ge=0)] = 0
    packed: bool = True
    compression_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    collective_mode: Literal["flows", "steps"] = "flows"
    count_chunk_elements: Annotated[int, Field(ge=1024, le=1 << 26)] = 1 << 19
    convergence: ConvergenceParams = ConvergenceParams()
    timeline: TimelineParams = TimelineParams()
    seed: Annotated[int, Field(ge=0)] = 0

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        from commsim.workloads import load_model

        load_model(value)  # a ConfigError (a ValueError) names the known models
        return value

    @field_validator("compressors")
    @classmethod
    def _unique(cls, value: list[CompressorEntry]) -> list[CompressorEntry]:
        names = [c.name for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(field="compressors", value=twice, rule="are named more than once",
                              fix="give each compressor a distinct label")
        return value

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ConfigError(field="variants", value=value, rule="lists a variant twice",
                              fix="list sync and/or co2 once each")
        return value

    @field_validator("timeline")
    @classmethod
    def _timeline(cls, value: TimelineParams, info: ValidationInfo) -> TimelineParams:
        entries = info.data.get("compressors") or []
        names = [c.name for c in entries]
        if value.compressor is not None and value.compressor not in names:
            raise ConfigError(field="timeline.compressor", value=value.compressor,
                              rule="is not one of the study's compressors", fix=f"use one of {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _warmups_fit(self) -> CompressedDPParams:
        for entry in self.compressors:
            if entry.dense_steps > self.train_steps:
                raise ConfigError(field=f"compressor {entry.name!r}.dense_steps", value=entry.dense_steps,
                                  rule=f"is above train_steps = {self.train_steps}",
                                  fix="lower dense_steps or raise train_steps")
        return self

    def entry(self, name: str | None) -> CompressorEntry:
        """The compressor called ``name`` (None: the first compressed one, else the first)."""
        if name is None:
            return next((c for c in self.compressors if c.spec.split(":")[0] != "none"), self.compressors[0])
        return next(c for c in self.compressors if c.name == name)


def _check_compressor(spec: str, field: str) -> None:
    """Refuse a compressor spec that :func:`~commsim.compression.make_compressor` refuses (saying why)."""
    from commsim.compression import make_compressor

    try:
        make_compressor(spec)
    except ConfigError as error:
        raise ConfigError(field=field, value=spec, rule=f"{error.field} = {error.value!r}: {error.rule}",
                          fix=error.fix) from None
