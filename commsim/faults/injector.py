"""Apply faults to a running simulation at their times.

Overlapping faults on one link or device combine: the link (or device) is down
while *any* outage covering it lasts — the union of the outages — and comes back
only when the last one has ended. ``link_up`` ends the open-ended (no
``duration``) outages of its link; timed outages still end at their own time.
Overlapping degradations apply the worst factor, overlapping stragglers the
largest slowdown.

Fault events are background events: the run ends when the workload ends, and
faults whose time comes later are listed in :attr:`FaultInjector.not_reached`
instead of stretching the makespan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from commsim.config import config_error_from
from commsim.errors import ConfigError
from commsim.faults.model import DeviceFailure, Fault, LinkDegraded, LinkDown, LinkUp, Straggler

if TYPE_CHECKING:
    from commsim.network.topology import Topology
    from commsim.simulation import Simulation

__all__ = ["FaultInjector", "accepted_faults", "acts_on", "check_faults", "faults_on", "parse_faults"]

_FAULT = TypeAdapter(Fault)
_KINDS = {model.model_fields["kind"].default: model for model in (LinkDown, LinkUp, LinkDegraded, DeviceFailure,
                                                                  Straggler)}
_LINK_FAULTS = (LinkDown, LinkUp, LinkDegraded)


def parse_faults(faults: Iterable[Any], *, field: str = "faults") -> list[Any]:
    """Fault models from models or mappings such as ``{"kind": "link_down", ...}``."""
    out = []
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
        out.append(fault)
    return out


def acts_on(fault: Any, topology: Topology) -> bool:
    """Whether ``topology`` has the link (both directions) or the device ``fault`` names."""
    if isinstance(fault, _LINK_FAULTS):
        a, b = fault.link
        return topology.has_link(a, b) and topology.has_link(b, a)
    return fault.device in topology.devices


def faults_on(faults: Iterable[Any], topology: Topology) -> list[Any]:
    """The faults (models) that name a link or device of ``topology``.

    For drivers that run one set of faults on several networks (a study's
    settings of different sizes): each network gets the faults it has a target for.
    """
    return [fault for fault in faults if acts_on(fault, topology)]


def accepted_faults(faults: Iterable[Any], accepts: Callable[[Any], bool], *, rule: str, fix: str,
                    field: str = "faults") -> list[Any]:
    """The faults as models, or a :class:`ConfigError` for the first one ``accepts`` refuses.

    For drivers that apply only some kinds of fault (a study that models links but
    not devices): a fault they cannot apply is refused with ``rule`` and ``fix``, never
    silently dropped.
    """
    parsed = parse_faults(faults, field=field)
    for i, fault in enumerate(parsed):
        if not accepts(fault):
            raise ConfigError(field=f"{field}[{i}]", value=f"{fault.kind} {_target(fault)}", rule=rule, fix=fix)
    return parsed


def check_faults(faults: Iterable[Any], topology: Topology, *, field: str = "faults") -> None:
    """Raise :class:`ConfigError` for a fault naming a link or device the topology does not have."""
    for i, fault in enumerate(faults):
        if acts_on(fault, topology):
            continue
        where = f"{field}[{i}]"
        if isinstance(fault, _LINK_FAULTS):
            raise ConfigError(field=f"{where}.link", value=list(fault.link), rule="is not a link of the topology",
                              fix="name two directly linked nodes, e.g. "
                                  f"{list(next(topology.links())[:2])}")
        raise ConfigError(field=f"{where}.device", value=fault.device, rule="is not a device of the topology",
                          fix=f"use one of {', '.join(topology.devices[:6])}...")


class FaultInjector:
    """Schedules faults on a :class:`~commsim.simulation.Simulation`.

    Faults are checked against the topology when scheduled (unknown nodes or
    links are errors then, not in the middle of a run). ``applied`` lists the
    faults that happened, ``not_reached`` those whose time came after the
    workload had ended (see :meth:`finish`).
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.applied: list[Any] = []
        self.not_reached: list[Any] = []
        self.pending = 0  # fault events queued and not yet fired: the simulation stops before them
        self._waiting: list[Any] = []
        self._outages: dict[tuple[str, str], int] = {}  # timed outages in progress per link
        self._open_outage: set[tuple[str, str]] = set()  # links down with no duration (until link_up)
        self._factors: dict[tuple[str, str], list[float]] = {}
        self._device_outages: dict[str, int] = {}
        self._device_open: set[str] = set()
        self._slowdowns: dict[str, list[float]] = {}
        self.scheduled: list[Any] = []
        """Every fault scheduled so far (a replay's shortcuts are exact only without any)."""

    def schedule(self, faults: Iterable[Any], *, field: str = "faults") -> None:
        """Schedule faults (models or mappings such as ``{"kind": "link_down", ...}``)."""
        parsed = parse_faults(faults, field=field)
        check_faults(parsed, self.sim.topology, field=field)
        for fault in parsed:
            self.scheduled.append(fault)
            self._waiting.append(fault)
            self._after(max(fault.at - self.sim.env.now, 0.0), lambda f=fault: self._start(f))

    def finish(self) -> None:
        """Move the faults never reached (the workload ended first) to ``not_reached`` and record them."""
        now = self.sim.env.now
        for fault in self._waiting:
            self.not_reached.append(fault)
            self.sim.recorder.event(now, "fault_not_reached", _target(fault),
                                    f"{fault.kind} at {fault.at:.9g} s: after the workload ended")
        self._waiting = []

    def _after(self, delay: float, action: Callable[[], None]) -> None:
        self.pending += 1
        event = self.sim.env.timeout(delay)
        event.callbacks.append(lambda _event: self._fire(action))

    def _fire(self, action: Callable[[], None]) -> None:
        self.pending -= 1
        action()

    def _start(self, fault: Any) -> None:
        self._waiting.remove(fault)
        self.applied.append(fault)
        duration = getattr(fault, "duration", None)
        if isinstance(fault, _LINK_FAULTS):
            link = _key(fault.link)
            if isinstance(fault, LinkDown):
                if duration:
                    self._outages[link] = self._outages.get(link, 0) + 1
                    self._after(duration, lambda: self._end_outage(link))
                else:
                    self._open_outage.add(link)
            elif isinstance(fault, LinkUp):
                self._open_outage.discard(link)
            else:
                self._factors.setdefault(link, []).append(fault.factor)
                if duration:
                    self._after(duration, lambda: self._end_degradation(link, fault.factor))
            self._apply_link(link, fault.link)
        elif isinstance(fault, DeviceFailure):
            if duration:
                self._device_outages[fault.device] = self._device_outages.get(fault.device, 0) + 1
                self._after(duration, lambda: self._end_device_outage(fault.device))
            else:
                self._device_open.add(fault.device)
            self._apply_device(fault.device)
        else:
            self._slowdowns.setdefault(fault.device, []).append(fault.slowdown)
            if duration:
                self._after(duration, lambda: self._end_straggler(fault.device, fault.slowdown))
            self._apply_slowdown(fault.device)

    def _end_outage(self, link: tuple[str, str]) -> None:
        self._outages[link] -= 1
        self._apply_link(link, link)

    def _end_degradation(self, link: tuple[str, str], factor: float) -> None:
        self._factors[link].remove(factor)
        self._apply_link(link, link)

    def _end_device_outage(self, device: str) -> None:
        self._device_outages[device] -= 1
        self._apply_device(device)

    def _end_straggler(self, device: str, slowdown: float) -> None:
        self._slowdowns[device].remove(slowdown)
        self._apply_slowdown(device)

    def _apply_link(self, link: tuple[str, str], named: tuple[str, str]) -> None:
        """Bring the network in line with the outages and degradations now covering ``link``."""
        net = self.sim.network
        a, b = named
        down = link in self._open_outage or self._outages.get(link, 0) > 0
        was_down = net.is_down(a, b)
        if down and not was_down:
            net.fail_link(a, b)
        elif was_down and not down:
            net.restore_link(a, b)
        factor = min(self._factors.get(link) or [1.0])
        if factor != net.link_factor(a, b):
            net.degrade_link(a, b, factor)

    def _apply_device(self, name: str) -> None:
        device = self.sim.devices[name]
        down = name in self._device_open or self._device_outages.get(name, 0) > 0
        if down and not device.failed:
            device.fail()
            self.sim.recorder.event(self.sim.env.now, "device_failure", name)
        elif device.failed and not down:
            device.repair()
            self.sim.recorder.event(self.sim.env.now, "device_repair", name)

    def _apply_slowdown(self, name: str) -> None:
        device = self.sim.devices[name]
        slowdown = max(self._slowdowns.get(name) or [1.0])
        if slowdown == device.slowdown:
            return
        device.set_slowdown(slowdown)
        if slowdown > 1.0:
            self.sim.recorder.event(self.sim.env.now, "straggler", name, f"slowdown {slowdown:g}")
        else:
            self.sim.recorder.event(self.sim.env.now, "straggler_end", name)


def _key(link: Iterable[str]) -> tuple[str, str]:
    a, b = link
    return (a, b) if a <= b else (b, a)


def _target(fault: Any) -> str:
    return "-".join(fault.link) if isinstance(fault, _LINK_FAULTS) else fault.device
