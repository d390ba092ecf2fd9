"""URLs and the engine: every accepted DATABASE_URL form, and SQLite configured as we rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.store import SCHEMA_VERSION, Store, current_version, normalise_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///data/x.sqlite3", "sqlite+aiosqlite:///{cwd}/data/x.sqlite3"),
        ("sqlite:////abs/x.sqlite3", "sqlite+aiosqlite:////abs/x.sqlite3"),
        ("sqlite+aiosqlite:////abs/x.sqlite3", "sqlite+aiosqlite:////abs/x.sqlite3"),
        ("sqlite+aiosqlite:///rel.db", "sqlite+aiosqlite:///{cwd}/rel.db"),
        ("  sqlite:///data/x.sqlite3\n", "sqlite+aiosqlite:///{cwd}/data/x.sqlite3"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite:///:memory:", "sqlite+aiosqlite://"),
        ("postgresql://u:p@db:5432/flux", "postgresql+asyncpg://u:p@db:5432/flux"),
        ("postgres://u:p@db/flux", "postgresql+asyncpg://u:p@db/flux"),
        ("postgresql+asyncpg://u:p@db/flux", "postgresql+asyncpg://u:p@db/flux"),
        ("postgres://u:p%40ss@db/flux", "postgresql+asyncpg://u:p%40ss@db/flux"),
        ("postgres://u:p@db/flux?sslmode=require", "postgresql+asyncpg://u:p@db/flux?ssl=require"),
    ],
)
def test_normalise_database_url(
    given: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise_database_url(given) == expected.format(cwd=tmp_path)


@pytest.mark.parametrize("bad", ["mysql://u:secret@h/db", "not a url", ""])
def test_normalise_database_url_refuses_without_echoing(bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalise_database_url(bad)
    assert "secret" not in str(caught.value)


async def test_open_creates_parent_dir_and_configures_sqlite(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with await Store.open(sqlite_url) as store:
        assert (tmp_path / "nested/dir/fluxbot.sqlite3").is_file()
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 5000
        assert await current_version(store.engine) == SCHEMA_VERSION
