"""Rendezvous of the replay: collectives start when their whole group has arrived, sends and receives
when both sides are posted; what became ready at one instant starts as one batch."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from commsim.kernel import InstantEndEvent
from commsim.workloads.replay.plan import _Cohort
from commsim.workloads.trace import CollectiveOp

__all__: list[str] = []


class _Matching:
    """Matching collectives and send/recv pairs across ranks (a part of :class:`~commsim.workloads.replay.Replay`)."""

    def _groups(self, cohort: _Cohort, i: int, op: CollectiveOp) -> list[tuple[int, ...]]:
        # the groups follow from the cohort and the group spec alone, which thousands of ops share
        key = (cohort.index, op.group if isinstance(op.group, str) else tuple(op.group))
        found = self._groups_of.get(key)
        if found is None:
            seen: dict[tuple[int, ...], None] = {}
            for rank in cohort.ranks.tolist():
                seen[tuple(self.index.resolve_group(rank, op.group))] = None
            found = self._groups_of[key] = list(seen)
        return found

    def _arrive(self, cohort: _Cohort, i: int, op: CollectiveOp) -> None:
        groups = self._groups(cohort, i, op)
        cohort.pending_parts[i] = len(groups)
        members = set(cohort.ranks.tolist())
        channel, seq = cohort.plan.issue[i]
        for group in groups:
            arriving = [r for r in group if r in members]
            key = (channel, group, seq)
            state = self._rendezvous.setdefault(key, {"arrived": 0, "waiting": [], "op": op,
                                                      "last": (cohort.index, i)})
            state["arrived"] += len(arriving)
            state["waiting"].append((cohort.index, i))
            state["last"] = (cohort.index, i)
            if state["arrived"] == len(group):
                del self._rendezvous[key]
                state["group"] = group
                self._ready_groups.append(state)
                self._request_flush()

    def _post(self, cohort: _Cohort, i: int, op: Any) -> None:
        n = len(cohort.ranks)
        cohort.pending_parts[i] = n
        cohort.rank_end[i] = np.full(n, math.nan)
        key = (cohort.index, op.peer)
        peers = self._peers_of.get(key)
        if peers is None:
            peers = self._peers_of[key] = [self.index.resolve_peer(rank, op.peer) for rank in cohort.ranks.tolist()]
        for k, rank in enumerate(cohort.ranks.tolist()):
            peer = peers[k]
            src, dst = (rank, peer) if op.kind == "send" else (peer, rank)
            seq = self._p2p_position(cohort, rank)[i]
            other = "recv" if op.kind == "send" else "send"
            partner = self._posted.pop((other, src, dst, op.tag, seq), None)
            if partner is None:
                self._posted[(op.kind, src, dst, op.tag, seq)] = (cohort.index, i, k, float(op.bytes))
                continue
            mine = (cohort.index, i, k)
            send_side, recv_side = (mine, partner[:3]) if op.kind == "send" else (partner[:3], mine)
            self._ready_pairs.append((*send_side, *recv_side, float(op.bytes), src * self.trace.ranks + dst))
            self._request_flush()

    def _p2p_position(self, cohort: _Cohort, rank: int) -> dict[int, int]:
        """Send/recv op -> its position among ``rank``'s ops of the same kind, peer and tag, in list order.

        The trace rules match the n-th send from s to d with tag t with the n-th such recv in list
        order, whatever order the streams post them in.
        """
        key = (cohort.program, rank)
        table = self._p2p_order.get(key)
        if table is None:
            table = {}
            count: dict[tuple[str, int, int], int] = defaultdict(int)
            ops = cohort.plan.ops
            peers: dict[Any, int] = {}
            for j in cohort.plan.p2p:
                peer = peers.get(ops[j].peer)
                if peer is None:
                    peer = peers[ops[j].peer] = self.index.resolve_peer(rank, ops[j].peer)
                channel = (ops[j].kind, peer, ops[j].tag)
                table[j] = count[channel]
                count[channel] += 1
            self._p2p_order[key] = table
        return table

    def _request_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            InstantEndEvent(self.env, self._flush)

    def _flush(self, _event: Any = None) -> None:
        """Start every group and pair that became ready at this instant, batched."""
        self._flush_pending = False
        groups, self._ready_groups = self._ready_groups, []
        pairs, self._ready_pairs = self._ready_pairs, []
        if groups:
            self._launch_groups(groups)
        if pairs:
            self._launch_pairs(pairs)
