"""Devices: what accelerators and CPUs compute, hold in memory and move."""

from commsim.devices.compute_model import ComputeModel, KernelShape, compute_model_names, load_compute_model
from commsim.devices.memory import MemoryPool
from commsim.devices.presets import PRESETS
from commsim.devices.spec import DTYPES, DeviceSpec, device_spec

__all__ = ["DTYPES", "PRESETS", "ComputeModel", "DeviceSpec", "KernelShape", "MemoryPool", "compute_model_names",
           "device_spec", "load_compute_model"]
