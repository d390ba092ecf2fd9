"""Costs: one row per API attempt, budgets per guild and member, each job's price estimate.

``api_attempts`` keeps what every HTTP attempt cost (DESIGN §10); ``budgets`` what a guild's
admins allow per UTC day; ``generations.estimate_usd_nanos`` what a job not yet settled is
expected to cost, so admission can count it. Money is integer nano-dollars (the API reports
nine decimals), so sums are exact on every database.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    text,
)

Id = BigInteger().with_variant(Integer(), "sqlite")
UTCDateTime = DateTime(timezone=True)  # frozen: the type this version wrote


def api_attempts_v7(metadata: MetaData) -> Table:
    """Frozen: exactly what this version created. Never edit; add a migration instead."""
    Table("generations", metadata, Column("id", Id, primary_key=True))
    return Table(
        "api_attempts",
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column(
            "generation_id",
            Id,
            ForeignKey("generations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        Column("run", Integer, nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("user_id", BigInteger, nullable=False),
        Column("guild_id", BigInteger),
        Column("model", String(100), nullable=False),
        Column("client_request_id", String(128)),
        Column("inference_id", String(128)),
        Column("status", Integer),
        Column("outcome", String(64), nullable=False),
        Column("credits", BigInteger),
        Column("usd_nanos", BigInteger, nullable=False, server_default="0"),
        Column("usd_estimated", Boolean, nullable=False, server_default="0"),
        Column("created_at", UTCDateTime, nullable=False),
        Index("ux_api_attempts_attempt", "generation_id", "run", "attempt", unique=True),
        Index("ix_api_attempts_created", "created_at"),
        Index("ix_api_attempts_guild_created", "guild_id", "created_at"),
    )


def budgets_v7(metadata: MetaData) -> Table:
    """Frozen: exactly what this version created. Never edit; add a migration instead."""
    return Table(
        "budgets",
        metadata,
        Column("guild_id", BigInteger, primary_key=True, autoincrement=False),
        Column("user_id", BigInteger, primary_key=True, autoincrement=False),
        Column("daily_usd_nanos", BigInteger),
        Column("member_daily_usd_nanos", BigInteger),
        Column("updated_by", BigInteger),
        Column("updated_at", UTCDateTime),
    )


def upgrade(conn: Connection) -> None:
    api_attempts_v7(MetaData()).create(conn)
    budgets_v7(MetaData()).create(conn)
    conn.execute(text("ALTER TABLE generations ADD COLUMN estimate_usd_nanos BIGINT"))
