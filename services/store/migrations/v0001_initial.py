"""The first schema: one ``generations`` table."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

#: The column types as this version wrote them (what ``services.store.columns`` stores them as).
Id = BigInteger().with_variant(Integer(), "sqlite")
IdList = Text  # JSON list of snowflakes
UTCDateTime = DateTime(timezone=True)


def generations_v1(metadata: MetaData) -> Table:
    """Frozen: exactly what this version created. Never edit; add a migration instead."""
    return Table(
        "generations",
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("parent_id", Id, ForeignKey("generations.id", ondelete="SET NULL")),
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


def upgrade(conn: Connection) -> None:
    generations_v1(MetaData()).create(conn)
