"""Cost of a mixture-of-experts FFN on one rank: router, token permutation, expert GEMMs, all-to-all sizes.

Modelling choices (``T`` tokens a rank routes, ``h`` hidden, ``E`` experts,
``k`` experts per token, ``ep`` expert-parallel ranks, ``e`` bytes per element):

* Tensor parallelism (Megatron-LM's all-to-all dispatcher, which needs
  sequence parallelism with ``tp > 1``): each rank routes its own ``T`` tokens
  (``b·s/(cp·tp)``); after the dispatch the TP ranks all-gather their received
  rows (``tp·R`` rows per rank) and run every local expert on ``1/tp`` of its FFN
  width, then reduce-scatter the expert outputs before the combine.
* Router: a ``T x h`` by ``h x E`` GEMM plus softmax and top-k (5 FLOP per
  logit); its weights are replicated on the tensor-parallel ranks.
* Capacity: each expert takes at most ``ceil(capacity_factor·T·k/E)`` tokens
  from each rank (GShard/Megatron token dropping and padding); the dispatch
  buffer holds ``R = E·capacity`` token rows, which is ``T·k`` at capacity
  factor 1 when ``E`` divides ``T·k``. Routing is taken as balanced.
* Dispatch and combine are all-to-alls over the EP group whose send buffer is
  the ``R·h·e`` bytes of the routed rows (nccl-tests size convention); the
  local permutation before the dispatch and the weighted un-permutation after
  the combine are memory-bound ops.
* Experts: ``E/ep`` experts per rank, each receiving ``tp·ep·capacity`` rows;
  the expert GEMMs run grouped (one op per layer for all local experts),
  sharded over tensor parallelism like the dense FFN (FFN width ``/tp``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from commsim.workloads._costs import Cost, ffn_activation_costs, gemm_cost, memory_cost
from commsim.workloads._gemm import Gemm, gemm_backward
from commsim.workloads.models import TransformerSpec

__all__ = ["MoECosts", "moe_costs"]


@dataclass(frozen=True)
class MoECosts:
    """Forward and backward costs of one MoE FFN on one rank, its parameters and its all-to-all size.

    ``routed`` is ``R``, the token rows in the dispatch buffer; ``a2a_bytes``
    the send buffer of one dispatch or combine all-to-all (``R·h·e``);
    ``expert_rows`` the rows the local experts process (``tp·R``) and
    ``tp_bytes`` the size of the TP all-gather before and reduce-scatter after
    the experts (``tp·R·h·e``, their full output and input);
    ``dense_params`` maps the op completing the router's gradient to its
    parameters (synchronised over data parallelism); ``expert_params`` maps the
    ops completing expert gradients to this rank's expert parameters
    (synchronised over the expert-data-parallel group).
    """

    forward: dict[str, Cost]
    backward: dict[str, Cost]
    dense_params: dict[str, int]
    expert_params: dict[str, int]
    routed: int
    a2a_bytes: float
    local_experts: int
    expert_rows: int
    tp_bytes: float


def moe_costs(spec: TransformerSpec, *, tokens: int, tp: int, element_bytes: int, num_experts: int, ep: int,
              top_k: int, capacity_factor: float) -> MoECosts:
    """Costs of one MoE FFN for the ``tokens`` tokens one rank routes (``num_experts`` divisible by ``ep``).

    >>> from commsim.workloads.models import TransformerSpec
    >>> spec = TransformerSpec(name="t", layers=2, hidden=8, heads=2, ffn_hidden=32, vocab=16, max_seq_len=4)
    >>> m = moe_costs(spec, tokens=4, tp=1, element_bytes=2, num_experts=4, ep=2, top_k=2, capacity_factor=1.0)
    >>> m.routed, m.a2a_bytes, m.local_experts, m.expert_rows
    (8, 128.0, 2, 8)
    """
    h, e = spec.hidden, element_bytes
    f_local = spec.ffn_hidden // tp
    fc1_width = f_local * (2 if spec.gated_ffn else 1)
    local = num_experts // ep
    capacity = math.ceil(capacity_factor * tokens * top_k / num_experts)
    routed = num_experts * capacity
    rows = routed * tp
    # every local expert multiplies its own rows (capacity x tokens gathered over EP and TP): a grouped GEMM
    per_expert = rows // local
    router_gemm = Gemm("router", m=tokens, n=num_experts, k=h, element_bytes=e)
    fc1_gemm = Gemm("expert_fc1", m=per_expert, n=fc1_width, k=h, batch=local, element_bytes=e)
    fc2_gemm = Gemm("expert_fc2", m=per_expert, n=h, k=f_local, batch=local, element_bytes=e)
    # the router is a GEMM, a softmax and a top-k: three kernels
    router = gemm_cost(router_gemm, flops=2.0 * tokens * h * num_experts + 5.0 * tokens * num_experts,
                       nbytes=(tokens * h + h * num_experts) * e + 2.0 * tokens * num_experts * 4, launches=3)
    permute = memory_cost(0.0, (tokens + routed) * h * e)
    unpermute = memory_cost(2.0 * routed * h, (routed + tokens) * h * e)
    fc1 = gemm_cost(fc1_gemm, nbytes=(rows * h + local * h * fc1_width + rows * fc1_width) * e)
    fc2 = gemm_cost(fc2_gemm, nbytes=(rows * f_local + local * f_local * h + rows * h) * e)
    fc1_dgrad, fc1_wgrad = (gemm_cost(g, nbytes=fc1.bytes) for g in gemm_backward(fc1_gemm))
    fc2_dgrad, fc2_wgrad = (gemm_cost(g, nbytes=fc2.bytes) for g in gemm_backward(fc2_gemm))
    act, act_bwd = ffn_activation_costs(spec.gated_ffn, rows, f_local, e)
    forward = {"router": router, "permute": permute, "expert_fc1": fc1, "expert_act": act, "expert_fc2": fc2,
               "unpermute": unpermute}
    router_dgrad, router_wgrad = (gemm_cost(g, nbytes=router.bytes) for g in gemm_backward(router_gemm))
    backward = {"unpermute_bwd": unpermute, "expert_fc2_dgrad": fc2_dgrad, "expert_fc2_wgrad": fc2_wgrad,
                "expert_act_bwd": act_bwd, "expert_fc1_dgrad": fc1_dgrad, "expert_fc1_wgrad": fc1_wgrad,
                "permute_bwd": permute, "router_dgrad": router_dgrad, "router_wgrad": router_wgrad}
    bias = 1 if spec.bias else 0
    expert_params = {"expert_fc2_wgrad": local * (f_local * h + bias * h),
                     "expert_fc1_wgrad": local * (h * fc1_width + bias * fc1_width)}
    return MoECosts(forward=forward, backward=backward, dense_params={"router_wgrad": h * num_experts},
                    expert_params=expert_params, routed=routed, a2a_bytes=float(routed * h * e), local_experts=local,
                    expert_rows=rows, tp_bytes=float(rows * h * e))
