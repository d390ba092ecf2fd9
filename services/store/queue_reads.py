"""What the job queue's state says, read without changing it: for cards, admission, operators.

Reads take no lock: a count may be stale by the time it is shown, never wrong about a state
that existed. What changes the queue is ``services/store/job_queue.py``.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.store.engine import single_reads
from services.store.prepared import execute
from services.store.records import ADMITTED, UNFINISHED, GenerationStatus
from services.store.schema import generations, queue_members, queue_state

#: Jobs a claim may start: waiting, or put back by a stop or a lost lease.
WAITING = (GenerationStatus.QUEUED, GenerationStatus.INTERRUPTED)
#: The one ``queue_state`` row.
STATE_ROW = queue_state.c.id == 1


#: The queue's depth, read at every heartbeat.
_DEPTH = (
    select(generations.c.status, func.count())
    .where(generations.c.status.in_([str(s) for s in UNFINISHED]))
    .group_by(generations.c.status)
)
#: Checked at every admission, so built once (issue 10).
_MEMBER_ACTIVE = (
    select(func.count())
    .select_from(generations)
    .where(
        generations.c.user_id == bindparam("b_user"),
        generations.c.status.in_([str(s) for s in ADMITTED]),
    )
)


class QueueReads:
    """Counts and orders of ``generations`` and ``queue_state``, as the queue would see them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._single_reads = single_reads(engine)

    async def member_active(self, user_id: int, conn: AsyncConnection | None = None) -> int:
        """A member's jobs waiting or running, in every process (the per-member cap)."""
        parameters = {"b_user": user_id}
        if conn is not None:
            return int((await execute(conn, _MEMBER_ACTIVE, parameters)).scalar_one())
        async with self._single_reads.connect() as own:
            return int((await execute(own, _MEMBER_ACTIVE, parameters)).scalar_one())

    async def dispatch_order(self) -> list[int]:
        """The waiting jobs' ids in the order claims would start them if nothing else came.

        The claim's rule replayed with a heap: the member served least recently first, within
        a member the oldest job; a member served goes after everyone served before.
        """
        g, m = generations.c, queue_members.c
        query = (
            select(g.id, g.user_id, m.last_served)
            .select_from(generations.outerjoin(queue_members, m.user_id == g.user_id))
            .where(g.status.in_([str(s) for s in WAITING]))
            .order_by(g.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            turn = await conn.execute(select(queue_state.c.turn).where(STATE_ROW))
            last_turn = int(turn.scalar_one())
        waiting = [(row.id, row.user_id, row.last_served or 0) for row in rows]
        return replay_order(waiting, last_turn)

    async def depth(self) -> tuple[int, int]:
        """Running and waiting jobs, whole bot."""
        async with self._engine.connect() as conn:
            counts = {row[0]: int(row[1]) for row in await conn.execute(_DEPTH)}
        running = counts.get(GenerationStatus.RUNNING, 0)
        return running, sum(counts.values()) - running

    async def live_limit(self, max_concurrent: int) -> int:
        async with self._engine.connect() as conn:
            value = (await conn.execute(select(queue_state.c.live_limit).where(STATE_ROW))).scalar()
        return live_cap(value, max_concurrent)

    async def credit_hold(self) -> bool:
        async with self._engine.connect() as conn:
            held = (await conn.execute(select(queue_state.c.credit_hold).where(STATE_ROW))).scalar()
        return bool(held)


def live_cap(live_limit: int | None, max_concurrent: int) -> int:
    """The live cap: this process's setting, or less while the API is rate limiting us."""
    return max_concurrent if live_limit is None else min(live_limit, max_concurrent)


def replay_order(waiting: Sequence[tuple[int, int, int]], turn: int) -> list[int]:
    """``waiting``: (job id, member, member's last turn) in id order -> job ids in start order."""
    lines: dict[int, list[int]] = {}
    last: dict[int, int] = {}
    for job_id, user_id, last_served in waiting:
        lines.setdefault(user_id, []).append(job_id)
        last[user_id] = last_served
    heap = [(last[uid], jobs[0], uid, 0) for uid, jobs in lines.items()]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, _, uid, index = heapq.heappop(heap)
        jobs = lines[uid]
        order.append(jobs[index])
        if index + 1 < len(jobs):
            turn += 1  # served now: after everyone already served
            heapq.heappush(heap, (turn, jobs[index + 1], uid, index + 1))
    return order
