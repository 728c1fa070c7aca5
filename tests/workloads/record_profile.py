"""Record PyTorch profiler traces of a real two-process torch.distributed (gloo, CPU) run of a tiny model.

Run as a script: ``python record_profile.py OUT_DIR PORT``; writes ``OUT_DIR/rank0.json`` and
``rank1.json``. Each rank trains a two-layer MLP under DistributedDataParallel for two steps
(gradient all-reduce overlapping the backward pass), then runs an all-reduce (which rank 1 joins 20 ms late) and a broadcast.
The ranks are forked, so torch is imported once.
"""

from __future__ import annotations

import os
import sys
import time


def _rank(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.profiler import ProfilerActivity, profile

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x, y = torch.randn(32, 64), torch.randn(32, 8)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(2):
            loss = torch.nn.functional.mse_loss(ddp(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        t = torch.ones(1000)
        if rank == 1:
            time.sleep(0.02)    # rank 0 sits idle in the next all-reduce: a wait the import must find
        dist.all_reduce(t)
        dist.broadcast(t, 0)
    prof.export_chrome_trace(os.path.join(out, f"rank{rank}.json"))
    dist.destroy_process_group()


if __name__ == "__main__":
    import torch.multiprocessing as mp

    mp.start_processes(_rank, args=(2, int(sys.argv[2]), sys.argv[1]), nprocs=2, start_method="fork")
