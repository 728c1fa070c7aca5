"""Parameters of the TPI-LLM study, with the paper's setting as defaults.

Every default is either the paper's (STUDIES.md section 4), the public code's,
or a stated assumption; the docstring of :class:`TPIParams` says which.

>>> p = TPIParams()
>>> p.device_counts, p.windows, p.allreduce
([2, 4, 6, 8], [2, 'off'], 'star')
>>> from commsim.config import validate
>>> validate(TPIParams, {"windows": [0]})
Traceback (most recent call last):
...
commsim.errors.ConfigError: windows = 0: is below 1 block. Fix: give a window of at least 1 block (TPI-LLM uses 2), or 'off' to turn the scheduler off.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from commsim.config import StrictModel
from commsim.errors import ConfigError
from commsim.units import Bandwidth, Bytes, Duration
from commsim.workloads.models import load_model

__all__ = ["MODELS", "TPIParams", "FILE_BYTES"]

MODELS: list[str] = ["llama-2-3b", "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b",
                     "yi-34b"]
"""The seven models of the paper (``llama-2-3b`` is the catalog alias of ``open-llama-3b``)."""

FILE_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0}
"""Bytes per parameter of the weight files on disk."""

Window = Annotated[int, Field(strict=False)] | Literal["off"]


def _check_shares(value: Any, field: str) -> Any:
    if isinstance(value, str):
        return value
    shares = [float(v) for v in value]
    if not shares:
        raise ConfigError(field=field, value=[], rule="is empty", fix="give one share per device, or 'speed'")
    if any(not math.isfinite(s) or s <= 0 for s in shares):
        raise ConfigError(field=field, value=shares, rule="has a share that is not positive",
                          fix="give every device a share above 0")
    total = sum(shares)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(field=field, value=shares, rule=f"sums to {total:.6g}, not 1",
                          fix=f"give shares that add up to 1 (e.g. {[round(s / total, 4) for s in shares]}), or "
                              "'speed' for shares proportional to device speed")
    return shares


class TPIParams(StrictModel):
    """What the study runs. Defaults: the paper's setting unless stated otherwise.

    Attributes
    ----------
    models:
        Catalog names (the paper's seven; FP32 weights in memory).
    device_counts:
        Testbed sizes to run (the paper: 2, 4, 6, 8 devices). A count above a
        model's attention or key-value heads is an error.
    windows:
        Memory-scheduler windows in blocks (at least 1; TPI-LLM's default is 2),
        and ``"off"`` for the scheduler turned off (every block resident; in
        ``summary.csv`` the window column then reads ``off``).
    allreduce:
        Algorithm of the summary runs: ``star`` (TPI-LLM), ``tree``, ``ring``
        (Galaxy) or ``ps`` (parameter server).
    link_bandwidth, link_latency, devices_per_router:
        The home-router edge network: 300 Mbps and 1 ms per link, one device per
        router (paper).
    testbed_device:
        Device of the testbed: the ``edge_cpu_8core`` preset (8 cores, 8 GB +
        4 GB swap, FP32 on CPU).
    load_bandwidth:
        Effective rate at which a device loads weights (reads a block's file and
        converts it to FP32), bytes/s; it replaces the disk read bandwidth of
        every device of the study (testbed, laptops, baseline device). 730 MB/s
        by default — a calibration: the rate at which Yi-34B's simulated token
        latency on the 8-device testbed equals the public README's 14 s; every
        other latency (other models, the laptops, Accelerate) is a prediction.
        ``null`` keeps each device's own disk figure.
    shares:
        Share of the heads and FFN of each testbed device: ``"speed"``
        (proportional to device speed) or a list that sums to 1 (only with a
        single device count).
    laptops, laptop_shares:
        Also run the 4-laptop Wi-Fi setting (paper), with shares ``"speed"`` or a
        list of 4 that sums to 1.
    prompt_tokens, decode_tokens:
        Prompt length (16, assumed) and tokens decoded after the first (1: the
        loader keeps prefetching into the next token as a longer generation
        would, so a token's latency does not depend on how many follow it; later
        tokens differ only as the KV cache grows, < 0.01 % per token here).
    file_dtype:
        Dtype of the weight files (fp16: the public code saves the checkpoint's
        16-bit slices and converts them to FP32 when loading).
    staging:
        Hold the file-dtype copy of a block while it loads (the loader reads the
        file, then converts).
    runtime_memory:
        Bytes each device holds besides weights, KV cache and activations:
        0.5 GB (0.22 GB measured for ``import torch`` 2.x on CPU, plus an assumed
        0.28 GB for transformers, the KV-store and buffers).
    release:
        When a block leaves the window: ``after_sync`` (after its all-reduce,
        the paper's analysis) or ``after_compute`` (the public code's order).
    tree_fanout:
        Fan-out of the ``tree`` all-reduce (3: the depth-2 tree of the paper's
        16 tau; see :mod:`~commsim.systems.tpi_llm.allreduce`).
    curve_model:
        Model whose hidden size sets the message of the all-reduce curves.
    curve_latencies, curve_bandwidths:
        Per-link latencies (0-10 ms) and link bandwidths (300 Mbps-1 Gbps) of the curves.
    baselines:
        Also run single device, pipeline, Accelerate-like offloading and
        Galaxy-like ring tensor parallelism for every model.
    baseline_device:
        Device of the single-device baselines: the M1 laptop (the README ran
        Transformers and Accelerate on an 8 GB M1) with 32 GB of swap (macOS
        grows swap on demand; assumed).
    offload_budget:
        Fraction of RAM the offloading baseline fills with resident weights
        before it offloads the rest to disk (0.85, assumed).
    timeline_model:
        Model whose 8-device, window-2 run is recorded for the timeline.
    """

    models: list[str] = Field(default_factory=lambda: list(MODELS), min_length=1)
    device_counts: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [2, 4, 6, 8], min_length=1)
    windows: list[Window] = Field(default_factory=lambda: [2, "off"], min_length=1)
    allreduce: Literal["star", "tree", "ring", "ps"] = "star"
    link_bandwidth: Annotated[Bandwidth, Field(gt=0)] = 300e6 / 8
    link_latency: Annotated[Duration, Field(ge=0)] = 1e-3
    devices_per_router: Annotated[int, Field(ge=1)] = 1
    testbed_device: str | dict[str, Any] = "edge_cpu_8core"
    load_bandwidth: Annotated[Bandwidth, Field(gt=0)] | None = 730e6
    shares: Literal["speed"] | list[float] = "speed"
    laptops: bool = True
    laptop_shares: Literal["speed"] | list[float] = "speed"
    prompt_tokens: Annotated[int, Field(ge=1)] = 16
    decode_tokens: Annotated[int, Field(ge=1)] = 1
    file_dtype: Literal["fp32", "fp16", "bf16"] = "fp16"
    staging: bool = True
    runtime_memory: Annotated[Bytes, Field(ge=0)] = 0.5e9
    release: Literal["after_sync", "after_compute"] = "after_sync"
    tree_fanout: Annotated[int, Field(ge=1)] = 3
    curve_model: str = "llama-2-70b"
    curve_latencies: list[Annotated[Duration, Field(ge=0)]] = Field(
        default_factory=lambda: [i * 1e-3 for i in range(11)], min_length=1)
    curve_bandwidths: list[Annotated[Bandwidth, Field(gt=0)]] = Field(
        default_factory=lambda: [m * 1e6 / 8 for m in (300, 400, 500, 600, 700, 800, 900, 1000)], min_length=1)
    baselines: bool = True
    baseline_device: str | dict[str, Any] = Field(
        default_factory=lambda: {"base": "laptop_m1_8core", "swap": "32 GB"})
    offload_budget: Annotated[float, Field(gt=0, le=1)] = 0.85
    timeline_model: str = "llama-2-70b"

    @field_validator("windows", mode="before")
    @classmethod
    def _windows(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str) and item != "off":
                raise ConfigError(field="windows", value=item, rule="is not a number of blocks",
                                  fix="give a whole number >= 1 or 'off'")
            if not isinstance(item, str) and not isinstance(item, bool) and isinstance(item, (int, float)) and item < 1:
                raise ConfigError(field="windows", value=item, rule="is below 1 block",
                                  fix="give a window of at least 1 block (TPI-LLM uses 2), or 'off' to turn the "
                                      "scheduler off")
        return items

    @field_validator("shares", "laptop_shares", mode="before")
    @classmethod
    def _shares(cls, value: Any, info: Any) -> Any:
        return _check_shares(value, info.field_name)

    @field_validator("models", "curve_model", "timeline_model")
    @classmethod
    def _known_models(cls, value: Any, info: ValidationInfo) -> Any:
        for name in value if isinstance(value, list) else [value]:
            try:
                load_model(name)
            except ConfigError as exc:
                raise ConfigError(field=str(info.field_name), value=name, rule=exc.rule, fix=exc.fix) from None
        return value

    @model_validator(mode="after")
    def _fits(self) -> TPIParams:
        for name in self.models:
            spec = load_model(name)
            limit = min(spec.heads, spec.kv_heads)
            too_many = [n for n in self.device_counts if n > limit]
            if too_many:
                raise ConfigError(field="device_counts", value=too_many,
                                  rule=f"(device_counts) exceed {spec.name}'s {spec.heads} attention heads / "
                                       f"{spec.kv_heads} key-value heads, so some device would get no head",
                                  fix=f"use at most {limit} devices for {spec.name}, or drop it from models")
            if self.laptops and limit < 4:
                raise ConfigError(field="laptops", value=True,
                                  rule=f"(laptops) needs 4 heads but {spec.name} has {limit}",
                                  fix="set laptops: false or drop the model")
        if isinstance(self.shares, list) and any(len(self.shares) != n for n in self.device_counts):
            raise ConfigError(field="shares", value=self.shares,
                              rule=f"(shares) gives {len(self.shares)} shares but device_counts is "
                                   f"{self.device_counts}",
                              fix="give one share per device and a single device count, or shares: speed")
        if isinstance(self.laptop_shares, list) and len(self.laptop_shares) != 4:
            raise ConfigError(field="laptop_shares", value=self.laptop_shares,
                              rule=f"(laptop_shares) gives {len(self.laptop_shares)} shares for 4 laptops",
                              fix="give 4 shares that sum to 1, or laptop_shares: speed")
        return self

    @property
    def file_bytes(self) -> float:
        """Bytes per parameter read from disk."""
        return FILE_BYTES[self.file_dtype]

    def window_values(self) -> list[int | None]:
        """The windows as the engine takes them (``None`` for off)."""
        return [None if w == "off" else int(w) for w in self.windows]
