"""v0007: a version-6 database with jobs gains the cost tables; its jobs have no estimate."""

from __future__ import annotations

from sqlalchemy import inspect

from services.parameters import GenerationParameters
from services.store import Store, make_engine, migrate
from tests.services.store.records import V1_GENERATIONS, new, v1_row


async def test_jobs_stored_before_costs_stay_and_reserve_nothing(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine, target=1) == 1
        async with engine.begin() as conn:
            values = v1_row(GenerationParameters(prompt="from before costs"))
            await conn.execute(V1_GENERATIONS.insert().values(values))
        assert await migrate(engine, target=6) == 6
        assert await migrate(engine, target=7) == 7
    finally:
        await engine.dispose()
    async with await Store.open(db_url) as store:
        old = await store.generations.get(1)
        assert old is not None and old.estimate_usd_nanos is None
        assert old.parameters.prompt == "from before costs"
        async with store.engine.connect() as conn:
            assert await store.generations.reserved(conn) == 0
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            assert {"api_attempts", "budgets"} <= set(tables)
        created = await store.generations.create(new(estimate_usd_nanos=25_000_000))
        assert created.estimate_usd_nanos == 25_000_000
