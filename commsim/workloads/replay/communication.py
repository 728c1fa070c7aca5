"""Communication ops of the replay once matched: collectives on the collective engine (batched, tiled,
remembered by the fast path) and send/recv pairs on the network."""

from __future__ import annotations

import functools
import inspect
import math
from collections import defaultdict
from typing import Any

import numpy as np

from commsim.collectives import ALGORITHMS, CollectiveRun, build_schedule, tile
from commsim.collectives.hierarchical import ranks_per_node_of
from commsim.errors import ConfigError
from commsim.workloads.replay.plan import _Cohort
from commsim.workloads.trace import CollectiveOp

__all__ = ["DEFAULT_ALGORITHMS"]

DEFAULT_ALGORITHMS: dict[str, str] = {
    "all_reduce": "ring",
    "reduce_scatter": "ring",
    "all_gather": "ring",
    "all_to_all": "direct",
    "broadcast": "ring",
    "reduce": "ring",
}
"""What ``algorithm: auto`` runs, per collective, unless the replay is told otherwise."""

# trace-format names of algorithms the collective engine registers under another name, used when the
# engine has no algorithm of the trace's name for that op: the pipelined chain is the ring module's
# broadcast/reduce, and an all-reduce "tree" is NCCL's double binary tree
_ALIASES = {"pipeline": "ring", "tree": "double_binary_tree"}


class _Communication:
    """Running matched collectives and send/recv pairs (a part of :class:`~commsim.workloads.replay.Replay`)."""

    def algorithm_of(self, op: CollectiveOp) -> str:
        """The engine algorithm a trace collective runs (``auto`` and aliases resolved)."""
        algorithm = op.algorithm if op.algorithm != "auto" else self.algorithms[op.op]
        if (op.op, algorithm) not in ALGORITHMS:
            algorithm = _ALIASES.get(algorithm, algorithm)
        return algorithm

    def _check_algorithms(self) -> None:
        """Every collective of the trace must have its algorithm: say so before the run, not in it."""
        for program in self.trace.programs:
            for i, op in enumerate(program.ops):
                if op.kind == "collective" and (op.op, self.algorithm_of(op)) not in ALGORITHMS:
                    available = sorted(a for o, a in ALGORITHMS if o == op.op)
                    raise ConfigError(field=f"programs[{program.name}].ops[{i}].algorithm", value=op.algorithm,
                                      rule=f"is not an algorithm for {op.op}",
                                      fix=f"use auto or one of {', '.join(available)}")

    def _launch_groups(self, ready: list[dict[str, Any]]) -> None:
        batches: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
        remembered: dict[float, list[tuple[dict[str, Any], np.ndarray]]] = defaultdict(list)
        for state in ready:
            op = state["op"]
            key = (op.op, self.algorithm_of(op), float(op.bytes), len(state["group"]), op.root_index)
            timing = None if self.shortcuts is None else self.shortcuts.timing(_private_key(key, state["group"]))
            if timing is not None:
                remembered[timing[0]].append((state, timing[1]))
            else:
                batches[key].append(state)
        for done, states in remembered.items():
            self._replay_timing(done, states)
        for (kind, algorithm, nbytes, size, root), batch in batches.items():
            self._launch_batch(kind, algorithm, nbytes, size, root, batch)

    def _replay_timing(self, done: float, states: list[tuple[dict[str, Any], np.ndarray]]) -> None:
        """Finish collectives on private links as their remembered runs did (see ``fast``): all that take
        ``done`` seconds on one event, each member at its remembered end."""
        begun = self.env.now

        def finished(_ev: Any) -> None:
            for state, ends in states:
                self._group_finished(state, self.env.now, begun + ends, begun)

        self.env.timeout(done).callbacks.append(finished)

    def _schedule_of(self, kind: str, algorithm: str, nbytes: float, size: int, root: int,
                     nodes: list[str]) -> Any:
        """The schedule of one group's collective (``nodes``: its members' device nodes)."""
        params: dict[str, Any] = {"root": root} if kind in ("broadcast", "reduce") else {}
        accepted = _parameters(kind, algorithm)
        if self.channels > 1 and "channels" in accepted:
            params["channels"] = self.channels
        if "ranks_per_node" in accepted:
            params["ranks_per_node"] = ranks_per_node_of(self.sim.topology, nodes[:size])
        params.update(self.algorithm_options.get(algorithm, {}))
        return build_schedule(kind, algorithm, size, nbytes, **params)

    def _launch_batch(self, kind: str, algorithm: str, nbytes: float, size: int, root: int,
                      states: list[dict[str, Any]]) -> None:
        """Run the same collective for several ready groups as one tiled schedule."""
        nodes = [self.devices[r] for state in states for r in state["group"]]
        key = (kind, algorithm, nbytes, size, root, len(states))
        schedule = self._schedules.get(key)
        if schedule is None:
            # the same collective recurs every layer and micro-batch: build (and tile) it once
            schedule = tile(self._schedule_of(kind, algorithm, nbytes, size, root, nodes), len(states))
            self._schedules[key] = schedule
        begun = self.env.now
        run: CollectiveRun | None = None

        def copy_done(copy: int, now: float) -> None:
            assert run is not None
            ends = run.rank_end[copy * size:(copy + 1) * size]
            if self.shortcuts is not None:
                self.shortcuts.remember(_private_key(key[:5], states[copy]["group"]), now - begun, ends - begun)
            self._group_finished(states[copy], now, ends, begun)

        run = CollectiveRun(self.sim, schedule, nodes, self.collective, label=f"{kind}/{algorithm}",
                            copies=len(states), on_copy_done=copy_done)
        run.start()

    def _group_finished(self, state: dict[str, Any], now: float, ends: np.ndarray, begun: float) -> None:
        group = state["group"]
        for cohort_index, i in state["waiting"]:
            cohort = self.cohorts[cohort_index]
            if self._recorded[cohort_index]:
                # per-rank times only matter for the spans recorded (the summary uses the cohort's own times)
                mine, theirs = self._members(cohort, group)
                ends_c = cohort.rank_end.setdefault(i, np.full(len(cohort.ranks), math.nan))
                # a cohort may hold members of several groups, each beginning when its own members are there
                began_c = cohort.rank_began.setdefault(i, np.full(len(cohort.ranks), math.nan))
                ends_c[mine] = ends[theirs]
                began_c[mine] = begun
            if not cohort.launched[i] >= begun:
                cohort.launched[i] = begun
            if state["last"] != (cohort_index, i):
                cohort.released_by[i] = state["last"]
            cohort.pending_parts[i] -= 1
            if cohort.pending_parts[i] == 0:
                self._finish(cohort, i)

    def _members(self, cohort: _Cohort, group: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Positions in ``cohort`` and in ``group`` of the ranks they share."""
        key = (cohort.index, group)
        found = self._member_positions.get(key)
        if found is None:
            where = {rank: k for k, rank in enumerate(cohort.ranks.tolist())}
            pairs = [(where[rank], g) for g, rank in enumerate(group) if rank in where]
            found = (np.array([k for k, _ in pairs], dtype=np.int64), np.array([g for _, g in pairs], dtype=np.int64))
            self._member_positions[key] = found
        return found

    # ------------------------------------------------------------------ send / recv

    def _launch_pairs(self, pairs: list[tuple[int, int, int, int, int, int, float, int]]) -> None:
        srcs = [self.cohorts[p[0]].devices[p[2]] for p in pairs]
        dsts = [self.cohorts[p[3]].devices[p[5]] for p in pairs]
        routes = self.sim.network.routes(srcs, dsts, [p[7] for p in pairs])
        sizes = np.array([p[6] for p in pairs])
        now = self.env.now
        for c, i in {(p[0], p[1]) for p in pairs} | {(p[3], p[4]) for p in pairs}:
            self.cohorts[c].launched[i] = now

        def delivered(idx: np.ndarray) -> None:
            now = self.env.now
            for j in idx.tolist():
                sc, si, sk, rc, ri, rk, _, _ = pairs[j]
                for c, i, k, partner in ((sc, si, sk, (rc, ri)), (rc, ri, rk, (sc, si))):
                    cohort = self.cohorts[c]
                    cohort.rank_end[i][k] = now
                    if self.cohorts[partner[0]].start[partner[1]] > cohort.start[i]:
                        cohort.released_by[i] = partner
                    cohort.pending_parts[i] -= 1
                    if cohort.pending_parts[i] == 0:
                        self._finish(cohort, i)

        self.sim.network.send(routes, sizes, label="p2p", on_delivered=delivered,
                              record=len(pairs) <= 64 and self._record_flows)


def _checked_options(options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``algorithm_options`` after checking that each names a registered algorithm and parameters it takes."""
    for name, given in options.items():
        builders = [(kind, algorithm) for kind, algorithm in ALGORITHMS if algorithm == name]
        if not builders:
            raise ConfigError(field="algorithm_options", value=name, rule="is not a registered collective algorithm",
                              fix=f"use one of {', '.join(sorted({a for _, a in ALGORITHMS}))}")
        for key in given:
            accepted = {p for kind, algorithm in builders for p in _parameters(kind, algorithm)} - {"n", "nbytes"}
            if key not in accepted:
                raise ConfigError(field=f"algorithm_options.{name}", value=key, rule=f"is not a parameter of {name}",
                                  fix=f"use one of {', '.join(sorted(accepted)) or '(none)'}")
    return {name: dict(given) for name, given in options.items()}


@functools.cache
def _parameters(kind: str, algorithm: str) -> Any:
    """The parameters a registered schedule builder accepts (looked up once per algorithm)."""
    return inspect.signature(ALGORITHMS[(kind, algorithm)]).parameters


def _private_key(key: tuple[Any, ...], group: tuple[int, ...]) -> tuple[Any, ...]:
    """(kind, algorithm, bytes, size, root) and the group: what a remembered private collective is found by."""
    return (*key, group)
