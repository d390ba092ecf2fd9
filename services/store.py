"""Persistent store of generation jobs: what buttons point at, and what survives a restart.

SQLAlchemy async Core over aiosqlite; PostgreSQL (asyncpg) is a ``DATABASE_URL`` change. The schema
is versioned: ``MIGRATIONS`` is an append-only list, each step applied in its own transaction with
its version bump, so a database made by any older release is upgraded on ``Store.open``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Row, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from services.model_registry import DEFAULT_MODEL
from services.parameters import (
    GenerationParameters,
)
from services.safety import GuildSettings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
#: SQLite waits this long for another writer's lock instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Discord snowflakes are unsigned 64-bit in principle, signed 63-bit in practice (BIGINT fits).
Snowflake = Annotated[int, Field(ge=0, le=2**63 - 1)]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    """Refuse naive datetimes: a wrong offset would silently shift quotas and timeouts."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
    return value.astimezone(UTC)


# --------------------------------------------------------------------------- URLs and engine


def normalise_database_url(url: str) -> str:
    """Map the accepted ``DATABASE_URL`` forms to an async driver URL.

    A relative SQLite path is resolved against the working directory now, so the file does not
    move if the process changes directory later. ``postgres(ql)://`` gets asyncpg, which spells
    libpq's ``sslmode`` as ``ssl``.
    """
    try:
        parsed = make_url(url.strip())
    except Exception as exc:  # ArgumentError; never echo the URL, it may hold a password
        raise ValueError("DATABASE_URL is not a valid database URL") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        database = parsed.database if parsed.database != ":memory:" else None
        if database and not parsed.query.get("uri"):
            database = str(Path(database).expanduser().absolute())
        parsed = URL.create("sqlite+aiosqlite", database=database, query=parsed.query)
    elif backend in {"postgres", "postgresql"}:
        parsed = parsed.set(drivername=f"postgresql+{driver or 'asyncpg'}")
        if parsed.drivername == "postgresql+asyncpg" and "sslmode" in parsed.query:
            sslmode = parsed.query["sslmode"]
            parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": sslmode})
    else:
        raise ValueError(
            f"DATABASE_URL scheme {backend!r} is not supported: use sqlite:/// or postgresql://"
        )
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> AsyncEngine:
    """An engine for ``url`` (any accepted form); SQLite gets WAL, a busy timeout, foreign keys.

    SQLite's Python driver does not BEGIN before DDL, so we take over BEGIN ourselves: migrations
    are then truly transactional. Write transactions ask for ``BEGIN IMMEDIATE`` (execution
    option ``fluxbot_begin``) so they wait for the lock up front instead of failing mid-way.
    """
    parsed = make_url(normalise_database_url(url))
    is_file = parsed.database not in (None, ":memory:") and not parsed.query.get("uri")
    if parsed.get_backend_name() == "sqlite" and is_file:
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(parsed)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("fluxbot_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


# --------------------------------------------------------------------------- column types


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python; SQLite stores fixed-width ISO text (sorts correctly), PG timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class IdList(TypeDecorator[tuple[int, ...]]):
    """A list of snowflakes as JSON text; empty is NULL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Sequence[int] | None, dialect: Dialect) -> str | None:
        return json.dumps([int(v) for v in value]) if value else None

    def process_result_value(self, value: str | None, dialect: Dialect) -> tuple[int, ...]:
        return tuple(int(v) for v in json.loads(value)) if value else ()


#: Generation ids appear in button custom ids: BIGINT on PostgreSQL, and on SQLite an INTEGER
#: PRIMARY KEY with AUTOINCREMENT so a deleted newest row's id is never handed out again.
_Id = BigInteger().with_variant(Integer(), "sqlite")


# --------------------------------------------------------------------------- schema history
# Each ``_vN_*`` definition is frozen: it is what migration N created. Change the schema only by
# appending a migration, then mirror it in the runtime tables below (a test checks they agree).


def _generations_v1(metadata: MetaData) -> Table:
    return Table(
        "generations",
        metadata,
        Column("id", _Id, primary_key=True, autoincrement=True),
        Column("parent_id", _Id, ForeignKey("generations.id", ondelete="SET NULL")),
        Column("kind", String(16), nullable=False),
        Column("user_id", BigInteger, nullable=False),
        Column("guild_id", BigInteger),
        Column("channel_id", BigInteger, nullable=False),
        Column("thread_id", BigInteger),
        Column("card_channel_id", BigInteger),
        Column("card_message_id", BigInteger),
        Column("prompt", Text, nullable=False),
        Column("strength", Float, nullable=False),
        Column("seed_requested", BigInteger),
        Column("steps", Integer, nullable=False),
        Column("guidance", Float, nullable=False),
        Column("count", Integer, nullable=False),
        Column("safety_checker", Boolean, nullable=False),
        Column("seed", BigInteger),
        Column("reference_url", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("error", Text),
        Column("result_message_ids", IdList),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("created_at", UTCDateTime, nullable=False),
        Column("started_at", UTCDateTime),
        Column("finished_at", UTCDateTime),
        Column("inference_seconds", Float),
        Column("nsfw_withheld", Integer, nullable=False, server_default="0"),
        sqlite_autoincrement=True,
    )


def _meta_v2(metadata: MetaData) -> Table:
    return Table(
        "meta",
        metadata,
        Column("key", String(200), primary_key=True),
        Column("value", Text, nullable=False),
    )


def _indexes_v2(table: Table) -> list[Index]:
    c = table.c
    return [
        Index("ix_generations_user_created", c.user_id, c.created_at),
        Index("ix_generations_guild_created", c.guild_id, c.created_at),
        Index("ix_generations_card", c.card_message_id),
        Index("ix_generations_status", c.status),
    ]


def _migrate_1_initial(conn: Connection) -> None:
    _generations_v1(MetaData()).create(conn)


def _migrate_2_meta_cancelled_by_indexes(conn: Connection) -> None:
    """Key/value ``meta`` (command tree hash...), who cancelled a job, indexes for quotas/cards."""
    _meta_v2(MetaData()).create(conn)
    conn.execute(text("ALTER TABLE generations ADD COLUMN cancelled_by BIGINT"))
    for index in _indexes_v2(_generations_v1(MetaData())):
        index.create(conn)


def _guild_settings_v3(metadata: MetaData) -> Table:
    return Table(
        "guild_settings",
        metadata,
        Column("guild_id", BigInteger, primary_key=True, autoincrement=False),
        Column("unfiltered_in_nsfw", Boolean, nullable=False, server_default="0"),
        Column("open_rerolls", Boolean, nullable=False, server_default="0"),
        Column("blocked_terms", Text),
        Column("updated_by", BigInteger),
        Column("updated_at", UTCDateTime),
    )


def _migrate_3_guild_settings_upload_limit(conn: Connection) -> None:
    """Per-guild safety settings; each job keeps the upload limit its interaction reported."""
    _guild_settings_v3(MetaData()).create(conn)
    conn.execute(text("ALTER TABLE generations ADD COLUMN upload_limit BIGINT"))


Migration = Callable[[Connection], None]
#: Append only. ``MIGRATIONS[n]`` takes the schema from version n to n + 1.
MIGRATIONS: tuple[Migration, ...] = (
    _migrate_1_initial,
    _migrate_2_meta_cancelled_by_indexes,
    _migrate_3_guild_settings_upload_limit,
)
SCHEMA_VERSION = len(MIGRATIONS)

# --------------------------------------------------------------------------- runtime tables

metadata = MetaData()
generations = _generations_v1(metadata)
generations.append_column(Column("cancelled_by", BigInteger))
generations.append_column(Column("upload_limit", BigInteger))
_indexes_v2(generations)
meta = _meta_v2(metadata)
guild_settings = _guild_settings_v3(metadata)

_IMMEDIATE = {"fluxbot_begin": "IMMEDIATE"}


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer fluxbot; running old code on it could corrupt it."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"the database schema is version {found}, but this fluxbot only knows up to version "
            f"{supported}: upgrade fluxbot, or point DATABASE_URL at another database"
        )
        self.found = found
        self.supported = supported


async def _locked_version(conn: AsyncConnection) -> int:
    result = await conn.execute(
        text("SELECT version FROM schema_version WHERE id = 1")
        if conn.dialect.name == "sqlite"  # BEGIN IMMEDIATE already holds the write lock
        else text("SELECT version FROM schema_version WHERE id = 1 FOR UPDATE")
    )
    return int(result.scalar_one())


async def migrate(engine: AsyncEngine, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to ``target`` (tests use a lower one to build an old database).

    Safe to run from two processes at once: each step re-reads the version under a write lock.
    Returns the version the database ends at; refuses a database newer than this code.
    """
    if not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"target schema version must be 0..{SCHEMA_VERSION}, not {target}")
    writer = engine.execution_options(**_IMMEDIATE)
    async with writer.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(id INTEGER PRIMARY KEY, version INTEGER NOT NULL)"
            )
        )
        await conn.execute(
            text("INSERT INTO schema_version (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING")
        )
    while True:
        async with writer.begin() as conn:
            current = await _locked_version(conn)
            if current > SCHEMA_VERSION:
                raise SchemaTooNewError(current, SCHEMA_VERSION)
            if current >= target:
                return current
            step = MIGRATIONS[current]
            log.info("database schema %d -> %d: %s", current, current + 1, step.__name__)
            await conn.run_sync(step)
            await conn.execute(
                text("UPDATE schema_version SET version = :new WHERE id = 1"),
                {"new": current + 1},
            )


# --------------------------------------------------------------------------- models


class GenerationKind(StrEnum):
    IMAGINE = "imagine"
    REROLL = "reroll"
    REMIX = "remix"


class GenerationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


#: Jobs that still have to run (after a restart, in this order of priority: oldest first).
UNFINISHED = frozenset(
    {GenerationStatus.QUEUED, GenerationStatus.RUNNING, GenerationStatus.INTERRUPTED}
)
#: A job may be started, cancelled or failed only from these: the guards that make races safe.
_STARTABLE = (GenerationStatus.QUEUED, GenerationStatus.INTERRUPTED)
_CANCELLABLE = (GenerationStatus.QUEUED, GenerationStatus.INTERRUPTED)
_FAILABLE = tuple(UNFINISHED)


class NewGeneration(BaseModel):
    """What is known when a job is accepted; validated as strictly as the slash command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: GenerationKind
    parent_id: int | None = None
    user_id: Snowflake
    guild_id: Snowflake | None = None
    channel_id: Snowflake
    thread_id: Snowflake | None = None
    card_channel_id: Snowflake | None = None
    card_message_id: Snowflake | None = None
    parameters: GenerationParameters
    model: str = DEFAULT_MODEL
    reference_url: str = Field(min_length=1)
    #: The channel's upload limit as the interaction reported it (discord.py's guild cache only
    #: knows boost tiers), so results are fitted to what Discord will actually accept.
    upload_limit: int | None = Field(default=None, ge=1)


class Generation(BaseModel):
    """One stored job. ``parameters.seed`` is the seed asked for; ``seed`` the one returned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    parent_id: int | None
    kind: GenerationKind
    user_id: int
    guild_id: int | None
    channel_id: int
    thread_id: int | None
    card_channel_id: int | None
    card_message_id: int | None
    parameters: GenerationParameters
    seed: int | None
    reference_url: str
    status: GenerationStatus
    error: str | None
    result_message_ids: tuple[int, ...] = ()
    attempts: int = 0
    created_at: AwareDatetime
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None
    inference_seconds: float | None
    nsfw_withheld: int = 0
    cancelled_by: int | None = None
    upload_limit: int | None = None
    model: str = DEFAULT_MODEL

    def follow_up(
        self, *, kind: GenerationKind, user_id: int, parameters: GenerationParameters
    ) -> NewGeneration:
        """A reroll or remix: same place, card and reference; new settings and asker."""
        return NewGeneration(
            parameters=parameters,
            kind=kind,
            parent_id=self.id,
            user_id=user_id,
            guild_id=self.guild_id,
            channel_id=self.channel_id,
            thread_id=self.thread_id,
            card_channel_id=self.card_channel_id,
            card_message_id=self.card_message_id,
            reference_url=self.reference_url,
            upload_limit=self.upload_limit,
            model=self.model,
        )


#: Columns that hold the parameters, by parameter name (the seed column predates the split).
PARAMETER_COLUMNS = {
    "prompt": "prompt",
    "strength": "strength",
    "seed": "seed_requested",
    "steps": "steps",
    "guidance": "guidance",
    "count": "count",
    "safety_checker": "safety_checker",
}


def _parameter_values(parameters: GenerationParameters) -> dict[str, Any]:
    return {column: getattr(parameters, name) for name, column in PARAMETER_COLUMNS.items()}


def _to_model(row: Row[Any]) -> Generation:
    values = dict(row._mapping)
    # Built without validation: old rows must stay readable if limits tighten later.
    parameters = GenerationParameters.model_construct(
        **{name: values.pop(column) for name, column in PARAMETER_COLUMNS.items()}
    )
    return Generation.model_validate(values | {"parameters": parameters})


class _Repository:
    """Interim: the repository API the callers use, over this one class (a package replaces it)."""

    def __init__(self, store: Store, names: dict[str, str]) -> None:
        self._store = store
        self._names = names

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, self._names.get(name, name))


# --------------------------------------------------------------------------- the store


class Store:
    """All persistence for the bot. Open with ``await Store.open(url)``; one per process."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        """Wrap an engine whose schema is already current; ``Store.open`` is the usual way in."""
        self._engine = engine
        self._writer = engine.execution_options(**_IMMEDIATE)
        self._clock = clock
        # Read before every command's answer; only this process writes them, so cache them.
        self._guild_settings: dict[int, GuildSettings] = {}
        # SQLite has one writer at a time and its busy handler polls with sleeps of up to 100 ms;
        # queueing our own writers here is fairer and faster. Other processes still get the
        # busy timeout. PostgreSQL needs no such thing.
        self._write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @property
    def generations(self) -> Any:
        return _Repository(
            self,
            {
                "create": "create_generation",
                "get": "get_generation",
                "unfinished": "unfinished_generations",
            },
        )

    @property
    def guild_settings(self) -> Any:
        return _Repository(self, {"get": "get_guild_settings", "save": "save_guild_settings"})

    @property
    def meta(self) -> Any:
        return _Repository(self, {"get": "get_meta", "set": "set_meta"})

    @classmethod
    async def open(cls, url: str, *, clock: Clock = utc_now) -> Store:
        """Connect, create or upgrade the schema, and return a ready store."""
        engine = make_engine(url)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, clock=clock)

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    def _now(self, value: datetime | None) -> datetime:
        return _as_utc(self._clock() if value is None else value)

    async def schema_version(self) -> int:
        async with self._engine.connect() as conn:
            result = await conn.execute(text("SELECT version FROM schema_version WHERE id = 1"))
            return int(result.scalar_one())

    # ----------------------------------------------------------------------- generations

    async def create_generation(
        self, new: NewGeneration, *, created_at: datetime | None = None
    ) -> Generation:
        """Store an accepted job as ``queued``; its id is what the buttons will carry."""
        values = (
            new.model_dump(exclude={"parameters", "model"})
            | _parameter_values(new.parameters)
            | {
                "status": GenerationStatus.QUEUED,
                "created_at": self._now(created_at),
            }
        )
        async with self._write() as conn:
            row = (
                await conn.execute(generations.insert().values(values).returning(*generations.c))
            ).one()
        return _to_model(row)

    async def get_generation(self, generation_id: int) -> Generation | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(generations).where(generations.c.id == generation_id))
            ).first()
        return None if row is None else _to_model(row)

    async def set_seed(self, generation_id: int, seed: int | None) -> Generation | None:
        """The seed the API returned, stored before posting so Remix can offer it at once."""
        return await self._set(generation_id, seed=seed)

    async def set_reference_url(self, generation_id: int, url: str) -> Generation | None:
        """A freshly signed URL of the card's reference, for this job and the next ones."""
        return await self._set(generation_id, reference_url=url)

    async def _set(self, generation_id: int, **values: Any) -> Generation | None:
        async with self._write() as conn:
            row = (
                await conn.execute(
                    update(generations)
                    .where(generations.c.id == generation_id)
                    .values(values)
                    .returning(*generations.c)
                )
            ).first()
        return None if row is None else _to_model(row)

    async def _transition(
        self,
        generation_id: int,
        allowed_from: Collection[GenerationStatus],
        values: dict[str, Any],
    ) -> Generation | None:
        """One ``UPDATE ... WHERE status IN (...)``: the database decides who wins a race."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    update(generations)
                    .where(
                        generations.c.id == generation_id,
                        generations.c.status.in_([str(s) for s in allowed_from]),
                    )
                    .values(values)
                    .returning(*generations.c)
                )
            ).first()
        return None if row is None else _to_model(row)

    async def mark_running(
        self, generation_id: int, started_at: datetime | None = None
    ) -> Generation | None:
        """Queued/interrupted -> running, counting the attempt. ``None``: cancelled meanwhile
        (or unknown id, or already started elsewhere), so do not call the API."""
        return await self._transition(
            generation_id,
            _STARTABLE,
            {
                "status": GenerationStatus.RUNNING,
                "started_at": self._now(started_at),
                "attempts": generations.c.attempts + 1,
                "error": None,
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
        return await self._transition(
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
        return await self._transition(
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
        return await self._transition(
            generation_id,
            _CANCELLABLE,
            {
                "status": GenerationStatus.CANCELLED,
                "cancelled_by": cancelled_by,
                "finished_at": self._now(finished_at),
            },
        )

    async def mark_interrupted(self, generation_id: int) -> Generation | None:
        """Running -> interrupted, at shutdown once the grace period is over; resumed later."""
        return await self._transition(
            generation_id, (GenerationStatus.RUNNING,), {"status": GenerationStatus.INTERRUPTED}
        )

    async def mark_requeued(self, generation_id: int) -> Generation | None:
        """Running -> queued: the API was too busy to take the call (429), so it waits again."""
        return await self._transition(
            generation_id,
            (GenerationStatus.RUNNING,),
            {"status": GenerationStatus.QUEUED, "started_at": None},
        )

    async def mark_running_as_interrupted(self) -> int:
        """At start-up, before any worker runs: a job still ``running`` was lost in a crash."""
        async with self._write() as conn:
            result = await conn.execute(
                update(generations)
                .where(generations.c.status == GenerationStatus.RUNNING)
                .values(status=GenerationStatus.INTERRUPTED)
            )
        return int(result.rowcount)

    async def unfinished_generations(self) -> list[Generation]:
        """Queued, running and interrupted jobs, oldest first: the order to resume them in."""
        query = (
            select(generations)
            .where(generations.c.status.in_([str(s) for s in UNFINISHED]))
            .order_by(generations.c.created_at, generations.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_to_model(row) for row in rows]

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
            .where(generations.c.created_at >= _as_utc(since))
        )
        if user_id is not None:
            query = query.where(generations.c.user_id == user_id)
        if guild_id is not None:
            query = query.where(generations.c.guild_id == guild_id)
        if statuses is not None:
            query = query.where(generations.c.status.in_([str(s) for s in statuses]))
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def latest_for_card(self, card_message_id: int) -> Generation | None:
        """The newest job shown on a job card: the card's status follows it."""
        query = (
            select(generations)
            .where(generations.c.card_message_id == card_message_id)
            .order_by(generations.c.id.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _to_model(row)

    # ----------------------------------------------------------------------- guild settings

    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        """A guild's settings; the safe defaults when its admins never changed any."""
        if (cached := self._guild_settings.get(guild_id)) is not None:
            return cached
        settings = await self._read_guild_settings(guild_id)
        self._guild_settings[guild_id] = settings
        return settings

    async def _read_guild_settings(self, guild_id: int) -> GuildSettings:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(guild_settings).where(guild_settings.c.guild_id == guild_id)
                )
            ).first()
        if row is None:
            return GuildSettings(guild_id=guild_id)
        return GuildSettings(
            guild_id=guild_id,
            unfiltered_in_nsfw=bool(row.unfiltered_in_nsfw),
            open_rerolls=bool(row.open_rerolls),
            blocked_terms=json.loads(row.blocked_terms) if row.blocked_terms else (),
        )

    async def save_guild_settings(
        self, settings: GuildSettings, *, updated_by: int, updated_at: datetime | None = None
    ) -> GuildSettings:
        """Insert or replace a guild's settings, noting which admin changed them and when."""
        values = {
            "guild_id": settings.guild_id,
            "unfiltered_in_nsfw": settings.unfiltered_in_nsfw,
            "open_rerolls": settings.open_rerolls,
            "blocked_terms": json.dumps(list(settings.blocked_terms)),
            "updated_by": updated_by,
            "updated_at": self._now(updated_at),
        }
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        statement = insert(guild_settings).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[guild_settings.c.guild_id],
            set_={k: statement.excluded[k] for k in values if k != "guild_id"},
        )
        async with self._write() as conn:
            await conn.execute(statement)
        self._guild_settings[settings.guild_id] = settings
        return settings

    # ----------------------------------------------------------------------- meta

    async def get_meta(self, key: str) -> str | None:
        async with self._engine.connect() as conn:
            result = await conn.execute(select(meta.c.value).where(meta.c.key == key))
            return result.scalar_one_or_none()

    async def set_meta(self, key: str, value: str) -> None:
        """Insert or replace (e.g. the hash of the synced command tree)."""
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        statement = insert(meta).values(key=key, value=value)
        statement = statement.on_conflict_do_update(
            index_elements=[meta.c.key], set_={"value": statement.excluded.value}
        )
        async with self._write() as conn:
            await conn.execute(statement)
