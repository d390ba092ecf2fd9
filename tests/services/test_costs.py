"""Costs: estimates, what each attempt is recorded as, and budgets checked at admission,
atomically, so two processes admitting at once cannot overshoot together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from services.aimlapi import ApiAttempt, Usage
from services.costs import (
    BudgetExceeded,
    BudgetGuard,
    PriceList,
    attempt_record,
    client_request_id,
    format_usd,
    parse_prices,
    parse_usd,
    usd_to_nanos,
)
from services.generations import GenerationService, Submitted
from services.model_registry import DEFAULT_MODEL
from services.quotas import DailyQuotas
from services.store import GenerationStatus, Store
from tests.services.store.records import T0, FakeClock, mark_running, new

GUILD = 555
CENT = usd_to_nanos(Decimal("0.01"))


def test_amounts_parse_and_print_as_dollars() -> None:
    assert parse_usd(" $2.50 ") == Decimal("2.50") and parse_usd("0") == 0
    for bad in ("lots", "-1", "NaN", "1e9"):
        with pytest.raises(ValueError):
            parse_usd(bad)
    assert usd_to_nanos(Decimal("0.001240000")) == 1_240_000
    assert usd_to_nanos(Decimal("0.0000000001")) == 1  # rounded up, never down
    assert [format_usd(n) for n in (0, 25_000_000, 1_500_000_000, 12_345 * 10**9)] == [
        "$0.0000",
        "$0.0250",
        "$1.50",
        "$12,345.00",
    ]


def test_prices_come_from_the_registry_unless_the_operator_overrides_them() -> None:
    assert PriceList().estimate(DEFAULT_MODEL, 1) == usd_to_nanos(Decimal("0.025"))
    overridden = PriceList(parse_prices(f"{DEFAULT_MODEL}=0.04"), megapixels=2.0)
    assert overridden.estimate(DEFAULT_MODEL, 3) == usd_to_nanos(Decimal("0.24"))
    assert PriceList(megapixels=0.5).estimate(DEFAULT_MODEL, 1) == 25_000_000  # 1 MP at least
    for bad in ("nope=1", f"{DEFAULT_MODEL}", f"{DEFAULT_MODEL}=cheap"):
        with pytest.raises(ValueError):
            parse_prices(bad)
    assert parse_prices(" , ") == {}


def attempt(usd: str | None, *, status: int | None = 201, billed: bool = True) -> ApiAttempt:
    return ApiAttempt(
        attempt=2,
        client_request_id="fluxbot:9:1:2",
        status=status,
        outcome="ok" if status == 201 else "ApiTimeoutError",
        usage=Usage(inference_id="V1St", credits=None, usd=None if usd is None else Decimal(usd)),
        may_be_billed=billed,
    )


async def test_an_attempt_is_recorded_at_what_it_cost_or_else_at_the_estimate(
    store: Store,
) -> None:
    generation = await store.generations.create(new(estimate_usd_nanos=50_000_000))
    running = await mark_running(store, generation.id)
    assert running is not None and client_request_id(running) == f"fluxbot:{generation.id}:1"

    paid = attempt_record(running, attempt("0.025"))
    timed_out = attempt_record(running, attempt(None, status=None))
    refused = attempt_record(running, attempt(None, status=403, billed=False))

    assert (paid.usd_nanos, paid.usd_estimated, paid.run, paid.attempt) == (25_000_000, False, 1, 2)
    assert (timed_out.usd_nanos, timed_out.usd_estimated) == (50_000_000, True)
    assert (refused.usd_nanos, refused.usd_estimated) == (0, False)
    assert paid.inference_id == "V1St" and paid.guild_id == generation.guild_id


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    async with await Store.open(f"sqlite:///{tmp_path}/costs.sqlite3", clock=clock) as opened:
        yield opened


def service(store: Store, clock: FakeClock, *, bot_budget: str | None = None) -> GenerationService:
    """A service whose queue never starts: admission is all these tests look at."""
    bot_daily = None if bot_budget is None else usd_to_nanos(Decimal(bot_budget))
    return GenerationService(
        store=store,
        api=cast(Any, None),
        quotas=DailyQuotas(store, clock=clock),
        max_concurrent=1,
        max_per_user=100,
        job_timeout_seconds=600,
        now=clock,
        budgets=BudgetGuard(store, bot_daily_nanos=bot_daily, clock=clock),
    )


async def spend(
    store: Store, nanos: int, *, user_id: int = 1, guild_id: int | None = GUILD
) -> None:
    """A finished job that cost ``nanos`` today."""
    generation = await store.generations.create(new(user_id=user_id, guild_id=guild_id, count=1))
    running = await mark_running(store, generation.id)
    assert running is not None
    record = attempt_record(running, attempt(None)).model_copy(update={"usd_nanos": nanos})
    await store.api_attempts.record(record)
    await store.generations.mark_done(
        generation.id, seed=1, result_message_ids=[], inference_seconds=None
    )


async def test_waiting_jobs_count_against_a_member_budget_before_they_cost_anything(
    store: Store, clock: FakeClock
) -> None:
    await store.budgets.save_guild(
        GUILD, daily_usd_nanos=None, member_daily_usd_nanos=5 * CENT, updated_by=1
    )
    generations = service(store, clock)
    for _ in range(2):
        submitted = await generations.submit(new(user_id=1, guild_id=GUILD, count=1))
        assert submitted.generation.estimate_usd_nanos == 25_000_000

    with pytest.raises(BudgetExceeded) as refused:
        await generations.admit(1, GUILD)  # the early, private check says the same
    with pytest.raises(BudgetExceeded):
        await generations.submit(new(user_id=1, guild_id=GUILD, count=1))

    assert "your image budget for today" in refused.value.user_message
    assert "resets <t:" in refused.value.user_message
    await generations.submit(new(user_id=2, guild_id=GUILD, count=1))  # budgets are per member
    await generations.submit(new(user_id=1, guild_id=GUILD + 1, count=1))  # and per guild


async def test_a_guild_budget_counts_what_was_spent_today_only(
    store: Store, clock: FakeClock
) -> None:
    await store.budgets.save_guild(
        GUILD, daily_usd_nanos=10 * CENT, member_daily_usd_nanos=None, updated_by=1
    )
    clock.now = T0.replace(hour=0, minute=0, second=1)
    await spend(store, 9 * CENT, user_id=7)
    generations = service(store, clock)

    with pytest.raises(BudgetExceeded) as refused:
        await generations.submit(new(user_id=8, guild_id=GUILD, count=1))
    assert "This server has reached its image budget" in refused.value.user_message
    assert "$0.0100 left, and this would cost about $0.0250" in refused.value.user_message

    clock.now += timedelta(days=1)
    await generations.submit(new(user_id=8, guild_id=GUILD, count=1))  # a new UTC day


async def test_the_bot_budget_covers_every_guild_and_dms(store: Store, clock: FakeClock) -> None:
    generations = service(store, clock, bot_budget="0.06")
    await spend(store, 1 * CENT, guild_id=None)
    await generations.submit(new(guild_id=None, count=1))
    await generations.submit(new(guild_id=GUILD + 3, count=1))
    with pytest.raises(BudgetExceeded) as refused:
        await generations.submit(new(guild_id=GUILD + 4, count=1))
    assert "The bot has reached its spending limit" in refused.value.user_message


async def race_for_the_last_cents(url: str, clock: FakeClock) -> None:
    """Two stores on one database behave as two processes: no lock in common but the
    database's. Each admission, once it has checked, waits for the other to check too: only
    ``Store.admission`` keeps the second one out until the first has committed."""
    async with await Store.open(url, clock=clock) as one, await Store.open(url, clock=clock) as two:
        await one.budgets.save_guild(
            GUILD, daily_usd_nanos=5 * CENT, member_daily_usd_nanos=None, updated_by=1
        )
        await spend(one, 25_000_000)  # $0.025 left: room for exactly one more image
        services = [service(one, clock), service(two, clock)]
        checked = [asyncio.Event(), asyncio.Event()]
        for index, generations in enumerate(services):
            generations.budgets.spends = waiting(  # type: ignore[method-assign]
                generations.budgets.spends, checked[index], checked[1 - index]
            )

        results = await asyncio.gather(
            services[0].submit(new(user_id=1, guild_id=GUILD, count=1)),
            services[1].submit(new(user_id=2, guild_id=GUILD, count=1)),
            return_exceptions=True,
        )

        assert sorted(type(r).__name__ for r in results) == ["BudgetExceeded", "Submitted"]
        assert all(event.is_set() for event in checked)  # both really checked
        async with one.engine.connect() as conn:
            since = clock.now.replace(hour=0, minute=0, second=0, microsecond=0)
            spent = await one.api_attempts.spent(conn, since=since, guild_id=GUILD)
            committed = spent + await one.generations.reserved(conn, guild_id=GUILD)
        assert committed == 5 * CENT
        admitted = next(r for r in results if isinstance(r, Submitted))
        assert admitted.generation.status is GenerationStatus.QUEUED


def waiting(
    spends: Callable[..., Awaitable[Any]], own: asyncio.Event, other: asyncio.Event
) -> Callable[..., Awaitable[Any]]:
    async def spends_then_wait(*args: Any) -> Any:
        result = await spends(*args)
        own.set()
        with contextlib.suppress(TimeoutError):  # the lock may keep the other out: go on
            await asyncio.wait_for(other.wait(), 0.5)
        return result

    return spends_then_wait


async def test_two_processes_admitting_for_the_last_cents_let_only_one_in(
    tmp_path: Path, clock: FakeClock
) -> None:
    await race_for_the_last_cents(f"sqlite:///{tmp_path}/shared.sqlite3", clock)
