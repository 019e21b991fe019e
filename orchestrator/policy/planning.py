"""The order to start queued builds in, chosen by simulating the scheduler on what history expects.

Under a memory limit, the order decides how well the builds pack: longest first
can leave a big build waiting for room while small ones hold it, then running
alone at the end. :func:`plan_order` tries several orders (longest first, largest
memory x time first, largest need first, seeded shuffles, then swaps that help)
on a model of the scheduler: each build takes its expected duration and reserves
its need, the head of the queue starts when :func:`~orchestrator.policy.admission.decide`
would let it (the count cap and the memory limit), and others go ahead of it as
:func:`~orchestrator.policy.admission.may_backfill` allows. It keeps the order whose
simulated run ends first. Pure: the caller passes the queue, the running builds
and the time.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Sequence

from orchestrator.policy.admission import (
    Limits,
    QueuedBuild,
    RunningBuild,
    order_queue,
    shadow_time,
)

__all__ = ["ends_matter", "plan_order", "simulate", "simulates"]

PLAN_LIMIT = 24
"""Builds planned at most; the rest follow, longest first. Keeps a plan within tens of milliseconds."""

SIMULATIONS = 6000
"""Simulated builds per plan, over all the orders tried (a budget: a longer queue tries fewer orders)."""

GAIN = 0.01
"""A new order must end this much sooner than the current one to replace it: plans follow estimates, not noise."""

ROUNDING = 1e-9
"""Below this share, two simulated ends are the same: float sums in another order differ in their last bits."""

OVERRUN = 0.5
"""How much longer than expected a build may take (an estimate from a quieter moment, or a prediction)."""

EXPOSURE = 0.1
"""What a second of delay by an :data:`OVERRUN` of one build costs in a plan's score, against a second of its end:
of orders that end about together, the plan takes the one such an overrun delays least (its long builds first)."""


def simulate(order: Sequence[QueuedBuild], running: Sequence[RunningBuild], limits: Limits, *, now: float) -> float:
    """Seconds from ``now`` until the last build ends if ``order`` is started as the scheduler does, every
    build taking its expected time.

    Running builds end when history expects (now, if unknown or overdue); queued
    builds of unknown duration take none. Only the count cap and the memory limit
    are modelled: free memory, load and CPU change with every sample.
    """
    return _simulate(order, running, limits, now=now)[0]


def _simulate(order: Sequence[QueuedBuild], running: Sequence[RunningBuild], limits: Limits, *, now: float
              ) -> tuple[float, float]:
    """:func:`simulate`'s end, and the latest end of a queued build taking :data:`OVERRUN` longer than expected
    (the others as expected, from ``now``)."""
    limit, start = limits.memory_limit, now
    exposed = now
    active = sorted((max(build.expected_end or now, now), build.reservation) for build in running)
    pending = [(build.expected_duration or 0.0, build.need) for build in order]
    last = max((end for end, _ in active), default=now)
    while pending:
        reserved = sum(need for _, need in active)
        index = _next_start(pending, active, reserved, limit, limits.max_builds, now)
        if index is None:
            now = active[0][0]  # wait for the next builds to end: every one that ends then
            while active and active[0][0] <= now:
                active.pop(0)
            continue
        duration, need = pending.pop(index)
        end = now + duration
        last, exposed = max(last, end), max(exposed, end + duration * OVERRUN)
        position = 0
        while position < len(active) and active[position][0] <= end:
            position += 1
        active.insert(position, (end, need))
    return last - start, max(last, exposed) - start


def simulates(durations: Iterable[float | None], limits: Limits) -> bool:
    """Whether :func:`plan_order` simulates for a queue of builds expected to take ``durations`` (``None``:
    unknown): under a memory limit, with two known at least. Otherwise its plan is
    :func:`~orchestrator.policy.admission.order_queue`'s order, and no end of a running build changes it."""
    return limits.memory_limit is not None and sum(duration is not None for duration in durations) >= 2


def ends_matter(queue: Sequence[QueuedBuild], running: Sequence[RunningBuild], limits: Limits) -> bool:
    """Whether the plan for ``queue`` should be made again as running builds end.

    Only when :func:`plan_order` simulates (a memory limit, two builds of known duration)
    and the limit may hold a build back: the largest reservations that could run at once
    exceed it together. Otherwise the count cap alone decides when builds start, and an
    end leaves the planned order as good as it was (planning again after each of thousands
    of small builds cost more than the builds).
    """
    if limits.memory_limit is None or not simulates((build.expected_duration for build in queue), limits):
        return False
    needs = [*(build.need for build in queue), *(build.reservation for build in running)]
    return sum(heapq.nlargest(limits.max_builds, needs)) > limits.memory_limit


def _next_start(
    pending: list[tuple[float, int]], active: list[tuple[float, int]], reserved: int, limit: int | None,
    max_builds: int, now: float,
) -> int | None:
    """Which pending build starts now: the head if it fits, else the first that may go ahead of it; ``None``: wait."""
    if not active:
        return 0
    if len(active) >= max_builds:
        return None
    _, head_need = pending[0]
    if limit is None or reserved + head_need <= limit:
        return 0
    # The head waits for memory; every end is known here, so there is a shadow time (as in may_backfill).
    found = shadow_time(active, reserved, head_need, limit, now=now)
    assert found is not None
    shadow, left = found
    for index in range(1, len(pending)):
        duration, need = pending[index]
        if reserved + need <= limit and (now + duration <= shadow or left + head_need + need <= limit):
            return index
    return None


def plan_order(
    queue: Sequence[QueuedBuild], running: Sequence[RunningBuild], limits: Limits, *, now: float
) -> list[QueuedBuild]:
    """``queue`` in the order to start it: the one whose simulated run ends first.

    Without a memory limit, or with fewer than two builds of known duration, it is
    :func:`~orchestrator.policy.admission.order_queue`'s longest-first order. Builds of
    unknown duration always come last, in that order too. ``queue``'s own order is
    the first tried, and another replaces it only if it ends :data:`GAIN` sooner, or
    scores :data:`GAIN` better (its end, and :data:`EXPOSURE` of the delay an
    :data:`OVERRUN` can add) without ending later than ``queue``'s order or than longest
    first by more than :data:`GAIN`, so repeated calls settle rather than churn.
    Reproducible: the shuffles are seeded.
    """
    if not simulates((build.expected_duration for build in queue), limits):
        return order_queue(queue)  # the unknown last, as below
    known = order_queue(build for build in queue if build.expected_duration is not None)
    unknown = order_queue(build for build in queue if build.expected_duration is None)
    planned, rest = known[:PLAN_LIMIT], known[PLAN_LIMIT:]
    keys = {build.key for build in planned}
    current = [build for build in queue if build.key in keys]

    def cost(order: list[QueuedBuild]) -> tuple[float, float]:
        return _simulate(order, running, limits, now=now)

    def score(value: tuple[float, float]) -> float:
        end, exposed = value
        return end + EXPOSURE * (exposed - end)

    budget = SIMULATIONS // len(planned)
    best, best_cost, margin = current, cost(current), GAIN
    latest = min(best_cost[0], cost(planned)[0] / (1 - GAIN))  # never later than the queue's order, nor longest first

    def better(value: tuple[float, float]) -> bool:
        """Ends :data:`GAIN` sooner than the best so far; or scores ``margin`` better, ending by ``latest``."""
        return value[0] < best_cost[0] * (1 - GAIN) or (
            value[0] <= latest and score(value) < score(best_cost) * (1 - margin))
    starts = [
        planned,
        sorted(planned, key=lambda build: -(build.expected_duration or 0.0) * build.need),
        sorted(planned, key=lambda build: -build.need),
    ]
    shuffler = random.Random(len(planned))
    while len(starts) < budget // 2:
        shuffled = planned[:]
        shuffler.shuffle(shuffled)
        starts.append(shuffled)
    for order in starts:
        if better(value := cost(order)):
            best, best_cost, margin = order, value, ROUNDING
    # Then swap pairs while it helps, within what is left of the budget.
    budget -= len(starts)
    improved = True
    while improved and budget > 0:
        improved = False
        for i in range(len(best) - 1):
            for j in range(i + 1, len(best)):
                if budget <= 0:
                    break
                budget -= 1
                order = best[:]
                order[i], order[j] = order[j], order[i]
                if better(value := cost(order)):
                    best, best_cost, margin, improved = order, value, ROUNDING, True
    return [*best, *rest, *unknown]
