"""Parameters of the C4 study, with their defaults and where each default comes from.

All times are seconds inside (files accept ``'30 min'``, ``'2 h'``, ``'30 days'``),
rates are events per second inside (``'0.25 /day'``), sizes bytes (``'1 GiB'``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from commsim.config import StrictModel
from commsim.errors import ConfigError
from commsim.systems.c4.model import JobModel
from commsim.units import Bytes, Duration, EventRate

__all__ = ["C4Params", "C4DParams", "C4PParams", "FaultMix", "InjectedFault", "FAULT_KINDS", "KIND_INFO"]

FaultKind = Literal["gpu_hang", "nic_down", "link_down", "link_flap", "slow_link", "slow_nic", "straggler"]

FAULT_KINDS: tuple[str, ...] = ("gpu_hang", "nic_down", "link_down", "link_flap", "slow_link", "slow_nic",
                                "straggler")
"""Fault kinds in a fixed order."""

KIND_INFO: dict[str, tuple[str, str, bool]] = {
    # kind: (C4D category, component localised, stops the job)
    "gpu_hang": ("non-communication hang", "node", True),
    "nic_down": ("communication hang", "node", True),
    "link_down": ("communication hang", "link", True),
    "link_flap": ("communication slow", "link", False),
    "slow_link": ("communication slow", "link", False),
    "slow_nic": ("communication slow", "node", False),
    "straggler": ("non-communication slow", "node", False),
}
"""What each fault kind looks like to C4D: its category, the component to isolate, hang or slow."""

Positive = Annotated[Duration, Field(gt=0)]
NonNegative = Annotated[Duration, Field(ge=0)]


class FaultMix(StrictModel):
    """Share of each fault kind among the job's interruptions (weights, normalised; each >= 0).

    Defaults: GPU-side hard failures dominate the interruptions of the Llama 3
    report (Dubey et al. 2024, section 3.3.4), network ones (switch, cable, NIC)
    are about a tenth there; fail-slow faults (flapping, degraded links and NICs,
    stragglers) are not counted in that report, so their 35 % share is an
    assumption of this study.
    """

    gpu_hang: float = Field(0.55, ge=0, description="a GPU or its process stops (most Llama 3 interruptions)")
    nic_down: float = Field(0.05, ge=0, description="a NIC dies (both its ports)")
    link_down: float = Field(0.05, ge=0, description="a leaf-spine link dies")
    link_flap: float = Field(0.05, ge=0, description="a leaf-spine link goes down and up, over and over")
    slow_link: float = Field(0.05, ge=0, description="a leaf-spine link runs degraded")
    slow_nic: float = Field(0.10, ge=0, description="a GPU's PCIe/NIC link runs degraded")
    straggler: float = Field(0.15, ge=0, description="a host computes slower (e.g. thermal throttling)")

    @model_validator(mode="after")
    def _some(self) -> FaultMix:
        if sum(self.weights().values()) <= 0:
            raise ConfigError(field="fault_mix", value=self.weights(), rule="gives every fault kind weight 0",
                              fix="give at least one kind a positive weight")
        return self

    def weights(self) -> dict[str, float]:
        """Weights by kind, in :data:`FAULT_KINDS` order."""
        return {k: float(getattr(self, k)) for k in FAULT_KINDS}


class InjectedFault(StrictModel):
    """One fault at a given time, instead of faults drawn from rates.

    ``at`` is training (running) time since the job started. ``node`` names the
    server (its index, or any of its GPU or NIC names) for node faults; ``gpu``
    optionally picks the GPU on it (local index, default 0). ``link`` names a
    switch-to-switch link ``[a, b]`` for link faults.
    """

    kind: FaultKind
    at: NonNegative
    node: int | str | None = None
    gpu: Annotated[int, Field(ge=0)] = 0
    link: tuple[str, str] | None = None

    @model_validator(mode="after")
    def _target(self) -> InjectedFault:
        component = KIND_INFO[self.kind][1]
        if component == "node" and self.node is None:
            raise ConfigError(field="node", value=None, rule=f"is required: a {self.kind} fault needs a node",
                              fix="give node: <server index or GPU name>")
        if component == "link" and self.link is None:
            raise ConfigError(field="link", value=None, rule=f"is required: a {self.kind} fault needs a link",
                              fix="give link: [leaf, spine]")
        return self


class C4DParams(StrictModel):
    """C4D: faults over a long run, detected by timeout + manual diagnosis or by C4D.

    Attributes (defaults and their sources)
    ----------
    horizon:
        Wall-clock length of the run (default 30 days).
    servers:
        Servers of the job (default 64: 512 GPUs), the first ones of the fabric.
    reference_interruptions, reference_time, reference_gpus:
        The public fault rate the job's rate is scaled from: 419 unexpected
        interruptions in 54 days on 16,384 GPUs (Llama 3 report) -> per GPU
        4.74e-4 per day, 0.24 per day for 512 GPUs.
    rate_per_gpu:
        Give the per-GPU rate directly instead (events per second, e.g. ``'5e-4 /day'``).
    mix:
        Shares of the fault kinds (:class:`FaultMix`).
    faults:
        Faults at given times instead of drawn ones (empty: draw from the rate).
    checkpoint_interval:
        Wall-clock running time between checkpoints (default 1 h; saves assumed asynchronous).
    restart_time:
        Isolation, rescheduling and reload from the checkpoint (default 10 min), both methods.
    timeout:
        Baseline: the collective timeout that turns a hang into an error (default 30 min,
        PyTorch's historical process-group default).
    diagnosis_time:
        Baseline: manual diagnosis after an error or a noticed slowdown (default 2 h; the
        C4 paper describes "hours" for it).
    slow_notice_time:
        Baseline: time until operators notice a slow (not hung) job (default 6 h; an assumption).
    spare_nodes, repair_time:
        Servers on standby to replace isolated ones (default 4) and how long an isolated
        server is away for repair (default 2 days).
    c4d_hang_timeout:
        C4D: a collective unfinished this long after its last rank entered is a hang (default 30 s).
    c4d_slow_iterations:
        C4D: anomalous iterations needed before it acts on a slowdown (default 5).
    c4d_analysis_time:
        C4D: from detection to a localised component, incl. path probes (default 10 s).
    slow_threshold, qp_threshold, late_threshold:
        C4D: a collective is slow above ``1 + slow_threshold`` x its usual duration
        (0.2), a QP above ``1 + qp_threshold`` x its usual transfer time (0.3), a rank
        late when it enters more than ``late_threshold`` x the usual duration after the
        median rank (0.1; also at least 6 robust standard deviations of lateness).
    slow_nic_factor, slow_link_factor:
        Bandwidth left on a degraded PCIe/NIC link (0.25: a x16 link trained down to x4)
        and on a degraded switch link (0.25).
    straggler_slowdown:
        Compute slowdown of a straggler host (1.3, e.g. thermal throttling).
    flap_period, flap_down:
        A flapping link goes down for ``flap_down`` (5 s) every ``flap_period`` (60 s).
    entry_jitter, measurement_noise:
        Standard deviation of a rank's arrival at the collective as a fraction of the
        compute time (0.01), and of measured transfer times (log-normal, 0.05).
    episodes_per_class:
        Extra seeded episodes per fault kind (and healthy) for localisation precision/recall (4).
    routing:
        Paths of the job's traffic: ``ecmp`` (default) or ``planned`` (C4P).
    """

    horizon: Positive = 30 * 86400.0
    servers: Annotated[int, Field(ge=2)] = 64
    reference_interruptions: Annotated[float, Field(ge=0)] = 419.0
    reference_time: Positive = 54 * 86400.0
    reference_gpus: Annotated[int, Field(gt=0)] = 16384
    rate_per_gpu: Annotated[EventRate, Field(ge=0)] | None = None
    mix: FaultMix = FaultMix()
    faults: list[InjectedFault] = []
    checkpoint_interval: Positive = 3600.0
    restart_time: NonNegative = 600.0
    timeout: Positive = 1800.0
    diagnosis_time: NonNegative = 7200.0
    slow_notice_time: NonNegative = 6 * 3600.0
    spare_nodes: Annotated[int, Field(ge=0)] = 4
    repair_time: NonNegative = 2 * 86400.0
    c4d_hang_timeout: Positive = 30.0
    c4d_slow_iterations: Annotated[int, Field(ge=1)] = 5
    c4d_analysis_time: NonNegative = 10.0
    slow_threshold: Annotated[float, Field(gt=0)] = 0.2
    qp_threshold: Annotated[float, Field(gt=0)] = 0.3
    late_threshold: Annotated[float, Field(gt=0)] = 0.1
    slow_nic_factor: Annotated[float, Field(gt=0, lt=1)] = 0.25
    slow_link_factor: Annotated[float, Field(gt=0, lt=1)] = 0.25
    straggler_slowdown: Annotated[float, Field(gt=1)] = 1.3
    flap_period: Positive = 60.0
    flap_down: Positive = 5.0
    entry_jitter: Annotated[float, Field(ge=0)] = 0.01
    measurement_noise: Annotated[float, Field(ge=0)] = 0.05
    episodes_per_class: Annotated[int, Field(ge=0)] = 4
    routing: Literal["ecmp", "planned"] = "ecmp"

    @model_validator(mode="after")
    def _flap(self) -> C4DParams:
        if self.flap_down >= self.flap_period:
            raise ConfigError(field="flap_down", value=self.flap_down, rule=f"(s) must be shorter than flap_period "
                              f"({self.flap_period:g} s)", fix="a flapping link must come back up between drops: "
                              "give a shorter flap_down or a longer flap_period")
        return self

    def job_rate(self, gpus: int) -> float:
        """Faults per second of running for a job of ``gpus`` GPUs."""
        per_gpu = self.rate_per_gpu if self.rate_per_gpu is not None else (
            self.reference_interruptions / self.reference_time / self.reference_gpus)
        return per_gpu * gpus


class JobPlacement(StrictModel):
    """A job sharing the fabric in the C4P comparison: its size in servers and a name."""

    servers: Annotated[int, Field(ge=2)]
    name: str = ""


class C4PParams(StrictModel):
    """C4P: ECMP versus planned paths for the jobs on the fabric.

    Attributes
    ----------
    jobs:
        Jobs at once (default: one job on all 64 servers, 512 GPUs).
    placement:
        How jobs get servers and their rank order: ``packed`` (consecutive servers),
        ``interleaved`` (servers dealt round-robin to the jobs) or ``random`` (a seeded
        shuffle, as a fragmented cluster hands them out).
    qps:
        Queue pairs per ring connection, each its own flow and hash (default 2: one per
        port of a dual-port NIC when balanced).
    allreduce_size:
        Buffer of the nccl-tests-style all-reduce benchmark (default 1 GiB).
    ecmp_seeds:
        ECMP hash seeds averaged (default 3).
    failed_links:
        Switch links to fail for the re-planning comparison; default: the leaf-spine
        link that carries the most planned QPs; ``[]``: no failure variants.
    """

    jobs: Annotated[list[JobPlacement], Field(min_length=1)] = [JobPlacement(servers=64)]
    placement: Literal["packed", "interleaved", "random"] = "packed"
    qps: Annotated[int, Field(ge=1, le=16)] = 2
    allreduce_size: Annotated[Bytes, Field(gt=0)] = float(2**30)
    ecmp_seeds: Annotated[int, Field(ge=1, le=32)] = 3
    failed_links: list[tuple[str, str]] | None = None



class C4Params(StrictModel):
    """The C4 study: ``part`` picks C4D, C4P or both.

    ``topology`` is used when the scenario has none (default the 512-GPU H800 cluster).
    ``job`` is the training job both parts use (:class:`~commsim.systems.c4.model.JobModel`).
    """

    part: Literal["both", "c4d", "c4p"] = "both"
    topology: str = "topologies/h800_cluster_512.yaml"
    job: JobModel = JobModel()
    c4d: C4DParams = C4DParams()
    c4p: C4PParams = C4PParams()
