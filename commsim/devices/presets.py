"""Device presets for the studies, with the public figures they come from.

Peak FLOP/s are dense (no sparsity). ``efficiency`` is the fraction of peak a
large, well-shaped kernel reaches; it is a modelling default, not a datasheet
figure, and every study can override it.
"""

from __future__ import annotations

from commsim.devices.spec import DeviceSpec

__all__ = ["PRESETS"]

_H100_FLOPS = {"fp64": 67e12, "fp32": 67e12, "tf32": 494.7e12, "bf16": 989e12, "fp16": 989e12,
               "fp8": 1979e12, "int8": 1979e12}

PRESETS: dict[str, DeviceSpec] = {
    spec.name: spec
    for spec in (
        DeviceSpec(
            name="h100_sxm", peak_flops=_H100_FLOPS, memory_bandwidth=3.35e12, memory=80e9,
            compute_units=132, clock=1.98e9, copy_engines=4, disk_read_bandwidth=6.8e9,
            source="NVIDIA H100 SXM5 datasheet: 989 TFLOPS BF16 dense, 3.35 TB/s HBM3, 80 GB",
        ),
        DeviceSpec(
            name="h800", peak_flops=_H100_FLOPS, memory_bandwidth=3.35e12, memory=80e9,
            compute_units=132, clock=1.98e9, copy_engines=4, disk_read_bandwidth=6.8e9,
            source="H800 SXM: H100 compute and HBM3 with NVLink cut to 400 GB/s (set in the topology)",
        ),
        DeviceSpec(
            name="a100_sxm4_40gb",
            peak_flops={"fp64": 19.5e12, "fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12,
                        "int8": 624e12},
            memory_bandwidth=1.555e12, memory=40e9, compute_units=108, clock=1.41e9, copy_engines=4,
            disk_read_bandwidth=6.8e9,
            source="NVIDIA A100 datasheet: 312 TFLOPS BF16 dense, 1,555 GB/s HBM2, 40 GB",
        ),
        DeviceSpec(
            name="a100_sxm4_80gb",
            peak_flops={"fp64": 19.5e12, "fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12,
                        "int8": 624e12},
            memory_bandwidth=2.039e12, memory=80e9, compute_units=108, clock=1.41e9, copy_engines=4,
            disk_read_bandwidth=6.8e9,
            source="NVIDIA A100 datasheet: 312 TFLOPS BF16 dense, 2,039 GB/s HBM2e, 80 GB",
        ),
        DeviceSpec(
            name="mi210_t3",
            peak_flops={"fp32": 28.75e12, "fp16": 115e12, "bf16": 115e12},
            memory_bandwidth=1e12, memory=64e9, compute_units=80, clock=1.4e9, copy_engines=2,
            source="T3 (ASPLOS 2024) simulated GPU: 80 CUs at 1.4 GHz, 16 MB L2, 1 TB/s HBM; peak FP16 not "
                   "published, 115 TFLOPS (MI210-class) assumed",
        ),
        DeviceSpec(
            name="edge_cpu_8core", kind="cpu",
            peak_flops={"fp32": 8 * 2.4e9 * 32, "fp16": 8 * 2.4e9 * 32},
            efficiency=0.5, memory_bandwidth=25.6e9, memory=8e9, swap=4e9, swap_bandwidth=500e6,
            copy_engines=0, disk_read_bandwidth=500e6,
            source="TPI-LLM testbed device (8 cores, 8 GB RAM + 4 GB swap); peak assumes 2.4 GHz with AVX2 FMA "
                   "(32 FP32 FLOP/cycle/core); DDR4 bandwidth and SATA-SSD read 500 MB/s assumed",
        ),
        DeviceSpec(
            name="laptop_m1_8core", kind="cpu",
            peak_flops={"fp32": 542e9, "fp16": 542e9}, efficiency=0.5,
            memory_bandwidth=68.25e9, memory=8e9, swap=4e9, swap_bandwidth=1.0e9, copy_engines=0,
            disk_read_bandwidth=2.0e9,
            source="Assumed Apple M1 (8 GB): 4 P-cores x 3.2 GHz x 32 + 4 E-cores x 2.064 GHz x 16 FP32 FLOP/cycle "
                   "(NEON FMA, AMX not counted) = 542 GFLOPS; LPDDR4X-4266 on 128 bit = 68.25 GB/s; SSD read 2 GB/s; "
                   "4 GB swap at 1 GB/s (the paper gives the core count only)"
        ),
        DeviceSpec(
            name="laptop_i5_4core", kind="cpu",
            peak_flops={"fp32": 307.2e9, "fp16": 307.2e9}, efficiency=0.5,
            memory_bandwidth=51.2e9, memory=8e9, swap=4e9, swap_bandwidth=0.75e9, copy_engines=0,
            disk_read_bandwidth=1.5e9,
            source="Assumed 4-core Core i5 laptop: 4 cores x 2.4 GHz x 32 FP32 FLOP/cycle (AVX2, 2 FMA) = 307 "
                   "GFLOPS; dual-channel DDR4-3200 = 51.2 GB/s; 8 GB RAM + 4 GB swap; NVMe read 1.5 GB/s"
        ),
        DeviceSpec(
            name="laptop_i7_8core", kind="cpu",
            peak_flops={"fp32": 563.2e9, "fp16": 563.2e9}, efficiency=0.5,
            memory_bandwidth=46.9e9, memory=8e9, swap=4e9, swap_bandwidth=1.0e9, copy_engines=0,
            disk_read_bandwidth=2.0e9,
            source="Assumed 8-core Core i7 laptop: 8 cores x 2.2 GHz x 32 FP32 FLOP/cycle (AVX2, 2 FMA) = 563 "
                   "GFLOPS; dual-channel DDR4-2933 = 46.9 GB/s; 8 GB RAM + 4 GB swap; NVMe read 2 GB/s"
        ),
    )
}
