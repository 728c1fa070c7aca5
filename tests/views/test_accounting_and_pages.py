"""Exposed communication, the per-device breakdown, human units and the sweep page, without a browser."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commsim.views.accounting import BREAKDOWN_PARTS, device_breakdown, exposed_intervals
from commsim.views.dashboard import display_scale, human, write_sweep_dashboard


def _spans(rows):
    return pd.DataFrame(rows, columns=["device", "stream", "kind", "start", "end"])


def test_exposed_is_communication_minus_work_split_by_parallelism():
    spans = _spans([("g0", "compute", "compute", 0.0, 1.0), ("g0", "tp_comm", "comm", 0.5, 2.0),
                    ("g0", "pp_fwd", "comm", 1.8, 3.0), ("g0", "compute", "delay", 2.5, 2.6),
                    ("g1", "dp_comm", "comm", 0.0, 1.0), ("g1", "compute", "compute", 0.0, 1.0)])
    exposed = exposed_intervals(spans)
    assert exposed["g1"] == []                                    # fully hidden
    assert [(round(s, 3), round(e, 3), c) for s, e, c in exposed["g0"]] == [
        (1.0, 1.8, "TP"), (1.8, 2.0, "TP+PP"), (2.0, 2.5, "PP"), (2.6, 3.0, "PP")]
    table = device_breakdown(spans, makespan=4.0).set_index("device")
    assert table.loc["g0", "exposed TP"] == pytest.approx(0.9)
    assert table.loc["g0", "exposed PP"] == pytest.approx(1.0)
    assert table.loc["g0", "compute"] == pytest.approx(1.1)
    assert (table.loc["g0", "idle"], table.loc["g1", "idle"]) == pytest.approx((1.0, 3.0))


@given(st.lists(st.tuples(st.sampled_from(["compute", "comm", "copy", "delay"]),
                          st.sampled_from(["compute", "tp_comm", "dp_comm", "pp_bwd", "x"]),
                          st.floats(0, 10), st.floats(0, 5)), min_size=1, max_size=30))
def test_breakdown_parts_add_up_to_the_makespan(items):
    spans = _spans([("d", stream, kind, start, start + length) for kind, stream, start, length in items])
    makespan = float(spans["end"].max()) + 1.0
    row = device_breakdown(spans, makespan).iloc[0]
    assert sum(row[p] for p in BREAKDOWN_PARTS) == pytest.approx(makespan)
    assert all(row[p] >= -1e-12 for p in BREAKDOWN_PARTS)


def test_human_units():
    assert human(0.3602, "s") == "360.2 ms" and human(505.2 * 2**30, "B") == "505.2 GiB"
    assert human(42e9, "B/s") == "42 GB/s" and human(0.2009, "fraction") == "20.09 %"
    assert human(278032, "count") == "278\u2009032" and human(3.5, "x") == "3.5 x"
    assert display_scale(pd.Series([0.36, 0.1]), "s") == ("ms", 1e-3)


def test_sweep_page_orders_metrics_drops_constants_and_counters_and_names_units(tmp_path):
    table = pd.DataFrame({"topology_overrides.port_bandwidth": ["50Gbps", "100Gbps", "400Gbps"],
                          "activities": [10, 20, 30], "bytes_sent": [2**31] * 3, "makespan": [0.5, 0.3, 0.2],
                          "exposed_communication": [0.3, 0.1, 0.05], "step_time": [0.5, 0.3, 0.2]})
    units = {"activities": "count", "bytes_sent": "B", "makespan": "s", "exposed_communication": "s",
             "step_time": "s"}
    page = write_sweep_dashboard(table, ["topology_overrides.port_bandwidth"], list(table.columns[1:]),
                                 tmp_path / "s.html", units=units).read_text().replace("\\u002f", "/")
    titles = re.findall(r'"title":\{"text":"([^"]+) vs topology_overrides', page)
    assert titles == ["step time", "exposed communication", "makespan"]
    assert '"text":"step time (ms)"' in page and '"text":"topology_overrides.port_bandwidth (GB/s)"' in page
    left_out = page.split("not plotted", 1)[1].split("</p>")[0]
    assert "activities" in left_out and "bytes_sent" in left_out
    assert '"exponentformat":"SI"' in page and "2 GiB" in page
    shown = write_sweep_dashboard(table, ["topology_overrides.port_bandwidth"], list(table.columns[1:]),
                                  tmp_path / "t.html", units=units, show=["activities"]).read_text()
    assert re.findall(r'"title":\{"text":"([^"]+) vs topology_overrides', shown)[0] == "activities"


def test_topology_view_labels_nodes_marks_failed_links_and_colours_by_bandwidth_when_idle():
    from commsim.network.loader import load_topology
    from commsim.views.figures import topology_load

    topo = load_topology(Path(__file__).resolve().parents[2] / "topologies" / "dgx_h100_x2_rail.yaml")
    fig = topology_load(topo, None, 0.0, failed=[("nic0.0", "leafA0.0")])
    names = [t.name for t in fig.data]
    assert fig.layout.title.text == "Topology (edge colour: link bandwidth)"
    assert {"25 GB/s", "450 GB/s"} <= set(names)                     # one legend entry per link speed
    assert "failed during the run" in names
    devices = next(t for t in fig.data if t.name == "device")
    assert devices.mode == "markers+text" and list(devices.text)[:2] == ["gpu0", "gpu1"]
    loaded = topology_load(topo, pd.DataFrame({"kind": ["link"], "target": ["gpu0->nvsw0"], "start": [0.0],
                                               "end": [1.0], "utilisation": [0.5]}), 1.0)
    assert "50% busy" in [t.name for t in loaded.data] and "failed during the run" not in [t.name for t in loaded.data]


def test_sweep_command_plots_asked_metric_first_and_prints_human_units(tmp_path, capsys):
    from commsim.cli import main

    (tmp_path / "c.yaml").write_text("name: c\ntopology: switch:4,50GB/s,500ns\n"
                                     "workload: {kind: collective, op: all_reduce, sizes: [1048576]}\n")
    argv = ["sweep", str(tmp_path / "c.yaml"), "--set", "topology_overrides.bandwidth=10GB/s,100GB/s",
            "-o", str(tmp_path / "out"), "--plot", "bus_factor"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr().out
    assert (info.value.code or 0) == 0 and " us" in out and "GB/s" in out
    page = (tmp_path / "out" / "sweep.html").read_text()
    titles = re.findall(r'"title":\{"text":"([^"]+) vs topology_overrides', page)
    assert titles[:2] == ["bus factor", "time at largest"]            # asked for, then the headline metric
    with pytest.raises(SystemExit) as info:
        main([*argv[:-1], "nope"])
    assert info.value.code == 2 and "--plot = 'nope': is not a metric of this sweep" in capsys.readouterr().err


@pytest.mark.parametrize("stacked", [False, True])
def test_column_bars_draw_one_trace_per_column_over_the_rows(stacked):
    from commsim.views import column_bars

    table = pd.DataFrame({"claim": ["a", "b"], "published": [1.0, 2.0], "simulated": [1.5, 2.5]})
    fig = column_bars(table, "claim", {"published": "paper", "simulated": "here"}, stacked=stacked, title="t")
    assert [t.name for t in fig.data] == ["paper", "here"]
    assert list(fig.data[1].x) == ["a", "b"] and list(fig.data[1].y) == [1.5, 2.5]
    assert fig.layout.barmode == ("stack" if stacked else "group")
    labelled = column_bars(table, ["first", "second"], {"simulated": "here"})
    assert list(labelled.data[0].x) == ["first", "second"]
