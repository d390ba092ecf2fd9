"""The queue in the database: claims under leases, fairness and back-off shared by every process.

``generations`` gains who holds a running job (``claimed_by``, a row of ``workers`` whose
heartbeat is its lease), the member's turn it was started with (``queue_turn``, and the turn
before, ``served_before``, given back when the API turns it away), the back-off epoch it was
started in (``throttle_epoch``) and the API's answer once it came (``answer``: a job answered but
not yet posted is delivered again after a crash, never called again). ``queue_members`` holds
each member's last turn; ``queue_state`` (one row) the live concurrency, the back-off and the
out-of-credits hold.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    text,
)
from sqlalchemy.types import TypeEngine

UTCDateTime = DateTime(timezone=True)  # frozen: the type this version wrote


def workers_v8(metadata: MetaData) -> Table:
    """Frozen: exactly what this version created. Never edit; add a migration instead."""
    return Table(
        "workers",
        metadata,
        Column("id", String(64), primary_key=True),
        Column("description", String(200), nullable=False),
        Column("started_at", UTCDateTime, nullable=False),
        Column("heartbeat_at", UTCDateTime, nullable=False),
    )


def queue_members_v8(metadata: MetaData) -> Table:
    """Frozen: exactly what this version created. Never edit; add a migration instead."""
    return Table(
        "queue_members",
        metadata,
        Column("user_id", BigInteger, primary_key=True, autoincrement=False),
        Column("last_served", BigInteger, nullable=False),
    )


def queue_state_v8(metadata: MetaData) -> Table:
    """Frozen: exactly what this version created. Never edit; add a migration instead."""
    return Table(
        "queue_state",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("turn", BigInteger, nullable=False),
        Column("live_limit", Integer),
        Column("epoch", Integer, nullable=False),
        Column("strikes", Integer, nullable=False),
        Column("resume_at", UTCDateTime),
        Column("credit_hold", Boolean, nullable=False),
    )


def upgrade(conn: Connection) -> None:
    def type_of(type_: TypeEngine[Any]) -> str:
        return str(type_.compile(dialect=conn.dialect))

    for name, type_ in (
        ("claimed_by", String(64)),
        ("queue_turn", BigInteger()),
        ("served_before", BigInteger()),
        ("throttle_epoch", Integer()),
        ("answer", Text()),
    ):
        conn.execute(text(f"ALTER TABLE generations ADD COLUMN {name} {type_of(type_)}"))
    metadata = MetaData()
    for build in (workers_v8, queue_members_v8, queue_state_v8):
        build(metadata).create(conn)
    conn.execute(
        insert(metadata.tables["queue_state"]).values(
            id=1, turn=0, live_limit=None, epoch=0, strikes=0, resume_at=None, credit_hold=False
        )
    )
