"""Size limits that refuse an absurd input up front, with an estimate, instead of exhausting memory.

A check compares an estimate (nodes of a topology, elements of a tensor, ranks
of a workload) made *before* allocating with a limit far above any realistic
study, and raises :class:`~commsim.errors.ConfigError` naming the estimate and
the limit. ``--force`` on the command line (:func:`allow_large` in Python) lifts
the limits for the brave.

>>> try:
...     check_limit("topology.params.n", 10**12, 10**12, MAX_TOPOLOGY_NODES, "nodes")
... except ConfigError as error:
...     print(error.rule)
would build about 1,000,000,000,000 nodes, above the limit of 1,000,000
>>> with allow_large():
...     check_limit("topology.params.n", 10**12, 10**12, MAX_TOPOLOGY_NODES, "nodes")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from commsim.errors import ConfigError

__all__ = ["MAX_RANKS", "MAX_TENSOR_ELEMENTS", "MAX_TOPOLOGY_NODES", "allow_large", "check_limit"]

MAX_TOPOLOGY_NODES = 1_000_000
"""Nodes plus links of one topology (a 65,536-GPU fat tree has about 280,000)."""
MAX_TENSOR_ELEMENTS = 2**28
"""Elements of the tensors ``commsim compress`` holds at once (1 GiB in fp32, several working copies)."""
MAX_RANKS = 1_000_000
"""Ranks of one generated workload."""

_FORCED: ContextVar[bool] = ContextVar("commsim_allow_large", default=False)


@contextmanager
def allow_large(allowed: bool = True) -> Iterator[None]:
    """Within the block, size limits are not enforced (``--force``)."""
    token = _FORCED.set(allowed)
    try:
        yield
    finally:
        _FORCED.reset(token)


def check_limit(field: str, value: Any, estimate: float, limit: float, what: str,
                fix: str = "use a smaller value") -> None:
    """Raise :class:`ConfigError` when ``estimate`` (of ``what``) exceeds ``limit``, unless limits are lifted."""
    if estimate > limit and not _FORCED.get():
        raise ConfigError(field=field, value=value,
                          rule=f"would build about {estimate:,.0f} {what}, above the limit of {limit:,.0f}",
                          fix=f"{fix}, or pass --force (Python: commsim.limits.allow_large()) to try anyway")
