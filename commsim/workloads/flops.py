"""FLOPs of one training step as Megatron-LM counts them: model FLOPs (for MFU) and hardware FLOPs (for HFU).

Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters
Using Megatron-LM" (SC 2021), count a GPT step of global batch ``B`` sequences of
``s`` tokens through ``l`` layers of width ``h`` with vocabulary ``V`` as

    model FLOPs = 72 · B · s · l · h² · (1 + s / (6h) + V / (12 · h · l))

(forward ``24·B·s·h² + 4·B·s²·h`` per layer and ``2·B·s·h·V`` for the logits,
backward twice the forward). :func:`model_flops` computes the same sum from the
model's shapes, so it reduces to that formula for a GPT (``ffn = 4h``, full
multi-head attention, no gate) and extends it to grouped-query attention, gated
FFNs and top-k mixture-of-experts layers (``top_k`` expert FFNs per token).

Hardware FLOPs add what activation recomputation runs again (Korthikanti et al.,
"Reducing Activation Recomputation in Large Transformer Models", 2022): with
``full`` recomputation one more forward of every layer, with ``selective`` one
more forward of the attention scores (``QKᵀ`` and ``A·V``, the ``4·B·s²·h``
part); MFU and HFU divide these by the step time and the GPUs' dense peak.
"""

from __future__ import annotations

from commsim.workloads.models import TransformerSpec

__all__ = ["layer_forward_flops", "model_flops", "hardware_flops", "recompute_flops"]


def layer_forward_flops(spec: TransformerSpec, seq_len: int, *, top_k: int = 1) -> tuple[float, float]:
    """Forward FLOPs of one layer per token: ``(GEMMs with weights, attention scores)``.

    The weight GEMMs are ``2·h·(q + 2·kv) + 2·q·h`` for the projections and
    ``2·m·h·f`` for an FFN of ``m`` matrices (2, or 3 when gated) of width ``f``,
    ``top_k`` times in a mixture-of-experts layer; the scores ``QKᵀ`` and ``A·V``
    are ``4·s·q`` (``q``, ``kv``: query and key/value widths).
    """
    h, q, kv = spec.hidden, spec.q_width, spec.kv_width
    matrices = 3 if spec.gated_ffn else 2
    gemms = 2.0 * h * (q + 2 * kv) + 2.0 * q * h + top_k * 2.0 * matrices * h * spec.ffn_hidden
    scores = 4.0 * seq_len * q
    return gemms, scores


def model_flops(spec: TransformerSpec, *, seq_len: int, global_batch: int, top_k: int = 1) -> float:
    """Model FLOPs of one step (forward and backward, no recomputation) for ``global_batch`` sequences.

    >>> from commsim.workloads.models import load_model
    >>> gpt3 = load_model("gpt3-175b")
    >>> B, s, l, h, V = 1536, 2048, 96, 12288, gpt3.vocab
    >>> megatron = 72 * B * s * l * h**2 * (1 + s / (6 * h) + V / (12 * h * l))
    >>> abs(model_flops(gpt3, seq_len=s, global_batch=B) / megatron - 1) < 1e-12
    True
    """
    gemms, scores = layer_forward_flops(spec, seq_len, top_k=top_k)
    tokens = float(global_batch) * seq_len
    logits = 2.0 * spec.hidden * spec.vocab
    return 3.0 * tokens * (spec.layers * (gemms + scores) + logits)


def recompute_flops(spec: TransformerSpec, *, seq_len: int, global_batch: int, recompute: str = "none",
                    top_k: int = 1) -> float:
    """FLOPs that activation recomputation runs again in one step.

    ``none``: 0; ``selective``: the attention scores' forward, ``4·B·s²·q`` per
    layer; ``full``: the whole forward of every layer.
    """
    gemms, scores = layer_forward_flops(spec, seq_len, top_k=top_k)
    tokens = float(global_batch) * seq_len
    if recompute == "full":
        return tokens * spec.layers * (gemms + scores)
    if recompute == "selective":
        return tokens * spec.layers * scores
    return 0.0


def hardware_flops(spec: TransformerSpec, *, seq_len: int, global_batch: int, recompute: str = "none",
                   top_k: int = 1) -> float:
    """Model FLOPs plus the recomputed FLOPs (what the GPUs execute).

    For full recomputation of a GPT this is Narayanan et al.'s
    ``96·B·s·l·h²·(1 + s/(6h)) + 6·B·s·h·V``.
    """
    return (model_flops(spec, seq_len=seq_len, global_batch=global_batch, top_k=top_k)
            + recompute_flops(spec, seq_len=seq_len, global_batch=global_batch, recompute=recompute, top_k=top_k))
