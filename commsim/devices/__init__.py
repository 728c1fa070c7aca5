"""Devices: what accelerators and CPUs compute, hold in memory and move."""

from commsim._lazy import lazy_exports

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "ComputeModel": "commsim.devices.compute_model",
    "KernelShape": "commsim.devices.compute_model",
    "compute_model_names": "commsim.devices.compute_model",
    "load_compute_model": "commsim.devices.compute_model",
    "MemoryPool": "commsim.devices.memory",
    "PRESETS": "commsim.devices.presets",
    "DTYPES": "commsim.devices.spec",
    "DeviceSpec": "commsim.devices.spec",
    "device_spec": "commsim.devices.spec",
})

__all__ = ["DTYPES", "PRESETS", "ComputeModel", "DeviceSpec", "KernelShape", "MemoryPool", "compute_model_names",
           "device_spec", "load_compute_model"]
