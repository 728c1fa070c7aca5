"""Shared fixtures: a tiny transformer whose numbers can be checked by hand; the memory a program allocates."""

from __future__ import annotations

import pytest

from commsim.workloads import TransformerSpec


@pytest.fixture
def tiny() -> TransformerSpec:
    """2 layers, hidden 8, 2 heads of width 4, FFN 32, vocabulary 16, 4 tokens, tied, biases, LayerNorm."""
    return TransformerSpec(name="tiny", layers=2, hidden=8, heads=2, ffn_hidden=32, vocab=16, max_seq_len=4)


def _static_peak(program) -> float:
    """Largest sum of live buffers walking a program's alloc/free ops in list order; checks every transient
    buffer (all but weights, gradients and optimizer state) is freed again."""
    live: dict[str, float] = {}
    peak = 0.0
    for op in program.ops:
        if op.kind == "alloc":
            live[op.buffer] = op.bytes
            peak = max(peak, sum(live.values()))
        elif op.kind == "free":
            live.pop(op.buffer)
    assert not set(live) - {"weights", "grads", "optimizer_state"}
    return peak


@pytest.fixture(scope="session")
def static_peak():
    """:func:`_static_peak` (session-scoped so that hypothesis tests may use it)."""
    return _static_peak
