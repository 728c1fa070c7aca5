"""The kernel's hooks into SimPy's clock: end-of-instant callbacks and the one pending completion wake-up."""

from __future__ import annotations

import simpy

from commsim.kernel import FluidKernel, InstantEndEvent
from commsim.kernel.clock import CompletionClock


def test_instant_end_event_runs_after_every_event_of_its_instant():
    env = simpy.Environment()
    order: list[str] = []

    def proc():
        yield env.timeout(1.0)
        InstantEndEvent(env, lambda _e: order.append(f"end@{env.now}"))
        order.append("first")
        yield env.timeout(0.0)  # scheduled after the end-of-instant event, still runs before it
        order.append("second")
        yield env.timeout(1.0)
        order.append("next instant")

    env.process(proc())
    env.run()
    assert order == ["first", "second", "end@1.0", "next instant"]


def test_at_instant_end_and_changes_pending():
    env = simpy.Environment()
    kernel = FluidKernel(env)
    link = kernel.add_resources([1.0], ["link"])
    seen: list[bool] = []
    kernel.start([1.0], [[int(link[0])]])
    assert kernel.changes_pending
    kernel.at_instant_end(lambda: seen.append(kernel.changes_pending))
    env.run()
    assert seen == [False] and env.now == 1.0  # the kernel's flush was queued first and had run


def test_completion_clock_keeps_one_wake_up_and_drops_superseded_ones():
    env = simpy.Environment()
    woken: list[float] = []
    clock = CompletionClock(env, lambda e: woken.append(env.now) if clock.is_current(e) else None)
    clock.wake_at(5.0)
    clock.wake_at(3.0)  # earlier: the 5 s wake-up is superseded
    clock.wake_at(4.0)  # later than the pending 3 s one: kept, the early wake-up is harmless
    env.run()
    assert woken == [3.0] and env.now == 5.0  # the stale 5 s timeout still pops, but wakes nobody
    env2 = simpy.Environment()
    clock2 = CompletionClock(env2, lambda e: None)
    clock2.wake_at(5.0)
    clock2.wake_at(float("inf"))  # nothing can complete: the stale wake-up leaves the queue
    env2.run()
    assert env2.now == 0.0
