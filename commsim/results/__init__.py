"""Results: what a run recorded, as tidy pandas tables."""

from commsim._lazy import lazy_exports

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "chrome_trace": "commsim.results.perfetto",
    "write_perfetto": "commsim.results.perfetto",
    "Recorder": "commsim.results.recorder",
    "Result": "commsim.results.result",
    "usage_table": "commsim.results.result",
})

__all__ = ["Recorder", "Result", "chrome_trace", "usage_table", "write_perfetto"]
