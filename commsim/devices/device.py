"""A device at run time: compute, memory bandwidth, memory capacity, copy engines, disk.

Each device owns three kernel resources: ``compute`` (capacity 1: the whole
device), ``memory`` (its HBM or DRAM bandwidth, bytes/s) and, when it has one,
``disk`` (read bandwidth). A kernel of ``F`` FLOP that touches ``B`` bytes is one
activity measured in bytes of memory traffic: it uses ``1`` byte/s of memory
bandwidth per unit of rate and ``F / (B * peak * efficiency)`` of the device's
compute, so alone it takes the roofline time ``max(F / (peak * eff), B / bw)``.
Anything else on the same memory (a DMA, a reduction, another kernel) shares its
bandwidth by max-min fairness, so they slow each other down as their shares say.

>>> import simpy
>>> from commsim.kernel import FluidKernel
>>> env = simpy.Environment()
>>> gpu = Device("gpu0", "h100_sxm", FluidKernel(env))
>>> done = gpu.compute(flops=989e12 * 0.7, nbytes=1e9, dtype="bf16")  # 1 s of compute, 0.3 ms of memory
>>> env.run()
>>> round(env.now, 6)
1.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import simpy
from simpy.events import Event

from commsim.devices.compute_model import KernelShape
from commsim.devices.memory import MemoryPool
from commsim.devices.spec import DeviceSpec, device_spec
from commsim.errors import ConfigError
from commsim.kernel import ActivityBatch, FluidKernel
from commsim.results.recorder import Recorder

__all__ = ["Device", "kernel_activity", "kernel_resources", "kernel_time", "launch_delay", "start_kernels",
           "start_kernels_on"]


def kernel_activity(spec: DeviceSpec, flops: float, nbytes: float, dtype: str,
                    efficiency: float | None, kernel: KernelShape | None = None) -> tuple[float, list[float]]:
    """Work and per-resource coefficients ``[compute, memory]`` of one kernel on ``spec``.

    The work is counted in bytes of memory traffic when there is any, else in FLOP.
    On a device with a compute model (and no explicit ``efficiency``) the model
    sets the efficiency and the HBM traffic the kernel occupies from ``kernel``
    (see :mod:`commsim.devices.compute_model`); otherwise it is the roofline.
    """
    if flops < 0 or nbytes < 0 or not math.isfinite(flops) or not math.isfinite(nbytes):
        raise ConfigError(field="kernel", value={"flops": flops, "bytes": nbytes},
                          rule="needs finite FLOP and bytes >= 0", fix="give non-negative work")
    model = spec.kernel_model() if efficiency is None else None
    if model is not None:
        timing = model.timing(spec, flops, nbytes, dtype, kernel)
        nbytes = timing.memory_bytes
        efficiency = timing.efficiency(flops, spec.peak(dtype))
    eff = spec.efficiency if efficiency is None else efficiency
    if not 0 < eff <= 1:
        raise ConfigError(field="efficiency", value=eff, rule="must be in (0, 1]",
                          fix="give the fraction of peak the kernel reaches, e.g. 0.7")
    rate = spec.peak(dtype) * eff
    if nbytes > 0:
        # a pure memory kernel (flops 0) uses no compute: the caller drops that coefficient
        return nbytes, [flops / nbytes / rate, 1.0]
    return flops, [1.0 / rate, 0.0]



def kernel_time(spec: DeviceSpec, flops: float, nbytes: float, dtype: str, efficiency: float | None = None,
                kernel: KernelShape | None = None) -> float:
    """Seconds one kernel takes alone on an idle device of ``spec`` (launch overhead not included).

    The rate of :func:`kernel_activity` at full capacity: the roofline
    ``max(F / (peak * efficiency), B / bandwidth)``, or the compute model's time.

    >>> from commsim.devices.spec import device_spec
    >>> kernel_time(device_spec("h100_sxm"), 989e12 * 0.7, 1e9, "bf16")
    1.0
    """
    if flops <= 0 and nbytes <= 0:
        return 0.0
    amount, (on_compute, on_memory) = kernel_activity(spec, flops, nbytes, dtype, efficiency, kernel)
    return amount * max(on_compute, on_memory / spec.memory_bandwidth)


def launch_delay(spec: DeviceSpec, kernel: KernelShape | None = None) -> float:
    """Seconds before a kernel starts: its compute model's overhead per launch, else the spec's."""
    model = spec.kernel_model()
    if model is None:
        return spec.launch_overhead
    return (kernel.launches if kernel is not None else 1) * model.launch_overhead


class Device:
    """One accelerator or CPU at run time.

    Parameters
    ----------
    name:
        The topology node it sits at.
    spec:
        A :class:`DeviceSpec`, a preset name or a mapping (see :func:`device_spec`).
    kernel:
        The fluid kernel its resources join.
    recorder:
        Where its spans go (optional).
    unbounded_memory:
        Give it an unbounded memory pool instead of the spec's RAM and swap: nothing
        is refused or swapped, and the pool's peak is what the work needs.
    """

    def __init__(self, name: str, spec: Any, kernel: FluidKernel, recorder: Recorder | None = None, *,
                 unbounded_memory: bool = False) -> None:
        self.name = name
        self.spec = device_spec(spec, field=f"devices.{name}")
        self.kernel = kernel
        self.env: simpy.Environment = kernel.env
        self.recorder = recorder
        names = [f"compute:{name}", f"memory:{name}"]
        caps = [1.0, self.spec.memory_bandwidth]
        if self.spec.disk_read_bandwidth is not None:
            names.append(f"disk:{name}")
            caps.append(self.spec.disk_read_bandwidth)
        ids = kernel.add_resources(caps, names)
        self.compute_resource = int(ids[0])
        self.memory_resource = int(ids[1])
        self.disk_resource = int(ids[2]) if len(ids) > 2 else None
        capacity, swap = (None, 0.0) if unbounded_memory else (self.spec.memory, self.spec.swap)
        self.memory = MemoryPool(name, capacity, swap, clock=lambda: self.env.now)
        self._copy_engines: simpy.Resource | None = None
        self.slowdown = 1.0
        self.failed = False

    @property
    def copy_engines(self) -> simpy.Resource | None:
        """The device's copy engines (None when it has none), made on first use: thousands of
        devices that never copy do not pay for a SimPy resource each."""
        if self._copy_engines is None and self.spec.copy_engines:
            self._copy_engines = simpy.Resource(self.env, capacity=self.spec.copy_engines)
        return self._copy_engines

    # ------------------------------------------------------------------ compute
    def compute(
        self,
        flops: float,
        nbytes: float = 0.0,
        *,
        dtype: str = "bf16",
        efficiency: float | None = None,
        share: float | None = None,
        priority: int = 0,
        weight: float = 1.0,
        name: str = "kernel",
        stream: str = "compute",
        record: bool = True,
        kernel: KernelShape | None = None,
    ) -> Event:
        """Run a kernel of ``flops`` FLOP touching ``nbytes`` of memory; return its completion event.

        ``share`` caps the fraction of the device's compute the kernel may use
        (e.g. 64 of 80 compute units: ``share=0.8``). ``kernel`` says what the
        kernel is, for a device with a compute model. The launch overhead is waited first.
        """
        amount, (c_compute, c_memory) = kernel_activity(self.spec, flops, nbytes, dtype, efficiency, kernel)
        cap = math.inf
        if share is not None:
            if not 0 < share <= 1:
                raise ConfigError(field="share", value=share, rule="must be in (0, 1]",
                                  fix="give the fraction of the device the kernel may use")
            cap = share / c_compute
        res = ([self.compute_resource] if c_compute > 0 else []) + ([self.memory_resource] if c_memory > 0 else [])
        coefs = ([c_compute] if c_compute > 0 else []) + ([c_memory] if c_memory > 0 else [])
        return self._run(amount, res, coefs, cap=cap, priority=priority, weight=weight, kind="compute", name=name,
                         stream=stream, flops=flops, nbytes=nbytes, record=record,
                         launch=launch_delay(self.spec, kernel))

    def copy(self, nbytes: float, *, name: str = "copy", stream: str = "copy", record: bool = True) -> Event:
        """Copy ``nbytes`` within device memory (read and write: 2 bytes of traffic per byte)."""
        return self._run(nbytes, [self.memory_resource], [2.0],
                         cap=self.spec.copy_engine_bandwidth or math.inf, kind="copy", name=name, stream=stream,
                         nbytes=nbytes, record=record, engine=True)

    def read_disk(self, nbytes: float, *, name: str = "disk read", stream: str = "io", record: bool = True) -> Event:
        """Read ``nbytes`` from local storage into memory."""
        if self.disk_resource is None:
            raise ConfigError(field=f"devices.{self.name}.disk_read_bandwidth", rule="is not set, so it has no disk",
                              fix="give the device a disk_read_bandwidth")
        return self._run(nbytes, [self.disk_resource, self.memory_resource], [1.0, 1.0], kind="disk", name=name,
                         stream=stream, nbytes=nbytes, record=record)

    def _run(self, amount: float, res: list[int], coefs: list[float], *, cap: float = math.inf, priority: int = 0,
             weight: float = 1.0, kind: str, name: str, stream: str, flops: float = 0.0, nbytes: float = 0.0,
             record: bool = True, engine: bool = False, launch: float = 0.0) -> Event:
        done = Event(self.env)

        def body():
            request = None
            if engine and self.copy_engines is not None:
                request = self.copy_engines.request()
                yield request
            if launch:
                yield self.env.timeout(launch)
            start = self.env.now
            batch: ActivityBatch = self.kernel.start([amount], [res], [coefs], cap=cap, priority=priority,
                                                     weight=weight, describe=lambda _tag: f"{kind} {name!r} on "
                                                                                          f"{self.name}")
            yield batch.done
            if request is not None:
                self.copy_engines.release(request)
            if record and self.recorder is not None:
                self.recorder.span(self.name, stream, kind, name, start, self.env.now, flops=flops, nbytes=nbytes)
            done.succeed(self.env.now)

        self.env.process(body())
        return done

    # ------------------------------------------------------------------ faults
    def set_slowdown(self, factor: float) -> None:
        """Run compute ``factor`` times slower from now on (a straggler); 1 restores it."""
        if not factor >= 1:
            raise ConfigError(field="slowdown", value=factor, rule="must be >= 1",
                              fix="give how many times slower the device runs, e.g. 1.5")
        self.slowdown = factor
        if not self.failed:
            self.kernel.set_capacity([self.compute_resource], 1.0 / factor)

    def fail(self) -> None:
        """Stop the device: its compute, memory and disk drop to zero capacity."""
        self.failed = True
        ids = [self.compute_resource, self.memory_resource] + ([self.disk_resource] if self.disk_resource else [])
        self.kernel.set_capacity(ids, np.zeros(len(ids)))

    def repair(self) -> None:
        """Bring a failed device back at its spec (and current slowdown)."""
        self.failed = False
        self.kernel.set_capacity([self.compute_resource], 1.0 / self.slowdown)
        self.kernel.set_capacity([self.memory_resource], self.spec.memory_bandwidth)
        if self.disk_resource is not None:
            self.kernel.set_capacity([self.disk_resource], self.spec.disk_read_bandwidth)

    def __repr__(self) -> str:
        return f"Device({self.name!r}, {self.spec.name})"


def start_kernels(
    devices: list[Device],
    flops: np.ndarray,
    nbytes: np.ndarray,
    *,
    dtype: str = "bf16",
    efficiency: float | None = None,
    on_done: Any = None,
    describe: Any = None,
    kernel: KernelShape | None = None,
) -> ActivityBatch:
    """Start one kernel per device as a single kernel batch (no process per device).

    ``flops[i]`` and ``nbytes[i]`` are the work of the kernel on ``devices[i]``;
    ``kernel`` says what it is, for devices with a compute model;
    ``on_done(ids, tags)`` receives the positions in ``devices`` as tags.
    """
    if len(devices) == 0:
        raise ConfigError(field="devices", value=[], rule="is empty", fix="give at least one device")
    if kernel is None:
        reducers = kernel_resources(devices, dtype=dtype, efficiency=efficiency)
        if reducers is not None:
            return start_kernels_on(devices[0].kernel, *reducers, flops, nbytes, on_done=on_done, describe=describe)
    # devices with a compute model (or a kernel shape to time): each distinct spec and work through the model
    n = len(devices)
    flops = np.broadcast_to(np.asarray(flops, dtype=float), (n,))
    nbytes = np.broadcast_to(np.asarray(nbytes, dtype=float), (n,))
    fluid = devices[0].kernel
    amount = np.empty(n)
    coefs = np.empty((n, 2))
    known: dict[tuple[int, float, float], tuple[float, list[float]]] = {}
    for i, device in enumerate(devices):
        key = (id(device.spec), float(flops[i]), float(nbytes[i]))
        if key not in known:
            known[key] = kernel_activity(device.spec, key[1], key[2], dtype, efficiency, kernel)
        amount[i], coefs[i] = known[key]
    resources = np.array([(d.compute_resource, d.memory_resource) for d in devices], dtype=np.int64)
    return _start_batch(fluid, amount, coefs, resources, on_done, describe)


def kernel_resources(devices: list[Device], *, dtype: str = "bf16",
                     efficiency: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per device: its compute resource, its memory resource and its sustained FLOP/s for ``dtype``.

    None when a device has a per-kernel compute model (and no ``efficiency`` is
    imposed): its kernels are timed one spec at a time by :func:`start_kernels`.

    Callers that launch kernels on the same devices again and again (a collective's
    reductions, step after step) keep these and call :func:`start_kernels_on`.
    """
    spec_rate: dict[int, float] = {}
    rate = np.empty(len(devices))
    for i, device in enumerate(devices):
        key = id(device.spec)
        if key not in spec_rate:
            if efficiency is None and device.spec.kernel_model() is not None:
                return None     # a calibrated device times each kernel through its model: start_kernels
            eff = device.spec.efficiency if efficiency is None else efficiency
            spec_rate[key] = device.spec.peak(dtype) * eff
        rate[i] = spec_rate[key]
    compute = np.array([d.compute_resource for d in devices], dtype=np.int64)
    memory = np.array([d.memory_resource for d in devices], dtype=np.int64)
    return compute, memory, rate


def start_kernels_on(kernel: FluidKernel, compute: np.ndarray, memory: np.ndarray, rate: np.ndarray,
                     flops: np.ndarray, nbytes: np.ndarray, *, on_done: Any = None,
                     describe: Any = None) -> ActivityBatch:
    """:func:`start_kernels` on resources and rates from :func:`kernel_resources`, without a loop per device.

    A kernel with memory traffic is limited by its bytes (its FLOP are charged per
    byte to the compute resource); one without is pure compute.
    """
    n = compute.shape[0]
    flops = np.broadcast_to(np.asarray(flops, dtype=float), (n,))
    nbytes = np.broadcast_to(np.asarray(nbytes, dtype=float), (n,))
    moves = nbytes > 0
    amount = np.where(moves, nbytes, flops)
    coefs = np.empty((n, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        coefs[:, 0] = np.where(moves, flops / nbytes / rate, 1.0 / rate)
    coefs[:, 1] = moves
    return _start_batch(kernel, amount, coefs, np.stack((compute, memory), axis=1), on_done, describe)


def _start_batch(kernel: FluidKernel, amount: np.ndarray, coefs: np.ndarray, resources: np.ndarray, on_done: Any,
                 describe: Any) -> ActivityBatch:
    """One activity per row: ``amount[i]`` of work on ``resources[i]`` (compute, memory) at ``coefs[i]``."""
    n = amount.shape[0]
    # a kernel without memory traffic does not consume the memory resource
    keep = coefs.reshape(-1) > 0
    counts = keep.reshape(n, 2).sum(axis=1)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return kernel.start(amount, (indptr, resources.reshape(-1)[keep]), coefs.reshape(-1)[keep], tags=np.arange(n),
                        on_done=on_done, describe=describe)
