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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from commsim.errors import ConfigError
from commsim.scenario.runner import as_scenario, simulate

__all__ = ["SweepResult", "sweep", "grid_points", "run_tasks", "RowWriter"]


@dataclass
class SweepResult:
    """One row per grid point: the swept inputs, then every metric of the run."""

    table: pd.DataFrame
    parameters: list[str]
    metrics: list[str]

    def dashboard(self, path: str | Path) -> Path:
        """Write the what-if dashboard (each metric against the swept parameters)."""
        from commsim.views.dashboard import write_sweep_dashboard

        return write_sweep_dashboard(self.table, self.parameters, self.metrics, path)


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


def _run_point(data: dict[str, Any], source: str | None, overrides: dict[str, Any]) -> dict[str, float]:
    """Run one point in whatever process gets it; returns its metrics."""
    from commsim.scenario.spec import scenario_from_dict

    scenario = scenario_from_dict(data, source=source, overrides=overrides)
    run = simulate(scenario)
    return {name: float(value) for name, (value, _unit) in run.metrics.items()}


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
    writer = RowWriter(csv_path)

    def collect(index: int, metrics: dict[str, float]) -> None:
        results[index] = metrics
        writer.write({**points[index], **metrics})
        if progress is not None:
            progress(len(results), len(points))

    try:
        run_tasks(_run_point, [(data, source, point) for point in points], jobs=jobs, dask=dask, collect=collect)
    finally:
        writer.close()
    rows = [{**points[i], **results[i]} for i in sorted(results)]
    table = pd.DataFrame(rows)
    metrics = [c for c in table.columns if c not in grid]
    return SweepResult(table=table, parameters=list(grid), metrics=metrics)


def run_tasks(task: Callable[..., Any], arguments: list[tuple[Any, ...]], *, jobs: int = 1, dask: Any = None,
              collect: Callable[[int, Any], None]) -> None:
    """Run ``task(*arguments[i])`` for every ``i``; call ``collect(i, result)`` as each one finishes.

    In this process (``jobs=1``), in ``jobs`` local processes, or on a Dask
    scheduler (an address or a ``distributed.Client``). ``task`` must be a
    module-level function (it is pickled). An interrupt stops the pool; what
    was collected stays collected.
    """
    if dask is not None:
        _on_dask(dask, task, arguments, collect)
    elif jobs == 1:
        for i, args in enumerate(arguments):
            collect(i, task(*args))
    else:
        _on_processes(jobs, task, arguments, collect)


def _on_processes(jobs: int, task: Callable[..., Any], arguments: list[tuple[Any, ...]],
                  collect: Callable[[int, Any], None]) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending = {pool.submit(task, *args): i for i, args in enumerate(arguments)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                collect(pending.pop(future), future.result())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _on_dask(dask: Any, task: Callable[..., Any], arguments: list[tuple[Any, ...]],
             collect: Callable[[int, Any], None]) -> None:
    from distributed import Client, as_completed

    client = dask if isinstance(dask, Client) else Client(dask)
    try:
        futures = [client.submit(task, *args, pure=False) for args in arguments]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            collect(index[future.key], future.result())
    finally:
        if client is not dask:
            client.close()


class RowWriter:
    """Appends each completed row to a CSV so an interrupted run keeps its results.

    The columns are ``fieldnames`` when given, else the first row's keys.
    """

    def __init__(self, path: str | Path | None, fieldnames: list[str] | None = None) -> None:
        self.path = Path(path) if path else None
        self.fieldnames = fieldnames
        self._handle = None
        self._writer: Any = None

    def write(self, row: dict[str, Any]) -> None:
        """Append ``row`` (and flush it to disk)."""
        if self.path is None:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._handle, fieldnames=self.fieldnames or list(row),
                                          extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
