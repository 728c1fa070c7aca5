"""What a study is: validated parameters in, tables, metrics and figures out.

A study (T3, C4, Streaming DiLoCo, TPI-LLM, compressed data-parallel training)
is a class with a ``params`` model and a ``run`` method. Scenarios name it with
``workload: {kind: study, study: NAME, params: {...}}``; ``commsim validate``
runs its ``validation`` cases.

The studies are listed in one explicit table, :data:`STUDIES` (name -> the
``module:Class`` that implements it); a study module is imported only when the
study is asked for, and importing it registers nothing.

>>> sorted(STUDIES)
['c4', 'compressed_dp', 'streaming_diloco', 't3', 'tpi_llm']
>>> get_study("t3").name
't3'
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from commsim.config import StrictModel, validate
from commsim.errors import ConfigError
from commsim.extras import missing_extra

__all__ = ["STUDIES", "Study", "StudyContext", "StudyOutput", "get_study", "study_names"]

Progress = Callable[[float, float, str], None]


def _no_progress(done: float, total: float, what: str) -> None:
    return None


@dataclass
class StudyContext:
    """What a study gets from the scenario around it.

    ``topology`` is the scenario's topology (None when the scenario gives none;
    a study then builds its own from its parameters). ``progress(done, total,
    what)`` moves the progress bar. ``faults`` are the scenario's faults
    (:mod:`commsim.faults` models), given only to studies that accept them.
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
    """Whether the study applies a scenario's ``faults`` to its simulations (else the scenario is refused)."""

    def parse(self, params: dict[str, Any]) -> StrictModel:
        """Validate the scenario's ``params`` mapping (errors are prefixed ``workload.params``)."""
        return validate(self.params, params, prefix="workload.params")

    @abstractmethod
    def run(self, params: Any, ctx: StudyContext) -> StudyOutput:
        """Run the study with validated ``params``."""

    def validation(self) -> list[Any]:
        """Checks for ``commsim validate`` (a list of :class:`commsim.validation.Check`)."""
        return []


STUDIES: dict[str, str] = {
    "c4": "commsim.systems.c4.study:C4Study",
    "compressed_dp": "commsim.systems.compressed_dp.study:CompressedDPStudy",
    "streaming_diloco": "commsim.systems.streaming_diloco.study:StreamingDilocoStudy",
    "t3": "commsim.systems.t3.study:T3Study",
    "tpi_llm": "commsim.systems.tpi_llm.study:TPILLMStudy",
}
"""Every study by name: the ``module:Class`` implementing it (add an entry to add a study)."""

_INSTANCES: dict[str, Study] = {}


def study_names() -> list[str]:
    """The names of the studies, in the order of :data:`STUDIES`."""
    return list(STUDIES)


def get_study(name: str) -> Study:
    """The study called ``name``, imported on first use (a clear error listing the known ones)."""
    if name not in STUDIES:
        raise ConfigError(field="workload.study", value=name, rule="is not a study",
                          fix=f"use one of {', '.join(sorted(STUDIES))}")
    if name not in _INSTANCES:
        module, _, cls = STUDIES[name].partition(":")
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a study that needs an optional dependency (compressed_dp: torch)
            error = missing_extra(exc, field="workload.study", value=name)
            if error is None:
                raise
            raise error from None
        _INSTANCES[name] = getattr(found, cls)()
    return _INSTANCES[name]
