"""Kernel speed: raw SimPy timeouts/s, then commsim flow completions/s on a 1,024-host fat-tree.

    python benchmarks/bench_kernel.py            # 1,000 / 10,000 / 100,000 flows
    python benchmarks/bench_kernel.py 1000 10000  # chosen sizes
    python benchmarks/bench_kernel.py --profile 10000 0   # cProfile of one case (flows, load; 0: all at t=0)

Workload: permutation traffic on a k=16 fat-tree (1,024 hosts, 400 Gbps links):
host i sends to a random other host, a new random permutation every 1,024 flows;
log-normal sizes (median 1 MB, sigma 1.5) so flows finish at different times;
Poisson arrivals at 50% of the host link rate. A second case starts every flow at
t = 0 (the heaviest contention: the whole fabric is one connected component).
Each case runs in a fresh process (peak memory = its max RSS). The ECMP routes
are computed before the clock starts and reported separately.
"""

from __future__ import annotations

import itertools
import json
import math
import resource
import subprocess
import sys
import time


def raw_simpy(n: int = 1_000_000) -> float:
    """Timeouts per second of a bare SimPy process on this machine."""
    import simpy

    env = simpy.Environment()

    def ticker():
        for _ in range(n):
            yield env.timeout(1.0)

    env.process(ticker())
    start = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - start)


def case(flows: int, load: float) -> dict[str, float]:
    import numpy as np
    import simpy

    from commsim.kernel import FluidKernel
    from commsim.network import Network
    from commsim.network.generators import fat_tree

    topo = fat_tree(k=16, bandwidth="400 Gbps")
    env = simpy.Environment()
    kernel = FluidKernel(env, record_usage=False)
    net = Network(kernel, topo)
    rng = np.random.default_rng(0)
    hosts = np.array(topo.devices)
    n = len(hosts)
    rounds = -(-flows // n)
    src = np.tile(np.arange(n), rounds)[:flows]
    dst = np.concatenate([rng.permutation(n) for _ in range(rounds)])[:flows]
    dst = np.where(dst == src, (dst + 1) % n, dst)
    size = 1e6 * np.exp(1.5 * rng.standard_normal(flows))
    t0 = time.perf_counter()
    routes = net.routes(hosts[src], hosts[dst])
    routing = time.perf_counter() - t0
    link = 400e9 / 8
    starts = np.cumsum(rng.exponential(size.mean() / (load * link * n), flows)) if load > 0 else np.zeros(flows)

    def arrivals():
        now = 0.0
        i = 0
        while i < flows:
            j = i + 1
            while j < flows and starts[j] == starts[i]:
                j += 1
            yield env.timeout(starts[i] - now)
            now = starts[i]
            net.send(routes.subset(np.arange(i, j)), size[i:j], record=False)
            i = j

    env.process(arrivals())
    wall0, cpu0 = time.perf_counter(), time.process_time()
    env.run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert kernel.stats.activities_completed == flows
    assert math.isclose(net.bytes_delivered, float(size.sum()), rel_tol=1e-9)
    return {"flows": flows, "load": load, "routing_s": routing, "wall_s": wall, "cpu_s": cpu,
            "completions_per_s": flows / wall, "sim_time_s": env.now, "rate_recomputations": kernel.stats.flushes,
            "largest_component": kernel.stats.largest_component,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--case":
        print(json.dumps(case(int(sys.argv[2]), float(sys.argv[3]))))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--profile":
        import cProfile
        import pstats

        flows, load = int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
        profiler = cProfile.Profile()
        row = profiler.runcall(case, flows, load)
        print(json.dumps(row))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    sizes = [int(a) for a in sys.argv[1:]] or [1_000, 10_000, 100_000]
    print(f"raw SimPy: {raw_simpy():,.0f} timeouts/s")
    print(f"{'flows':>8} {'arrivals':>10} {'routing s':>10} {'wall s':>8} {'cpu s':>8} {'compl./s':>10} "
          f"{'recomp.':>8} {'peak MB':>8}")
    rows = []
    for load, label in ((0.5, "Poisson50%"), (0.0, "all at t=0")):
        for flows in sizes:
            if load == 0.0 and flows > 10_000:
                continue  # every completion reshapes one giant component: quadratic, see README
            out = subprocess.run([sys.executable, __file__, "--case", str(flows), str(load)], capture_output=True,
                                 text=True, check=True)
            r = json.loads(out.stdout)
            rows.append(r)
            print(f"{flows:>8,} {label:>10} {r['routing_s']:>10.2f} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} "
                  f"{r['completions_per_s']:>10,.0f} {r['rate_recomputations']:>8,} {r['peak_rss_mb']:>8.0f}")
    for label, group in (("Poisson arrivals", [r for r in rows if r["load"] > 0]),
                         ("all at t=0", [r for r in rows if r["load"] == 0])):
        for a, b in itertools.pairwise(group):
            exponent = math.log(b["cpu_s"] / a["cpu_s"]) / math.log(b["flows"] / a["flows"])
            print(f"cost growth ({label}, {a['flows']:,} -> {b['flows']:,} flows): cpu ~ flows^{exponent:.2f}")


if __name__ == "__main__":
    main()
