"""Devices: roofline times, HBM shared between kernels, copies and DMAs, memory capacity and swap.

The toy device (tests/conftest.py) computes 100 TFLOP/s at 100 % efficiency and has 100 GB/s of HBM.
A kernel of F FLOP touching B bytes is one activity of B bytes on [compute (capacity 1), memory]:
memory coefficient 1, compute coefficient F / (B * 100e12). A copy of N bytes is N bytes with memory
coefficient 2 (read + write). Activities with equal weights get equal rates (in their own units)
at a shared resource, so a copy moving r bytes/s uses 2r of HBM beside a kernel at r.
"""

from __future__ import annotations

import pytest

from commsim.devices import MemoryPool, device_spec
from commsim.devices.device import kernel_activity
from commsim.errors import ConfigError, OutOfMemoryError
from commsim.network.generators import home_router_edge, switch
from commsim.simulation import Simulation


def sim_with(toy_device, link="80 GB/s", n=2):
    return Simulation(switch(n=n, bandwidth=link, latency=0.0, device=toy_device), verify=True)


def timed(sim, ends, name, event_factory):
    def body():
        yield event_factory()
        ends[name] = sim.now

    sim.process(body())


def test_roofline_alone(toy_device):
    sim = sim_with(toy_device)
    gpu = sim.devices["gpu0"]
    ends = {}
    # compute-bound: 100 TFLOP -> 1 s; its 40 GB of traffic alone would take 0.4 s
    timed(sim, ends, "gemm", lambda: gpu.compute(flops=100e12, nbytes=40e9))
    sim.run()
    assert ends["gemm"] == pytest.approx(1.0, rel=1e-12)
    sim = sim_with(toy_device)
    gpu = sim.devices["gpu0"]
    # memory-bound: 100 GB at 100 GB/s -> 1 s; its 1 TFLOP alone would take 10 ms
    timed(sim, ends, "stream", lambda: gpu.compute(flops=1e12, nbytes=100e9))
    # FLOP only, no memory traffic: 50 TFLOP on gpu1 -> 0.5 s
    timed(sim, ends, "flops", lambda: sim.devices["gpu1"].compute(flops=50e12))
    sim.run()
    assert ends["stream"] == pytest.approx(1.0, rel=1e-12)
    assert ends["flops"] == pytest.approx(0.5, rel=1e-12)


def test_memory_bound_kernel_and_dma_share_hbm(toy_device):
    # Kernel: 100 GB of traffic (1 TFLOP, compute never binds). DMA: 60 GB gpu0 -> gpu1 over 80 GB/s
    # links, also reading gpu0's HBM (coefficient 1). HBM level 100 / 2 = 50 < link 80: both run at
    # 50 GB/s. The DMA ends at 60 / 50 = 1.2 s; the kernel has moved 60 GB by then and its last 40 GB
    # run at the full 100 GB/s: 0.4 s more -> 1.6 s. (Alone: DMA 0.75 s, kernel 1 s.)
    sim = sim_with(toy_device)
    gpu = sim.devices["gpu0"]
    ends = {}
    timed(sim, ends, "kernel", lambda: gpu.compute(flops=1e12, nbytes=100e9))
    timed(sim, ends, "dma", lambda: sim.network.transfer("gpu0", "gpu1", 60e9, extra=([gpu.memory_resource], [1.0])))
    result = sim.run()
    assert ends["dma"] == pytest.approx(1.2, rel=1e-12)
    assert ends["kernel"] == pytest.approx(1.6, rel=1e-12)
    # the HBM ran full from 0 to 1.6 s: 160 GB carried
    hbm = result.link_usage[result.link_usage.resource == "memory:gpu0"]
    assert ((hbm.end - hbm.start) * hbm.load).sum() == pytest.approx(160e9, rel=1e-9)
    assert hbm.utilisation.max() == pytest.approx(1.0)


def test_dma_reading_and_writing_both_hbms(toy_device):
    # A 60 GB DMA that reads gpu0's HBM and writes gpu1's, beside a memory-bound kernel on each GPU
    # (100 GB each). Every HBM holds the DMA and one kernel: 50 GB/s each, as above: DMA 1.2 s, kernels 1.6 s.
    sim = sim_with(toy_device)
    g0, g1 = sim.devices["gpu0"], sim.devices["gpu1"]
    ends = {}
    timed(sim, ends, "k0", lambda: g0.compute(flops=1e12, nbytes=100e9))
    timed(sim, ends, "k1", lambda: g1.compute(flops=1e12, nbytes=100e9))
    timed(sim, ends, "dma", lambda: sim.network.transfer(
        "gpu0", "gpu1", 60e9, extra=([g0.memory_resource, g1.memory_resource], [1.0, 1.0])))
    sim.run()
    assert ends == {"dma": pytest.approx(1.2, rel=1e-12), "k0": pytest.approx(1.6, rel=1e-12),
                    "k1": pytest.approx(1.6, rel=1e-12)}


def test_compute_bound_gemm_leaves_hbm_to_the_dma(toy_device):
    # GEMM: 100 TFLOP over 40 GB -> limited by compute to 40 GB/s of traffic, 1 s. DMA of 90 GB on an
    # 80 GB/s link reading gpu0's HBM. Filling: the GEMM freezes first at 40 (compute level); HBM then
    # has 100 - 40 = 60 GB/s for the DMA (below the link's 80). At 1 s the GEMM ends unchanged, the DMA
    # has 30 GB left at the link's 80 GB/s -> 0.375 s more -> 1.375 s (alone: 1.125 s).
    sim = sim_with(toy_device)
    gpu = sim.devices["gpu0"]
    ends = {}
    timed(sim, ends, "gemm", lambda: gpu.compute(flops=100e12, nbytes=40e9))
    timed(sim, ends, "dma", lambda: sim.network.transfer("gpu0", "gpu1", 90e9, extra=([gpu.memory_resource], [1.0])))
    sim.run()
    assert ends["gemm"] == pytest.approx(1.0, rel=1e-12)
    assert ends["dma"] == pytest.approx(1.375, rel=1e-12)


def test_memory_bound_kernel_and_copy_share_hbm(toy_device):
    # Kernel of 100 GB traffic and a 30 GB copy (60 GB of traffic). Equal rates r: r + 2r = 100 ->
    # r = 33.3 GB/s. The copy ends at 30 / 33.3 = 0.9 s; the kernel has moved 30 GB, 70 GB left at
    # 100 GB/s -> 0.7 s more -> 1.6 s (= 160 GB of traffic at 100 GB/s).
    sim = sim_with(toy_device)
    gpu = sim.devices["gpu0"]
    ends = {}
    timed(sim, ends, "kernel", lambda: gpu.compute(flops=1e12, nbytes=100e9, name="stream"))
    timed(sim, ends, "copy", lambda: gpu.copy(30e9))
    result = sim.run()
    assert ends["copy"] == pytest.approx(0.9, rel=1e-12)
    assert ends["kernel"] == pytest.approx(1.6, rel=1e-12)
    spans = result.spans.set_index("name")
    assert spans.loc["copy", "stream"] == "copy" and spans.loc["stream", "kind"] == "compute"
    assert spans.loc["copy", "end"] == pytest.approx(0.9, rel=1e-12)


def test_copy_engines_queue_copies(toy_device):
    # One copy engine: two 10 GB copies run one after the other, each alone at 100 / 2 = 50 GB/s
    # (0.2 s each) -> 0.2 s and 0.4 s.
    sim = sim_with(toy_device)
    gpu = sim.devices["gpu0"]
    ends = {}
    timed(sim, ends, "a", lambda: gpu.copy(10e9, name="a"))
    timed(sim, ends, "b", lambda: gpu.copy(10e9, name="b"))
    sim.run()
    assert ends == {"a": pytest.approx(0.2, rel=1e-12), "b": pytest.approx(0.4, rel=1e-12)}


def test_share_caps_the_fraction_of_compute(toy_device):
    # share=0.25: a compute-bound 10 TFLOP kernel (0.1 s alone) runs at a quarter of the device: 0.4 s.
    # A second kernel beside it gets the remaining 0.75: 30 TFLOP in 0.4 s -> both end at 0.4 s.
    sim = sim_with(toy_device)
    gpu = sim.devices["gpu0"]
    ends = {}
    timed(sim, ends, "small", lambda: gpu.compute(flops=10e12, nbytes=1e9, share=0.25))
    timed(sim, ends, "big", lambda: gpu.compute(flops=30e12, nbytes=1e9))
    sim.run()
    assert ends == {"small": pytest.approx(0.4, rel=1e-12), "big": pytest.approx(0.4, rel=1e-12)}


def test_launch_overhead_and_efficiency(toy_device):
    toy_device.update(launch_overhead="5 us", efficiency=0.5)
    sim = sim_with(toy_device)
    ends = {}
    # 10 TFLOP at 50 % of 100 TFLOP/s = 0.2 s, after 5 us of launch overhead
    timed(sim, ends, "k", lambda: sim.devices["gpu0"].compute(flops=10e12, nbytes=1e9))
    # a per-kernel efficiency overrides the device's: 10 TFLOP at 100 % = 0.1 s
    timed(sim, ends, "k1", lambda: sim.devices["gpu1"].compute(flops=10e12, nbytes=1e9, efficiency=1.0))
    sim.run()
    assert ends["k"] == pytest.approx(5e-6 + 0.2, rel=1e-12)
    assert ends["k1"] == pytest.approx(5e-6 + 0.1, rel=1e-12)


def test_disk_read_uses_disk_and_memory(toy_device):
    toy_device["disk_read_bandwidth"] = "2 GB/s"
    sim = sim_with(toy_device)
    ends = {}
    timed(sim, ends, "load", lambda: sim.devices["gpu0"].read_disk(1e9))
    sim.run()
    assert ends["load"] == pytest.approx(0.5, rel=1e-12)
    no_disk = sim_with({k: v for k, v in toy_device.items() if k != "disk_read_bandwidth"})
    with pytest.raises(ConfigError, match=r"devices.gpu0.disk_read_bandwidth: is not set, so it has no disk"):
        no_disk.devices["gpu0"].read_disk(1e9)


def test_kernel_activity_coefficients():
    spec = device_spec({"name": "t", "peak_flops": {"bf16": 100e12}, "efficiency": 0.5,
                        "memory_bandwidth": 1e11, "memory": 1e9})
    # 10 TFLOP over 1 GB at 50 TFLOP/s: compute coefficient 10e12 / (1e9 * 50e12) = 2e-10 per byte
    assert kernel_activity(spec, 10e12, 1e9, "bf16", None) == (1e9, [pytest.approx(2e-10, rel=1e-12), 1.0])
    assert kernel_activity(spec, 10e12, 0.0, "bf16", None) == (10e12, [pytest.approx(2e-14, rel=1e-12), 0.0])


def test_memory_pool_tracks_peak_and_timeline():
    clock = [0.0]
    pool = MemoryPool("gpu0", capacity=10e9, clock=lambda: clock[0])
    a = pool.allocate(6e9, "weights")
    clock[0] = 1.0
    b = pool.allocate(3e9, "activations")
    assert pool.holdings() == {"weights": 6e9, "activations": 3e9}
    clock[0] = 2.0
    assert pool.free(b) == 3e9
    assert (pool.in_use, pool.peak) == (6e9, 9e9)
    assert pool.timeline == [(0.0, 0.0), (0.0, 6e9), (1.0, 9e9), (2.0, 6e9)]
    with pytest.raises(ConfigError, match="is not held"):
        pool.free(b)
    pool.free(a)
    assert pool.in_use == 0.0


def test_an_unbounded_pool_refuses_nothing_and_records_the_peak():
    clock = [0.0]
    pool = MemoryPool("gpu0", capacity=None, clock=lambda: clock[0])
    a = pool.allocate(5e18, "weights")
    clock[0] = 1.0
    pool.allocate(2e18, "activations")
    pool.free(a)
    assert (pool.in_use, pool.peak, pool.swapped, pool.resident, pool.peak_swapped) == (2e18, 7e18, 0.0, 2e18, 0.0)
    assert pool.timeline == [(0.0, 0.0), (0.0, 5e18), (1.0, 7e18), (1.0, 2e18)]
    with pytest.raises(ConfigError, match="unbounded memory pool"):
        MemoryPool("gpu0", capacity=None, swap=1e9)


def test_a_simulation_with_unbounded_memory_gives_every_device_an_unbounded_pool():
    topo = switch(n=2)                                    # H100: 80 GB
    bounded, roomy = Simulation(topo), Simulation(topo, unbounded_memory=True)
    with pytest.raises(OutOfMemoryError):
        bounded.devices["gpu1"].memory.allocate(100e9)
    for device in roomy.devices.values():
        device.memory.allocate(100e9)
        assert device.memory.capacity is None and device.memory.peak == 100e9


def test_memory_over_capacity_is_out_of_memory():
    sim = Simulation(switch(n=2))  # H100: 80 GB
    pool = sim.devices["gpu0"].memory
    pool.allocate(60e9, "weights")
    with pytest.raises(OutOfMemoryError) as info:
        pool.allocate(30e9, "activations")
    text = str(info.value)
    assert "out of memory on gpu0" in text
    assert "allocating 27.94 GiB" in text and "55.88 GiB in use" in text and "capacity of 74.51 GiB" in text
    assert "Fix: free memory first" in text
    assert info.value.requested == 30e9 and info.value.capacity == 80e9


def test_swap_absorbs_what_memory_cannot_hold():
    sim = Simulation(home_router_edge(devices=2))  # edge CPU: 8 GB of memory and 4 GB of swap
    pool = sim.devices["dev0"].memory
    pool.allocate(10e9, "model")  # 2 GB spill into swap
    assert (pool.resident, pool.swapped, pool.peak_swapped) == (8e9, 2e9, 2e9)
    pool.allocate(2e9, "kv cache")  # exactly memory + swap
    with pytest.raises(OutOfMemoryError, match=r"capacity of 11\.18 GiB"):
        pool.allocate(1.0, "one more byte")


def test_memory_only_kernel_uses_no_compute(toy_device):
    # 10 GB of traffic and no arithmetic on 100 GB/s: 0.1 s, and the compute resource stays free
    import simpy

    from commsim.devices.device import Device
    from commsim.kernel import FluidKernel

    env = simpy.Environment()
    kernel = FluidKernel(env)
    device = Device("d", toy_device, kernel)
    done = device.compute(0.0, 10e9)
    env.run()
    assert done.value == pytest.approx(0.1)
    assert kernel.carried()[device.compute_resource] == 0.0
