"""NVLS (NVLink SHARP) all-reduce as a schedule: the switch inside each server reduces and multicasts.

The group is the ``n`` GPUs followed by one position per server: its NVLink
switch. The buffer goes in ``k`` chunks; for each chunk

1. *reduce*: every GPU pushes the chunk to its server's switch, which adds the
   GPUs' copies in the network (``U``; ``1 + 1 / L`` chunks on the GPU's link:
   the GPU also sends the reduced share it is in charge of to be multicast);
2. across servers (NVLS-tree), on each rail: GPU ``g`` of every server sends
   ``1 / M`` of its ``1 / L`` share of the chunk to GPU ``g`` of each other
   server (a direct reduce-scatter, ``R``) and returns the reduced piece (a
   direct all-gather, ``A``): ``2 (M - 1) / M`` of the share per NIC, the bytes of
   NCCL's double binary tree;
3. *multicast*: the switch writes the reduced chunk to every GPU of its server
   (``D``; ``1 + 1 / L`` chunks, with the share the GPU read back reduced).

Each GPU pushes its chunks one after another; a later stage of a chunk starts
as soon as its inputs are there and at most two chunks are in flight on a
connection between servers (NCCL keeps a few slots per connection, first in
first out), so consecutive chunks overlap and the time is
``k`` times the slowest stage plus one pass through the others
(:func:`commsim.collectives.nccl.nvls_stages`).

>>> s = nvls_schedule([0, 0, 1, 1], [0, 1, 0, 1], 2**20, chunks=2)
>>> s.ranks, [st.phase for st in s.steps]
(6, ['reduce 0', 'scatter 0', 'gather 0', 'multicast 0', 'reduce 1', 'scatter 1', 'gather 1', 'multicast 1'])
"""

from __future__ import annotations

import numpy as np

from commsim.collectives._schedule import Dep, Schedule, Step

__all__ = ["nvls_schedule"]


def nvls_schedule(server: list[int] | np.ndarray, local: list[int] | np.ndarray, nbytes: float, *,
                  chunks: int) -> Schedule:
    """NVLS all-reduce of ``nbytes`` on GPUs at ``(server[i], local[i])``; positions ``n + s`` are switches.

    Servers must hold the same number of GPUs (``L``); with one server the
    exchange between servers is left out.
    """
    server = np.asarray(server, dtype=np.int64)
    local = np.asarray(local, dtype=np.int64)
    n, m = len(server), int(server.max()) + 1
    per = n // m
    position = np.empty((m, per), dtype=np.int64)
    position[server, local] = np.arange(n)
    gpus = np.arange(n)
    switch = n + server
    chunk = nbytes / chunks
    steps: list[Step] = []
    # entries of the cross-server steps: GPU i to the same-rail GPU of each other server, in order of i then j
    others = np.array([[t for t in range(m) if t != s] for s in range(m)], dtype=np.int64).reshape(m, m - 1)
    x_src = np.repeat(gpus, m - 1)
    x_dst = position[others[server].ravel(), np.repeat(local, m - 1)] if m > 1 else x_src
    piece = chunk / per / m
    # a GPU's NVLink carries the chunk and its 1/L share once more each way (the share it sends to be multicast,
    # the share it receives reduced)
    link = chunk * (1.0 + 1.0 / per)
    previous = -1
    scatters: list[int] = []
    gathers: list[int] = []
    for k in range(chunks):
        up = len(steps)
        deps = (Dep(previous, gpus),) if k else ()
        steps.append(Step(src=gpus, dst=switch, nbytes=np.full(n, link), deps=deps, reduce=True,
                          phase=f"reduce {k}"))
        # a server's chunk is reduced when every one of its GPUs has pushed it
        whole = tuple(Dep(up, position[server, j]) for j in range(per))
        if m > 1:
            scatter = len(steps)
            sdeps = tuple(Dep(up, position[server[x_src], j]) for j in range(per))
            # a window of two chunks in flight per connection (NCCL keeps a few slots), first in first out
            window = (Dep(scatters[-2], np.arange(len(x_src))),) if k > 1 else ()
            steps.append(Step(src=x_src, dst=x_dst, nbytes=np.full(len(x_src), piece), deps=sdeps + window,
                              reduce=True, phase=f"scatter {k}"))
            scatters.append(scatter)
            # the piece GPU i returns waits for every piece sent to i: entry of (sender, slot of i's server)
            slot = np.array([[j if j < s else j - 1 for j in range(m)] for s in range(m)], dtype=np.int64)
            incoming = []
            for j in range(m - 1):
                sender_server = others[server[x_src], j]
                sender = position[sender_server, local[x_src]]
                incoming.append(Dep(scatter, sender * (m - 1) + slot[sender_server, server[x_src]]))
            gather = len(steps)
            window = (Dep(gathers[-2], np.arange(len(x_src))),) if k > 1 else ()
            gathers.append(gather)
            steps.append(Step(src=x_src, dst=x_dst, nbytes=np.full(len(x_src), piece), deps=tuple(incoming) + window,
                              phase=f"gather {k}"))
            # the switch multicasts once every GPU of the server has its pieces back
            whole = tuple(Dep(gather, position[others[server, j], local[position[server, g]]] * (m - 1)
                              + slot[others[server, j], server])
                          for g in range(per) for j in range(m - 1))
        steps.append(Step(src=switch, dst=gpus, nbytes=np.full(n, link), deps=whole, phase=f"multicast {k}"))
        previous = up
    algorithm = "nvls" if m == 1 else "nvls_tree"
    return Schedule("all_reduce", algorithm, n + m, nbytes, steps,
                    notes=f"{chunks} chunks through the NVLink switch{'es' if m > 1 else ''}")
