"""``prepared.execute``: the same rows, transaction and errors as ``AsyncConnection.execute``."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from services.store import GenerationStatus, Store
from services.store.engine import single_reads
from services.store.generations import _GET, _guarded_update
from services.store.prepared import execute
from services.store.queue_reads import _MEMBER_ACTIVE
from services.store.schema import queue_members
from tests.services.store.records import new
from tests.services.store.test_engine import greenlets_spawned

_MEMBER = select(queue_members).where(queue_members.c.user_id == bindparam("b_user"))


async def test_reads_and_writes_give_what_execute_gives(store: Store) -> None:
    """A row of every column type, a count over a constant ``IN`` list, an update that sets
    what its execution names and returns the row: each as SQLAlchemy's own execution has it."""
    generation = await store.generations.create(new(user_id=7))
    async with single_reads(store.engine).connect() as conn:
        ours = (await execute(conn, _GET, {"b_id": generation.id})).one()
        theirs = (await conn.execute(_GET, {"b_id": generation.id})).one()
        assert ours._asdict() == theirs._asdict()
        assert ours.parameters == generation.parameters  # JSON, back as the model
        assert ours.created_at == generation.created_at  # timezone-aware on both engines
        assert (await execute(conn, _MEMBER_ACTIVE, {"b_user": 7})).scalar_one() == 1
        assert (await execute(conn, _MEMBER_ACTIVE, {"b_user": 8})).scalar_one() == 0

    cancel = _guarded_update((GenerationStatus.QUEUED,))
    values: dict[str, Any] = {"b_id": generation.id, "status": GenerationStatus.CANCELLED}
    async with store.engine.begin() as conn:
        updated = (await execute(conn, cancel, values | {"cancelled_by": 9})).one()
        assert (updated.status, updated.cancelled_by) == (GenerationStatus.CANCELLED, 9)
        # No longer queued: the constant IN list still guards the second time.
        assert (await execute(conn, cancel, values)).first() is None
    assert (await store.generations.get(generation.id)) == (
        generation.model_copy(update={"status": GenerationStatus.CANCELLED, "cancelled_by": 9})
    )


async def test_a_read_begins_the_transaction_execute_would(store: Store) -> None:
    async with store.engine.connect() as conn:
        assert not conn.in_transaction()
        await execute(conn, _MEMBER_ACTIVE, {"b_user": 1})
        assert conn.in_transaction()


async def test_errors_are_sqlalchemys_and_the_transaction_rolls_back(store: Store) -> None:
    insert = queue_members.insert()
    async with store.engine.begin() as conn:
        await execute(conn, insert, {"user_id": 5, "last_served": 1})
    with pytest.raises(IntegrityError):
        async with store.engine.begin() as conn:
            await execute(conn, insert, {"user_id": 6, "last_served": 1})
            await execute(conn, insert, {"user_id": 5, "last_served": 2})
    async with single_reads(store.engine).connect() as conn:
        assert (await execute(conn, _MEMBER, {"b_user": 5})).one().last_served == 1
        assert (await execute(conn, _MEMBER, {"b_user": 6})).first() is None


async def test_sqlite_runs_them_without_a_greenlet(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await Store.open(sqlite_url) as store:
        generation = await store.generations.create(new())
        with greenlets_spawned(monkeypatch) as spawned:
            async with single_reads(store.engine).connect() as conn:
                assert (await execute(conn, _GET, {"b_id": generation.id})).one().id
        assert spawned == []
