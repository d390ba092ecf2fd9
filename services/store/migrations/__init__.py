"""Versioned schema migrations: the ``vNNNN_name.py`` files of this package, applied in order.

Each file has one ``upgrade(conn: Connection) -> None`` and its number is the schema version it
leads to: numbers run 1, 2, 3... without a gap (a gap or a duplicate is refused at import, so a
misnamed file cannot be skipped silently). Its table definitions are frozen copies of what that
version created: change the schema only by adding a file, then mirror it in ``schema.py`` (a test
checks they agree). Modules whose names start with ``_`` are helpers, not steps.

The version lives in ``schema_version`` (one row). Each step runs in its own transaction
together with its version bump, re-reading the version under a write lock first, so two
processes starting at once apply each step once. On SQLite a step runs with foreign keys off (as
SQLite's procedure for rebuilding a table needs) and ``PRAGMA foreign_key_check`` must find
nothing before it commits.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import pkgutil
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.store.engine import WRITE

log = logging.getLogger(__name__)

#: PostgreSQL advisory lock key held while ``schema_version`` is created ("fluxbot" in ASCII).
_CREATE_LOCK = int.from_bytes(b"fluxbot", "big")
_STEP_NAME = re.compile(r"v(?P<version>[0-9]{4})_[a-z0-9_]+")


@dataclass(frozen=True)
class Migration:
    """One step: ``upgrade`` takes the schema from ``version - 1`` to ``version``."""

    version: int
    name: str
    upgrade: Callable[[Connection], None]


class MigrationError(RuntimeError):
    """The migration files are not a clean 1..n sequence, or a step broke an invariant."""


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer fluxbot; running old code on it could corrupt it."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"the database schema is version {found}, but this fluxbot only knows up to version "
            f"{supported}: upgrade fluxbot, or point DATABASE_URL at another database"
        )
        self.found = found
        self.supported = supported


def discover(package: str = __name__) -> tuple[Migration, ...]:
    """The steps in ``package``, in version order; refuses gaps, duplicates and stray names."""
    steps: dict[int, Migration] = {}
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.name.startswith("_"):
            continue
        match = _STEP_NAME.fullmatch(info.name)
        if match is None:
            raise MigrationError(
                f"{package}.{info.name}: a migration file is named vNNNN_what_it_does.py"
            )
        version = int(match["version"])
        if version in steps:
            raise MigrationError(
                f"{package}: {steps[version].name} and {info.name} are both version {version}"
            )
        upgrade = getattr(importlib.import_module(f"{package}.{info.name}"), "upgrade", None)
        if not callable(upgrade):
            raise MigrationError(f"{package}.{info.name} has no upgrade(conn) function")
        steps[version] = Migration(version, info.name, upgrade)
    expected = range(1, len(steps) + 1)
    if sorted(steps) != list(expected):
        missing = sorted(set(range(1, max(steps) + 1)) - set(steps))
        raise MigrationError(
            f"{package}: migrations are numbered from 1 without gaps; found "
            f"{', '.join(f'v{v:04d}' for v in sorted(steps))}"
            + (f", missing {', '.join(f'v{v:04d}' for v in missing)}" if missing else "")
        )
    return tuple(steps[version] for version in expected)


#: Every step this code knows, in order; ``MIGRATIONS[n]`` takes version n to n + 1.
MIGRATIONS = discover()
SCHEMA_VERSION = len(MIGRATIONS)


async def current_version(engine: AsyncEngine) -> int:
    """The schema version of the database behind ``engine``; 0 if it was never migrated.

    Only reads; compare with :data:`SCHEMA_VERSION` to tell "up to date", "needs migrating"
    (``Store.open`` will do it) and "too new for this code".
    """
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table("schema_version")):
            return 0
        result = await conn.execute(text("SELECT version FROM schema_version WHERE id = 1"))
        version = result.scalar_one_or_none()
    return 0 if version is None else int(version)


async def migrate(
    engine: AsyncEngine,
    *,
    target: int | None = None,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int:
    """Bring the schema up to ``target`` (default: the latest; tests build old databases).

    Safe to run from two processes at once: each step re-reads the version under a write lock.
    Returns the version the database ends at; refuses a database newer than ``migrations``.
    """
    latest = len(migrations)
    target = latest if target is None else target
    if not 0 <= target <= latest:
        raise ValueError(f"target schema version must be 0..{latest}, not {target}")
    writer = engine.execution_options(**WRITE)
    async with writer.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two sessions' CREATE TABLE IF NOT EXISTS can collide there; SQLite's BEGIN
            # IMMEDIATE already lets one writer in at a time.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})
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
        async with _step_connection(writer) as conn, conn.begin():
            current = await _locked_version(conn)
            if current > latest:
                raise SchemaTooNewError(current, latest)
            if current >= target:
                return current
            step = migrations[current]
            log.info("database schema %d -> %d: %s", current, current + 1, step.name)
            await conn.run_sync(step.upgrade)
            if conn.dialect.name == "sqlite":
                await _check_foreign_keys(conn, step)
            await conn.execute(
                text("UPDATE schema_version SET version = :new WHERE id = 1"),
                {"new": current + 1},
            )


async def _locked_version(conn: AsyncConnection) -> int:
    result = await conn.execute(
        text("SELECT version FROM schema_version WHERE id = 1")
        if conn.dialect.name == "sqlite"  # BEGIN IMMEDIATE already holds the write lock
        else text("SELECT version FROM schema_version WHERE id = 1 FOR UPDATE")
    )
    return int(result.scalar_one())


@contextlib.asynccontextmanager
async def _step_connection(writer: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for one step; on SQLite with foreign keys off until it is given back.

    SQLite ignores ``PRAGMA foreign_keys`` inside a transaction, so it is set on the driver's
    connection before ``BEGIN`` (going through SQLAlchemy would begin first).
    """
    async with writer.connect() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        await conn.run_sync(_sqlite_foreign_keys, "OFF")
        try:
            yield conn
        finally:
            await conn.run_sync(_sqlite_foreign_keys, "ON")


def _sqlite_foreign_keys(conn: Connection, state: str) -> None:
    cursor = conn.connection.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={state}")
    finally:
        cursor.close()


async def _check_foreign_keys(conn: AsyncConnection, step: Migration) -> None:
    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
    if broken:
        raise MigrationError(
            f"migration {step.name} left {len(broken)} rows whose foreign keys point nowhere "
            f"(first: {tuple(broken[0])}); nothing was changed"
        )
