"""Budgets: none until set, a guild row and members' own rows, who changed them and when."""

from __future__ import annotations

from sqlalchemy import select

from services.store import Budgets, Store
from services.store.schema import budgets
from tests.services.store.records import T0


async def test_no_budget_until_one_is_set(store: Store) -> None:
    assert await store.budgets.get(7) == Budgets(guild_id=7)
    assert (await store.budgets.get(7)).for_member(1) is None


async def test_guild_and_member_budgets_round_trip(store: Store) -> None:
    await store.budgets.save_guild(
        7, daily_usd_nanos=5_000_000_000, member_daily_usd_nanos=500_000_000, updated_by=42
    )
    await store.budgets.save_member(7, 1, 2_000_000_000, updated_by=42)
    await store.budgets.save_member(7, 2, 0, updated_by=42)  # a member who may spend nothing
    await store.budgets.save_member(8, 1, 9, updated_by=42)  # another guild

    seven = await store.budgets.get(7)
    assert seven == Budgets(
        guild_id=7,
        daily_usd_nanos=5_000_000_000,
        member_daily_usd_nanos=500_000_000,
        members={1: 2_000_000_000, 2: 0},
    )
    assert [seven.for_member(u) for u in (1, 2, 3)] == [2_000_000_000, 0, 500_000_000]
    only_one = await store.budgets.get(7, user_id=2)
    assert only_one.members == {2: 0} and only_one.daily_usd_nanos == 5_000_000_000

    await store.budgets.save_member(7, 1, None, updated_by=43)  # back to the default
    await store.budgets.save_guild(
        7, daily_usd_nanos=None, member_daily_usd_nanos=500_000_000, updated_by=43
    )
    seven = await store.budgets.get(7)
    assert (seven.daily_usd_nanos, seven.members) == (None, {2: 0})
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(budgets).where(budgets.c.user_id == 0))).one()
    assert (row.updated_by, row.updated_at) == (43, T0)
