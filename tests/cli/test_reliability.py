"""Reliability at the command line: outputs checked before simulating, markup shown as typed, repeated or
bad --set paths, refused sizes, stall exit code with partial tables, sweeps in grid order whatever --jobs,
a bad Dask address failing fast, and dashboards that do not depend on the hash seed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from commsim.cli import main
from commsim.cli._app import EXIT_BAD_INPUT, EXIT_SIMULATION

QUIET = {"dashboard": False, "perfetto": False, "tables": "csv"}


def _scenario(tmp_path: Path, name: str = "tiny", **extra) -> Path:
    data = {"name": name, "topology": "switch:4,50GB/s,500ns",
            "workload": {"kind": "collective", "op": "all_reduce", "sizes": "1MiB:2MiB"},
            "outputs": {**QUIET, "dir": str(tmp_path / "out")}, **extra}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Outcome:
    exit_code: int
    output: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the console script's entry point (errors become exit codes, as for a user) and capture its output."""
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(args: list[str]) -> Outcome:
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        captured = capsys.readouterr()
        return Outcome(code, captured.out + captured.err)

    return invoke


def _error(result) -> str:
    assert "Traceback" not in result.output, result.output
    return result.output


@pytest.mark.parametrize("target", ["/dev/null/x", "FILE"])
def test_an_unusable_output_directory_fails_before_simulating(cli, tmp_path: Path, target: str) -> None:
    scenario = _scenario(tmp_path)
    target = str(scenario) if target == "FILE" else target
    result = cli(["run", str(scenario), "-o", target])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "-o" in _error(result) and "Fix:" in result.output and "summary" not in result.output


def test_collective_csv_into_a_directory_fails_before_simulating(cli, tmp_path: Path) -> None:
    result = cli(["collective", "-t", "switch:4", "--sizes", "1MiB", "--csv", str(tmp_path)])
    assert result.exit_code == EXIT_BAD_INPUT and "is a directory" in _error(result)
    assert "busbw" not in result.output


def test_markup_in_user_strings_is_shown_as_typed(cli, tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, topology="[bold]nope[/]:4")
    result = cli(["run", str(scenario)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "[bold]nope[/]" in _error(result)


def test_help_shows_the_defaults_written_in_brackets(cli) -> None:
    result = cli(["collective", "--help"])
    assert "[default: 1KiB:4GiB" in result.output and "[default: every device" in result.output


@pytest.mark.parametrize(("sets", "words"), [
    (["seed=1", "seed=2"], "more than once"),
    (["faults.x.at=1"], "indexes a list of 1"),
    (["faults.3.at=1"], "use an index from 0 to 0"),
    (["seed=-4"], "at least 0"),
])
def test_bad_set_options_are_refused(cli, tmp_path: Path, sets: list[str], words: str) -> None:
    scenario = _scenario(tmp_path, faults=[{"kind": "link_down", "at": "1 ms", "link": ["gpu0", "sw"],
                                             "duration": "1 ms"}])
    args = ["run", str(scenario)]
    for text in sets:
        args += ["--set", text]
    result = cli(args)
    assert result.exit_code == EXIT_BAD_INPUT and words in _error(result)


@pytest.mark.parametrize(("flags", "words"), [
    (["--servers", "0"], "--servers"), (["--servers", "-1"], "--servers"), (["--ranks", "0"], "--ranks"),
    (["--sizes", "0.5"], "whole number of bytes"), (["--sizes", "1e400"], "not finite"),
    (["--sizes", "1B:1PiB:x1.00001"], "above the limit"),
])
def test_collective_refuses_counts_and_sizes_without_a_meaning(cli, flags: list[str], words: str) -> None:
    result = cli(["collective", "-t", "switch:4", "--sizes", "1MiB", *flags])
    assert result.exit_code == EXIT_BAD_INPUT and words in _error(result)


@pytest.mark.parametrize("topology", ["switch:1000000000000", "fat_tree:k=1000"])
def test_absurd_topologies_are_refused_with_an_estimate(cli, topology: str) -> None:
    start = time.perf_counter()
    result = cli(["topology", "show", topology])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "would build about" in _error(result) and "--force" in result.output
    assert time.perf_counter() - start < 10


def test_a_huge_tensor_is_refused_before_allocating(cli) -> None:
    result = cli(["compress", "--shape", "1000000x1000000"])
    assert result.exit_code == EXIT_BAD_INPUT and "tensor elements" in _error(result)


def test_a_stall_exits_3_names_the_failed_link_and_keeps_the_tables(cli, tmp_path: Path) -> None:
    data = {"name": "stall", "topology": "switch:4,50GB/s,500ns", "outputs": {**QUIET, "dir": str(tmp_path / "o")},
            "workload": {"kind": "traffic", "flows": 40, "size": "10 MB", "load": 0.5},
            "faults": [{"kind": "link_down", "at": "1 ms", "link": ["gpu1", "sw"]}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    result = cli(["run", str(tmp_path / "s.yaml")])
    assert result.exit_code == EXIT_SIMULATION != EXIT_BAD_INPUT
    assert "stalled" in _error(result) and "link sw-gpu1" in result.output
    flows = pd.read_csv(tmp_path / "o" / "flows.csv")  # the flows delivered before the stall
    events = pd.read_csv(tmp_path / "o" / "events.csv")
    assert 0 < len(flows) < 40 and (events["kind"] == "stall").any()


def test_a_fault_after_the_workload_is_reported_not_applied(cli, tmp_path: Path) -> None:
    clean = cli(["run", str(_scenario(tmp_path))])
    late = cli(["run", str(_scenario(tmp_path, workload={"kind": "traffic", "flows": 10},
                                                    faults=[{"kind": "link_down", "at": 1e30,
                                                             "link": ["gpu0", "sw"]}]))])
    assert clean.exit_code == 0 and late.exit_code == 0, late.output
    assert "came after the workload ended" in late.output


def _sweep_scenario(tmp_path: Path) -> Path:
    return _scenario(tmp_path, name="grid")


def test_sweep_rows_are_in_grid_order_and_identical_for_any_jobs(cli, tmp_path: Path) -> None:
    scenario = _sweep_scenario(tmp_path)
    tables = []
    for jobs in ("1", "2"):
        out = tmp_path / f"sweep{jobs}"
        result = cli(["sweep", str(scenario), "--set", "topology_overrides.bandwidth=10GB/s,40GB/s,20GB/s",
                                     "--jobs", jobs, "-o", str(out)])
        assert result.exit_code == 0, result.output
        tables.append((out / "sweep.csv").read_bytes())
    assert tables[0] == tables[1]
    rows = pd.read_csv(tmp_path / "sweep1" / "sweep.csv")
    assert rows["topology_overrides.bandwidth"].tolist() == ["10GB/s", "40GB/s", "20GB/s"]


def test_sweep_checks_every_point_before_running_any(cli, tmp_path: Path) -> None:
    scenario = _sweep_scenario(tmp_path)
    out = tmp_path / "sw"
    result = cli(["sweep", str(scenario), "--set", "collective.channels=1,2,0", "-o", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "collective.channels=0" in _error(result)
    assert not (out / "sweep.csv").exists()


def test_a_failing_sweep_point_keeps_the_other_rows(cli, tmp_path: Path) -> None:
    # gpu1's link fails at 1 us; for the middle point it never comes back (duration null): that point stalls,
    # the two others finish and keep their rows, in grid order
    data = yaml.safe_load(_sweep_scenario(tmp_path).read_text())
    data["workload"] = {"kind": "traffic", "flows": 8, "size": "1 MB"}
    data["faults"] = [{"kind": "link_down", "at": "1 us", "link": ["gpu1", "sw"], "duration": "10 us"}]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    out = tmp_path / "sw"
    result = cli(["sweep", str(tmp_path / "s.yaml"), "--set", "faults.0.duration=10us,.inf,20us", "-o", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT and "faults.0.duration" in _error(result)  # checked before running
    assert not (out / "sweep.csv").exists()
    result = cli(["sweep", str(tmp_path / "s.yaml"), "--set", "faults.0.duration=10us,null,20us", "--jobs", "2",
                  "-o", str(out)])
    assert result.exit_code == EXIT_SIMULATION
    assert "1 of 3 sweep points failed" in _error(result) and "link sw-gpu1" in result.output
    rows = pd.read_csv(out / "sweep.csv")
    assert rows["faults.0.duration"].tolist() == ["10us", "20us"]


def test_a_bad_dask_address_fails_within_seconds(cli, tmp_path: Path) -> None:
    scenario = _sweep_scenario(tmp_path)
    for address in ("bogus", "tcp://127.0.0.1:9"):
        start = time.perf_counter()
        result = cli(["sweep", str(scenario), "--set", "seed=1,2", "--dask", address,
                                     "-o", str(tmp_path / "d")])
        assert result.exit_code == EXIT_BAD_INPUT and "--dask" in _error(result)
        assert time.perf_counter() - start < 15


def _dashboard_digest(tmp_path: Path, hash_seed: str) -> str:
    # a replayed trace: the timeline, memory, link usage and topology figures all come from it
    out = tmp_path / f"dash{hash_seed}"
    trace = Path(__file__).resolve().parents[2] / "workloads" / "examples" / "hand_written.json"
    data = {"name": "dash", "topology": "leaf_spine:2,2,1", "outputs": {"dir": str(out), "tables": "csv"},
            "workload": {"kind": "trace", "file": str(trace)}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run([sys.executable, "-m", "commsim", "run", str(tmp_path / "d.yaml")], env=env, check=True,
                   capture_output=True, timeout=300)
    return hashlib.sha256((out / "dashboard.html").read_bytes()).hexdigest()


def test_dashboards_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    assert _dashboard_digest(tmp_path, "1") == _dashboard_digest(tmp_path, "12345")
