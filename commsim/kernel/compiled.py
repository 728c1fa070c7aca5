"""The solver's hot loops, compiled with numba: progressive filling and the local-update checks.

numba is imported here and nowhere else, and this module is imported on the
first rate computation, so ``import commsim`` (and any run that never solves a
shared resource) does not pay for it. Compiled functions are cached on disk
(``cache=True``: beside this file, or in numba's per-user cache directory when
the package directory is read-only; ``NUMBA_CACHE_DIR`` chooses another). When
no cache directory can be used at all, the functions are compiled in memory on
each run instead (:func:`_compiled`).

Every loop here visits the incidences in the order the numpy version of the
kernel did (``np.bincount`` and friends add in index order too), so sums are
formed in the same order; results match the numpy solver to float round-off
(see the README's kernel section for what was measured).
"""

from __future__ import annotations

import functools
import math
import warnings

import numba
import numpy as np

from commsim.kernel.maxmin import TIE_TOLERANCE
from commsim.kernel.store import DONE_RTOL

__all__ = ["apply_rates", "component_problem", "fill", "local_update"]

_LOW = 1.0 - TIE_TOLERANCE  # module constants: the compiler folds them in
_HIGH = 1.0 + TIE_TOLERANCE


def _compiled(function):
    """``numba.njit(cache=True)``, or without the on-disk cache when no cache directory is usable.

    numba refuses ``cache=True`` at decoration time when neither the source
    directory nor its per-user cache directory can be written; compiling on
    every run is slower to start but gives the same results.
    """
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError as error:  # "cannot cache function ...: no locator available"
        warnings.warn(f"numba cannot cache {function.__name__} ({error}); compiling it on every run. "
                      "Set NUMBA_CACHE_DIR to a writable directory to keep the compiled code.", stacklevel=2)
        return numba.njit(nogil=True)(function)


def _fill(t_act, t_res, t_coef, weight, cap, residual, rates, bottleneck):  # pragma: no cover - compiled
    """Progressive filling of one priority class; updates ``rates``, ``residual`` and ``bottleneck``.

    Each round freezes every local bottleneck at once: a resource whose fair
    level (residual / weighted demand) is not above the level any of its
    activities could reach elsewhere, and every activity whose cap is its
    lowest limit. The incidences of one activity are contiguous; frozen
    activities are compacted out of working copies. Incidences on resources
    of capacity ``inf`` are left out; activities left with none keep their rate.
    """
    n_res = residual.shape[0]
    # working copies of the incidences on bounded resources (an unbounded one never limits)
    res = np.empty(t_act.shape[0], dtype=np.int64)
    cw = np.empty(t_act.shape[0])
    owner = np.empty(t_act.shape[0], dtype=np.int64)
    n_inc = 0
    n_act = 0
    for k in range(t_act.shape[0]):
        if residual[t_res[k]] == math.inf:
            continue
        res[n_inc] = t_res[k]
        cw[n_inc] = t_coef[k] * weight[t_act[k]]
        owner[n_inc] = t_act[k]
        if n_inc == 0 or owner[n_inc] != owner[n_inc - 1]:
            n_act += 1
        n_inc += 1
    if n_inc == 0:
        return
    a_ids = np.empty(n_act, dtype=np.int64)
    counts = np.zeros(n_act, dtype=np.int64)
    a_cap = np.empty(n_act)
    a = -1
    for k in range(n_inc):
        if k == 0 or owner[k] != owner[k - 1]:
            a += 1
            a_ids[a] = owner[k]
            a_cap[a] = cap[owner[k]] / weight[owner[k]]
        counts[a] += 1
    demand = np.empty(n_res)
    used = np.empty(n_res)
    blocked = np.empty(n_res, dtype=np.int64)
    t_level = np.empty(n_inc)
    a_min = np.empty(n_act)
    a_level = np.empty(n_act)
    while n_inc > 0:
        demand[:] = 0.0
        for k in range(n_inc):
            demand[res[k]] += cw[k]
        # a resource is a local bottleneck when none of its activities can settle lower elsewhere
        blocked[:] = 0
        pos = 0
        for a in range(n_act):
            end = pos + counts[a]
            lowest = math.inf
            for k in range(pos, end):
                level = residual[res[k]] / demand[res[k]]
                t_level[k] = level
                if level < lowest:
                    lowest = level
            a_min[a] = lowest
            a_level[a] = min(lowest, a_cap[a])
            for k in range(pos, end):
                if a_level[a] < t_level[k] * _LOW:
                    blocked[res[k]] += 1
            pos = end
        used[:] = 0.0
        pos = 0
        out = 0  # incidences kept (compacted to the front)
        kept = 0  # activities kept
        for a in range(n_act):
            end = pos + counts[a]
            held = -1
            for k in range(pos, end):
                if blocked[res[k]] == 0 and res[k] > held:
                    held = res[k]
            by_cap = a_cap[a] <= a_min[a] * _HIGH
            if held >= 0 or by_cap:
                act = a_ids[a]
                rates[act] = a_level[a] * weight[act]
                bottleneck[act] = -1 if by_cap else held
                for k in range(pos, end):
                    used[res[k]] += cw[k] * a_level[a]
            else:
                for k in range(pos, end):
                    res[out] = res[k]
                    cw[out] = cw[k]
                    out += 1
                a_ids[kept] = a_ids[a]
                a_cap[kept] = a_cap[a]
                counts[kept] = counts[a]
                kept += 1
            pos = end
        for r in range(n_res):
            left = residual[r] - used[r]
            residual[r] = left if left > 0.0 else 0.0
        n_inc = out
        n_act = kept


_fill_jit = _compiled(_fill)


def _positions_on(res_ids, n_res, res_mark, t_res, t_live, n_trip, index_order, index_ptr, index_end,
                  out):  # pragma: no cover - compiled
    """Write the live incidence positions on ``res_ids[:n_res]`` (marked in ``res_mark``) to ``out``, sorted.

    Positions below ``index_end`` are read from the resource index (CSR
    ``index_ptr``/``index_order``); later ones are scanned. Returns their count.
    """
    count = 0
    for i in range(n_res):
        r = res_ids[i]
        for j in range(index_ptr[r], index_ptr[r + 1]):
            p = index_order[j]
            if t_live[p]:
                out[count] = p
                count += 1
    for p in range(index_end, n_trip):
        if t_live[p] and res_mark[t_res[p]] >= 0:
            out[count] = p
            count += 1
    out[:count].sort()
    return count


def _add_member(item, members, count, mark):  # pragma: no cover - compiled
    """Append ``item`` to ``members[:count]`` unless ``mark`` has it (its position there); return the count."""
    if mark[item] < 0:
        mark[item] = count
        members[count] = item
        count += 1
    return count


def _local_update(seeds, theta, fresh, now, t_act, t_res, t_coef, t_live, n_trip, trip_start, trip_count, amount,
                  remaining, t_ref, rate, level, weight, cap, bottleneck, finish, capacity, index_order, index_ptr,
                  index_end, res_mark, act_mark, res_ids, acts, positions, limit, cheap_rounds, cheap_set,
                  max_rounds):  # pragma: no cover - compiled
    """Solve a small set of activities again and grow it until the max-min optimality condition holds.

    See :meth:`commsim.kernel.solvers.RateSolver._local_update` for the method.
    ``res_mark`` and ``act_mark`` are scratch arrays of -1 (per resource, per
    slot), left as they were found; ``res_ids``, ``acts`` and ``positions`` are
    scratch space (one entry per resource, slot and incidence). On success the
    activities of the set are settled at ``now`` and given their new rates (as
    :func:`apply_rates` does). Returns ``(rounds, activities, resources)``:
    ``rounds`` is 0 when the set grew past ``limit`` (or past ``cheap_set``
    after ``cheap_rounds`` rounds, or ran out of ``max_rounds``), and the
    caller solves the whole component instead; otherwise the number of
    activities solved and every resource whose load may have changed.
    """
    n_res = 0
    n_act = 0
    for r in seeds:
        n_res = _add_member(r, res_ids, n_res, res_mark)
    count = _positions_on(res_ids, n_res, res_mark, t_res, t_live, n_trip, index_order, index_ptr, index_end,
                          positions)
    screen = 0.0 < theta < math.inf
    for j in range(count):
        a = t_act[positions[j]]
        if not screen or level[a] >= theta * (1.0 - 1e-9):
            n_act = _add_member(a, acts, n_act, act_mark)
    for a in fresh:
        n_act = _add_member(a, acts, n_act, act_mark)
    rounds = 0
    rates = np.zeros(0)
    bneck = np.zeros(0, dtype=np.int64)
    while True:
        rounds += 1
        if (rounds > max_rounds or n_act > limit or (rounds > cheap_rounds and n_act > cheap_set)):
            rounds = 0
            break
        # the set's incidences in position order (each activity's stay contiguous), and their resources
        n_inc = 0
        for i in range(n_act):
            n_inc += trip_count[acts[i]]
        ipos = np.empty(n_inc, dtype=np.int64)
        n_inc = 0
        for i in range(n_act):
            start = trip_start[acts[i]]
            for p in range(start, start + trip_count[acts[i]]):
                ipos[n_inc] = p
                n_inc += 1
        ipos.sort()
        i_res = np.empty(n_inc, dtype=np.int64)
        i_act = np.empty(n_inc, dtype=np.int64)
        i_coef = np.empty(n_inc)
        for j in range(n_inc):
            p = ipos[j]
            n_res = _add_member(t_res[p], res_ids, n_res, res_mark)
            i_res[j] = res_mark[t_res[p]]
            i_act[j] = act_mark[t_act[p]]
            i_coef[j] = t_coef[p]
        if n_act == 0:
            break
        # everybody else on these resources keeps its rate and its share
        count = _positions_on(res_ids, n_res, res_mark, t_res, t_live, n_trip, index_order, index_ptr, index_end,
                              positions)
        held = np.zeros(n_res)
        n_out = 0
        for j in range(count):
            p = positions[j]
            if act_mark[t_act[p]] < 0:
                positions[n_out] = p
                n_out += 1
                held[res_mark[t_res[p]]] += t_coef[p] * rate[t_act[p]]
        residual = np.empty(n_res)
        a_weight = np.empty(n_act)
        a_cap = np.empty(n_act)
        for i in range(n_res):
            left = capacity[res_ids[i]] - held[i]
            residual[i] = left if left > 0.0 else 0.0
        for i in range(n_act):
            a_weight[i] = weight[acts[i]]
            a_cap[i] = cap[acts[i]]
        rates = a_cap.copy()
        bneck = np.full(n_act, -1, dtype=np.int64)
        _fill_jit(i_act, i_res, i_coef, a_weight, a_cap, residual, rates, bneck)
        if n_out == 0:
            break  # nobody outside the set shares its resources: it is whole components, solved exactly
        # the highest level of the activities held at their rates, per resource
        other_max = np.full(n_res, -math.inf)
        for j in range(n_out):
            p = positions[j]
            lr = res_mark[t_res[p]]
            other_max[lr] = max(other_max[lr], level[t_act[p]])
        grow = np.zeros(n_res, dtype=np.bool_)
        failed = False
        # members: their bottleneck must not hold an outsider at a higher level
        for i in range(n_act):
            if bneck[i] >= 0 and rates[i] / a_weight[i] < other_max[bneck[i]] * _LOOSE:
                grow[bneck[i]] = True
                failed = True
        # outsiders whose bottleneck is here: it must still be saturated with them on top
        load = held.copy()
        top = other_max.copy()
        for j in range(n_inc):
            load[i_res[j]] += i_coef[j] * rates[i_act[j]]
            top[i_res[j]] = max(top[i_res[j]], rates[i_act[j]] / a_weight[i_act[j]])
        n_grow_acts = n_act
        for j in range(n_out):
            o = t_act[positions[j]]
            b = bottleneck[o]
            if b < 0 or res_mark[b] < 0:
                continue
            lb = res_mark[b]
            saturated = load[lb] >= capacity[b] * _LOOSE
            if not (saturated and level[o] >= top[lb] * _LOOSE):
                grow[lb] = True
                failed = True
                n_grow_acts = _add_member(o, acts, n_grow_acts, act_mark)
        if not failed:
            break
        for j in range(n_out):
            p = positions[j]
            if grow[res_mark[t_res[p]]]:
                n_grow_acts = _add_member(t_act[p], acts, n_grow_acts, act_mark)
        n_act = n_grow_acts
    # leave the scratch marks as found
    for i in range(n_act):
        act_mark[acts[i]] = -1
    for i in range(n_res):
        res_mark[res_ids[i]] = -1
    if rounds:
        for i in range(n_act):
            bneck[i] = res_ids[bneck[i]] if bneck[i] >= 0 else -1
        _apply_rates_jit(acts[:n_act], rates, bneck, now, amount, remaining, t_ref, rate, level, weight, bottleneck,
                    finish)
    return rounds, n_act, res_ids[:n_res].copy()


def _apply_rates(acts, rates, bneck, now, amount, remaining, t_ref, rate, level, weight, bottleneck,
                 finish):  # pragma: no cover - compiled
    """Settle ``acts`` at ``now`` and give them new rates: ActivityStore.settle then set_rates, fused.

    An activity that nothing bounds (rate ``inf``) completes at ``now`` and is
    kept at rate 0; one with its work done completes at ``now`` too.
    """
    for i in range(acts.shape[0]):
        a = acts[i]
        left = remaining[a] - rate[a] * (now - t_ref[a])
        left = left if left > 0.0 else 0.0
        remaining[a] = left
        t_ref[a] = now
        new = rates[i]
        if new == math.inf:
            new = 0.0
            end = now
        elif new > 0.0:
            end = now + left / new
        else:
            end = math.inf
        if left <= amount[a] * DONE_RTOL:
            end = now
        rate[a] = new
        level[a] = new / weight[a]
        bottleneck[a] = bneck[i]
        finish[a] = end



def _numbering(marked, n):  # pragma: no cover - compiled
    """Local numbers of the marked items among the first ``n`` (in order), and the marked items."""
    local = np.empty(n, dtype=np.int64)
    ids = np.empty(n, dtype=np.int64)
    count = 0
    for i in range(n):
        if marked[i]:
            local[i] = count
            ids[count] = i
            count += 1
    return local, ids[:count]


def _join(a, act_in, trip_in, res_in, stack, top, trip_start, trip_count, t_res):  # pragma: no cover - compiled
    """Add activity ``a`` (and its incidences) to a component; push its resources not seen yet."""
    if not act_in[a]:
        act_in[a] = True
        for p in range(trip_start[a], trip_start[a] + trip_count[a]):
            trip_in[p] = True
            if not res_in[t_res[p]]:
                res_in[t_res[p]] = True
                stack[top] = t_res[p]
                top += 1
    return top


def _component_problem(seeds, theta, fresh, t_act, t_res, t_coef, t_live, n_trip, trip_start, trip_count, level,
                       rate, capacity, high_water, index_order, index_ptr, index_end):  # pragma: no cover - compiled
    """The activities a change can reach and their max-min problem in local numbering.

    With ``0 < theta < inf`` (removals alone, one priority class): every live
    activity at or above the level ``theta``; otherwise the connected component
    of the ``seeds`` resources (plus the ``fresh`` activities without resources),
    searched through the resource index (``index_*``, as for :func:`local_update`).
    Everybody else keeps its rate, and its load is taken off the capacities.
    Returns ``(acts, resources, act, res, coef, capacity)``: slot ids, resource
    ids (both ascending), the incidences in position order and what is left of
    each resource.
    """
    n_resources = capacity.shape[0]
    res_in = np.zeros(n_resources, dtype=np.bool_)
    act_in = np.zeros(high_water, dtype=np.bool_)
    trip_in = np.zeros(n_trip, dtype=np.bool_)
    for r in seeds:
        res_in[r] = True
    if 0.0 < theta < math.inf:
        floor = theta * (1.0 - 1e-9)
        for p in range(n_trip):
            if t_live[p] and level[t_act[p]] >= floor:
                trip_in[p] = True
                act_in[t_act[p]] = True
                res_in[t_res[p]] = True
    else:
        for a in fresh:
            act_in[a] = True
        # depth-first over resources: the index lists each one's incidences, those past it are chained once
        tail_head = np.full(n_resources, -1, dtype=np.int64)
        tail_next = np.empty(max(n_trip - index_end, 0), dtype=np.int64)
        for p in range(index_end, n_trip):
            if t_live[p]:
                tail_next[p - index_end] = tail_head[t_res[p]]
                tail_head[t_res[p]] = p
        stack = np.empty(n_resources, dtype=np.int64)
        top = 0
        for r in range(n_resources):
            if res_in[r]:
                stack[top] = r
                top += 1
        while top > 0:
            top -= 1
            r = stack[top]
            for j in range(index_ptr[r], index_ptr[r + 1]):
                if t_live[index_order[j]]:
                    top = _join(t_act[index_order[j]], act_in, trip_in, res_in, stack, top, trip_start, trip_count,
                                t_res)
            p = tail_head[r]
            while p >= 0:
                top = _join(t_act[p], act_in, trip_in, res_in, stack, top, trip_start, trip_count, t_res)
                p = tail_next[p - index_end]
    local_act, acts = _numbering(act_in, high_water)
    local_res, res_ids = _numbering(res_in, capacity.shape[0])
    n_res = res_ids.shape[0]
    left = capacity[res_ids]
    n_inc = 0
    held = np.zeros(n_res)
    kept = False
    for p in range(n_trip):
        if trip_in[p]:
            n_inc += 1
        elif t_live[p] and res_in[t_res[p]]:
            held[local_res[t_res[p]]] += t_coef[p] * rate[t_act[p]]
            kept = True
    if kept:
        for i in range(n_res):
            rest = left[i] - held[i]
            left[i] = rest if rest > 0.0 else 0.0
    i_act = np.empty(n_inc, dtype=np.int64)
    i_res = np.empty(n_inc, dtype=np.int64)
    i_coef = np.empty(n_inc)
    j = 0
    for p in range(n_trip):
        if trip_in[p]:
            i_act[j] = local_act[t_act[p]]
            i_res[j] = local_res[t_res[p]]
            i_coef[j] = t_coef[p]
            j += 1
    return acts, res_ids, i_act, i_res, i_coef, left

_LOOSE = 1.0 - 1e-9  # the local update's check tolerance (a solve's round-off, not a tie)
_positions_on = _compiled(_positions_on)
_add_member = _compiled(_add_member)
_apply_rates_jit = _compiled(_apply_rates)
_join = _compiled(_join)
_numbering = _compiled(_numbering)


def _interruptible(dispatcher):
    """``dispatcher`` called from Python, with Ctrl-C kept a ``KeyboardInterrupt``.

    A compiled call runs Python code of numba's while it loads cached code; an
    interrupt arriving there comes out as a ``SystemError`` caused by the
    ``KeyboardInterrupt``, which the CLI would report as a crash instead of an
    interrupted run. The compiled callers inside this module keep the bare
    dispatchers.
    """
    @functools.wraps(getattr(dispatcher, "py_func", dispatcher))
    def call(*args):
        try:
            return dispatcher(*args)
        except SystemError as error:
            if isinstance(error.__cause__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise

    call.dispatcher = dispatcher
    return call


fill = _interruptible(_fill_jit)
apply_rates = _interruptible(_apply_rates_jit)
local_update = _interruptible(_compiled(_local_update))
component_problem = _interruptible(_compiled(_component_problem))
