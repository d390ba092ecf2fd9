"""Lineage and Delete: which result image a job started from, and whether its result was deleted.

``source_id``/``source_image`` name the generation and the image (from 0) whose result is this
job's reference (Vary, Use as input, Remix with fluxbot on a result; rerolls copy them). They
are NULL when the reference is the member's own upload on the job card. ``deleted_at`` and
``deleted_by`` mark a generation whose result message a member deleted.

``source_id`` has no foreign key: SQLite can add one only inline (which it enforces but which
reflection cannot read back, so schema checks could not see it), generations are never deleted,
and a source that is missing is told plainly like a deleted one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Connection, DateTime, Integer, text
from sqlalchemy.types import TypeEngine

#: Frozen: the types this version added, as the earlier versions spelled them.
Id = BigInteger().with_variant(Integer(), "sqlite")
UTCDateTime = DateTime(timezone=True)


def upgrade(conn: Connection) -> None:
    dialect = conn.dialect

    def type_of(type_: TypeEngine[Any]) -> str:
        return str(type_.compile(dialect=dialect))

    conn.execute(text(f"ALTER TABLE generations ADD COLUMN source_id {type_of(Id)}"))
    conn.execute(text(f"ALTER TABLE generations ADD COLUMN source_image {type_of(Integer())}"))
    conn.execute(text(f"ALTER TABLE generations ADD COLUMN deleted_at {type_of(UTCDateTime)}"))
    conn.execute(text(f"ALTER TABLE generations ADD COLUMN deleted_by {type_of(BigInteger())}"))
