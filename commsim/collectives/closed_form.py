"""Closed-form (alpha-beta) times of the collective algorithms.

Each function gives the time of one algorithm when nothing else competes for the
network and every transfer of a step crosses a path with fixed latency ``alpha``
(seconds: software step latency plus route latency) and bottleneck bandwidth
``bandwidth`` (bytes/s) of which ``efficiency`` carries payload. They describe
exactly the schedules in this package, so on uncongested topologies the
simulation must agree with them; they also power the fast estimate mode.

>>> ring_all_reduce_time(8, 2**30, alpha=1e-6, bandwidth=50e9)   # 14 steps of 128 MiB
0.03759496384
"""

from __future__ import annotations

import math
from collections.abc import Callable

from commsim.collectives.tree import DBT_CHUNK

__all__ = ["CLOSED_FORMS", "closed_form_time", "ring_all_reduce_time", "ring_reduce_scatter_time",
           "ring_all_gather_time", "pipeline_time", "bus_factor", "register_closed_form", "binary_tree_pipeline_time",
           "tree_time", "double_binary_tree_time", "halving_doubling_time", "all_to_all_time", "star_all_reduce_time",
           "star_one_way_time", "hierarchical_all_reduce_time", "hierarchical_all_gather_time"]

ClosedForm = Callable[..., float]
CLOSED_FORMS: dict[tuple[str, str], ClosedForm] = {}


def register_closed_form(op: str, algorithm: str, fn: ClosedForm) -> None:
    """Make ``fn(n, nbytes, alpha=, bandwidth=, **params)`` the closed form of ``op``/``algorithm``."""
    CLOSED_FORMS[(op, algorithm)] = fn


def bus_factor(op: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor: busbw = algbw x factor."""
    if n <= 1:
        return 1.0 if op in ("broadcast", "reduce", "sendrecv") else 0.0
    return {
        "all_reduce": 2.0 * (n - 1) / n,
        "reduce_scatter": (n - 1) / n,
        "all_gather": (n - 1) / n,
        "all_to_all": (n - 1) / n,
        "broadcast": 1.0,
        "reduce": 1.0,
        "sendrecv": 1.0,
    }[op]


def _step(nbytes: float, alpha: float, bandwidth: float, efficiency: float) -> float:
    return alpha + nbytes / (bandwidth * efficiency)


def ring_reduce_scatter_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                             channels: int = 1, reduce_time: float = 0.0) -> float:
    """``n - 1`` steps of ``nbytes / n`` (channels share the same links, so they do not change it)."""
    return (n - 1) * (_step(nbytes / n, alpha, bandwidth, efficiency) + reduce_time)


def ring_all_gather_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                         channels: int = 1) -> float:
    """``n - 1`` steps of ``nbytes / n``."""
    return (n - 1) * _step(nbytes / n, alpha, bandwidth, efficiency)


def ring_all_reduce_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                         channels: int = 1, reduce_time: float = 0.0) -> float:
    """Reduce-scatter then all-gather: ``2 (n - 1)`` steps of ``nbytes / n``."""
    return (ring_reduce_scatter_time(n, nbytes, alpha=alpha, bandwidth=bandwidth, efficiency=efficiency,
                                     reduce_time=reduce_time)
            + ring_all_gather_time(n, nbytes, alpha=alpha, bandwidth=bandwidth, efficiency=efficiency))


def pipeline_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                  chunk_size: float | None = None, root: int = 0) -> float:
    """A chain of ``n - 1`` hops pipelined in ``C`` chunks: ``(C + n - 2)`` chunk steps."""
    chunks = 1 if chunk_size is None else max(1, math.ceil(nbytes / chunk_size))
    return (chunks + n - 2) * _step(nbytes / chunks, alpha, bandwidth, efficiency)


def closed_form_time(op: str, algorithm: str, n: int, nbytes: float, *, alpha: float, bandwidth: float,
                     **params: float) -> float:
    """The closed-form time of ``op``/``algorithm``; KeyError-free: raises ConfigError when there is none."""
    from commsim.errors import ConfigError

    fn = CLOSED_FORMS.get((op, algorithm))
    if fn is None:
        raise ConfigError(field="algorithm", value=f"{op}/{algorithm}", rule="has no closed form",
                          fix=f"use one of {', '.join(f'{o}/{a}' for o, a in sorted(CLOSED_FORMS))}")
    if n <= 1:
        return 0.0
    return fn(n, nbytes, alpha=alpha, bandwidth=bandwidth, **params)


register_closed_form("all_reduce", "ring", ring_all_reduce_time)
register_closed_form("reduce_scatter", "ring", ring_reduce_scatter_time)
register_closed_form("all_gather", "ring", ring_all_gather_time)
register_closed_form("broadcast", "ring", pipeline_time)
register_closed_form("reduce", "ring", pipeline_time)


# ---------------------------------------------------------------------------------------------------------------
# Tree, halving-doubling, all-to-all, star and hierarchical algorithms. Each formula follows its schedule's
# docstring; "x" is the time one chunk takes alone on a link, so a stage whose bottleneck link carries k
# equal flows takes alpha + k x.


def _chunks(nbytes: float, chunk_size: float | None, channels: int = 1) -> int:
    if chunk_size is None:
        return 1
    return max(1, math.ceil(nbytes / (channels * chunk_size) - 1e-9))


def binary_tree_pipeline_time(n: int, chunks: int, one: float, two: float) -> float:
    """Makespan of ``chunks`` chunks through an ``n``-node heap-ordered binary tree (either direction).

    A node with ``k`` children takes ``one`` (k = 1) or ``two`` (k = 2) per chunk; a
    pipeline of stages takes the sum of its stages plus ``chunks - 1`` times the
    slowest, maximised over root-to-leaf paths: ``(C + D - 1) two`` with depth
    ``D = floor(log2 n)``, except ``C one`` for ``n = 2`` and ``(C + D - 2) two + one``
    when ``n >= 4`` is a power of two (the deepest leaf hangs off a one-child node).
    """
    if n <= 1:
        return 0.0
    depth = n.bit_length() - 1
    if n == 2:
        return chunks * one
    if n & (n - 1) == 0:
        return (chunks + depth - 2) * two + one
    return (chunks + depth - 1) * two


def tree_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0, root: int = 0,
              tree: str = "binary", chunk_size: float | None = None, channels: int = 1) -> float:
    """Pipelined tree broadcast or reduce of ``C`` chunks (per channel), ``x = S / (C B)``.

    Binary: :func:`binary_tree_pipeline_time` with ``alpha + x`` and ``alpha + 2x``
    (two children share the parent's link). Binomial: ``C ceil(log2 n) (alpha + x)``
    (the root sends every chunk to ``ceil(log2 n)`` children one after another).
    """
    chunks = _chunks(nbytes, chunk_size, channels)
    x = nbytes / (chunks * bandwidth * efficiency)
    if tree == "binomial":
        return chunks * (n - 1).bit_length() * (alpha + x)
    return binary_tree_pipeline_time(n, chunks, alpha + x, alpha + 2 * x)


def double_binary_tree_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                            chunk_size: float | None = DBT_CHUNK, channels: int = 1) -> float:
    """Reduce then broadcast, each a binary-tree pipeline of ``C`` chunks of ``S / (2 C)`` per tree.

    ``2 x`` :func:`binary_tree_pipeline_time` with ``x = S / (2 C B)``: a rank's
    link carries at most two flows at once (its two children, or its flows in
    both trees), and the one-child stage runs alone. ``chunk_size`` defaults to
    :data:`commsim.collectives.tree.DBT_CHUNK`.
    """
    chunks = _chunks(nbytes / 2, chunk_size, channels)
    x = nbytes / (2 * chunks * bandwidth * efficiency)
    return 2 * binary_tree_pipeline_time(n, chunks, alpha + x, alpha + 2 * x)


def halving_doubling_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                          fallback: bool = False) -> float:
    """Rabenseifner: ``2 log2 p`` steps moving ``2 (p - 1) / p S`` per rank on ``p = 2**floor(log2 n)``.

    With ``r = n - p`` extra ranks, a fold (``S`` to a partner) before and an
    unfold (``S`` back) after: ``+ 2 (alpha + S / B)``.
    """
    p = 1 << (n.bit_length() - 1)
    beta = 1.0 / (bandwidth * efficiency)
    core = 2 * (p.bit_length() - 1) * alpha + 2 * (p - 1) / p * nbytes * beta
    return core + (2 * (alpha + nbytes * beta) if p != n else 0.0)


def all_to_all_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                    rounds: int = 1) -> float:
    """Direct all-to-all in ``R = min(rounds, n - 1)`` rounds: ``R alpha + (n - 1) / n S / B``.

    A round with ``m`` peers per rank puts ``m`` flows on every uplink and
    downlink, each ``S / n``, so it takes ``alpha + m S / (n B)``.
    """
    r = min(rounds, n - 1)
    return r * alpha + (n - 1) / n * nbytes / (bandwidth * efficiency)


def star_all_reduce_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                         root: int = 0) -> float:
    """Gather to the root, then send back: ``2 (alpha + (n - 1) S / B)`` (incast, then fan-out, on its link)."""
    return 2 * star_one_way_time(n, nbytes, alpha=alpha, bandwidth=bandwidth, efficiency=efficiency)


def star_one_way_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                      root: int = 0) -> float:
    """Star reduce (incast) or broadcast (fan-out) alone: ``alpha + (n - 1) S / B`` on the root's link."""
    return alpha + (n - 1) * nbytes / (bandwidth * efficiency) if n > 1 else 0.0


def hierarchical_all_reduce_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                                 ranks_per_node: int, inter: str = "ring", alpha_inter: float | None = None,
                                 bandwidth_inter: float | None = None, channels: int = 1,
                                 chunk_size: float | None = DBT_CHUNK) -> float:
    """Intra-node ring reduce-scatter + inter-node all-reduce of ``S / L`` per rail + intra-node ring all-gather.

    ``alpha``/``bandwidth`` are the intra-node path parameters, ``alpha_inter``/
    ``bandwidth_inter`` the inter-node ones (default: the same); ``L`` ranks per
    node, ``M = n / L`` nodes; the inter-node part is :func:`ring_all_reduce_time`
    or :func:`double_binary_tree_time` on ``M`` ranks.
    """
    local = ranks_per_node
    nodes = n // local
    a2 = alpha if alpha_inter is None else alpha_inter
    b2 = bandwidth if bandwidth_inter is None else bandwidth_inter
    intra = 0.0
    if local > 1:
        intra = (ring_reduce_scatter_time(local, nbytes, alpha=alpha, bandwidth=bandwidth, efficiency=efficiency)
                 + ring_all_gather_time(local, nbytes, alpha=alpha, bandwidth=bandwidth, efficiency=efficiency))
    across = 0.0
    if nodes > 1:
        if inter == "tree":
            across = double_binary_tree_time(nodes, nbytes / local, alpha=a2, bandwidth=b2, efficiency=efficiency,
                                             chunk_size=chunk_size, channels=channels)
        else:
            across = ring_all_reduce_time(nodes, nbytes / local, alpha=a2, bandwidth=b2, efficiency=efficiency)
    return intra + across



def hierarchical_all_gather_time(n: int, nbytes: float, *, alpha: float, bandwidth: float, efficiency: float = 1.0,
                                 ranks_per_node: int, alpha_inter: float | None = None,
                                 bandwidth_inter: float | None = None) -> float:
    """Inter-node ring per rail, ``M - 1`` steps of ``P = S / n``, then an intra-node ring, ``L - 1`` steps of ``M P``.

    ``S`` is the gathered output (``n`` payloads of ``P``); ``alpha``/``bandwidth`` the
    intra-node path, ``alpha_inter``/``bandwidth_inter`` the inter-node one (default: the same).
    """
    local = ranks_per_node
    nodes = n // local
    piece = nbytes / n
    a2 = alpha if alpha_inter is None else alpha_inter
    b2 = bandwidth if bandwidth_inter is None else bandwidth_inter
    return ((nodes - 1) * _step(piece, a2, b2, efficiency)
            + (local - 1) * _step(nodes * piece, alpha, bandwidth, efficiency))

register_closed_form("all_reduce", "double_binary_tree", double_binary_tree_time)
register_closed_form("broadcast", "tree", tree_time)
register_closed_form("reduce", "tree", tree_time)
register_closed_form("all_reduce", "halving_doubling", halving_doubling_time)
register_closed_form("all_to_all", "direct", all_to_all_time)
register_closed_form("all_reduce", "star", star_all_reduce_time)
register_closed_form("reduce", "star", star_one_way_time)
register_closed_form("broadcast", "star", star_one_way_time)
register_closed_form("all_reduce", "hierarchical", hierarchical_all_reduce_time)
register_closed_form("all_gather", "hierarchical", hierarchical_all_gather_time)
