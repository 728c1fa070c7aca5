"""Unions of intervals (commsim.workloads.intervals): lengths equal a count of covered unit cells."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from commsim.workloads.intervals import merge_intervals, overlap_length, union_length

# intervals on integer bounds: the length of a union is then the number of unit cells [k, k+1) it covers
_interval = st.tuples(st.integers(0, 40), st.integers(0, 12)).map(lambda p: (float(p[0]), float(p[0] + p[1])))
_intervals = st.lists(_interval, max_size=12)


def _cells(intervals: list[tuple[float, float]]) -> set[int]:
    return {k for start, end in intervals for k in range(int(start), int(end))}


@given(_intervals)
def test_union_length_counts_each_covered_instant_once(intervals: list[tuple[float, float]]) -> None:
    assert union_length(intervals) == len(_cells(intervals))


@given(_intervals, _intervals)
def test_overlap_length_is_the_shared_cover(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> None:
    assert overlap_length(a, b) == len(_cells(a) & _cells(b))
    assert overlap_length(a, b) == overlap_length(b, a)


@given(_intervals)
def test_merged_intervals_are_sorted_disjoint_and_cover_the_same(intervals: list[tuple[float, float]]) -> None:
    merged = merge_intervals(intervals)
    assert all(left[1] < right[0] for left, right in pairwise(merged))
    assert _cells(merged) == _cells(intervals)


def test_touching_intervals_are_joined() -> None:
    assert merge_intervals([(2.0, 3.0), (0.0, 1.0), (1.0, 2.0)]) == [(0.0, 3.0)]
