"""What-if sweeps: the grid product of values of any scenario fields, run in parallel.

Points run in local processes (``jobs``) or on an existing Dask scheduler
(``dask``); results are identical whatever runs them, because every point is a
deterministic scenario with its own seed. Completed rows are appended to a CSV
as they arrive, so an interrupted sweep keeps what it finished.

>>> table = sweep({"name": "s", "topology": "switch:8,50GB/s,500ns",
...                "workload": {"kind": "collective", "sizes": "64MiB"}},
...               {"topology_overrides.bandwidth": ["25 GB/s", "50 GB/s"]}).table
>>> table[["topology_overrides.bandwidth", "busbw_at_largest"]].round(-8).values.tolist()
[['25 GB/s', 24900000000.0], ['50 GB/s', 49700000000.0]]
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from commsim.errors import ConfigError
from commsim.scenario.runner import as_scenario, simulate

__all__ = ["SweepResult", "sweep", "grid_points"]


@dataclass
class SweepResult:
    """One row per grid point: the swept inputs, then every metric of the run."""

    table: pd.DataFrame
    parameters: list[str]
    metrics: list[str]
    units: dict[str, str] = field(default_factory=dict)

    def dashboard(self, path: str | Path, *, show: Sequence[str] = ()) -> Path:
        """Write the what-if dashboard (the metrics that vary against the swept parameters; ``show`` first)."""
        from commsim.views.dashboard import write_sweep_dashboard

        return write_sweep_dashboard(self.table, self.parameters, self.metrics, path, units=self.units, show=show)


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, first parameter varying slowest."""
    if not grid:
        raise ConfigError(field="--set", rule="is missing: a sweep needs at least one parameter",
                          fix="give --set PATH=V1,V2,... (e.g. --set workload.tp=2,4,8)")
    for name, values in grid.items():
        if not values:
            raise ConfigError(field=name, value=values, rule="has no values", fix="list at least one value")
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]


def _run_point(data: dict[str, Any], source: str | None, overrides: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """Run one point in whatever process gets it; returns its metrics with their units."""
    from commsim.scenario.spec import scenario_from_dict

    scenario = scenario_from_dict(data, source=source, overrides=overrides)
    run = simulate(scenario)
    return {name: (float(value), unit) for name, (value, unit) in run.metrics.items()}


def sweep(scenario: Any, grid: dict[str, list[Any]], *, jobs: int = 1, dask: Any = None,
          csv_path: str | Path | None = None, progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run ``scenario`` at every point of ``grid`` (``{"workload.tp": [2, 4]}``).

    ``jobs`` local processes (1: in this process), or ``dask``: a scheduler
    address or a ``distributed.Client``. Rows are written to ``csv_path`` as they
    complete when given.
    """
    base = as_scenario(scenario)
    data = base.model_dump(mode="json")
    source = str(base.source) if base.source else None
    points = grid_points(grid)
    for point in points[:1]:
        as_scenario(base, point)  # a bad path or value fails here, before any work starts
    if jobs < 1:
        raise ConfigError(field="--jobs", value=jobs, rule="must be at least 1", fix="give 1 or more processes")
    results: dict[int, dict[str, float]] = {}
    units: dict[str, str] = {}
    writer = _RowWriter(csv_path, list(grid))

    def collect(index: int, measured: dict[str, tuple[float, str]]) -> None:
        metrics = {name: value for name, (value, _unit) in measured.items()}
        units.update({name: unit for name, (_value, unit) in measured.items()})
        results[index] = metrics
        writer.write(points[index], metrics)
        if progress is not None:
            progress(len(results), len(points))

    try:
        if dask is not None:
            _on_dask(dask, data, source, points, collect)
        elif jobs == 1:
            for i, point in enumerate(points):
                collect(i, _run_point(data, source, point))
        else:
            _on_processes(jobs, data, source, points, collect)
    finally:
        writer.close()
    rows = [{**points[i], **results[i]} for i in sorted(results)]
    table = pd.DataFrame(rows)
    metrics = [c for c in table.columns if c not in grid]
    return SweepResult(table=table, parameters=list(grid), metrics=metrics, units=units)


def _on_processes(jobs: int, data: dict[str, Any], source: str | None, points: list[dict[str, Any]],
                  collect: Callable[[int, dict[str, float]], None]) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending = {pool.submit(_run_point, data, source, point): i for i, point in enumerate(points)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                collect(pending.pop(future), future.result())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _on_dask(dask: Any, data: dict[str, Any], source: str | None, points: list[dict[str, Any]],
             collect: Callable[[int, dict[str, float]], None]) -> None:
    from distributed import Client, as_completed

    client = dask if isinstance(dask, Client) else Client(dask)
    try:
        futures = [client.submit(_run_point, data, source, point, pure=False) for point in points]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            collect(index[future.key], future.result())
    finally:
        if client is not dask:
            client.close()


class _RowWriter:
    """Appends each completed row to a CSV so an interrupted sweep keeps its results."""

    def __init__(self, path: str | Path | None, parameters: list[str]) -> None:
        self.path = Path(path) if path else None
        self.parameters = parameters
        self._handle = None
        self._writer: Any = None

    def write(self, point: dict[str, Any], metrics: dict[str, float]) -> None:
        if self.path is None:
            return
        row = {**point, **metrics}
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._handle, fieldnames=list(row), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
