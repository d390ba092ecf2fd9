"""Generation jobs: created as ``queued``, moved on only by guarded status transitions."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Update, bindparam, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.store.columns import as_utc
from services.store.engine import Writer, single_reads
from services.store.prepared import execute
from services.store.records import (
    ADMITTED,
    UNFINISHED,
    Generation,
    GenerationStatus,
    NewGeneration,
)
from services.store.schema import generations

#: A job may be cancelled or failed only from these: the guards that make races safe (the
#: queue, ``job_queue.py``, starts jobs).
_CANCELLABLE = (GenerationStatus.QUEUED, GenerationStatus.INTERRUPTED)
_FAILABLE = tuple(UNFINISHED)

# The statements every job runs, built once: building one (columns coerced, its cache key
# computed) cost more CPU than running it (issue 10). Values come with each execution.
_G = generations.c
_INSERT = generations.insert().returning(*_G)
_GET = select(generations).where(_G.id == bindparam("b_id"))
_LATEST_FOR_CARD = (
    select(generations)
    .where(_G.card_message_id == bindparam("b_card"))
    .order_by(_G.id.desc())
    .limit(1)
)
_MARK_QUEUED = (
    update(generations)
    .where(_G.id == bindparam("b_id"), _G.status == GenerationStatus.INTAKE)
    .returning(*_G)
)


@functools.cache
def _guarded_update(allowed_from: tuple[GenerationStatus, ...] | None) -> Update:
    """``UPDATE generations SET <the execution's columns> WHERE id = :b_id [AND status IN]``."""
    statement = update(generations).where(_G.id == bindparam("b_id"))
    if allowed_from is not None:
        statement = statement.where(_G.status.in_([str(s) for s in allowed_from]))
    return statement.returning(*_G)


def record(row: Row[Any]) -> Generation:
    # ``parameters`` arrives built without validation (columns.ParametersJSON): old rows stay
    # readable if limits tighten later, and pydantic keeps the instance as it is. A dict, as
    # pydantic reads one 2.5x faster than a row's mapping (38 µs against 15, issue 10).
    return Generation.model_validate(row._asdict())


def _record_or_none(row: Row[Any] | None) -> Generation | None:
    return None if row is None else record(row)


class GenerationRepository:
    """The ``generations`` table. Every write goes through ``write`` (the store's write lock)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write: Writer,
        now: Callable[[datetime | None], datetime],
    ) -> None:
        self._engine = engine
        self._single_reads = single_reads(engine)
        self._write = write
        self._now = now

    async def create(
        self,
        new: NewGeneration,
        *,
        created_at: datetime | None = None,
        conn: AsyncConnection | None = None,
        intake_by: str | None = None,
    ) -> Generation:
        """Store an accepted job as ``queued``; its id is what the buttons will carry.

        ``conn``: inside a write transaction the caller holds (a budget check and this insert
        as one step, see ``Store.admission``). ``intake_by``: the process that answers the
        command and reads its picture; the job is ``intake`` until ``mark_queued``.
        """
        values = new.model_dump(exclude={"parameters"}) | {
            "parameters": new.parameters,
            "status": GenerationStatus.INTAKE if intake_by else GenerationStatus.QUEUED,
            "claimed_by": intake_by,
            "created_at": self._now(created_at),
        }
        if conn is not None:
            return record((await execute(conn, _INSERT, values)).one())
        async with self._write() as own:
            return record((await execute(own, _INSERT, values)).one())

    async def get(self, generation_id: int) -> Generation | None:
        async with self._single_reads.connect() as conn:
            result = await execute(conn, _GET, {"b_id": generation_id})
            return _record_or_none(result.first())

    async def set_card(
        self, generation_id: int, *, channel_id: int, message_id: int
    ) -> Generation | None:
        """The job card, posted as the command's answer after the job was stored."""
        return await self._update(
            generation_id,
            (GenerationStatus.INTAKE,),
            {"card_channel_id": channel_id, "card_message_id": message_id},
        )

    async def mark_queued(
        self, generation_id: int, taken_in: NewGeneration, conn: AsyncConnection
    ) -> Generation | None:
        """Intake -> queued: its picture was read and checked; ``taken_in`` says where it went
        (references, thread, card). In the admission transaction ``conn``, which has just
        counted it in. ``None`` if it is no longer in intake."""
        values = taken_in.model_dump(
            include={
                "channel_id",
                "thread_id",
                "card_channel_id",
                "card_message_id",
                "reference_url",
                "extra_reference_urls",
                "upload_limit",
            }
        ) | {"status": GenerationStatus.QUEUED, "claimed_by": None, "b_id": generation_id}
        return _record_or_none((await execute(conn, _MARK_QUEUED, values)).first())

    async def set_reference_url(self, generation_id: int, url: str) -> Generation | None:
        """A freshly signed URL of the card's reference, for this job and the next ones."""
        return await self._update(generation_id, None, {"reference_url": url})

    async def set_reference_urls(
        self, generation_id: int, urls: Sequence[str]
    ) -> Generation | None:
        """Freshly signed URLs of every reference, the first one first."""
        first, *extra = urls
        return await self._update(
            generation_id, None, {"reference_url": first, "extra_reference_urls": extra}
        )

    async def set_reference_message(
        self, generation_id: int, *, channel_id: int, message_id: int, url: str
    ) -> Generation | None:
        """The message now holding this job's reference (a fitted copy), and its URL."""
        return await self._update(
            generation_id,
            None,
            {
                "reference_channel_id": channel_id,
                "reference_message_id": message_id,
                "reference_url": url,
            },
        )

    async def mark_done(
        self,
        generation_id: int,
        *,
        seed: int | None,
        result_message_ids: Sequence[int],
        inference_seconds: float | None,
        nsfw_withheld: int = 0,
        finished_at: datetime | None = None,
    ) -> Generation | None:
        """Running -> done, with what the API returned and where the results were posted."""
        return await self._update(
            generation_id,
            (GenerationStatus.RUNNING,),
            {
                "status": GenerationStatus.DONE,
                "seed": seed,
                "result_message_ids": list(result_message_ids),
                "inference_seconds": inference_seconds,
                "nsfw_withheld": nsfw_withheld,
                "finished_at": self._now(finished_at),
                "error": None,
            },
        )

    async def mark_failed(
        self, generation_id: int, error: str, finished_at: datetime | None = None
    ) -> Generation | None:
        """Any unfinished state -> failed; ``error`` is shown to members, so plain words."""
        return await self._update(
            generation_id,
            _FAILABLE,
            {
                "status": GenerationStatus.FAILED,
                "error": error,
                "finished_at": self._now(finished_at),
            },
        )

    async def mark_cancelled(
        self,
        generation_id: int,
        *,
        cancelled_by: int | None = None,
        finished_at: datetime | None = None,
    ) -> Generation | None:
        """Waiting -> cancelled. ``None`` if it already started: a paid call is never cancelled."""
        return await self._update(
            generation_id,
            _CANCELLABLE,
            {
                "status": GenerationStatus.CANCELLED,
                "cancelled_by": cancelled_by,
                "finished_at": self._now(finished_at),
            },
        )

    async def unfinished(self) -> list[Generation]:
        """Queued, running and interrupted jobs, oldest first: the order to resume them in."""
        query = (
            select(generations)
            .where(generations.c.status.in_([str(s) for s in UNFINISHED]))
            .order_by(generations.c.created_at, generations.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [record(row) for row in rows]

    async def count_since(
        self,
        *,
        since: datetime,
        user_id: int | None = None,
        guild_id: int | None = None,
        statuses: Collection[GenerationStatus] | None = None,
    ) -> int:
        """Jobs created at or after ``since`` (for daily quotas), optionally per member/guild.

        Every status counts unless ``statuses`` narrows it: whether a cancelled job uses quota
        is the caller's policy.
        """
        query = (
            select(func.count())
            .select_from(generations)
            .where(generations.c.created_at >= as_utc(since))
        )
        if user_id is not None:
            query = query.where(generations.c.user_id == user_id)
        if guild_id is not None:
            query = query.where(generations.c.guild_id == guild_id)
        if statuses is not None:
            query = query.where(generations.c.status.in_([str(s) for s in statuses]))
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def reserved(
        self,
        conn: AsyncConnection,
        *,
        guild_id: int | None = None,
        user_id: int | None = None,
    ) -> int:
        """Nano-dollars the unfinished jobs (optionally of one guild / member) are expected to
        cost: spend that is coming, which a budget check must count before it is settled."""
        query = (
            select(func.coalesce(func.sum(generations.c.estimate_usd_nanos), 0))
            .select_from(generations)
            .where(generations.c.status.in_([str(s) for s in ADMITTED]))
        )
        if guild_id is not None:
            query = query.where(generations.c.guild_id == guild_id)
        if user_id is not None:
            query = query.where(generations.c.user_id == user_id)
        return int((await conn.execute(query)).scalar_one())

    async def latest_for_card(self, card_message_id: int) -> Generation | None:
        """The newest job shown on a job card: the card's status follows it."""
        async with self._single_reads.connect() as conn:
            result = await execute(conn, _LATEST_FOR_CARD, {"b_card": card_message_id})
            return _record_or_none(result.first())

    async def mark_deleted(
        self, generation_id: int, *, deleted_by: int, deleted_at: datetime | None = None
    ) -> Generation | None:
        """A member deleted the result; ``None`` if it was already marked (or is unknown)."""
        statement = (
            update(generations)
            .where(generations.c.id == generation_id, generations.c.deleted_at.is_(None))
            .values(deleted_at=self._now(deleted_at), deleted_by=deleted_by)
            .returning(*generations.c)
        )
        async with self._write() as conn:
            return _record_or_none((await conn.execute(statement)).first())

    async def history(self, user_id: int, *, offset: int, limit: int) -> list[Generation]:
        """A member's generations, newest first, without deleted ones (``/history``)."""
        query = (
            select(generations)
            .where(generations.c.user_id == user_id, generations.c.deleted_at.is_(None))
            .order_by(generations.c.created_at.desc(), generations.c.id.desc())
            .offset(offset)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [record(row) for row in (await conn.execute(query)).all()]

    async def count_history(self, user_id: int) -> int:
        """How many generations :meth:`history` can page through."""
        query = (
            select(func.count())
            .select_from(generations)
            .where(generations.c.user_id == user_id, generations.c.deleted_at.is_(None))
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def outcomes(
        self, *, guild_id: int, since: datetime
    ) -> list[tuple[GenerationStatus, str, datetime, datetime | None]]:
        """Status, model, created and finished time of a guild's jobs since ``since`` (stats)."""
        c = generations.c
        query = select(c.status, c.model, c.created_at, c.finished_at).where(
            c.guild_id == guild_id, c.created_at >= as_utc(since)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(GenerationStatus(r.status), r.model, r.created_at, r.finished_at) for r in rows]

    async def _update(
        self,
        generation_id: int,
        allowed_from: Collection[GenerationStatus] | None,
        values: dict[str, Any],
    ) -> Generation | None:
        """One ``UPDATE ... [AND status IN (...)]``: the database decides who wins a race."""
        statement = _guarded_update(None if allowed_from is None else tuple(allowed_from))
        async with self._write() as conn:
            result = await execute(conn, statement, {"b_id": generation_id, **values})
            return _record_or_none(result.first())
