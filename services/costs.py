"""Money: what a job is expected to cost, what each API attempt did cost, and daily budgets.

Amounts are integer nano-dollars everywhere they are stored or summed (the API reports nine
decimals), so sums are exact on SQLite and PostgreSQL alike; ``Decimal`` only at the edges.

Budgets (DESIGN §10) are checked at admission against what was spent today (UTC) plus the
estimates of jobs not yet settled, so a burst of queued jobs cannot overshoot them together.
``GenerationService.submit`` runs the check and the insert of the job in one transaction under
``Store.admission``, which no other admission (in any process) can interleave with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from time import monotonic

from sqlalchemy.ext.asyncio import AsyncConnection

from services.aimlapi import ApiAttempt
from services.clock import discord_relative, utc_now
from services.jobs import QueueRefused
from services.model_registry import REGISTRY, ModelKind
from services.store import Budgets, Generation, NewApiAttempt, Store

NANOS_PER_USD = 10**9
#: The largest budget or price anyone may set, in USD: far beyond any real use, inside BIGINT.
MAX_USD = Decimal(1_000_000)


def usd_to_nanos(amount: Decimal) -> int:
    """Whole nano-dollars, rounded up: an estimate is never smaller than the price."""
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD


def format_usd(nanos: int) -> str:
    """``$12.34`` from a dollar up, ``$0.0250`` below (one image is a few cents)."""
    amount = nanos_to_usd(nanos)
    return f"${amount:,.2f}" if abs(amount) >= 1 else f"${amount:.4f}"


def parse_usd(text: str) -> Decimal:
    """An amount a person typed (``5``, ``$2.50``); ``ValueError`` with plain words if not."""
    cleaned = text.strip().removeprefix("$").strip()
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"“{text.strip()[:20]}” is not an amount in dollars") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_USD:
        raise ValueError(f"an amount is between $0 and ${MAX_USD:,}")
    return amount


def parse_prices(text: str) -> dict[str, Decimal]:
    """``MODEL_PRICES_USD``: ``model=0.025,other=0.05`` (USD per image, per call for upscales)."""
    prices: dict[str, Decimal] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        model, sep, price = item.partition("=")
        model = model.strip()
        if not sep or not model:
            raise ValueError(f"“{item.strip()}” is not model=price")
        if model not in REGISTRY:
            raise ValueError(f"{model} is not a model fluxbot knows: {', '.join(REGISTRY)}")
        prices[model] = parse_usd(price)
    return prices


class PriceList:
    """Estimates per model: its price per image (the registry's ``usd_per_image``, or the
    operator's override) times the images asked for (one call for an upscale), times the
    megapixels a reference may have, at least 1 (cost grows with size; an upscale's does not)."""

    def __init__(self, overrides: Mapping[str, Decimal] | None = None, *, megapixels: float = 1.0):
        self._prices = {
            model: Decimal(str(entry.usd_per_image)) for model, entry in REGISTRY.items()
        }
        self._prices.update(overrides or {})
        self._size_factor = Decimal(str(max(1.0, megapixels)))

    def per_image(self, model: str) -> Decimal:
        return self._prices[model]

    def estimate(self, model: str, count: int) -> int:
        """Nano-dollars a job of ``count`` images on ``model`` is expected to cost at most."""
        if REGISTRY[model].kind is ModelKind.UPSCALE:
            return usd_to_nanos(self.per_image(model))
        return usd_to_nanos(self.per_image(model) * count * self._size_factor)


def attempt_record(generation: Generation, attempt: ApiAttempt) -> NewApiAttempt:
    """What to store of one attempt. An attempt that may have been billed but whose cost the
    API did not report (a timeout, a 504, a success without cost headers) counts at the job's
    estimate, so a budget errs on the side of spending less."""
    usd = attempt.usage.usd
    estimated = usd is None and attempt.may_be_billed
    if usd is not None:
        nanos = usd_to_nanos(usd)
    else:
        nanos = (generation.estimate_usd_nanos or 0) if estimated else 0
    return NewApiAttempt(
        generation_id=generation.id,
        run=generation.attempts,
        attempt=attempt.attempt,
        user_id=generation.user_id,
        guild_id=generation.guild_id,
        model=generation.model,
        client_request_id=attempt.client_request_id,
        inference_id=attempt.usage.inference_id[:128] if attempt.usage.inference_id else None,
        status=attempt.status,
        outcome=attempt.outcome[:64],
        credits=attempt.usage.credits,
        usd_nanos=nanos,
        usd_estimated=estimated,
    )


def client_request_id(generation: Generation) -> str:
    """``fluxbot:<generation id>:<run>``; the client adds ``:<attempt>`` (DESIGN §10)."""
    return f"fluxbot:{generation.id}:{generation.attempts}"


class BudgetExceeded(QueueRefused):
    """A job that would take today's spend over a budget; ``resets_at`` is the next midnight."""

    def __init__(self, user_message: str, resets_at: datetime) -> None:
        super().__init__(user_message)
        self.resets_at = resets_at


@dataclass(frozen=True)
class Spend:
    """One budget's state today: its limit, what was spent, what unsettled jobs reserve."""

    limit: int | None
    spent: int
    reserved: int

    @property
    def committed(self) -> int:
        return self.spent + self.reserved

    def left(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.committed)


#: How long the early check (before a command is answered) trusts a guild's budgets it read;
#: ``submit`` always reads them afresh, so this only spares the answer a database read.
EARLY_CHECK_TTL = 5.0

#: Who a budget belongs to, and how a refusal names it.
_WHO = {
    "bot": "The bot has reached its spending limit for today",
    "guild": "This server has reached its image budget for today",
    "member": "You have reached your image budget for today in this server",
}


class BudgetGuard:
    """The bot's daily budget (``BOT_DAILY_BUDGET_USD``) and each guild's and member's."""

    def __init__(
        self,
        store: Store,
        *,
        bot_daily_nanos: int | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self.bot_daily_nanos = bot_daily_nanos
        self._clock = clock
        self._early: dict[int, tuple[float, Budgets]] = {}

    def today(self) -> tuple[datetime, datetime]:
        """The current UTC day as ``(start, next midnight)``."""
        start = datetime.combine(self._clock().astimezone(UTC).date(), time(), tzinfo=UTC)
        return start, start + timedelta(days=1)

    async def applies(self, user_id: int, guild_id: int | None) -> bool:
        """Whether any budget covers this member here (one indexed read)."""
        if self.bot_daily_nanos is not None:
            return True
        if guild_id is None:
            return False
        budgets = await self._store.budgets.get(guild_id, user_id=user_id)
        return budgets.daily_usd_nanos is not None or budgets.for_member(user_id) is not None

    async def check(
        self,
        user_id: int,
        guild_id: int | None,
        estimate: int,
        conn: AsyncConnection | None = None,
    ) -> None:
        """Raise :class:`BudgetExceeded` if ``estimate`` more would go over a budget today.

        Exact only inside ``Store.admission`` (pass its ``conn``); elsewhere it is the early,
        private refusal a command gives before answering.
        """
        if conn is None:
            if not await self._may_apply(user_id, guild_id):
                return None
            async with self._store.engine.connect() as own:
                return await self.check(user_id, guild_id, estimate, own)
        for who, spend in (await self.spends(user_id, guild_id, conn)).items():
            if spend.limit is not None and spend.committed + estimate > spend.limit:
                _, resets_at = self.today()
                left = spend.left() or 0
                detail = (
                    f" ({format_usd(left)} left, and this would cost about {format_usd(estimate)})"
                    if left
                    else ""
                )
                raise BudgetExceeded(
                    f"{_WHO[who]}{detail}. It resets {discord_relative(resets_at)} (midnight UTC).",
                    resets_at,
                )

    async def _may_apply(self, user_id: int, guild_id: int | None) -> bool:
        """``applies`` from budgets read at most ``EARLY_CHECK_TTL`` ago (the early check)."""
        if self.bot_daily_nanos is not None:
            return True
        if guild_id is None:
            return False
        now = monotonic()
        read_at, budgets = self._early.get(guild_id, (float("-inf"), None))
        if budgets is None or now - read_at > EARLY_CHECK_TTL:
            budgets = await self._store.budgets.get(guild_id)
            self._early[guild_id] = (now, budgets)
        return budgets.daily_usd_nanos is not None or budgets.for_member(user_id) is not None

    async def spends(
        self, user_id: int | None, guild_id: int | None, conn: AsyncConnection
    ) -> dict[str, Spend]:
        """Every budget that covers this member here (``user_id`` None: the guild's only)."""
        since, _ = self.today()
        scopes: dict[str, tuple[int | None, dict[str, int]]] = {}
        if self.bot_daily_nanos is not None:
            scopes["bot"] = (self.bot_daily_nanos, {})
        if guild_id is not None:
            budgets = await self._store.budgets.get(guild_id, user_id=user_id, conn=conn)
            if budgets.daily_usd_nanos is not None:
                scopes["guild"] = (budgets.daily_usd_nanos, {"guild_id": guild_id})
            if user_id is not None and (member := budgets.for_member(user_id)) is not None:
                scopes["member"] = (member, {"guild_id": guild_id, "user_id": user_id})
        return {
            who: Spend(
                limit=limit,
                spent=await self._store.api_attempts.spent(conn, since=since, **scope),
                reserved=await self._store.generations.reserved(conn, **scope),
            )
            for who, (limit, scope) in scopes.items()
        }


@dataclass(frozen=True)
class SpendReport:
    """One guild's spend for ``/fluxbot-stats``: today against its budgets, and the last days."""

    guild_id: int
    days: list[date]
    #: Nano-dollars per day, one per entry of ``days`` (0 when nothing was spent).
    daily: list[int]
    today: Spend
    member_default: int | None
    member_budgets: dict[int, int]
    #: ``(model, nano-dollars, billed answers)``, most spent first.
    by_model: list[tuple[str, int, int]]
    #: ``(user id, nano-dollars, billed answers)``, most spent first.
    by_member: list[tuple[int, int, int]]

    @property
    def total(self) -> int:
        return sum(self.daily)

    @property
    def answers(self) -> int:
        return sum(count for _, _, count in self.by_model)


async def spend_report(guard: BudgetGuard, store: Store, guild_id: int, days: int) -> SpendReport:
    """The last ``days`` UTC days of one guild, today included."""
    start, _ = guard.today()
    since = start - timedelta(days=days - 1)
    async with store.engine.connect() as conn:
        spends = await guard.spends(None, guild_id, conn)
        budgets = await store.budgets.get(guild_id, conn=conn)
        if "guild" in spends:
            today = spends["guild"]
        else:
            today = Spend(
                limit=None,
                spent=await store.api_attempts.spent(conn, since=start, guild_id=guild_id),
                reserved=await store.generations.reserved(conn, guild_id=guild_id),
            )
    per_day = await store.api_attempts.daily(since=since, guild_id=guild_id)
    calendar = [since.date() + timedelta(days=n) for n in range(days)]
    by_model = await store.api_attempts.totals(since=since, guild_id=guild_id, by="model")
    by_member = await store.api_attempts.totals(since=since, guild_id=guild_id, by="user_id")
    return SpendReport(
        guild_id=guild_id,
        days=calendar,
        daily=[per_day.get(day, 0) for day in calendar],
        today=today,
        member_default=budgets.member_daily_usd_nanos,
        member_budgets=budgets.members,
        by_model=[(str(model), spent, count) for model, spent, count in by_model],
        by_member=[(int(user), spent, count) for user, spent, count in by_member],
    )
