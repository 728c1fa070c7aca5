"""Pipeline schedules: plain 1F1B and Megatron-LM's interleaved 1F1B (virtual pipeline stages).

A schedule is the order in which one pipeline stage runs the forward (``"F"``)
and backward (``"B"``) passes of its micro-batches. With ``v`` virtual stages
(model chunks) per stage, each pass also names the chunk it runs.

Interleaved 1F1B follows Megatron-LM's ``forward_backward_pipelining_with_interleaving``:
forward step ``k`` of a stage runs micro-batch ``(k // (p·v))·p + k mod p`` on chunk
``(k mod p·v) // p``; backward step ``k`` the same micro-batch on chunk
``v - 1 - (k mod p·v) // p``. Warm-up is ``2·(p - stage - 1) + (v - 1)·p`` forward
steps (every step when the number of micro-batches equals ``p``), then one
forward and one backward alternate, then the remaining backwards. The bubble
shrinks from ``(p - 1)/m`` to ``(p - 1)/(v·m)`` of the ideal step.
"""

from __future__ import annotations

__all__ = ["interleaved_one_f_one_b", "one_f_one_b", "pipeline_schedule"]


def one_f_one_b(stage: int, stages: int, micro_batches: int) -> list[tuple[str, int]]:
    """The 1F1B schedule of one pipeline stage: ``("F", j)`` / ``("B", j)`` in execution order.

    Warm-up: ``min(stages - stage - 1, micro_batches)`` forwards; steady state:
    alternate one forward and one backward; cool-down: the remaining backwards.

    >>> one_f_one_b(0, 2, 3)
    [('F', 0), ('F', 1), ('B', 0), ('F', 2), ('B', 1), ('B', 2)]
    >>> one_f_one_b(1, 2, 3)
    [('F', 0), ('B', 0), ('F', 1), ('B', 1), ('F', 2), ('B', 2)]
    """
    warmup = min(stages - stage - 1, micro_batches)
    order = [("F", j) for j in range(warmup)]
    for i in range(micro_batches - warmup):
        order += [("F", warmup + i), ("B", i)]
    order += [("B", j) for j in range(micro_batches - warmup, micro_batches)]
    return order


def interleaved_one_f_one_b(stage: int, stages: int, micro_batches: int,
                            chunks: int) -> list[tuple[str, int, int]]:
    """Megatron's interleaved 1F1B for one stage: ``(phase, micro_batch, chunk)`` in execution order.

    ``micro_batches`` must be a multiple of ``stages`` (Megatron's rule; the
    generator checks it).

    >>> interleaved_one_f_one_b(1, 2, 2, 2)[:4]
    [('F', 0, 0), ('F', 1, 0), ('F', 0, 1), ('F', 1, 1)]
    >>> len(interleaved_one_f_one_b(0, 2, 4, 2))
    16
    """
    group = stages * chunks
    total = micro_batches * chunks
    if micro_batches == stages:
        warmup = total
    else:
        warmup = min(2 * (stages - stage - 1) + (chunks - 1) * stages, total)

    def step(phase: str, k: int) -> tuple[str, int, int]:
        chunk = (k % group) // stages
        if phase == "B":
            chunk = chunks - 1 - chunk
        return phase, (k // group) * stages + k % stages, chunk

    order = [step("F", k) for k in range(warmup)]
    for i in range(total - warmup):
        order += [step("F", warmup + i), step("B", i)]
    order += [step("B", k) for k in range(total - warmup, total)]
    return order


def pipeline_schedule(stage: int, stages: int, micro_batches: int, chunks: int = 1) -> list[tuple[str, int, int]]:
    """The schedule of one stage as ``(phase, micro_batch, chunk)``: plain 1F1B at one chunk, else interleaved.

    >>> pipeline_schedule(0, 2, 2)
    [('F', 0, 0), ('F', 1, 0), ('B', 0, 0), ('B', 1, 0)]
    """
    if chunks == 1:
        return [(phase, j, 0) for phase, j in one_f_one_b(stage, stages, micro_batches)]
    return interleaved_one_f_one_b(stage, stages, micro_batches, chunks)
