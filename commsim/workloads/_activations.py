"""Activation memory of one transformer layer and micro-batch on one rank (Korthikanti et al. 2022, generalised).

Korthikanti et al., "Reducing Activation Recomputation in Large Transformer
Models" (2022), count ``s·b·h·(34 + 5·a·s/h)`` bytes per layer for 16-bit
activations, a ``4h`` FFN and multi-head attention: ``10·s·b·h`` outside the
tensor-parallel region (the two norm inputs, the QKV and FC1 inputs, two
1-byte dropout masks), ``24·s·b·h`` inside it (Q, K, V, the output-projection
input, the FC1 output and the activation output) and ``5·a·s²·b`` for the
score matrix (softmax output, dropout mask and output). Here the same terms
are written with the model's own widths so that grouped-query attention, gated
FFNs and mixture-of-experts layers count what they keep:

* outside: ``(4·e + 2)·T·h`` (``(2·e + 2)·T·h`` for a parallel block with one
  norm), divided by ``tp`` under sequence parallelism;
* inside: ``e·T·(2·q + 2·kv + fc1 + ffn)`` with the per-rank widths
  (already divided by ``tp``);
* scores: ``(2·e + 1)·(a/tp)·T·s_kv`` unless flash attention keeps none;
* MoE FFN instead of the dense one: ``e·R·(fc1 + ffn + 2·h)`` for the routed
  rows ``R`` (expert activations, the dispatched inputs and expert outputs)
  plus ``8·E`` per routed token (``T``, or ``T/tp`` under sequence
  parallelism) for the fp32 router logits and probabilities.

``T`` is the rank's tokens of one micro-batch (``b·s/cp``). Recomputation:
``selective`` drops the score term (flash attention never keeps it) and
re-creates it for one layer at a time in the backward pass;
``full`` keeps only the layer input, ``e·T·h`` (``/tp`` under sequence
parallelism), and re-creates the full set for one layer at a time during the
backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerActivations", "layer_activations"]


@dataclass(frozen=True)
class LayerActivations:
    """Bytes one layer keeps per micro-batch between its forward and backward (``stored``), and the bytes
    of its full activations while it is recomputed and back-propagated (``working``: 0 unless full
    recomputation re-creates them)."""

    stored: float
    working: float
    full: float


def layer_activations(*, tokens: int, kv_tokens: int, hidden: int, element_bytes: int, tp: int,
                      sequence_parallel: bool, q_width: int, kv_width: int, fc1_width: int, ffn_width: int,
                      heads: float, flash_attention: bool, parallel_block: bool, recompute: str,
                      routed: int | None = None, experts: int = 0,
                      router_tokens: int | None = None) -> LayerActivations:
    """Activation bytes of one layer (see the module docstring); widths are per rank.

    GPT-3 175B at TP 8 with sequence parallelism, 2,048 tokens, no recomputation: ``34·s·b·h/t``.

    >>> a = layer_activations(tokens=2048, kv_tokens=2048, hidden=12288, element_bytes=2, tp=8,
    ...                       sequence_parallel=True, q_width=1536, kv_width=1536, fc1_width=6144,
    ...                       ffn_width=6144, heads=12, flash_attention=True, parallel_block=False,
    ...                       recompute="none")
    >>> a.stored == 34 * 2048 * 12288 / 8
    True
    """
    e, T, h = element_bytes, tokens, hidden
    outside = ((2 * e + 2) if parallel_block else (4 * e + 2)) * T * h
    if sequence_parallel:
        outside /= tp
    attention = e * T * (2 * q_width + 2 * kv_width)
    if routed is None:
        mlp = e * T * (fc1_width + ffn_width)
    else:
        mlp = e * routed * (fc1_width + ffn_width + 2 * h) + 8.0 * (router_tokens or T) * experts
    scores = 0.0 if flash_attention else (2 * e + 1) * heads * T * kv_tokens
    full = outside + attention + mlp + scores
    if recompute == "full":
        return LayerActivations(stored=e * T * h / (tp if sequence_parallel else 1), working=full, full=full)
    if recompute == "selective":
        return LayerActivations(stored=full - scores, working=scores, full=full)
    return LayerActivations(stored=full, working=0.0, full=full)
