"""Apply faults to a running simulation at their times."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from commsim.config import config_error_from
from commsim.errors import ConfigError
from commsim.faults.model import DeviceFailure, Fault, LinkDegraded, LinkDown, LinkUp, Straggler

if TYPE_CHECKING:
    from commsim.simulation import Simulation

__all__ = ["FaultInjector"]

_FAULT = TypeAdapter(Fault)
_KINDS = {model.model_fields["kind"].default: model for model in (LinkDown, LinkUp, LinkDegraded, DeviceFailure,
                                                                  Straggler)}


class FaultInjector:
    """Schedules faults on a :class:`~commsim.simulation.Simulation`.

    Faults are checked against the topology when scheduled (unknown nodes or
    links are errors then, not in the middle of a run).
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.applied: list[Any] = []
        self.scheduled: list[Any] = []
        """Every fault scheduled so far (a replay's shortcuts are exact only without any)."""

    def schedule(self, faults: Iterable[Any], *, field: str = "faults") -> None:
        """Schedule faults (models or mappings such as ``{"kind": "link_down", ...}``)."""
        for i, fault in enumerate(faults):
            if isinstance(fault, dict):
                # a known kind is validated by its own model: error paths then name the field as written
                # (faults[0].factor, not faults[0].link_degraded.factor) and misspellings list the fields
                kind = fault.get("kind")
                model = _KINDS.get(kind) if isinstance(kind, str) else None
                try:
                    fault = model.model_validate(fault) if model else _FAULT.validate_python(fault)
                except ValidationError as exc:
                    raise config_error_from(exc, model, prefix=f"{field}[{i}]") from None
            self._check(fault, f"{field}[{i}]")
            self.scheduled.append(fault)
            self.sim.env.process(self._apply_at(fault))

    def _check(self, fault: Any, field: str) -> None:
        topo = self.sim.topology
        if isinstance(fault, (LinkDown, LinkUp, LinkDegraded)):
            a, b = fault.link
            if not topo.graph.has_edge(a, b):
                raise ConfigError(field=f"{field}.link", value=[a, b], rule="is not a link of the topology",
                                  fix="name two directly linked nodes, e.g. "
                                      f"{list(next(iter(topo.graph.edges)))}")
        else:
            if fault.device not in self.sim.devices:
                raise ConfigError(field=f"{field}.device", value=fault.device, rule="is not a device of the topology",
                                  fix=f"use one of {', '.join(list(self.sim.devices)[:6])}...")

    def _apply_at(self, fault: Any):
        env = self.sim.env
        yield env.timeout(max(fault.at - env.now, 0.0))
        self.applied.append(fault)
        net = self.sim.network
        recorder = self.sim.recorder
        if isinstance(fault, LinkDown):
            net.fail_link(*fault.link)
            if fault.duration:
                yield env.timeout(fault.duration)
                net.restore_link(*fault.link)
        elif isinstance(fault, LinkUp):
            net.restore_link(*fault.link)
        elif isinstance(fault, LinkDegraded):
            net.degrade_link(*fault.link, fault.factor)
            if fault.duration:
                yield env.timeout(fault.duration)
                net.degrade_link(*fault.link, 1.0)
        elif isinstance(fault, DeviceFailure):
            device = self.sim.devices[fault.device]
            device.fail()
            recorder.event(env.now, "device_failure", fault.device)
            if fault.duration:
                yield env.timeout(fault.duration)
                device.repair()
                recorder.event(env.now, "device_repair", fault.device)
        elif isinstance(fault, Straggler):
            device = self.sim.devices[fault.device]
            device.set_slowdown(fault.slowdown)
            recorder.event(env.now, "straggler", fault.device, f"slowdown {fault.slowdown:g}")
            if fault.duration:
                yield env.timeout(fault.duration)
                device.set_slowdown(1.0)
                recorder.event(env.now, "straggler_end", fault.device)
