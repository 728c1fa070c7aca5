"""Devices: what accelerators and CPUs compute, hold in memory and move."""

from commsim._lazy import lazy_exports

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "MemoryPool": "commsim.devices.memory",
    "PRESETS": "commsim.devices.presets",
    "DTYPES": "commsim.devices.spec",
    "DeviceSpec": "commsim.devices.spec",
    "device_spec": "commsim.devices.spec",
})

__all__ = ["DTYPES", "PRESETS", "DeviceSpec", "MemoryPool", "device_spec"]
