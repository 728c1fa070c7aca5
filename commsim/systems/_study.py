"""What a study is: validated parameters in, tables, metrics and figures out.

A study (T3, C4, Streaming DiLoCo, TPI-LLM, compressed data-parallel training)
is a class with a ``params`` model and a ``run`` method. Scenarios name it with
``workload: {kind: study, study: NAME, params: {...}}``; ``commsim validate``
runs its ``validation`` cases.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from commsim.config import StrictModel, validate
from commsim.errors import ConfigError

__all__ = ["Study", "StudyContext", "StudyOutput", "STUDIES", "register_study", "get_study"]

Progress = Callable[[float, float, str], None]


def _no_progress(done: float, total: float, what: str) -> None:
    return None


@dataclass
class StudyContext:
    """What a study gets from the scenario around it.

    ``topology`` is the scenario's topology (None when the scenario gives none;
    a study then builds its own from its parameters). ``progress(done, total,
    what)`` moves the progress bar. ``faults`` are the scenario's faults (checked
    against the topology), given only to a study whose ``accepts_faults`` is set:
    it schedules them on every simulation it runs on that topology.
    """

    topology: Any = None
    seed: int = 0
    collective: Any = None
    record: str = "auto"
    progress: Progress = _no_progress
    scenario: Any = None
    faults: list[Any] = field(default_factory=list)


@dataclass
class StudyOutput:
    """What a study returns.

    ``metrics`` are the headline numbers ``{name: (value, unit)}``; ``tables`` are
    written in the scenario's table format; ``csv`` are files the study promises by
    name (always CSV, e.g. ``bandwidth_for_cu``); ``figures`` join the dashboard;
    ``result`` is a representative simulation whose timeline and link usage the
    dashboard shows; ``notes`` state the assumptions behind the numbers.
    """

    metrics: dict[str, tuple[float, str]]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    csv: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Any] = field(default_factory=list)
    result: Any = None
    notes: list[str] = field(default_factory=list)


class Study(ABC):
    """Base of every study: subclasses set ``name``, ``title``, ``params`` and implement ``run``."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    params: ClassVar[type[StrictModel]] = StrictModel
    accepts_faults: ClassVar[bool] = False
    """Whether the study applies a scenario's ``faults`` (else a scenario giving them is refused)."""

    def parse(self, params: dict[str, Any]) -> StrictModel:
        """Validate the scenario's ``params`` mapping (errors are prefixed ``workload.params``)."""
        return validate(self.params, params, prefix="workload.params")

    @abstractmethod
    def run(self, params: Any, ctx: StudyContext) -> StudyOutput:
        """Run the study with validated ``params``."""

    def validation(self) -> list[Any]:
        """Checks for ``commsim validate`` (a list of :class:`commsim.validation.Check`)."""
        return []


STUDIES: dict[str, Study] = {}
"""Every registered study by name."""


def register_study(study: Study) -> Study:
    """Make ``study`` available to scenarios and ``commsim validate``."""
    STUDIES[study.name] = study
    return study


def get_study(name: str) -> Study:
    """The study called ``name`` (a clear error listing the known ones)."""
    from commsim import systems  # noqa: F401  (registers the built-in studies)

    if name not in STUDIES:
        raise ConfigError(field="workload.study", value=name, rule="is not a study",
                          fix=f"use one of {', '.join(sorted(STUDIES)) or '(none registered)'}")
    return STUDIES[name]
