"""The hierarchical all-gather and the star reduce / broadcast: who sends what to whom, and their volumes."""

from __future__ import annotations

import numpy as np
import pytest

from commsim.collectives import build_schedule, simulate_collective
from commsim.errors import ConfigError


def _received(schedule, n: int) -> np.ndarray:
    got = np.zeros(n)
    for step in schedule.steps:
        np.add.at(got, step.dst, step.nbytes)
    return got


@pytest.mark.parametrize(("n", "local"), [(12, 4), (8, 2), (6, 6), (6, 1)])
def test_hierarchical_all_gather_delivers_every_payload_to_every_rank(n: int, local: int) -> None:
    s = build_schedule("all_gather", "hierarchical", n, 10.0 * n, ranks_per_node=local)
    s.check()
    assert np.allclose(_received(s, n), (n - 1) * 10.0)  # (n - 1) P arrive at every rank
    assert s.wire_bytes == pytest.approx(n * (n - 1) * 10.0)  # the ring all-gather's volume
    inter = [st for st in s.steps if st.phase.startswith("inter")]
    assert len(inter) == n // local - 1
    assert all((st.src // local != st.dst // local).all() for st in inter)  # rails cross servers
    assert all(((st.src % local) == (st.dst % local)).all() for st in inter)  # on the same rail
    intra = [st for st in s.steps if st.phase.startswith("intra")]
    assert all((st.src // local == st.dst // local).all() for st in intra) and len(intra) == local - 1


def test_hierarchical_all_gather_crosses_the_fabric_less_than_the_ring() -> None:
    topo = "rail_optimized:2,4,50GB/s"
    hier = simulate_collective(topo, "all_gather", 64 * 2**20, algorithm="hierarchical")
    ring = simulate_collective(topo, "all_gather", 64 * 2**20, algorithm="ring")
    assert hier.wire_bytes == pytest.approx(ring.wire_bytes)
    assert hier.time < ring.time  # (M - 1) P per rank over the NICs instead of the ring's crossings


@pytest.mark.parametrize("root", [0, 2, 3])
def test_star_reduce_and_broadcast_are_the_star_all_reduces_halves(root: int) -> None:
    push = build_schedule("reduce", "star", 4, 100.0, root=root)
    reply = build_schedule("broadcast", "star", 4, 100.0, root=root)
    both = build_schedule("all_reduce", "star", 4, 100.0, root=root)
    assert (push.steps[0].dst == root).all() and root not in push.steps[0].src.tolist()
    assert (reply.steps[0].src == root).all() and sorted(reply.steps[0].dst.tolist()) == sorted(
        set(range(4)) - {root})
    assert push.steps[0].reduce and not reply.steps[0].reduce
    for mine, whole in ((push.steps[0], both.steps[0]), (reply.steps[0], both.steps[1])):
        assert (mine.src == whole.src).all() and (mine.dst == whole.dst).all()
    assert push.wire_bytes == reply.wire_bytes == 300.0  # (n - 1) S through the root's link each way
    assert build_schedule("reduce", "star", 1, 100.0).steps == []


def test_bad_layouts_and_roots_get_clear_errors() -> None:
    with pytest.raises(ConfigError, match="ranks_per_node"):
        build_schedule("all_gather", "hierarchical", 6, 60.0, ranks_per_node=4)
    with pytest.raises(ConfigError, match="root"):
        build_schedule("broadcast", "star", 4, 10.0, root=4)
