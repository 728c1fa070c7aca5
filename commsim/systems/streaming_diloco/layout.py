"""A model as the study sees it: per layer, its parameters and the three compute ops of an inner step
(a :class:`commsim.workloads.data_parallel.LayerLayout` of fixed-duration compute).

Parameters are counted one of two ways (``parameters``):

- ``nominal`` (the paper's simulator, the default): the model's nominal size
  (1B, 10B, 100B) spread evenly over its layers;
- ``catalog``: the catalog's shapes (:func:`commsim.workloads.data_parallel.catalog_layout`),
  the token embedding joined to layer 0 and the final norm and head to the last
  layer (the catalog's "1B" counts 1.34B parameters with the paper's shapes).

Compute: the compute-only step time ``T`` splits into forward ``T / (1 + r)`` and
backward ``T·r / (1 + r)`` (``r`` = ``backward_to_forward``); the backward is one
op for the activations' gradient and one for the weights' gradient, in equal
halves (each is one GEMM per forward GEMM). Each is shared among the layers
evenly (``nominal``) or by forward FLOPs (``catalog``, the head on the last layer).

>>> from commsim.systems.streaming_diloco.params import ModelCase
>>> lay = build_layout(ModelCase(model="diloco-1b", label="1B", step_time=0.1), backward_to_forward=2.0)
>>> backward = sum(work.seconds for work in lay.backward)
>>> lay.layers, lay.parameters, round(float(lay.forward.seconds.sum()), 12), round(float(backward.sum()), 12)
(24, 1000000000, 0.033333333333, 0.066666666667)
>>> [work.name for work in lay.backward], bool(lay.backward[0].seconds[0] == lay.backward[1].seconds[0])
(['bwa', 'bww'], True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from commsim.errors import ConfigError
from commsim.workloads.data_parallel import LayerLayout, Work, catalog_layout

__all__ = ["build_layout", "derived_step_time"]


def derived_step_time(parameters: int, tokens_per_step: int, devices: int, peak_flops: float, mfu: float) -> float:
    """Compute-only step time, seconds: ``6 · N · tokens / (devices · peak · mfu)``.

    >>> round(derived_step_time(10**9, 2**20, 8, 989e12, 0.4), 4)
    1.9879
    """
    return 6.0 * parameters * tokens_per_step / (devices * peak_flops * mfu)


def build_layout(case: Any, *, backward_to_forward: float, step_time: float | None = None,
                 parameters: str = "nominal") -> LayerLayout:
    """The layout of ``case`` (a :class:`~.params.ModelCase`); ``step_time`` overrides the case's.

    Each layer's compute is fixed-duration: a forward op, then a backward op for the
    activations' gradient (``bwa``) and one for the weights' (``bww``), whose end
    releases the layer's gradient.
    """
    from commsim.workloads import load_model

    spec = load_model(case.model)
    layers = spec.layers
    tensors: tuple = ()
    if parameters == "nominal":
        if spec.nominal_params is None:
            raise ConfigError(field="parameters", value=parameters, rule=f"needs a nominal size, and catalog model "
                              f"{case.model} states none", fix="use parameters: catalog, or a model with a nominal size")
        layer_params = np.full(layers, float(spec.nominal_params) / layers)
        share = np.full(layers, 1.0 / layers)
    elif parameters == "catalog":
        catalog = catalog_layout(case.model, tokens_per_rank=int(spec.default_seq_len))  # one sequence: FLOP shares
        layer_params, tensors = catalog.layer_params, catalog.tensors
        flops = catalog.forward.flops
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
    return LayerLayout(model=case.model, label=case.name, step_time=float(t), layer_params=layer_params,
                       forward=Work.timed("fwd", forward, label="forward"),
                       backward=(Work.timed("bwa", half_backward, label="backward (activations)"),
                                 Work.timed("bww", half_backward.copy(), label="backward (weights)")),
                       tensors=tensors)
