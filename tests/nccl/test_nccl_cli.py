"""``commsim collective`` and ``commsim calibrate nccl-tests`` end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from nccl_data import CALIBRATION, REPO, TOPOLOGY
from typer.testing import CliRunner

from commsim.cli import app
from commsim.collectives.calibrate import load_calibration

runner = CliRunner()


def test_collective_prints_an_nccl_tests_table_and_writes_csv(tmp_path: Path) -> None:
    out = tmp_path / "ar.csv"
    result = runner.invoke(app, ["collective", "--topology", "nvswitch_node:8,300GB/s", "--op", "all_reduce",
                                 "--algo", "ring", "--sizes", "1KiB:4MiB", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    for column in ("size (B)", "count", "time", "algbw", "busbw", "closed form"):
        assert column in result.output
    assert "4194304" in result.output and "1048576" in result.output and "ring/LL" in result.output
    table = pd.read_csv(out)
    assert table["size"].tolist() == [2**k for k in range(10, 23)]
    assert (table["count"] == table["size"] // 4).all()
    assert table["busbw_Bps"].iloc[-1] == pytest.approx(table["algbw_Bps"].iloc[-1] * 2 * 7 / 8)
    assert ((table["time_s"] / table["closed_form_s"] - 1).abs() < 1e-6).all()


def test_collective_auto_with_calibration_and_servers(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    result = runner.invoke(app, ["collective", "-t", str(TOPOLOGY), "--servers", "4", "--calibration",
                                 str(CALIBRATION), "--sizes", "1KiB,1GiB", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table["ranks"].tolist() == [32, 32]
    assert table["algorithm"].tolist() == ["tree", "ring"] and table["protocol"].tolist() == ["LL", "Simple"]


def test_collective_runs_any_registered_schedule() -> None:
    result = runner.invoke(app, ["collective", "-t", "switch:8,50GB/s,500ns", "--algo", "halving_doubling",
                                 "--sizes", "1MiB", "--protocol", "Simple"])
    assert result.exit_code == 0, result.output
    assert "halving_doubling/Simple" in result.output


def test_collective_compare_prints_errors(log_paths: dict[int, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp.csv"
    result = runner.invoke(app, ["collective", "-t", str(TOPOLOGY), "--calibration", str(CALIBRATION),
                                 "--compare", str(log_paths[8]), "--sizes", "1MiB:1GiB:x4", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "measured" in result.output and "error" in result.output and "median |error|" in result.output
    table = pd.read_csv(out)
    assert table["ranks"].unique().tolist() == [8]
    assert table["measured_time_s"].notna().all() and (table["error"].abs() < 0.15).all()
    assert "%" in result.output


def test_bad_log_exits_2_with_one_paragraph(tmp_path: Path) -> None:
    bad = tmp_path / "all_reduce_8gpu.log"
    bad.write_text("#       size         count      type   redop     time   algbw   busbw  error     time   algbw"
                   "   busbw  error\n     1048576        262144     float     sum    72.53\n")
    result = runner.invoke(app, ["collective", "-t", str(TOPOLOGY), "--compare", str(bad)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.output.startswith("error:") and "line 2" in result.output and "Fix:" in result.output
    proc = subprocess.run([sys.executable, "-m", "commsim", "calibrate", "nccl-tests", str(bad), "--topology",
                           str(TOPOLOGY), "-o", str(tmp_path / "c.yaml")], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "all_reduce_8gpu.log" in message and "line 2" in message and "truncated" in message and "Fix:" in message
    assert "\n\n" not in message  # one paragraph


def test_calibrate_writes_a_calibration_that_loads(log_paths: dict[int, Path], tmp_path: Path) -> None:
    out = tmp_path / "cal.yaml"
    result = runner.invoke(app, ["calibrate", "nccl-tests", str(log_paths[2]), str(log_paths[8]),
                                 str(log_paths[16]), "--topology", str(TOPOLOGY), "-o", str(out), "--holdout"])
    assert result.exit_code == 0, result.output
    assert "NCCL model parameters" in result.output and "held out" in result.output
    params = load_calibration(out)
    assert 0.3 < params.local_efficiency <= 1 and 0.3 < params.remote_efficiency <= 1
    assert params.source == str(out)


def test_estimate_mode_gives_the_closed_form_without_simulating(tmp_path):
    from typer.testing import CliRunner

    from commsim.cli import app
    from commsim.collectives import simulate_collective

    out = tmp_path / "estimate.csv"
    result = CliRunner().invoke(app, ["collective", "-t", "switch:8,50GB/s,500ns", "--algo", "halving_doubling",
                                      "--protocol", "Simple", "--sizes", "64MiB", "--estimate", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "estimated from the closed form" in result.output
    import pandas as pd

    row = pd.read_csv(out).iloc[0]
    assert row["time_s"] == row["closed_form_s"]
    from commsim.collectives.nccl import NCCL_DEFAULTS
    from commsim.collectives.nccl_run import collective_config

    config = collective_config(NCCL_DEFAULTS, "Simple")
    simulated = simulate_collective("switch:8,50GB/s,500ns", "all_reduce", 64 * 2**20,
                                    algorithm="halving_doubling", config=config)
    assert abs(row["time_s"] / simulated.time - 1) < 1e-9  # the run includes the launch latency too


# ------------------------------------------------------------------------------ calibration beside the topology
def test_calibration_beside_the_topology_is_used_by_default_and_none_turns_it_off(tmp_path: Path) -> None:
    runs = {}
    for flag in ([], ["--calibration", "none"], ["--calibration", str(CALIBRATION)]):
        out = tmp_path / f"{len(flag)}.csv"
        result = runner.invoke(app, ["collective", "-t", str(TOPOLOGY), "--sizes", "1GiB", "--csv", str(out), *flag])
        assert result.exit_code == 0, result.output
        runs[tuple(flag)] = (result.output, float(pd.read_csv(out)["time_s"].iloc[0]))
    default, none, explicit = runs[()], runs[("--calibration", "none")], runs[("--calibration", str(CALIBRATION))]
    assert "beside the topology" in default[0] and "azure_ndv4.calibration.yaml" in default[0]
    assert "NCCL's default constants (--calibration none)" in none[0]
    assert default[1] == explicit[1] and none[1] < 0.9 * default[1]  # raw links are faster than the fitted ones


def test_compare_takes_op_ranks_and_servers_from_each_log(log_paths: dict[int, Path], tmp_path: Path) -> None:
    out = tmp_path / "two.csv"
    result = runner.invoke(app, ["collective", "-t", str(TOPOLOGY), "--compare", str(log_paths[8]), "--compare",
                                 str(log_paths[16]), "--sizes", "1MiB,1GiB", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "vs all_reduce_8gpu.log (1 server(s) x 8 GPUs)" in result.output
    assert "vs all_reduce_16gpu.log (2 server(s) x 8 GPUs)" in result.output
    assert result.output.count("median |error|") == 2
    table = pd.read_csv(out)
    for column in ("size", "time_s", "busbw_Bps", "measured_busbw_Bps", "error", "log"):
        assert column in table.columns
    assert table.groupby("log")["ranks"].first().to_dict() == {"all_reduce_8gpu.log": 8, "all_reduce_16gpu.log": 16}
    assert (table["error"] == table["measured_time_s"] / table["time_s"] - 1).all()


def test_compare_refuses_flags_that_contradict_the_log(log_paths: dict[int, Path]) -> None:
    for flags, field in ((["--ranks", "4"], "--ranks"), (["--op", "all_gather"], "--op"),
                         (["--servers", "3"], "--servers")):
        result = runner.invoke(app, ["collective", "-t", str(TOPOLOGY), "--compare", str(log_paths[16]), *flags])
        assert result.exit_code == 2, result.output
        assert f"{field} =" in result.output and "all_reduce_16gpu.log" in result.output and "Fix:" in result.output


def test_compare_on_each_new_cluster_runs_from_its_log(tmp_path: Path) -> None:
    from nccl_data import CLUSTERS

    for name, log in (("alcf_polaris", "alltoall_8gpu.log"), ("h100_cluster01", "sendrecv_20gpu_10x2.log"),
                      ("h100_ib400_8node", "all_reduce_16gpu.log")):
        cluster = CLUSTERS[name]
        path = cluster.data / log
        if not path.is_file():
            pytest.skip(f"{path} is not checked out")
        out = tmp_path / f"{name}.csv"
        result = runner.invoke(app, ["collective", "-t", str(cluster.topology), "--compare", str(path),
                                     "--sizes", "256MiB", "--csv", str(out)])
        assert result.exit_code == 0, result.output
        row = pd.read_csv(out).iloc[0]
        assert abs(row["error"]) < 0.10, (name, row["error"])
        assert f"{name}.calibration.yaml (beside the topology" in result.output.replace("\n", "")


def test_calibrate_refuses_a_fit_with_parameters_at_their_bounds(log_paths: dict[int, Path], tmp_path: Path) -> None:
    # a topology whose NICs are 40x too fast: the network efficiency would have to fall below its bound
    fast = tmp_path / "fast.yaml"
    fast.write_text(TOPOLOGY.read_text().replace("port_bandwidth: 200 Gbps", "port_bandwidth: 8000 Gbps")
                    .replace("pcie_bandwidth: 31.5 GB/s", "pcie_bandwidth: 2000 GB/s"))
    out = tmp_path / "cal.yaml"
    result = runner.invoke(app, ["calibrate", "nccl-tests", str(log_paths[16]), "-t", str(fast), "-o", str(out)])
    assert result.exit_code == 2, result.output
    message = result.output.replace("\n", " ")
    assert "pressed against their bounds" in message and "remote_efficiency" in message and "Fix:" in message
    assert not out.exists()


def test_calibrate_reports_leave_one_scale_out_and_records_it(log_paths: dict[int, Path], tmp_path: Path) -> None:
    out = tmp_path / "cal.yaml"
    result = runner.invoke(app, ["calibrate", "nccl-tests", str(log_paths[4]), str(log_paths[8]), "-t",
                                 str(TOPOLOGY), "-o", str(out), "--algo", "ring"])
    assert result.exit_code == 0, result.output
    assert "leave-one-scale-out: 8 GPUs predicted by a fit to 4 GPUs" in result.output.replace("\n", " ")
    text = out.read_text()
    assert "leave_scale_out:" in text and "algorithm: ring" in text
    assert load_calibration(out).algorithm == "ring"


@pytest.mark.parametrize("servers", ["0", "-1"])
def test_collective_refuses_a_server_count_below_one(servers: str) -> None:
    result = runner.invoke(app, ["collective", "-t", str(TOPOLOGY), "--servers", servers, "--sizes", "1MiB"])
    assert result.exit_code == 2 and "--servers" in result.output and "at least 1" in result.output


def test_compare_rejects_a_log_whose_ngpus_disagrees_with_its_rank_lines(log_paths: dict[int, Path],
                                                                          tmp_path: Path) -> None:
    edited = tmp_path / "all_reduce_16gpu.log"
    edited.write_text(log_paths[16].read_text().replace("nThread 1 nGpus 1", "nThread 1 nGpus 8", 1))
    result = runner.invoke(app, ["collective", "-t", str(TOPOLOGY), "--compare", str(edited)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "nGpus 8" in message and "1 of the 16 rank lines" in message and "Fix:" in message
