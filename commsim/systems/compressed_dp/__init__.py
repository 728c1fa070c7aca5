"""Compressed data-parallel training: real payloads on their collectives, compression on the critical path.

Data-parallel training of a catalog model on a topology, where each step's
gradient travels as the payload a :mod:`commsim.compression` compressor makes of
it on real tensors of the model's layer shapes, in the collective the payload
needs (dense: all-reduce; sparse: size exchange + all-gather; low-rank: chained
all-reduces of P and Q; parameter-server methods: push to a server and its
reply), with warm-up schedules respected and the compression kernels charged to
the GPUs before the payload can leave. A CO2-style variant overlaps the sync of
step t with tau further steps. Output: iteration time and bytes per iteration
against inter-node bandwidth per compressor, the time breakdown, and a tiny-model
convergence run (loss against bytes).

Modules, one concept each: :mod:`.params` (inputs and their checks), :mod:`.regimes`
(warm-up schedules), :mod:`.schedules` (collectives and their volumes), :mod:`.plan` (a
step's kernels and transfers per bucket), :mod:`.workload` (the training steps as a trace
of the shared data-parallel workload, :mod:`commsim.workloads.data_parallel`, whose
catalog layout gives the buckets and compute; replayed by :mod:`commsim.workloads.replay`),
:mod:`.analysis` (sweep and tables), :mod:`.figures`, :mod:`.validation`, :mod:`.study`.
"""

from commsim.systems.compressed_dp.params import CompressedDPParams, CompressorEntry
from commsim.systems.compressed_dp.study import CompressedDPStudy
from commsim.systems.compressed_dp.workload import RunStats, simulate

__all__ = ["CompressedDPParams", "CompressedDPStudy", "CompressorEntry", "RunStats", "simulate"]
