"""v0004 in detail: parameters folded into JSON in batches, and SQLite's table rebuild."""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.parameters import GenerationParameters
from services.store import Store, make_engine, migrate
from services.store.columns import ParametersJSON
from tests.services.store.records import V1_GENERATIONS, new, v1_row

v0004 = importlib.import_module("services.store.migrations.v0004_model_and_parameters")


@pytest.fixture
async def v3_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine, target=3) == 3
        yield engine
    finally:
        await engine.dispose()


async def insert_v1(engine: AsyncEngine, *rows: dict[str, Any]) -> None:
    async with engine.begin() as conn:
        for row in rows:
            await conn.execute(V1_GENERATIONS.insert().values(row))


async def stored_parameters(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT parameters FROM generations ORDER BY id"))
        return list(result.scalars())


async def test_rows_are_copied_in_batches_without_missing_one(
    v3_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(v0004, "BATCH", 2)
    prompts = [f"prompt {n}" for n in range(7)]
    await insert_v1(v3_engine, *(v1_row(GenerationParameters(prompt=p)) for p in prompts))
    assert await migrate(v3_engine, target=4) == 4
    rows = [
        ParametersJSON().process_result_value(s, v3_engine.dialect)
        for s in await stored_parameters(v3_engine)
    ]
    assert [p.prompt for p in rows if p is not None] == prompts


async def test_the_migrated_json_is_what_the_store_writes(
    db_url: str, v3_engine: AsyncEngine
) -> None:
    parameters = GenerationParameters(prompt='é 🐱 "q"', strength=0.5, seed=9, count=3)
    await insert_v1(v3_engine, v1_row(parameters))
    await migrate(v3_engine)
    async with await Store.open(db_url) as store:
        await store.generations.create(new(prompt=parameters.prompt, strength=0.5, seed=9, count=3))
        migrated, written = await stored_parameters(store.engine)
    assert written == ParametersJSON().process_bind_param(parameters, v3_engine.dialect)
    # Knobs added after v0004 are absent from migrated rows and read back as their defaults.
    assert json.loads(migrated).items() <= json.loads(written).items()
    assert GenerationParameters(**json.loads(migrated)) == parameters


async def test_values_outside_todays_limits_stay_readable(
    db_url: str, v3_engine: AsyncEngine
) -> None:
    """Old rows are never re-validated: a limit tightened later must not make a job unreadable."""
    loose = GenerationParameters.model_construct(
        prompt="", strength=5.0, seed=0, steps=500, guidance=0.0, count=99, safety_checker=True
    )
    await insert_v1(v3_engine, v1_row(loose))
    await migrate(v3_engine)
    async with await Store.open(db_url) as store:
        old = await store.generations.get(1)
    assert old is not None
    assert old.parameters.model_dump() == loose.model_dump()


async def test_an_id_once_handed_out_is_never_reused(db_url: str, v3_engine: AsyncEngine) -> None:
    await insert_v1(v3_engine, *(v1_row(GenerationParameters(prompt="p")) for _ in range(3)))
    async with v3_engine.begin() as conn:
        await conn.execute(text("DELETE FROM generations WHERE id = 3"))
    await migrate(v3_engine)
    async with await Store.open(db_url) as store:
        assert (await store.generations.create(new())).id == 4


async def test_an_empty_table_keeps_its_id_high_water_mark(
    db_url: str, v3_engine: AsyncEngine
) -> None:
    await insert_v1(v3_engine, *(v1_row(GenerationParameters(prompt="p")) for _ in range(2)))
    async with v3_engine.begin() as conn:
        await conn.execute(text("DELETE FROM generations"))
    await migrate(v3_engine)
    async with await Store.open(db_url) as store:
        assert (await store.generations.create(new())).id == 3


async def test_parent_links_survive_and_still_behave(db_url: str, v3_engine: AsyncEngine) -> None:
    parameters = GenerationParameters(prompt="p")
    await insert_v1(v3_engine, v1_row(parameters), v1_row(parameters, parent_id=1, kind="reroll"))
    await migrate(v3_engine)
    async with await Store.open(db_url) as store:
        child = await store.generations.get(2)
        assert child is not None and child.parent_id == 1
        with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
            await store.generations.create(new(parent_id=12345))
        async with store.engine.begin() as conn:  # the rebuilt table still sets orphans to NULL
            await conn.execute(text("DELETE FROM generations WHERE id = 1"))
        child = await store.generations.get(2)
        assert child is not None and child.parent_id is None


async def test_a_row_inserted_without_a_model_gets_the_one_model_there_was(
    v3_engine: AsyncEngine,
) -> None:
    await migrate(v3_engine)
    async with v3_engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO generations (kind, user_id, channel_id, parameters, reference_url, "
                "status, created_at) VALUES ('imagine', 1, 2, '{}', 'u', 'queued', '2025-01-01')"
            )
        )
        model = (await conn.execute(text("SELECT model FROM generations"))).scalar()
    assert model == "flux/dev/image-to-image" == v0004.MODEL_BEFORE


async def test_parameters_may_not_be_null_after_the_upgrade(v3_engine: AsyncEngine) -> None:
    await migrate(v3_engine)
    with pytest.raises(IntegrityError, match=r"(?i)not.null"):
        async with v3_engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO generations (kind, user_id, channel_id, reference_url, status, "
                    "created_at) VALUES ('imagine', 1, 2, 'u', 'queued', '2025-01-01')"
                )
            )
