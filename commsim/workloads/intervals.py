"""Unions of time intervals: their length and the length two of them share.

What the replay's busy, exposed-communication and breakdown figures are made of.

>>> union_length([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)])
4.0
>>> overlap_length([(0.0, 2.0), (5.0, 6.0)], [(1.0, 5.5)])
1.5
"""

from __future__ import annotations

__all__ = ["merge_intervals", "overlap_length", "union_length"]


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Length covered by the union of ``intervals`` ((start, end) pairs, seconds), overlaps counted once."""
    return sum(end - start for start, end in merge_intervals(intervals))


def merge_intervals(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of ``intervals`` as sorted, disjoint intervals (touching ones joined)."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def overlap_length(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of the intersection of two unions of intervals."""
    left, right = merge_intervals(a), merge_intervals(b)
    i = j = 0
    total = 0.0
    while i < len(left) and j < len(right):
        lo = max(left[i][0], right[j][0])
        hi = min(left[i][1], right[j][1])
        if hi > lo:
            total += hi - lo
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return total

