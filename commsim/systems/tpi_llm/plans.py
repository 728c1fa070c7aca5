"""The systems compared, as :class:`~commsim.systems.tpi_llm.run.InferenceSetup` builders.

* **TPI-LLM** — tensor parallelism over the devices (master first), an
  all-reduce after attention and after FFN (star by default), the sliding
  window memory scheduler (``window`` blocks, or off).
* **Galaxy-like** — the same tensor parallelism with ring all-reduce and no
  memory scheduler (every slice resident).
* **Pipeline** — layer-wise model parallelism: stage ``k`` runs its layers
  whole and hands the activations on; one request at a time, so the stages
  run one after another. Same memory scheduler as TPI-LLM, so the comparison
  is about the parallelism.
* **Accelerate-like offloading** — one device; weights fill ``budget`` of its
  RAM in model order, the rest is read from an FP32 offload folder on disk
  when a layer is reached (no prefetch, one offloaded block at a time).
* **Single device** (Transformers-like) — one device holds the whole model
  (the scheduler off); beyond RAM it swaps, beyond RAM + swap it fails.

Shares ``"speed"`` give each device a part of the heads and FFN in proportion
to its speed: the inverse of its time per weight byte, the largest of the
disk read (scheduler on), the DRAM read and the FLOP-bound time.

>>> from commsim.systems.tpi_llm.hardware import wifi_topology
>>> topo = wifi_topology()
>>> [round(s, 3) for s in speed_shares([topo.device_spec(d) for d in topo.devices], window=2, file_bytes=2.0)]
[0.267, 0.2, 0.267, 0.267]
"""

from __future__ import annotations

from typing import Any

from commsim.devices.spec import DeviceSpec, device_spec
from commsim.network.topology import Topology
from commsim.systems.tpi_llm.partition import COMPUTE_BYTES, pipeline_blocks, tp_blocks
from commsim.systems.tpi_llm.run import InferenceSetup
from commsim.workloads.models import TransformerSpec

__all__ = ["SYSTEMS", "galaxy", "offload", "pipeline", "single_device", "single_topology", "speed_shares", "tpi"]

SYSTEMS = ("TPI-LLM", "TPI-LLM (scheduler off)", "Galaxy (ring TP)", "pipeline", "Accelerate (offload)",
           "single device")
"""Names of the compared systems, as they appear in the baselines table."""


def speed_shares(specs: list[DeviceSpec], *, window: int | None, file_bytes: float) -> list[float]:
    """Shares in proportion to device speed (1 / seconds per weight byte), summing to 1."""
    speeds = []
    for spec in specs:
        per_byte = [1.0 / spec.memory_bandwidth, 2.0 / COMPUTE_BYTES / (spec.peak("fp32") * spec.efficiency)]
        if window is not None and spec.disk_read_bandwidth:
            per_byte.append(file_bytes / COMPUTE_BYTES / spec.disk_read_bandwidth)
        speeds.append(1.0 / max(per_byte))
    total = sum(speeds)
    return [s / total for s in speeds]


def _shares(topology: Topology, devices: list[str], shares: Any, window: int | None, file_bytes: float) -> list[float]:
    if isinstance(shares, list):
        return [float(s) for s in shares]
    specs = [device_spec(topology.device_spec(d)) for d in devices]
    return speed_shares(specs, window=window, file_bytes=file_bytes)


def tpi(model: TransformerSpec, topology: Topology, *, window: int | None, allreduce: str = "star",
        shares: Any = "speed", devices: list[str] | None = None, **options: Any) -> InferenceSetup:
    """TPI-LLM on ``topology``'s devices (or ``devices``), master first."""
    names = list(devices or topology.devices)
    part = _shares(topology, names, shares, window, options.get("file_bytes", 2.0))
    return InferenceSetup(model=model, topology=topology, devices=names, blocks=tp_blocks(model, part), mode="tp",
                          allreduce=allreduce, window=window, **options)


def galaxy(model: TransformerSpec, topology: Topology, **options: Any) -> InferenceSetup:
    """Ring tensor parallelism, every slice resident (no memory scheduler)."""
    return tpi(model, topology, window=None, allreduce="ring", **options)


def pipeline(model: TransformerSpec, topology: Topology, *, window: int | None, devices: list[str] | None = None,
             **options: Any) -> InferenceSetup:
    """Layer-wise pipeline over the devices (stage 0 on the master, which also holds embedding and head)."""
    names = list(devices or topology.devices)
    return InferenceSetup(model=model, topology=topology, devices=names, blocks=pipeline_blocks(model, len(names)),
                          mode="pipeline", window=window, **options)


def single_topology(device: Any) -> Topology:
    """A topology of one device (``dev0``) and nothing else."""
    topo = Topology("single", "one device")
    topo.add_node("dev0", "device", device=device_spec(device))
    topo.check()
    return topo


def single_device(model: TransformerSpec, device: Any, **options: Any) -> InferenceSetup:
    """The whole model on one device, the scheduler off (Transformers-like)."""
    options.pop("faults", None)     # the scenario's faults name the testbed, not this baseline device
    topo = single_topology(device)
    return InferenceSetup(model=model, topology=topo, devices=["dev0"], blocks=tp_blocks(model, [1.0]), mode="tp",
                          window=None, **options)


def offload(model: TransformerSpec, device: Any, *, budget: float = 0.85, **options: Any) -> InferenceSetup:
    """Accelerate-like: resident weights up to ``budget`` of RAM, the rest read on demand from FP32 files."""
    options.pop("faults", None)     # the scenario's faults name the testbed, not this baseline device
    options["file_bytes"] = COMPUTE_BYTES       # the offload folder holds the loaded (FP32) weights
    topo = single_topology(device)
    spec = device_spec(device)
    blocks = tp_blocks(model, [1.0])[0]
    room = budget * spec.memory - options.get("runtime_memory", 0.0)
    pinned, used = [], 0.0
    for i, block in enumerate(blocks):
        if used + block.nbytes > room:
            break
        pinned.append(i)
        used += block.nbytes
    return InferenceSetup(model=model, topology=topo, devices=["dev0"], blocks=[blocks], mode="tp", window=1,
                          pinned=[pinned], prefetch=False, **options)
