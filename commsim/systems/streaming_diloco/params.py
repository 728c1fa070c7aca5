"""Parameters of the Streaming DiLoCo study; the defaults are the paper's bandwidth simulation.

Defaults (Douillard et al. 2025, arXiv 2501.18512, bandwidth simulation): M = 2
replicas, the catalog's diloco-1b / 10b / 100b models (24 / 48 / 108 layers) with
compute-only step times 0.1 / 0.8 / 4.9 s, H = 100 inner steps, fragments of 3
layers (8 / 16 / 36 fragments) assigned strided, overlap tau = 1 inner step,
16-bit payloads, 4-bit FP4 (E3M0) for the quantised variant, parameters counted
nominally (1B / 10B / 100B spread evenly over the layers), and the bandwidth grid
``numpy.logspace(-1, 3, 50)`` Gbit/s.

>>> p = StreamingDilocoParams()
>>> p.replicas, p.inner_steps, p.fragment_layers, p.overlap_steps, [m.label for m in p.models]
(2, 100, 3, 1, ['1B', '10B', '100B'])
>>> from commsim.config import validate
>>> validate(StreamingDilocoParams, {"inner_steps": 10, "overlap_steps": 10})
Traceback (most recent call last):
...
commsim.errors.ConfigError: overlap_steps = 10: (tau) is not below inner_steps (H) = 10: ...
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from commsim.config import StrictModel
from commsim.errors import ConfigError
from commsim.units import Bandwidth, Duration

__all__ = ["METHODS", "Method", "ModelCase", "BandwidthGrid", "StreamingDilocoParams", "REMOVED_FIELDS"]

Method = Literal["data_parallel", "diloco", "streaming", "streaming_overlap", "streaming_overlap_fp4"]
METHODS: tuple[str, ...] = ("data_parallel", "diloco", "streaming", "streaming_overlap", "streaming_overlap_fp4")
"""The five methods, in the order tables and figures list them."""
REMOVED_FIELDS: tuple[str, ...] = ("warmup_periods", "measure_periods")
"""Parameters of earlier versions that are refused with an explanation (not silently ignored)."""


class ModelCase(StrictModel):
    """One model of the study: a catalog name, the label tables use and its compute-only step time.

    ``step_time`` (seconds per inner step, compute only) is given as in the paper; when
    null it is derived as ``6 · parameters · tokens_per_step / (devices · peak bf16 FLOP/s · mfu)``.
    """

    model: str
    label: str | None = None
    step_time: Annotated[Duration, Field(gt=0)] | None = None

    @field_validator("model")
    @classmethod
    def _known(cls, value: str) -> str:
        from commsim.workloads import load_model

        load_model(value)  # a ConfigError (a ValueError) names the known models
        return value

    @property
    def name(self) -> str:
        """The label, or the catalog name when no label is given."""
        return self.label or self.model


def _default_models() -> list[ModelCase]:
    return [ModelCase(model="diloco-1b", label="1B", step_time=0.1),
            ModelCase(model="diloco-10b", label="10B", step_time=0.8),
            ModelCase(model="diloco-100b", label="100B", step_time=4.9)]


class BandwidthGrid(StrictModel):
    """The swept WAN bandwidths: ``numpy.logspace(log10_min, log10_max, points)`` Gbit/s."""

    log10_min: float = -1.0
    log10_max: float = 3.0
    points: Annotated[int, Field(ge=2, le=2000)] = 50

    @field_validator("log10_max")
    @classmethod
    def _ordered(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("log10_min")
        if low is not None and not value > low:
            raise ConfigError(field="log10_max", value=value, rule=f"is not above log10_min = {low}",
                              fix="give a grid from a lower to a higher bandwidth, e.g. -1 to 3 (0.1 to 1000 Gbit/s)")
        return value


class StreamingDilocoParams(StrictModel):
    """Everything the study needs; units in strings (``'0.1 s'``, ``'10 Gbps'``), SI inside.

    Attributes
    ----------
    models:
        The models, each a catalog name, a label and a step time (compute only, seconds).
    replicas:
        M, the number of replicas (data centres), each a data-parallel group in lockstep (>= 2).
    inner_steps:
        H, inner steps between two syncs of the same parameters (DiLoCo and streaming).
    fragment_remainder:
        What to do when ``fragment_layers`` does not divide a model's layers: ``reject``
        (an error), ``ceil`` (ceil(L/k) fragments, some one layer short) or ``floor``
        (floor(L/k) fragments, some one layer longer).
    fragment_layers:
        k, transformer layers per fragment (3 in the paper: 8 / 16 / 36 fragments).
    fragment_assignment:
        ``strided`` (fragment p holds layers p, p+P, p+2P, ...; the paper's default) or
        ``sequential`` (consecutive layers).
    overlap_steps:
        tau, inner steps a fragment's sync may take while computing goes on (0 <= tau < H).
    parameters:
        How parameters are counted: ``nominal`` (the paper's simulator: 1B / 10B / 100B spread
        evenly over the layers, compute too) or ``catalog`` (the catalog's shapes and FLOPs).
    dense_bits:
        Bits per parameter of the unquantised payloads (16: bf16).
    quantised_bits:
        Bits per parameter of the ``streaming_overlap_fp4`` payloads (4: E3M0 codes).
    quantised_block_size:
        Values per fp32 scale of the quantised payload; null (the default, as the paper counts
        FP4) sends no scales. The summary reports the bits ratio with 128-value scales separately.
    sharing:
        How syncs in flight share the WAN: ``fair`` (max-min, each layer's sync its own flow) or
        ``fifo`` (one queue in release order, as the author's public simulator serves them).
    backward_to_forward:
        Backward compute time over forward compute time per layer (2: two GEMMs per forward one).
    tokens_per_step:
        Tokens of one inner step of one replica: converts the token budget into steps and
        feeds the derived step time (an assumption; the paper does not state its batch).
    tokens_per_parameter:
        Token budget as a multiple of the parameter count (20: Chinchilla-optimal).
    mfu, devices_per_replica, device:
        Only for models without a ``step_time``: model FLOP utilisation, accelerators per
        replica and their preset (null: taken from the topology's first data centre).
    wan_bandwidth, wan_latency:
        The user's link, one direction (null: the topology's WAN link; without a topology
        10 Gbit/s and 0 s). The latency is charged once per ring step of every sync.
    bandwidth_grid:
        The swept bandwidths.
    cu_levels:
        Compute utilisations whose first bandwidth the table reports.
    methods:
        The methods to simulate.
    timeline_model, timeline_periods:
        Model (label or catalog name; null: the first) and number of outer steps drawn in the
        dashboard timeline at the user's link bandwidth.
    """

    models: Annotated[list[ModelCase], Field(min_length=1)] = Field(default_factory=_default_models)
    replicas: Annotated[int, Field(ge=2)] = 2
    inner_steps: Annotated[int, Field(ge=1)] = 100
    fragment_remainder: Literal["reject", "ceil", "floor"] = "reject"
    fragment_layers: Annotated[int, Field(ge=1)] = Field(default=3, validate_default=True)
    fragment_assignment: Literal["strided", "sequential"] = "strided"
    overlap_steps: Annotated[int, Field(ge=0)] = Field(default=1, validate_default=True)
    parameters: Literal["nominal", "catalog"] = "nominal"
    dense_bits: Annotated[float, Field(gt=0, le=64)] = 16.0
    quantised_bits: Annotated[float, Field(gt=0, le=64)] = 4.0
    quantised_block_size: Annotated[int, Field(ge=1)] | None = None
    sharing: Literal["fair", "fifo"] = "fair"
    backward_to_forward: Annotated[float, Field(gt=0)] = 2.0
    tokens_per_step: Annotated[int, Field(ge=1)] = 2**21
    tokens_per_parameter: Annotated[float, Field(gt=0)] = 20.0
    mfu: Annotated[float, Field(gt=0, le=1)] = 0.4
    devices_per_replica: Annotated[int, Field(ge=1)] | None = None
    device: str | None = None
    wan_bandwidth: Annotated[Bandwidth, Field(gt=0)] | None = None
    wan_latency: Annotated[Duration, Field(ge=0)] | None = None
    bandwidth_grid: BandwidthGrid = BandwidthGrid()
    cu_levels: Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=1)] = [0.5, 0.8, 0.9, 0.95,
                                                                                             0.99]
    methods: Annotated[list[Method], Field(min_length=1)] = list(METHODS)
    timeline_model: str | None = None
    timeline_periods: Annotated[int, Field(ge=1, le=20)] = 2

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            gone = [key for key in REMOVED_FIELDS if key in data]
            if gone:
                raise ConfigError(field="params", value=gone,
                                  rule="names parameters the study no longer takes: it replays the periods until they "
                                       "repeat "
                                       "themselves (or, when they cannot interact, exactly one period) instead of "
                                       "a fixed warm-up and measured window", fix=f"remove {' and '.join(gone)}")
        return data

    @field_validator("fragment_layers")
    @classmethod
    def _fragments(cls, value: int, info: ValidationInfo) -> int:
        rule = info.data.get("fragment_remainder", "reject")
        if rule != "reject":
            return value
        from commsim.workloads import load_model

        for case in info.data.get("models") or []:
            layers = load_model(case.model).layers
            if layers % value:
                divisors = [d for d in range(1, layers + 1) if layers % d == 0]
                raise ConfigError(
                    field="fragment_layers", value=value,
                    rule=f"does not divide the {layers} layers of {case.model} and no remainder rule is stated",
                    fix=f"use a divisor of {layers} ({', '.join(map(str, divisors))}) or set fragment_remainder to "
                        "'ceil' (one more fragment, some a layer short) or 'floor' (some a layer longer)")
        return value

    @field_validator("overlap_steps")
    @classmethod
    def _overlap(cls, value: int, info: ValidationInfo) -> int:
        h = info.data.get("inner_steps")
        if h is not None and value >= h:
            raise ConfigError(field="overlap_steps", value=value,
                              rule=f"(tau) is not below inner_steps (H) = {h}: a fragment's sync would still be in "
                                   "flight when its next sync starts",
                              fix=f"give an overlap of at most {h - 1} inner steps, or raise inner_steps")
        return value

    @field_validator("timeline_model")
    @classmethod
    def _timeline_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        models = info.data.get("models") or []
        if value is not None and value not in {m.name for m in models} | {m.model for m in models}:
            names = ", ".join(m.name for m in models)
            raise ConfigError(field="timeline_model", value=value, rule="is not one of the study's models",
                              fix=f"use one of {names}")
        return value

    def case_of(self, name: str | None) -> ModelCase:
        """The model case called ``name`` (label or catalog name; None: the first)."""
        if name is None:
            return self.models[0]
        return next(m for m in self.models if name in (m.name, m.model))

    def grid_gbit(self) -> Any:
        """The swept bandwidths, Gbit/s (``numpy.logspace`` of the grid)."""
        import numpy as np

        g = self.bandwidth_grid
        return np.logspace(g.log10_min, g.log10_max, g.points)

