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

from commsim.errors import CommsimError, ConfigError, SimulationError
from commsim.extras import require_extra
from commsim.scenario.runner import as_scenario, check_scenario, simulate

__all__ = ["SweepResult", "sweep", "grid_points", "run_tasks", "RowWriter"]


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
    address or a ``distributed.Client``. Every point is validated before any
    runs. Rows are written to ``csv_path`` in grid order as soon as all earlier
    points are done, so the file is the same whatever ``jobs`` is. A point that
    fails does not stop the others: their rows are kept and the failures are
    raised together at the end (:class:`~commsim.errors.CommsimError`).

    With ``jobs > 1`` points run in spawned processes: call ``sweep`` from a
    script under ``if __name__ == "__main__":``.
    """
    base = as_scenario(scenario)
    data = base.model_dump(mode="json")
    source = str(base.source) if base.source else None
    points = grid_points(grid)
    if jobs < 1:
        raise ConfigError(field="--jobs", value=jobs, rule="must be at least 1", fix="give 1 or more processes")
    for point in points:
        try:
            check_scenario(as_scenario(base, point))  # a bad value fails here, before any work starts
        except ConfigError as error:
            where = ", ".join(f"{k}={v!r}" for k, v in point.items())
            raise ConfigError(field=error.field, value=error.value, rule=f"{error.rule} (at the grid point {where})",
                              fix=error.fix, source=error.source) from None
    results: dict[int, dict[str, float]] = {}
    units: dict[str, str] = {}
    failures: dict[int, CommsimError] = {}
    writer = RowWriter(csv_path)

    def collect(index: int, outcome: dict[str, tuple[float, str]] | CommsimError) -> None:
        if isinstance(outcome, CommsimError):
            failures[index] = outcome
            writer.done(index, None)
        else:
            results[index] = {name: value for name, (value, _unit) in outcome.items()}
            units.update({name: unit for name, (_value, unit) in outcome.items()})
            writer.done(index, {**points[index], **results[index]})
        if progress is not None:
            progress(len(results) + len(failures), len(points))

    try:
        run_tasks(_run_point_safely, [(data, source, point) for point in points], jobs=jobs, dask=dask,
                  collect=collect)
    finally:
        writer.close()
    if failures:
        raise _failed(points, failures, len(results), csv_path)
    rows = [{**points[i], **results[i]} for i in sorted(results)]
    table = pd.DataFrame(rows)
    metrics = [c for c in table.columns if c not in grid]
    return SweepResult(table=table, parameters=list(grid), metrics=metrics, units=units)


def _run_point_safely(data: dict[str, Any], source: str | None,
                      overrides: dict[str, Any]) -> dict[str, tuple[float, str]] | CommsimError:
    """:func:`_run_point`, returning a commsim error instead of raising it (other points go on)."""
    try:
        return _run_point(data, source, overrides)
    except CommsimError as error:
        return error


def _failed(points: list[dict[str, Any]], failures: dict[int, CommsimError], done: int,
            csv_path: str | Path | None) -> CommsimError:
    index = min(failures)
    where = ", ".join(f"{k}={v!r}" for k, v in points[index].items())
    kept = f"; the {done} finished rows are in {csv_path}" if csv_path else ""
    error = failures[index]
    if isinstance(error, ConfigError):
        return ConfigError(field=f"sweep point {where}", rule=f"failed: {error}",
                           fix=f"correct that value (the other {done} points ran; their rows are kept)")
    return SimulationError(f"{len(failures)} of {len(points)} sweep points failed{kept}. The first, at {where}: "
                           f"{error}")


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
    from concurrent.futures.process import BrokenProcessPool

    if multiprocessing.parent_process() is not None and multiprocessing.current_process().name != "MainProcess":
        # a spawned worker is importing the user's script, which calls sweep(jobs > 1) at top level
        raise ConfigError(field="jobs", value=jobs, rule="starts worker processes from inside a worker",
                          fix=_GUARD_FIX)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending = {pool.submit(task, *args): i for i, args in enumerate(arguments)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                collect(pending.pop(future), future.result())
    except BrokenProcessPool:
        raise ConfigError(field="jobs", value=jobs, rule="worker processes died while starting",
                          fix=_GUARD_FIX) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


_GUARD_FIX = ("in a script, call sweep(jobs > 1) under 'if __name__ == \"__main__\":' (workers are started with "
              "'spawn' and import the script again), or use jobs=1")


def _on_dask(dask: Any, task: Callable[..., Any], arguments: list[tuple[Any, ...]],
             collect: Callable[[int, Any], None]) -> None:
    require_extra("dask", field="--dask", value=dask)
    from distributed import Client, as_completed

    client = dask if isinstance(dask, Client) else _connect(dask)
    try:
        futures = [client.submit(task, *args, pure=False) for args in arguments]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            collect(index[future.key], future.result())
    finally:
        if client is not dask:
            client.close()


DASK_TIMEOUT = 5.0
"""Seconds to wait for a Dask scheduler to answer before giving up."""


def _connect(address: str) -> Any:
    """A client of the scheduler at ``address``; a clear error when it is malformed or does not answer."""
    from distributed import Client

    fix = "give the address a running scheduler prints, e.g. tcp://10.0.0.5:8786 (or drop --dask)"
    if not isinstance(address, str) or ":" not in address.rsplit("/", 1)[-1]:
        raise ConfigError(field="--dask", value=address, rule="is not a scheduler address with a port", fix=fix)
    try:
        return Client(address, timeout=DASK_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(field="--dask", value=address,
                          rule=f"did not answer within {DASK_TIMEOUT:g} s ({type(exc).__name__})", fix=fix) from None


class RowWriter:
    """Writes finished rows to a CSV as they come, so an interrupted run keeps its results.

    :meth:`write` appends a row at once; :meth:`done` writes task ``index``'s row
    once every earlier task is done (rows ahead of an earlier task wait in memory
    and :meth:`close` writes them, still in order), so the file's order does not
    depend on which worker finished first. The columns are ``fieldnames`` when
    given, else the first row's keys.
    """

    def __init__(self, path: str | Path | None, fieldnames: list[str] | None = None) -> None:
        self.path = Path(path) if path else None
        self.fieldnames = fieldnames
        self._handle = None
        self._writer: Any = None
        self._next = 0
        self._waiting: dict[int, dict[str, Any] | None] = {}

    def done(self, index: int, row: dict[str, Any] | None) -> None:
        """Task ``index`` finished with ``row`` (None: it failed, no row)."""
        self._waiting[index] = row
        while self._next in self._waiting:
            ready = self._waiting.pop(self._next)
            if ready is not None:
                self.write(ready)
            self._next += 1

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
        """Write the rows still waiting for an earlier task (in order) and close the file."""
        for index in sorted(self._waiting):
            ready = self._waiting[index]
            if ready is not None:
                self.write(ready)
        self._waiting.clear()
        if self._handle is not None:
            self._handle.close()
