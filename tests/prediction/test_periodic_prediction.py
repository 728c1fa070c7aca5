"""The periodic, fast prediction equals the full replay of every micro-batch; the metrics follow by hand."""

from __future__ import annotations

import math

import pytest

from commsim.network.generators import rail_optimized
from commsim.simulation import Simulation
from commsim.workloads import prediction
from commsim.workloads.breakdown import BREAKDOWN_COLUMNS
from commsim.workloads.flops import model_flops
from commsim.workloads.models import TransformerSpec
from commsim.workloads.prediction import periodic_points, predict_training_step

TINY = TransformerSpec(name="tiny", layers=8, hidden=512, heads=8, ffn_hidden=2048, vocab=8000, max_seq_len=512)


def cluster() -> Simulation:
    return Simulation(rail_optimized(servers=2, gpus_per_server=8, device="h100_sxm", nvlink_bandwidth="450 GB/s",
                                     port_bandwidth="400 Gbps", servers_per_leaf=2, spines=1), record_usage=False)


@pytest.mark.parametrize(("tp", "pp", "dp", "v"), [(8, 2, 1, 1), (2, 4, 2, 1), (1, 4, 4, 1), (4, 1, 4, 1), (2, 2, 2, 2),
                                                   (8, 2, 1, 4)])
def test_periodic_fast_prediction_equals_the_full_replay(tp, pp, dp, v):
    config = {"tp": tp, "pp": pp, "dp": dp, "sequence_parallel": tp > 1, "num_micro_batches": 12,
              "virtual_pipeline_stages": v}
    fast = predict_training_step(TINY, config, cluster)
    full = predict_training_step(TINY, config, cluster, fast=False, periodic=False)
    assert len(fast.replayed) == 3 and full.replayed == [12]
    step = full.metrics["step_time"][0]
    for name, (value, _unit) in full.metrics.items():
        assert math.isclose(fast.metrics[name][0], value, rel_tol=1e-9, abs_tol=1e-9 * step), name
    for column in ("end", "compute_busy", *BREAKDOWN_COLUMNS):
        for a, b in zip(full.cohorts[column], fast.cohorts[column], strict=True):
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * step), column


def test_a_step_that_is_not_periodic_is_replayed_in_full(monkeypatch):
    monkeypatch.setattr(prediction, "PERIODIC_TOLERANCE", -1.0)   # nothing counts as periodic
    out = predict_training_step(TINY, {"tp": 8, "pp": 2, "num_micro_batches": 8, "sequence_parallel": True}, cluster)
    assert out.replayed == [8]
    assert any("not periodic" in note for note in out.notes)


def test_periodic_points():
    assert periodic_points(64, 8) == [8, 9, 10]
    assert periodic_points(10, 8) is None          # too few micro-batches to gain anything
    assert periodic_points(64, 1) == [1, 2, 3]     # gradient accumulation repeats too
    # interleaved: at m = pp every stage runs all forwards first, so the steady state starts at 2·pp
    assert periodic_points(32, 4, virtual_stages=2) == [8, 12, 16]
    assert periodic_points(16, 4, virtual_stages=2) is None


def test_breakdown_adds_up_to_the_step_and_metrics_by_hand():
    config = {"tp": 2, "pp": 4, "dp": 2, "sequence_parallel": True, "num_micro_batches": 8}
    out = predict_training_step(TINY, config, cluster)
    m = {k: v for k, (v, _) in out.metrics.items()}
    parts = ["compute_time", "recompute_time", "pipeline_bubble",
             *(c for c in BREAKDOWN_COLUMNS if c.startswith("exposed_"))]
    assert math.isclose(sum(m[p] for p in parts), m["step_time"], rel_tol=1e-9)
    assert all(m[p] >= -1e-12 for p in parts)
    # 8 micro-batches of 1 x 512 tokens on each of 2 replicas; H100 dense BF16 peak 989 TFLOP/s
    flops = model_flops(TINY, seq_len=512, global_batch=16)
    assert m["model_flops_per_step"] == flops and m["tokens_per_step"] == 16 * 512
    assert math.isclose(m["tflops_per_gpu"], flops / m["step_time"] / 16 / 1e12, rel_tol=1e-12)
    assert math.isclose(m["mfu"], flops / m["step_time"] / 16 / 989e12, rel_tol=1e-12)
    assert m["hfu"] == m["mfu"]                    # no recomputation
    assert m["peak_memory_per_gpu"] > 0


def _runs(split: list[float], total: list[float]) -> list[dict]:
    """Three synthetic replays of one stage: compute grows 1 s per point, ``split`` of ``total`` waiting is pipeline."""
    import pandas as pd

    runs = []
    for k, (pp_comm, waiting) in enumerate(zip(split, total, strict=True)):
        row = dict.fromkeys(BREAKDOWN_COLUMNS, 0.0)
        row.update(cohort=0, end=10.0 + k + waiting, compute_busy=10.0 + k, compute=10.0 + k,
                   exposed_pp_comm=pp_comm, idle=waiting - pp_comm)
        runs.append({"step_time": row["end"], "cohorts": pd.DataFrame([row])})
    return runs


def test_a_waiting_split_off_its_line_is_extended_by_its_mean_increment_and_reported():
    # the total waiting time is on a line (2, 2.5, 3 s); its pipeline part is not (1, 1.3, 1.5 s)
    out = prediction._extend(_runs([1.0, 1.3, 1.5], [2.0, 2.5, 3.0]), [4, 5, 6], 10)
    assert out is not None and set(out.loose) == {0}
    assert math.isclose(out.loose[0], 0.1, rel_tol=1e-12)
    row = out.cohorts.iloc[0]
    assert math.isclose(row["exposed_pp_comm"], 1.5 + 4 * 0.25) and math.isclose(row["idle"], 3.0 + 4 * 0.5 - 2.5)
    assert math.isclose(out.step_time, 15.0 + 4 * 1.5) and math.isclose(row["compute"], 16.0)


def test_a_waiting_total_off_its_line_is_not_periodic():
    assert prediction._extend(_runs([1.0, 1.2, 1.4], [2.0, 2.5, 3.1]), [4, 5, 6], 10) is None
    exact = prediction._extend(_runs([1.0, 1.2, 1.4], [2.0, 2.5, 3.0]), [4, 5, 6], 10)
    assert exact is not None and exact.loose == {}


@pytest.mark.parametrize(("tp", "pp", "dp"), [(2, 4, 2), (1, 4, 4)])
def test_periodic_prediction_with_reused_collectives_equals_its_full_replay(tp, pp, dp):
    # each probe replay times its own first runs: DP buckets simulated in the kernel in every probe alike
    config = {"tp": tp, "pp": pp, "dp": dp, "sequence_parallel": tp > 1, "num_micro_batches": 12}
    fast = predict_training_step(TINY, config, cluster, reuse_collectives=True, fold="always")
    full = predict_training_step(TINY, config, cluster, reuse_collectives=True, fold="always", periodic=False)
    assert len(fast.replayed) == 3 and full.replayed == [12]
    step = full.metrics["step_time"][0]
    for name, (value, _unit) in full.metrics.items():
        assert math.isclose(fast.metrics[name][0], value, rel_tol=1e-9, abs_tol=1e-9 * step), name
