"""Each job names its model; its parameters become one JSON column instead of seven.

Every row's old parameter columns are copied into ``parameters`` (JSON text, the shape of
``GenerationParameters.model_dump(mode="json")``) in batches, in Python, so it reads the same on
every database; then the old columns are dropped and ``parameters`` becomes NOT NULL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    select,
    text,
    update,
)

from services.store.migrations._sqlite import rebuild_table

#: Frozen: the one model jobs ran on before this version.
MODEL_BEFORE = "flux/dev/image-to-image"
#: Rows copied per round trip.
BATCH = 500
#: Frozen: parameter name (the JSON key) -> the column that held it until this version.
OLD_COLUMNS = {
    "prompt": "prompt",
    "strength": "strength",
    "seed": "seed_requested",
    "steps": "steps",
    "guidance": "guidance",
    "count": "count",
    "safety_checker": "safety_checker",
}

Id = BigInteger().with_variant(Integer(), "sqlite")
IdList = Text  # JSON list of snowflakes
UTCDateTime = DateTime(timezone=True)


def generations_v3_parameters(metadata: MetaData) -> Table:
    """Frozen: what this step reads and writes of ``generations`` (old columns as v1 made them)."""
    return Table(
        "generations",
        metadata,
        Column("id", Id, primary_key=True),
        Column("prompt", Text, nullable=False),
        Column("strength", Float, nullable=False),
        Column("seed_requested", BigInteger),
        Column("steps", Integer, nullable=False),
        Column("guidance", Float, nullable=False),
        Column("count", Integer, nullable=False),
        Column("safety_checker", Boolean, nullable=False),
        Column("parameters", Text),
    )


def generations_v4(metadata: MetaData, name: str = "generations") -> Table:
    """Frozen: ``generations`` as this version leaves it (built as ``name`` for a rebuild)."""
    return Table(
        name,
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("parent_id", Id, ForeignKey(f"{name}.id", ondelete="SET NULL")),
        Column("kind", String(16), nullable=False),
        Column("user_id", BigInteger, nullable=False),
        Column("guild_id", BigInteger),
        Column("channel_id", BigInteger, nullable=False),
        Column("thread_id", BigInteger),
        Column("card_channel_id", BigInteger),
        Column("card_message_id", BigInteger),
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
        Column("cancelled_by", BigInteger),
        Column("upload_limit", BigInteger),
        Column("model", String(100), nullable=False, server_default=MODEL_BEFORE),
        Column("parameters", Text, nullable=False),
        sqlite_autoincrement=True,
    )


def generation_indexes_v4(table: Table) -> list[Index]:
    """Frozen: the indexes on ``generations`` at this version (unchanged since v2)."""
    c = table.c
    return [
        Index("ix_generations_user_created", c.user_id, c.created_at),
        Index("ix_generations_guild_created", c.guild_id, c.created_at),
        Index("ix_generations_card", c.card_message_id),
        Index("ix_generations_status", c.status),
    ]


def parameters_json(row: Mapping[Any, Any]) -> str:
    """One row's old parameter columns as the JSON the store now reads."""
    seed = row["seed_requested"]
    parameters = {
        "prompt": row["prompt"],
        "strength": float(row["strength"]),
        "seed": None if seed is None else int(seed),
        "steps": int(row["steps"]),
        "guidance": float(row["guidance"]),
        "count": int(row["count"]),
        "safety_checker": bool(row["safety_checker"]),
    }
    return json.dumps(parameters, ensure_ascii=False, separators=(",", ":"))


def upgrade(conn: Connection) -> None:
    quote = conn.dialect.identifier_preparer.quote
    conn.execute(
        text(
            "ALTER TABLE generations ADD COLUMN model VARCHAR(100) "
            f"DEFAULT '{MODEL_BEFORE}' NOT NULL"
        )
    )
    conn.execute(text("ALTER TABLE generations ADD COLUMN parameters TEXT"))
    _copy_parameters(conn)
    for column in OLD_COLUMNS.values():
        conn.execute(text(f"ALTER TABLE generations DROP COLUMN {quote(column)}"))
    if conn.dialect.name == "sqlite":  # no ALTER COLUMN: rebuild the table, as SQLite advises
        rebuild_table(conn, generations_v4, generation_indexes_v4, "generations")
    else:
        conn.execute(text("ALTER TABLE generations ALTER COLUMN parameters SET NOT NULL"))


def _copy_parameters(conn: Connection) -> None:
    table = generations_v3_parameters(MetaData())
    c = table.c
    read = (
        select(c.id, *(c[column] for column in OLD_COLUMNS.values()))
        .where(c.id > bindparam("after"))
        .order_by(c.id)
        .limit(BATCH)
    )
    write = update(table).where(c.id == bindparam("row_id")).values(parameters=bindparam("json"))
    after = -(2**63)
    while rows := conn.execute(read, {"after": after}).mappings().all():
        conn.execute(write, [{"row_id": row["id"], "json": parameters_json(row)} for row in rows])
        after = rows[-1]["id"]
