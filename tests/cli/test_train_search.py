"""``commsim train`` and ``commsim search`` end to end; training metrics in ``metrics.csv``; an interrupted search."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from commsim.cli import app
from commsim.errors import ConfigError

runner = CliRunner()
TINY_ARGS = ["--num-layers", "4", "--hidden-size", "512", "--num-attention-heads", "8", "--seq-length", "256",
             "--max-position-embeddings", "256", "--vocab-size", "8000", "--micro-batch-size", "1",
             "--global-batch-size", "16", "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
             "--sequence-parallel", "--bf16"]
TOPOLOGY = ["-t", "switch:8,450GB/s,1us"]


def test_train_prints_the_summary_and_writes_metrics(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", *TOPOLOGY, *TINY_ARGS, "--lr", "1e-4", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in ("TP 2 x PP 2 x DP 2 on 8 GPUs", "8 micro-batches", "step time", "MFU", "TFLOP/s per GPU",
                 "peak memory per GPU", "pipeline bubble", "ignored: --lr"):
        assert text in result.output, text
    metrics = pd.read_csv(tmp_path / "metrics.csv").set_index("metric")["value"]
    assert {"step_time", "mfu", "hfu", "tflops_per_gpu", "peak_memory_per_gpu", "compute_time", "exposed_tp_comm",
            "exposed_pp_comm", "exposed_dp_comm", "pipeline_bubble", "recompute_time"} <= set(metrics.index)
    assert len(pd.read_csv(tmp_path / "stages.csv")) == 2


def test_train_full_and_fast_agree() -> None:
    fast = runner.invoke(app, ["train", *TOPOLOGY, *TINY_ARGS, "--num-gpus", "4", "--global-batch-size", "8"])
    full = runner.invoke(app, ["train", *TOPOLOGY, *TINY_ARGS, "--num-gpus", "4", "--global-batch-size", "8",
                               "--full"])
    assert fast.exit_code == 0 and full.exit_code == 0, fast.output + full.output
    step = [line for line in fast.output.splitlines() if "step time" in line]
    assert step == [line for line in full.output.splitlines() if "step time" in line]


def _commsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commsim", *args], capture_output=True, text=True, timeout=300)


def test_train_unknown_flag_lists_close_matches() -> None:
    proc = _commsim("train", *TOPOLOGY, *TINY_ARGS, "--pipeline-model-paralel-size", "2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "did you mean --pipeline-model-parallel-size" in proc.stderr


def test_train_bad_division_names_the_rule() -> None:
    proc = _commsim("train", *TOPOLOGY, *TINY_ARGS, "--global-batch-size", "9")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "--global-batch-size" in proc.stderr and "multiple of micro-batch size" in proc.stderr


def test_run_training_scenario_writes_megatron_metrics(tmp_path: Path) -> None:
    scenario = tmp_path / "train.yaml"
    scenario.write_text(yaml.safe_dump({"name": "train", "topology": "switch:8,450GB/s,1us", "workload": {
        "kind": "training", "model": "llama-2-7b", "tp": 4, "pp": 2, "num_micro_batches": 6, "seq_len": 256,
        "sequence_parallel": True, "fast_replay": True}}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(scenario), "-o", str(out), "--format", "csv"])
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(out / "metrics.csv").set_index("metric")["value"]
    for name in ("step_time", "mfu", "hfu", "tflops_per_gpu", "peak_memory_per_gpu", "compute_time",
                 "exposed_tp_comm", "exposed_pp_comm", "exposed_dp_comm", "pipeline_bubble", "recompute_time"):
        assert name in metrics.index, name
    assert 0 < metrics["mfu"] < 1 and metrics["peak_memory_per_gpu"] > 0
    assert "periodic replay" in result.output


def test_search_ranks_and_writes_csv_and_dashboard(tmp_path: Path) -> None:
    model = tmp_path / "tiny.yaml"
    model.write_text(yaml.safe_dump({"name": "tiny", "layers": 4, "hidden": 512, "heads": 8, "ffn_hidden": 2048,
                                     "vocab": 8000, "max_seq_len": 256}))
    result = runner.invoke(app, ["search", "--model", str(model), *TOPOLOGY, "--global-batch-size", "16",
                                 "--tp", "1,2,3", "--pp", "1,2", "--micro-batch-sizes", "1,2", "--virtual-stages", "1",
                                 "--recompute", "none", "--distributed-optimizer", "false", "-j", "1",
                                 "-o", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "s" / "search.csv")
    ranked = table[table["status"] == "ok"]
    assert ranked["step_time"].is_monotonic_increasing and len(ranked) == 8
    assert set(table.loc[table["status"] == "rejected", "tp"]) == {3}
    page = (tmp_path / "s" / "search.html").read_text()
    assert "plotly" in page and "Rejected" in page and "does not divide the 8 GPUs" in page


def test_interrupted_search_keeps_finished_rows(tmp_path: Path) -> None:
    out = tmp_path / "search"
    proc = subprocess.Popen([sys.executable, "-m", "commsim", "search", "--model", "llama-2-7b", *TOPOLOGY,
                             "--global-batch-size", "64", "--seq-length", "256", "--tp", "2,4,8", "--pp", "1,2,4",
                             "--micro-batch-sizes", "1,2,4,8", "-j", "1", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    csv = out / "search.csv"
    deadline = time.time() + 300

    def predicted() -> int:
        return int((pd.read_csv(csv)["status"] == "ok").sum()) if csv.exists() else 0

    while time.time() < deadline and predicted() < 1:
        time.sleep(0.5)
    assert predicted() >= 1, "no layout was predicted in time"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    rows = pd.read_csv(csv)
    assert 1 <= (rows["status"] == "ok").sum() < 36
    assert (out / "search.html").exists()


def test_help_of_train_and_search() -> None:
    for command in (["train", "--help"], ["search", "--help"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0 and "Usage" in result.output
    assert "ignored with a stated reason" in runner.invoke(app, ["train", "--help"]).output


def test_search_refuses_an_unknown_recompute_choice_before_any_work(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", "--model", "llama-2-7b", *TOPOLOGY, "--global-batch-size", "16",
                                 "--recompute", "none,sometimes", "-o", str(tmp_path / "s")])
    assert isinstance(result.exception, ConfigError) and result.exception.field == "--recompute"
    assert "none, selective, full" in str(result.exception)
    assert not (tmp_path / "s" / "search.csv").exists()
