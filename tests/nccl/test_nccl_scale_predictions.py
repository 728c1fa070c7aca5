"""The closing-note table: every cluster's calibration predicts its measured collectives at 2x, 4x and 16x its
largest measured scale (closed form, NCCL's tuner picking)."""

from __future__ import annotations

import pytest
from nccl_data import CLUSTERS

from commsim.collectives.calibrate import load_calibration, topology_for
from commsim.collectives.closed_form import bus_factor
from commsim.collectives.nccl import describe_cluster, tune
from commsim.collectives.nccl_run import spread_group
from commsim.collectives.nccl_validation import PREDICTION_MULTIPLES, PREDICTION_SIZES, predict_scales


def test_h100_ib400_prediction_rows_are_the_tuners_choice_on_multiplied_servers() -> None:
    CLUSTERS["h100_ib400_8node"].logs()  # skips without the shared data
    table = predict_scales("h100_ib400_8node")
    assert len(table) == len(PREDICTION_MULTIPLES) * len(PREDICTION_SIZES)
    assert sorted(set(table["gpus"])) == [16 * m for m in PREDICTION_MULTIPLES]
    assert sorted(set(table["servers"])) == [2 * m for m in PREDICTION_MULTIPLES]
    row = table[(table["multiple"] == 4) & (table["size"] == 2**30)].iloc[0]
    topo = topology_for(CLUSTERS["h100_ib400_8node"].topology, 8)
    choice = tune(describe_cluster(topo, spread_group(topo, 64, 8)), "all_reduce", 2.0**30,
                  load_calibration(CLUSTERS["h100_ib400_8node"].calibration))
    assert row["choice"] == f"{choice.algorithm}/{choice.protocol}"
    assert row["busbw_Bps"] == pytest.approx(2.0**30 / choice.time * bus_factor("all_reduce", 64), rel=1e-12)


@pytest.mark.parametrize("name", ["alcf_polaris", "azure_ndv4"])
def test_larger_messages_reach_at_least_the_mid_size_busbw(name: str) -> None:
    CLUSTERS[name].logs()
    table = predict_scales(name, multiples=(2, 16))
    for (op, gpus), rows in table.groupby(["op", "gpus"]):
        by_size = dict(zip(rows["size"], rows["busbw_Bps"], strict=True))
        assert by_size[2**30] >= by_size[64 * 2**20] > 0, (op, gpus)
