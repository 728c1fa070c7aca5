"""A per-kernel compute model calibrated on measurements, not on peak FLOP/s.

Without a compute model a kernel of ``F`` FLOP touching ``B`` bytes runs at the
roofline ``max(F / (peak * efficiency), B / bandwidth)``. A device whose spec
names a ``compute_model`` (a data file in ``commsim/devices/data/``) instead times
each kernel by what it is (:class:`KernelShape`):

* **GEMM** ``C[m,n] = A[m,k]·B[k,n]`` (``batch`` times): the output is cut into
  ``tile_m x tile_n`` tiles; the device runs ``compute_units`` tiles at a time,
  so a GEMM takes ``waves = ceil(tiles / compute_units)`` rounds. One round
  computes a tile over the whole ``k`` plus a fixed prologue and epilogue (filling
  the software pipeline, writing the tile), which costs as much as
  ``gemm_k_overhead`` more steps of ``k``; the main loop runs at
  ``gemm_efficiency`` of the per-unit peak::

      t = waves * 2 * tile_m * tile_n * (k + gemm_k_overhead) / (peak / compute_units * gemm_efficiency)

  The achievable fraction of peak therefore rises smoothly with ``k``
  (``k / (k + k0)``) and drops in steps when the tiles fill a last wave only
  partly: two parameters and the tile, no per-size factor.
* **Memory-bound kernels** (layer norm, softmax, dropout, GeLU/SwiGLU, residual
  adds, embedding, loss, optimizer): their bytes move at ``memory_efficiency`` of
  the HBM bandwidth; their arithmetic runs on the vector units (FP32 peak).
* **Unfused attention** (Megatron-LM's 2020 path: batched score GEMM, fused
  scale-mask-softmax, dropout, batched context GEMM): its GEMMs and its
  softmax/dropout traffic run one after the other, so their times add.
  **Fused attention** (flash attention): one kernel whose GEMMs and traffic overlap.
* **Launch overhead**: every kernel costs ``launch_overhead`` before it starts;
  an op that stands for several kernels (``launches``) pays it per kernel.

The model hands the fluid kernel an *effective efficiency* (FLOP over the
modelled compute time) and the *HBM traffic it occupies* (bytes over
``memory_efficiency``), so a kernel still shares HBM with DMAs and other kernels
by max-min fairness: there is no second engine. Peak FLOP/s, compute units and
HBM bandwidth come from the :class:`~commsim.devices.DeviceSpec` at run time, so a
what-if on the spec (more bandwidth, more units) moves the kernel times with it.

>>> from commsim.devices import device_spec
>>> spec = device_spec({"base": "a100_sxm4_40gb", "compute_model": "a100_40gb"})
>>> model = spec.kernel_model()
>>> t1 = model.gemm_time(spec, 128 * 108, 128, 4096, dtype="fp16")      # 108 tiles: one wave
>>> t2 = model.gemm_time(spec, 128 * 108 + 1, 128, 4096, dtype="fp16")  # 109 tiles: a second wave
>>> round(t2 / t1, 6)
2.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import Field

from commsim.config import StrictModel, validate
from commsim.errors import ConfigError
from commsim.units import parse_quantity

if TYPE_CHECKING:
    from commsim.devices.spec import DeviceSpec

__all__ = [
    "KERNEL_KINDS",
    "ComputeModel",
    "KernelKind",
    "KernelShape",
    "KernelTiming",
    "compute_model_names",
    "load_compute_model",
]

KernelKind = Literal["gemm", "attention", "fused_attention", "memory"]
KERNEL_KINDS: tuple[str, ...] = KernelKind.__args__  # type: ignore[attr-defined]
"""How the compute model times a kernel (see the module docstring)."""

_ELEMENT_BYTES = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1, "fp4": 0.5}
_DATA = "commsim.devices.data"


@dataclass(frozen=True)
class KernelShape:
    """What a compute op is, for the compute model.

    ``kind`` is one of :data:`KERNEL_KINDS`; ``gemms`` lists the ``(m, n, k,
    batch)`` of the matrix multiplies it runs (empty for memory-bound kernels);
    ``launches`` is the number of GPU kernels the op stands for.
    """

    kind: str = "gemm"
    gemms: tuple[tuple[int, int, int, int], ...] = ()
    launches: int = 1


@dataclass(frozen=True)
class KernelTiming:
    """The compute model's verdict on one kernel.

    ``compute_time`` (s) is the time on the compute units alone; ``memory_bytes``
    the HBM traffic the kernel occupies (its bytes over the achievable fraction);
    ``launch_delay`` (s) the wait before it starts.
    """

    compute_time: float
    memory_bytes: float
    launch_delay: float

    def efficiency(self, flops: float, peak: float) -> float | None:
        """The fraction of ``peak`` that makes ``flops`` last ``compute_time`` (None without FLOP)."""
        if flops <= 0 or self.compute_time <= 0:
            return None
        return min(1.0, flops / (peak * self.compute_time))


class ComputeModel(StrictModel):
    """Parameters of the per-kernel model of one device (see the module docstring).

    Attributes
    ----------
    name:
        The data file's name (``a100_40gb`` for ``commsim/devices/data/a100_40gb.yaml``).
    tile_m, tile_n:
        Output tile of a GEMM thread block, elements.
    gemm_efficiency:
        Fraction of the per-unit peak the GEMM main loop reaches.
    gemm_k_overhead:
        Prologue and epilogue of one tile, in equivalent steps of ``k`` (elements).
    memory_efficiency:
        Fraction of the HBM bandwidth memory-bound kernels reach.
    launch_overhead:
        Delay before each kernel, seconds.
    sources:
        Where each parameter comes from (spec sheet, assumption, or the fit and its data).
    """

    name: str
    tile_m: int = Field(gt=0)
    tile_n: int = Field(gt=0)
    gemm_efficiency: Annotated[float, Field(gt=0, le=1)]
    gemm_k_overhead: Annotated[float, Field(ge=0)]
    memory_efficiency: Annotated[float, Field(gt=0, le=1)]
    launch_overhead: Annotated[float, Field(ge=0)]
    sources: dict[str, str] = Field(default_factory=dict)

    # ------------------------------------------------------------------ kernels
    def gemm_time(self, spec: DeviceSpec, m: int, n: int, k: int, batch: int = 1, *, dtype: str = "bf16") -> float:
        """Seconds the compute units of ``spec`` take for one (batched) GEMM, by tiles and waves."""
        units = _units(spec)
        tiles = batch * math.ceil(m / self.tile_m) * math.ceil(n / self.tile_n)
        waves = math.ceil(tiles / units)
        per_unit = spec.peak(dtype) / units * self.gemm_efficiency
        return waves * 2.0 * self.tile_m * self.tile_n * (k + self.gemm_k_overhead) / per_unit

    def memory_time(self, spec: DeviceSpec, nbytes: float) -> float:
        """Seconds a memory-bound kernel moving ``nbytes`` takes alone."""
        return nbytes / (spec.memory_bandwidth * self.memory_efficiency)

    def timing(self, spec: DeviceSpec, flops: float, nbytes: float, dtype: str,
               kernel: KernelShape | None) -> KernelTiming:
        """Compute time, occupied HBM traffic and launch delay of one kernel on ``spec``.

        A kernel without a shape is taken as a large GEMM (``gemm_efficiency``, no
        quantisation).
        """
        kernel = kernel or KernelShape()
        if kernel.kind not in KERNEL_KINDS:
            raise ConfigError(field="kernel", value=kernel.kind, rule="is not a kernel kind",
                              fix=f"use one of {', '.join(KERNEL_KINDS)}")
        launch = kernel.launches * self.launch_overhead
        traffic = nbytes / self.memory_efficiency
        if kernel.kind == "memory":
            vector_peak = spec.peak_flops.get("fp32") or spec.peak(dtype)
            return KernelTiming(flops / vector_peak, traffic, launch)
        gemm = sum(self.gemm_time(spec, m, n, k, b, dtype=dtype) for m, n, k, b in kernel.gemms)
        if not kernel.gemms:
            gemm = flops / (spec.peak(dtype) * self.gemm_efficiency)
        if kernel.kind == "attention":
            # unfused: the GEMMs and the softmax/dropout traffic between them run one after the other
            size = _ELEMENT_BYTES.get(dtype, 2)
            gemm_bytes = sum(b * (m * k + k * n + m * n) * size for m, n, k, b in kernel.gemms)
            return KernelTiming(gemm + self.memory_time(spec, max(0.0, nbytes - gemm_bytes)), traffic, launch)
        return KernelTiming(gemm, traffic, launch)


def _units(spec: DeviceSpec) -> int:
    if spec.compute_units is None:
        raise ConfigError(field=f"device {spec.name!r}.compute_units", value=None,
                          rule="is needed by its compute model (GEMM waves are counted in compute units)",
                          fix="give the device's number of SMs/CUs, or drop its compute_model")
    return spec.compute_units


# ---------------------------------------------------------------------- data files
def compute_model_names() -> list[str]:
    """Names of the compute models shipped in ``commsim/devices/data``."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(_DATA).iterdir()
                  if p.name.endswith(".yaml"))


@cache
def load_compute_model(name: str) -> ComputeModel:
    """The shipped compute model ``name`` (read with importlib.resources, merged over its ``derived_from``)."""
    names = compute_model_names()
    if name not in names:
        raise ConfigError(field="compute_model", value=name, rule="is not a shipped compute model",
                          fix=f"use one of {', '.join(names)}")
    data = yaml.safe_load(resources.files(_DATA).joinpath(f"{name}.yaml").read_text(encoding="utf-8"))
    return compute_model_from(data, name=name)


def compute_model_from(data: dict[str, Any], *, name: str) -> ComputeModel:
    """Build a :class:`ComputeModel` from the mapping of a data file (``parameters: {p: {value, source}}``)."""
    parameters: dict[str, Any] = {}
    sources: dict[str, str] = {}
    base = data.get("derived_from")
    if base is not None:
        inherited = load_compute_model(base)
        parameters = inherited.model_dump(exclude={"name", "sources"})
        sources = {key: f"{text} (carried over from {base})" for key, text in inherited.sources.items()}
    for key, entry in (data.get("parameters") or {}).items():
        if not isinstance(entry, dict) or "value" not in entry:
            raise ConfigError(field=f"compute model {name}.parameters.{key}", value=entry,
                              rule="needs a value and a source", fix="write {value: ..., source: '...'}")
        value = entry["value"]
        if key == "launch_overhead":
            value = parse_quantity(value, "time", field=f"{name}.parameters.{key}")
        parameters[key] = value
        sources[key] = str(entry.get("source", ""))
    return validate(ComputeModel, {"name": name, **parameters, "sources": sources}, prefix=f"compute model {name}")
