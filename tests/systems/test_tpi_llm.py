"""TPI-LLM study: the window scheduler, all-reduce latencies, the inference engine, bad input, outputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import simpy

from commsim.collectives.kary_tree import kary_tree_all_reduce, tree_depth
from commsim.config import validate
from commsim.devices.memory import MemoryPool
from commsim.errors import ConfigError
from commsim.scenario.runner import simulate
from commsim.systems import get_study
from commsim.systems.tpi_llm import SUMMARY_COLUMNS
from commsim.systems.tpi_llm.allreduce import link_latency, time_allreduce
from commsim.systems.tpi_llm.hardware import edge_topology, path_latency, wifi_topology
from commsim.systems.tpi_llm.params import TPIParams
from commsim.systems.tpi_llm.partition import largest_remainder, split_heads, tp_blocks
from commsim.systems.tpi_llm.plans import offload, pipeline, single_device, tpi
from commsim.systems.tpi_llm.run import BREAKDOWN, simulate_inference
from commsim.systems.tpi_llm.scheduler import (
    loose_condition,
    schedule_times,
    steady_stall,
    tight_condition,
)
from commsim.systems.tpi_llm.workload import inference_trace, workspace_bytes
from commsim.workloads.models import load_model
from commsim.workloads.window import SlidingWindow

REPO = Path(__file__).resolve().parents[2]
MS = 1e-3
TOY = """name: toy-llama
layers: 4
hidden: 512
heads: 8
kv_heads: 4
ffn_hidden: 1536
gated_ffn: true
vocab: 2000
max_seq_len: 256
tied_embeddings: false
bias: false
norm: rmsnorm
position: rotary
source: a small Llama-shaped test model
"""


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("models") / "toy.yaml"
    path.write_text(TOY)
    return str(path)


@pytest.fixture(scope="module")
def toy(toy_path: str):
    return load_model(toy_path)


# ------------------------------------------------------------------ the window scheduler, alone
def _drive(busy: list[float], load: list[float], window: int, periods: int, *, prefetch: bool = True):
    """Run the scheduler with fixed load and busy times; return stalls, the window and the pool."""
    env = simpy.Environment()
    pool = MemoryPool("dev", capacity=1e12)
    n = len(busy)
    sizes = [100.0 * (i + 1) for i in range(n)]
    loads_started: list[float] = []

    def loader(block: int, use: int):
        loads_started.append(env.now)
        return env.timeout(load[block])

    win = SlidingWindow(env, range(n), periods * n, sizes, [0.0] * n, window, loader, pool, prefetch=prefetch)
    held_at_alloc: list[int] = []
    allocate = pool.allocate

    def spy(nbytes: float, label: str = "") -> int:
        handle = allocate(nbytes, label)
        held_at_alloc.append(len(pool._held))
        return handle

    pool.allocate = spy  # type: ignore[method-assign]
    stalls = np.zeros(periods * n)

    def runner():
        for k in range(periods * n):
            start = env.now
            yield win.ready(k)
            stalls[k] = env.now - start
            yield env.timeout(busy[k % n])
            win.release(k)

    win.start()
    env.process(runner())
    env.run()
    return stalls, win, pool, held_at_alloc, loads_started


def test_issue_example_tight_fails_loose_holds():
    busy = [11 * MS + 14 * MS, 17 * MS + 14 * MS]   # attention + all-reduce, FFN + all-reduce
    load = [18 * MS, 30 * MS]
    assert not tight_condition(busy, load)          # the FFN load (30 ms) exceeds attention + all-reduce (25 ms)
    assert loose_condition(busy, load)              # 48 ms of loads per 56 ms of layer
    assert tight_condition(busy, [18 * MS, 25 * MS])


def test_slow_prefetch_stalls_by_the_missing_time_with_window_2():
    busy, load = [25 * MS, 31 * MS], [18 * MS, 30 * MS]
    stalls, *_ = _drive(busy, load, window=2, periods=12)
    steady = stalls[-8:].reshape(-1, 2)
    assert np.allclose(steady[:, 0], 0.0, atol=1e-12)               # attention: its 18 ms load hides behind FFN
    assert np.allclose(steady[:, 1], 5 * MS, atol=1e-12)            # FFN waits 30 - 25 ms
    _, expected = schedule_times(busy, load, 2, 12)
    assert np.allclose(stalls, expected, atol=1e-12)                # the DES follows the recurrence exactly
    assert steady_stall(busy, load, 2) == pytest.approx([0.0, 5 * MS], abs=1e-12)


def test_deeper_window_absorbs_the_stall_when_the_loose_condition_holds():
    busy, load = [25 * MS, 31 * MS], [18 * MS, 30 * MS]
    stalls, *_ = _drive(busy, load, window=3, periods=12)
    assert np.allclose(stalls[-10:], 0.0, atol=1e-12)
    # when even the loose condition fails, the stall per period is the deficit (disk-bound)
    slow = [40 * MS, 30 * MS]
    stalls, *_ = _drive(busy, slow, window=3, periods=20)
    assert stalls[-2:].sum() == pytest.approx(sum(slow) - sum(busy), abs=1e-9)


@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_window_never_holds_more_than_w_and_frees_all_it_loaded(window: int):
    rng = np.random.default_rng(window)
    busy = rng.uniform(1, 20, size=7) * MS
    load = rng.uniform(1, 30, size=7) * MS
    _, win, pool, held, _ = _drive(list(busy), list(load), window=window, periods=6)
    assert win.max_held <= window
    assert max(held) <= window
    # with loads much faster than compute the prefetcher runs ahead until the window is full, not further
    _, fast, _, held_fast, _ = _drive(list(busy), list(load / 100), window=window, periods=6)
    assert fast.max_held == window and max(held_fast) == window
    assert win.loads == 42
    assert pool.allocated_total == pytest.approx(pool.freed_total)
    assert pool.in_use == 0.0
    assert pool.peak <= sum(sorted([100.0 * (i + 1) for i in range(7)])[-window:])


def test_on_demand_loading_stalls_for_every_load():
    busy, load = [5 * MS, 5 * MS], [3 * MS, 4 * MS]
    stalls, _, _, _, started = _drive(busy, load, window=1, periods=3, prefetch=False)
    assert np.allclose(stalls, np.tile(load, 3))
    assert started[:3] == pytest.approx([0.0, 8 * MS, 17 * MS])      # each load starts when the runner asks
    # with prefetch and w = 1 a load still waits for the previous block's release
    stalls_w1, *_ = _drive(busy, load, window=1, periods=3)
    assert np.allclose(stalls_w1, np.tile(load, 3))


def test_window_below_one_is_refused():
    with pytest.raises(ConfigError, match="at least 1 block"):
        SlidingWindow(simpy.Environment(), [0], 1, [1.0], [0.0], 0, lambda b, u: None, MemoryPool("d", 1e9))


# ------------------------------------------------------------------ all-reduce on the real topology
def test_allreduce_link_latency_on_the_4_hop_testbed_is_exact():
    topo = edge_topology(8, latency=1 * MS)
    for algorithm, hops in (("star", 8), ("tree", 16), ("ring", 56), ("ps", 8)):
        assert link_latency(topo, algorithm) == pytest.approx(hops * MS, rel=1e-12)
    assert link_latency(topo, "tree", tree_fanout=2) == pytest.approx(24 * MS, rel=1e-12)  # binary: depth 3


def test_three_devices_behind_one_router_halve_the_route():
    shared = edge_topology(3, latency=1 * MS, devices_per_router=3)
    apart = edge_topology(3, latency=1 * MS)
    assert path_latency(shared, "dev1", "dev0") == pytest.approx(2 * MS)
    assert path_latency(apart, "dev1", "dev0") == pytest.approx(4 * MS)
    assert link_latency(shared, "star") == pytest.approx(4 * MS, rel=1e-12)
    assert link_latency(apart, "star") == pytest.approx(8 * MS, rel=1e-12)


def test_star_pays_for_bandwidth_with_incast_and_ring_for_latency():
    topo = edge_topology(8)
    size = 8192 * 4.0
    star = time_allreduce(topo, "star", size)
    ring = time_allreduce(topo, "ring", size)
    # star: 7 partial sums share the master's 300 Mbps link each way, on top of 8 tau
    assert star == pytest.approx(8 * MS + 2 * 7 * size / (300e6 / 8), rel=1e-9)
    assert star < ring
    # raising the bandwidth shrinks only the bandwidth term
    fast = time_allreduce(edge_topology(8, bandwidth=1e9 / 8), "star", size)
    assert fast == pytest.approx(8 * MS + 2 * 7 * size / (1e9 / 8), rel=1e-9)


def test_tree_schedule_shape():
    schedule = kary_tree_all_reduce(8, 1.0, fanout=3)
    schedule.check()
    assert tree_depth(8, 3) == 2 and tree_depth(8, 2) == 3 and tree_depth(1, 3) == 0
    assert [s.phase for s in schedule.steps] == ["reduce", "reduce", "broadcast", "broadcast"]
    assert sorted(schedule.steps[1].src.tolist()) == [1, 2, 3]
    assert schedule.wire_bytes == 2 * 7


# ------------------------------------------------------------------ partition
def test_heads_follow_shares_in_whole_kv_groups():
    spec = load_model("llama-2-70b")
    heads, kv = split_heads(spec, [0.4, 0.2, 0.2, 0.2])
    # one KV head each, then the spare 4 by largest remainder of 1.6 : 0.8 : 0.8 : 0.8 (ties keep device order)
    assert kv == [2, 2, 2, 2]
    assert split_heads(spec, [0.7, 0.1, 0.1, 0.1])[1] == [4, 2, 1, 1]   # 2.8 : 0.4 : 0.4 : 0.4 of the spare 4
    assert sum(heads) == 64 and all(h == 8 * k for h, k in zip(heads, kv, strict=True))
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    with pytest.raises(ConfigError, match="key-value heads"):
        split_heads(spec, [1 / 9] * 9)


def test_blocks_hold_the_whole_model_once(toy):
    blocks = tp_blocks(toy, [0.5, 0.25, 0.25])
    total = sum(b.params for seq in blocks for b in seq)
    one = sum(b.params for b in tp_blocks(toy, [1.0])[0])
    replicated_norms = 2 * 2 * toy.layers * toy.hidden               # 2 extra devices hold both norms of a layer
    assert total == one + replicated_norms
    assert [b.kind for b in blocks[0]][:2] == ["embed", "attn"] and blocks[0][-1].kind == "head"
    assert all(b.kind in ("attn", "ffn") for b in blocks[1])


# ------------------------------------------------------------------ the engine
def test_engine_window_memory_and_time_accounting(toy):
    topo = edge_topology(4)
    stats = simulate_inference(tpi(toy, topo, window=2, decode_tokens=3, runtime_memory=1e8))
    assert stats.ok
    assert (stats.max_held == 2).all()
    assert np.allclose(stats.allocated, stats.freed)                 # every byte loaded is freed at the end
    # the master's time per decode token is exactly its compute, all-reduce, waits, stalls and swap
    assert stats.breakdown[0].sum() == pytest.approx(stats.token_latency, rel=1e-9)
    assert stats.token_times[0] == pytest.approx(stats.ttft)
    # each token reloads every block, and the window prefetches the next token's first 2 blocks (attn.0, ffn.0)
    blocks = tp_blocks(toy, [0.25] * 4)
    assert stats.bytes_loaded[1] == pytest.approx(4 * sum(b.nbytes for b in blocks[1]) + blocks[1][0].nbytes
                                                  + blocks[1][1].nbytes)
    # the loader prefetches past the last token as a longer run would: a token's latency does not depend on
    # how many tokens follow it
    short = simulate_inference(tpi(toy, topo, window=2, decode_tokens=1, runtime_memory=1e8))
    assert short.token_times == pytest.approx(stats.token_times[:2], rel=1e-12)
    # peak of a worker: runtime + KV cache + prefill workspace + the block it runs + the next one loading with
    # its FP16 staging copy (window 2: one attention and one FFN slice)
    attn, ffn = blocks[1][0], blocks[1][1]
    kv = 2 * attn.kv_width * toy.layers * (16 + 3) * 4.0
    fixed = 1e8 + kv + workspace_bytes(toy, blocks[1], 16)
    assert stats.peak_memory[1] == pytest.approx(fixed + attn.nbytes + ffn.nbytes + 2.0 * max(attn.params, ffn.params),
                                                 rel=1e-12)


def test_workers_in_lockstep_or_alone_give_the_same_run(toy):
    topo = edge_topology(4)
    together = simulate_inference(tpi(toy, topo, window=2, decode_tokens=1))
    alone = simulate_inference(tpi(toy, topo, window=2, decode_tokens=1, lockstep=False))
    assert alone.token_times == pytest.approx(together.token_times, rel=1e-12)
    assert np.array_equal(alone.peak_memory, together.peak_memory)
    assert np.allclose(alone.breakdown, together.breakdown, rtol=1e-9, atol=1e-15)


TWO_LAYERS = TOY.replace("name: toy-llama", "name: toy-2").replace("layers: 4", "layers: 2")


def test_two_layer_timeline_by_hand(tmp_path: Path):
    """Worker dev1 of 2 devices, window 2: loads one after another, each as soon as the window frees a slot;
    a kernel starts when its block is loaded and the step before it is done; every star all-reduce is 2 x 4
    links of 1 ms (bandwidth negligible); the worker's first kernel of a token waits for the master's input."""
    path = tmp_path / "two.yaml"
    path.write_text(TWO_LAYERS)
    model = load_model(str(path))
    disk = 100e6
    device = {"base": "edge_cpu_8core", "memory_bandwidth": "1 PB/s", "disk_read_bandwidth": disk}
    topo = edge_topology(2, device=device, bandwidth=1e12, latency=MS)
    stats = simulate_inference(tpi(model, topo, window=2, decode_tokens=1, prompt_tokens=4, record=True,
                                   runtime_memory=0.0, staging=False))
    spans = stats.result.spans
    mine = spans[spans["device"] == "dev1"]
    loads = mine[mine["kind"] == "disk"].sort_values("start")
    kernels = mine[mine["kind"] == "compute"].sort_values("start")
    reduces = mine[mine["name"].str.startswith("all-reduce")].sort_values("start")
    inputs = mine[mine["name"] == "waiting for input"].sort_values("start")
    blocks = tp_blocks(model, [0.5, 0.5])[1]
    assert [b.name for b in blocks] == ["attn.0", "ffn.0", "attn.1", "ffn.1"]
    uses = 2 * len(blocks)   # the prompt, then one decoded token
    assert len(kernels) == len(reduces) == uses
    # the window prefetches the next token's first two blocks as well (loaded, never run)
    assert loads["name"].tolist() == [f"load {b.name}" for b in blocks] * 2 + ["load attn.0", "load ffn.0"]
    load_start, load_end = loads["start"].to_numpy(), loads["end"].to_numpy()
    start, end = kernels["start"].to_numpy(), kernels["end"].to_numpy()
    # an all-reduce op starts when dev1 reaches it and its transfers when the master does too ("began")
    r_start = np.array([tags.get("began", t) for tags, t in zip(reduces["tags"], reduces["start"], strict=True)])
    r_end = reduces["end"].to_numpy()
    for k in range(uses):
        block = blocks[k % len(blocks)]
        assert load_end[k] - load_start[k] == pytest.approx(block.params * 2.0 / disk, rel=1e-9)  # FP16 file
        if k >= 2:   # the window of 2: use k's load waits for the disk and for use k - 2's release
            assert load_start[k] == pytest.approx(max(load_end[k - 1], r_end[k - 2]), abs=1e-12)
        before = float(inputs["end"].iloc[k // len(blocks)]) if k % len(blocks) == 0 else r_end[k - 1]
        assert start[k] == pytest.approx(max(load_end[k], before), abs=1e-12)     # a stall when the load is late
        assert r_start[k] >= end[k] - 1e-12
        tokens = 4 if k < len(blocks) else 1
        star = 8 * MS + 2 * tokens * model.hidden * 4 / 1e12               # 2 routes of 4 links, FP32 rows
        assert r_end[k] - r_start[k] == pytest.approx(star, rel=1e-9)
    stalls = mine[mine["name"].str.startswith("stall")]
    assert len(stalls) > 0
    for row in stalls.itertuples():
        k = int(np.flatnonzero(np.isclose(start, row.end, atol=1e-12))[0])
        assert row.end == pytest.approx(load_end[k], abs=1e-12)                # a stall ends when its load does


def test_ttft_grows_with_the_prompt(toy):
    """Prefill is a forward pass over every prompt token: GEMMs and all-reduces grow with the prompt length."""
    topo = edge_topology(4, device={"base": "edge_cpu_8core", "disk_read_bandwidth": "20 GB/s"})
    runs = {n: simulate_inference(tpi(toy, topo, window=2, prompt_tokens=n, decode_tokens=1)) for n in (16, 64, 128)}
    ttft = [runs[n].ttft for n in (16, 64, 128)]
    assert ttft[0] < ttft[1] < ttft[2]
    compute = {n: runs[n].prefill[0, BREAKDOWN.index("compute")] for n in runs}
    allreduce = {n: runs[n].prefill[0, BREAKDOWN.index("allreduce")] for n in runs}
    assert 2.0 < compute[128] / compute[16] <= 8.5 * 1.1            # up to 8x tokens (weights read once)
    assert allreduce[128] > 2 * allreduce[16]                         # 8x the activations on 300 Mbps links
    # decode does not depend on the prompt's length much (one token; the KV cache grows)
    assert runs[128].token_latency == pytest.approx(runs[16].token_latency, rel=0.2)


def test_summary_reports_the_memory_of_a_run_that_does_not_fit(toy):
    from commsim.systems.tpi_llm.study import _row, run_setting, summary_csv

    params = TPIParams()
    tiny = edge_topology(2, device={"base": "edge_cpu_8core", "memory": "10 MB", "swap": "5 MB"})
    failed = run_setting(params.model_copy(update={"runtime_memory": 0.0}), toy, tiny, None)
    assert failed.status == "out of memory"
    assert failed.needed_memory.max() > 15e6                          # more than RAM + swap: why it failed
    roomy = edge_topology(2, device={"base": "edge_cpu_8core", "memory": "1 GB"})
    fits = run_setting(params.model_copy(update={"runtime_memory": 0.0}), toy, roomy, None)
    assert fits.ok and fits.needed_memory.max() == pytest.approx(failed.needed_memory.max(), rel=1e-9)
    table = pd.DataFrame([_row("toy", 2, None, "star", failed), _row("toy", 2, None, "star", fits)])
    assert table["fits"].tolist() == ["oom", "fits"]
    assert table["peak_memory_gb"].iloc[0] == pytest.approx(failed.needed_memory.max() / 1e9)
    written = summary_csv(table)
    assert written["ttft_s"].iloc[0] == "OOM" and written["token_latency_s"].iloc[0] == "OOM"
    assert written["ttft_s"].iloc[1] == pytest.approx(fits.ttft)


def test_scheduler_off_fits_swaps_or_fails(toy):
    small = {"base": "edge_cpu_8core", "memory": "20 MB", "swap": "20 MB"}   # the master's slice is ~25 MB
    topo = edge_topology(2, device=small)
    ok = simulate_inference(tpi(toy, topo, window=2, runtime_memory=0.0))
    assert ok.ok and ok.peak_memory.max() < 20e6 and ok.peak_swapped.max() == 0
    off = simulate_inference(tpi(toy, topo, window=None, runtime_memory=0.0))
    assert off.ok and off.peak_swapped.max() > 0 and off.breakdown[:, BREAKDOWN.index("swap")].max() > 0
    tiny = edge_topology(2, device={"base": "edge_cpu_8core", "memory": "10 MB", "swap": "5 MB"})
    failed = simulate_inference(tpi(toy, tiny, window=None, runtime_memory=0.0))
    assert failed.status == "out of memory" and "out of memory on dev" in failed.message
    assert math.isnan(failed.token_latency) and math.isnan(failed.max_peak_memory)


def test_latency_bound_star_beats_ring_and_bandwidth_barely_matters(toy):
    fast_disk = {"base": "edge_cpu_8core", "disk_read_bandwidth": "20 GB/s"}
    slow_links = edge_topology(4, device=fast_disk)
    star = simulate_inference(tpi(toy, slow_links, window=2, allreduce="star"))
    ring = simulate_inference(tpi(toy, slow_links, window=2, allreduce="ring"))
    assert star.token_latency < ring.token_latency
    quick = simulate_inference(tpi(toy, edge_topology(4, device=fast_disk, bandwidth=1e9 / 8), window=2))
    assert abs(quick.token_latency / star.token_latency - 1) < 0.10
    far = simulate_inference(tpi(toy, edge_topology(4, device=fast_disk, latency=5 * MS), window=2))
    assert far.token_latency > 2 * star.token_latency               # latency, not bandwidth, dominates


def test_release_policy_and_parameter_server(toy):
    topo = edge_topology(4)
    late = simulate_inference(tpi(toy, topo, window=2, release="after_sync"))
    early = simulate_inference(tpi(toy, topo, window=2, release="after_compute"))
    # freeing a block before its all-reduce lets the next load overlap the all-reduce: never slower
    assert early.token_latency <= late.token_latency + 1e-12
    assert early.breakdown[0, BREAKDOWN.index("stall")] < late.breakdown[0, BREAKDOWN.index("stall")]
    ps = simulate_inference(tpi(toy, topo, window=2, allreduce="ps"))
    star = simulate_inference(tpi(toy, topo, window=2, allreduce="star"))
    assert ps.ok and ps.peak_memory.shape == (4,)                       # the server joins the group, not the devices
    trace = inference_trace(tpi(toy, topo, window=2, allreduce="ps", decode_tokens=1))
    assert trace.ranks == 5 and trace.communicators["tp"] == [[4, 0, 1, 2, 3]]   # the server first: the star's root
    server = trace.programs[-1]
    assert server.ranks == [4] and [op.kind for op in server.ops] == ["collective"] * (2 * toy.layers * 2)
    assert ps.breakdown[0, BREAKDOWN.index("allreduce")] > star.breakdown[0, BREAKDOWN.index("allreduce")]


def test_heterogeneous_laptops_get_speed_shares(toy):
    setup = tpi(toy, wifi_topology(), window=2)
    stats = simulate_inference(setup)
    assert stats.ok
    widths = [next(b.ffn_width for b in seq if b.kind == "ffn") for seq in setup.blocks]   # m1, i5, i7a, i7b
    assert widths[1] == min(widths) and abs(widths[2] - widths[3]) <= 1 and widths[0] > widths[1]
    assert [p.ranks for p in inference_trace(setup).programs] == [[0], [1], [2], [3]]   # four different slices
    with pytest.raises(ConfigError, match="key-value heads"):
        tpi(toy, edge_topology(8), window=2)                          # 4 KV heads over 8 devices


def test_baselines_run(toy):
    topo = edge_topology(2)
    pipe = simulate_inference(pipeline(toy, topo, window=2))
    # one request at a time: the master's token is its own blocks, then waiting while stage 1 runs its layers
    wait, compute = BREAKDOWN.index("input_wait"), BREAKDOWN.index("compute")
    assert pipe.ok and pipe.breakdown[0].sum() == pytest.approx(pipe.token_latency, rel=1e-9)
    assert pipe.breakdown[0, wait] >= pipe.breakdown[1, compute] > 0
    assert pipe.breakdown[1, wait] > 0                                # stage 1 waits for stage 0's activations
    one = simulate_inference(single_device(toy, "laptop_m1_8core"))
    acc = simulate_inference(offload(toy, {"base": "laptop_m1_8core", "memory": "80 MB"}, budget=0.5,
                                     runtime_memory=0.0))
    assert one.ok and acc.ok and acc.token_latency > one.token_latency  # offloaded layers are read every token
    assert (acc.max_held <= 1).all()


# ------------------------------------------------------------------ parameters and outputs
@pytest.mark.parametrize("bad, match", [
    ({"device_counts": [2, 16]}, "exceed"),
    ({"windows": [0, 2]}, "below 1 block"),
    ({"windows": ["sometimes"]}, "not a number of blocks"),
    ({"laptop_shares": [0.5, 0.3, 0.1, 0.05]}, "sums to 0.95, not 1"),
    ({"shares": [0.6, 0.6], "device_counts": [2]}, "sums to 1.2"),
    ({"shares": [0.5, 0.5]}, "one share per device"),
    ({"models": ["llama-9-1t"]}, "not in the model catalog"),
])
def test_bad_input_is_a_clear_error(bad: dict, match: str):
    with pytest.raises(ConfigError, match=match) as info:
        get_study("tpi_llm").parse(bad)
    assert "Fix:" in str(info.value)


def test_params_defaults_are_the_paper_setting():
    p = validate(TPIParams, {})
    assert p.link_bandwidth == pytest.approx(300e6 / 8) and p.link_latency == pytest.approx(1e-3)
    assert p.window_values() == [2, None] and p.file_bytes == 2.0
    assert p.load_bandwidth == pytest.approx(730e6) and p.testbed_device == "edge_cpu_8core"


def test_study_writes_summary_csv(toy_path: str, tmp_path: Path):
    overrides = {"workload.params.models": [toy_path], "workload.params.device_counts": [2, 4],
                 "workload.params.curve_model": toy_path, "workload.params.timeline_model": toy_path,
                 "workload.params.curve_latencies": ["0 ms", "5 ms"],
                 "workload.params.curve_bandwidths": ["300 Mbps", "1 Gbps"],
                 "outputs.dashboard": True, "outputs.perfetto": False}
    run = simulate(REPO / "scenarios" / "tpi_llm.yaml", overrides=overrides)
    written = run.write(tmp_path)
    summary = pd.read_csv(written["summary.csv"])
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == 6                                          # (2 + 4 devices + 4 laptops) x (w = 2, off)
    assert set(summary["window"].astype(str)) == {"2", "off"}
    assert set(summary["devices"].astype(str)) == {"2", "4", "4 laptops"}
    assert (summary["allreduce"] == "star").all()
    assert (summary["ttft_s"] > 0).all() and (summary["peak_memory_gb"] > 0).all()
    on = summary[summary["window"].astype(str) == "2"]["peak_memory_gb"].to_numpy()
    off = summary[summary["window"].astype(str) == "off"]["peak_memory_gb"].to_numpy()
    assert (on < off).all()                                           # the window holds less than the whole slice
    assert {"runs", "baselines", "allreduce_vs_latency", "allreduce_vs_bandwidth"} <= set(run.tables)
    assert run.result is not None and (run.result.spans["kind"] == "disk").any()
    page = written["dashboard"].read_text()
    assert "All-reduce of one token" in page and "One decode token" in page


def test_validation_rows_subset():
    from commsim.systems.tpi_llm import validation_checks

    checks = validation_checks(TPIParams(), models=["llama-2-3b"])
    by_case = {c.case: c for c in checks}
    for algorithm in ("star", "tree", "ring"):
        assert by_case[f"{algorithm} all-reduce link latency, 8 devices, 4-link routes"].status == "pass"
    routes = [c for c in checks if "worker-to-master" in c.case]
    assert len(routes) == 2 and all(c.status == "pass" for c in routes)
    assert by_case["llama-2-3b: star beats ring on token latency (8 devices, window 2)"].status == "pass"
    assert by_case["llama-2-3b: token latency change 300 Mbps -> 1 Gbps (8 devices, window 2)"].status == "pass"


def test_scenario_file_is_valid():
    study = get_study("tpi_llm")
    import yaml

    data = yaml.safe_load((REPO / "scenarios" / "tpi_llm.yaml").read_text())
    params = study.parse(data["workload"]["params"])
    assert params.models == TPIParams().models and params.device_counts == [2, 4, 6, 8]
    assert params.window_values() == [2, None] and params.allreduce == "star"


def test_wifi_topology_file_matches_the_study():
    from commsim.network.loader import load_topology

    from_file = load_topology(REPO / "topologies" / "wifi_laptops_4.yaml")
    built = wifi_topology()
    assert from_file.devices == built.devices
    for a, b, data in built.links():
        assert from_file.graph.edges[a, b]["bandwidth"] == pytest.approx(data["bandwidth"])
        assert from_file.graph.edges[a, b]["latency"] == pytest.approx(data["latency"])
    skip = {"name", "source"}
    for node in built.devices:
        mine = built.device_spec(node).model_dump(exclude=skip)
        theirs = from_file.device_spec(node).model_dump(exclude=skip)
        assert mine == theirs


# ------------------------------------------------------------------ the trace and its replay
def test_inference_trace_is_a_valid_trace_file(toy, tmp_path: Path):
    from commsim.workloads import validate_trace
    from commsim.workloads.trace import load_trace, save_trace

    trace = inference_trace(tpi(toy, edge_topology(4), window=2, allreduce="tree", decode_tokens=1))
    validate_trace(trace)
    save_trace(trace, tmp_path / "tpi.json")
    again = load_trace(tmp_path / "tpi.json")
    assert [op.id for op in again.programs[1].ops] == [op.id for op in trace.programs[1].ops]
    algorithms = {op.algorithm for p in again.programs for op in p.ops if op.kind == "collective"}
    assert algorithms == {"kary_tree"}
    # per worker and token: the input, then per block its kernel and its all-reduce
    ops = again.programs[1].ops
    assert sum(op.kind == "compute" for op in ops) == sum(op.kind == "collective" for op in ops) == 2 * 4 * 2


def test_tree_fanout_reaches_the_collective_library(toy):
    topo = edge_topology(4, device={"base": "edge_cpu_8core", "disk_read_bandwidth": "20 GB/s"})
    runs = {name: simulate_inference(tpi(toy, topo, window=2, allreduce=alg, tree_fanout=fanout))
            for name, alg, fanout in (("star", "star", 3), ("tree3", "tree", 3), ("tree2", "tree", 2))}
    reduce = {name: run.breakdown[0, BREAKDOWN.index("allreduce")] for name, run in runs.items()}
    # 4 ranks: a 3-ary tree is the star (depth 1: 8 tau), a binary tree has depth 2 (16 tau)
    assert reduce["tree3"] == pytest.approx(reduce["star"], rel=1e-9)
    per_token = 2 * toy.layers
    assert reduce["tree2"] - reduce["star"] == pytest.approx(per_token * 8 * MS, rel=0.05)


@pytest.mark.parametrize("window", [None, 2])
def test_what_a_run_needs_is_its_peak_on_unbounded_memory(toy, window):
    from dataclasses import replace

    from commsim.systems.tpi_llm.run import needed_memory

    tiny = edge_topology(2, device={"base": "edge_cpu_8core", "memory": "2 MB", "swap": "1 MB"})
    setup = tpi(toy, tiny, window=window, runtime_memory=0.0)
    huge = edge_topology(2, device={"base": "edge_cpu_8core", "memory": "1 PB", "swap": "0 B"})
    full = simulate_inference(replace(setup, topology=huge))
    assert simulate_inference(setup).status == "out of memory" and full.ok
    # scheduler off: start-up and allocations only, the same peak as the whole run
    assert np.array_equal(needed_memory(setup), full.peak_memory)


# ------------------------------------------------------------------ scenario faults reach the study
def _small(toy_path: str, **extra):
    overrides = {"workload.params.models": [toy_path], "workload.params.device_counts": [2],
                 "workload.params.windows": [2], "workload.params.laptops": False,
                 "workload.params.baselines": False, "workload.params.curve_model": toy_path,
                 "workload.params.timeline_model": toy_path, "workload.params.curve_latencies": ["1 ms"],
                 "workload.params.curve_bandwidths": ["300 Mbps"], "outputs.dashboard": False, **extra}
    return simulate(REPO / "scenarios" / "tpi_llm.yaml", overrides=overrides)


def test_a_scenario_link_fault_changes_the_tpi_llm_result(toy_path: str):
    clean = _small(toy_path).csv["summary"].iloc[0]
    slow = {"kind": "link_degraded", "at": 0, "link": ["dev1", "router1"], "factor": 0.01}
    hit = _small(toy_path, faults=[slow])
    faulty = hit.csv["summary"].iloc[0]
    # the worker's link at 3 Mbps: every all-reduce of the star waits for it
    assert faulty["token_latency_s"] > clean["token_latency_s"] and faulty["ttft_s"] > clean["ttft_s"]
    assert any("Scenario faults (1)" in note for note in hit.notes)


def test_a_device_outage_delays_the_run_and_a_fault_on_no_network_is_refused(toy_path: str):
    clean = _small(toy_path).tables["runs"].iloc[0]
    outage = _small(toy_path, faults=[{"kind": "device_failure", "at": 0, "device": "dev1", "duration": "0.5 s"}])
    hit = outage.tables["runs"].iloc[0]
    # dev1's disk, memory and compute stop for 0.5 s: its first window (and so the start) waits for them
    assert hit["startup_s"] + hit["ttft_s"] == pytest.approx(clean["startup_s"] + clean["ttft_s"] + 0.5, rel=1e-6)
    with pytest.raises(ConfigError, match=r"faults\[0\].*none of the study's networks"):
        _small(toy_path, faults=[{"kind": "link_down", "at": 0, "link": ["dev5", "router5"]}])
