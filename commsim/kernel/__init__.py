"""The simulation kernel: SimPy's clock plus fluid max-min sharing of resources."""

from commsim._lazy import lazy_exports

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "ActivityBatch": "commsim.kernel.fluid",
    "FluidKernel": "commsim.kernel.fluid",
    "InstantEndEvent": "commsim.kernel.clock",
    "KernelStats": "commsim.kernel.fluid",
    "UNBOUNDED": "commsim.kernel.maxmin",
    "max_min_rates": "commsim.kernel.maxmin",
})

__all__ = ["ActivityBatch", "FluidKernel", "InstantEndEvent", "KernelStats", "UNBOUNDED", "max_min_rates"]
