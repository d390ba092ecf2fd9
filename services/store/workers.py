"""Processes that run jobs: each holds a lease by heartbeat; a silent one loses its jobs.

A process registers in ``workers`` and renews its row every lease/3. The running jobs of a
process whose heartbeat is older than the lease go back in line (``interrupted``) with their
members' turns given back, for any process to take; the jobs it was still taking in fail
plainly. A stop hands its running jobs back at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Update, bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.store.engine import Writer, upsert
from services.store.generations import record as generation_record
from services.store.job_queue import give_turn_back
from services.store.records import Generation, GenerationStatus
from services.store.schema import generations, workers


def _hand_back_where(holder: ColumnElement[bool]) -> Update:
    """Running jobs matching ``holder`` -> interrupted, with what gives their turns back."""
    g = generations.c
    return (
        update(generations)
        .where(g.status == GenerationStatus.RUNNING, holder)
        .values(status=GenerationStatus.INTERRUPTED, claimed_by=None)
        .returning(g.id, g.user_id, g.queue_turn, g.served_before)
    )


# A heartbeat's statements, built once (building them cost ~1.5 ms of CPU a beat, more than
# running them, issue 10); values come with each execution.
_W, _G = workers.c, generations.c
_LIVE_IDS = select(_W.id).where(_W.heartbeat_at >= bindparam("b_cutoff"))
_RENEW = update(workers).where(_W.id == bindparam("b_worker"))
_HAND_BACK_SILENT = _hand_back_where(or_(_G.claimed_by.is_(None), _G.claimed_by.not_in(_LIVE_IDS)))
_HAND_BACK_OWN = _hand_back_where(_G.claimed_by == bindparam("b_worker"))
_FAIL_SILENT_INTAKE = (
    update(generations)
    .where(_G.status == GenerationStatus.INTAKE, _G.claimed_by.not_in(_LIVE_IDS))
    .returning(*_G)
)
_FORGET_SILENT = delete(workers).where(_W.heartbeat_at < bindparam("b_cutoff"))
_FORGET_OWN = delete(workers).where(_W.id == bindparam("b_worker"))


@dataclass(frozen=True)
class Heartbeat:
    #: False when this process's row was gone: it had been taken for dead and its jobs re-queued.
    alive: bool
    #: Running jobs of processes taken for dead, put back in line by this heartbeat.
    reaped: int
    #: Jobs those processes were still taking in (their pictures unread): failed plainly.
    abandoned: tuple[Generation, ...] = ()


class WorkerRepository:
    """The ``workers`` table, and the jobs of the processes in it."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write: Writer,
        now: Callable[[datetime | None], datetime],
    ) -> None:
        self._engine = engine
        self._write = write
        self._now = now

    async def register(self, worker_id: str, description: str) -> None:
        now = self._now(None)
        async with self._write() as conn:
            await conn.execute(
                upsert(self._engine, workers)
                .values(
                    id=worker_id, description=description[:200], started_at=now, heartbeat_at=now
                )
                .on_conflict_do_update(index_elements=[workers.c.id], set_={"heartbeat_at": now})
            )

    async def heartbeat(
        self, worker_id: str, *, lease: timedelta, abandoned_reason: str = ""
    ) -> Heartbeat:
        """Renew this process's lease, and put back in line every running job whose holder has
        no live lease: gone silent, never registered, or none (left by a version before the
        queue)."""
        now = self._now(None)
        cutoff = {"b_cutoff": now - lease}
        async with self._write() as conn:
            alive = await conn.execute(_RENEW, {"b_worker": worker_id, "heartbeat_at": now})
            reaped = await self._hand_back(conn, _HAND_BACK_SILENT, cutoff)
            abandoned = await conn.execute(
                _FAIL_SILENT_INTAKE,
                cutoff
                | {
                    "status": GenerationStatus.FAILED,
                    "error": abandoned_reason,
                    "finished_at": now,
                },
            )
            lost = tuple(generation_record(row) for row in abandoned)
            await conn.execute(_FORGET_SILENT, cutoff)
        return Heartbeat(alive=alive.rowcount > 0, reaped=len(reaped), abandoned=lost)

    async def retire(self, worker_id: str) -> list[int]:
        """At a stop: this process's running jobs go back in line at once, and its row goes.

        Returns their ids (they run again, and an answered one is posted without a new call).
        """
        mine = {"b_worker": worker_id}
        async with self._write() as conn:
            interrupted = await self._hand_back(conn, _HAND_BACK_OWN, mine)
            await conn.execute(_FORGET_OWN, mine)
        return interrupted

    async def _hand_back(
        self, conn: AsyncConnection, statement: Update, parameters: Mapping[str, object]
    ) -> list[int]:
        """Running jobs -> interrupted (``statement``: which), each with its member's turn given
        back, so they run again in their order (DESIGN §7) before their members' later jobs."""
        rows = (await conn.execute(statement, parameters)).all()
        for row in rows:
            await give_turn_back(conn, row.user_id, row.queue_turn, row.served_before)
        return sorted(row.id for row in rows)
