"""Streaming DiLoCo across data centres: how much WAN bandwidth keeps the accelerators busy.

Douillard et al., "Streaming DiLoCo with overlapping communication: Towards a
Distributed Free Lunch" (arXiv 2501.18512), bandwidth simulation. M replicas,
each a data-parallel group in its own data centre, joined by WAN links; five
methods compared on compute utilisation against bandwidth:

- ``data_parallel``: gradients of every layer all-reduced every step, released
  during the backward pass;
- ``diloco``: all parameters synced every H inner steps, the workers wait;
- ``streaming``: fragments of k layers, each synced every H steps at staggered offsets;
- ``streaming_overlap``: a fragment's sync may finish up to tau steps later;
- ``streaming_overlap_fp4``: the same with FP4 (E3M0) payloads.

Modules, one concept each: :mod:`.params` (inputs and their checks),
:mod:`.layout` (per-layer parameters and compute), :mod:`.schedule` (per-layer
sync steps, payloads, deadlines), :mod:`.workload` (the per-layer trace, replayed
by :mod:`commsim.workloads.replay` on a WAN topology), :mod:`.analysis` (sweep,
thresholds, summary), :mod:`.figures`, :mod:`.study`.
"""

from commsim.systems.streaming_diloco.params import METHODS, ModelCase, StreamingDilocoParams
from commsim.systems.streaming_diloco.study import StreamingDilocoStudy
from commsim.systems.streaming_diloco.workload import RunStats, simulate, sync_trace

__all__ = ["METHODS", "ModelCase", "RunStats", "StreamingDilocoParams", "StreamingDilocoStudy", "simulate",
           "sync_trace"]
