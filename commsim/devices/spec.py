"""Device descriptions: what a GPU or CPU can compute, hold and move.

A :class:`DeviceSpec` is plain data (validated, SI units). Presets for the
devices the studies use live in :mod:`commsim.devices.presets`; a topology or
scenario can name a preset, give a full spec, or derive one from a preset with
``base:`` and a few overrides.

>>> spec = device_spec({"base": "h100_sxm", "memory": "94 GB"})
>>> spec.memory, spec.peak_flops["bf16"]
(94000000000.0, 989000000000000.0)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from commsim.config import StrictModel, validate
from commsim.devices.compute_model import ComputeModel, compute_model_names, load_compute_model
from commsim.errors import ConfigError
from commsim.units import Bandwidth, Bytes, Duration, FlopRate, Frequency

__all__ = ["DTYPES", "DeviceSpec", "device_spec"]

DTYPES: tuple[str, ...] = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "fp4")
"""Data types a peak FLOP/s can be given for."""


class DeviceSpec(StrictModel):
    """What one accelerator or CPU offers.

    Attributes
    ----------
    peak_flops:
        Peak dense FLOP/s per dtype (``{"bf16": "989 TFLOPS", ...}``).
    efficiency:
        Fraction of peak that large kernels reach (0 < e <= 1); a kernel may override it.
    memory_bandwidth:
        HBM (GPU) or DRAM (CPU) bandwidth, bytes/s.
    memory:
        Capacity in bytes; ``swap`` bytes more may be used at ``swap_bandwidth``.
    copy_engines, copy_engine_bandwidth:
        DMA engines that move data without compute (0 engines: copies use compute).
    disk_read_bandwidth:
        Local storage read bandwidth, bytes/s (None: no disk).
    launch_overhead:
        Fixed delay before each kernel starts, seconds (a compute model brings its own).
    compute_model:
        A per-kernel compute model: the name of a shipped one (``commsim/devices/data/NAME.yaml``,
        see :mod:`commsim.devices.compute_model`) or its parameters; None keeps the roofline
        with ``efficiency``.
    """

    name: str
    kind: Literal["gpu", "cpu"] = "gpu"
    peak_flops: dict[str, FlopRate]
    efficiency: Annotated[float, Field(gt=0, le=1)] = 0.7
    memory_bandwidth: Annotated[Bandwidth, Field(gt=0)]
    memory: Annotated[Bytes, Field(gt=0)]
    swap: Annotated[Bytes, Field(ge=0)] = 0.0
    swap_bandwidth: Annotated[Bandwidth, Field(gt=0)] | None = None
    compute_units: Annotated[int, Field(gt=0)] | None = None
    clock: Annotated[Frequency, Field(gt=0)] | None = None
    copy_engines: Annotated[int, Field(ge=0)] = 2
    copy_engine_bandwidth: Annotated[Bandwidth, Field(gt=0)] | None = None
    disk_read_bandwidth: Annotated[Bandwidth, Field(gt=0)] | None = None
    launch_overhead: Annotated[Duration, Field(ge=0)] = 0.0
    compute_model: str | ComputeModel | None = None
    source: str = ""

    @field_validator("peak_flops")
    @classmethod
    def _known_dtypes(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ConfigError(field="peak_flops", value=value, rule="needs at least one dtype",
                              fix="give e.g. {bf16: '989 TFLOPS'}")
        for dtype, flops in value.items():
            if dtype not in DTYPES:
                raise ConfigError(field=f"peak_flops.{dtype}", value=dtype, rule="is not a known dtype",
                                  fix=f"use one of {', '.join(DTYPES)}")
            if not flops > 0:
                raise ConfigError(field=f"peak_flops.{dtype}", value=flops, rule="is not positive",
                                  fix="give a peak above 0")
        return value

    @field_validator("compute_model")
    @classmethod
    def _shipped_model(cls, value: str | ComputeModel | None) -> str | ComputeModel | None:
        if isinstance(value, str) and value not in compute_model_names():
            raise ConfigError(field="compute_model", value=value, rule="names no shipped compute model",
                              fix=f"use one of {', '.join(compute_model_names())}")
        return value

    def kernel_model(self) -> ComputeModel | None:
        """The per-kernel compute model this device is calibrated with, or None (roofline)."""
        if self.compute_model is None or isinstance(self.compute_model, ComputeModel):
            return self.compute_model
        return load_compute_model(self.compute_model)

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s for ``dtype``; raises ConfigError naming the dtypes this device has."""
        try:
            return self.peak_flops[dtype]
        except KeyError:
            raise ConfigError(
                field="dtype", value=dtype, rule=f"has no peak FLOP/s on device {self.name!r}",
                fix=f"use one of {', '.join(self.peak_flops)} or add it to the device's peak_flops",
            ) from None


def device_spec(value: Any, *, field: str = "device") -> DeviceSpec:
    """Resolve a preset name, a mapping (optionally with ``base: PRESET``) or a spec."""
    from commsim.devices.presets import PRESETS

    if isinstance(value, DeviceSpec):
        return value
    if isinstance(value, str):
        if value not in PRESETS:
            raise ConfigError(field=field, value=value, rule="is not a device preset",
                              fix=f"use one of {', '.join(PRESETS)} or give a full device spec")
        return PRESETS[value]
    if isinstance(value, dict):
        data = dict(value)
        base = data.pop("base", None)
        if base is not None:
            merged = device_spec(base, field=f"{field}.base").model_dump()
            if "peak_flops" in data:
                merged["peak_flops"] = {**merged["peak_flops"], **data.pop("peak_flops")}
            merged.update(data)
            merged.setdefault("name", base)
            if "name" not in value:
                merged["name"] = f"{base}*"
            data = merged
        return validate(DeviceSpec, data, prefix=field)
    raise ConfigError(field=field, value=value, rule="is not a device description",
                      fix="name a preset or give a mapping of device fields")
