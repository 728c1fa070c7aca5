"""Peak memory per GPU of a training step, by component, as the generated trace allocates it.

For each pipeline stage :func:`training_memory` adds

* ``weights``, ``grads``, ``optimizer_state``: held all step long. Weights in
  ``dtype``, gradients in ``grad_dtype``, 12 B of optimizer state per
  parameter (fp32 master weight and two Adam moments). ZeRO 1 (the
  distributed optimizer) divides the optimizer state by the data-parallel
  group (``dp·cp`` ranks; ``dp·cp/ep`` for expert parameters), ZeRO 2 the
  gradients too, ZeRO 3 the block weights and gradients too (the embedding,
  final norm and head stay whole, as FSDP's root unit);
* ``activations``: the largest amount of kept activations over the stage's
  schedule — each forward pass allocates its chunk's layers
  (:mod:`commsim.workloads._activations`; the last stage adds the fp32
  softmax of the loss) and its backward pass frees them, so 1F1B keeps up to
  ``pp - stage`` micro-batches in flight and the interleaved schedule its
  larger warm-up — plus, during a backward pass, the buffers recomputation
  re-creates for one layer (``recompute_working``);
* ``zero3_buffers``: with ZeRO 3, two layers of gathered weights (the current
  one and the one prefetched) and one layer of unsharded gradients.

These are exactly the alloc/free ops of :func:`~commsim.workloads.training_trace`
(ZeRO 3 counts its buffers at their worst together, an upper bound by at most
those buffers). Not counted: CUDA context and library workspaces, NCCL
buffers, allocator fragmentation, gradient buckets in flight, the embedding's
dropout mask.

>>> memory = training_memory("gpt3-175b", tp=8, pp=8, num_micro_batches=64, sequence_parallel=True,
...                          recompute="selective")
>>> memory.peak.stage, round(memory.peak.total / 2**30, 1), memory.peak.in_flight
(0, 56.9, 8)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from commsim.errors import ConfigError
from commsim.workloads._schedule import pipeline_schedule
from commsim.workloads._training import _Step, resolve_config
from commsim.workloads._training_config import TrainingConfig
from commsim.workloads.models import TransformerSpec, load_model

__all__ = ["StageMemory", "TrainingMemory", "training_memory"]


@dataclass(frozen=True)
class StageMemory:
    """Peak bytes on one GPU of pipeline stage ``stage``, by component (see the module docstring).

    ``in_flight`` is the number of micro-batch chunks whose activations are
    kept at the activation peak.
    """

    stage: int
    weights: float
    grads: float
    optimizer_state: float
    activations: float
    recompute_working: float
    zero3_buffers: float
    in_flight: int

    @property
    def total(self) -> float:
        """Sum of the components, bytes."""
        return self.weights + self.grads + self.optimizer_state + self.activations + self.zero3_buffers

    def as_dict(self) -> dict[str, float]:
        """The components and the total as a flat mapping (bytes)."""
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class TrainingMemory:
    """Peak memory of every pipeline stage; ``peak`` is the stage that needs the most."""

    stages: list[StageMemory]

    @property
    def peak(self) -> StageMemory:
        """The stage with the largest total (the first such one)."""
        return max(self.stages, key=lambda s: (s.total, -s.stage))

    def fits(self, capacity: float) -> bool:
        """True when every stage fits in ``capacity`` bytes per GPU."""
        return self.peak.total <= capacity

    def require_fit(self, capacity: float, device: str = "the GPU") -> None:
        """Raise a :class:`ConfigError` naming the stage, its components and what to change when the
        step needs more than ``capacity`` bytes per GPU.

        >>> memory = training_memory("gpt3-175b", tp=8, pp=8, num_micro_batches=16, flash_attention=False)
        >>> memory.require_fit(80 * 2**30, "A100 80GB")
        Traceback (most recent call last):
        ...
        commsim.errors.ConfigError: memory per GPU = '99.0 GiB': stage 0 needs more than the 80.0 GiB of A100 80GB (weights 5.3, grads 10.5, optimizer state 31.5, activations 51.8 GiB with 8 micro-batches in flight). Fix: activations dominate: turn on sequence_parallel or recompute (selective or full), use a smaller micro_batch_size or more tensor parallelism.
        """
        peak = self.peak
        if peak.total <= capacity:
            return
        gib = 2**30
        parts = {"weights": peak.weights, "grads": peak.grads, "optimizer state": peak.optimizer_state,
                 "activations": peak.activations}
        if peak.zero3_buffers:
            parts["ZeRO-3 buffers"] = peak.zero3_buffers
        listed = ", ".join(f"{name} {value / gib:.1f}" for name, value in parts.items())
        largest = max(parts, key=lambda name: parts[name])
        if largest == "activations":
            fix = ("activations dominate: turn on sequence_parallel or recompute (selective or full), use a "
                   "smaller micro_batch_size or more tensor parallelism")
        else:
            fix = (f"{largest} dominate: shard them with distributed_optimizer / zero_stage, or spread the model "
                   "over more tensor- or pipeline-parallel ranks")
        raise ConfigError(field="memory per GPU", value=f"{peak.total / gib:.1f} GiB",
                          rule=f"stage {peak.stage} needs more than the {capacity / gib:.1f} GiB of {device} "
                               f"({listed} GiB with {peak.in_flight} micro-batches in flight)", fix=fix)


def _stage_memory(step: _Step, stage: int) -> StageMemory:
    cfg = step.config
    weights, grads, optimizer = step.static_memory(stage)
    chunks = step.chunks[stage]
    kept = [step.chunk_activation_bytes(stage, c) for c in range(len(chunks))]
    working = [max((step.activations(layer).working for layer in layers), default=0.0) for layers in chunks]
    live = peak = peak_working = 0.0
    count = peak_count = 0
    for phase, _j, c in pipeline_schedule(stage, cfg.pp, cfg.micro_batches, cfg.virtual_pipeline_stages):
        if phase == "F":
            live += kept[c]
            count += 1
            if live > peak:
                peak, peak_working, peak_count = live, 0.0, count
        else:
            if live + working[c] > peak:
                peak, peak_working, peak_count = live + working[c], working[c], count
            live -= kept[c]
            count -= 1
    buffers = 0.0
    if cfg.zero >= 3:
        layer = max((sum(step.layer_params(x)) for x in step.stages[stage]), default=0)
        buffers = layer * (2 * step.e + step.grad_e)
    return StageMemory(stage=stage, weights=weights, grads=grads, optimizer_state=optimizer, activations=peak,
                       recompute_working=peak_working, zero3_buffers=buffers, in_flight=peak_count)


def training_memory(model: TransformerSpec | str, config: TrainingConfig | dict[str, Any] | None = None,
                    **overrides: Any) -> TrainingMemory:
    """Peak memory per GPU of one training step of ``model``, stage by stage (same arguments as
    :func:`~commsim.workloads.training_trace`; the same configuration errors)."""
    spec = model if isinstance(model, TransformerSpec) else load_model(model)
    step = _Step(spec, resolve_config(config, overrides))
    return TrainingMemory(stages=[_stage_memory(step, stage) for stage in range(step.config.pp)])
