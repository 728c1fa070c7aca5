"""``commsim validate``: every check the project has, as one table.

A check compares a simulated number with an expected one (a closed form, a
measurement, a published claim) under a stated tolerance. This module only says
what a check is; which areas exist and how they run is :mod:`commsim.validators`
(so a study can build its rows here without importing the list of studies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Check", "relative_check"]


@dataclass(frozen=True)
class Check:
    """One validation row.

    ``error`` is ``(simulated - expected) / expected`` for relative checks or the
    plain difference for absolute ones (``relative=False``); the check passes when
    ``|error| <= tolerance``. ``status`` is ``pass``, ``fail`` or ``skipped`` (with
    the reason in ``detail``).
    """

    area: str
    case: str
    expected: float
    simulated: float
    tolerance: float
    relative: bool = True
    detail: str = ""
    skipped: bool = False

    @property
    def error(self) -> float:
        if self.skipped or math.isnan(self.simulated):
            return math.nan
        if self.relative:
            return (self.simulated - self.expected) / self.expected if self.expected else math.inf
        return self.simulated - self.expected

    @property
    def status(self) -> str:
        if self.skipped:
            return "skipped"
        return "pass" if abs(self.error) <= self.tolerance else "fail"


def relative_check(area: str, case: str, expected: float, simulated: float, tolerance: float,
                   detail: str = "") -> Check:
    """A check that passes when ``|simulated / expected - 1| <= tolerance``."""
    return Check(area, case, float(expected), float(simulated), tolerance, True, detail)
