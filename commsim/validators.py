"""The validation areas of ``commsim validate``, listed explicitly, and the run that tabulates them.

:data:`VALIDATORS` maps each area to the function returning its
:class:`~commsim.validation.Check` rows: the foundation checks, one area per
cluster with shared nccl-tests logs, the Megatron compute model, then one area
per study (its :meth:`~commsim.systems.Study.validation`). Nothing registers
itself by being imported; an area's modules are imported when it runs.

>>> list(VALIDATORS)[:2]
['kernel', 'collectives']
>>> run_validation(["kernel"])["status"].tolist()
['pass', 'pass', 'pass']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pandas as pd

from commsim.collectives.nccl_validation import NCCL_CLUSTERS
from commsim.errors import ConfigError, MissingExtraError
from commsim.systems import STUDIES, get_study
from commsim.validation import Check

__all__ = ["VALIDATORS", "Validator", "run_validation"]

Validator = Callable[[], list[Check]]


def _foundation(function: str) -> Validator:
    def checks() -> list[Check]:
        return getattr(importlib.import_module("commsim._builtin_checks"), function)()

    return checks


def _nccl(cluster: str) -> Validator:
    def checks() -> list[Check]:
        from commsim.collectives.nccl_validation import cluster_checks

        return cluster_checks(cluster)

    return checks


def _study(name: str) -> Validator:
    def checks() -> list[Check]:
        try:
            study = get_study(name)
        except MissingExtraError as error:  # not installed here: nothing to check, and that is not a failure
            return [Check(name, "the checks of this study", float("nan"), float("nan"), 0.0, detail=f"not "
                          f"applicable: {error.rule}; {error.fix}", skipped=True)]
        return study.validation()

    return checks


VALIDATORS: dict[str, Validator] = {
    "kernel": _foundation("kernel_checks"),
    "collectives": _foundation("closed_form_checks"),
    **{f"nccl:{cluster}": _nccl(cluster) for cluster in NCCL_CLUSTERS},
    "megatron": _foundation("megatron_checks"),
    **{name: _study(name) for name in STUDIES},
}
"""Every validation area, in the order ``commsim validate`` runs them."""

_COLUMNS = ["area", "case", "expected", "simulated", "error", "tolerance", "relative", "status", "detail"]


def run_validation(areas: list[str] | None = None,
                   progress: Callable[[int, int, str], None] | None = None) -> pd.DataFrame:
    """Run the checks of ``areas`` (all by default) and return them as a table.

    ``progress(done, total, area)`` is called before each area and once at the end.
    """
    chosen = areas or list(VALIDATORS)
    unknown = [a for a in chosen if a not in VALIDATORS]
    if unknown:
        raise ConfigError(field="--only", value=unknown[0], rule="is not a validation area",
                          fix=f"use one of {', '.join(VALIDATORS)}")
    rows = []
    for i, area in enumerate(chosen):
        if progress is not None:
            progress(i, len(chosen), area)
        try:
            checks = VALIDATORS[area]()
        except Exception as exc:  # one broken area must not hide the others: report it as a failed row
            checks = [Check(area, "the checks of this area ran", 1.0, 0.0, 0.0, relative=False,
                            detail=f"{type(exc).__name__}: {exc}")]
        rows += [{"area": c.area, "case": c.case, "expected": c.expected, "simulated": c.simulated, "error": c.error,
                  "tolerance": c.tolerance, "relative": c.relative, "status": c.status, "detail": c.detail}
                 for c in checks]
    if progress is not None:
        progress(len(chosen), len(chosen), "done")
    return pd.DataFrame(rows, columns=_COLUMNS)
