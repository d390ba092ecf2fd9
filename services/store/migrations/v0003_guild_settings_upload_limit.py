"""Per-guild safety settings; each job keeps the upload limit its interaction reported."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    MetaData,
    Table,
    Text,
    text,
)

UTCDateTime = DateTime(timezone=True)  # frozen: the type this version wrote


def guild_settings_v3(metadata: MetaData) -> Table:
    """Frozen: exactly what this version created. Never edit; add a migration instead."""
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


def upgrade(conn: Connection) -> None:
    guild_settings_v3(MetaData()).create(conn)
    conn.execute(text("ALTER TABLE generations ADD COLUMN upload_limit BIGINT"))
