"""The four tensor-sliced sublayers T3 studies and the GEMM each one runs on a TP rank.

Every sublayer is a row-parallel GEMM whose ``tokens x hidden`` output holds
partial sums that the TP group all-reduces (ring reduce-scatter, then
all-gather). With ``q`` the attention width ``heads·head_dim``, ``f`` the FFN
width and ``tp`` the TP degree, the GEMM ``C[M,N] = A[M,K]·B[K,N]`` on one rank is:

==========  =====================================  ======  ======  ==========================
key         sublayer                               M       N       K
==========  =====================================  ======  ======  ==========================
``op_fwd``  forward attention output projection    tokens  hidden  q / tp
``fc2_fwd`` forward FC-2                           tokens  hidden  f / tp
``fc1_bwd`` backward FC-1 (data gradient)          tokens  hidden  f / tp (2f / tp when gated)
``ip_bwd``  backward QKV input projection (dgrad)  tokens  hidden  (q + 2·kv) / tp
==========  =====================================  ======  ======  ==========================

Shapes come from :func:`commsim.workloads.layer_gemms` (and
:func:`~commsim.workloads.gemm_backward` for the backward ones), sized by
hidden width when ``strict_heads`` is false, as the T3 paper does for T-NLG
and PaLM whose heads TP does not divide.

>>> s = sublayer_gemm("megatron-gpt2-8.3b", 8, "fc2_fwd", tokens=8192)
>>> (s.m, s.n, s.k), s.output_bytes == 8192 * 3072 * 2
((8192, 3072, 1536), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from commsim.errors import ConfigError
from commsim.workloads import gemm_backward, layer_gemms, load_model

__all__ = ["SUBLAYERS", "SUBLAYER_LABELS", "SublayerKey", "SublayerGemm", "sublayer_gemm"]

SublayerKey = Literal["op_fwd", "fc2_fwd", "fc1_bwd", "ip_bwd"]
SUBLAYERS: tuple[str, ...] = ("op_fwd", "fc2_fwd", "fc1_bwd", "ip_bwd")
"""The sublayers, in the order tables list them."""

SUBLAYER_LABELS: dict[str, str] = {"op_fwd": "OP fwd", "fc2_fwd": "FC-2 fwd", "fc1_bwd": "FC-1 bwd",
                                   "ip_bwd": "IP bwd"}
"""Short labels for tables and figures."""


@dataclass(frozen=True)
class SublayerGemm:
    """The GEMM of one sublayer on one TP rank (elements of ``element_bytes`` bytes)."""

    model: str
    tp: int
    sublayer: str
    m: int
    n: int
    k: int
    element_bytes: int = 2

    @property
    def flops(self) -> float:
        """FLOP of the GEMM: ``2·M·N·K``."""
        return 2.0 * self.m * self.n * self.k

    @property
    def output_bytes(self) -> float:
        """Bytes of the output, which the TP group all-reduces: ``M·N·element_bytes``."""
        return float(self.m * self.n * self.element_bytes)

    @property
    def label(self) -> str:
        """``model@tp:sublayer``, the key of a row in the tables."""
        return f"{self.model}@{self.tp}:{self.sublayer}"


def sublayer_gemm(model: str, tp: int, sublayer: str, *, tokens: int, dtype: str = "fp16",
                  strict_heads: bool = False) -> SublayerGemm:
    """The GEMM of ``sublayer`` of ``model`` at TP degree ``tp`` for ``tokens`` tokens.

    Raises :class:`~commsim.errors.ConfigError` when ``tp`` does not divide the
    model's widths (hidden size, FFN width, attention width; the heads too with
    ``strict_heads``) or ``tokens`` is not a positive whole number.
    """
    spec = load_model(model)
    fwd = layer_gemms(spec, batch=1, seq_len=tokens, tp=tp, dtype=dtype, strict_heads=strict_heads)
    if sublayer == "op_fwd":
        g = fwd["out_proj"]
    elif sublayer == "fc2_fwd":
        g = fwd["fc2"]
    elif sublayer == "fc1_bwd":
        g = gemm_backward(fwd["fc1"])[0]
    elif sublayer == "ip_bwd":
        g = gemm_backward(fwd["qkv"])[0]
    else:
        raise ConfigError(field="sublayer", value=sublayer, rule="is not a sublayer",
                          fix=f"use one of {', '.join(SUBLAYERS)}")
    return SublayerGemm(model=spec.name, tp=tp, sublayer=sublayer, m=g.m, n=g.n, k=g.k,
                        element_bytes=g.element_bytes)
