"""The one exception hierarchy of commsim.

Every error a user can trigger derives from :class:`CommsimError`. Errors about
input (files, flags, parameters) are :class:`ConfigError` and carry the pieces a
good message needs: where (file and field path), what (the value), which rule
was broken and how to fix it. The CLI prints ``str(error)`` and exits with
code 2; it never shows a traceback for a ``CommsimError``.

>>> err = ConfigError(field="links[3].bandwidth", value="-5 GB/s",
...                   rule="must be positive", fix="give a bandwidth above 0")
>>> print(err)
links[3].bandwidth = '-5 GB/s': must be positive. Fix: give a bandwidth above 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "CommsimError",
    "ConfigError",
    "MissingExtraError",
    "OutOfMemoryError",
    "RoutingError",
    "SimulationError",
    "StallError",
    "TopologyError",
    "TraceError",
    "UnitError",
]

class _Missing:
    """'No value given': one instance, which survives pickling (errors cross process boundaries)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> tuple[type, tuple]:
        return (_Missing, ())

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


class CommsimError(Exception):
    """Root of every error commsim raises on purpose."""


class _FieldError(CommsimError):
    """An error told as field, value, rule and fix (see :class:`ConfigError` for the parameters)."""

    def __init__(
        self,
        field: str,
        rule: str,
        fix: str,
        value: Any = _MISSING,
        source: str | None = None,
    ) -> None:
        self.field = field
        self.value = value
        self.rule = rule.rstrip(".")
        self.fix = fix.rstrip(".")
        self.source = source
        super().__init__()
        self._keep_args()

    def _keep_args(self) -> None:
        # ``type(e)(*e.args)`` must rebuild the error: SimPy and pickle (Dask, processes) do that
        self.args = (self.field, self.rule, self.fix, self.value, self.source)

    def __str__(self) -> str:
        return self._message()

    def _message(self) -> str:
        where = f"{self.source}: " if self.source else ""
        what = self.field if self.value is _MISSING else f"{self.field} = {_short_repr(self.value)}"
        return f"{where}{what}: {self.rule}. Fix: {self.fix}."


class ConfigError(_FieldError, ValueError):
    """A bad input: a file, a command-line flag or a parameter.

    Parameters
    ----------
    field:
        Dotted path of the offending field (``links[3].bandwidth``), or a short
        description of the input when there is no field.
    value:
        The offending value, shown with ``repr``; omit when there is none.
    rule:
        The rule the value breaks, phrased so it reads after the value.
    fix:
        What the user should do instead.
    source:
        The file the value came from, if any.
    """

    def with_source(self, source: str) -> ConfigError:
        """Return the same error attributed to ``source`` (a file path)."""
        if self.source:
            return self
        return type(self)(self.field, self.rule, self.fix, self.value, source)

    def with_prefix(self, prefix: str) -> ConfigError:
        """Return the same error with ``prefix`` prepended to its field path."""
        sep = "" if self.field.startswith("[") else "."
        field = f"{prefix}{sep}{self.field}" if prefix else self.field
        return type(self)(field, self.rule, self.fix, self.value, self.source)


class MissingExtraError(ConfigError):
    """A feature needs an optional dependency that is not installed; ``fix`` names the pip extra."""


class UnitError(ConfigError):
    """A quantity string whose number or unit cannot be understood."""


class TopologyError(ConfigError):
    """A topology that breaks a structural rule (disconnected, unknown node, ...)."""


class TraceError(ConfigError):
    """A workload trace that breaks a rule of the trace format."""


class RoutingError(_FieldError):
    """No route exists between two nodes (for example after failures).

    Told as field, value, rule and fix like :class:`ConfigError`: the field names
    what needed the route, the value its two ends.

    >>> print(RoutingError(field="route", value="gpu0 -> gpu2", rule="has no path avoiding 2 failed link directions",
    ...                    fix="restore a failed link or add a path between them"))
    route = 'gpu0 -> gpu2': has no path avoiding 2 failed link directions. Fix: restore a failed link or add a path between them.
    """


class SimulationError(CommsimError):
    """Something went wrong while a simulation was running."""


class StallError(SimulationError):
    """Activities remain that can never finish (for example a failed link with no detour).

    ``stalled`` lists a human-readable description of each stalled activity,
    ``result`` holds the partial results up to the stall, when available, and
    ``causes`` names the links and devices that were down at the stall.
    """

    def __init__(self, time: float, stalled: Sequence[str], result: Any = None, causes: Sequence[str] = ()) -> None:
        self.time = time
        self.stalled = list(stalled)
        self.result = result
        self.causes = list(causes)
        super().__init__(time, self.stalled, result, self.causes)  # args rebuild the error (SimPy, pickle)

    def __str__(self) -> str:
        shown = "; ".join(self.stalled[:8])
        more = f" (and {len(self.stalled) - 8} more)" if len(self.stalled) > 8 else ""
        causes = f" Down at the stall: {', '.join(self.causes)}." if self.causes else ""
        return (f"simulation stalled at t={self.time:.9g} s: {len(self.stalled)} activit"
                f"{'y' if len(self.stalled) == 1 else 'ies'} can never finish: {shown}{more}.{causes} "
                "Fix: restore the failed link or device, give the traffic another path, "
                "or schedule a repair (link_up) fault.")


class OutOfMemoryError(SimulationError):
    """A device was asked to hold more bytes than its memory (plus swap) allows."""

    def __init__(self, device: str, requested: float, in_use: float, capacity: float) -> None:
        self.device = device
        self.requested = requested
        self.in_use = in_use
        self.capacity = capacity
        super().__init__(device, requested, in_use, capacity)  # args rebuild the error (SimPy, pickle)

    def __str__(self) -> str:
        from commsim.units import format_bytes

        return (f"out of memory on {self.device}: allocating {format_bytes(self.requested)} with "
                f"{format_bytes(self.in_use)} in use exceeds the capacity of {format_bytes(self.capacity)}. "
                "Fix: free memory first, use a device with more memory or swap, "
                "or shard the workload over more devices.")


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_loc(loc: Iterable[Any]) -> str:
    """Format a pydantic error location as ``a.b[3].c``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"
