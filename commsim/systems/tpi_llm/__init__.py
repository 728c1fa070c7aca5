"""TPI-LLM (arXiv 2410.00531): tensor-parallel LLM inference on a few edge devices.

Which models can a few laptops or edge boxes serve, at what time-to-first-token
and token latency, with how much memory per device — and why the all-reduce
algorithm and the memory window matter more than bandwidth.

The model, one concept per module:

* :mod:`.hardware` — the 8-device home-router testbed (``edge_cpu_8core``) and
  the 4 laptops on Wi-Fi (assumed specs), plus a parameter server node;
* :mod:`.partition` — heads and FFN slices per device (in proportion to
  device speed), the blocks each device holds and what running them costs;
* :mod:`.scheduler` — the sliding-window memory scheduler (prefetcher, window
  of ``w`` blocks, release after use) and its steady-state conditions;
* :mod:`.allreduce` — star, tree, ring and parameter-server all-reduce as
  collective schedules on the real topology (hop latencies count);
* :mod:`.workload` — the inference as a commsim trace: per device and token
  the block kernels (prefill: GEMMs and attention over the whole prompt), the
  all-reduces and the input sends;
* :mod:`.loader` — the sliding-window scheduler as a plug-in of the shared
  replay engine: disk reads, allocation and release of blocks, prefetch,
  stalls and swap;
* :mod:`.run` — writes a setup as a trace and replays it
  (:mod:`commsim.workloads.replay`) with the loader;
* :mod:`.plans` — TPI-LLM and the baselines (Galaxy-like ring TP, pipeline,
  Accelerate-like offloading, single device);
* :mod:`.study` — the study (``commsim run scenarios/tpi_llm.yaml``) and its
  validation rows (``commsim validate --only tpi_llm``).
"""

from commsim.systems.tpi_llm.params import TPIParams
from commsim.systems.tpi_llm.study import SUMMARY_COLUMNS, TPILLMStudy, validation_checks

__all__ = ["SUMMARY_COLUMNS", "TPILLMStudy", "TPIParams", "validation_checks"]
