"""What budgets cost at admission: ``GenerationService.admit`` and ``submit`` with and without.

``.venv/bin/python bench/admission.py`` prints per-call latencies on a fresh SQLite file (or on
``DATABASE_URL`` when it names PostgreSQL, whose tables it drops first: a test database only),
and the time and memory the ``/fluxbot-stats`` chart takes. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from services.costs import BudgetGuard, usd_to_nanos
from services.generations import GenerationService
from services.parameters import GenerationParameters
from services.quotas import DailyQuotas
from services.store import GenerationKind, NewGeneration, Store, make_engine
from services.store.schema import api_attempts

GUILD = 1


def job(user_id: int) -> NewGeneration:
    return NewGeneration(
        kind=GenerationKind.IMAGINE,
        user_id=user_id,
        guild_id=GUILD,
        channel_id=2,
        parameters=GenerationParameters(prompt="a benchmark cat"),
        reference_url="https://cdn.example/ref.png",
    )


async def timed(calls: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    samples = []
    for n in range(calls):
        started = time.perf_counter()
        await call(n)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def row(name: str, samples: list[float]) -> str:
    cut = statistics.quantiles(samples, n=100)
    return f"{name:<56} {statistics.median(samples):8.2f} {cut[98]:8.2f} ms"


async def drop_tables(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        for table in ("api_attempts", "budgets", "generations", "meta", "guild_settings"):
            await conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        await conn.execute(text("DROP TABLE IF EXISTS schema_version"))
    await engine.dispose()


class NotConsulted(BudgetGuard):
    """Admission as it was before budgets: nothing read, nothing locked."""

    async def applies(self, user_id: int, guild_id: int | None) -> bool:
        return False

    async def check(self, *args: Any, **kwargs: Any) -> None:
        return None


async def fill_ledger(store: Store, rows: int) -> None:
    """``rows`` attempts spent today in the guild, in one statement."""
    generation = await store.generations.create(job(0))
    now = store._now()
    values = [
        {
            "generation_id": generation.id,
            "run": 1,
            "attempt": n + 1,
            "user_id": n % 50,
            "guild_id": GUILD,
            "model": generation.model,
            "outcome": "ok",
            "usd_nanos": 25_000_000,
            "created_at": now,
        }
        for n in range(rows)
    ]
    async with store.engine.begin() as conn:
        await conn.execute(api_attempts.insert(), values)


async def admission(url: str, calls: int, ledger: int) -> list[str]:
    lines = []
    for variant in ("budgets not consulted (before)", "no budget", "guild + member budget"):
        if url.startswith("postgres"):
            await drop_tables(url)
        async with await Store.open(url) as store:
            guard = NotConsulted(store) if variant.startswith("budgets not") else BudgetGuard(store)
            if variant.startswith("guild"):
                daily = usd_to_nanos(Decimal(10**6))
                await store.budgets.save_guild(
                    GUILD, daily_usd_nanos=daily, member_daily_usd_nanos=daily, updated_by=0
                )
                if ledger:
                    await fill_ledger(store, ledger)
                    variant += f", {ledger} attempts today"
            service = GenerationService(
                store=store,
                api=cast(Any, None),
                quotas=DailyQuotas(store),
                max_concurrent=1,
                max_per_user=10**6,
                job_timeout_seconds=600,
                budgets=guard,
            )
            lines += await measure(service, variant, calls)
    return lines


async def measure(service: GenerationService, label: str, calls: int) -> list[str]:
    """50 members, so no per-member cap gets in the way; the queue never starts."""
    admit = await timed(calls, lambda n: service.admit(n % 50, GUILD))
    submit = await timed(calls, lambda n: service.submit(job(n % 50)))
    return [row(f"admit, {label}", admit), row(f"submit, {label}", submit)]


def chart_figures() -> list[str]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from services.charts import spend_chart_png

    days = [date(2026, 11, 1) + timedelta(days=n) for n in range(14)]
    spend = [Decimal(n) / 10 for n in range(14)]
    samples = []
    for _ in range(10):
        started = time.perf_counter()
        spend_chart_png(days, spend, budget_usd=Decimal(1))
        samples.append((time.perf_counter() - started) * 1000)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [
        f"{'chart, first (imports matplotlib)':<56} {samples[0]:8.2f} ms",
        f"{'chart, later (median of 9)':<56} {statistics.median(samples[1:]):8.2f} ms",
        f"{'peak RSS growth from the charts':<56} {after - before:8.1f} MB",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400, help="calls per figure")
    parser.add_argument(
        "--ledger", type=int, default=20_000, help="attempts already spent today, budgeted run"
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    with tempfile.TemporaryDirectory() as tmp:
        if not url.startswith("postgres"):
            url = f"sqlite:///{tmp}/admission.sqlite3"
        print(
            f"fluxbot admission — {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, {url.partition(':')[0]}, {args.calls} calls each"
        )
        print(f"{'figure':<56} {'p50':>8} {'p99':>8}")
        for line in await admission(url, args.calls, args.ledger):
            print(line)
    for line in chart_figures():
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
