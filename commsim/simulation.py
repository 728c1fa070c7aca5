"""A simulation: one topology with its devices, network and faults on one clock.

>>> from commsim.network.generators import switch
>>> sim = Simulation(switch(n=2, bandwidth="10 GB/s", latency="1 us"))
>>> def job():
...     yield sim.devices["gpu0"].compute(flops=1e12, nbytes=1e9)
...     yield sim.network.transfer("gpu0", "gpu1", 1e9)
>>> _ = sim.process(job())
>>> result = sim.run()
>>> round(result.makespan, 6)
0.101446
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy
from simpy.core import EmptySchedule

from commsim.devices.device import Device
from commsim.errors import ConfigError, StallError
from commsim.faults.injector import FaultInjector
from commsim.kernel import FluidKernel
from commsim.network.network import Network
from commsim.network.routing import RoutingPolicy
from commsim.network.topology import Topology
from commsim.results.recorder import Recorder

if TYPE_CHECKING:
    from commsim.results.result import Result

__all__ = ["Simulation"]


class _Clock(simpy.Environment):
    """A SimPy environment that tells how many events are queued.

    The simulation compares the count with the fault injector's pending events to
    see when only faults are left, so the run ends when the workload ends. (The
    queue is read directly, as the fluid kernel does to drop superseded wake-ups.)
    """

    @property
    def queued(self) -> int:
        """Events waiting in the queue."""
        return len(self._queue)


class Simulation:
    """Everything one run needs, wired together.

    Parameters
    ----------
    topology:
        The cluster (checked on construction).
    seed:
        Seeds the ECMP hash and ``self.rng``; same seed, same results.
    routing:
        ``"ecmp"`` or ``"shortest"``.
    record_usage:
        Keep resource-load changes for link-utilisation tables (off for huge runs).
    reroute:
        Move flows off failed links when another route exists.
    verify:
        Check every rate recomputation against a full solve (tests).
    name:
        Name of the run in results.
    unbounded_memory:
        Give every device an unbounded memory pool (:class:`~commsim.devices.MemoryPool`
        with no capacity): nothing is refused or swapped, and each pool's peak is
        what the run needs.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        seed: int = 0,
        routing: RoutingPolicy = "ecmp",
        record_usage: bool = True,
        reroute: bool = True,
        verify: bool = False,
        name: str | None = None,
        unbounded_memory: bool = False,
    ) -> None:
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(field="seed", value=seed, rule="is not a whole number of at least 0",
                              fix="give a seed such as 0 or 42")
        topology.check()
        self.topology = topology
        self.name = name or topology.name
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.env = _Clock()
        self.recorder = Recorder()
        self.kernel = FluidKernel(self.env, record_usage=record_usage, verify=verify)
        self.devices: dict[str, Device] = {
            node: Device(node, topology.device_spec(node), self.kernel, self.recorder,
                         unbounded_memory=unbounded_memory)
            for node in topology.devices
        }
        self.network = Network(self.kernel, topology, routing=routing, seed=seed, recorder=self.recorder,
                               reroute=reroute)
        self.faults = FaultInjector(self)
        self._nominal = None

    @property
    def now(self) -> float:
        """Current simulated time, seconds."""
        return self.env.now

    def device(self, which: str | int) -> Device:
        """A device by node name or by rank (index in ``topology.devices``)."""
        if isinstance(which, (int, np.integer)):
            return self.devices[self.topology.devices[int(which)]]
        return self.devices[which]

    def process(self, generator: Generator[Any, Any, Any]) -> simpy.Process:
        """Run a SimPy generator as a process of this simulation."""
        return self.env.process(generator)

    def schedule_faults(self, faults: Iterable[Any]) -> None:
        """Schedule fault models or mappings (see :mod:`commsim.faults`)."""
        self.faults.schedule(faults)

    def run(self, until: float | None = None, *, on_stall: str = "raise") -> Result:
        """Run until nothing is left to do (or ``until`` seconds) and return the result.

        When activities remain that can never finish, ``on_stall="raise"``
        raises :class:`~commsim.errors.StallError` naming them (the partial result
        is attached); ``"report"`` returns the result with the stalls in ``events``.
        """
        self.advance(until, on_stall=on_stall)
        return self.result()

    def advance(self, until: float | None = None, *, on_stall: str = "raise") -> None:
        """Run like :meth:`run` without building the result tables (callers that only need times)."""
        if self._nominal is None:
            self._nominal = self.kernel.capacity(np.arange(self.kernel.resource_count)).copy()
        if until is None and self.faults.pending:
            self._run_workload()
        else:
            self.env.run(until=until)
        if until is None:
            self.faults.finish()
        stalled = self.kernel.running() if until is None else self.kernel.stalled()
        descriptions = self.kernel.describe(stalled) if stalled.size else []
        for text in descriptions:
            self.recorder.event(self.env.now, "stall", text, "can never finish")
        if descriptions and until is None and on_stall == "raise":
            raise StallError(self.env.now, descriptions, self.result(), self.failed_components())

    def failed_components(self) -> list[str]:
        """The links down and devices failed now, as ``link a-b`` and ``device d`` (for stall reports)."""
        links = [f"link {a}-{b}" for a, b in self.network.down_links()]
        return links + [f"device {name}" for name, device in self.devices.items() if device.failed]

    def _run_workload(self) -> None:
        """Step until the workload is done: stop when only fault events remain and nothing runs.

        A stalled activity keeps the run going, since a later repair may free it.
        """
        env = self.env
        while True:
            if env.queued <= self.faults.pending and not self.kernel.running().size:
                return
            try:
                env.step()
            except EmptySchedule:
                return

    def result(self) -> Result:
        """The result tables as of now."""
        import pandas as pd  # the tables need pandas; a run that never builds them does not

        from commsim.results.result import Result, usage_table

        nominal = self._nominal if self._nominal is not None else self.kernel.capacity(
            np.arange(self.kernel.resource_count))
        times, res, load = self.kernel.usage_log()
        usage = usage_table(times, res, load, self.kernel.resource_names, nominal, self.env.now)
        rows = []
        for name, device in self.devices.items():
            rows += [(name, t, b) for t, b in device.memory.timeline]
        memory = pd.DataFrame(rows, columns=["device", "time", "in_use"])
        return Result.from_records(self.name, self.env.now, self.recorder, usage, memory, self._metrics(nominal))

    def _metrics(self, nominal: np.ndarray) -> dict[str, tuple[float, str]]:
        makespan = self.env.now
        stats = self.kernel.stats
        carried = self.kernel.carried()
        links = self.network.link_resources()
        busiest = float((carried[links] / np.maximum(nominal[links], 1e-300)).max()) if links.size else 0.0
        metrics = {
            "makespan": (makespan, "s"),
            "bytes_sent": (self.network.bytes_sent, "B"),
            "bytes_delivered": (self.network.bytes_delivered, "B"),
            "flows_recorded": (float(len(self.recorder.flows)), "count"),
            "activities": (float(stats.activities_started), "count"),
            "busiest_link_utilisation": (busiest / makespan if makespan > 0 else 0.0, "fraction"),
            "rate_recomputations": (float(stats.flushes), "count"),
        }
        if not math.isfinite(metrics["busiest_link_utilisation"][0]):
            metrics["busiest_link_utilisation"] = (0.0, "fraction")
        return metrics
