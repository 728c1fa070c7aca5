"""Quantities with units, parsed in one place.

Inside commsim every number is SI: seconds, bytes, bytes/s, FLOP, FLOP/s, Hz.
Strings with units exist only at the edges (files, flags, printed tables) and
pass through :func:`parse_quantity`. Bits and bytes are never confused: a lower
case ``b`` is a bit (``Gbps``, ``Gb/s``, ``Gbit/s``), an upper case ``B`` a byte.

>>> parse_quantity("400 Gbps", "bandwidth")
50000000000.0
>>> parse_quantity("1.5 us", "time")
1.5e-06
>>> parse_quantity("80 GiB", "bytes")
85899345920.0
>>> parse_quantity(12, "time")     # plain numbers are already SI
12.0
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from commsim.errors import ConfigError, UnitError

__all__ = [
    "Bandwidth",
    "Bytes",
    "Duration",
    "EventRate",
    "FlopRate",
    "Flops",
    "Frequency",
    "Kind",
    "MAX_SIZES",
    "check_message_sizes",
    "format_bandwidth",
    "format_bytes",
    "format_flop_rate",
    "format_quantity",
    "format_time",
    "gbit_per_s",
    "parse_quantity",
    "parse_size_range",
]

Kind = Literal["bandwidth", "time", "bytes", "flops", "flop_rate", "frequency", "event_rate"]

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}


def _build_tables() -> dict[str, dict[str, float]]:
    bandwidth: dict[str, float] = {}
    size: dict[str, float] = {}
    flops: dict[str, float] = {}
    flop_rate: dict[str, float] = {}
    for prefix, mult in _DECIMAL.items():
        for bit_rate in ("bps", "b/s", "bit/s"):
            bandwidth[prefix + bit_rate] = mult / 8.0
        for byte_rate in ("B/s", "Bps"):
            bandwidth[prefix + byte_rate] = mult
        size[prefix + "B"] = mult
        size[prefix + "b"] = mult / 8.0
        size[prefix + "bit"] = mult / 8.0
        flops[prefix + "FLOP"] = mult
        flops[prefix + "FLOPs"] = mult
        flop_rate[prefix + "FLOPS"] = mult
        flop_rate[prefix + "FLOP/s"] = mult
    for prefix, mult in _BINARY.items():
        bandwidth[prefix + "B/s"] = mult
        size[prefix + "B"] = mult
    time = {
        "s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9,
        "ps": 1e-12, "min": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
        "d": 86400.0, "day": 86400.0, "days": 86400.0, "week": 604800.0, "weeks": 604800.0,
    }
    frequency = {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9}
    event_rate = {f"/{unit}": 1.0 / secs for unit, secs in time.items()}
    event_rate.update({f"per {unit}": 1.0 / secs for unit, secs in time.items()})
    return {
        "bandwidth": bandwidth,
        "time": time,
        "bytes": size,
        "flops": flops,
        "flop_rate": flop_rate,
        "frequency": frequency,
        "event_rate": event_rate,
    }


_TABLES = _build_tables()
_EXAMPLES = {
    "bandwidth": "'400 Gbps', '50 GB/s', '25 GiB/s'",
    "time": "'500 ns', '1.5 us', '2 ms', '3 h', '30 days'",
    "bytes": "'4 KiB', '80 GiB', '1.5 GB'",
    "flops": "'2.5 TFLOP', '1e12'",
    "flop_rate": "'989 TFLOPS', '115 TFLOP/s'",
    "frequency": "'1.4 GHz'",
    "event_rate": "'7.76 /day', '0.3 per hour'",
}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def parse_quantity(value: Any, kind: Kind, *, field: str = "quantity") -> float:
    """Return ``value`` in SI units of ``kind``.

    ``value`` is a number (taken as SI already) or a string such as ``"50 GB/s"``.
    Raises :class:`~commsim.errors.UnitError` naming ``field`` when the number or
    the unit cannot be understood.
    """
    if kind not in _TABLES:
        raise ConfigError(field="kind", value=kind, rule="is not a quantity kind",
                          fix=f"use one of {', '.join(_TABLES)}")
    if isinstance(value, bool):
        raise UnitError(field=field, value=value, rule=f"is not a {kind} quantity",
                        fix=f"write a number or a string such as {_EXAMPLES[kind]}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _NUMBER.match(value)
        if not match:
            raise UnitError(field=field, value=value, rule=f"is not a number with a {kind} unit",
                            fix=f"write it like {_EXAMPLES[kind]}")
        number = float(match.group(1).replace("_", ""))
        unit = match.group(2)
        if unit:
            table = _TABLES[kind]
            if unit not in table:
                raise UnitError(field=field, value=value, rule=f"has an unknown {kind} unit {unit!r}",
                                fix=f"use a unit such as {_EXAMPLES[kind]}{_hint(unit, kind)}")
            number *= table[unit]
    else:
        raise UnitError(field=field, value=value, rule=f"is not a {kind} quantity",
                        fix=f"write a number or a string such as {_EXAMPLES[kind]}")
    if math.isnan(number):
        raise UnitError(field=field, value=value, rule="is not a number", fix="give a finite value")
    if math.isinf(number):
        # an infinite latency or size turns into NaN times inside the kernel: refuse it here
        raise UnitError(field=field, value=value, rule="is not finite",
                        fix=f"give a finite {kind} such as {_EXAMPLES[kind].split(',')[0]}")
    return number


def _hint(unit: str, kind: str) -> str:
    """Point at the unit the user probably meant when it belongs to another kind."""
    for other, table in _TABLES.items():
        if other != kind and unit in table:
            return f" ({unit!r} is a {other} unit)"
    if unit.lower() in {u.lower() for u in _TABLES[kind]}:
        return " (units are case sensitive: b is a bit, B a byte)"
    return ""


MAX_SIZES = 10_000
"""Most message sizes one size range may expand to (an nccl-tests sweep has a few dozen)."""


def parse_size_range(text: str, *, field: str = "sizes") -> list[float]:
    """Parse ``"1KiB:4GiB"`` (powers of two), ``"1KiB:4GiB:x4"`` or a list ``"1MiB,8MiB"``.

    Every size is a whole number of bytes, at least 1; a range expands to at most
    :data:`MAX_SIZES` sizes.

    >>> [int(s) for s in parse_size_range("1KiB:8KiB")]
    [1024, 2048, 4096, 8192]
    """
    text = text.strip()
    if ":" not in text:
        parts = text.split(",")
        if not text or any(not part.strip() for part in parts):
            raise UnitError(field=field, value=text, rule="has an empty size in its list",
                            fix="write sizes separated by single commas, e.g. '1MiB,8MiB'")
        return [_message_size(parse_quantity(part, "bytes", field=field), part, field) for part in parts]
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise UnitError(field=field, value=text, rule="is not a size range",
                        fix="write MIN:MAX or MIN:MAX:xFACTOR, e.g. '1KiB:4GiB' or '1MiB:1GiB:x4'")
    low = parse_quantity(parts[0], "bytes", field=field)
    high = parse_quantity(parts[1], "bytes", field=field)
    factor = 2.0
    if len(parts) == 3:
        step = parts[2].strip().lstrip("x")
        try:
            factor = float(step)
        except ValueError:
            factor = 0.0
        if factor <= 1.0:
            raise UnitError(field=field, value=text, rule="has a step factor that is not above 1",
                            fix="write the step as xFACTOR with FACTOR > 1, e.g. '1MiB:1GiB:x4'")
    if low <= 0 or high < low:
        raise UnitError(field=field, value=text, rule="needs 0 < MIN <= MAX",
                        fix="give a positive minimum not above the maximum, e.g. '1KiB:4GiB'")
    _message_size(low, parts[0], field)
    count = math.floor(math.log(high / low) / math.log(factor) + 1e-9) + 1
    if count > MAX_SIZES:
        raise UnitError(field=field, value=text, rule=f"expands to {count:,} sizes, above the limit of {MAX_SIZES:,}",
                        fix="use a larger step (e.g. ':x2') or a narrower range")
    sizes = []
    size = low
    while size <= high * (1 + 1e-12):
        sizes.append(size)
        size *= factor
    return sizes


def check_message_sizes(sizes: list[float], *, field: str = "sizes") -> list[float]:
    """Return ``sizes`` (bytes) after checking each is a whole number of bytes of at least 1."""
    return [_message_size(float(size), f"{size!r}", f"{field}[{i}]") for i, size in enumerate(sizes)]


def _message_size(size: float, text: str, field: str) -> float:
    if size < 1 or size != math.floor(size):
        raise UnitError(field=field, value=text.strip(), rule="is not a whole number of bytes of at least 1",
                        fix="give sizes like '8', '1KiB' or '4MiB' (a message holds whole bytes)")
    return size


def _scaled(value: float, steps: list[tuple[float, str]], digits: int) -> str:
    for scale, unit in steps:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {unit}"
    scale, unit = steps[-1]
    return f"{value / scale:.{digits}g} {unit}"


def format_bytes(value: float, digits: int = 4) -> str:
    """``format_bytes(3 * 2**30) == '3 GiB'`` (binary prefixes)."""
    steps = [(2.0**50, "PiB"), (2.0**40, "TiB"), (2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB"), (1.0, "B")]
    return _scaled(value, steps, digits)


def format_time(value: float, digits: int = 4) -> str:
    """``format_time(1.5e-6) == '1.5 us'``."""
    if math.isinf(value):
        return "inf"
    steps = [(86400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns"), (1e-12, "ps")]
    if value == 0:
        return "0 s"
    return _scaled(value, steps, digits)


def format_bandwidth(value: float, digits: int = 4) -> str:
    """``format_bandwidth(50e9) == '50 GB/s'`` (decimal prefixes, bytes)."""
    steps = [(1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s"), (1.0, "B/s")]
    return _scaled(value, steps, digits)


def gbit_per_s(bandwidth: float) -> float:
    """Bytes/s as Gbit/s, the unit bandwidth sweeps and their tables use: ``gbit_per_s(1.25e9) == 10.0``."""
    return bandwidth * 8.0 / 1e9


def format_flop_rate(value: float, digits: int = 4) -> str:
    """``format_flop_rate(989e12) == '989 TFLOPS'``."""
    steps = [(1e15, "PFLOPS"), (1e12, "TFLOPS"), (1e9, "GFLOPS"), (1e6, "MFLOPS"), (1.0, "FLOPS")]
    return _scaled(value, steps, digits)


def format_quantity(value: Any, unit: str) -> str:
    """A value in SI ``unit`` as a reader wants it (the edge where unit strings are made).

    >>> format_quantity(0.3602, "s"), format_quantity(3 * 2**30, "B"), format_quantity(0.2009, "fraction")
    ('360.2 ms', '3 GiB', '20.09 %')
    >>> format_quantity(2.5e12, "FLOP")
    '2.5 TFLOP'
    >>> print(format_quantity(278032, "count"), "|", format_quantity(42e9, "B/s"))   # a thin space groups digits
    278 032 | 42 GB/s
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    formats = {"s": format_time, "B": format_bytes, "B/s": format_bandwidth, "FLOP/s": format_flop_rate}
    if unit in formats:
        return formats[unit](number)
    if unit == "fraction":
        return f"{number * 100:.4g} %"
    if unit == "FLOP":
        return _scaled(number, [(1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"),
                                (1e3, "kFLOP"), (1.0, "FLOP")], 4)
    if unit in ("count", "") and number.is_integer() and math.isfinite(number):
        return f"{int(number):,}".replace(",", "\u2009")
    return f"{number:.4g} {unit}".strip()


def _annotated(kind: Kind) -> Any:
    return Annotated[float, BeforeValidator(lambda v: parse_quantity(v, kind))]


Bandwidth = _annotated("bandwidth")
"""A pydantic field type: bytes/s, accepts ``'400 Gbps'`` or ``'50 GB/s'``."""
Duration = _annotated("time")
"""A pydantic field type: seconds, accepts ``'1.5 us'``."""
Bytes = _annotated("bytes")
"""A pydantic field type: bytes, accepts ``'80 GiB'``."""
Flops = _annotated("flops")
"""A pydantic field type: FLOP, accepts ``'2 TFLOP'``."""
FlopRate = _annotated("flop_rate")
"""A pydantic field type: FLOP/s, accepts ``'989 TFLOPS'``."""
Frequency = _annotated("frequency")
"""A pydantic field type: Hz, accepts ``'1.4 GHz'``."""
EventRate = _annotated("event_rate")
"""A pydantic field type: events per second, accepts ``'7.76 /day'``."""
