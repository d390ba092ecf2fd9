"""The job queue's truth, shared by every process: claims under leases, fairness, the back-off.

A claim first takes the one ``queue_state`` row (PostgreSQL: its row lock, inside the
server-side function ``fluxbot_claim`` of migration v0010; SQLite: the database's write lock,
``BEGIN IMMEDIATE``): claims from all processes therefore run one at a time, so the concurrency
cap is read and used in one step and never overshot. The job itself is picked with
``FOR UPDATE SKIP LOCKED``, so a job that a cancel is updating is passed over, not waited for.
Every transaction that touches ``queue_members`` takes the state row first, as claims do.

Which process holds a running job, and what happens when it falls silent, is
``services/store/workers.py``; what the queue's state says, read without changing it,
``services/store/queue_reads.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    String,
    bindparam,
    case,
    column,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.store.api_attempts import add_attempt
from services.store.engine import Writer, upsert
from services.store.generations import record as generation_record
from services.store.prepared import execute
from services.store.queue_reads import STATE_ROW, WAITING, QueueReads, live_cap
from services.store.records import Generation, GenerationStatus, NewApiAttempt
from services.store.schema import api_attempts, generations, queue_members, queue_state

_JOB_COLUMNS = [col.name for col in generations.c]
#: ``fluxbot_claim``'s outcome with the started job's columns, typed as the table's.
_SERVER_CLAIM = text(
    "SELECT "  # noqa: S608 (names from our own schema, no input)
    + ", ".join(f"(c.job).{name}" for name in _JOB_COLUMNS)
    + ", c.outcome, c.retry_in, c.others_waiting, c.slot_left, c.throttled"
    + " FROM fluxbot_claim(:worker, :cap, :now) AS c"
).columns(
    *generations.c,
    column("outcome", String),
    column("retry_in", Float),
    column("others_waiting", Boolean),
    column("slot_left", Boolean),
    column("throttled", Boolean),
)


# A claim's and an answer's statements, built once (building cost more CPU than running them,
# issue 10); values come with each execution. The claim's are SQLite's (PostgreSQL claims in
# ``fluxbot_claim``); the answer's serve both engines.
_G, _M = generations.c, queue_members.c
_CALLING = (
    select(func.count())
    .select_from(generations)
    .where(_G.status == GenerationStatus.RUNNING, _G.answer.is_(None))
    .scalar_subquery()
)
_CLAIM_STATE = select(queue_state, _CALLING.label("calling")).where(STATE_ROW)
_CLAIM_PICK = (
    select(_G.id, _G.user_id, func.coalesce(_M.last_served, 0).label("last_served"))
    .select_from(generations.outerjoin(queue_members, _M.user_id == _G.user_id))
    .where(_G.status.in_([str(s) for s in WAITING]))
    .order_by(func.coalesce(_M.last_served, 0), _G.id)
    .limit(2)  # the second says whether to claim again at once
)
_NEXT_TURN = update(queue_state).where(STATE_ROW)
_START_JOB = (
    update(generations)
    .where(_G.id == bindparam("b_id"))
    .values(attempts=_G.attempts + 1)
    .returning(*_G)
)
_ANSWER = (
    update(generations)
    .where(
        _G.id == bindparam("b_id"),
        _G.status == GenerationStatus.RUNNING,
        _G.claimed_by == bindparam("b_worker"),
    )
    .returning(*_G)
)
#: PostgreSQL: the answer and the ledger row of the attempt that paid for it, one statement.
_PAID = (
    api_attempts.insert()
    .values(
        {c.name: bindparam(f"a_{c.name}", type_=c.type) for c in api_attempts.c if c.name != "id"}
    )
    .cte("paid")
)
_ANSWER_PAID = _ANSWER.add_cte(_PAID)


class Refusal(StrEnum):
    EMPTY = "empty"
    #: As many jobs are calling the API as the live cap allows.
    FULL = "full"
    #: After a 429: nothing starts for ``NoClaim.retry_in`` seconds.
    BACKING_OFF = "backing-off"
    #: The API account is out of credits; an operator or the balance watch lifts it.
    CREDIT_HOLD = "credit-hold"


@dataclass(frozen=True)
class NoClaim:
    reason: Refusal
    #: Seconds until the back-off is over (``BACKING_OFF`` only).
    retry_in: float | None = None


@dataclass(frozen=True)
class Claimed:
    """A started job, and whether another claim could start one now (saves a claim that
    would only be refused: the dispatcher waits for news instead)."""

    generation: Generation
    #: Another job was waiting besides this one.
    others_waiting: bool
    #: The live cap leaves room for another call.
    slot_left: bool
    #: The queue was slowed down (a 429) and not yet back to full speed when it started:
    #: only then can its answer earn a slot back (``answered``).
    throttled: bool = True


@dataclass(frozen=True)
class Requeued:
    generation: Generation
    #: Seconds the whole queue now waits (a 429 that slowed it down), else None.
    pause: float | None


class JobQueueRepository(QueueReads):
    """``queue_members``, ``queue_state``, and the queue's columns of ``generations``."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write: Writer,
        now: Callable[[datetime | None], datetime],
    ) -> None:
        super().__init__(engine)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._write = write
        self._now = now
        upsert_member = upsert(engine, queue_members)
        #: The member's last turn is now the claim's (``user_id``, ``last_served``).
        self._serve = upsert_member.on_conflict_do_update(
            index_elements=[queue_members.c.user_id],
            set_={"last_served": upsert_member.excluded.last_served},
        )

    # -- claims ---------------------------------------------------------------------------

    async def claim(self, worker_id: str, *, max_concurrent: int) -> Claimed | NoClaim:
        """Start the next job under the fairness rule, if the cap and the back-off allow."""
        if self._engine.dialect.name == "postgresql":
            return await self._claim_on_server(worker_id, max_concurrent)
        async with self._write() as conn:
            state = (await execute(conn, _CLAIM_STATE)).one()
            now = self._now(None)
            limit = live_cap(state.live_limit, max_concurrent)
            refusal = self._refusal(state, now)
            if refusal is None and state.calling >= limit:
                refusal = NoClaim(Refusal.FULL)
            picks: Sequence[Any] = ()
            if refusal is None:
                picks = (await execute(conn, _CLAIM_PICK)).all()
                refusal = None if picks else NoClaim(Refusal.EMPTY)
            if refusal is not None:
                await conn.rollback()  # nothing was written: end the read
                return refusal
            chosen, turn = picks[0], state.turn + 1
            await execute(conn, _NEXT_TURN, {"turn": turn})
            started = (
                await execute(
                    conn,
                    _START_JOB,
                    {
                        "b_id": chosen.id,
                        "status": GenerationStatus.RUNNING,
                        "claimed_by": worker_id,
                        "started_at": now,
                        "error": None,
                        "queue_turn": turn,
                        "served_before": chosen.last_served,
                        "throttle_epoch": state.epoch,
                    },
                )
            ).one()
            await execute(conn, self._serve, {"user_id": chosen.user_id, "last_served": turn})
            return Claimed(
                generation_record(started),
                others_waiting=len(picks) > 1,
                slot_left=state.calling + 1 < limit,
                throttled=state.live_limit is not None or state.strikes > 0,
            )

    async def _claim_on_server(self, worker_id: str, max_concurrent: int) -> Claimed | NoClaim:
        """PostgreSQL: the claim is one call to ``fluxbot_claim`` (migration v0010), run on its
        own (autocommit), so the state row's lock is held only while the server runs it; the
        started job comes back with its outcome."""
        async with self._autocommit.connect() as conn:
            parameters = {"worker": worker_id, "cap": max_concurrent, "now": self._now(None)}
            row = (await execute(conn, _SERVER_CLAIM, parameters)).one()
        if row.outcome != "claimed":
            return NoClaim(Refusal(row.outcome), row.retry_in)
        fields = row._mapping
        started = Generation.model_validate({name: fields[name] for name in _JOB_COLUMNS})
        return Claimed(started, row.others_waiting, row.slot_left, row.throttled)

    @staticmethod
    def _refusal(state: Any, now: datetime) -> NoClaim | None:
        if state.credit_hold:
            return NoClaim(Refusal.CREDIT_HOLD)
        if state.resume_at is not None and state.resume_at > now:
            return NoClaim(Refusal.BACKING_OFF, (state.resume_at - now).total_seconds())
        return None

    async def answered(
        self,
        generation: Generation,
        *,
        answer: str,
        seed: int | None,
        max_concurrent: int,
        throttled: bool = True,
        paid: NewApiAttempt | None = None,
    ) -> Generation | None:
        """The API answered: keep the answer and the seed, free the job's API slot, and (for a
        job started since the last slow-down) earn one slot of the live cap back.

        ``paid``: the attempt that answered, added to the ledger in the same transaction (one
        write on the result path instead of two), whether or not the job is still ours.

        ``throttled=False`` (the claim's word: the queue was at full speed) skips the earn-back:
        a slow-down since then began a new epoch, which this job's answer cannot lift.
        ``None``: the job is no longer this process's (its lease was lost meanwhile).
        """
        s = queue_state.c
        earn_back = throttled and generation.throttle_epoch is not None
        values = {
            "b_id": generation.id,
            "b_worker": generation.claimed_by,
            "answer": answer,
            "seed": seed,
        }
        if self._engine.dialect.name == "postgresql" and not earn_back:
            return await self._answer_on_server(values, paid)
        async with self._write() as conn:
            if paid is not None:
                await add_attempt(conn, paid, self._now(None))
            row = (await execute(conn, _ANSWER, values)).first()
            if earn_back:
                raised = s.live_limit + 1
                await conn.execute(
                    update(queue_state)
                    .where(
                        STATE_ROW,
                        s.epoch == generation.throttle_epoch,
                        or_(s.strikes > 0, s.live_limit.is_not(None)),
                    )
                    .values(
                        strikes=0,
                        live_limit=case((raised >= max_concurrent, None), else_=raised),
                    )
                )
        return None if row is None else generation_record(row)

    async def _answer_on_server(
        self, values: dict[str, Any], paid: NewApiAttempt | None
    ) -> Generation | None:
        """PostgreSQL with no earn-back due: the answer and its ledger row in one statement
        (``WITH paid AS (INSERT ...) UPDATE ...``) run on its own (autocommit): one round trip
        to the server on the result path instead of four (BEGIN, two statements, COMMIT)."""
        statement = _ANSWER
        if paid is not None:
            statement = _ANSWER_PAID
            row = paid.model_dump() | {"created_at": self._now(None)}
            values = values | {f"a_{name}": value for name, value in row.items()}
        async with self._autocommit.connect() as conn:
            answered = (await execute(conn, statement, values)).first()
        return None if answered is None else generation_record(answered)

    async def requeue(
        self,
        generation: Generation,
        *,
        rate_limited: bool = False,
        retry_after: float | None = None,
        backoff: Callable[[int], float] = lambda strikes: 0.0,
        max_concurrent: int = 1,
    ) -> Requeued | None:
        """Running -> queued, first in its member's line with its member's turn given back.

        After a 429 (``rate_limited``) the whole queue slows down, once per congestion event: a
        job started before the last slow-down only extends the pause to its ``retry_after``.
        Otherwise the live cap halves (not below 1) and nothing starts for ``retry_after`` or
        ``backoff(strikes)`` seconds. ``None``: the job was no longer running.
        """
        g, s = generations.c, queue_state.c
        async with self._write() as conn:
            # The state row first, as a claim takes it: a claim holding it then serves a member
            # whose row this would otherwise hold while waiting for it (a deadlock).
            state = (
                await conn.execute(select(queue_state).where(STATE_ROW).with_for_update())
            ).one()
            row = (
                await conn.execute(
                    update(generations)
                    .where(g.id == generation.id, g.status == GenerationStatus.RUNNING)
                    .values(status=GenerationStatus.QUEUED, started_at=None, claimed_by=None)
                    .returning(*g)
                )
            ).first()
            if row is None:
                return None
            await give_turn_back(
                conn, generation.user_id, generation.queue_turn, generation.served_before
            )
            pause = None
            if rate_limited:
                now = self._now(None)
                values: dict[str, Any] = {}
                if generation.throttle_epoch == state.epoch:
                    pause = (
                        max(0.0, retry_after) if retry_after is not None else backoff(state.strikes)
                    )
                    values = {
                        "live_limit": max(1, live_cap(state.live_limit, max_concurrent) // 2),
                        "epoch": s.epoch + 1,
                        "strikes": s.strikes + 1,
                    }
                elif retry_after is not None:
                    pause = max(0.0, retry_after)
                if pause is not None:
                    resume_at = now + timedelta(seconds=pause)
                    if state.resume_at is None or state.resume_at < resume_at:
                        values["resume_at"] = resume_at
                if values:
                    await conn.execute(update(queue_state).where(STATE_ROW).values(values))
        return Requeued(generation_record(row), pause)

    async def fail_abandoned(self, generation: Generation, reason: str) -> bool:
        """A job whose runner broke off without an outcome: failed, not left holding a slot."""
        g = generations.c
        async with self._write() as conn:
            result = await conn.execute(
                update(generations)
                .where(
                    g.id == generation.id,
                    g.status == GenerationStatus.RUNNING,
                    g.claimed_by == generation.claimed_by,
                )
                .values(status=GenerationStatus.FAILED, error=reason, finished_at=self._now(None))
            )
        return result.rowcount > 0

    async def set_credit_hold(self, held: bool) -> bool:
        """Hold or release every process's claims; False if it already was so."""
        async with self._write() as conn:
            result = await conn.execute(
                update(queue_state)
                .where(STATE_ROW, queue_state.c.credit_hold != held)
                .values(credit_hold=held)
            )
        return result.rowcount > 0


async def give_turn_back(
    conn: AsyncConnection, user_id: int, turn: int | None, served_before: int | None
) -> None:
    """Undo a claim's turn, unless the member has been served again since."""
    if turn is None:
        return
    m = queue_members.c
    await conn.execute(
        update(queue_members)
        .where(m.user_id == user_id, m.last_served == turn)
        .values(last_served=served_before or 0)
    )


__all__ = [
    "JobQueueRepository",
    "NoClaim",
    "Refusal",
    "Requeued",
]
