"""Parameters of the T3 study; the defaults are the paper's setting plus stated assumptions.

From the paper (T3, Pati et al., ASPLOS 2024): GPUs with 80 CUs at 1.4 GHz, a
16 MB L2 and 1 TB/s HBM (preset ``mi210_t3``; its 115 TFLOP/s FP16 peak is an
MI210-class assumption), a ring with 150 GB/s bidirectional links (75 GB/s per
direction) and 500 ns per link; Mega-GPT-2 and T-NLG at TP 8 and 16, GPT-3,
PaLM and MT-NLG at TP 32; the sublayers OP and FC-2 (forward), FC-1 and IP
(backward).

Not published, so assumptions (each a parameter): 8192 tokens per GEMM;
128x128 macro-tiles in bands of 8 tile rows; GEMM main loops at the device's
70 % of peak; 90 % of peak HBM bandwidth achievable; a stand-alone
communication kernel on 32 CUs (more than 16, since the paper's all-reduce is
slower on 16 CUs than alone; any count from 24 to 80 leaves it link-bound and
moves no claim row by more than 0.003); coarse-grained decomposition into 4
pieces with 16 CUs for communication; DMA traffic weighted like a 16-CU kernel
at the memory controller; a near-memory update costing as much HBM time as a
write; MCA admitting communication below 80 % HBM utilisation and keeping at
least 10 % for it. Calibrated (see :mod:`commsim.systems.t3.calibration`):
the communication-kernel rate curve ``R·(1 - exp(-cus/c))``
(``comm_peak_bandwidth``, ``comm_cu_scale``) on the motivation figure's two
all-reduce slow-downs (41% on 8 CUs, 7% on 16 CUs), and ``hbm_interference``
(DRAM interference of T3's DMA traffic with the GEMM,
:mod:`commsim.systems.t3.interference`) on the T3 geomean sublayer speed-up
without MCA (20%).

>>> p = T3Params()
>>> p.tokens, [c.label for c in p.configs][:2], p.link_bandwidth
(8192, ['megatron-gpt2-8.3b@8', 'megatron-gpt2-8.3b@16'], 75000000000.0)
>>> from commsim.config import validate
>>> validate(T3Params, {"tokens": 0})
Traceback (most recent call last):
...
commsim.errors.ConfigError: tokens = 0: must be at least 1. Fix: give a value at least 1.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from commsim.config import StrictModel
from commsim.errors import ConfigError
from commsim.systems.t3.knobs import (
    DEFAULT_COMM_CU_SCALE,
    DEFAULT_COMM_PEAK_BANDWIDTH,
    DEFAULT_HBM_INTERFERENCE,
    VARIANTS,
    Knobs,
)
from commsim.systems.t3.shapes import SUBLAYERS, sublayer_gemm
from commsim.units import Bandwidth, Bytes, Duration

__all__ = ["ModelTP", "T3Params", "TimelineCase", "DEFAULT_COMM_CU_SCALE", "DEFAULT_COMM_PEAK_BANDWIDTH",
           "DEFAULT_HBM_INTERFERENCE"]

Variant = Literal["sequential", "coarse", "ideal", "t3", "t3_mca"]
Sublayer = Literal["op_fwd", "fc2_fwd", "fc1_bwd", "ip_bwd"]



class ModelTP(StrictModel):
    """One model at one TP degree (a catalog name or alias, and the ring size)."""

    model: str
    tp: Annotated[int, Field(ge=2, le=256)]

    @field_validator("model")
    @classmethod
    def _known(cls, value: str) -> str:
        from commsim.workloads import load_model

        return load_model(value).name   # a ConfigError (a ValueError) lists the known models

    @property
    def label(self) -> str:
        """``model@tp``."""
        return f"{self.model}@{self.tp}"


def _default_configs() -> list[ModelTP]:
    pairs = [("megatron-gpt2-8.3b", 8), ("megatron-gpt2-8.3b", 16), ("t-nlg-17b", 8), ("t-nlg-17b", 16),
             ("gpt3-175b", 32), ("palm-540b", 32), ("mt-nlg-530b", 32)]
    return [ModelTP(model=m, tp=t) for m, t in pairs]


class TimelineCase(StrictModel):
    """The sublayer the dashboard's timeline shows (every variant, the first ``gpus`` GPUs)."""

    model: str = "megatron-gpt2-8.3b"
    tp: Annotated[int, Field(ge=2, le=256)] = 8
    sublayer: Sublayer = "ip_bwd"
    gpus: Annotated[int, Field(ge=1, le=16)] = 2


class T3Params(StrictModel):
    """Everything the T3 study needs; units in strings (``'75 GB/s'``, ``'500 ns'``), SI inside.

    Attributes
    ----------
    configs:
        Models and TP degrees (default: the paper's seven).
    sublayers:
        Which of ``op_fwd``, ``fc2_fwd``, ``fc1_bwd``, ``ip_bwd`` to simulate (default all).
    variants:
        Which of ``sequential``, ``coarse``, ``ideal``, ``t3``, ``t3_mca`` (default all;
        ``sequential`` is always run: speed-ups are over it).
    tokens:
        Tokens per GEMM, the M of every sublayer GEMM (default 8192; not published).
    tokens_sweep:
        Extra token counts to run (Sequential, Ideal, T3, T3-MCA) for the sweep table and
        curve (default 2048, 32768; empty to skip).
    strict_heads:
        TP must divide the attention heads (default false: sized by hidden width, as T3 does).
    device:
        Device preset or spec of every GPU (default ``mi210_t3``).
    link_bandwidth, link_latency:
        Ring link per direction and per-link latency (75 GB/s, 500 ns). Used when the
        scenario gives no topology; a scenario topology must be a ring of ``tp`` GPUs.
    gemm_efficiency:
        Fraction of peak FP16 FLOP/s of a GEMM main loop (null: the device's, 0.7).
    hbm_efficiency:
        Fraction of peak HBM bandwidth the memory controller sustains (0.9, assumed).
    hbm_arbitration:
        How HBM is shared when saturated: ``requesters`` (in proportion to the CUs or DMA
        engines issuing, default) or ``bytes`` (byte-fair).
    comm_peak_bandwidth, comm_cu_scale:
        A communication kernel on ``k`` CUs moves at most ``comm_peak_bandwidth · (1 -
        exp(-k / comm_cu_scale))`` bytes/s (bytes/s and CUs; calibrated on the motivation
        figure's 8- and 16-CU all-reduce slow-downs: 78.15 GB/s and 6.991 CUs).
    tile_m, tile_n, group_rows, l2_bytes, l2_reuse:
        GEMM macro-tile (128x128), raster band (8 tile rows), L2 capacity (16 MB) and the
        fraction of the LRU model's operand hits that happen (1).
    rccl_cus:
        CUs of a stand-alone communication kernel (32, assumed: the motivation experiment's
        reference all-reduce, Sequential's RS and every AG).
    coarse_chunks, coarse_comm_cus:
        Coarse-grained decomposition: pieces (4) and CUs kept for communication (16).
    dma_weight:
        Memory-controller weight of DMA / near-memory traffic in CU-equivalents (16).
    nmc_update_cost:
        HBM time of a near-memory update per byte, relative to a write (1).
    remote_first_chunk:
        T3 stores each GPU's first chunk straight into its ring neighbour (true).
    mca_threshold, mca_min_share:
        T3-MCA: communication admitted below this HBM utilisation (0.8); share kept for
        communication while the GEMM saturates HBM (0.1).
    hbm_interference:
        ``kappa`` of the DRAM interference between T3's DMA / near-memory-update traffic and
        the GEMM (dimensionless, >= 0; 0: off): while that traffic uses ``u`` of the HBM, each
        byte the GEMM main loop fetches from DRAM costs ``kappa·u`` times its transfer time in
        extra stalls; none under MCA (calibrated on the T3 geomean of 20%: 107.0).
    end_to_end:
        Estimate a training iteration per model with the sublayer results (true).
    timeline:
        The sublayer whose timeline the dashboard draws.
    """

    device: str | dict[str, Any] = "mi210_t3"
    tokens: Annotated[int, Field(ge=1)] = 8192
    tokens_sweep: list[int] = [2048, 32768]
    sublayers: Annotated[list[Sublayer], Field(min_length=1)] = list(SUBLAYERS)
    variants: Annotated[list[Variant], Field(min_length=1)] = list(VARIANTS)
    strict_heads: bool = False
    tile_m: Annotated[int, Field(ge=16, le=1024)] = 128
    tile_n: Annotated[int, Field(ge=16, le=1024)] = 128
    coarse_chunks: Annotated[int, Field(ge=1, le=64)] = 4
    coarse_comm_cus: Annotated[int, Field(ge=1)] = 16
    rccl_cus: Annotated[int, Field(ge=1)] = 32
    configs: Annotated[list[ModelTP], Field(min_length=1)] = Field(default_factory=_default_configs,
                                                                  validate_default=True)
    link_bandwidth: Annotated[Bandwidth, Field(gt=0)] = 75e9
    link_latency: Annotated[Duration, Field(ge=0)] = 500e-9
    gemm_efficiency: Annotated[float, Field(gt=0, le=1)] | None = None
    hbm_efficiency: Annotated[float, Field(gt=0, le=1)] = 0.9
    hbm_arbitration: Literal["requesters", "bytes"] = "requesters"
    comm_peak_bandwidth: Annotated[Bandwidth, Field(gt=0)] = DEFAULT_COMM_PEAK_BANDWIDTH
    comm_cu_scale: Annotated[float, Field(gt=0)] = DEFAULT_COMM_CU_SCALE
    group_rows: Annotated[int, Field(ge=1)] = 8
    l2_bytes: Annotated[Bytes, Field(ge=0)] = 16e6
    l2_reuse: Annotated[float, Field(ge=0, le=1)] = 1.0
    dma_weight: Annotated[float, Field(gt=0)] = 16.0
    nmc_update_cost: Annotated[float, Field(gt=0)] = 1.0
    remote_first_chunk: bool = True
    mca_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8
    mca_min_share: Annotated[float, Field(ge=0, lt=1)] = 0.1
    hbm_interference: Annotated[float, Field(ge=0)] = DEFAULT_HBM_INTERFERENCE
    end_to_end: bool = True
    timeline: TimelineCase = TimelineCase()

    @field_validator("device")
    @classmethod
    def _device(cls, value: Any) -> Any:
        from commsim.devices.spec import device_spec

        spec = device_spec(value, field="device")
        if spec.compute_units is None:
            raise ConfigError(field="device", value=spec.name, rule="does not give compute_units: the GEMM runs in "
                              "waves of one tile per CU", fix="add compute_units to the device spec (80 for the T3 GPU)")
        if "fp16" not in spec.peak_flops:
            raise ConfigError(field="device", value=spec.name, rule="has no fp16 peak", fix="add peak_flops.fp16")
        return value

    @field_validator("tokens_sweep")
    @classmethod
    def _sweep(cls, value: list[int]) -> list[int]:
        bad = [t for t in value if t < 1]
        if bad:
            raise ConfigError(field="tokens_sweep", value=bad[0], rule=f"tokens_sweep has {bad[0]}, which is not positive",
                              fix="list token counts of at least 1, e.g. [2048, 32768], or [] for no sweep")
        return sorted(set(value))

    @field_validator("variants")
    @classmethod
    def _with_baseline(cls, value: list[str]) -> list[str]:
        chosen = set(value) | {"sequential"}
        return [v for v in VARIANTS if v in chosen]

    @field_validator("coarse_comm_cus", "rccl_cus")
    @classmethod
    def _cus(cls, value: int, info: ValidationInfo) -> int:
        from commsim.devices.spec import device_spec

        if "device" not in info.data:
            return value
        cus = int(device_spec(info.data["device"]).compute_units or 80)
        if info.field_name == "coarse_comm_cus" and value >= cus:
            raise ConfigError(field="coarse_comm_cus", value=value, rule=f"leaves no CU of the {cus} for the GEMM",
                              fix="give fewer, e.g. 16")
        if value > cus:
            raise ConfigError(field=str(info.field_name), value=value, rule=f"is more than the device's {cus} CUs",
                              fix=f"give at most {cus}")
        return value

    @field_validator("configs")
    @classmethod
    def _shapes(cls, value: list[ModelTP], info: ValidationInfo) -> list[ModelTP]:
        data = info.data
        needed = ("tokens", "tokens_sweep", "sublayers", "variants", "strict_heads", "tile_m", "tile_n",
                  "coarse_chunks")
        if any(k not in data for k in needed):
            return value   # an earlier field failed; its message comes first
        pieces = data["coarse_chunks"] if "coarse" in data["variants"] else 1
        for i, case in enumerate(value):
            for tokens in [data["tokens"], *data["tokens_sweep"]]:
                for sub in data["sublayers"]:
                    try:
                        gemm = sublayer_gemm(case.model, case.tp, sub, tokens=tokens,
                                             strict_heads=data["strict_heads"])
                    except ConfigError as err:
                        fix = err.fix.split(" (or ignore head boundaries")[0]
                        if data["strict_heads"] and "heads" in err.rule:
                            fix += " (or set strict_heads: false to size by hidden width, as T3 does)"
                        raise ConfigError(field=f"configs[{i}].tp", value=case.tp,
                                          rule=f"is a TP degree that {err.rule}", fix=fix) from None
                    tiles = -(-gemm.m // data["tile_m"]) * -(-gemm.n // data["tile_n"])
                    if tiles < case.tp * pieces:
                        raise ConfigError(
                            field=f"configs[{i}]", value=case.label,
                            rule=f"with {tokens} tokens has {tiles} output tiles of {data['tile_m']}x"
                                 f"{data['tile_n']}, fewer than TP x GEMM pieces = {case.tp * pieces}: a "
                                 "reduce-scatter chunk needs at least one tile",
                            fix="give more tokens, smaller tiles or fewer coarse_chunks")
        return value

    def knobs(self) -> Knobs:
        """The engine's numbers for these parameters."""
        copied = {f.name: getattr(self, f.name) for f in fields(Knobs) if f.name != "cu_weighted"}
        return Knobs(**copied, cu_weighted=self.hbm_arbitration == "requesters")
