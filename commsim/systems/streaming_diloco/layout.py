"""A model as the study sees it: per layer, its parameters and the three compute ops of an inner step.

Parameters are counted one of two ways (``parameters``):

- ``nominal`` (the paper's simulator, the default): the model's nominal size
  (1B, 10B, 100B) spread evenly over its layers;
- ``catalog``: the catalog's shapes (:func:`commsim.workloads.parameters_by_layer`),
  the token embedding joined to layer 0 and the final norm and head to the last
  layer (the catalog's "1B" counts 1.34B parameters with the paper's shapes).

Compute: the compute-only step time ``T`` splits into forward ``T / (1 + r)`` and
backward ``T·r / (1 + r)`` (``r`` = ``backward_to_forward``); the backward is one
op for the activations' gradient and one for the weights' gradient, in equal
halves (each is one GEMM per forward GEMM). Each is shared among the layers
evenly (``nominal``) or by forward FLOPs (``catalog``, the head on the last layer).

>>> from commsim.systems.streaming_diloco.params import ModelCase
>>> lay = build_layout(ModelCase(model="diloco-1b", label="1B", step_time=0.1), backward_to_forward=2.0)
>>> lay.layers, lay.parameters, round(float(lay.forward.sum()), 12), round(float(lay.backward.sum()), 12)
(24, 1000000000, 0.033333333333, 0.066666666667)
>>> round(float(lay.backward_activations[0]), 12) == round(float(lay.backward_weights[0]), 12)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from commsim.errors import ConfigError

__all__ = ["ModelLayout", "build_layout", "derived_step_time"]


@dataclass(frozen=True)
class ModelLayout:
    """Per-layer parameters and compute of one model.

    ``layer_params[l]`` parameters (elements) synced with layer ``l``;
    ``forward[l]``, ``backward_activations[l]``, ``backward_weights[l]`` seconds
    of compute per inner step.
    """

    model: str
    label: str
    step_time: float
    layer_params: np.ndarray
    forward: np.ndarray
    backward_activations: np.ndarray
    backward_weights: np.ndarray
    step_time_source: str
    counting: str

    @property
    def layers(self) -> int:
        """Number of transformer blocks."""
        return int(self.layer_params.shape[0])

    @property
    def parameters(self) -> int:
        """Parameters of the whole model (elements)."""
        return round(float(self.layer_params.sum()))

    @property
    def backward(self) -> np.ndarray:
        """Backward seconds per layer (activations and weights)."""
        return self.backward_activations + self.backward_weights


def derived_step_time(parameters: int, tokens_per_step: int, devices: int, peak_flops: float, mfu: float) -> float:
    """Compute-only step time, seconds: ``6 · N · tokens / (devices · peak · mfu)``.

    >>> round(derived_step_time(10**9, 2**20, 8, 989e12, 0.4), 4)
    1.9879
    """
    return 6.0 * parameters * tokens_per_step / (devices * peak_flops * mfu)


def build_layout(case: Any, *, backward_to_forward: float, step_time: float | None = None,
                 parameters: str = "nominal") -> ModelLayout:
    """The layout of ``case`` (a :class:`~.params.ModelCase`); ``step_time`` overrides the case's."""
    from commsim.workloads import layer_gemms, load_model, parameters_by_layer

    spec = load_model(case.model)
    layers = spec.layers
    if parameters == "nominal":
        if spec.nominal_params is None:
            raise ConfigError(field="parameters", value=parameters, rule=f"needs a nominal size, and catalog model "
                              f"{case.model} states none", fix="use parameters: catalog, or a model with a nominal size")
        layer_params = np.full(layers, float(spec.nominal_params) / layers)
        share = np.full(layers, 1.0 / layers)
    elif parameters == "catalog":
        groups = parameters_by_layer(spec)
        layer_params = np.array([sum(math.prod(s) for _, s in group) for group in groups], dtype=float)
        seq = int(spec.default_seq_len)
        flops = np.full(layers, sum(g.flops for g in layer_gemms(spec, batch=1, seq_len=seq).values()))
        flops[-1] += 2.0 * seq * spec.vocab * spec.hidden
        share = flops / flops.sum()
    else:
        raise ConfigError(field="parameters", value=parameters, rule="is not a way to count parameters",
                          fix="use nominal or catalog")
    t = case.step_time if step_time is None else step_time
    if t is None or not t > 0:
        raise ConfigError(field=f"models[{case.name}].step_time", value=t, rule="is missing or not positive",
                          fix="give a step time (e.g. '0.1 s') or let the study derive it")
    forward = t / (1.0 + backward_to_forward) * share
    half_backward = t * backward_to_forward / (1.0 + backward_to_forward) * share / 2.0
    return ModelLayout(model=case.model, label=case.name, step_time=float(t), layer_params=layer_params,
                       forward=forward, backward_activations=half_backward, backward_weights=half_backward.copy(),
                       step_time_source="given" if case.step_time is not None else "derived", counting=parameters)
