"""C4D's raw material: fault histories and the iterations simulated in detail when something happens.

**Fault history.** Faults arrive as a Poisson process in *running* time at the
job's rate (per-GPU rate x GPUs; default from 419 interruptions in 54 days on
16,384 GPUs); each is a kind drawn from :class:`~commsim.systems.c4.params.FaultMix`
at a location drawn uniformly: a server (and a GPU on it) for node faults, a
leaf-spine link that carries the job's traffic for link faults (a fault on a
link the job does not use does not interrupt it). One seeded generator draws
it all: the same seed gives the same history.

**A faulty iteration.** The job's data-parallel all-reduce (the collective C4D
watches; one ring per rail) is simulated QP by QP on the fabric
(:class:`~commsim.systems.c4.traffic.RingSim`) with the fault in place: a GPU
that hangs never enters (its rings never start); a straggler host's ranks enter
``(slowdown - 1) x`` the compute time late; a degraded PCIe/NIC link or switch
link runs at its factor; a dead NIC or link stops its QPs a quarter into the
transfer (RDMA QPs keep their paths, so they stall); a flapping link goes down
for ``flap_down`` during the transfer. Per-rank entry times and per-QP transfer
times come out of that run; :func:`observe` adds the run-to-run jitter of
arrivals and measurement noise (seeded) to make the iterations C4D sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from commsim.errors import ConfigError
from commsim.faults import LinkDegraded, LinkDown
from commsim.network.topology import Topology
from commsim.systems.c4.c4p import bucket_time_of
from commsim.systems.c4.layout import dp_rings, job_devices, server_devices, server_of_device
from commsim.systems.c4.model import ComputeProfile, JobModel, compute_profile, iteration_time
from commsim.systems.c4.params import FAULT_KINDS, KIND_INFO, C4DParams, InjectedFault
from commsim.systems.c4.traffic import RingResult, RingSim, switch_links

__all__ = ["Fault", "C4DSetup", "EpisodeRun", "Observation", "build_setup", "draw_history", "given_history",
           "simulate_episode", "observe", "random_fault"]


@dataclass(frozen=True)
class Fault:
    """One fault: its kind, when (running time, s) and where (server and GPU, or a switch link)."""

    kind: str
    at: float
    server: int | None = None
    device: str | None = None
    link: tuple[str, str] | None = None

    @property
    def truth(self) -> tuple[str, Any]:
        """The component C4D must isolate: ``("node", server)`` or ``("link", (a, b))`` (a < b)."""
        if KIND_INFO[self.kind][1] == "node":
            return ("node", self.server)
        assert self.link is not None
        return ("link", tuple(sorted(self.link)))

    @property
    def hangs(self) -> bool:
        """Whether the fault stops the job (else it slows it)."""
        return KIND_INFO[self.kind][2]

    def describe(self) -> str:
        where = f"server {self.server} ({self.device})" if self.link is None else f"link {self.link[0]}-{self.link[1]}"
        return f"{self.kind} at {where}"


@dataclass
class C4DSetup:
    """The job C4D watches and its healthy behaviour (computed once per run)."""

    topology: Topology
    params: C4DParams
    job: JobModel
    servers: list[list[str]]
    job_servers: list[int]
    devices: list[str]
    rank_of: dict[str, int]
    server_of: dict[str, int]
    rings: list[Any]
    qps: int
    seed: int
    step_latency: float
    profile: ComputeProfile
    healthy: RingResult
    iteration: float
    compute_time: float
    used_links: list[tuple[str, str]]
    qp_src: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    qp_dst: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fabric_faults: list[Any] = field(default_factory=list)

    def ring_sim(self, faults: list[Any] | None = None) -> RingSim:
        """A fresh simulation of the job's data-parallel rings with the fabric's faults and ``faults``."""
        return RingSim(self.topology, self.rings, qps=self.qps, routing=self.params.routing, seed=self.seed,
                       reroute=False, step_latency=self.step_latency, faults=[*self.fabric_faults, *(faults or [])])

    def iteration_with(self, ring: RingResult | None = None, compute_scale: float = 1.0) -> float:
        """Iteration time (s) with these rings (default healthy) and compute ``compute_scale`` times slower."""
        res = ring or self.healthy
        fns = [bucket_time_of(res, [r for r in range(len(self.rings)) if r // self.job.tp == st])
               for st in range(self.job.pp)]
        profile = self.profile if compute_scale == 1.0 else self.profile.scaled(compute_scale)
        return iteration_time(profile, fns)[0]


def build_setup(topology: Topology, params: C4DParams, job: JobModel, *, seed: int = 0, qps: int = 2,
                step_latency: float = 0.0, faults: list[Any] | None = None) -> C4DSetup:
    """The C4D job on the first ``params.servers`` servers of ``topology``, with its healthy iteration.

    ``faults`` (:mod:`commsim.faults` link models, times from the collective's start) are the
    fabric's state in every iteration simulated, the healthy one included.
    """
    servers = server_devices(topology)
    if params.servers > len(servers):
        raise ConfigError(field="workload.params.c4d.servers", value=params.servers,
                          rule=f"exceeds the {len(servers)} servers of the topology", fix=f"use at most {len(servers)}")
    job_servers = list(range(params.servers))
    devices = job_devices(servers, job_servers)
    gpus = len(devices)
    if gpus % (job.tp * job.pp):
        raise ConfigError(field="workload.params.c4d.servers", value=params.servers,
                          rule=f"gives {gpus} GPUs, not a multiple of tp x pp = {job.tp * job.pp}",
                          fix="choose a server count that tp x pp divides")
    dp = gpus // (job.tp * job.pp)
    profile = compute_profile(topology, job, dp)
    rings = dp_rings(servers, job_servers, tp=job.tp, pp=job.pp, nbytes=profile.dp_bytes)
    setup = C4DSetup(topology=topology, params=params, job=job, servers=servers, job_servers=job_servers,
                     devices=devices, rank_of={d: i for i, d in enumerate(devices)},
                     server_of=server_of_device(servers), rings=rings, qps=qps, seed=seed, step_latency=step_latency,
                     profile=profile, healthy=None, iteration=math.nan,  # type: ignore[arg-type]
                     compute_time=max(profile.backward_end), used_links=[], fabric_faults=list(faults or []))
    healthy = setup.ring_sim().run()
    healthy.check_finished("the C4D job's healthy all-reduce")
    setup.healthy = healthy
    setup.iteration = setup.iteration_with(healthy)
    setup.qp_src = np.array([setup.rank_of[s] for s in healthy.qps["src"]], dtype=np.int64)
    setup.qp_dst = np.array([setup.rank_of[d] for d in healthy.qps["dst"]], dtype=np.int64)
    setup.used_links = [link for link in switch_links(topology) if healthy.qps_on(*link)]
    return setup


# ---------------------------------------------------------------------------------------------------- histories
def random_fault(setup: C4DSetup, kind: str, at: float, rng: np.random.Generator) -> Fault:
    """A fault of ``kind`` at a uniformly drawn location of the job."""
    if KIND_INFO[kind][1] == "node":
        server = int(setup.job_servers[int(rng.integers(len(setup.job_servers)))])
        device = setup.servers[server][int(rng.integers(len(setup.servers[server])))]
        return Fault(kind=kind, at=at, server=server, device=device)
    if not setup.used_links:
        raise ConfigError(field="workload.params.c4d.mix", value=kind,
                          rule="is a link fault, but the job's traffic crosses no leaf-spine link",
                          fix="give link faults weight 0, or use a job that spans leaf groups")
    link = setup.used_links[int(rng.integers(len(setup.used_links)))]
    return Fault(kind=kind, at=at, link=link)


def draw_history(setup: C4DSetup, rng: np.random.Generator) -> list[Fault]:
    """Faults over the horizon, in running time (seeded by ``rng``)."""
    p = setup.params
    rate = p.job_rate(len(setup.devices))
    weights = p.mix.weights()
    if not setup.used_links:
        weights = {k: (0.0 if KIND_INFO[k][1] == "link" else w) for k, w in weights.items()}
    kinds = list(FAULT_KINDS)
    w = np.array([weights[k] for k in kinds])
    if w.sum() <= 0 or rate <= 0:
        return []
    w = w / w.sum()
    out, t = [], 0.0
    while True:
        t += float(rng.exponential(1.0 / rate))
        if t >= p.horizon:
            return out
        out.append(random_fault(setup, kinds[int(rng.choice(len(kinds), p=w))], t, rng))


def given_history(setup: C4DSetup, faults: list[InjectedFault]) -> list[Fault]:
    """The faults a scenario names, checked against the topology (bad names fail with a clear message)."""
    out = []
    links = {frozenset(link): link for link in switch_links(setup.topology)}
    for i, f in enumerate(faults):
        where = f"workload.params.c4d.faults[{i}]"
        if KIND_INFO[f.kind][1] == "node":
            server = _server_named(setup, f.node, f"{where}.node")
            if f.gpu >= len(setup.servers[server]):
                raise ConfigError(field=f"{where}.gpu", value=f.gpu,
                                  rule=f"is not a GPU of server {server} ({len(setup.servers[server])} GPUs)",
                                  fix=f"use 0..{len(setup.servers[server]) - 1}")
            device = setup.servers[server][f.gpu]
            if isinstance(f.node, str) and setup.topology.graph.has_node(f.node) and \
                    setup.topology.kind(f.node) == "device":
                device = f.node
            out.append(Fault(kind=f.kind, at=f.at, server=server, device=device))
        else:
            assert f.link is not None
            link = links.get(frozenset(f.link))
            if link is None:
                raise ConfigError(field=f"{where}.link", value=list(f.link),
                                  rule="is not a switch-to-switch link of the topology",
                                  fix=f"name a leaf-spine link such as {list(next(iter(links.values())))}")
            if link not in setup.used_links:
                sample = ", ".join(f"[{a}, {b}]" for a, b in setup.used_links[:3]) or "none"
                raise ConfigError(field=f"{where}.link", value=list(f.link),
                                  rule="carries none of the job's traffic, so a fault there would not touch the job",
                                  fix=f"name a leaf-spine link the job uses, e.g. {sample}")
            out.append(Fault(kind=f.kind, at=f.at, link=link))
    return sorted(out, key=lambda x: x.at)


def _server_named(setup: C4DSetup, node: int | str | None, where: str) -> int:
    graph = setup.topology.graph
    if isinstance(node, int):
        if node in setup.job_servers:
            return node
        raise ConfigError(field=where, value=node, rule=f"is not a server of the job (0..{len(setup.job_servers) - 1})",
                          fix="give a server index of the job, or a GPU name such as gpu8")
    if node is not None and graph.has_node(node) and "server" in graph.nodes[node]:
        server = int(graph.nodes[node]["server"])
        if server in setup.job_servers:
            return server
    raise ConfigError(field=where, value=node, rule="is not a node of the topology that belongs to the job",
                      fix=f"name a GPU or NIC of the job such as {setup.devices[0]}, or a server index")


# ---------------------------------------------------------------------------------------------------- episodes
@dataclass
class EpisodeRun:
    """A faulty (or healthy) iteration simulated in detail.

    ``entry[rank]`` is when each rank entered the collective (NaN: never);
    ``rings`` the ring run (per-QP start/end, NaN = never finished);
    ``link_health`` the worst bandwidth fraction each faulty link showed (what a
    probe of it measures).
    """

    fault: Fault | None
    entry: np.ndarray
    rings: RingResult
    link_health: dict[tuple[str, str], float]


def _nic_of(topology: Topology, device: str) -> str:
    return next(n for n in topology.graph.successors(device) if topology.kind(n) == "nic")


def _shared_faults(setup: C4DSetup, fault: Fault | None, inject: float
                   ) -> tuple[list[Any], dict[tuple[str, str], float]]:
    """The fabric side of a C4D fault as :mod:`commsim.faults` models, and the health a probe of each link shows.

    Degradations hold from the start; a dead NIC or link goes down at ``inject``
    (a quarter into the transfer), a flapping link for ``flap_down`` from then.
    Hangs and stragglers act on the ranks' entry times instead (no fabric fault).
    """
    p = setup.params
    if fault is None or fault.kind in ("gpu_hang", "straggler"):
        return [], {}
    if fault.kind in ("slow_nic", "nic_down"):
        nic = _nic_of(setup.topology, fault.device)
        if fault.kind == "slow_nic":
            links = [(fault.device, nic)]
            faults = [LinkDegraded(at=0.0, link=links[0], factor=p.slow_nic_factor)]
        else:
            links = [(nic, w) for w in setup.topology.graph.successors(nic) if setup.topology.kind(w) == "switch"]
            faults = [LinkDown(at=inject, link=link) for link in links]
    else:
        assert fault.link is not None
        links = [fault.link]
        faults = [{"slow_link": LinkDegraded(at=0.0, link=fault.link, factor=p.slow_link_factor),
                   "link_down": LinkDown(at=inject, link=fault.link),
                   "link_flap": LinkDown(at=inject, link=fault.link, duration=p.flap_down)}[fault.kind]]
    factor = {"slow_nic": p.slow_nic_factor, "slow_link": p.slow_link_factor}.get(fault.kind, 0.0)
    return faults, {tuple(sorted(link)): factor for link in links}


def simulate_episode(setup: C4DSetup, fault: Fault | None) -> EpisodeRun:
    """Simulate the watched collective of one iteration with ``fault`` in place (None: healthy)."""
    p = setup.params
    n = len(setup.devices)
    entry = np.zeros(n)
    if fault is not None and fault.kind == "straggler":
        late = (p.straggler_slowdown - 1.0) * setup.compute_time
        for dev in setup.servers[fault.server]:
            entry[setup.rank_of[dev]] += late
    if fault is not None and fault.kind == "gpu_hang":
        entry[setup.rank_of[fault.device]] = math.nan
    starts = np.array([np.max(entry[[setup.rank_of[m] for m in ring.members]]) for ring in setup.rings])
    inject = 0.25 * float(np.nanmax(setup.healthy.ring_time)) + float(np.nanmax(starts)) if n else 0.0
    faults, health = _shared_faults(setup, fault, inject)
    sim = setup.ring_sim(faults=faults)
    sim.start(starts)
    return EpisodeRun(fault=fault, entry=entry, rings=sim.run(), link_health=health)


@dataclass
class Observation:
    """What C4D's agents report for one iteration of the watched collective.

    ``entry``/``exit`` per rank (s; NaN = never entered / not finished when the
    hang timeout expired), ``qp_time`` per QP (post to completion, s; NaN = never
    completed), ``duration`` first entry to last exit (NaN while hung).
    """

    entry: np.ndarray
    exit: np.ndarray
    qp_time: np.ndarray
    duration: float


def observe(setup: C4DSetup, run: EpisodeRun, rng: np.random.Generator, iterations: int) -> list[Observation]:
    """``iterations`` noisy observations of an episode: arrival jitter and measurement noise, seeded."""
    p = setup.params
    q = run.rings.qps
    qp_time = (q["end"] - q["start"]).to_numpy(dtype=float)
    n = len(setup.devices)
    ring_members = [np.array([setup.rank_of[m] for m in ring.members]) for ring in setup.rings]
    # each rank's true finishing time relative to its ring's start (NaN when stuck)
    finish_rel = np.full(n, math.nan)
    rank_end = np.full(n, -math.inf)
    stuck = np.zeros(n, dtype=bool)
    end = q["end"].to_numpy(dtype=float)
    for ranks in (setup.qp_src, setup.qp_dst):
        np.maximum.at(rank_end, ranks, np.where(np.isnan(end), -math.inf, end))
        np.logical_or.at(stuck, ranks, np.isnan(end))
    for r, members in enumerate(ring_members):
        start = run.rings.ring_start[r]
        ok = ~stuck[members]
        finish_rel[members[ok]] = rank_end[members[ok]] - start
    out = []
    for _ in range(iterations):
        entry = run.entry + rng.normal(0.0, p.entry_jitter * setup.compute_time, n)
        noise = rng.lognormal(0.0, p.measurement_noise, qp_time.shape[0]) if p.measurement_noise > 0 else 1.0
        measured = qp_time * noise
        exit_ = np.full(n, math.nan)
        for members in ring_members:
            start = np.max(entry[members])
            if math.isnan(start):
                continue
            scale = rng.lognormal(0.0, p.measurement_noise) if p.measurement_noise > 0 else 1.0
            exit_[members] = start + finish_rel[members] * scale
        duration = float(np.max(exit_) - np.nanmin(entry)) if not np.isnan(exit_).any() else math.nan
        out.append(Observation(entry=entry, exit=exit_, qp_time=measured, duration=duration))
    return out
