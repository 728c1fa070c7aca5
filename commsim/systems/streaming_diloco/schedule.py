"""What each method syncs and when: per layer, its sync step, its payload and its deadline.

Every layer's (outer-)gradient reduction is its own collective, as in the paper's
per-layer simulator. Layer ``l`` is synced at the inner steps ``s`` with
``s mod period == offset[l]``: the reduction is *released* when the layer's
backward-for-weights op of step ``s`` ends, and it must be complete before the
layer's forward op of step ``s + 1 + tau``. A *fragment* is only a set of layers
that share an offset; its layers are reduced independently.

=========================  ======  =====================  =====  ===========
method                     period  offset of a layer      tau    payload
=========================  ======  =====================  =====  ===========
data_parallel              1       0                      0      dense
diloco                     H       H - 1                  0      dense
streaming                  H       floor(p·H / P)         0      dense
streaming_overlap          H       floor(p·H / P)         tau    dense
streaming_overlap_fp4      H       floor(p·H / P)         tau    quantised
=========================  ======  =====================  =====  ===========

(``p`` is the layer's fragment among ``P``.) Payloads are counted as the paper
counts them: ``bits`` per parameter (16 dense, 4 for FP4), plus, when a block size
is given, one ``scale_bits`` scale per block. Dense payloads are ring all-reduced
over the M replicas; quantised ones are ring all-gathered and accumulated in fp32
on receipt.

>>> fragments(24, 3, "strided", "reject")[:2]
[(0, 8, 16), (1, 9, 17)]
>>> fragments(24, 3, "sequential", "reject")[:2]
[(0, 1, 2), (3, 4, 5)]
>>> [len(f) for f in fragments(24, 5, "sequential", "ceil")], [len(f) for f in fragments(24, 5, "strided", "floor")]
([5, 5, 5, 5, 4], [6, 6, 6, 6])
>>> stagger(8, 100).tolist()
[0, 12, 25, 37, 50, 62, 75, 87]
>>> Payload(4, None).bytes(1000.0), Payload(4, 128).bytes(1000.0)     # 500 B of codes (+ 8 scales of 4 B)
(500.0, 532.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from commsim.errors import ConfigError
from commsim.workloads.data_parallel import LayerLayout

__all__ = ["Payload", "SyncPlan", "fragments", "stagger", "build_plan", "positions", "independent_periods"]


@dataclass(frozen=True)
class Payload:
    """Wire format of a sync: ``bits`` per parameter, plus a ``scale_bits`` scale per ``block_size`` (if any)."""

    bits: float
    block_size: int | None
    scale_bits: float = 32.0
    collective: str = "all_reduce"

    def bytes(self, parameters: float) -> float:
        """Bytes of one replica's payload for ``parameters`` values."""
        scales = 0.0 if self.block_size is None else math.ceil(parameters / self.block_size) * self.scale_bits
        return (parameters * self.bits + scales) / 8.0

    def describe(self) -> str:
        """A short name: ``16-bit`` or ``4-bit + fp32 scale per 128``."""
        scale = "" if self.block_size is None else f" + {self.scale_bits:g}-bit scale per {self.block_size}"
        return f"{self.bits:g}-bit{scale}"


def fragments(layers: int, size: int, assignment: str, remainder: str) -> list[tuple[int, ...]]:
    """Split ``layers`` into fragments of ``size`` layers (``strided`` or ``sequential``).

    When ``size`` does not divide ``layers``: ``reject`` raises, ``ceil`` makes
    ceil(L/k) fragments (some a layer short), ``floor`` makes floor(L/k) fragments
    (some a layer longer; the last one for sequential).
    """
    if size < 1:
        raise ConfigError(field="fragment_layers", value=size, rule="is below 1", fix="give at least 1 layer")
    if layers % size == 0:
        count = layers // size
    elif remainder == "ceil":
        count = math.ceil(layers / size)
    elif remainder == "floor":
        count = max(1, layers // size)
    else:
        raise ConfigError(field="fragment_layers", value=size, rule=f"does not divide {layers} layers and no "
                          "remainder rule is stated", fix="use a divisor of the layer count or set "
                          "fragment_remainder to 'ceil' or 'floor'")
    if assignment == "strided":
        return [tuple(range(p, layers, count)) for p in range(count)]
    if assignment != "sequential":
        raise ConfigError(field="fragment_assignment", value=assignment, rule="is not known",
                          fix="use strided or sequential")
    if remainder == "floor" and layers % size:
        bounds = [p * size for p in range(count)] + [layers]
    else:
        bounds = [min(p * size, layers) for p in range(count + 1)]
    return [tuple(range(bounds[p], bounds[p + 1])) for p in range(count)]


def stagger(count: int, period: int) -> np.ndarray:
    """Offsets spreading ``count`` fragments evenly over ``period`` steps: ``floor(p · period / count)``."""
    return (np.arange(count, dtype=np.int64) * period) // count


@dataclass(frozen=True)
class SyncPlan:
    """The syncs of one method on one model, per layer.

    ``layer_offset[l]`` is the step of the period at which layer ``l`` is synced,
    ``layer_payload[l]`` one replica's payload for it (bytes), ``wire_bytes[l]``
    what each replica sends on the WAN for it in a ring over the replicas.
    """

    method: str
    period: int
    tau: int
    fragments: tuple[tuple[int, ...], ...]
    layer_offset: np.ndarray
    layer_payload: np.ndarray
    payload: Payload
    replicas: int

    @property
    def collective(self) -> str:
        """``all_reduce`` (dense) or ``all_gather`` (quantised, accumulated in fp32)."""
        return self.payload.collective

    @property
    def volume_factor(self) -> float:
        """Bytes each replica sends per payload byte in a ring over the replicas."""
        m = self.replicas
        return 2.0 * (m - 1) / m if self.collective == "all_reduce" else float(m - 1)

    @property
    def wire_bytes(self) -> np.ndarray:
        """Bytes each replica sends on the WAN per sync of each layer."""
        return self.layer_payload * self.volume_factor

    @property
    def collective_bytes(self) -> np.ndarray:
        """The trace's ``bytes`` of each layer's collective (nccl-tests convention: all-gather gives the output)."""
        return self.layer_payload * (self.replicas if self.collective == "all_gather" else 1)

    def bytes_per_step(self) -> float:
        """Average WAN bytes per replica per inner step."""
        return float(self.wire_bytes.sum()) / self.period

    def release_profile(self) -> np.ndarray:
        """WAN bytes per replica released at each step of the period."""
        return np.bincount(self.layer_offset, weights=self.wire_bytes, minlength=self.period)

    def peak_demand(self, step_time: float) -> float:
        """Peak bandwidth demand, bytes/s: the most bytes released in one inner step over the step time."""
        return float(self.release_profile().max()) / step_time


def build_plan(method: str, layout: LayerLayout, *, inner_steps: int, tau: int, fragment_layers: int,
               assignment: str, remainder: str, dense: Payload, quantised: Payload, replicas: int) -> SyncPlan:
    """The :class:`SyncPlan` of ``method`` on ``layout``."""
    layers = layout.layers
    if method in ("data_parallel", "diloco"):
        frags = (tuple(range(layers)),)
        period = 1 if method == "data_parallel" else inner_steps
        offset = np.full(layers, period - 1, dtype=np.int64)
        overlap, payload = 0, dense
    elif method in ("streaming", "streaming_overlap", "streaming_overlap_fp4"):
        frags = tuple(fragments(layers, fragment_layers, assignment, remainder))
        period = inner_steps
        offset = np.zeros(layers, dtype=np.int64)
        for p, start in zip(frags, stagger(len(frags), inner_steps).tolist(), strict=True):
            offset[list(p)] = start
        overlap = 0 if method == "streaming" else tau
        payload = quantised if method == "streaming_overlap_fp4" else dense
    else:
        raise ConfigError(field="methods", value=method, rule="is not a method",
                          fix="use data_parallel, diloco, streaming, streaming_overlap or streaming_overlap_fp4")
    sizes = np.array([payload.bytes(float(n)) for n in layout.layer_params], dtype=float)
    return SyncPlan(method=method, period=period, tau=overlap, fragments=frags, layer_offset=offset,
                    layer_payload=sizes, payload=payload, replicas=replicas)


def positions(layout: LayerLayout) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, the start of its forward and the end of its backward-for-weights, seconds into a step."""
    forward = layout.forward.seconds
    fwd_start = np.concatenate(([0.0], np.cumsum(forward)[:-1]))
    backward = sum(work.seconds for work in layout.backward)[::-1]
    grad_ready = float(forward.sum()) + np.cumsum(backward)[::-1]
    return fwd_start, grad_ready


def independent_periods(plan: SyncPlan, layout: LayerLayout) -> bool:
    """True when every sync of a period is due before the next period releases its first one.

    Then the link is idle and the worker at the same point of its step at every
    period's first release: all periods are time-shifted copies of the first, and
    one period (with the deadlines of its syncs) gives the steady state exactly.
    """
    fwd_start, grad_ready = positions(layout)
    last_deadline = max(zip((plan.layer_offset + 1 + plan.tau).tolist(), fwd_start.tolist(), strict=True))
    next_release = min(zip((plan.period + plan.layer_offset).tolist(), grad_ready.tolist(), strict=True))
    return last_deadline < next_release
