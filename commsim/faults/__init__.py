"""Faults: link down/up, degraded links, failed devices and stragglers, scheduled or drawn from rates."""

from commsim._lazy import lazy_exports

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "FaultInjector": "commsim.faults.injector",
    "DeviceFailure": "commsim.faults.model",
    "Fault": "commsim.faults.model",
    "FaultRates": "commsim.faults.model",
    "LinkDegraded": "commsim.faults.model",
    "LinkDown": "commsim.faults.model",
    "LinkUp": "commsim.faults.model",
    "Straggler": "commsim.faults.model",
    "draw_faults": "commsim.faults.model",
})

__all__ = ["DeviceFailure", "Fault", "FaultInjector", "FaultRates", "LinkDegraded", "LinkDown", "LinkUp",
           "Straggler", "draw_faults"]
