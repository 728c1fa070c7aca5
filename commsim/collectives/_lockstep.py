"""Lockstep runs of collective steps: many whole steps at once, when nothing else can happen meanwhile.

A ring all-reduce on an idle switch is ``2(n - 1)`` steps in which all ``n``
transfers start together, run alone on links of their own and arrive together,
and the arrival of a step is what starts the next one. Simulating each step
through the network and the kernel costs a few dozen numpy calls on ``n``-long
arrays, which at 4,096 ranks is most of the run. When the step's flows would run
alone (:meth:`~commsim.network.network.Network.solo`) and no other event is
scheduled before they arrive, their times follow from the kernel's own
arithmetic, so a chain of such steps is worked out with a few float operations
per step, up to the next event anything else scheduled. One wake-up is
scheduled at the last arrival; there the byte counters, carried bytes, kernel
statistics and usage log are brought up to date as if every step had been sent,
and the last step completes the usual way (which launches the next steps, and
possibly the next chain). Whatever ends a chain (a shared link, a reduction
charged to a device, different arrival times, another event in the queue)
hands the step to the usual path, so results are the same either way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from commsim.collectives._executor import CollectiveRun
    from commsim.network.network import SoloTransfer

__all__ = ["Lockstep"]

_MAX_SKIP_DOUBLINGS = 6  # after k failed chains in a row, the next 2^k - 1 whole steps go the usual way


class Lockstep:
    """Runs chains of whole steps of one :class:`CollectiveRun` without sending them (see the module)."""

    def __init__(self, run: CollectiveRun) -> None:
        self.run = run
        self._next: dict[int, int] = {}
        self._waiting: dict[int, tuple[np.ndarray, bool]] = {}
        self._misses = 0
        self._skips = 0
        self.chains = 0  # chains run so far
        self.steps = 0  # steps they covered

    def worth_trying(self) -> bool:
        """Whether a whole step ready now may start a chain (else it is launched at once, as usual).

        Not while backing off after failed chains, nor when the kernel already has changes to
        solve at this instant: waiting for the end of the instant would only cost a second
        recomputation there.
        """
        if self._skips:
            self._skips -= 1
            return False
        return not self.run.sim.kernel.changes_pending

    def launch(self, k: int) -> None:
        """Step ``k`` is ready as a whole now: run a chain from it, or hand it to the usual launch."""
        run = self.run
        size = len(run.schedule.steps[k])
        chain, delay = self._plan(k)
        if not chain or delay is None:
            self._misses = min(self._misses + 1, _MAX_SKIP_DOUBLINGS)
            self._skips = (1 << self._misses) - 1
            run._launch(k, run._all(size), may_chain=False)
            return
        self._misses = 0
        for j, *_ in chain:
            run._launched[j] = len(run.schedule.steps[j])
            run._counters.pop(j, None)
        self.chains += 1
        self.steps += len(chain)
        run.sim.env.timeout(delay).callbacks.append(lambda _ev: self._land(chain))

    def _plan(self, k: int) -> tuple[list[tuple[int, SoloTransfer, float, float, float]], float | None]:
        """The chain of steps from ``k`` that arrive before the next queued event, and the delay to its end."""
        run = self.run
        env = run.sim.env
        now = env.now
        horizon = env.peek()
        if not horizon > now:
            return [], None
        config = run.config
        steps = run.schedule.steps
        latency = config.step_latency
        solos: dict[tuple[tuple[int, int, int], int], SoloTransfer | None] = {}
        copy_left = run._copy_left.copy() if run._on_copy_done is not None else None
        left = run._left
        chain: list[tuple[int, SoloTransfer, float, float, float]] = []
        t = now
        j = k
        while True:
            step = steps[j]
            if step.reduce and config.reduction:
                break  # the reduction is a kernel activity on the device
            key = (run._route_key(step), id(step.nbytes))
            if key not in solos:
                solos[key] = run.sim.network.solo(run._route_set(step), step.nbytes / config.bandwidth_efficiency,
                                                  priority=config.priority)
            solo = solos[key]
            if solo is None:
                break
            sent = t + latency if latency > 0 else t
            end = run.sim.kernel.solo_completion(sent, solo.shortest, solo.longest)
            if end is None:
                break
            arrival = end + solo.latency if solo.latency > 0 else end
            if not arrival < horizon:
                break
            chain.append((j, solo, sent, end, arrival))
            t = arrival
            left -= len(step)
            if copy_left is not None:
                before = copy_left.copy()
                copy_left -= np.bincount(step.dst // run._copy_size, minlength=copy_left.shape[0])
                if np.any((before > 0) & (copy_left == 0)):
                    break  # a group finishes: the usual completion of this step tells it
            if left == 0:
                break
            j = self._next_whole(j)
            if j < 0:
                break
        return chain, (_exact_delay(now, chain[-1][4]) if chain else None)

    def _next_whole(self, k: int) -> int:
        """The step that the arrival of all of step ``k`` makes ready as a whole, or -1."""
        nxt = self._next.get(k)
        if nxt is None:
            run = self.run
            steps = run.schedule.steps
            targets = {k2 for k2, _, _ in run._dependents[k]}
            nxt = -1
            if len(targets) == 1:
                k2 = targets.pop()
                step = steps[k2]
                if len(step) and all(d.step == k for d in step.deps) and self._all_wait(step.waits):
                    nxt = k2
            self._next[k] = nxt
        run = self.run
        if nxt >= 0 and (run._launched[nxt] or nxt in run._counters):
            return -1
        return nxt

    def _all_wait(self, waits: np.ndarray) -> bool:
        """Whether every entry waits for something (steps share their ``waits`` arrays)."""
        key = id(waits)
        if key not in self._waiting:
            self._waiting[key] = (waits, bool(waits.all()))  # the array kept: its id stays its own
        return self._waiting[key][1]

    def _land(self, chain: list[tuple[int, SoloTransfer, float, float, float]]) -> None:
        """At the last arrival: account every step of the chain, then complete the last one as usual."""
        run = self.run
        steps = run.schedule.steps
        group: list[tuple[float, float]] = []
        for i, (_, solo, sent, end, _) in enumerate(chain):
            run.wire_bytes += solo.total
            group.append((sent, end))
            if i + 1 == len(chain) or chain[i + 1][1] is not solo:
                run.sim.network.account_solo(solo, group)
                group = []
        latest: dict[tuple[int, int], tuple[int, np.ndarray, np.ndarray, float]] = {}
        for i, (j, _, _, _, arrival) in enumerate(chain[:-1]):
            step = steps[j]
            latest[(id(step.src), id(step.dst))] = (i, step.src, step.dst, arrival)
            run._left -= len(step)
            if run._on_copy_done is not None:
                run._copy_left -= np.bincount(step.dst // run._copy_size, minlength=run._copy_left.shape[0])
        # arrivals only move later, so the last step of each (src, dst) pattern sets what it touches
        for _, src, dst, arrival in sorted(latest.values(), key=lambda item: item[0]):
            run.rank_end[dst] = arrival
            run.rank_end[src] = np.fmax(run.rank_end[src], arrival)
        last = chain[-1][0]
        run._complete(last, run._all(len(steps[last])))


def _exact_delay(now: float, when: float) -> float | None:
    """A delay that SimPy turns into exactly ``when`` (``now + delay == when``), or None."""
    delay = when - now
    for _ in range(8):
        reached = now + delay
        if reached == when:
            return delay
        delay = math.nextafter(delay, math.inf if reached < when else -math.inf)
    return None
