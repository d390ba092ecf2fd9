"""Daily budgets a guild's admins set through ``/fluxbot-settings``: the guild's, each member's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.store.engine import Writer, single_reads, upsert
from services.store.prepared import execute
from services.store.records import Budgets
from services.store.schema import budgets

#: ``user_id`` of a guild's own row.
GUILD_ROW = 0
#: Read at every admission, so built once (issue 10).
_GUILD = select(budgets).where(budgets.c.guild_id == bindparam("b_guild"))
_GUILD_AND_MEMBER = _GUILD.where(budgets.c.user_id.in_([GUILD_ROW, bindparam("b_user")]))


class BudgetRepository:
    """The ``budgets`` table: row ``(guild, 0)`` holds the guild's total and each member's
    default; row ``(guild, member)`` a member's own budget.

    Read afresh for every admission (one indexed read), never cached: another process may have
    changed them, and a budget is only worth anything if every process sees the same one.
    """

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

    async def get(
        self, guild_id: int, *, user_id: int | None = None, conn: AsyncConnection | None = None
    ) -> Budgets:
        """A guild's budgets; with ``user_id``, only that member's own row is read with it."""
        query, parameters = _GUILD, {"b_guild": guild_id}
        if user_id is not None:
            query, parameters = _GUILD_AND_MEMBER, parameters | {"b_user": user_id}
        if conn is not None:
            rows = (await execute(conn, query, parameters)).all()
        else:
            async with self._single_reads.connect() as own:
                rows = (await execute(own, query, parameters)).all()
        guild = next((row for row in rows if row.user_id == GUILD_ROW), None)
        return Budgets(
            guild_id=guild_id,
            daily_usd_nanos=guild.daily_usd_nanos if guild is not None else None,
            member_daily_usd_nanos=guild.member_daily_usd_nanos if guild is not None else None,
            members={
                int(row.user_id): int(row.daily_usd_nanos)
                for row in rows
                if row.user_id != GUILD_ROW and row.daily_usd_nanos is not None
            },
        )

    async def save_guild(
        self,
        guild_id: int,
        *,
        daily_usd_nanos: int | None,
        member_daily_usd_nanos: int | None,
        updated_by: int,
    ) -> None:
        """Set the guild's total and each member's default (None: no limit)."""
        await self._upsert(
            guild_id,
            GUILD_ROW,
            {"daily_usd_nanos": daily_usd_nanos, "member_daily_usd_nanos": member_daily_usd_nanos},
            updated_by,
        )

    async def save_member(
        self, guild_id: int, user_id: int, daily_usd_nanos: int | None, *, updated_by: int
    ) -> None:
        """Give a member a budget of their own, or (None) back the guild's default."""
        if daily_usd_nanos is None:
            async with self._write() as conn:
                await conn.execute(
                    delete(budgets).where(
                        budgets.c.guild_id == guild_id, budgets.c.user_id == user_id
                    )
                )
            return
        await self._upsert(guild_id, user_id, {"daily_usd_nanos": daily_usd_nanos}, updated_by)

    async def _upsert(
        self, guild_id: int, user_id: int, values: dict[str, int | None], updated_by: int
    ) -> None:
        row = values | {"updated_by": updated_by, "updated_at": self._now(None)}
        statement = upsert(self._engine, budgets).values(guild_id=guild_id, user_id=user_id, **row)
        statement = statement.on_conflict_do_update(
            index_elements=[budgets.c.guild_id, budgets.c.user_id],
            set_={key: statement.excluded[key] for key in row},
        )
        async with self._write() as conn:
            await conn.execute(statement)
