"""Key/value ``meta`` (command tree hash...), who cancelled a job, indexes for quotas and cards."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    Text,
    text,
)

UTCDateTime = DateTime(timezone=True)  # frozen: the type this version wrote


def meta_v2(metadata: MetaData) -> Table:
    """Frozen: exactly what this version created. Never edit; add a migration instead."""
    return Table(
        "meta",
        metadata,
        Column("key", String(200), primary_key=True),
        Column("value", Text, nullable=False),
    )


def generation_indexes_v2(metadata: MetaData) -> list[Index]:
    """Frozen: the indexes this version put on ``generations`` (only their columns matter)."""
    table = Table(
        "generations",
        metadata,
        Column("user_id", BigInteger),
        Column("guild_id", BigInteger),
        Column("card_message_id", BigInteger),
        Column("status", String(16)),
        Column("created_at", UTCDateTime),
    )
    c = table.c
    return [
        Index("ix_generations_user_created", c.user_id, c.created_at),
        Index("ix_generations_guild_created", c.guild_id, c.created_at),
        Index("ix_generations_card", c.card_message_id),
        Index("ix_generations_status", c.status),
    ]


def upgrade(conn: Connection) -> None:
    meta_v2(MetaData()).create(conn)
    conn.execute(text("ALTER TABLE generations ADD COLUMN cancelled_by BIGINT"))
    for index in generation_indexes_v2(MetaData()):
        index.create(conn)
